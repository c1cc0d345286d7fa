package members

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

var (
	kimRight = map[string]any{"username": "kim", "password": "correct horse"}
	kimWrong = map[string]any{"username": "kim", "password": "wrong horse"}
)

// lockedFor reports whether err is the lockout's 429 for the address
// (byAddr) or for the username.
func lockedFor(err error, byAddr bool) bool {
	return code(err) == 429 && strings.Contains(err.Error(), "from your address") == byAddr
}

// With the client's address from the gate, the lockout is per address: a
// guesser locks out only itself, and adds at most LockoutThreshold to the
// username's count, which locks out the addresses kim never logged in from
// only when many addresses have failed.
func TestLockoutPerAddress(t *testing.T) {
	f := newSessionFixture(t)
	f.svc.LockoutThreshold, f.svc.LockoutUsernameThreshold = 5, 8
	f.call(t, "POST/members", nil, kimRight)
	from := gateAuth

	for i := range 5 {
		if _, err := f.call(t, "POST/sessions", from("10.0.0.1"), kimWrong); code(err) != 401 {
			t.Fatalf("wrong password #%d from A: %v; want 401", i+1, err)
		}
	}
	// A is locked out, and keeps trying: that adds nothing to kim's count.
	for range 10 {
		if _, err := f.call(t, "POST/sessions", from("10.0.0.1"), kimRight); !lockedFor(err, true) {
			t.Fatalf("right password from A after 5 failures: %v; want a 429 for the address", err)
		}
	}
	// Another address is not locked out by A.
	if _, err := f.call(t, "POST/sessions", from("10.0.0.2"), kimRight); err != nil {
		t.Fatalf("right password from B while A is locked out: %v", err)
	}
	// B's success did not clear A's count.
	if _, err := f.call(t, "POST/sessions", from("10.0.0.1"), kimRight); code(err) != 429 {
		t.Fatalf("A after B logged in: %v; want still 429", err)
	}
	// kim's count is 5 (A's failures; B's success is not counted), and 3
	// failures from C make 8 …
	for range 3 {
		if _, err := f.call(t, "POST/sessions", from("10.0.0.3"), kimWrong); code(err) != 401 {
			t.Fatalf("wrong password from C: %v; want 401", err)
		}
	}
	// … so the next attempt from an address kim never logged in from is
	// over the username's threshold …
	if _, err := f.call(t, "POST/sessions", from("10.0.0.4"), kimRight); !lockedFor(err, false) {
		t.Fatalf("right password from D after 8 failures on kim: %v; want a 429 for the username", err)
	}
	// … while B, where kim logged in before, still gets in.
	if _, err := f.call(t, "POST/sessions", from("10.0.0.2"), kimRight); err != nil {
		t.Fatalf("right password from B, a known address, after 8 failures on kim: %v", err)
	}
}

// TestConcurrentCorrectLogins: correct logins never count as failures,
// however many run at once (the sixth of six used to get a 429).
func TestConcurrentCorrectLogins(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T) *sessionFixture
		auth *service.Auth
	}{
		{"from one address", newSessionFixture, gateAuth("10.0.0.9")},
		{"without an address", newBookFixture, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f(t)
			f.call(t, "POST/members", nil, kimRight)
			const n = 20
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					_, err := f.call(t, "POST/sessions", tc.auth, kimRight)
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("one of %d simultaneous correct logins: %v", n, err)
				}
			}
		})
	}
}

// TestConcurrentGuessesCapped: simultaneous wrong guesses overrun the
// threshold by less than the number of hashing slots.
func TestConcurrentGuessesCapped(t *testing.T) {
	f := newSessionFixture(t)
	const slots, threshold, n = 2, 5, 30
	f.svc.hasher = newHasher(slots)
	f.svc.LockoutThreshold = threshold
	f.call(t, "POST/members", nil, kimRight)
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := f.call(t, "POST/sessions", gateAuth("10.0.0.1"), kimWrong)
			codes <- code(err)
		})
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[401] < threshold || count[401] > threshold+slots-1 || count[401]+count[429] != n {
		t.Fatalf("%d simultaneous guesses: %v; want %d to %d 401s, the rest 429", n, count, threshold, threshold+slots-1)
	}
}

// TestKnownAddressSurvivesAttack: an attack from many addresses, however
// long, cannot keep kim from logging in from an address kim logged in from
// before; it locks out the others, and is itself capped.
func TestKnownAddressSurvivesAttack(t *testing.T) {
	f := newSessionFixture(t)
	f.svc.LockoutThreshold, f.svc.LockoutUsernameThreshold = 3, 10
	f.svc.LockoutWindow = time.Minute
	f.call(t, "POST/members", nil, kimRight)
	const home = "192.0.2.10"
	if _, err := f.call(t, "POST/sessions", gateAuth(home), kimRight); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := range 200 {
		_, err := f.call(t, "POST/sessions", gateAuth(fmt.Sprintf("203.0.113.%d", i%50)), kimWrong)
		switch code(err) {
		case 401:
			failed++
		case 429:
		default:
			t.Fatalf("guess %d: %v; want 401 or 429", i+1, err)
		}
	}
	if failed != 10 {
		t.Errorf("%d of 200 guesses from 50 addresses had their password checked; want 10 (the username's threshold)", failed)
	}
	if _, err := f.call(t, "POST/sessions", gateAuth("198.51.100.1"), kimRight); !lockedFor(err, false) {
		t.Errorf("right password from a new address during the attack: %v; want a 429 for the username", err)
	}
	if _, err := f.call(t, "GET/members", gateAuth(home), kimRight); err != nil {
		t.Errorf("right password from kim's own address during the attack: %v", err)
	}
	// The known address keeps its own cap.
	for range 3 {
		if _, err := f.call(t, "POST/sessions", gateAuth(home), kimWrong); code(err) != 401 {
			t.Fatalf("wrong password from the known address: %v; want 401", err)
		}
	}
	if _, err := f.call(t, "POST/sessions", gateAuth(home), kimRight); !lockedFor(err, true) {
		t.Errorf("the known address after 3 wrong passwords: %v; want a 429 for the address", err)
	}
}

// TestLockoutWithoutRedis: with Redis down (or none) the lockout counts in
// the process, with the same rules.
func TestLockoutWithoutRedis(t *testing.T) {
	m := miniredis.RunT(t)
	down, err := cache.Open("redis://"+m.Addr()+"/0", "test:", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { down.Close() })
	m.Close()
	for _, tc := range []struct {
		name string
		c    *cache.Cache
	}{{"Redis down", down}, {"no Redis", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &sessionFixture{svc: New(testenv.DB(t), tc.c, nil)}
			f.svc.FleetKey = testFleetKey
			f.routes = f.svc.Routes()
			f.svc.LockoutThreshold, f.svc.LockoutUsernameThreshold = 3, 4
			f.call(t, "POST/members", nil, kimRight)
			if _, err := f.call(t, "POST/sessions", gateAuth("192.0.2.10"), kimRight); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.1"), kimWrong); code(err) != 401 {
					t.Fatalf("wrong password from A: %v; want 401", err)
				}
			}
			if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.1"), kimRight); !lockedFor(err, true) {
				t.Fatalf("A after 3 failures: %v; want a 429 for the address", err)
			}
			if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.2"), kimWrong); code(err) != 401 {
				t.Fatalf("wrong password from B: %v; want 401", err)
			}
			if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.3"), kimRight); !lockedFor(err, false) {
				t.Fatalf("C after 4 failures on kim: %v; want a 429 for the username", err)
			}
			if _, err := f.call(t, "POST/sessions", gateAuth("192.0.2.10"), kimRight); err != nil {
				t.Fatalf("kim's known address: %v", err)
			}
		})
	}
}

// TestLocalLockoutBounded: the in-process fallback holds at most its
// maximum of counters; a username it has no room for is locked, except
// from its known addresses, until the counters expire.
func TestLocalLockoutBounded(t *testing.T) {
	f := &sessionFixture{svc: New(testenv.DB(t), nil, nil)}
	f.svc.FleetKey = testFleetKey
	f.routes = f.svc.Routes()
	f.svc.LockoutWindow = time.Minute
	clock := time.Now()
	f.svc.now = func() time.Time { return clock }
	f.svc.lock.local = newLocalLockout(3)
	f.call(t, "POST/members", nil, kimRight)
	lee := map[string]any{"username": "lee", "password": "correct horse"}
	leeWrong := map[string]any{"username": "lee", "password": "wrong horse"}
	f.call(t, "POST/members", nil, lee)
	if _, err := f.call(t, "POST/sessions", gateAuth("192.0.2.10"), lee); err != nil {
		t.Fatal(err)
	}
	f.call(t, "POST/sessions", gateAuth("10.0.0.1"), kimWrong) // kim:A, kim
	f.call(t, "POST/sessions", gateAuth("10.0.0.1"), leeWrong) // lee:A; no room for lee
	if n := len(f.svc.lock.local.counts); n != 3 {
		t.Fatalf("%d counters; want the maximum, 3", n)
	}
	if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.2"), kimRight); err != nil {
		t.Errorf("kim, whose count the fallback holds: %v", err)
	}
	if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.2"), lee); !lockedFor(err, false) {
		t.Errorf("lee from a new address, with the fallback full: %v; want a 429 for the username", err)
	}
	if _, err := f.call(t, "POST/sessions", gateAuth("192.0.2.10"), lee); err != nil {
		t.Errorf("lee from a known address, with the fallback full: %v", err)
	}
	clock = clock.Add(time.Minute + time.Second)
	if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.2"), lee); err != nil {
		t.Errorf("lee after the window: %v", err)
	}
	f.call(t, "POST/sessions", gateAuth("10.0.0.3"), leeWrong) // sweeps the expired counters
	if n := len(f.svc.lock.local.counts); n != 2 {
		t.Errorf("%d counters after the window and one failure; want 2", n)
	}
}

// TestLoginNeedsGate: with a fleet key, a login no gate signed is a 403;
// without one (the book's trust model), it is taken.
func TestLoginNeedsGate(t *testing.T) {
	f := newSessionFixture(t)
	f.call(t, "POST/members", nil, kimRight)
	for _, route := range []string{"POST/sessions", "GET/members"} {
		for _, a := range []*service.Auth{nil, {}, {Addr: "10.0.0.1"}} {
			_, err := f.call(t, route, a, kimRight)
			if code(err) != 403 || !strings.Contains(err.Error(), "only through a gate") {
				t.Errorf("%s with auth %+v: %v; want a 403", route, a, err)
			}
			// It counts nothing either.
			_, err = f.call(t, route, a, kimWrong)
			if code(err) != 403 {
				t.Errorf("%s with auth %+v, wrong password: %v; want a 403", route, a, err)
			}
		}
		if _, err := f.call(t, route, gateAuth("10.0.0.1"), kimRight); err != nil {
			t.Errorf("%s signed by a gate: %v", route, err)
		}
	}
	b := newBookFixture(t)
	b.call(t, "POST/members", nil, kimRight)
	if _, err := b.call(t, "POST/sessions", nil, kimRight); err != nil {
		t.Errorf("POST /sessions without a fleet key, no auth object: %v", err)
	}
}

// TestKnownAddressesForgotten: a deleted member's addresses go, and so do
// addresses not used for KnownAddressTTL.
func TestKnownAddressesForgotten(t *testing.T) {
	f := newSessionFixture(t)
	db := f.svc.store.db
	count := func(member int64) int {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM login_addresses WHERE member_id = ?", member).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	kim, kimToken := f.logIn(t, "kim")
	lee, _ := f.logIn(t, "lee")
	if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.1"), map[string]any{"username": "kim", "password": "password kim"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.call(t, "POST/sessions", gateAuth("10.0.0.1"), map[string]any{"username": "kim", "password": "password kim"}); err != nil {
		t.Fatal(err)
	}
	if n := count(kim); n != 1 {
		t.Fatalf("kim has %d known addresses; want 1", n)
	}
	if _, err := db.Exec("INSERT INTO login_addresses (member_id, addr, last_login_at) VALUES (?, ?, ?)",
		lee, "10.0.0.7", time.Now().Add(-KnownAddressTTL-time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	f.svc.sessions.lastSweep.Store(0)
	if _, err := f.call(t, "DELETE/members", &service.Auth{Member: kim, Session: HashToken(kimToken)}, map[string]any{"username": "kim"}); err != nil {
		t.Fatal(err)
	}
	f.logIn(t, "lee") // sweeps
	if count(kim) != 0 || count(lee) != 0 {
		t.Errorf("known addresses left: kim %d, lee %d; want none", count(kim), count(lee))
	}
}

// TestNoCacheWithoutFleetKey: without a fleet key no session is cached,
// since no gate could verify it.
func TestNoCacheWithoutFleetKey(t *testing.T) {
	f := newBookFixture(t)
	_, token := f.logIn(t, "kim")
	if n, _ := f.cache.Exists(context.Background(), sessioncache.Key(f.cache, HashToken(token))).Result(); n != 0 {
		t.Error("a session was cached without a fleet key")
	}
}
