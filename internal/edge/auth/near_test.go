package auth

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/internal/testenv"
)

// nearGuard returns a guard on c with the member limit on, once its near
// cache of sessions follows the invalidations, and a counter of the Redis
// calls Admit makes.
func nearGuard(t *testing.T, c *cache.Cache) (*Guard, *counter) {
	t.Helper()
	g := limitedGuard(t, c, limit.Limit{}, limit.Limit{}, limit.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second})
	waitFor(t, "the near cache to follow the invalidations", func() bool { return g.near.follow.Live() })
	cnt := &counter{}
	c.AddHook(cnt)
	return g, cnt
}

// revoke does what the members service does when a session ends: the
// tombstone, then the invalidation.
func revoke(t *testing.T, c *cache.Cache, token string) {
	t.Helper()
	h := sessioncache.HashToken(token)
	cacheSession(t, c, token, sessioncache.NewSigner(testFleetKey).Revoked(h, time.Now().Add(time.Hour)))
	if err := cache.Invalidate(context.Background(), c, sessioncache.Topic, h); err != nil {
		t.Fatal(err)
	}
}

// A member's requests after the first are admitted from memory, with no
// Redis call; a session revoked elsewhere (another gate, the members
// service) is refused once its invalidation is heard, and so is one that
// expires.
func TestNearSessions(t *testing.T) {
	c := testenv.Cache(t)
	g, cnt := nearGuard(t, c)
	sg := sessioncache.NewSigner(testFleetKey)
	now := time.Now()
	cacheSession(t, c, "tok", sg.Live(sessioncache.HashToken("tok"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	cacheSession(t, c, "short", sg.Live(sessioncache.HashToken("short"), 8, now.Add(400*time.Millisecond), now.Add(time.Hour)))
	for _, tok := range []string{"tok", "short"} {
		if o := send(g, "GET", tok); o.status != 0 {
			t.Fatalf("%s: %v; want admitted", tok, o)
		}
	}
	if g.near.len() != 2 {
		t.Fatalf("near cache holds %d sessions after two admitted tokens; want 2", g.near.len())
	}
	before := cnt.n.Load()
	for range 100 {
		if o := send(g, "GET", "tok"); o.status != 0 || o.member != "7" {
			t.Fatalf("from the near cache: %v; want admitted as member 7", o)
		}
	}
	if n := cnt.n.Load() - before; n > 10 {
		t.Errorf("100 requests of a kept session cost %d Redis calls; want a few (leases of the member's limit)", n)
	}

	heard := g.near.heardN.Load()
	revoke(t, c, "tok")
	waitFor(t, "the invalidation", func() bool { return g.near.heardN.Load() > heard })
	if o := send(g, "GET", "tok"); o.status != 401 {
		t.Errorf("revoked elsewhere, invalidation heard: %v; want 401", o)
	}

	time.Sleep(time.Until(now.Add(450 * time.Millisecond)))
	if o := send(g, "GET", "short"); o.status != 401 {
		t.Errorf("expired session: %v; want 401 (the near cache keeps a session no longer than it lasts)", o)
	}
}

// A logout through this gate drops the token from its near cache at once
// and keeps it out until the members service has surely answered, even
// when its invalidation has not come (yet).
func TestNearSessionsLogoutHere(t *testing.T) {
	c := testenv.Cache(t)
	g, _ := nearGuard(t, c)
	sg := sessioncache.NewSigner(testFleetKey)
	now := time.Now()
	cacheSession(t, c, "tok", sg.Live(sessioncache.HashToken("tok"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	if o := send(g, "GET", "tok"); o.status != 0 || g.near.len() != 1 {
		t.Fatalf("first request: %v, %d kept; want admitted and kept", o, g.near.len())
	}
	r := httptest.NewRequest("DELETE", "/sessions", nil)
	r.RemoteAddr = "192.0.2.1:1234"
	r.Header.Set("Authorization", "Bearer tok")
	if status, w := admit(g, r); status != 0 {
		t.Fatalf("DELETE /sessions: %d %s; want admitted (the members service ends the session)", status, w.Body)
	}
	if g.near.len() != 0 {
		t.Fatal("the token is still kept after its logout went through this gate")
	}
	// The members service wrote the tombstone; its invalidation is lost.
	cacheSession(t, c, "tok", sg.Revoked(sessioncache.HashToken("tok"), now.Add(time.Hour)))
	if o := send(g, "GET", "tok"); o.status != 401 {
		t.Errorf("after the logout: %v; want 401", o)
	}
}

// A FLUSHALL (here: the deletion of the test's keys, the epoch marker
// among them) empties the near cache of sessions.
func TestNearSessionsFlush(t *testing.T) {
	c := testenv.Cache(t)
	g, _ := nearGuard(t, c)
	sg := sessioncache.NewSigner(testFleetKey)
	now := time.Now()
	cacheSession(t, c, "tok", sg.Live(sessioncache.HashToken("tok"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	send(g, "GET", "tok")
	if g.near.len() != 1 {
		t.Fatalf("%d sessions kept; want 1", g.near.len())
	}
	resets := g.near.resets.Load()
	testenv.FlushPrefix(t, c)
	waitFor(t, "the near cache to be emptied", func() bool { return g.near.resets.Load() > resets && g.near.len() == 0 })
}

// A lost invalidation connection empties the near cache and stops its use
// until it is back.
func TestNearSessionsLostConnection(t *testing.T) {
	e, err := cache.StartEmbedded("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	c, err := cache.Open(e.URL(), "test:", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	g, _ := nearGuard(t, c)
	sg := sessioncache.NewSigner(testFleetKey)
	now := time.Now()
	cacheSession(t, c, "tok", sg.Live(sessioncache.HashToken("tok"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	send(g, "GET", "tok")
	if g.near.len() != 1 {
		t.Fatalf("%d sessions kept; want 1", g.near.len())
	}
	e.Miniredis.Close()
	waitFor(t, "the near cache to be emptied", func() bool { return g.near.len() == 0 && !g.near.follow.Live() })
	if o := send(g, "GET", "tok"); o.status != 503 {
		t.Errorf("Redis down, invalidations not followed: %v; want 503 (asked the members service, absent here)", o)
	}
	if err := e.Miniredis.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the near cache to follow again", func() bool { return g.near.follow.Live() })
}
