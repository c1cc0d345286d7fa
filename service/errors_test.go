package service

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/microshop/microshop/packet"
)

func TestDecode(t *testing.T) {
	decode := func(s string) *packet.Message {
		t.Helper()
		m, err := packet.Decode([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var out struct {
		Results []int `json:"results"`
	}
	if err := Decode(decode(`{"key":1,"errorcode":0,"errormessage":"success","results":[1,2]}`), &out); err != nil || fmt.Sprint(out.Results) != "[1 2]" {
		t.Errorf("success: %v, %v; want [1 2]", err, out.Results)
	}
	for _, tc := range []struct {
		answer string
		code   int
		msg    string
	}{
		{`{"key":1,"errorcode":404,"errormessage":"good 7 not found"}`, 404, "good 7 not found"},
		{`{"key":1,"errorcode":1,"errormessage":"no data"}`, 404, "no data"}, // the book's
		{`{"key":1,"errorcode":1,"errormessage":"invalid password"}`, 401, "invalid password"},
		{`{"key":1,"errorcode":0,"errormessage":"success","results":"not a list"}`, 502, "a service answered what cannot be read"},
	} {
		err := Decode(decode(tc.answer), &out)
		e, ok := err.(*Error)
		if !ok || e.Code != tc.code || e.Message != tc.msg {
			t.Errorf("%s: %v; want *Error %d %q", tc.answer, err, tc.code, tc.msg)
		}
		if code, _ := CallStatus(http.MethodGet, err); code != tc.code {
			t.Errorf("%s: CallStatus %d; want the answer's %d", tc.answer, code, tc.code)
		}
	}
}

func TestCallStatus(t *testing.T) {
	for _, tc := range []struct {
		method string
		err    error
		code   int
	}{
		{"GET", ErrNoRoute, 404},
		{"GET", fmt.Errorf("wrapped: %w", ErrNoInstance), 503},
		{"GET", ErrNotEnforcing, 503},
		{"GET", ErrInstanceLost, 503},
		{"POST", ErrInstanceLost, 503},
		{"GET", packet.ErrTimeout, 504},
		{"GET", context.DeadlineExceeded, 504},
		{"GET", Conflict("taken"), 409},
		{"GET", fmt.Errorf("dial: refused"), 502},
	} {
		if code, msg := CallStatus(tc.method, tc.err); code != tc.code || msg == "" {
			t.Errorf("CallStatus(%s, %v) = %d %q; want %d with a message", tc.method, tc.err, code, msg, tc.code)
		}
	}
	_, get := CallStatus("GET", ErrInstanceLost)
	_, post := CallStatus("POST", ErrInstanceLost)
	if get == post {
		t.Errorf("a lost POST and a lost GET say the same (%q); a POST may have been applied", get)
	}
}
