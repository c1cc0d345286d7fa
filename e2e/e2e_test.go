package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/testenv"
)

// bookFleet starts the fleet of the end-to-end test as separate
// processes: distributor, gate, two goods instances, members and purchases,
// and waits until the gate serves every route and is connected to both goods
// instances. It returns the gate, and the goods processes and their nodes
// (goodsNodes[i] is goods[i]).
func bookFleet(t *testing.T) (f *fleet, gate *proc, goods []*proc, goodsNodes []node) {
	f = newFleet(t, "")
	f.startDistributor()
	gate = f.startGate()
	goods = []*proc{f.startService("goods"), f.startService("goods")}
	f.startService("members")
	f.startService("purchases")
	nodes := f.waitNodes(map[string]int{"gate": 1, "goods": 2, "members": 1, "purchases": 1})
	goodsNodes = nodesNamed(nodes, "goods")
	if f.listenAddr(goods[0]) != goodsNodes[0].addr() {
		goodsNodes[0], goodsNodes[1] = goodsNodes[1], goodsNodes[0]
	}
	for i, p := range goods {
		if a := f.listenAddr(p); a != goodsNodes[i].addr() {
			t.Fatalf("%s listens on %s, but the distributor lists goods at %s and %s", p.Name, a, goodsNodes[0].addr(), goodsNodes[1].addr())
		}
	}
	f.waitGateConnected(gate, goodsNodes[0].addr(), goodsNodes[1].addr())
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	f.pollStatus("/purchases?userid=1", http.StatusOK, startTimeout)
	f.pollStatus("/members?username=nobody&password=nobody-at-all", http.StatusUnauthorized, startTimeout)
	return f, gate, goods, goodsNodes
}

// TestBookFlow walks the book's API flow through the gate of a fleet of
// separate processes, checking every answer; its subtests then show, on the
// same fleet, that a ¶ in a parameter round-trips, that bad input is refused
// without harm, that a purchase survives a Redis FLUSHALL, and that killing
// a goods instance under load loses no GET.
func TestBookFlow(t *testing.T) {
	t.Parallel()
	f, gate, goods, goodsNodes := bookFleet(t)
	rc := f.redisClient()
	ctx := context.Background()

	// Register a member; a duplicate is a clean 409; a short password a 400.
	username := testenv.RandomName("alice")
	const password = "correct horse"
	userid := f.addMember(t, username, password)
	a := f.sendJSON(t, "POST", "/members", map[string]any{"username": username, "password": "another password"})
	expect(t, "duplicate POST /members", a, http.StatusConflict)
	for _, leak := range []string{"SQL", "sql", "INSERT", "UNIQUE", "Duplicate entry", "constraint"} {
		if strings.Contains(*a.ErrorMessage, leak) {
			t.Errorf("duplicate member: errormessage leaks database details (%q): %s", leak, a)
		}
	}
	a = f.sendJSON(t, "POST", "/members", map[string]any{"username": testenv.RandomName("bob"), "password": "short"})
	expect(t, "POST /members with a 5-character password", a, http.StatusBadRequest)

	// Log in (GET /members): right password → the same userid; wrong → 401.
	login := func(user, pass string) *answer {
		return f.get(t, "/members?"+url.Values{"username": {user}, "password": {pass}}.Encode())
	}
	a = login(username, password)
	expect(t, "GET /members (log in)", a, http.StatusOK)
	if a.UserID == nil || *a.UserID != userid {
		t.Errorf("log in: userid %v, want %d: %s", deref(a.UserID), userid, a)
	}
	expect(t, "GET /members with a wrong password", login(username, "wrong password"), http.StatusUnauthorized)
	expect(t, "GET /members of an unknown member", login(testenv.RandomName("nobody"), password), http.StatusUnauthorized)

	// Add goods: one as JSON, one as a form body; bad ones are 400.
	g1 := good{Name: "goods1", Category: "books", Price: 1000, Description: "the first good"}
	g1.ID = f.addGood(t, g1)
	a = f.sendForm(t, "POST", "/goods", url.Values{"name": {"goods2"}, "category": {"music"}, "price": {"2500"}, "description": {"by form"}})
	expect(t, "POST /goods (form body)", a, http.StatusOK)
	if a.ID == nil || *a.ID <= 0 || *a.ID == g1.ID {
		t.Fatalf("POST /goods (form body): want a new positive id, got %s", a)
	}
	g2 := good{ID: *a.ID, Name: "goods2", Category: "music", Price: 2500, Description: "by form"}
	for _, bad := range []map[string]any{
		{"name": "", "category": "c", "price": 1},
		{"name": "neg", "category": "c", "price": -1},
		{"name": "frac", "category": "c", "price": 1.5},
		{"name": strings.Repeat("n", 10000), "category": "c", "price": 1},
	} {
		a := f.sendJSON(t, "POST", "/goods", bad)
		expect(t, fmt.Sprintf("POST /goods %.60v", bad), a, http.StatusBadRequest)
	}
	// The goods service caches what it creates under <prefix>goods:{ID}.
	for _, id := range []int64{g1.ID, g2.ID} {
		if n, err := rc.Exists(ctx, f.goodsKey(id)).Result(); err != nil || n != 1 {
			t.Errorf("Redis key %s after POST /goods: exists=%d, err=%v; want it cached", f.goodsKey(id), n, err)
		}
	}

	// List, and get one.
	a = f.get(t, "/goods")
	expect(t, "GET /goods", a, http.StatusOK)
	all := results[good](t, "GET /goods", a)
	for _, want := range []good{g1, g2} {
		if !slices.Contains(all, want) {
			t.Errorf("GET /goods: %+v missing from %s", want, a)
		}
	}
	if got := f.getGood(t, g1.ID); got != g1 {
		t.Errorf("GET /goods?id=%d: got %+v, want %+v", g1.ID, got, g1)
	}
	expect(t, "GET /goods of an unknown id", f.get(t, "/goods?id=987654321"), http.StatusNotFound)
	expect(t, "GET /goods?id=abc", f.get(t, "/goods?id=abc"), http.StatusBadRequest)

	// Buy, and list the purchases.
	before := time.Now()
	a = f.buy(t, userid, g1.ID)
	expect(t, "POST /purchases", a, http.StatusOK)
	if a.ID == nil || *a.ID <= 0 {
		t.Fatalf("POST /purchases: no positive id: %s", a)
	}
	pid := *a.ID
	ps := f.purchases(t, userid)
	if len(ps) != 1 || ps[0].ID != pid || ps[0].GoodsID != g1.ID {
		t.Fatalf("GET /purchases?userid=%d: want [{id %d goodsid %d}], got %+v", userid, pid, g1.ID, ps)
	}
	checkDate(t, ps[0].Date, before)
	if got := f.purchases(t, userid+1000); len(got) != 0 {
		t.Errorf("GET /purchases of another member: want none, got %+v", got)
	}
	expect(t, "POST /purchases without goodsid", f.sendJSON(t, "POST", "/purchases", map[string]any{"userid": userid}), http.StatusBadRequest)

	// Delete the good: it is gone from the API, its cache entry is a
	// tombstone (so a late refill cannot bring it back), and buying it now
	// is a 404.
	expect(t, "DELETE /goods", f.send(t, "DELETE", "/goods?id="+strconv.FormatInt(g1.ID, 10), "", nil), http.StatusOK)
	expect(t, "GET /goods?id of the deleted good", f.get(t, "/goods?id="+strconv.FormatInt(g1.ID, 10)), http.StatusNotFound)
	if v, err := rc.Get(ctx, f.goodsKey(g1.ID)).Result(); err != nil || v != "deleted" {
		t.Errorf("Redis key %s after DELETE /goods = %q, %v; want the tombstone \"deleted\"", f.goodsKey(g1.ID), v, err)
	}
	expect(t, "POST /purchases of the deleted good", f.buy(t, userid, g1.ID), http.StatusNotFound)
	expect(t, "POST /purchases of a good that never existed", f.buy(t, userid, 987654321), http.StatusNotFound)
	if ps := f.purchases(t, userid); len(ps) != 1 {
		t.Errorf("GET /purchases after the refused purchases: want still 1, got %+v", ps)
	}
	a = f.get(t, "/goods")
	expect(t, "GET /goods after the delete", a, http.StatusOK)
	for _, g := range results[good](t, "GET /goods", a) {
		if g.ID == g1.ID {
			t.Errorf("GET /goods still lists the deleted good: %s", a)
		}
	}

	// Delete the member: logging in fails from then on.
	expect(t, "DELETE /members", f.send(t, "DELETE", "/members?username="+url.QueryEscape(username), "", nil), http.StatusOK)
	expect(t, "log in after DELETE /members", login(username, password), http.StatusUnauthorized)

	t.Run("Pilcrow", func(t *testing.T) { testPilcrow(t, f) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, f) })
	t.Run("RedisFlushAll", func(t *testing.T) { testRedisFlushAll(t, f) })
	t.Run("GoodsInstanceKilled", func(t *testing.T) { testGoodsInstanceKilled(t, f, gate, goods, goodsNodes) })
}

// checkDate checks that a purchase date is a timestamp of about now.
func checkDate(t *testing.T, date string, before time.Time) {
	t.Helper()
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05Z07:00"} {
		if d, err := time.Parse(layout, date); err == nil {
			// Generous bounds: the date's time zone is not specified.
			if d.Before(before.Add(-14*time.Hour)) || d.After(time.Now().Add(14*time.Hour)) {
				t.Errorf("purchase date %q is not about now (%v)", date, before)
			}
			return
		}
	}
	t.Errorf("purchase date %q is not a timestamp", date)
}

// testPilcrow: a parameter containing ¶ (the packet separator) round-trips
// through gate, packet and database, sent as JSON, as a form and in the
// query string, and read back from the cache and from the database.
func testPilcrow(t *testing.T, f *fleet) {
	ctx := context.Background()
	rc := f.redisClient()
	want := map[int64]good{}

	g := good{Name: "a¶b", Category: "¶", Price: 7, Description: "¶¶ ends with ¶"}
	g.ID = f.addGood(t, g)
	want[g.ID] = g

	a := f.sendForm(t, "POST", "/goods", url.Values{"name": {"form¶name"}, "category": {"c¶"}, "price": {"8"}, "description": {"¶"}})
	expect(t, "POST /goods (form with ¶)", a, http.StatusOK)
	if a.ID == nil {
		t.Fatalf("POST /goods (form with ¶): no id: %s", a)
	}
	want[*a.ID] = good{ID: *a.ID, Name: "form¶name", Category: "c¶", Price: 8, Description: "¶"}

	q := url.Values{"name": {"query¶name"}, "category": {"q"}, "price": {"9"}, "description": {"x¶y"}}
	a = f.send(t, "POST", "/goods?"+q.Encode(), "", nil)
	expect(t, "POST /goods (query string with ¶)", a, http.StatusOK)
	if a.ID == nil {
		t.Fatalf("POST /goods (query string with ¶): no id: %s", a)
	}
	want[*a.ID] = good{ID: *a.ID, Name: "query¶name", Category: "q", Price: 9, Description: "x¶y"}

	for id, w := range want {
		if got := f.getGood(t, id); got != w {
			t.Errorf("GET /goods?id=%d (cache): got %+v, want %+v", id, got, w)
		}
		// Drop the cache entry: the next read comes from the database.
		if err := rc.Del(ctx, f.goodsKey(id)).Err(); err != nil {
			t.Fatal(err)
		}
		if got := f.getGood(t, id); got != w {
			t.Errorf("GET /goods?id=%d (database): got %+v, want %+v", id, got, w)
		}
	}
	a = f.get(t, "/goods")
	expect(t, "GET /goods", a, http.StatusOK)
	all := results[good](t, "GET /goods", a)
	for _, w := range want {
		if !slices.Contains(all, w) {
			t.Errorf("GET /goods (database): %+v missing", w)
		}
	}
	// A ¶ in a query parameter of a GET reaches the service too.
	a = f.get(t, "/goods?id="+url.QueryEscape("1¶"))
	expect(t, "GET /goods?id=1¶", a, http.StatusBadRequest)

	// And one can buy a ¶ good.
	userid := f.addMember(t, testenv.RandomName("pilcrow"), "pass¶word")
	expect(t, "POST /purchases of a ¶ good", f.buy(t, userid, g.ID), http.StatusOK)
}

// testBadInput: malformed JSON is a 400 and the gate keeps serving; a body
// over --max-body is a 413; an unknown route is a 404.
func testBadInput(t *testing.T, f *fleet) {
	for _, c := range []struct {
		ctype, body string
	}{
		{"application/json", `{"name": "x", "price": `},
		{"application/json", `{"name": "x"} trailing`},
		{"application/json", `[1, 2, 3]`},
		{"application/json", `"just a string"`},
		{"", `{"name": "no content type", `},
		{"application/json", "{\"name\": \"bad utf-8 \xff\xfe\", \"price\": 1"},
	} {
		a := f.send(t, "POST", "/goods", c.ctype, []byte(c.body))
		expect(t, fmt.Sprintf("POST /goods %q (%s)", c.body, c.ctype), a, http.StatusBadRequest)
		expect(t, "GET /goods after malformed JSON", f.get(t, "/goods"), http.StatusOK)
	}

	big := `{"name":"big","price":1,"description":"` + strings.Repeat("x", maxBody) + `"}`
	expect(t, "POST /goods over --max-body", f.send(t, "POST", "/goods", "application/json", []byte(big)), http.StatusRequestEntityTooLarge)
	form := "name=big&price=1&description=" + strings.Repeat("y", maxBody)
	expect(t, "POST /goods form over --max-body", f.send(t, "POST", "/goods", "application/x-www-form-urlencoded", []byte(form)), http.StatusRequestEntityTooLarge)
	expect(t, "GET /goods after a body over the limit", f.get(t, "/goods"), http.StatusOK)

	expect(t, "GET /nosuchroute", f.get(t, "/nosuchroute"), http.StatusNotFound)
	if a := f.send(t, "PUT", "/goods", "application/json", []byte(`{}`)); a.Status != http.StatusMethodNotAllowed || a.Header.Get("Allow") != "GET, POST, PATCH, DELETE" {
		t.Errorf("PUT /goods (a known path, another method): got %s, Allow %q; want HTTP 405, Allow \"GET, POST, PATCH, DELETE\"", a, a.Header.Get("Allow"))
	}
	expect(t, "PATCH /purchases (a known path, a method no one serves)", f.send(t, "PATCH", "/purchases?id=1", "", nil), http.StatusMethodNotAllowed)
	expect(t, "GET /goods/1 (sub-path)", f.get(t, "/goods/1"), http.StatusNotFound)
	expect(t, "GET /goods after the 404s", f.get(t, "/goods"), http.StatusOK)
}

// testRedisFlushAll: after a FLUSHALL (on a shared real Redis: the deletion
// of this test's keys) a purchase of an existing good succeeds, and the
// lookup refills the good's cache entry.
func testRedisFlushAll(t *testing.T, f *fleet) {
	ctx := context.Background()
	rc := f.redisClient()
	userid := f.addMember(t, testenv.RandomName("flush"), "password-flush")
	id := f.addGood(t, good{Name: "flushed", Category: "c", Price: 3})
	key := f.goodsKey(id)
	if n, _ := rc.Exists(ctx, key).Result(); n != 1 {
		t.Fatalf("Redis key %s missing right after POST /goods", key)
	}

	if f.realRedis {
		n, err := testenv.DeleteKeys(ctx, rc, f.prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("shared real Redis: deleted this test's %d keys instead of FLUSHALL", n)
	} else if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := rc.Exists(ctx, key).Result(); n != 0 {
		t.Fatalf("Redis key %s still there after the flush", key)
	}

	a := f.buy(t, userid, id)
	expect(t, "POST /purchases after FLUSHALL", a, http.StatusOK)
	expect(t, "POST /purchases of an unknown good after FLUSHALL", f.buy(t, userid, 987654321), http.StatusNotFound)
	if ps := f.purchases(t, userid); len(ps) != 1 || ps[0].GoodsID != id {
		t.Errorf("GET /purchases after FLUSHALL: want one purchase of %d, got %+v", id, ps)
	}
	// The lookup's answer refills the cache (the issue, item 7).
	deadline := time.Now().Add(3 * time.Second)
	for {
		n, err := rc.Exists(ctx, key).Result()
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("Redis key %s not refilled after a purchase that looked the good up (exists=%d, err=%v)", key, n, err)
			break
		}
		time.Sleep(pollEvery)
	}
	if got := f.getGood(t, id); got.Name != "flushed" {
		t.Errorf("GET /goods?id after FLUSHALL: %+v", got)
	}
}

// testGoodsInstanceKilled: SIGKILL one of the two goods instances while
// workers keep GET /goods?id=N going through the gate: not one GET fails
// (those in flight on the dead instance are retried on the other), and the
// distributor drops the dead instance from its list.
func testGoodsInstanceKilled(t *testing.T, f *fleet, gate *proc, goods []*proc, goodsNodes []node) {
	id := f.addGood(t, good{Name: "under load", Category: "c", Price: 5})
	path := "/goods?id=" + strconv.FormatInt(id, 10)
	f.waitGateConnected(gate, goodsNodes[0].addr(), goodsNodes[1].addr())

	var (
		ok, okAfter atomic.Int64
		killed      atomic.Bool
		mu          sync.Mutex
		failures    []string
		wg          sync.WaitGroup
	)
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, err := f.request("GET", path, "", nil)
				var msg string
				switch {
				case err != nil:
					msg = err.Error()
				case a.Status != http.StatusOK || a.ErrorCode == nil || *a.ErrorCode != 0 || !strings.Contains(string(a.Results), `"under load"`):
					msg = a.String()
				}
				if msg != "" {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("killed=%v: %s", killed.Load(), msg))
					mu.Unlock()
					continue
				}
				ok.Add(1)
				if killed.Load() {
					okAfter.Add(1)
				}
			}
		})
	}
	waitCount := func(c *atomic.Int64, n int64, what string) {
		deadline := time.Now().Add(startTimeout)
		for c.Load() < n {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("only %d of %d successful GETs %s within %v; failures: %d %q", c.Load(), n, what, startTimeout, len(failures), first(failures, 5))
			}
			time.Sleep(pollEvery)
		}
	}
	waitCount(&ok, 200, "before the kill")
	killed.Store(true)
	goods[0].Kill(t)
	waitCount(&okAfter, 300, "after the kill")
	close(stop)
	wg.Wait()
	t.Logf("%d GETs succeeded, %d of them after SIGKILL of %s (%s)", ok.Load(), okAfter.Load(), goods[0].Name, goodsNodes[0].addr())
	if len(failures) > 0 {
		t.Errorf("%d GETs failed around the SIGKILL of one goods instance (want 0); first: %q", len(failures), first(failures, 5))
	}
	nodes := f.waitNodes(map[string]int{"goods": 1})
	for _, n := range nodesNamed(nodes, "goods") {
		if n.addr() == goodsNodes[0].addr() {
			t.Errorf("the killed instance %s is still listed", n.addr())
		}
	}
	expect(t, "GET /goods?id after the kill", f.get(t, path), http.StatusOK)
	expect(t, "POST /goods after the kill", f.sendJSON(t, "POST", "/goods", map[string]any{"name": "after", "price": 1}), http.StatusOK)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// TestRedisStopped: with the fleet's Redis stopped, a purchase of an
// existing good still succeeds (the purchases service asks the goods
// service, which reads the database), reads still work, and an unknown good
// is still refused.
func TestRedisStopped(t *testing.T) {
	t.Parallel()
	redisURL, stopRedis := controlledRedis(t)
	f := newFleet(t, redisURL)
	f.startDistributor()
	f.startGate()
	f.startService("goods")
	f.startService("members")
	f.startService("purchases")
	f.waitNodes(map[string]int{"gate": 1, "goods": 1, "members": 1, "purchases": 1})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	f.pollStatus("/purchases?userid=1", http.StatusOK, startTimeout)
	f.pollStatus("/members?username=nobody&password=nobody-at-all", http.StatusUnauthorized, startTimeout)

	username := testenv.RandomName("carol")
	userid := f.addMember(t, username, "password-carol")
	g1 := f.addGood(t, good{Name: "cached", Category: "c", Price: 1})
	g2 := f.addGood(t, good{Name: "also cached", Category: "c", Price: 2})
	expect(t, "POST /purchases with Redis up", f.buy(t, userid, g1), http.StatusOK)

	stopRedis()

	start := time.Now()
	expect(t, "POST /purchases with Redis stopped", f.buy(t, userid, g2), http.StatusOK)
	t.Logf("first purchase with Redis stopped took %v", time.Since(start).Round(time.Millisecond))
	expect(t, "second POST /purchases with Redis stopped", f.buy(t, userid, g1), http.StatusOK)
	expect(t, "POST /purchases of an unknown good with Redis stopped", f.buy(t, userid, 987654321), http.StatusNotFound)
	if got := f.getGood(t, g2); got.Name != "also cached" {
		t.Errorf("GET /goods?id with Redis stopped: %+v", got)
	}
	g3 := f.addGood(t, good{Name: "added without Redis", Category: "c", Price: 3})
	expect(t, "POST /purchases of a good added with Redis stopped", f.buy(t, userid, g3), http.StatusOK)
	ps := f.purchases(t, userid)
	var got []int64
	for _, p := range ps {
		got = append(got, p.GoodsID)
	}
	slices.Sort(got)
	if want := []int64{g1, g1, g2, g3}; !slices.Equal(got, want) {
		t.Errorf("GET /purchases with Redis stopped: goodsids %v, want %v", got, want)
	}
	// Losing Redis never lets anyone in.
	a := f.get(t, "/members?"+url.Values{"username": {username}, "password": {"wrong password"}}.Encode())
	expect(t, "log in with a wrong password with Redis stopped", a, http.StatusUnauthorized)
}

// TestDistributorRestart: the distributor is killed while GETs run through
// the gate: they keep succeeding while it is away (everyone keeps the last
// list) and after it comes back on the same port; a service started while it
// was away becomes reachable through the gate within 3 s of its return.
func TestDistributorRestart(t *testing.T) {
	t.Parallel()
	f := newFleet(t, "")
	dist := f.startDistributor()
	gate := f.startGate()
	f.startService("goods")
	nodes := f.waitNodes(map[string]int{"gate": 1, "goods": 1})
	f.waitGateConnected(gate, nodesNamed(nodes, "goods")[0].addr())
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	id := f.addGood(t, good{Name: "survivor", Category: "c", Price: 1})
	path := "/goods?id=" + strconv.FormatInt(id, 10)

	// Phases of the run, for the failure report.
	const (
		phaseUp = iota
		phaseDown
		phaseBack
	)
	var (
		phase    atomic.Int32
		okBy     [3]atomic.Int64
		mu       sync.Mutex
		failures []string
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ph := phase.Load()
				a, err := f.request("GET", path, "", nil)
				if err == nil && a.Status == http.StatusOK && strings.Contains(string(a.Results), `"survivor"`) {
					okBy[ph].Add(1)
					continue
				}
				msg := ""
				if err != nil {
					msg = err.Error()
				} else {
					msg = a.String()
				}
				mu.Lock()
				failures = append(failures, fmt.Sprintf("phase %d at %s: %s", ph, time.Now().Format("15:04:05.000"), msg))
				mu.Unlock()
				time.Sleep(5 * time.Millisecond) // do not spin on a failing route
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitOK := func(ph int, n int64) {
		t.Helper()
		deadline := time.Now().Add(startTimeout)
		for okBy[ph].Load() < n {
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("phase %d: only %d successful GETs in %v; failures: %q", ph, okBy[ph].Load(), startTimeout, first(failures, 5))
			}
			time.Sleep(pollEvery)
		}
	}
	waitOK(phaseUp, 50)

	phase.Store(phaseDown)
	dist.Kill(t)
	downAt := time.Now()
	// A service started while the distributor is away: wait until it is
	// up (its ready file: it listens and its registration loop runs).
	members := f.startService("members")
	f.ready(members)
	waitOK(phaseDown, 100)
	expect(t, "POST /goods while the distributor is away", f.sendJSON(t, "POST", "/goods", map[string]any{"name": "meanwhile", "price": 2}), http.StatusOK)
	downFor := time.Since(downAt)

	f.startDistributor() // same address
	backAt := time.Now()
	phase.Store(phaseBack)
	// The new member must be reachable within 3 s (issue 2): poll with a
	// deadline of 3 s plus a margin for the poll itself.
	const within, margin = 3 * time.Second, 500 * time.Millisecond
	deadline := backAt.Add(within + margin)
	var last string
	for {
		a, err := f.request("GET", "/members?username=nobody&password=nobody-at-all", "", nil)
		if err == nil && a.Status == http.StatusUnauthorized {
			break
		}
		if err != nil {
			last = err.Error()
		} else {
			last = a.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("members, started while the distributor was away, not reachable through the gate %v after it came back (want within %v); last answer: %s", time.Since(backAt).Round(time.Millisecond), within, last)
		}
		time.Sleep(pollEvery)
	}
	t.Logf("distributor away for %v; members reachable %v after it came back", downFor.Round(time.Millisecond), time.Since(backAt).Round(time.Millisecond))
	f.waitNodes(map[string]int{"gate": 1, "goods": 1, "members": 1})
	waitOK(phaseBack, okBy[phaseBack].Load()+100)
	close(stop)
	wg.Wait()
	t.Logf("successful GETs: %d before, %d while away, %d after the return", okBy[phaseUp].Load(), okBy[phaseDown].Load(), okBy[phaseBack].Load())
	if len(failures) > 0 {
		t.Errorf("%d GETs failed across the distributor restart (want 0); first: %q", len(failures), first(failures, 5))
	}
}

// TestConcurrentStartFreshDatabase: services started at the same moment on a
// fresh, empty database (as a script or an orchestrator starts a fleet) all
// come up and register, whichever of them migrates the database first.
func TestConcurrentStartFreshDatabase(t *testing.T) {
	t.Parallel()
	f := newBareFleet(t, "")
	f.startDistributor()
	for _, name := range []string{"goods", "goods", "members", "purchases"} {
		f.startService(name)
	}
	f.waitNodes(map[string]int{"goods": 2, "members": 1, "purchases": 1})
}
