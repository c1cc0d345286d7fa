package service

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/microshop/microshop/packet"
)

func TestFleetKeySignVerify(t *testing.T) {
	k := FleetKey("0123456789abcdef-fleet")
	now := time.Now()
	a := k.sign(&Auth{Member: 7, Session: "ab"}, "POST", "/purchases", now)
	if !k.verify(a, "POST", "/purchases", now) {
		t.Fatal("a freshly signed auth object does not verify")
	}
	for name, bad := range map[string]func() (*Auth, string, string, time.Time){
		"other member": func() (*Auth, string, string, time.Time) { b := *a; b.Member = 8; return &b, "POST", "/purchases", now },
		"made admin": func() (*Auth, string, string, time.Time) {
			b := *a
			b.Admin = true
			return &b, "POST", "/purchases", now
		},
		"other route": func() (*Auth, string, string, time.Time) { return a, "DELETE", "/members", now },
		"expired": func() (*Auth, string, string, time.Time) {
			return a, "POST", "/purchases", now.Add(signedFor + time.Second)
		},
		"later expiry": func() (*Auth, string, string, time.Time) {
			b := *a
			b.Exp += 3600
			return &b, "POST", "/purchases", now
		},
		"unsigned": func() (*Auth, string, string, time.Time) { return &Auth{Member: 7}, "POST", "/purchases", now },
		"other fleet": func() (*Auth, string, string, time.Time) {
			return FleetKey("another-fleet-key-000").sign(&Auth{Member: 7}, "POST", "/purchases", now), "POST", "/purchases", now
		},
	} {
		b, m, u, at := bad()
		if k.verify(b, m, u, at) {
			t.Errorf("%s: verify = true; want false", name)
		}
	}
}

// TestKeyedServer: with a fleet key, a forged or unsigned identity never
// acts as a member, and a request without one is anonymous, not the book's
// open mode.
func TestKeyedServer(t *testing.T) {
	k := FleetKey("0123456789abcdef-fleet")
	s := NewServer(Config{Name: "t", FleetKey: k, Routes: map[string]Handler{
		"POST/buy": func(ctx context.Context, r *Request) (Result, error) {
			id, err := r.Member(true)
			if err != nil {
				return nil, err
			}
			return Result{"member": id}, nil
		},
	}})
	call := func(auth *Auth, params string) (int, Result) {
		m := &packet.Message{Method: "POST", URI: "/buy", Params: json.RawMessage(params)}
		if auth != nil {
			m.Auth, _ = json.Marshal(auth)
		}
		res, err := s.call(context.Background(), m)
		code, _ := ErrorCode(err)
		return code, res
	}
	signed := k.sign(&Auth{Member: 7}, "POST", "/buy", time.Now())
	if code, res := call(signed, `{}`); code != 0 || res["member"] != int64(7) {
		t.Fatalf("signed member 7 = %d %v; want success as 7", code, res)
	}
	if code, _ := call(&Auth{Member: 7}, `{}`); code != 401 {
		t.Errorf("unsigned member 7 = %d; want 401", code)
	}
	forged := *signed
	forged.Member = 8
	if code, _ := call(&forged, `{}`); code != 401 {
		t.Errorf("forged member 8 = %d; want 401", code)
	}
	if code, _ := call(nil, `{"userid":5}`); code != 401 {
		t.Errorf("no auth object, userid 5 = %d; want 401 (anonymous on a keyed fleet, not the open book mode)", code)
	}
	// Without a key, the book's open behaviour stays.
	s.cfg.FleetKey = nil
	if code, res := call(nil, `{"userid":5}`); code != 0 || res["member"] != int64(5) {
		t.Errorf("unkeyed, userid 5 = %d %v; want success as 5", code, res)
	}
}
