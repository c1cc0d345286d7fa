package security_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

// logIn signs up username (when new) and logs in with POST /sessions,
// returning the member's id and token.
func logIn(t *testing.T, f *fleet, g, username string) (int64, string) {
	t.Helper()
	creds := map[string]any{"username": username, "password": "password of " + username}
	f.do(g, "POST", "/members", "", "", creds)
	a := want(t, "POST /sessions "+username, f.do(g, "POST", "/sessions", "", "", creds), 200)
	token, _ := a.Body["token"].(string)
	id, _ := a.Body["userid"].(float64)
	if len(token) < 40 || id < 1 {
		t.Fatalf("POST /sessions = %v; want a token and a userid", a)
	}
	return int64(id), token
}

func TestAuthorization(t *testing.T) {
	f := newFleet(t, "")
	for _, s := range []string{"goods", "members", "purchases", "reactions", "ratings", "stores"} {
		f.service(s)
	}
	g1 := f.gate("--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0")
	g2 := f.gate("--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0")
	f.waitRoutes("GET /goods", "GET /sessions", "GET /purchases", "GET /reactions", "GET /ratings", "GET /stores")

	// Goods and stores are managed with the admin key only.
	good := map[string]any{"name": "tea", "category": "drinks", "price": 300, "description": "green"}
	want(t, "POST /goods without token", f.do(g1, "POST", "/goods", "", "", good), 401)
	aID, aToken := logIn(t, f, g1, "alice")
	bID, bToken := logIn(t, f, g1, "bob")
	want(t, "POST /goods as a member", f.do(g1, "POST", "/goods", bToken, "", good), 403)
	a := want(t, "POST /goods as admin", f.do(g1, "POST", "/goods", adminKey, "", good), 200)
	goodsID := int64(a.Body["id"].(float64))
	want(t, "DELETE /goods as a member", f.do(g1, "DELETE", "/goods?id="+strconv.FormatInt(goodsID, 10), aToken, "", nil), 403)
	shop := map[string]any{"name": "corner", "longitude": 2.35, "latitude": 48.85}
	want(t, "POST /stores without token", f.do(g2, "POST", "/stores", "", "", shop), 401)
	want(t, "POST /stores as a member", f.do(g2, "POST", "/stores", aToken, "", shop), 403)
	want(t, "POST /stores as admin", f.do(g2, "POST", "/stores", adminKey, "", shop), 200)
	want(t, "GET /goods without token", f.do(g1, "GET", "/goods?id="+strconv.FormatInt(goodsID, 10), "", "", nil), 200)

	gid := strconv.FormatInt(goodsID, 10)
	asA := map[string]any{"userid": aID, "goodsid": goodsID}
	// No token: 401.
	want(t, "POST /purchases without token", f.do(g1, "POST", "/purchases", "", "", asA), 401)
	want(t, "GET /purchases without token", f.do(g1, "GET", "/purchases?userid="+strconv.FormatInt(aID, 10), "", "", nil), 401)
	want(t, "POST /reactions without token", f.do(g1, "POST", "/reactions", "", "", map[string]any{"userid": aID, "goodsid": goodsID, "reaction": "like"}), 401)
	want(t, "POST /ratings without token", f.do(g1, "POST", "/ratings", "", "", map[string]any{"userid": aID, "goodsid": goodsID, "stars": 5}), 401)
	// B acting as A: 403.
	want(t, "B buying as A", f.do(g1, "POST", "/purchases", bToken, "", asA), 403)
	want(t, "B reading A's purchases", f.do(g2, "GET", "/purchases?userid="+strconv.FormatInt(aID, 10), bToken, "", nil), 403)
	want(t, "B liking as A", f.do(g1, "POST", "/reactions", bToken, "", map[string]any{"userid": aID, "goodsid": goodsID, "reaction": "like"}), 403)
	want(t, "B withdrawing A's reaction", f.do(g1, "DELETE", "/reactions?goodsid="+gid+"&userid="+strconv.FormatInt(aID, 10), bToken, "", nil), 403)
	want(t, "B reading A's reaction", f.do(g1, "GET", "/reactions?goodsid="+gid+"&userid="+strconv.FormatInt(aID, 10), bToken, "", nil), 403)
	want(t, "B rating as A", f.do(g2, "POST", "/ratings", bToken, "", map[string]any{"userid": aID, "goodsid": goodsID, "stars": 1}), 403)
	want(t, "B deleting A", f.do(g1, "DELETE", "/members?username=alice", bToken, "", nil), 403)
	// Each acting as itself, with or without userid; the token works on
	// the second gate too.
	want(t, "A buying", f.do(g2, "POST", "/purchases", aToken, "", map[string]any{"goodsid": goodsID}), 200)
	want(t, "A buying naming itself", f.do(g1, "POST", "/purchases", aToken, "", asA), 200)
	a = want(t, "A reading its purchases", f.do(g2, "GET", "/purchases", aToken, "", nil), 200)
	if n := len(a.Body["results"].([]any)); n != 2 {
		t.Fatalf("A's purchases: %v; want 2", a)
	}
	want(t, "A liking", f.do(g1, "POST", "/reactions", aToken, "", map[string]any{"goodsid": goodsID, "reaction": "like"}), 200)
	a = want(t, "A's reaction", f.do(g2, "GET", "/reactions?goodsid="+gid, aToken, "", nil), 200)
	if a.Body["mine"] != "like" || a.Body["likes"] != float64(1) {
		t.Fatalf("GET /reactions as A: %v; want likes 1, mine like", a)
	}
	a = want(t, "anonymous counts", f.do(g2, "GET", "/reactions?goodsid="+gid, "", "", nil), 200)
	if _, ok := a.Body["mine"]; ok {
		t.Fatalf("anonymous GET /reactions: %v; want no mine", a)
	}
	want(t, "B rating", f.do(g2, "POST", "/ratings", bToken, "", map[string]any{"goodsid": goodsID, "stars": 4}), 200)
	a = want(t, "GET /sessions on gate 2", f.do(g2, "GET", "/sessions", bToken, "", nil), 200)
	if a.Body["userid"] != float64(bID) {
		t.Fatalf("GET /sessions: %v; want userid %d", a, bID)
	}
	// The book's login answers a token too.
	a = want(t, "GET /members login", f.do(g1, "GET", "/members?username=bob&password=password+of+bob", "", "", nil), 200)
	if tok, _ := a.Body["token"].(string); len(tok) < 40 {
		t.Fatalf("GET /members: %v; want a token", a)
	}
	// Bad tokens.
	want(t, "made-up token", f.do(g1, "GET", "/goods", "made-up-token", "", nil), 401)

	// Revocation holds on every gate, also after a FLUSHALL.
	want(t, "DELETE /sessions", f.do(g1, "DELETE", "/sessions", aToken, "", nil), 200)
	want(t, "revoked token on gate 1", f.do(g1, "GET", "/purchases", aToken, "", nil), 401)
	want(t, "revoked token on gate 2", f.do(g2, "GET", "/sessions", aToken, "", nil), 401)
	c, err := cache.Open(f.redis, f.prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := testenv.DeleteKeys(context.Background(), c.UniversalClient, f.prefix); err != nil {
		t.Fatal(err)
	}
	want(t, "revoked token after FLUSHALL", f.do(g2, "GET", "/purchases", aToken, "", nil), 401)
	want(t, "live token after FLUSHALL", f.do(g1, "GET", "/purchases", bToken, "", nil), 200)

	// B deletes itself: its tokens stop working.
	want(t, "B deleting B", f.do(g2, "DELETE", "/members?username=bob", bToken, "", nil), 200)
	want(t, "deleted member's token", f.do(g1, "GET", "/sessions", bToken, "", nil), 401)

	// The database holds no plain or md5 password, and no token.
	db, err := store.Open(context.Background(), f.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var pw string
	if err := db.QueryRow("SELECT password FROM members WHERE username = 'alice'").Scan(&pw); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum([]byte("password of alice"))
	if strings.Contains(pw, "password of alice") || strings.Contains(strings.ToLower(pw), hex.EncodeToString(sum[:])) || !strings.HasPrefix(pw, "$argon2id$") {
		t.Fatalf("stored password %q; want an argon2id hash", pw)
	}
	var n int
	db.QueryRow("SELECT COUNT(*) FROM sessions WHERE hash = ?", aToken).Scan(&n)
	if n != 0 {
		t.Fatal("a token is stored in clear")
	}
}

func TestSessionExpiry(t *testing.T) {
	f := newFleet(t, "")
	f.service("members", "--session-ttl", "2s")
	g := f.gate()
	f.waitRoutes("GET /sessions")
	_, token := logIn(t, f, g, "carol")
	want(t, "fresh token", f.do(g, "GET", "/sessions", token, "", nil), 200)
	time.Sleep(2500 * time.Millisecond)
	want(t, "expired token", f.do(g, "GET", "/sessions", token, "", nil), 401)
}

func TestLockout(t *testing.T) {
	// The window is long enough for six argon2id checks under -race on a
	// busy machine (3 s was not), short enough to wait out.
	const window = 8 * time.Second
	f := newFleet(t, "")
	f.service("members", "--lockout-window", window.String())
	g := f.gate("--rate-limit-strict", "0")
	f.waitRoutes("GET /sessions")
	right := map[string]any{"username": "dave", "password": "the right password"}
	wrong := map[string]any{"username": "dave", "password": "a wrong password"}
	want(t, "sign-up", f.do(g, "POST", "/members", "", "", right), 200)
	start := time.Now()
	for i := range 5 {
		want(t, fmt.Sprintf("wrong password #%d", i+1), f.do(g, "POST", "/sessions", "", "", wrong), 401)
	}
	a := want(t, "right password after 5 failures", f.do(g, "POST", "/sessions", "", "", right), 429)
	if ra, _ := strconv.Atoi(a.Header.Get("Retry-After")); ra < 1 || ra > int(window/time.Second) {
		t.Fatalf("lockout Retry-After %q; want 1 to %d", a.Header.Get("Retry-After"), int(window/time.Second))
	}
	want(t, "book login while locked", f.do(g, "GET", "/members?username=dave&password=the+right+password", "", "", nil), 429)
	// The guesser locked out only its own address: dave, elsewhere, logs in.
	want(t, "right password from another address", f.do(g, "POST", "/sessions", "", "198.51.100.7", right), 200)
	want(t, "the guesser's address, after that", f.do(g, "POST", "/sessions", "", "", right), 429)
	time.Sleep(time.Until(start.Add(window + 200*time.Millisecond)))
	want(t, "right password after the window", f.do(g, "POST", "/sessions", "", "", right), 200)
}

// countThrough sends n GET /goods?id= requests as client, alternating over
// gates, and returns how many got 200; every other answer must be a 429
// with Retry-After.
func countThrough(t *testing.T, f *fleet, gates []string, client, id string, n int) (ok int, perGate map[string]int) {
	t.Helper()
	perGate = map[string]int{}
	for i := range n {
		g := gates[i%len(gates)]
		a := f.do(g, "GET", "/goods?id="+id, "", client, nil)
		switch a.Status {
		case 200:
			ok++
			perGate[g]++
		case 429:
			if ra, err := strconv.Atoi(a.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("429 with Retry-After %q", a.Header.Get("Retry-After"))
			}
			if a.Header.Get("RateLimit-Limit") == "" || a.Header.Get("RateLimit-Remaining") != "0" || a.Header.Get("RateLimit-Reset") == "" {
				t.Fatalf("429 without RateLimit-* headers: %v", a.Header)
			}
			if a.Body["errorcode"] != float64(429) {
				t.Fatalf("429 body %v", a)
			}
		default:
			t.Fatalf("request %d on %s: %v; want 200 or 429", i+1, g, a)
		}
	}
	return ok, perGate
}

func TestRateLimitAcrossGates(t *testing.T) {
	f := newFleet(t, "")
	f.service("goods")
	const limit = 10
	g1 := f.gate("--rate-limit", strconv.Itoa(limit)+"/m")
	g2 := f.gate("--rate-limit", strconv.Itoa(limit)+"/m")
	f.waitRoutes("GET /goods")
	a := want(t, "POST /goods", f.do(g1, "POST", "/goods", adminKey, "192.0.2.200", map[string]any{"name": "tea", "price": 3}), 200)
	id := strconv.Itoa(int(a.Body["id"].(float64)))
	// 10/m is one request every 6 s, so the test's few seconds add at most
	// one to the burst.
	ok, per := countThrough(t, f, []string{g1, g2}, "198.51.100.1", id, 3*limit)
	if ok < limit || ok > limit+1 {
		t.Fatalf("%d of %d requests through two gates (%v); want %d (±1)", ok, 3*limit, per, limit)
	}
	if per[g1] == 0 || per[g2] == 0 {
		t.Fatalf("per gate %v; want both gates serving", per)
	}
	// Another client has its own budget.
	if ok, _ := countThrough(t, f, []string{g1, g2}, "198.51.100.2", id, 2); ok != 2 {
		t.Fatalf("another client: %d of 2 through; want 2", ok)
	}
}

// privateRedis starts a Redis only this test uses, so that it can be
// stopped: redis-server when installed, else an embedded one.
func privateRedis(t *testing.T) (url string, stop func()) {
	t.Helper()
	r := proctest.StartRedis(t, 0, true)
	return r.URL, func() { r.Kill(t) }
}

func TestRateLimitWithRedisDown(t *testing.T) {
	url, stopRedis := privateRedis(t)
	f := newFleet(t, url)
	f.service("goods")
	f.service("members")
	const limit = 5
	g1 := f.gate("--rate-limit", strconv.Itoa(limit)+"/m")
	g2 := f.gate("--rate-limit", strconv.Itoa(limit)+"/m")
	f.waitRoutes("GET /goods", "GET /sessions")
	a := want(t, "POST /goods", f.do(g1, "POST", "/goods", adminKey, "192.0.2.200", map[string]any{"name": "tea", "price": 3}), 200)
	id := strconv.Itoa(int(a.Body["id"].(float64)))
	_, token := logIn(t, f, g1, "erin")

	stopRedis()
	// Each gate limits on its own, with the same limit: never unlimited,
	// never everything refused; the goods still come from the database.
	ok, per := countThrough(t, f, []string{g1, g2}, "198.51.100.3", id, 4*limit)
	if per[g1] < limit || per[g1] > limit+1 || per[g2] < limit || per[g2] > limit+1 {
		t.Fatalf("Redis down: %d through, per gate %v; want %d (±1) on each gate", ok, per, limit)
	}
	// Tokens are checked with the members service (the database).
	want(t, "token with Redis down", f.do(g2, "GET", "/sessions", token, "192.0.2.201", nil), 200)
	want(t, "bad token with Redis down", f.do(g2, "GET", "/sessions", "made-up", "192.0.2.202", nil), 401)
}
