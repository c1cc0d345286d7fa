package auth

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/internal/testenv"
)

// counter counts the calls a client sends Redis (a pipeline is one).
type counter struct{ n atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !nearFollowing(cmd) {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// nearFollowing reports whether cmd is the near cache's follower reading
// its epoch marker (not a call of Admit's).
func nearFollowing(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.HasSuffix(s, ":near-epoch") {
			return true
		}
	}
	return false
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// limitedGuard returns a guard with every limit on, kept in c, believing
// sessions cached in c.
func limitedGuard(t *testing.T, c *cache.Cache, ip, strict, member limit.Limit) *Guard {
	return testGuard(t, Config{Cache: c, Limiter: limit.New(c, nil), FleetKey: testFleetKey,
		RateLimit: ip, StrictRateLimit: strict, MemberRateLimit: member})
}

type outcome struct {
	status                                 int
	limit, remaining, reset, retry, member string
}

func (o outcome) String() string {
	return fmt.Sprintf("%d (member %s; RateLimit-Limit %s, -Remaining %s, -Reset %s, Retry-After %s)", o.status, o.member, o.limit, o.remaining, o.reset, o.retry)
}

// send admits method /nowhere from 192.0.2.1 with token (none when "").
func send(g *Guard, method, token string) outcome {
	r := httptest.NewRequest(method, "/nowhere", nil)
	r.RemoteAddr = "192.0.2.1:1234"
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	a, status := g.Admit(w, r)
	h := w.Header()
	o := outcome{status: status, limit: h.Get("RateLimit-Limit"), remaining: h.Get("RateLimit-Remaining"),
		reset: h.Get("RateLimit-Reset"), retry: h.Get("Retry-After")}
	if a != nil {
		o.member = fmt.Sprint(a.Member)
	}
	return o
}

// TestOneTripAsSteps: a member's token admitted in one Redis round trip,
// or from the near cache of sessions with its limits in one round trip,
// gets, request after request, exactly what the step-by-step path gives:
// the same statuses, the same headers, the same limit that refuses; with
// limits on (bursts too small to lease) a member's later requests cost one
// Redis call each.
func TestOneTripAsSteps(t *testing.T) {
	now := time.Now()
	sg := sessioncache.NewSigner(testFleetKey)
	perMin := func(n int) limit.Limit { return limit.Limit{Rate: n, Burst: n, Period: time.Minute} }
	for _, tc := range []struct {
		name               string
		ip, strict, member limit.Limit
		method             string
		n                  int
	}{
		{"member limit refuses", perMin(100), perMin(100), perMin(4), "GET", 6},
		{"address limit refuses", perMin(3), perMin(100), perMin(100), "GET", 5},
		{"strict limit refuses", perMin(100), perMin(2), perMin(100), "POST", 4},
		{"member limit only", limit.Limit{}, limit.Limit{}, perMin(3), "POST", 5},
		{"no limits", limit.Limit{}, limit.Limit{}, limit.Limit{}, "GET", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			modes := []string{"step by step", "one trip", "near"}
			var got [3][]outcome
			var calls [3]int64
			for i, mode := range modes {
				c := testenv.Cache(t)
				g := limitedGuard(t, c, tc.ip, tc.strict, tc.member)
				switch mode {
				case "step by step":
					g.stepsOnly = true
				case "one trip":
					g.Close()
					g.near = nil
				case "near":
					waitFor(t, "the near cache to follow", func() bool { return g.near.follow.Live() })
				}
				if mode != "step by step" && !g.cfg.Limiter.OneTrip() {
					t.Skip("a Redis Cluster: the one-trip path is not used")
				}
				cacheSession(t, c, "tok", sg.Live(sessioncache.HashToken("tok"), 42, now.Add(time.Hour), now.Add(time.Hour)))
				cnt := &counter{}
				c.AddHook(cnt)
				for j := range tc.n {
					before := cnt.n.Load()
					got[i] = append(got[i], send(g, tc.method, "tok"))
					if j == 1 {
						calls[i] = cnt.n.Load() - before
					}
				}
				// What is left of each allowance: refused requests took
				// nothing from the limits after the one that refused.
				for _, k := range []struct {
					key string
					lim limit.Limit
				}{{"ip:192.0.2.1", tc.ip}, {"strict:192.0.2.1", tc.strict}, {"member:42", tc.member}} {
					if !k.lim.IsZero() {
						res := g.cfg.Limiter.Allow(context.Background(), k.key, k.lim)
						got[i] = append(got[i], outcome{member: k.key, remaining: fmt.Sprint(res.Remaining)})
					}
				}
			}
			for i := 1; i < len(modes); i++ {
				for j := range got[0] {
					if got[i][j] != got[0][j] {
						t.Errorf("request %d: %s %v; step by step %v", j+1, modes[i], got[i][j], got[0][j])
					}
				}
				if calls[i] > 1 {
					t.Errorf("%s: the second request made %d Redis calls; want 1 (step by step: %d)", modes[i], calls[i], calls[0])
				}
			}
		})
	}
}

// TestOneTripRevokedRefused: a token whose session has ended is refused
// (401) on the one-trip path, its member known from earlier requests or
// not, and takes nothing from the member's allowance.
func TestOneTripRevokedRefused(t *testing.T) {
	c := testenv.Cache(t)
	g := limitedGuard(t, c, limit.Limit{}, limit.Limit{}, limit.Limit{Rate: 5, Burst: 5, Period: time.Minute})
	if !g.cfg.Limiter.OneTrip() {
		t.Skip("a Redis Cluster: the one-trip path is not used")
	}
	g.Close() // the one-trip path, not the near cache (see near_test.go)
	g.near = nil
	now := time.Now()
	sg := sessioncache.NewSigner(testFleetKey)
	cacheSession(t, c, "a", sg.Live(sessioncache.HashToken("a"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	cacheSession(t, c, "b", sg.Live(sessioncache.HashToken("b"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	cacheSession(t, c, "expired", sg.Live(sessioncache.HashToken("expired"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	if o := send(g, "GET", "a"); o.status != 0 || o.member != "7" || o.remaining != "4" {
		t.Fatalf("live token: %v; want admitted as member 7, 4 left", o)
	}
	if o := send(g, "GET", "expired"); o.status != 0 || o.member != "7" || o.remaining != "3" {
		t.Fatalf("live token: %v; want admitted as member 7, 3 left", o)
	}
	// Both tokens' member is known now: the script is asked to take from
	// member 7's allowance, and must not.
	cacheSession(t, c, "a", sg.Revoked(sessioncache.HashToken("a"), now.Add(time.Hour))) // logged out
	cacheSession(t, c, "expired", sg.Live(sessioncache.HashToken("expired"), 7, now.Add(-time.Second), now.Add(time.Hour)))
	for range 3 {
		if o := send(g, "GET", "a"); o.status != 401 {
			t.Errorf("revoked token: %v; want 401", o)
		}
		if o := send(g, "GET", "expired"); o.status != 401 {
			t.Errorf("expired token: %v; want 401", o)
		}
	}
	if o := send(g, "GET", "b"); o.status != 0 || o.remaining != "2" {
		t.Errorf("the member's other token: %v; want admitted, 2 left (the refused requests took nothing)", o)
	}
	// A session Redis no longer holds, nor the members service (absent
	// here), is never admitted.
	if err := c.Del(context.Background(), sessioncache.Key(c, sessioncache.HashToken("b"))).Err(); err != nil {
		t.Fatal(err)
	}
	if o := send(g, "GET", "b"); o.status != 503 {
		t.Errorf("a session missing from Redis, no members service: %v; want 503", o)
	}
}

// TestOneTripRedisDown: with Redis down a member's token falls back, step
// by step, to the in-process limits and the members service (absent here:
// 503), and the one-trip path is back once Redis answers.
func TestOneTripRedisDown(t *testing.T) {
	m := miniredis.RunT(t)
	addr := m.Addr()
	c, err := cache.Open("redis://"+addr+"/0", "test:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := limitedGuard(t, c, limit.Limit{Rate: 3, Burst: 3, Period: time.Minute}, limit.Limit{}, limit.Limit{Rate: 100, Burst: 100, Period: time.Minute})
	g.Close() // the one-trip path, not the near cache (see near_test.go)
	g.near = nil
	now := time.Now()
	sg := sessioncache.NewSigner(testFleetKey)
	cacheSession(t, c, "tok", sg.Live(sessioncache.HashToken("tok"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	if o := send(g, "GET", "tok"); o.status != 0 || o.member != "7" {
		t.Fatalf("Redis up: %v; want admitted as member 7", o)
	}
	m.Close()
	var statuses []int
	for range 4 {
		statuses = append(statuses, send(g, "GET", "tok").status)
	}
	if fmt.Sprint(statuses) != "[503 503 503 429]" {
		t.Errorf("Redis down: statuses %v; want [503 503 503 429] (asked the members service, absent; the address limit, 3, in process)", statuses)
	}

	m2 := miniredis.NewMiniRedis()
	if err := m2.StartAddr(addr); err != nil {
		t.Skipf("cannot restart Redis on %s: %v", addr, err)
	}
	defer m2.Close()
	m2.Set("test:"+sessioncache.Key(&cache.Cache{}, sessioncache.HashToken("tok")), sg.Live(sessioncache.HashToken("tok"), 7, now.Add(time.Hour), now.Add(time.Hour)))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if o := send(g, "GET", "tok"); o.status == 0 && o.member == "7" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Redis back: the token is still not admitted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !m2.Exists("test:rate:ip:192.0.2.1") || !m2.Exists("test:rate:member:7") {
		t.Errorf("Redis back: keys %v; want the limits in Redis again", m2.Keys())
	}
}

// waitFor waits, at most 5 s, for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
