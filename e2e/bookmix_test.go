package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

// The tests in this file run the book's API flow in every mix of the book's
// processes (the Go fakes of bookfakes_test.go) and microshop's.

const (
	// bookStepMax is the most any step of the flow may take: far below
	// the gates' 5 s request timeout, so no step may wait for one.
	bookStepMax = 2 * time.Second
	// bareKeyRange is how many goods ids from testenv.SpreadGoodsIDs's
	// start a mix may use: its bare Redis keys are deleted when it ends.
	// The last id of the range is never created: it is the good the
	// readiness probes ask for.
	bareKeyRange = 1000
)

// kinds tells which implementations serve a service in a mix: microshop's,
// the book's, or both in one round robin.
type kinds struct{ ours, book bool }

var (
	oursOnly  = kinds{ours: true}
	bookOnly  = kinds{book: true}
	bothKinds = kinds{ours: true, book: true}
)

// bookMix is one mix: a fleet, the database and Redis its book fakes use,
// which implementations serve goods, members and purchases, and the
// slowest step so far.
type bookMix struct {
	*fleet
	sdb     *store.DB
	rdb     redis.UniversalClient
	firstID int64 // the first goods id (testenv.SpreadGoodsIDs)

	bookGate bool // requests go through the book's gate: every answer is HTTP 200
	form     bool // POST bodies are forms (the book's gate reads strings)

	goods, members, purchases kinds

	slowest  time.Duration
	slowStep string
}

// newBookMix prepares a fleet whose goods ids start at a random value above
// a billion, so that the book's bare Redis keys (the id alone) cannot meet
// another test's; they are deleted when the test ends.
func newBookMix(t *testing.T, goods, members, purchases kinds) *bookMix {
	t.Helper()
	f := newFleet(t, "")
	db, err := store.Open(context.Background(), f.db)
	if err != nil {
		t.Fatalf("open %s: %v", store.Redact(f.db), err)
	}
	t.Cleanup(func() { db.Close() })
	m := &bookMix{fleet: f, sdb: db, rdb: f.redisClient(), goods: goods, members: members, purchases: purchases}
	m.firstID = testenv.SpreadGoodsIDs(t, db)
	t.Cleanup(m.deleteBareKeys)
	return m
}

// deleteBareKeys deletes the bare keys of the mix's goods ids (one DEL
// each, pipelined: on a Redis Cluster the keys live on many nodes).
func (m *bookMix) deleteBareKeys() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id := m.firstID; id < m.firstID+bareKeyRange; id++ {
			p.Del(ctx, strconv.FormatInt(id, 10))
		}
		return nil
	})
}

// absentID is a goods id that the mix never creates.
func (m *bookMix) absentID() string { return strconv.FormatInt(m.firstID+bareKeyRange-1, 10) }

// encode returns params as the mix's clients send them.
func (m *bookMix) encode(params map[string]any) (contentType string, body []byte) {
	if params == nil {
		return "", nil
	}
	if m.form {
		v := url.Values{}
		for k, p := range params {
			v.Set(k, fmt.Sprint(p))
		}
		return "application/x-www-form-urlencoded", []byte(v.Encode())
	}
	b, _ := json.Marshal(params)
	return "application/json", b
}

// step sends one request of the flow through the gate, times it and
// checks that its body carries no SQL.
func (m *bookMix) step(t *testing.T, name, method, path string, params map[string]any) *answer {
	t.Helper()
	ct, body := m.encode(params)
	start := time.Now()
	a := m.send(t, method, path, ct, body)
	took := time.Since(start)
	if took > m.slowest {
		m.slowest, m.slowStep = took, name
	}
	if took >= bookStepMax {
		t.Errorf("%s (%s %s): took %v; want under %v (no step may wait for a timeout): %s", name, method, path, took.Round(time.Millisecond), bookStepMax, a)
	}
	noSQL(t, name, a.Body)
	return a
}

// noSQL fails t when body shows SQL text or a driver's error object.
func noSQL(t *testing.T, what string, body []byte) {
	t.Helper()
	low := strings.ToLower(string(body))
	for _, leak := range []string{"insert into", "select ", "delete from", "sqlmessage", "password("} {
		if strings.Contains(low, leak) {
			t.Errorf("%s: the body shows SQL (%q): %s", what, leak, body)
		}
	}
}

// code is a's outcome as an HTTP status: a microshop gate's status; through
// the book's gate (always 200), the errorcode of the answer it passes on
// (microshop's services answer HTTP statuses; 0 is 200).
func (m *bookMix) code(a *answer) int {
	if !m.bookGate {
		return a.Status
	}
	if a.Status != http.StatusOK || a.ErrorCode == nil {
		return -a.Status
	}
	if *a.ErrorCode == 0 {
		return http.StatusOK
	}
	return *a.ErrorCode
}

// message is a's errormessage when it is a string.
func message(a *answer) string {
	if a.ErrorMessage == nil {
		return ""
	}
	return *a.ErrorMessage
}

// want checks that a's outcome is one of statuses (errorcode 0 on 200, a
// non-zero errorcode and a message otherwise) and reports whether it is.
func (m *bookMix) want(t *testing.T, step string, a *answer, statuses ...int) bool {
	t.Helper()
	if m.bookGate && a.Status != http.StatusOK {
		t.Errorf("%s: the book's gate answered %s; it answers every routed request with HTTP 200 and the service's JSON", step, a)
		return false
	}
	if got := m.code(a); !slices.Contains(statuses, got) {
		if m.bookGate {
			t.Errorf("%s: got %s; want errorcode %v in the service's answer", step, a, statuses)
		} else {
			t.Errorf("%s: got %s; want HTTP %v", step, a, statuses)
		}
		return false
	}
	if m.code(a) == http.StatusOK {
		if a.ErrorCode == nil || *a.ErrorCode != 0 {
			t.Errorf("%s: a success without errorcode 0: %s", step, a)
			return false
		}
		return true
	}
	if a.ErrorCode == nil || *a.ErrorCode == 0 || message(a) == "" {
		t.Errorf("%s: an error without a non-zero errorcode and an errormessage: %s", step, a)
		return false
	}
	return true
}

// waitAnswers polls method path through the gate until every one of preds
// has accepted an answer: each names what one implementation answers, so
// that the gate is known to reach every instance of the route.
func (m *bookMix) waitAnswers(t *testing.T, what, method, path string, params map[string]any, preds ...func(*answer) bool) {
	t.Helper()
	ct, body := m.encode(params)
	seen := make([]bool, len(preds))
	deadline := time.Now().Add(startTimeout)
	last := ""
	for {
		a, err := m.request(method, path, ct, body)
		if err != nil {
			last = err.Error()
		} else {
			last = a.String()
			for i, p := range preds {
				seen[i] = seen[i] || p(a)
			}
		}
		if !slices.Contains(seen, false) {
			return
		}
		m.checkAlive()
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s %s never gave every expected answer (seen %v) within %v; last: %s", what, method, path, seen, startTimeout, last)
		}
		time.Sleep(pollEvery)
	}
}

// waitReady waits until the gate routes every service of the flow to every
// one of its implementations, and microshop's purchases reaches goods.
func (m *bookMix) waitReady(t *testing.T) {
	t.Helper()
	absent := m.absentID()
	is := func(code int, msg string) func(*answer) bool {
		return func(a *answer) bool { return m.code(a) == code && (msg == "" || message(a) == msg) }
	}
	// The book's goods has no goods yet: "no data"; microshop's: not found.
	var goods []func(*answer) bool
	if m.goods.book {
		goods = append(goods, is(http.StatusNotFound, "no data"))
	}
	if m.goods.ours {
		goods = append(goods, func(a *answer) bool {
			return m.code(a) == http.StatusNotFound && strings.Contains(message(a), "not found")
		})
	}
	m.waitAnswers(t, "goods", "GET", "/goods?id="+absent, nil, goods...)
	m.waitAnswers(t, "members", "GET", "/members?username=nobody&password=nobody-at-all", nil, is(http.StatusUnauthorized, ""))
	var purchases []func(*answer) bool
	if m.purchases.book {
		purchases = append(purchases, is(http.StatusNotFound, "no data"))
	}
	if m.purchases.ours {
		purchases = append(purchases, is(http.StatusOK, ""))
	}
	m.waitAnswers(t, "purchases", "GET", "/purchases?userid="+absent, nil, purchases...)
	if m.purchases.ours {
		// microshop's purchases asks goods for a good it has no entry of:
		// 404 once it reaches goods (503 before).
		m.waitAnswers(t, "purchases → goods", "POST", "/purchases", map[string]any{"userid": 1, "goodsid": absent}, is(http.StatusNotFound, ""))
	}
}

// report logs the slowest step of the mix.
func (m *bookMix) report(t *testing.T) {
	t.Logf("%s: slowest step %q, %v", t.Name(), m.slowStep, m.slowest.Round(time.Millisecond))
}

// flow walks the book's API flow through the gate; every step must give the
// book's answer or a better one, with an HTTP status that fits.
func (m *bookMix) flow(t *testing.T) {
	t.Helper()
	user := testenv.RandomName("book")
	pass := testenv.RandomName("pw-")
	login := "/members?" + url.Values{"username": {user}, "password": {pass}}.Encode()

	a := m.step(t, "sign up", "POST", "/members", map[string]any{"username": user, "password": pass})
	m.want(t, "sign up", a, http.StatusOK)

	a = m.step(t, "sign up again", "POST", "/members", map[string]any{"username": user, "password": pass + "-2"})
	if m.want(t, "sign up again with the same name", a, http.StatusConflict) && m.members.book && !m.bookGate {
		if msg := message(a); !strings.Contains(msg, "already exists") || !strings.Contains(msg, "ER_DUP_ENTRY") {
			t.Errorf("sign up again: errormessage %q, want one like \"already exists (ER_DUP_ENTRY)\"", msg)
		}
	}
	if strings.Contains(string(a.Body), pass) {
		t.Errorf("sign up again: the body shows the password: %s", a)
	}

	a = m.step(t, "log in", "GET", login, nil)
	if !m.want(t, "log in", a, http.StatusOK) || a.UserID == nil || *a.UserID <= 0 {
		t.Fatalf("log in: no positive userid: %s", a)
	}
	userid := *a.UserID

	name := testenv.RandomName("flow-good-")
	a = m.step(t, "add a good", "POST", "/goods", map[string]any{"name": name, "category": "book", "price": 300, "description": "sold in the book's flow"})
	if !m.want(t, "add a good", a, http.StatusOK) {
		t.FailNow()
	}
	var id int64
	if a.ID != nil { // microshop's goods answers the id; the book's does not
		id = *a.ID
	}

	a = m.step(t, "add a good priced abc", "POST", "/goods", map[string]any{"name": name + "-abc", "category": "book", "price": "abc", "description": "not a price"})
	if m.want(t, "add a good with a non-integer price", a, http.StatusBadRequest) && !m.goods.ours && !strings.Contains(message(a), "ER_TRUNCATED_WRONG_VALUE_FOR_FIELD") {
		t.Errorf("add a good priced abc to the book's goods: errormessage %q, want one naming ER_TRUNCATED_WRONG_VALUE_FOR_FIELD", message(a))
	}

	a = m.step(t, "list goods", "GET", "/goods", nil)
	if !m.want(t, "list goods", a, http.StatusOK) {
		t.FailNow()
	}
	gs := results[good](t, "list goods", a)
	i := slices.IndexFunc(gs, func(g good) bool { return g.Name == name })
	if i < 0 {
		t.Fatalf("list goods: %q is not listed: %s", name, a)
	}
	if id != 0 && gs[i].ID != id {
		t.Errorf("list goods: %q listed with id %d; POST answered %d", name, gs[i].ID, id)
	}
	id = gs[i].ID
	if g := gs[i]; g.Category != "book" || g.Price != 300 || g.Description != "sold in the book's flow" {
		t.Errorf("list goods: %+v, want the good as added", g)
	}
	if slices.ContainsFunc(gs, func(g good) bool { return g.Name == name+"-abc" }) {
		t.Errorf("list goods: the good priced abc was added: %s", a)
	}
	sid := strconv.FormatInt(id, 10)

	a = m.step(t, "get one good", "GET", "/goods?id="+sid, nil)
	if m.want(t, "get one good", a, http.StatusOK) {
		gs = results[good](t, "get one good", a)
		if !slices.ContainsFunc(gs, func(g good) bool { return g.ID == id && g.Name == name }) {
			t.Errorf("get good %d: it is not among the results: %s", id, a)
		}
		if !m.goods.book && len(gs) != 1 { // the book's lists everything
			t.Errorf("get good %d: want that good alone from microshop's goods: %s", id, a)
		}
	}

	buy := map[string]any{"userid": userid, "goodsid": id}
	a = m.step(t, "buy", "POST", "/purchases", buy)
	m.want(t, "buy", a, http.StatusOK)

	a = m.step(t, "list purchases", "GET", "/purchases?userid="+strconv.FormatInt(userid, 10), nil)
	if m.want(t, "list purchases", a, http.StatusOK) {
		ps := results[purchase](t, "list purchases", a)
		if !slices.ContainsFunc(ps, func(p purchase) bool { return p.GoodsID == id }) {
			t.Errorf("list purchases: good %d is not among them: %s", id, a)
		}
	}

	a = m.step(t, "delete the good", "DELETE", "/goods?id="+sid, nil)
	m.want(t, "delete the good", a, http.StatusOK)

	a = m.step(t, "buy the deleted good", "POST", "/purchases", buy)
	m.want(t, "buy the deleted good", a, m.refusedSale()...)
	if !m.purchases.ours && !m.bookGate && message(a) != "Redis failure" {
		t.Errorf("buy the deleted good from the book's purchases: errormessage %q, want the book's \"Redis failure\"", message(a))
	}

	a = m.step(t, "delete the member", "DELETE", "/members?"+url.Values{"username": {user}}.Encode(), nil)
	m.want(t, "delete the member", a, http.StatusOK)

	a = m.step(t, "log in as the deleted member", "GET", login, nil)
	m.want(t, "log in as the deleted member", a, http.StatusUnauthorized)
}

// refusedSale is the outcome of buying a deleted good: 404 from
// microshop's purchases; the book's "Redis failure", a 400 through a
// microshop gate.
func (m *bookMix) refusedSale() []int {
	var s []int
	if m.purchases.ours {
		s = append(s, http.StatusNotFound)
	}
	if m.purchases.book {
		s = append(s, http.StatusBadRequest)
	}
	return s
}

// addGood adds a good named name through the gate and returns its id (from
// the answer, or from the list when the book's goods answered).
func (m *bookMix) addGood(t *testing.T, name string) int64 {
	t.Helper()
	a := m.step(t, "add "+name, "POST", "/goods", map[string]any{"name": name, "category": "mix", "price": 7, "description": "d"})
	if !m.want(t, "add "+name, a, http.StatusOK) {
		t.FailNow()
	}
	if a.ID != nil {
		return *a.ID
	}
	a = m.step(t, "list goods for "+name, "GET", "/goods", nil)
	if !m.want(t, "list goods", a, http.StatusOK) {
		t.FailNow()
	}
	gs := results[good](t, "list goods", a)
	i := slices.IndexFunc(gs, func(g good) bool { return g.Name == name })
	if i < 0 {
		t.Fatalf("the good %q just added is not listed: %s", name, a)
	}
	return gs[i].ID
}

// rawAnswer is a service's answer to rawCall.
type rawAnswer struct {
	code int
	msg  string // errormessage, or its JSON when it is not a string
	raw  []byte
}

// rawCall sends one request straight to the service at addr, as a gate
// would (key at the top level and in params), and returns its answer.
func rawCall(t *testing.T, addr, method, uri string, params map[string]any) rawAnswer {
	t.Helper()
	c := dialRaw(t, addr)
	defer c.Close()
	p := map[string]any{"key": 1}
	for k, v := range params {
		p[k] = v
	}
	b, _ := json.Marshal(map[string]any{"uri": uri, "method": method, "key": 1, "params": p})
	c.write(t, string(b)+"¶")
	raw := c.read(t, 5*time.Second)
	var m struct {
		Key          json.RawMessage `json:"key"`
		ErrorCode    *int            `json:"errorcode"`
		ErrorMessage json.RawMessage `json:"errormessage"`
	}
	if err := json.Unmarshal(raw, &m); err != nil || string(m.Key) != "1" || m.ErrorCode == nil {
		t.Fatalf("%s %s at %s: not an answer with key 1 and an errorcode: %q", method, uri, addr, raw)
	}
	r := rawAnswer{code: *m.ErrorCode, msg: string(m.ErrorMessage), raw: raw}
	json.Unmarshal(m.ErrorMessage, &r.msg)
	return r
}

// endpoint is one goods or purchases instance, reached straight.
type endpoint struct {
	label string
	addr  string
	book  bool
}

// checkDeleteStopsSales shows that after either goods deletes a good, no
// purchases sells it: for each goods instance in deleters, a good is added
// through the gate, sold by every purchases instance in sellers, deleted
// by that goods instance (as if the gate had routed the DELETE there), and
// then refused by every seller, and through the gate.
func (m *bookMix) checkDeleteStopsSales(t *testing.T, userid int64, deleters, sellers []endpoint) {
	t.Helper()
	for _, d := range deleters {
		id := m.addGood(t, testenv.RandomName("del-by-"+d.label+"-"))
		buy := map[string]any{"userid": userid, "goodsid": id}
		for _, s := range sellers {
			if r := rawCall(t, s.addr, "POST", "/purchases", buy); r.code != 0 {
				t.Errorf("%s does not sell good %d before it is deleted: %s", s.label, id, r.raw)
			}
		}
		if r := rawCall(t, d.addr, "DELETE", "/goods", map[string]any{"id": id}); r.code != 0 {
			t.Fatalf("%s: DELETE /goods id %d: %s", d.label, id, r.raw)
		}
		for _, s := range sellers {
			r := rawCall(t, s.addr, "POST", "/purchases", buy)
			switch {
			case s.book && (r.code != 1 || r.msg != "Redis failure"):
				t.Errorf("good %d deleted by %s: %s answers %s; want the book's errorcode 1 \"Redis failure\"", id, d.label, s.label, r.raw)
			case !s.book && r.code != http.StatusNotFound:
				t.Errorf("good %d deleted by %s: %s answers %s; want errorcode 404", id, d.label, s.label, r.raw)
			}
		}
		a := m.step(t, "buy the good deleted by "+d.label, "POST", "/purchases", buy)
		m.want(t, "buy the good deleted by "+d.label+" through the gate", a, m.refusedSale()...)
	}
}

// ourNode returns the listed instance named name that is not the book
// fake's port.
func ourNode(t *testing.T, nodes []node, name string, bookPort int) node {
	t.Helper()
	for _, n := range nodesNamed(nodes, name) {
		if n.Port != bookPort {
			return n
		}
	}
	t.Fatalf("no microshop %s in the list %+v", name, nodes)
	return node{}
}

// TestBookMixes runs the book's API flow (sign up, sign up again, log in,
// add a good, add one priced "abc", list, get one, buy, list purchases,
// delete the good, buy it again, delete the member) in every mix of the
// book's processes and microshop's, over real sockets: each step gives the
// book's answer or a better one with a fitting HTTP status, within 2 s (no
// step waits for a timeout), and no body shows SQL. It also shows that
// after either goods deletes a good no purchases sells it, and that a gate
// with --auth=on never routes to the book's services.
func TestBookMixes(t *testing.T) {
	t.Parallel()
	t.Run("BookServicesOurGate", func(t *testing.T) {
		t.Parallel()
		testMixBookServices(t)
	})
	t.Run("OurServicesBookGate", func(t *testing.T) {
		t.Parallel()
		testMixBookGate(t)
	})
	t.Run("BothGoodsRoundRobin", func(t *testing.T) {
		t.Parallel()
		testMixBothGoods(t)
	})
	t.Run("OurPurchasesBookGoods", func(t *testing.T) {
		t.Parallel()
		testMixOurPurchasesBookGoods(t)
	})
	t.Run("BookPurchasesOurGoods", func(t *testing.T) {
		t.Parallel()
		testMixBookPurchasesOurGoods(t)
	})
	t.Run("AllWithBookServices", func(t *testing.T) {
		t.Parallel()
		testMixAll(t)
	})
	t.Run("AuthOnGateRefusesBookServices", func(t *testing.T) {
		t.Parallel()
		testMixAuthOn(t)
	})
}

// testMixBookServices: the book's goods, members and purchases under
// microshop's distributor (listing their unsigned registrations) and gate
// (--auth=off), which maps the book's answers to fitting statuses; silent
// for longer than the heartbeat timeout, they stay listed and routed.
func testMixBookServices(t *testing.T) {
	m := newBookMix(t, bookOnly, bookOnly, bookOnly)
	m.startDistributor()
	m.startGate("--request-timeout", "5s")
	for _, name := range []string{"goods", "members", "purchases"} {
		startBookService(t, name, m.sdb, m.rdb, m.distAddr)
	}
	m.waitNodes(map[string]int{"gate": 1, "goods": 1, "members": 1, "purchases": 1})
	m.waitReady(t)
	m.flow(t)
	m.report(t)

	// The book's services never heartbeat: silent for longer than the
	// heartbeat timeout (1.5 s by default), they stay listed and routed.
	time.Sleep(2 * 1500 * time.Millisecond)
	m.waitNodes(map[string]int{"goods": 1, "members": 1, "purchases": 1})
	a := m.step(t, "list goods after 3 s of silence", "GET", "/goods", nil)
	if m.want(t, "list goods after 3 s of silence", a, http.StatusNotFound) && message(a) != "no data" {
		t.Errorf("list goods after 3 s of silence: want the book's \"no data\": %s", a)
	}
}

// testMixBookGate: microshop's goods, members and purchases (--fleet-key
// none) under the book's distributor and gate, which sends the key in
// params.key only, counting from 0, the POST bodies as forms (every
// parameter a string), and answers every request HTTP 200 with the
// service's JSON.
func testMixBookGate(t *testing.T) {
	m := newBookMix(t, oursOnly, oursOnly, oursOnly)
	m.bookGate, m.form = true, true
	d := startFakeBookDistributor(t)
	m.distAddr = d.ln.Addr().String()
	g := startFakeBookGate(t, m.distAddr)
	m.gateURL = g.url
	for _, name := range []string{"goods", "members", "purchases"} {
		m.startService(name)
	}
	var routes []string
	for _, name := range []string{"goods", "members", "purchases"} {
		routes = append(routes, bookURLs[name]...)
	}
	g.waitRoutes(t, m.checkAlive, routes...)
	m.waitReady(t)
	m.flow(t)
	m.report(t)

	a, err := m.request("GET", "/nosuch", "", nil)
	if err != nil || a.Status != http.StatusNotFound {
		t.Errorf("the book's gate, unknown route: %v %v; want HTTP 404", a, err)
	}
}

// testMixBothGoods: the book's goods and microshop's goods (--goods-cache
// book) in one round robin behind microshop's gate, with microshop's members
// and purchases: both goods answer the same goods, and after either deletes
// a good microshop's purchases does not sell it.
func testMixBothGoods(t *testing.T) {
	m := newBookMix(t, bothKinds, oursOnly, oursOnly)
	m.startDistributor()
	m.startGate("--request-timeout", "5s")
	metrics := freeAddr(t)
	m.startService("goods", "--goods-cache=book", "--metrics-addr", metrics)
	m.startService("members")
	m.startService("purchases", "--goods-cache=book")
	bg := startBookService(t, "goods", m.sdb, m.rdb, m.distAddr)
	nodes := m.waitNodes(map[string]int{"gate": 1, "goods": 2, "members": 1, "purchases": 1})
	m.waitReady(t)
	m.flow(t)

	// Both instances answer GET /goods?id=N with the good, whichever added it.
	id := m.addGood(t, testenv.RandomName("both-"))
	sid := strconv.FormatInt(id, 10)
	// The balancer may keep away from an instance for up to a second after
	// a slow answer (service/balance.go, forcePick): try for 5 s.
	bookBefore, oursBefore := bg.count("GET/goods"), mustServed(t, metrics, "GET /goods")
	deadline := time.Now().Add(5 * time.Second)
	for i := 1; ; i++ {
		a := m.step(t, "get a good from both goods", "GET", "/goods?id="+sid, nil)
		if m.want(t, "get a good from both goods", a, http.StatusOK) {
			if gs := results[good](t, "get a good", a); !slices.ContainsFunc(gs, func(g good) bool { return g.ID == id }) {
				t.Errorf("GET /goods?id=%d: not among the results: %s", id, a)
			}
		}
		b, o := bg.count("GET/goods")-bookBefore, mustServed(t, metrics, "GET /goods")-oursBefore
		if b > 0 && o > 0 {
			t.Logf("GET /goods?id=%d answered by the book's goods %d times, by microshop's %v times", id, b, o)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d GETs in 5 s the book's goods answered %d and microshop's %v: want both to serve", i, b, o)
		}
		time.Sleep(pollEvery)
	}

	userid := m.addMember(t, testenv.RandomName("buyer"), "a long password")
	ours := ourNode(t, nodes, "goods", bg.port)
	m.checkDeleteStopsSales(t, userid,
		[]endpoint{{label: "the book's goods", addr: bg.addr(), book: true}, {label: "microshop's goods", addr: ours.addr()}},
		[]endpoint{{label: "microshop's purchases", addr: nodesNamed(nodes, "purchases")[0].addr()}})
	m.report(t)
}

// testMixOurPurchasesBookGoods: microshop's purchases (--goods-cache book)
// and members with the book's goods. A good whose entry is gone is asked of
// the book's goods, which lists every good: microshop's purchases finds it
// there, and answers 404 for a good not in the list or when the book's
// goods says "no data". A member the book's members signed up logs in with
// microshop's members.
func testMixOurPurchasesBookGoods(t *testing.T) {
	m := newBookMix(t, bookOnly, oursOnly, oursOnly)
	m.startDistributor()
	m.startGate("--request-timeout", "5s")
	bg := startBookService(t, "goods", m.sdb, m.rdb, m.distAddr)
	m.startService("members")
	m.startService("purchases", "--goods-cache=book")
	m.waitNodes(map[string]int{"gate": 1, "goods": 1, "members": 1, "purchases": 1})
	m.waitReady(t)
	// With another good listed, buying the flow's deleted good is refused
	// because it is missing from the book's list (not for "no data").
	keeper := m.addGood(t, testenv.RandomName("keeper-"))
	m.flow(t)

	t.Run("CacheMiss", func(t *testing.T) {
		userid := m.addMember(t, testenv.RandomName("buyer"), "a long password")
		id := m.addGood(t, testenv.RandomName("miss-"))
		if n, err := m.rdb.Del(context.Background(), strconv.FormatInt(id, 10)).Result(); err != nil || n != 1 {
			t.Fatalf("the book's goods left no entry of good %d to delete: %v %v", id, n, err)
		}
		before := bg.count("GET/goods")
		a := m.step(t, "buy a good with no entry", "POST", "/purchases", map[string]any{"userid": userid, "goodsid": id})
		m.want(t, "buy a good whose entry is gone (found in the book's list)", a, http.StatusOK)
		if bg.count("GET/goods") == before || !bg.received("GET/goods", "id", strconv.FormatInt(id, 10)) {
			t.Errorf("microshop's purchases sold good %d with no entry without asking goods GET /goods {\"id\":%d}", id, id)
		}
		a = m.step(t, "buy a good not in the list", "POST", "/purchases", map[string]any{"userid": userid, "goodsid": m.absentID()})
		m.want(t, "buy a good missing from the book's list", a, http.StatusNotFound)
		for _, g := range []int64{id, keeper} {
			a = m.step(t, "delete a good", "DELETE", "/goods?id="+strconv.FormatInt(g, 10), nil)
			m.want(t, "delete a good", a, http.StatusOK)
		}
		a = m.step(t, "list no goods", "GET", "/goods", nil)
		if m.want(t, "list goods when there are none", a, http.StatusNotFound) && message(a) != "no data" {
			t.Errorf("list goods when there are none: want the book's \"no data\": %s", a)
		}
		a = m.step(t, "buy when there are no goods", "POST", "/purchases", map[string]any{"userid": userid, "goodsid": keeper})
		m.want(t, "buy when the book's goods says no data", a, http.StatusNotFound)
	})

	t.Run("BookMemberLogsInToOurs", func(t *testing.T) {
		bm := startBookService(t, "members", m.sdb, m.rdb, "") // not listed: reached straight
		user, pass := testenv.RandomName("legacy"), "the book's password"
		if r := rawCall(t, bm.addr(), "POST", "/members", map[string]any{"username": user, "password": pass}); r.code != 0 {
			t.Fatalf("the book's members: sign up: %s", r.raw)
		}
		var rowID int64
		if err := m.sdb.QueryRowContext(context.Background(), "SELECT id FROM members WHERE username = ?", user).Scan(&rowID); err != nil {
			t.Fatal(err)
		}
		login := "/members?" + url.Values{"username": {user}, "password": {pass}}.Encode()
		a := m.step(t, "log in as the book's member", "GET", login, nil)
		if m.want(t, "log in with microshop's members as a member the book's members signed up", a, http.StatusOK) && (a.UserID == nil || *a.UserID != rowID) {
			t.Errorf("log in as the book's member: userid %v, want %d: %s", deref(a.UserID), rowID, a)
		}
		a = m.step(t, "log in as the book's member, wrong password", "GET", "/members?"+url.Values{"username": {user}, "password": {pass + "!"}}.Encode(), nil)
		m.want(t, "log in as the book's member with a wrong password", a, http.StatusUnauthorized)
	})
	m.report(t)
}

// testMixBookPurchasesOurGoods: the book's purchases and members with
// microshop's goods (--goods-cache book), which writes the book's bare key
// for every good it adds, so the book's purchases sells it, and deletes the
// key with the good, so it does not.
func testMixBookPurchasesOurGoods(t *testing.T) {
	m := newBookMix(t, oursOnly, bookOnly, bookOnly)
	m.startDistributor()
	m.startGate("--request-timeout", "5s")
	m.startService("goods", "--goods-cache=book")
	startBookService(t, "members", m.sdb, m.rdb, m.distAddr)
	startBookService(t, "purchases", m.sdb, m.rdb, m.distAddr)
	m.waitNodes(map[string]int{"gate": 1, "goods": 1, "members": 1, "purchases": 1})
	m.waitReady(t)
	m.flow(t)

	t.Run("BareKeys", func(t *testing.T) {
		ctx := context.Background()
		name := testenv.RandomName("key-")
		id := m.addGood(t, name)
		key := strconv.FormatInt(id, 10)
		var entry struct {
			Name  string          `json:"name"`
			Price json.RawMessage `json:"price"`
		}
		b, err := m.rdb.Get(ctx, key).Bytes()
		if err != nil || json.Unmarshal(b, &entry) != nil || entry.Name != name || strings.Trim(string(entry.Price), `"`) != "7" {
			t.Errorf("microshop's goods with --goods-cache=book: key %q holds %q (%v); want the book's entry of %q", key, b, err, name)
		}
		if ttl, err := m.rdb.TTL(ctx, key).Result(); err != nil || ttl != -1 {
			t.Errorf("key %q: TTL %v (%v); want none, as the book's", key, ttl, err)
		}
		a := m.step(t, "delete a good", "DELETE", "/goods?id="+key, nil)
		m.want(t, "delete a good", a, http.StatusOK)
		if n, err := m.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
			t.Errorf("key %q still exists after the good was deleted (%v)", key, err)
		}
	})
	m.report(t)
}

// testMixAll: `microshop all --fleet-key=none --auth=off --goods-cache=book`
// with the book's goods and purchases joining its distributor: every goods
// and purchases route has one instance of each, and after either goods
// deletes a good neither purchases sells it.
func testMixAll(t *testing.T) {
	m := newBookMix(t, bothKinds, oursOnly, bothKinds)
	gatePort := proctest.FreePort(t)
	all := m.start("all", "all", "--random-ports", "--addr", "127.0.0.1:"+strconv.Itoa(gatePort),
		"--distributor", "127.0.0.1:"+strconv.Itoa(proctest.FreePort(t)),
		"--db", m.db, "--redis", m.redis, "--redis-prefix", m.prefix, "--goods-cache=book",
		"--fleet-key=none", "--auth=off", "--request-timeout", "5s",
		"--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0")
	m.distAddr = m.ready(all).Components["distributor"]["packet"]
	m.gateURL = "http://127.0.0.1:" + strconv.Itoa(gatePort)
	bg := startBookService(t, "goods", m.sdb, m.rdb, m.distAddr)
	bp := startBookService(t, "purchases", m.sdb, m.rdb, m.distAddr)
	nodes := m.waitNodes(map[string]int{"gate": 1, "goods": 2, "members": 1, "purchases": 2})
	m.waitReady(t)
	m.flow(t)

	userid := m.addMember(t, testenv.RandomName("buyer"), "a long password")
	sellers := []endpoint{{label: "the book's purchases", addr: bp.addr(), book: true}, {label: "microshop's purchases", addr: ourNode(t, nodes, "purchases", bp.port).addr()}}
	start := time.Now()
	m.checkDeleteStopsSales(t, userid,
		[]endpoint{{label: "the book's goods", addr: bg.addr(), book: true}, {label: "microshop's goods", addr: ourNode(t, nodes, "goods", bg.port).addr()}},
		sellers)

	// Each purchases lists the purchases both made (one per seller and
	// deleted good), with the same ids, goods and readable dates.
	var lists [][]purchase
	for _, s := range sellers {
		r := rawCall(t, s.addr, "GET", "/purchases", map[string]any{"userid": userid})
		var body struct {
			Results []purchase `json:"results"`
		}
		if err := json.Unmarshal(r.raw, &body); err != nil || r.code != 0 || len(body.Results) != 2*len(sellers) {
			t.Errorf("%s lists %s (%v); want the %d purchases of member %d", s.label, r.raw, err, 2*len(sellers), userid)
			continue
		}
		for _, p := range body.Results {
			checkDate(t, p.Date, start)
		}
		slices.SortFunc(body.Results, func(a, b purchase) int { return int(a.ID - b.ID) })
		lists = append(lists, body.Results)
	}
	if len(lists) == 2 {
		for i := range lists[0] {
			if a, b := lists[0][i], lists[1][i]; a != b {
				t.Errorf("the purchases differ: %s lists %+v, %s %+v", sellers[0].label, lists[0], sellers[1].label, lists[1])
				break
			}
		}
	}
	m.report(t)
}

// testMixAuthOn: a microshop gate with --auth=on (and a fleet key) under a
// distributor that lists the book's unsigned registrations answers 503 for
// the book's routes, with a message naming the reason, and never sends
// them a request: the book's services ignore the identity a gate vouches
// for.
func testMixAuthOn(t *testing.T) {
	m := newBookMix(t, bookOnly, bookOnly, kinds{})
	m.startDistributor() // --fleet-key none: it lists the book's registrations
	m.startGate("--auth=on", "--fleet-key", "e2e-book-mix-fleet-key-0123", "--admin-key", "e2e-book-mix-admin-key-0123",
		"--redis", m.redis, "--redis-prefix", m.prefix)
	bg := startBookService(t, "goods", m.sdb, m.rdb, m.distAddr)
	bm := startBookService(t, "members", m.sdb, m.rdb, m.distAddr)
	m.waitNodes(map[string]int{"gate": 1, "goods": 1, "members": 1})
	m.pollStatus("/goods", http.StatusServiceUnavailable, startTimeout)
	for _, path := range []string{"/goods", "/members?username=nobody&password=nobody-at-all"} {
		a := m.step(t, "GET "+path+" with --auth=on", "GET", path, nil)
		expect(t, "GET "+path+" through a gate with --auth=on, served only by the book's service", a, http.StatusServiceUnavailable)
		if msg := message(a); !strings.Contains(msg, "enforce identities") {
			t.Errorf("GET %s: errormessage %q does not name the reason (the service does not enforce identities)", path, msg)
		}
	}
	if n := bg.total() + bm.total(); n != 0 {
		t.Errorf("the gate with --auth=on sent the book's services %d requests; want none", n)
	}
	m.report(t)
}
