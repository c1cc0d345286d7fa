package service

import (
	"context"
	"encoding/json"
	"testing"
)

func TestRequestMember(t *testing.T) {
	member := func(id int64) *Auth { return &Auth{Member: id, Session: "h"} }
	tests := []struct {
		name     string
		auth     *Auth
		params   Params
		required bool
		want     int64
		code     int
	}{
		{"book: userid", nil, Params{"userid": "5"}, true, 5, 0},
		{"book: none required", nil, Params{}, true, 0, 400},
		{"book: none optional", nil, Params{}, false, 0, 0},
		{"token: own member", member(5), Params{}, true, 5, 0},
		{"token: same userid", member(5), Params{"userid": json.Number("5")}, true, 5, 0},
		{"token: other userid", member(5), Params{"userid": "6"}, true, 0, 403},
		{"token: other userid optional", member(5), Params{"userid": "6"}, false, 0, 403},
		{"token: bad userid", member(5), Params{"userid": "x"}, true, 0, 400},
		{"anonymous required", &Auth{}, Params{"userid": "5"}, true, 0, 401},
		{"anonymous required no userid", &Auth{}, Params{}, true, 0, 401},
		{"anonymous optional", &Auth{}, Params{}, false, 0, 0},
		{"anonymous optional userid", &Auth{}, Params{"userid": "5"}, false, 0, 401},
		{"admin acts for userid", &Auth{Admin: true}, Params{"userid": "9"}, true, 9, 0},
		{"admin without userid", &Auth{Admin: true}, Params{}, true, 0, 400},
	}
	for _, tt := range tests {
		r := &Request{Params: tt.params, Auth: tt.auth}
		got, err := r.Member(tt.required)
		code, _ := ErrorCode(err)
		if got != tt.want || code != tt.code && !(tt.code == 0 && err == nil) {
			t.Errorf("%s: Member(%v) = %d, %v; want %d, code %d", tt.name, tt.required, got, err, tt.want, tt.code)
		}
	}
}

func TestRequestCheckMemberAndAdmin(t *testing.T) {
	tests := []struct {
		auth        *Auth
		admin, self int // codes of RequireAdmin, CheckMember(5)
	}{
		{nil, 0, 0},
		{&Auth{}, 401, 401},
		{&Auth{Member: 5, Session: "h"}, 403, 0},
		{&Auth{Member: 6, Session: "h"}, 403, 403},
		{&Auth{Admin: true}, 0, 0},
	}
	for _, tt := range tests {
		r := &Request{Params: Params{}, Auth: tt.auth}
		if code, _ := ErrorCode(r.RequireAdmin()); code != tt.admin && !(tt.admin == 0 && code == 0) {
			t.Errorf("auth %+v: RequireAdmin code %d; want %d", tt.auth, code, tt.admin)
		}
		if code, _ := ErrorCode(r.CheckMember(5)); code != tt.self && !(tt.self == 0 && code == 0) {
			t.Errorf("auth %+v: CheckMember(5) code %d; want %d", tt.auth, code, tt.self)
		}
	}
}

func TestDecodeAuth(t *testing.T) {
	for _, raw := range []string{"", "null"} {
		if a, err := decodeAuth(json.RawMessage(raw)); a != nil || err != nil {
			t.Errorf("decodeAuth(%q) = %v, %v; want nil, nil", raw, a, err)
		}
	}
	if _, err := decodeAuth(json.RawMessage(`{"member":-1}`)); err == nil {
		t.Error("decodeAuth(member -1) succeeded")
	}
	if _, err := decodeAuth(json.RawMessage(`"x"`)); err == nil {
		t.Error(`decodeAuth("x") succeeded`)
	}
	a, err := decodeAuth(json.RawMessage(`{"member":3,"admin":false,"session":"ab"}`))
	if err != nil || *a != (Auth{Member: 3, Session: "ab"}) {
		t.Errorf("decodeAuth = %+v, %v", a, err)
	}
}

// Admin lets only the admin (or the book's anonymous caller) reach the
// handler; anyone else gets the error and the handler never runs.
func TestAdmin(t *testing.T) {
	for _, tt := range []struct {
		auth *Auth
		code int
	}{
		{nil, 0},
		{&Auth{Admin: true}, 0},
		{&Auth{Member: 5, Session: "h"}, 403},
		{&Auth{}, 401},
	} {
		ran := false
		h := Admin(func(context.Context, *Request) (Result, error) { ran = true; return Result{}, nil })
		_, err := h(context.Background(), &Request{Auth: tt.auth})
		if code, _ := ErrorCode(err); code != tt.code || ran != (tt.code == 0) {
			t.Errorf("Admin with auth %+v: code %d, handler ran %v; want code %d, ran %v", tt.auth, code, ran, tt.code, tt.code == 0)
		}
	}
}
