package members

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

type sessionFixture struct {
	svc    *Service
	cache  *cache.Cache
	routes map[string]service.Handler
}

// testFleetKey is the fleet key of the sessions fixture.
var testFleetKey = []byte("members test fleet key 0123")

func newSessionFixture(t *testing.T) *sessionFixture {
	t.Helper()
	c := testenv.Cache(t)
	svc := New(testenv.DB(t), c, nil)
	svc.FleetKey = testFleetKey
	return &sessionFixture{svc: svc, cache: c, routes: svc.Routes()}
}

// gateAuth is the auth object of a login a gate signed, from addr. (The
// service runtime verifies the signature before a handler runs; the
// handler only sees that there is one.)
func gateAuth(addr string) *service.Auth { return &service.Auth{Addr: addr, Exp: 1, Sig: "verified"} }

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
	res, err := f.call(t, "POST/sessions", gateAuth(""), creds)
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

// cached returns what the gate would make of token's cached session.
func (f *sessionFixture) cached(t *testing.T, token string) sessioncache.Session {
	t.Helper()
	h := HashToken(token)
	v, _ := f.cache.Get(context.Background(), sessioncache.Key(f.cache, h)).Result()
	return sessioncache.NewSigner(testFleetKey).Open(h, v, time.Now())
}

var tombstone = sessioncache.Session{State: sessioncache.Ended}

func TestSessionLifecycle(t *testing.T) {
	f := newSessionFixture(t)
	id, token := f.logIn(t, "kim")
	h := HashToken(token)
	if v := f.cached(t, token); v.State != sessioncache.Live || v.Member != id {
		t.Fatalf("cached session = %+v; want live, member %d", v, id)
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
	if v := f.cached(t, token); v.State != sessioncache.Live || v.Member != id {
		t.Fatalf("refilled session = %+v; want live, member %d", v, id)
	}
	if _, err := f.call(t, "DELETE/sessions", auth, nil); err != nil {
		t.Fatalf("DELETE /sessions: %v", err)
	}
	if v := f.cached(t, token); v != tombstone {
		t.Fatalf("cached session after revocation = %+v; want the tombstone", v)
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
		t.Fatalf("cache after a racing refill = %+v; want the tombstone", v)
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

// newBookFixture is the sessions fixture without a fleet key: the book's
// trust model, where logins come without an auth object.
func newBookFixture(t *testing.T) *sessionFixture {
	f := newSessionFixture(t)
	f.svc.FleetKey = nil
	return f
}

func TestBookLoginAnswersToken(t *testing.T) {
	f := newBookFixture(t)
	creds := map[string]any{"username": "kim", "password": "correct horse"}
	f.call(t, "POST/members", nil, creds)
	res, err := f.call(t, "GET/members", nil, creds)
	if err != nil || res["userid"] == nil || len(res["token"].(string)) != 43 {
		t.Fatalf("GET /members = %v, %v; want userid and token", res, err)
	}
}

// TestLockout: without a client address (behind a book gate) there is one
// count per username.
func TestLockout(t *testing.T) {
	f := newBookFixture(t)
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
		t.Fatalf("kim's cached session after deletion = %+v; want the tombstone", v)
	}
	if _, err := f.call(t, "GET/sessions", &service.Auth{Session: HashToken(kimToken)}, nil); code(err) != 401 {
		t.Fatalf("kim's session after deletion: %v; want 401", err)
	}
	if err := del(&service.Auth{Admin: true}, "lee"); err != nil {
		t.Fatalf("DELETE lee as admin: %v", err)
	}
}

func asError(err error, target **service.Error) bool { return errors.As(err, target) }

// Every revoked session is announced on the sessions topic (the gates'
// near caches drop it), after its tombstone is in Redis: a logout, and
// each session of a deleted member.
func TestRevocationsAnnounced(t *testing.T) {
	f := newSessionFixture(t)
	ctx := context.Background()
	ps := f.cache.Subscribe(ctx, f.cache.Key(sessioncache.Topic+":invalidations"))
	defer ps.Close()
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil { // the subscription
		t.Fatal(err)
	}
	heard := func(what string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return m.Payload
	}
	kim, token := f.logIn(t, "kim")
	if _, err := f.call(t, "DELETE/sessions", &service.Auth{Member: kim, Session: HashToken(token)}, nil); err != nil {
		t.Fatal(err)
	}
	if got := heard("the logout"); got != HashToken(token) {
		t.Fatalf("after a logout heard %q; want the token's hash %s", got, HashToken(token))
	}
	_, t1 := f.logIn(t, "kim")
	_, t2 := f.logIn(t, "kim")
	if _, err := f.call(t, "DELETE/members", &service.Auth{Member: kim, Session: HashToken(t1)}, map[string]any{"username": "kim"}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{heard("the deletion"): true, heard("the deletion"): true}
	if !got[HashToken(t1)] || !got[HashToken(t2)] {
		t.Fatalf("after deleting a member with two sessions heard %v; want both hashes", got)
	}
	if v := f.cached(t, t2); v != tombstone {
		t.Fatalf("announced, but the cached session is %+v; want the tombstone", v)
	}
}
