package gate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/testenv"
)

func TestClientAddr(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8, 192.168.1.1,::1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		peer    string
		xff     []string
		proxies []netip.Prefix
		want    string
	}{
		{"no proxies: XFF ignored", "203.0.113.9:5000", []string{"1.2.3.4"}, nil, "203.0.113.9"},
		{"untrusted peer: XFF ignored", "203.0.113.9:5000", []string{"1.2.3.4"}, proxies, "203.0.113.9"},
		{"trusted peer, one hop", "10.1.2.3:5000", []string{"198.51.100.7"}, proxies, "198.51.100.7"},
		{"forged left entries", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.7"}, proxies, "198.51.100.7"},
		{"chain of trusted proxies", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.7, 192.168.1.1, 10.9.9.9"}, proxies, "198.51.100.7"},
		{"several headers", "10.1.2.3:5000", []string{"6.6.6.6", "198.51.100.7, 10.2.2.2"}, proxies, "198.51.100.7"},
		{"all trusted: leftmost", "10.1.2.3:5000", []string{"10.5.5.5, 10.6.6.6"}, proxies, "10.5.5.5"},
		{"garbage ends the walk", "10.1.2.3:5000", []string{"198.51.100.7, garbage, 10.4.4.4"}, proxies, "10.4.4.4"},
		{"entries with ports", "10.1.2.3:5000", []string{"198.51.100.7:1234"}, proxies, "198.51.100.7"},
		{"ipv6 peer trusted", "[::1]:5000", []string{"2001:db8::1"}, proxies, "2001:db8::1"},
		{"no XFF from a proxy", "10.1.2.3:5000", nil, proxies, "10.1.2.3"},
		{"mapped peer", "[::ffff:203.0.113.9]:5000", nil, proxies, "203.0.113.9"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/goods", nil)
		r.RemoteAddr = tt.peer
		for _, h := range tt.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := ClientAddr(r, tt.proxies); got.String() != tt.want {
			t.Errorf("%s: ClientAddr = %v; want %s", tt.name, got, tt.want)
		}
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8,nonsense"); err == nil {
		t.Error("ParseTrustedProxies(nonsense) succeeded")
	}
	if got := addrKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")); got != "2001:db8:1:2::/64" {
		t.Errorf("addrKey(ipv6) = %s; want the /64", got)
	}
}

func TestParseSession(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	tests := []struct {
		v            string
		member       int64
		live, parsed bool
	}{
		{"7:1000001", 7, true, true},
		{"7:1000000", 0, false, true}, // expired
		{"revoked", 0, false, true},
		{"", 0, false, false},
		{"x:1", 0, false, false},
		{"0:2000000", 0, false, false},
		{"7", 0, false, false},
	}
	for _, tt := range tests {
		m, live, ok := parseSession(tt.v, now)
		if m != tt.member || live != tt.live || ok != tt.parsed {
			t.Errorf("parseSession(%q) = %d, %v, %v; want %d, %v, %v", tt.v, m, live, ok, tt.member, tt.live, tt.parsed)
		}
	}
}

// TestAuthenticate drives the gate's handler: the token check happens
// before the route lookup, so an unknown route (404) means "admitted".
func TestAuthenticate(t *testing.T) {
	c := testenv.Cache(t)
	const adminKey = "an admin key of some length"
	g := New(Config{Cache: c, Security: Security{AdminKey: adminKey}, RequestTimeout: time.Second})
	ctx := context.Background()
	live := HashToken("live-token")
	c.Set(ctx, sessionKey(c, live), "42:"+strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10), time.Hour)
	c.Set(ctx, sessionKey(c, HashToken("revoked-token")), "revoked", time.Hour)
	c.Set(ctx, sessionKey(c, HashToken("old-token")), "42:"+strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10), time.Hour)

	tests := []struct {
		header string
		status int
	}{
		{"", 404},
		{"Bearer live-token", 404},
		{"bearer   live-token", 404},
		{"Bearer " + adminKey, 404},
		{"Bearer revoked-token", 401},
		{"Bearer old-token", 401},
		{"Basic dXNlcjpwYXNz", 401},
		{"Bearer", 401},
		{"Bearer unknown-token", 503}, // no members service to ask
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/nowhere", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, r)
		if w.Code != tt.status {
			t.Errorf("Authorization %q: status %d (%s); want %d", tt.header, w.Code, w.Body, tt.status)
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: 401 without WWW-Authenticate", tt.header)
		}
	}

	// The identity the handler sees.
	for _, tt := range []struct {
		header      string
		member      int64
		admin       bool
		withSession bool
	}{
		{"", 0, false, false},
		{"Bearer live-token", 42, false, true},
		{"Bearer " + adminKey, 0, true, false},
	} {
		r := httptest.NewRequest("GET", "/nowhere", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		a, status := g.authenticate(ctx, httptest.NewRecorder(), r)
		if status != 0 || a == nil || a.Member != tt.member || a.Admin != tt.admin || (a.Session != "") != tt.withSession {
			t.Errorf("Authorization %q: auth %+v, status %d; want member %d admin %v", tt.header, a, status, tt.member, tt.admin)
		}
	}

	off := New(Config{Cache: c, Security: Security{AuthOff: true}})
	r := httptest.NewRequest("GET", "/nowhere", nil)
	r.Header.Set("Authorization", "Bearer revoked-token")
	if a, status := off.authenticate(ctx, httptest.NewRecorder(), r); a != nil || status != 0 {
		t.Errorf("--auth=off: auth %+v, status %d; want none, 0", a, status)
	}
}

func TestServiceRetryAfter(t *testing.T) {
	h := http.Header{}
	setRetryAfter(h, mustDecode(t, `{"key":1,"errorcode":429,"errormessage":"locked","retryafter":42}`))
	if got := h.Get("Retry-After"); got != "42" {
		t.Errorf("Retry-After = %q; want 42", got)
	}
	setRetryAfter(h, mustDecode(t, `{"key":1,"errorcode":429,"errormessage":"busy"}`))
	if got := h.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After without retryafter = %q; want 1", got)
	}
}
