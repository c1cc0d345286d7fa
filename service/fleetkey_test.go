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
	bind := binding{params: packet.SignedParams([]byte(`{"goodsid":1}`)), nonce: "n1", seq: 5}
	a := k.sign(&Auth{Member: 7, Session: "ab"}, "POST", "/purchases", bind, now)
	if !k.verify(a, "POST", "/purchases", bind, now) {
		t.Fatal("a freshly signed auth object does not verify")
	}
	type req struct {
		a    *Auth
		m, u string
		b    binding
		at   time.Time
	}
	for name, bad := range map[string]func() req{
		"other member": func() req { b := *a; b.Member = 8; return req{&b, "POST", "/purchases", bind, now} },
		"made admin":   func() req { b := *a; b.Admin = true; return req{&b, "POST", "/purchases", bind, now} },
		"other route":  func() req { return req{a, "DELETE", "/members", bind, now} },
		"expired":      func() req { return req{a, "POST", "/purchases", bind, now.Add(signedFor + time.Second)} },
		"later expiry": func() req { b := *a; b.Exp += 3600; return req{&b, "POST", "/purchases", bind, now} },
		"unsigned":     func() req { return req{&Auth{Member: 7}, "POST", "/purchases", bind, now} },
		"other params": func() req {
			b := bind
			b.params = packet.SignedParams([]byte(`{"goodsid":2}`))
			return req{a, "POST", "/purchases", b, now}
		},
		"other connection": func() req { b := bind; b.nonce = "n2"; return req{a, "POST", "/purchases", b, now} },
		"other number":     func() req { b := *a; b.Seq = 6; return req{&b, "POST", "/purchases", bind, now} },
		"other fleet": func() req {
			return req{FleetKey("another-fleet-key-000").sign(&Auth{Member: 7}, "POST", "/purchases", bind, now), "POST", "/purchases", bind, now}
		},
	} {
		r := bad()
		if k.verify(r.a, r.m, r.u, r.b, r.at) {
			t.Errorf("%s: verify = true; want false", name)
		}
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	for _, tc := range []struct {
		seq  uint64
		want bool
	}{
		{0, false}, {1, true}, {1, false}, {3, true}, {2, true}, {2, false}, {3, false},
		{2000, true}, {2000 - windowSize + 1, true}, {2000 - windowSize, false}, {1999, true}, {1999, false},
		{2070, true}, {2001, true}, {2069, true}, {2000, false}, {2070, false}, {5000, true}, {2071, false},
	} {
		if got := w.accept(tc.seq); got != tc.want {
			t.Errorf("accept(%d) = %v; want %v", tc.seq, got, tc.want)
		}
	}
}

// TestKeyedServer: with a fleet key, a forged or unsigned identity never
// acts as a member, a request without one is anonymous, not the book's open
// mode, and a signed one is refused on another connection, with other
// parameters, or a second time.
func TestKeyedServer(t *testing.T) {
	k := FleetKey("0123456789abcdef-fleet")
	s := NewServer(Config{Name: "t", FleetKey: k, Heartbeat: time.Second, Routes: map[string]Handler{
		"POST/buy": func(ctx context.Context, r *Request) (Result, error) {
			id, err := r.Member(true)
			if err != nil {
				return nil, err
			}
			return Result{"member": id}, nil
		},
	}})
	conn1, conn2 := &connState{}, &connState{}
	n1 := conn1.connNonce()
	wire := func(params string) json.RawMessage {
		p := packet.AppendRequest(nil, "/buy", "POST", 9, []byte(params))
		m, err := packet.Decode(p[:len(p)-2])
		if err != nil {
			t.Fatal(err)
		}
		return m.Params
	}
	call := func(cs *connState, auth *Auth, params string) (int, Result) {
		m := &packet.Message{Method: "POST", URI: "/buy", Params: wire(params)}
		if auth != nil {
			m.Auth, _ = json.Marshal(auth)
		}
		res, err := s.call(context.Background(), m, cs)
		code, _ := ErrorCode(err)
		return code, res
	}
	sign := func(member int64, params string, seq uint64) *Auth {
		return k.sign(&Auth{Member: member}, "POST", "/buy", binding{params: packet.SignedParams([]byte(params)), nonce: n1, seq: seq}, time.Now())
	}
	signed := sign(7, `{"goodsid":1}`, 1)
	if code, res := call(conn1, signed, `{"goodsid":1}`); code != 0 || res["member"] != int64(7) {
		t.Fatalf("signed member 7 = %d %v; want success as 7", code, res)
	}
	if code, _ := call(conn1, signed, `{"goodsid":1}`); code != 401 {
		t.Errorf("the same signed request a second time = %d; want 401 (a replay)", code)
	}
	if code, _ := call(conn1, sign(7, `{"goodsid":1}`, 2), `{"goodsid":2}`); code != 401 {
		t.Errorf("a signed request with other parameters = %d; want 401", code)
	}
	if code, _ := call(conn2, sign(7, `{"goodsid":1}`, 3), `{"goodsid":1}`); code != 401 {
		t.Errorf("a signed request on another connection = %d; want 401", code)
	}
	if code, _ := call(conn1, &Auth{Member: 7}, `{}`); code != 401 {
		t.Errorf("unsigned member 7 = %d; want 401", code)
	}
	forged := *sign(7, `{}`, 4)
	forged.Member = 8
	if code, _ := call(conn1, &forged, `{}`); code != 401 {
		t.Errorf("forged member 8 = %d; want 401", code)
	}
	if code, _ := call(conn1, nil, `{"userid":5}`); code != 401 {
		t.Errorf("no auth object, userid 5 = %d; want 401 (anonymous on a keyed fleet, not the open book mode)", code)
	}
	// Without a key, the book's open behaviour stays.
	s.cfg.FleetKey = nil
	if code, res := call(conn1, nil, `{"userid":5}`); code != 0 || res["member"] != int64(5) {
		t.Errorf("unkeyed, userid 5 = %d %v; want success as 5", code, res)
	}
}
