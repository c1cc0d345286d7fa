package members

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

type sessionFixture struct {
	svc    *Service
	cache  *cache.Cache
	routes map[string]service.Handler
}

func newSessionFixture(t *testing.T) *sessionFixture {
	t.Helper()
	c := testenv.Cache(t)
	svc := New(testenv.DB(t), c, nil)
	return &sessionFixture{svc: svc, cache: c, routes: svc.Routes()}
}

func (f *sessionFixture) call(t *testing.T, route string, auth *service.Auth, params map[string]any) (service.Result, error) {
	t.Helper()
	b, _ := json.Marshal(params)
	p, err := service.DecodeParams(b)
	if err != nil {
		t.Fatal(err)
	}
	method, uri, _ := strings.Cut(route, "/")
	return f.routes[route](context.Background(), &service.Request{Method: method, URI: "/" + uri, Params: p, Auth: auth})
}

func code(err error) int { c, _ := service.ErrorCode(err); return c }

// logIn signs up (once) and logs in, returning the member's id and token.
func (f *sessionFixture) logIn(t *testing.T, user string) (int64, string) {
	t.Helper()
	creds := map[string]any{"username": user, "password": "password " + user}
	f.call(t, "POST/members", nil, creds)
	res, err := f.call(t, "POST/sessions", nil, creds)
	if err != nil {
		t.Fatalf("POST /sessions %s: %v", user, err)
	}
	token, _ := res["token"].(string)
	if len(token) != 43 || res["userid"].(int64) < 1 {
		t.Fatalf("POST /sessions = %v; want a 43-character token and a userid", res)
	}
	if _, err := time.Parse(time.RFC3339, res["expires"].(string)); err != nil {
		t.Fatalf("expires = %v: %v", res["expires"], err)
	}
	return res["userid"].(int64), token
}

func (f *sessionFixture) cached(t *testing.T, token string) string {
	t.Helper()
	v, _ := f.cache.Get(context.Background(), SessionKey(f.cache, HashToken(token))).Result()
	return v
}

func TestSessionLifecycle(t *testing.T) {
	f := newSessionFixture(t)
	id, token := f.logIn(t, "kim")
	h := HashToken(token)
	if v := f.cached(t, token); !strings.HasPrefix(v, itoa(id)+":") {
		t.Fatalf("cached session = %q; want %d:EXPIRES", v, id)
	}
	auth := &service.Auth{Member: id, Session: h}
	res, err := f.call(t, "GET/sessions", auth, nil)
	if err != nil || res["userid"] != id {
		t.Fatalf("GET /sessions = %v, %v; want userid %d", res, err, id)
	}
	// A FLUSHALL neither logs out nor lets in: the database decides.
	testenv.FlushPrefix(t, f.cache)
	if res, err := f.call(t, "GET/sessions", &service.Auth{Session: h}, nil); err != nil || res["userid"] != id {
		t.Fatalf("GET /sessions after FLUSHALL = %v, %v; want userid %d", res, err, id)
	}
	if v := f.cached(t, token); !strings.HasPrefix(v, itoa(id)+":") {
		t.Fatalf("refilled session = %q; want %d:EXPIRES", v, id)
	}
	if _, err := f.call(t, "DELETE/sessions", auth, nil); err != nil {
		t.Fatalf("DELETE /sessions: %v", err)
	}
	if v := f.cached(t, token); v != tombstone {
		t.Fatalf("cached session after revocation = %q; want %q", v, tombstone)
	}
	if _, err := f.call(t, "GET/sessions", auth, nil); code(err) != 401 {
		t.Fatalf("GET /sessions after revocation: %v; want 401", err)
	}
	testenv.FlushPrefix(t, f.cache)
	if _, err := f.call(t, "GET/sessions", auth, nil); code(err) != 401 {
		t.Fatalf("GET /sessions after revocation and FLUSHALL: %v; want 401", err)
	}
	for _, a := range []*service.Auth{nil, {}, {Session: "not a hash"}, {Session: strings.Repeat("A", 64)}} {
		if _, err := f.call(t, "GET/sessions", a, nil); code(err) != 401 {
			t.Errorf("GET /sessions with auth %+v: %v; want 401", a, err)
		}
	}
}

// TestTombstoneBeatsRacingRefill plays a lookup that read the row just
// before the revocation deleted it and refills the cache just after the
// tombstone was set: the refill (SET NX) must not bring the session back.
func TestTombstoneBeatsRacingRefill(t *testing.T) {
	f := newSessionFixture(t)
	id, token := f.logIn(t, "kim")
	h := HashToken(token)
	var exp int64
	db := f.svc.store.db
	if err := db.QueryRow("SELECT expires_at FROM sessions WHERE hash = ?", h).Scan(&exp); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.sessions.revoke(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	// The racing lookup still sees the row it read before the delete.
	if _, err := db.Exec(sqlSessionInsert, h, id, exp, exp); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.svc.sessions.lookup(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if v := f.cached(t, token); v != tombstone {
		t.Fatalf("cache after a racing refill = %q; want the tombstone %q", v, tombstone)
	}
}

func TestSessionExpires(t *testing.T) {
	f := newSessionFixture(t)
	f.svc.SessionTTL = 50 * time.Millisecond
	id, token := f.logIn(t, "kim")
	time.Sleep(60 * time.Millisecond)
	auth := &service.Auth{Member: id, Session: HashToken(token)}
	if _, err := f.call(t, "GET/sessions", auth, nil); code(err) != 401 {
		t.Fatalf("GET /sessions after expiry: %v; want 401", err)
	}
	// The sweep deletes expired rows (on a login at most once a minute).
	f.svc.sessions.lastSweep.Store(0)
	f.logIn(t, "lee")
	var n int
	f.svc.store.db.QueryRow("SELECT COUNT(*) FROM sessions WHERE member_id = ?", id).Scan(&n)
	if n != 0 {
		t.Fatalf("%d expired sessions left after the sweep; want 0", n)
	}
}

func TestBookLoginAnswersToken(t *testing.T) {
	f := newSessionFixture(t)
	creds := map[string]any{"username": "kim", "password": "correct horse"}
	f.call(t, "POST/members", nil, creds)
	res, err := f.call(t, "GET/members", nil, creds)
	if err != nil || res["userid"] == nil || len(res["token"].(string)) != 43 {
		t.Fatalf("GET /members = %v, %v; want userid and token", res, err)
	}
}

func TestLockout(t *testing.T) {
	f := newSessionFixture(t)
	// The window must outlast six password checks, which take up to half a
	// second each under the race detector on a busy machine (CI).
	f.svc.LockoutWindow = 4 * time.Second
	right := map[string]any{"username": "kim", "password": "correct horse"}
	wrong := map[string]any{"username": "kim", "password": "wrong horse"}
	f.call(t, "POST/members", nil, right)
	// A success resets the count.
	for range 4 {
		f.call(t, "POST/sessions", nil, wrong)
	}
	if _, err := f.call(t, "POST/sessions", nil, right); err != nil {
		t.Fatalf("login after 4 failures: %v", err)
	}
	for i := range 5 {
		if _, err := f.call(t, "GET/members", nil, wrong); code(err) != 401 {
			t.Fatalf("wrong password #%d: %v; want 401", i+1, err)
		}
	}
	_, err := f.call(t, "POST/sessions", nil, right)
	if code(err) != 429 {
		t.Fatalf("right password after 5 failures: %v; want 429", err)
	}
	var se *service.Error
	if !asError(err, &se) || se.Fields["retryafter"] == nil {
		t.Fatalf("429 = %#v; want a retryafter field", err)
	}
	// Other usernames are not affected.
	f.call(t, "POST/members", nil, map[string]any{"username": "lee", "password": "correct horse"})
	if _, err := f.call(t, "POST/sessions", nil, map[string]any{"username": "lee", "password": "correct horse"}); err != nil {
		t.Fatalf("another member's login: %v", err)
	}
	time.Sleep(f.svc.LockoutWindow + 100*time.Millisecond)
	if _, err := f.call(t, "POST/sessions", nil, right); err != nil {
		t.Fatalf("login after the window: %v", err)
	}
}

// With the client's address from the gate, the lockout is per address: a
// guesser locks out only itself, and adds at most LockoutThreshold to the
// username's count, which locks every address out only when many addresses
// have failed.
func TestLockoutPerAddress(t *testing.T) {
	f := newSessionFixture(t)
	f.svc.LockoutThreshold, f.svc.LockoutUsernameThreshold = 5, 8
	right := map[string]any{"username": "kim", "password": "correct horse"}
	wrong := map[string]any{"username": "kim", "password": "wrong horse"}
	f.call(t, "POST/members", nil, right)
	from := func(addr string) *service.Auth { return &service.Auth{Addr: addr} }

	for i := range 5 {
		if _, err := f.call(t, "POST/sessions", from("10.0.0.1"), wrong); code(err) != 401 {
			t.Fatalf("wrong password #%d from A: %v; want 401", i+1, err)
		}
	}
	// A is locked out, and keeps trying: that adds nothing to kim's count.
	for range 10 {
		if _, err := f.call(t, "POST/sessions", from("10.0.0.1"), right); code(err) != 429 || !strings.Contains(err.Error(), "from your address") {
			t.Fatalf("right password from A after 5 failures: %v; want a 429 for the address", err)
		}
	}
	// Another address is not locked out by A.
	if _, err := f.call(t, "POST/sessions", from("10.0.0.2"), right); err != nil {
		t.Fatalf("right password from B while A is locked out: %v", err)
	}
	// B's success did not clear A's count.
	if _, err := f.call(t, "POST/sessions", from("10.0.0.1"), right); code(err) != 429 {
		t.Fatalf("A after B logged in: %v; want still 429", err)
	}
	// kim's count is 5 (A's failures; B's success is not counted), and 3
	// failures from C make 8 …
	for range 3 {
		if _, err := f.call(t, "POST/sessions", from("10.0.0.3"), wrong); code(err) != 401 {
			t.Fatalf("wrong password from C: %v; want 401", err)
		}
	}
	// … and the next attempt, from anywhere, is over the username's
	// threshold.
	_, err := f.call(t, "POST/sessions", from("10.0.0.4"), right)
	if code(err) != 429 || strings.Contains(err.Error(), "from your address") {
		t.Fatalf("right password from D after 8 attempts on kim: %v; want a 429 for the username", err)
	}
}

func TestRemoveNeedsOwnToken(t *testing.T) {
	f := newSessionFixture(t)
	kim, kimToken := f.logIn(t, "kim")
	lee, leeToken := f.logIn(t, "lee")
	del := func(auth *service.Auth, user string) error {
		_, err := f.call(t, "DELETE/members", auth, map[string]any{"username": user})
		return err
	}
	if err := del(&service.Auth{}, "kim"); code(err) != 401 {
		t.Fatalf("DELETE kim without token: %v; want 401", err)
	}
	leeAuth := &service.Auth{Member: lee, Session: HashToken(leeToken)}
	if err := del(leeAuth, "kim"); code(err) != 403 {
		t.Fatalf("DELETE kim as lee: %v; want 403", err)
	}
	if err := del(leeAuth, "nobody"); code(err) != 403 {
		t.Fatalf("DELETE nobody as lee: %v; want 403", err)
	}
	if err := del(&service.Auth{Member: kim, Session: HashToken(kimToken)}, "kim"); err != nil {
		t.Fatalf("DELETE kim as kim: %v", err)
	}
	if v := f.cached(t, kimToken); v != tombstone {
		t.Fatalf("kim's cached session after deletion = %q; want the tombstone", v)
	}
	if _, err := f.call(t, "GET/sessions", &service.Auth{Session: HashToken(kimToken)}, nil); code(err) != 401 {
		t.Fatalf("kim's session after deletion: %v; want 401", err)
	}
	if err := del(&service.Auth{Admin: true}, "lee"); err != nil {
		t.Fatalf("DELETE lee as admin: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func asError(err error, target **service.Error) bool { return errors.As(err, target) }
