package service

import (
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"
)

// What decodeAuthFast accepts it decodes exactly as json.Unmarshal does.
func FuzzDecodeAuthFast(f *testing.F) {
	for _, s := range []string{
		`{"member":7,"session":"ab12","addr":"127.0.0.1","exp":1800000000,"seq":3,"sig":"00ff"}`,
		`{"member":0}`, `{"member":0,"admin":true,"exp":1,"seq":1,"sig":"x"}`, `{}`, `{"member":-1}`,
		`{"member":01}`, `{"member":1.5}`, `{"member":1e3}`, `{"Member":1}`, `{"member":1,}`, `{"member":1 }`,
		`{"addr":"a\"b"}`, `{"addr":"\u00e9"}`, `{"sig":"}"}`, `{"sig":"a}`, `{"seq":-1}`, `{"admin":tru}`,
		`{"member":99999999999999999999}`, `{"member":1,"member":2}`, `{"other":1}`, `{"member":null}`, `[1]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := decodeAuthFast(raw)
		if !ok {
			return
		}
		var want Auth
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("decodeAuthFast accepted %q, which json.Unmarshal refuses: %v", raw, err)
		}
		if got != want {
			t.Fatalf("decodeAuthFast(%q) = %+v; want %+v", raw, got, want)
		}
	})
}

// appendAuth encodes byte for byte as json.Marshal, and what it encodes
// takes the fast path back.
func FuzzAppendAuth(f *testing.F) {
	f.Add(int64(7), false, "ab12", "127.0.0.1", int64(1800000000), uint64(3), "00ff")
	f.Add(int64(0), true, "", "", int64(0), uint64(0), "")
	f.Add(int64(-5), false, "<&>", "a\"b\\c\u2028é\x00\xff", int64(-1), uint64(1<<63), "x")
	f.Fuzz(func(t *testing.T, member int64, admin bool, session, addr string, exp int64, seq uint64, sig string) {
		a := Auth{Member: member, Admin: admin, Session: session, Addr: addr, Exp: exp, Seq: seq, Sig: sig}
		want, err := json.Marshal(&a)
		if err != nil {
			t.Fatal(err)
		}
		got := appendAuth(nil, &a)
		if string(got) != string(want) {
			t.Fatalf("appendAuth(%+v) = %s; want %s", a, got, want)
		}
	})
}

// The auth objects a microshop gate sends take the fast path.
func TestDecodeAuthFastTakesGateAuth(t *testing.T) {
	k := FleetKey("0123456789abcdef0123456789abcdef")
	for _, a := range []Auth{
		{}, {Member: 42, Session: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Addr: "203.0.113.9"},
		{Admin: true, Addr: "2001:db8::/64"},
	} {
		s := k.sign(&a, "GET", "/goods", binding{params: []byte(`{"id":"7"}`), nonce: "n", seq: 9}, time.Now())
		raw := appendAuth(nil, s)
		got, ok := decodeAuthFast(raw)
		if !ok || got != *s {
			t.Errorf("decodeAuthFast(%s) = %+v, %v; want %+v, true", raw, got, ok, *s)
		}
	}
}

// appendSigned writes what appendAuth writes of sign's copy, for any
// identity and binding, after what the buffer held.
func FuzzAppendSigned(f *testing.F) {
	f.Add(int64(7), false, "ab12", "127.0.0.1", "GET", "/goods", []byte(`{"id":"7"}`), "n", uint64(3))
	f.Add(int64(0), true, "", "", "POST", "/purchases", []byte(nil), "", uint64(0))
	f.Add(int64(-5), false, "<&>", "a\"b\\c\u2028é\x00\xff", "DELETE", "/x|y", []byte(`{}`), "nonce|1", uint64(1<<63))
	k := FleetKey("0123456789abcdef0123456789abcdef")
	now := time.Unix(1800000000, 0)
	f.Fuzz(func(t *testing.T, member int64, admin bool, session, addr, method, uri string, params []byte, nonce string, seq uint64) {
		a := Auth{Member: member, Admin: admin, Session: session, Addr: addr}
		b := binding{params: params, nonce: nonce, seq: seq}
		want := appendAuth([]byte("head"), k.sign(&a, method, uri, b, now))
		got := k.appendSigned([]byte("head"), &a, method, uri, b, now)
		if string(got) != string(want) {
			t.Fatalf("appendSigned(%+v) = %s; want %s", a, got, want)
		}
		if !utf8.ValidString(session) || !utf8.ValidString(addr) {
			return // JSON carries no invalid UTF-8 back
		}
		var back Auth
		if err := json.Unmarshal(got[len("head"):], &back); err != nil || !k.verify(&back, method, uri, b, now) {
			t.Fatalf("appendSigned(%+v) = %s: does not verify (%v)", a, got, err)
		}
	})
}
