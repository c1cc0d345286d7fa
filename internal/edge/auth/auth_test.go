package auth

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

// testFleetKey is the fleet key of the gates these tests make.
var testFleetKey = []byte("gate test fleet key 0123456")

// cacheSession writes v as token's cached session.
func cacheSession(t *testing.T, c *cache.Cache, token, v string) {
	t.Helper()
	if err := c.Set(context.Background(), sessioncache.Key(c, sessioncache.HashToken(token)), v, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}

// testGuard returns a guard whose members service is nowhere to be found:
// a token it must ask about gets 503.
func testGuard(t *testing.T, cfg Config) *Guard {
	t.Helper()
	cfg.Client = service.NewClient(service.ClientConfig{RequestTimeout: time.Second})
	t.Cleanup(cfg.Client.Close)
	cfg.Logger = slog.New(slog.DiscardHandler)
	g := New(cfg)
	t.Cleanup(g.Close)
	return g
}

// admit returns the status of Admit for r: 0 when admitted.
func admit(g *Guard, r *http.Request) (int, *httptest.ResponseRecorder) {
	w := httptest.NewRecorder()
	_, status := g.Admit(w, r)
	if status != 0 && status != w.Code {
		panic("Admit returned a status it did not write")
	}
	return status, w
}

func TestAuthenticate(t *testing.T) {
	c := testenv.Cache(t)
	const adminKey = "an admin key of some length"
	g := testGuard(t, Config{Cache: c, AdminKey: adminKey, FleetKey: testFleetKey})
	sg := sessioncache.NewSigner(testFleetKey)
	now := time.Now()
	cacheSession(t, c, "live-token", sg.Live(sessioncache.HashToken("live-token"), 42, now.Add(time.Hour), now.Add(time.Minute)))
	cacheSession(t, c, "revoked-token", sg.Revoked(sessioncache.HashToken("revoked-token"), now.Add(time.Minute)))
	cacheSession(t, c, "old-token", sg.Live(sessioncache.HashToken("old-token"), 42, now.Add(-time.Second), now.Add(time.Minute)))

	tests := []struct {
		header string
		status int
	}{
		{"", 0},
		{"Bearer live-token", 0},
		{"bearer   live-token", 0},
		{"Bearer " + adminKey, 0},
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
		status, w := admit(g, r)
		if status != tt.status {
			t.Errorf("Authorization %q: status %d (%s); want %d", tt.header, status, w.Body, tt.status)
		}
		if status == 401 && w.Header().Get("WWW-Authenticate") == "" {
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
		a, status := g.Admit(httptest.NewRecorder(), r)
		if status != 0 || a == nil || a.Member != tt.member || a.Admin != tt.admin || (a.Session != "") != tt.withSession {
			t.Errorf("Authorization %q: auth %+v, status %d; want member %d admin %v", tt.header, a, status, tt.member, tt.admin)
		}
	}

	off := testGuard(t, Config{Cache: c, AuthOff: true})
	r := httptest.NewRequest("GET", "/nowhere", nil)
	r.Header.Set("Authorization", "Bearer revoked-token")
	if a, status := off.Admit(httptest.NewRecorder(), r); a != nil || status != 0 {
		t.Errorf("--auth=off: auth %+v, status %d; want none, 0", a, status)
	}
}

// TestForgedSessionIgnored: a cached session the gate cannot verify with
// its fleet key is a miss: the gate asks the members service (here there
// is none, so 503), and never lets the token in on Redis's word. Without a
// fleet key the gate believes no cached session at all.
func TestForgedSessionIgnored(t *testing.T) {
	c := testenv.Cache(t)
	g := testGuard(t, Config{Cache: c, FleetKey: testFleetKey})
	now := time.Now()
	other := sessioncache.NewSigner([]byte("another deployment's fleet key"))
	sg := sessioncache.NewSigner(testFleetKey)
	exp := strconv.FormatInt(now.Add(time.Hour).UnixMilli(), 10)
	for _, tc := range []struct{ what, token, v string }{
		{"the old unsigned format", "forged-1", "42:" + exp},
		{"signed with another key", "forged-2", other.Live(sessioncache.HashToken("forged-2"), 42, now.Add(time.Hour), now.Add(time.Minute))},
		{"signed for another token", "forged-3", sg.Live(sessioncache.HashToken("someone else's token"), 42, now.Add(time.Hour), now.Add(time.Minute))},
		{"a made-up MAC", "forged-4", "v1:42:" + exp + ":" + exp + ":AAAA"},
		{"a forged tombstone", "forged-5", "v1:revoked:" + exp + ":AAAA"},
	} {
		cacheSession(t, c, tc.token, tc.v)
		r := httptest.NewRequest("GET", "/nowhere", nil)
		r.Header.Set("Authorization", "Bearer "+tc.token)
		if status, w := admit(g, r); status != 503 {
			t.Errorf("%s: status %d (%s); want 503 (asked the members service, which is not there)", tc.what, status, w.Body)
		}
	}

	cacheSession(t, c, "signed", sg.Live(sessioncache.HashToken("signed"), 42, now.Add(time.Hour), now.Add(time.Minute)))
	nokey := testGuard(t, Config{Cache: c})
	r := httptest.NewRequest("GET", "/nowhere", nil)
	r.Header.Set("Authorization", "Bearer signed")
	if a, status := nokey.Admit(httptest.NewRecorder(), r); status != 503 {
		t.Errorf("gate without a fleet key, signed cached session: auth %+v, status %d; want 503 (it asks the members service)", a, status)
	}
	if a, status := g.Admit(httptest.NewRecorder(), r); status != 0 || a.Member != 42 {
		t.Errorf("gate with the fleet key, signed cached session: auth %+v, status %d; want member 42", a, status)
	}
}

// A WebSocket upgrade may carry its token as ?token= (browsers cannot set
// headers on one); any other request may not.
func TestQueryTokenOnlyForWebSockets(t *testing.T) {
	c := testenv.Cache(t)
	g := testGuard(t, Config{Cache: c, FleetKey: testFleetKey})
	now := time.Now()
	sg := sessioncache.NewSigner(testFleetKey)
	cacheSession(t, c, "ws-token", sg.Live(sessioncache.HashToken("ws-token"), 9, now.Add(time.Hour), now.Add(time.Minute)))
	for _, tc := range []struct {
		upgrade bool
		member  int64
	}{{true, 9}, {false, 0}} {
		r := httptest.NewRequest("GET", "/chat?room=r&token=ws-token", nil)
		if tc.upgrade {
			r.Header.Set("Upgrade", "websocket")
		}
		a, status := g.Admit(httptest.NewRecorder(), r)
		if status != 0 || a == nil || a.Member != tc.member {
			t.Errorf("upgrade %v: auth %+v, status %d; want member %d", tc.upgrade, a, status, tc.member)
		}
	}
}
