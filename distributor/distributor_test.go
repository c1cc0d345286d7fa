package distributor

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"
)

func TestAdvertised(t *testing.T) {
	for _, tc := range []struct {
		in       string
		host     string
		port     int
		mustFail bool
	}{
		{"", "", 9010, false},
		{"10.0.0.7", "10.0.0.7", 9010, false},
		{"goods-1.internal", "goods-1.internal", 9010, false},
		{"10.0.0.7:19010", "10.0.0.7", 19010, false},
		{"[2001:db8::1]:19010", "2001:db8::1", 19010, false},
		{"2001:db8::1", "2001:db8::1", 9010, false},
		{"10.0.0.7:0", "", 0, true},
		{"10.0.0.7:65536", "", 0, true},
		{"10.0.0.7:http", "", 0, true},
		{"no spaces", "", 0, true},
		{"-bad.example", "", 0, true},
		{"a..b", "", 0, true},
		{":9010", "", 0, true},
	} {
		host, port, err := Advertised(tc.in, 9010)
		if tc.mustFail {
			if err == nil {
				t.Errorf("Advertised(%q) = %q, %d; want an error", tc.in, host, port)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("Advertised(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestValidateHost(t *testing.T) {
	ok := Registration{Name: "goods", Host: "10.1.2.3", Port: 9010}
	if err := validate(ok); err != nil {
		t.Fatalf("validate(%+v) = %v", ok, err)
	}
	bad := Registration{Name: "goods", Host: "x y", Port: 9010}
	if err := validate(bad); err == nil {
		t.Fatalf("validate(%+v) = nil; want an error for the host", bad)
	}
}

func TestSignedRegistration(t *testing.T) {
	key := []byte("a-fleet-key-0123456789")
	now := time.Unix(1_800_000_000, 0)
	r := Registration{Name: "members", Host: "10.0.0.2", Port: 9020, URLs: []string{"POST/sessions"}}
	sign(key, &r, now)
	if !verifySig(key, &r, now) {
		t.Fatal("a freshly signed registration does not verify")
	}
	for what, bad := range map[string]func(r *Registration) []byte{
		"another key":    func(r *Registration) []byte { return []byte("another-key-0123456789") },
		"another port":   func(r *Registration) []byte { r.Port = 9021; return key },
		"another host":   func(r *Registration) []byte { r.Host = "10.0.0.3"; return key },
		"another route":  func(r *Registration) []byte { r.URLs = append(r.URLs, "GET/members"); return key },
		"another name":   func(r *Registration) []byte { r.Name = "goods"; return key },
		"a later expiry": func(r *Registration) []byte { r.Exp += 3600; return key },
		"no signature":   func(r *Registration) []byte { r.Sig = ""; return key },
	} {
		c := r
		c.URLs = append([]string(nil), r.URLs...)
		k := bad(&c)
		if verifySig(k, &c, now) {
			t.Errorf("a registration with %s verifies", what)
		}
	}
	if verifySig(key, &r, now.Add(signedFor+time.Second)) {
		t.Error("an expired registration verifies")
	}
}

// EndSettle pushes the list at once, however long the settle period.
func TestEndSettle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewServer(slog.New(slog.DiscardHandler), 0)
	s.Settle = time.Hour
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(ctx, ln) }()
	lists := make(chan []Node, 16)
	c := NewClient(ClientConfig{Addrs: []string{ln.Addr().String()}, Logger: slog.New(slog.DiscardHandler),
		Registration: &Registration{Name: "goods", Port: 9010, URLs: []string{"GET/goods"}},
		OnChange:     func(n []Node) { lists <- n }})
	go c.Run(ctx)
	for len(s.Nodes()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	s.EndSettle()
	select {
	case n := <-lists:
		if len(n) != 1 || n[0].Name != "goods" {
			t.Fatalf("list %+v; want goods", n)
		}
	case <-time.After(30 * time.Second): // a hang guard, not a timing assertion
		t.Fatal("no list after EndSettle")
	}
	cancel()
	<-served
}
