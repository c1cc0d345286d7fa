package gate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/internal/testenv"
)

// testFleetKey is the fleet key of the gates these tests make.
var testFleetKey = []byte("gate test fleet key 0123456")

// cacheSession writes v as token's cached session.
func cacheSession(t *testing.T, c *cache.Cache, token, v string) {
	t.Helper()
	if err := c.Set(context.Background(), sessioncache.Key(c, HashToken(token)), v, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}

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

// TestAuthenticate drives the gate's handler: the token check happens
// before the route lookup, so an unknown route (404) means "admitted".
func TestAuthenticate(t *testing.T) {
	c := testenv.Cache(t)
	const adminKey = "an admin key of some length"
	g := New(Config{Cache: c, Security: Security{AdminKey: adminKey}, FleetKey: testFleetKey, RequestTimeout: time.Second})
	ctx := context.Background()
	sg := sessioncache.NewSigner(testFleetKey)
	now := time.Now()
	cacheSession(t, c, "live-token", sg.Live(HashToken("live-token"), 42, now.Add(time.Hour), now.Add(time.Minute)))
	cacheSession(t, c, "revoked-token", sg.Revoked(HashToken("revoked-token"), now.Add(time.Minute)))
	cacheSession(t, c, "old-token", sg.Live(HashToken("old-token"), 42, now.Add(-time.Second), now.Add(time.Minute)))

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

// TestForgedSessionIgnored: a cached session the gate cannot verify with
// its fleet key is a miss: the gate asks the members service (here there
// is none, so 503), and never lets the token in on Redis's word. Without a
// fleet key the gate believes no cached session at all.
func TestForgedSessionIgnored(t *testing.T) {
	c := testenv.Cache(t)
	g := New(Config{Cache: c, FleetKey: testFleetKey, RequestTimeout: 200 * time.Millisecond})
	now := time.Now()
	other := sessioncache.NewSigner([]byte("another deployment's fleet key"))
	sg := sessioncache.NewSigner(testFleetKey)
	exp := strconv.FormatInt(now.Add(time.Hour).UnixMilli(), 10)
	for _, tc := range []struct{ what, token, v string }{
		{"the old unsigned format", "forged-1", "42:" + exp},
		{"signed with another key", "forged-2", other.Live(HashToken("forged-2"), 42, now.Add(time.Hour), now.Add(time.Minute))},
		{"signed for another token", "forged-3", sg.Live(HashToken("someone else's token"), 42, now.Add(time.Hour), now.Add(time.Minute))},
		{"a made-up MAC", "forged-4", "v1:42:" + exp + ":" + exp + ":AAAA"},
		{"a forged tombstone", "forged-5", "v1:revoked:" + exp + ":AAAA"},
	} {
		cacheSession(t, c, tc.token, tc.v)
		r := httptest.NewRequest("GET", "/nowhere", nil)
		r.Header.Set("Authorization", "Bearer "+tc.token)
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, r)
		if w.Code != 503 {
			t.Errorf("%s: status %d (%s); want 503 (asked the members service, which is not there)", tc.what, w.Code, w.Body)
		}
	}

	cacheSession(t, c, "signed", sg.Live(HashToken("signed"), 42, now.Add(time.Hour), now.Add(time.Minute)))
	nokey := New(Config{Cache: c, RequestTimeout: 200 * time.Millisecond})
	r := httptest.NewRequest("GET", "/nowhere", nil)
	r.Header.Set("Authorization", "Bearer signed")
	if a, status := nokey.authenticate(context.Background(), httptest.NewRecorder(), r); status != 503 {
		t.Errorf("gate without a fleet key, signed cached session: auth %+v, status %d; want 503 (it asks the members service)", a, status)
	}
	if a, status := g.authenticate(context.Background(), httptest.NewRecorder(), r); status != 0 || a.Member != 42 {
		t.Errorf("gate with the fleet key, signed cached session: auth %+v, status %d; want member 42", a, status)
	}
}
