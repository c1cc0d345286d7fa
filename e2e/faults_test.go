package e2e

// End-to-end fault tests on loopback: a frozen (SIGSTOP) goods instance
// under GETs, under purchases and under POSTs; two distributors with one of
// them frozen; a slow instance under load; the last instance of a route
// killed. Each test checks one item of the fleet's contract under faults
// (DESIGN.md §9): a peer silent for longer than --heartbeat-timeout (1.5 s by
// default) is marked down, a GET or DELETE in flight on it is re-sent at
// once, a POST in flight on it fails at once with a 503 that says it "may or
// may not have been applied"; every process follows every distributor it is
// given; balancing is load-aware; a listed route with no live instance
// answers 503.
//
// These tests are not parallel: their latency bounds need the machine to
// themselves (top-level parallel tests of the package only start after
// them).

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/internal/testenv"
)

// Bounds of the contract under faults.
const (
	faultMaxLatency  = 3500 * time.Millisecond // no request may take longer, whatever froze
	faultDetect      = 2 * time.Second         // after this, a frozen peer has been marked down
	faultAfterDetect = time.Second             // a GET started after detection takes less than this
	faultNewInstance = 4 * time.Second         // a new instance serves within this of its start, one distributor frozen
	hedgeAfter       = 50 * time.Millisecond   // --hedge-after's default: a GET to a frozen instance waits at least this
)

// loadClients is how many clients loop requests in the load tests.
const loadClients = 8

// TestFrozenGoodsInstance: 8 clients loop GET /goods?id=N through the gate
// of two goods instances; one of them is frozen (SIGSTOP) for 6 s, then
// thawed. No GET is lost or answered wrong, none takes longer than 3.5 s,
// every GET started more than 2 s after the freeze takes less than 1 s, and
// the thawed instance serves again within 15 s.
func TestFrozenGoodsInstance(t *testing.T) {
	f := newFleet(t, "")
	f.startDistributor()
	f.startGate("--log-level", "info") // no line per request: the load makes tens of thousands
	m1, m2 := freeAddr(t), freeAddr(t)
	goods1 := f.startService("goods", "--metrics-addr", m1)
	f.startService("goods", "--metrics-addr", m2)
	f.waitNodes(map[string]int{"gate": 1, "goods": 2})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	goods := f.seedGoods(t, "frozen", 20)
	f.waitServing(t, "GET /goods", 10*time.Second, m1, m2)

	load := startGetLoad(f, loadClients, goods)
	defer load.stop()
	time.Sleep(2 * time.Second) // warm-up under load
	if n := load.count(); n == 0 {
		t.Fatalf("no GET completed in 2 s of warm-up")
	}
	before1 := mustServed(t, m1, "GET /goods")
	freezeAt := time.Now()
	goods1.Freeze(t)
	time.Sleep(6 * time.Second)
	thawAt := time.Now()
	goods1.Thaw(t)
	back := waitBackInRotation(t, m1, "GET /goods", before1, thawAt, 15*time.Second)
	samples := load.stop()
	f.checkAlive()

	all := summarize(samples, time.Time{}, time.Now().Add(time.Hour))
	during := summarize(samples, freezeAt, thawAt)
	detected := summarize(samples, freezeAt.Add(faultDetect), thawAt)
	afterDetect := summarize(samples, freezeAt.Add(faultDetect), time.Now().Add(time.Hour))
	t.Logf("GETs: %d in all, %d started during the 6 s freeze of %s (%d of them more than %v after it); failures: %d",
		all.n, during.n, goods1.Name, detected.n, faultDetect, all.failed)
	t.Logf("latency: max %v overall, max %v during the freeze; after detection (started %v+ after the freeze, before the thaw): p99 %v, max %v",
		all.max, during.max, faultDetect, detected.p99, detected.max)
	t.Logf("%s before the freeze had answered %v GETs; %s", goods1.Name, before1, back)

	if all.failed > 0 {
		t.Errorf("%d of %d GETs failed or were answered wrong (want 0): %s; first: %q", all.failed, all.n, all.tally, all.firstFailures)
	}
	if all.max > faultMaxLatency {
		t.Errorf("a GET took %v (started at %s from the freeze); want none over %v", ms(all.max), since(all.maxStart, freezeAt), faultMaxLatency)
	}
	if afterDetect.max >= faultAfterDetect {
		t.Errorf("a GET started at %s from the freeze took %v (%d of %d GETs started more than %v after the freeze took %v or more); want every one under %v",
			since(afterDetect.maxStart, freezeAt), ms(afterDetect.max), afterDetect.slowerThan(faultAfterDetect), afterDetect.n, faultDetect, faultAfterDetect, faultAfterDetect)
	}
	if !back.ok {
		t.Errorf("%s did not serve GETs through the gate again within 15 s of the thaw: %s", goods1.Name, back)
	}
}

// TestFrozenGoodsPurchase: with one of two goods instances frozen and the
// goods cache emptied, purchases (which then ask a goods instance for the
// good) all succeed, each within 3.5 s: first 6 at once, right after the
// freeze, then 4 one after the other.
func TestFrozenGoodsPurchase(t *testing.T) {
	f := newFleet(t, "")
	f.startDistributor()
	f.startGate()
	m1, m2 := freeAddr(t), freeAddr(t)
	goods1 := f.startService("goods", "--metrics-addr", m1)
	// purchases' balancer prefers the faster instance; goods#2 answers 20 ms
	// late, so that the lookups sent right after the freeze go to goods#1,
	// the frozen one.
	f.startService("goods", "--metrics-addr", m2, "--answer-delay", "20ms")
	f.startService("members")
	f.startService("purchases")
	f.waitNodes(map[string]int{"gate": 1, "goods": 2, "members": 1, "purchases": 1})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	f.pollStatus("/purchases?userid=1", http.StatusOK, startTimeout)
	userid := f.addMember(t, testenv.RandomName("frozen"), "password-frozen")
	warm := f.addGood(t, good{Name: "warm-up", Category: "c", Price: 1})
	goods := f.seedGoods(t, "frozen-buy", 10)
	ids := sortedIDs(goods)
	rc := f.redisClient()
	ctx := context.Background()
	forget := func(id int64) {
		t.Helper()
		if err := rc.Del(ctx, f.goodsKey(id)).Err(); err != nil {
			t.Fatalf("DEL %s: %v", f.goodsKey(id), err)
		}
		if n, err := rc.Exists(ctx, f.goodsKey(id)).Result(); err != nil || n != 0 {
			t.Fatalf("Redis key %s still there after DEL (exists=%d, err=%v)", f.goodsKey(id), n, err)
		}
	}

	// Warm-up: purchases of a good missing from the cache until both goods
	// instances have answered the purchases service's lookups.
	c1, c2 := mustServed(t, m1, "GET /goods"), mustServed(t, m2, "GET /goods")
	deadline := time.Now().Add(10 * time.Second)
	warmups := 0
	for {
		forget(warm)
		expect(t, "POST /purchases (warm-up)", f.buy(t, userid, warm), http.StatusOK)
		warmups++
		if mustServed(t, m1, "GET /goods") > c1 && mustServed(t, m2, "GET /goods") > c2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d purchases of a good missing from the cache, the purchases service had not asked both goods instances (%s %v→%v, goods#2 %v→%v)",
				warmups, goods1.Name, c1, mustServed(t, m1, "GET /goods"), c2, mustServed(t, m2, "GET /goods"))
		}
	}
	for _, id := range ids {
		forget(id)
	}

	before1 := mustServedAll(t, m1, "GET /goods")
	freezeAt := time.Now()
	goods1.Freeze(t)

	type outcome struct {
		id    int64
		wave  string
		start time.Duration // since the freeze
		took  time.Duration
		a     *answer
		err   error
	}
	buy := func(id int64, wave string) outcome {
		b, _ := json.Marshal(map[string]any{"userid": userid, "goodsid": id})
		start := time.Now()
		a, err := f.request("POST", "/purchases", "application/json", b)
		return outcome{id: id, wave: wave, start: start.Sub(freezeAt), took: time.Since(start), a: a, err: err}
	}
	var outcomes []outcome
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range ids[:6] { // at once, right after the freeze
		wg.Go(func() {
			o := buy(id, "at once")
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, id := range ids[6:] { // one after the other
		forget(id) // nothing should have cached it; make sure
		outcomes = append(outcomes, buy(id, "in turn"))
	}
	goods1.Thaw(t)
	reached := settledCount(t, m1, "GET /goods", before1)
	f.checkAlive()

	ok := 0
	for _, o := range outcomes {
		what := fmt.Sprintf("POST /purchases of good %d (%s, started %v after the freeze)", o.id, o.wave, o.start.Round(time.Millisecond))
		switch {
		case o.err != nil:
			t.Errorf("%s: %v after %v", what, o.err, o.took)
		case o.a.Status != http.StatusOK || o.a.ErrorCode == nil || *o.a.ErrorCode != 0 || o.a.ID == nil || *o.a.ID <= 0:
			t.Errorf("%s: %s after %v; want HTTP 200 with an id", what, o.a, o.took.Round(time.Millisecond))
		case o.took > faultMaxLatency:
			t.Errorf("%s: took %v; want at most %v", what, o.took.Round(time.Millisecond), faultMaxLatency)
		default:
			ok++
		}
		status := "error"
		if o.a != nil {
			status = strconv.Itoa(o.a.Status)
		}
		t.Logf("%s: %s in %v", what, status, o.took.Round(time.Millisecond))
	}
	// Whether some lookup went to the frozen instance: it handled it after
	// the thaw, or (a frozen instance may also drop what its silent callers
	// sent once it runs again) a purchase waited past the hedge delay.
	waited := 0
	for _, o := range outcomes {
		if o.took >= hedgeAfter {
			waited++
		}
	}
	t.Logf("%d of %d purchases succeeded within %v; %d took %v or more; %v goods lookups were handled by %s after the thaw",
		ok, len(outcomes), faultMaxLatency, waited, hedgeAfter, reached, goods1.Name)
	if reached == 0 && waited == 0 {
		t.Errorf("no purchase waited %v or more and %s handled no lookup after the thaw: no lookup went to the frozen instance, so the test did not exercise the fault", hedgeAfter, goods1.Name)
	}
	bought := map[int64]int{}
	for _, p := range f.purchases(t, userid) {
		bought[p.GoodsID]++
	}
	for _, o := range outcomes {
		if o.a != nil && o.a.Status == http.StatusOK && bought[o.id] != 1 {
			t.Errorf("good %d: answered 200 but GET /purchases lists it %d times; want once", o.id, bought[o.id])
		}
	}
}

// TestFrozenInstancePost: with one of two goods instances frozen, every
// POST /goods answers within 3.5 s, with 200 or with a 503 that says it "may
// or may not have been applied" (never a 504), and every POST started more
// than 2 s after the freeze answers 200.
func TestFrozenInstancePost(t *testing.T) {
	f := newFleet(t, "")
	f.startDistributor()
	f.startGate()
	m1, m2 := freeAddr(t), freeAddr(t)
	goods1 := f.startService("goods", "--metrics-addr", m1)
	// The gate's balancer prefers the faster instance; goods#2 answers 20 ms
	// late, so that the POSTs sent at once after the freeze go to goods#1,
	// the frozen one, until its stall shows.
	f.startService("goods", "--metrics-addr", m2, "--answer-delay", "20ms")
	f.waitNodes(map[string]int{"gate": 1, "goods": 2})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	// The gate is connected to both instances: each has answered it (GETs:
	// the balancer sends one to an instance left alone for a second).
	f.addGood(t, good{Name: "warm-up", Category: "c", Price: 1})
	c1, c2 := mustServed(t, m1, "GET /goods"), mustServed(t, m2, "GET /goods")
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; mustServed(t, m1, "GET /goods") <= c1 || mustServed(t, m2, "GET /goods") <= c2; i++ {
		f.get(t, "/goods?id=1")
		if time.Now().After(deadline) {
			t.Fatalf("after %d GET /goods, the gate had not sent one to each goods instance", i+1)
		}
		time.Sleep(50 * time.Millisecond)
	}

	before1 := mustServedAll(t, m1, "POST /goods")
	freezeAt := time.Now()
	goods1.Freeze(t)
	type outcome struct {
		n     int
		start time.Duration // since the freeze
		took  time.Duration
		a     *answer
		err   error
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		wg       sync.WaitGroup
	)
	post := func(n int) {
		b, _ := json.Marshal(map[string]any{"name": "posted " + strconv.Itoa(n), "category": "c", "price": n + 1})
		start := time.Now()
		a, err := f.request("POST", "/goods", "application/json", b)
		o := outcome{n: n, start: start.Sub(freezeAt), took: time.Since(start), a: a, err: err}
		mu.Lock()
		outcomes = append(outcomes, o)
		mu.Unlock()
	}
	n := 0
	for range 5 { // at once, right after the freeze
		k := n
		wg.Go(func() { post(k) })
		n++
	}
	for at := 400 * time.Millisecond; at <= 4*time.Second; at += 400 * time.Millisecond {
		time.Sleep(time.Until(freezeAt.Add(at)))
		k := n
		wg.Go(func() { post(k) })
		n++
	}
	wg.Wait()
	goods1.Thaw(t)
	reached := settledCount(t, m1, "POST /goods", before1)
	f.checkAlive()

	sort.Slice(outcomes, func(i, j int) bool { return outcomes[i].n < outcomes[j].n })
	counts := map[string]int{}
	for _, o := range outcomes {
		what := fmt.Sprintf("POST /goods #%d (started %v after the freeze)", o.n, o.start.Round(time.Millisecond))
		late := o.start > faultDetect
		var kind string
		switch {
		case o.err != nil:
			kind = "error"
			t.Errorf("%s: %v after %v", what, o.err, o.took)
		case o.a.Status == http.StatusOK && o.a.ID != nil && *o.a.ID > 0:
			kind = "200"
		case o.a.Status == http.StatusServiceUnavailable && o.a.ErrorMessage != nil && strings.Contains(*o.a.ErrorMessage, "may or may not have been applied"):
			kind = "503 may or may not"
			if late {
				t.Errorf("%s: %s; want 200: it started more than %v after the freeze", what, o.a, faultDetect)
			}
		default:
			kind = strconv.Itoa(o.a.Status)
			t.Errorf("%s: %s after %v; want 200, or 503 saying the POST \"may or may not have been applied\"", what, o.a, o.took.Round(time.Millisecond))
		}
		if o.err == nil && o.took > faultMaxLatency {
			t.Errorf("%s: took %v; want at most %v", what, o.took.Round(time.Millisecond), faultMaxLatency)
		}
		counts[kind]++
		t.Logf("%s: %s in %v", what, kind, o.took.Round(time.Millisecond))
	}
	t.Logf("outcomes of %d POSTs: %v; %v POSTs were handled by %s after the thaw", len(outcomes), counts, reached, goods1.Name)
	if counts["504"] > 0 {
		t.Errorf("%d POSTs answered 504; want none", counts["504"])
	}
	// Some POST went to the frozen instance: it was answered "may or may not
	// have been applied", or the instance handled it after the thaw (it may
	// also drop what its silent callers sent once it runs again).
	if reached == 0 && len(outcomes) == counts["200"] {
		t.Errorf("every POST answered 200 and %s handled none after the thaw: no POST went to the frozen instance, so the test did not exercise the fault", goods1.Name)
	}
}

// TestTwoDistributorsOneFrozen: the gate and goods#1 follow two
// distributors, A and B; while 8 clients loop GETs, A is frozen and goods#2
// starts, also following both. goods#2 serves through the gate within 4 s of
// its start, and every GET meanwhile succeeds.
func TestTwoDistributorsOneFrozen(t *testing.T) {
	f := newFleet(t, "")
	distA, addrA := f.startNamedDistributor("distributor A")
	_, addrB := f.startNamedDistributor("distributor B")
	f.distAddr = addrA + "," + addrB // --distributor of startGate and startService
	f.startGate("--log-level", "info")
	f.startService("goods")
	for _, d := range []struct{ name, addr string }{{"distributor A", addrA}, {"distributor B", addrB}} {
		f.waitListAt(d.name, d.addr, map[string]int{"gate": 1, "goods": 1}, 10*time.Second)
	}
	f.pollStatus("/goods", http.StatusOK, 10*time.Second)
	goods := f.seedGoods(t, "two-dist", 5)

	load := startGetLoad(f, loadClients, goods)
	defer load.stop()
	time.Sleep(time.Second) // under load
	frozenAt := time.Now()
	distA.Freeze(t)
	defer distA.Thaw(t)
	m2 := freeAddr(t)
	startAt := time.Now()
	goods2 := f.startService("goods", "--metrics-addr", m2)
	// Poll beyond the bound, to report when it did serve.
	servedAfter := time.Duration(-1)
	var last float64
	var lastErr error
	for deadline := startAt.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(pollEvery) {
		f.checkAlive()
		last, lastErr = served(m2, "GET /goods", time.Second)
		if lastErr == nil && last > 0 {
			servedAfter = time.Since(startAt)
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // the load goes on a little with goods#2 in rotation
	samples := load.stop()
	distA.Thaw(t)
	f.checkAlive()

	all := summarize(samples, time.Time{}, time.Now().Add(time.Hour))
	frozen := summarize(samples, frozenAt, time.Now().Add(time.Hour))
	t.Logf("GETs: %d in all, %d with distributor A frozen; failures %d; max latency %v", all.n, frozen.n, all.failed, all.max)
	if servedAfter < 0 {
		t.Errorf("%s (following %s) never served a GET through the gate within 10 s of its start, with distributor A frozen (its counter: %v, scrape error: %v); want within %v",
			goods2.Name, f.distAddr, last, lastErr, faultNewInstance)
	} else {
		t.Logf("%s served its first GET through the gate %v after its start", goods2.Name, servedAfter.Round(time.Millisecond))
		if servedAfter > faultNewInstance {
			t.Errorf("%s served its first GET through the gate %v after its start, with distributor A frozen; want within %v", goods2.Name, servedAfter.Round(time.Millisecond), faultNewInstance)
		}
	}
	if all.failed > 0 {
		t.Errorf("%d of %d GETs failed or were answered wrong (want 0): %s; first: %q", all.failed, all.n, all.tally, all.firstFailures)
	}
}

// TestSlowInstanceGetsLessTraffic: phase A, the fast goods instance alone
// under 8 clients for 3 s; phase B, a second instance that delays every
// answer by 50 ms (--answer-delay) joins it, 8 clients for 5 s. The slow
// instance answers less than 25% of phase B's requests, and phase B's p99 is
// under max(2 × phase A's, 45 ms): the route stays within twice the fast
// instance's own p99, measured under the same load on the same machine.
// Round robin would give the slow one 50% and a p99 of 50 ms or more.
//
// A p99 is at the mercy of whatever else the machine runs (CI runs test
// packages side by side): a spike on the fast instance rightly sends calls
// to the slow one for a moment. So the pair of phases is measured up to 3
// times, the slow instance stopped in between, and the p99 bound must hold
// in one of them; the share must hold in every one. Under the race
// detector, which slows every process several times over (the fast
// instance then nears the slow one's 50 ms), only the share is checked.
func TestSlowInstanceGetsLessTraffic(t *testing.T) {
	const delay = 50 * time.Millisecond
	f := newFleet(t, "")
	f.startDistributor()
	f.startGate("--log-level", "info")
	m1 := freeAddr(t)
	f.startService("goods", "--metrics-addr", m1)
	f.waitNodes(map[string]int{"gate": 1, "goods": 1})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	goods := f.seedGoods(t, "slow", 10)
	f.waitServing(t, "GET /goods", 10*time.Second, m1)

	attempts := 3
	if proctest.Race {
		attempts = 1
	}
	var results []string
	for attempt := 1; attempt <= attempts; attempt++ {
		pass := f.slowInstancePhases(t, attempt, goods, m1, delay)
		results = append(results, pass.String())
		if pass.ok || t.Failed() {
			return
		}
	}
	if proctest.Race {
		t.Logf("under the race detector the p99 bound is not checked, only the share: %v", results)
		return
	}
	t.Errorf("phase B's p99 was over its bound in every one of %d attempts: %v", attempts, results)
}

// slowPass is one attempt of TestSlowInstanceGetsLessTraffic.
type slowPass struct {
	a, b, bound time.Duration // phase A's and B's p99, B's bound
	ok          bool          // B's p99 under the bound
}

func (p slowPass) String() string { return fmt.Sprintf("A %v, B %v (bound %v)", p.a, p.b, p.bound) }

// slowInstancePhases runs phase A (goods#1 alone), starts a slow instance,
// runs phase B, stops the slow instance, and reports the p99s. The share
// and failures are checked here.
func (f *fleet) slowInstancePhases(t *testing.T, attempt int, goods map[int64]string, m1 string, delay time.Duration) slowPass {
	load := startGetLoad(f, loadClients, goods)
	time.Sleep(3 * time.Second)
	phaseA := summarize(load.stop(), time.Time{}, time.Now().Add(time.Hour))
	t.Logf("attempt %d, phase A (goods#1 alone, 3 s): %d GETs, p99 %v, max %v", attempt, phaseA.n, phaseA.p99, phaseA.max)
	if phaseA.failed > 0 {
		t.Fatalf("phase A: %d of %d GETs failed or were answered wrong: %s; first: %q", phaseA.failed, phaseA.n, phaseA.tally, phaseA.firstFailures)
	}

	// A slow instance joins it.
	m3 := freeAddr(t)
	slow := f.startService("goods", "--answer-delay", delay.String(), "--metrics-addr", m3)
	slow.Name = fmt.Sprintf("goods#slow%d", attempt)
	f.waitNodes(map[string]int{"goods": 2})
	// The hook works: a request straight to it takes the delay.
	peer := dialRaw(t, f.listenAddr(slow))
	start := time.Now()
	peer.write(t, `{"uri":"/goods","method":"GET","key":1,"params":{"key":1}}¶`)
	for {
		var r response
		if json.Unmarshal(peer.read(t, 5*time.Second), &r) == nil && string(r.Key) == "1" && r.ErrorCode != nil {
			break // the answer (and not some other packet)
		}
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("%s with --answer-delay %v answered a GET straight to it in %v", slow.Name, delay, took)
	}
	f.waitServing(t, "GET /goods", 10*time.Second, m3)

	// Phase B: one fast, one slow.
	b1, b3 := mustServed(t, m1, "GET /goods"), mustServed(t, m3, "GET /goods")
	load = startGetLoad(f, loadClients, goods)
	time.Sleep(5 * time.Second)
	phaseB := summarize(load.stop(), time.Time{}, time.Now().Add(time.Hour))
	db1, db3 := mustServed(t, m1, "GET /goods")-b1, mustServed(t, m3, "GET /goods")-b3
	share := 0.0
	if db1+db3 > 0 {
		share = db3 / (db1 + db3)
	}
	bound := max(2*phaseA.p99, 45*time.Millisecond)
	t.Logf("attempt %d, phase B (goods#1 fast, %s slow by %v, 5 s): %d GETs, p99 %v, max %v; goods#1 answered %v, the slow one %v: its share %.1f%%",
		attempt, slow.Name, delay, phaseB.n, phaseB.p99, phaseB.max, db1, db3, 100*share)
	t.Logf("attempt %d, p99: phase A (the fast instance alone) %v, phase B %v, ratio B/A %.2f; bound max(2 × A, 45ms) = %v",
		attempt, phaseA.p99, phaseB.p99, float64(phaseB.p99)/float64(max(phaseA.p99, 1)), bound)
	if phaseB.failed > 0 {
		t.Errorf("phase B: %d of %d GETs failed or were answered wrong: %s; first: %q", phaseB.failed, phaseB.n, phaseB.tally, phaseB.firstFailures)
	}
	if db1+db3 == 0 {
		t.Errorf("phase B: neither goods instance counted a GET")
	} else if share >= 0.25 {
		t.Errorf("the slow instance answered %.1f%% of phase B's GETs (%v of %v); want less than 25%%", 100*share, db3, db1+db3)
	}
	f.stopService(t, slow)
	f.waitNodes(map[string]int{"goods": 1})
	return slowPass{a: phaseA.p99, b: phaseB.p99, bound: bound, ok: !proctest.Race && phaseB.p99 < bound}
}

// stopService stops p (SIGTERM) before the end of the test, and takes it
// out of the fleet, whose cleanup would take its exit for a crash.
func (f *fleet) stopService(t *testing.T, p *proc) {
	t.Helper()
	f.mu.Lock()
	f.procs = slices.DeleteFunc(f.procs, func(q *proc) bool { return q == p })
	f.mu.Unlock()
	if err := p.Stop(stopTimeout); err != nil {
		t.Errorf("%s: %v; output:\n%s", p.Name, err, p.LogTail(8<<10))
	}
}

// TestLastInstanceKilled503: once the only goods instance is killed and the
// distributor has dropped it, GET /goods answers 503 (the route was listed;
// no instance is alive), a route never listed stays 404, and a new goods
// instance serves GET /goods within 10 s of its start.
func TestLastInstanceKilled503(t *testing.T) {
	f := newFleet(t, "")
	f.startDistributor()
	f.startGate()
	goods1 := f.startService("goods")
	f.waitNodes(map[string]int{"gate": 1, "goods": 1})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	expect(t, "GET /goods", f.get(t, "/goods"), http.StatusOK)

	goods1.Kill(t)
	f.waitNodes(map[string]int{"gate": 1, "goods": 0})
	// The gate hears the same list as the watcher: poll, bounded, until it
	// has answered 503 five times in a row. It must never answer 404.
	const inARow = 5
	var statuses []int
	var last *answer
	for deadline, row := time.Now().Add(3*time.Second), 0; row < inARow; time.Sleep(pollEvery) {
		last = f.get(t, "/goods")
		statuses = append(statuses, last.Status)
		switch last.Status {
		case http.StatusServiceUnavailable:
			row++
		case http.StatusNotFound:
			t.Fatalf("GET /goods with its only instance killed and dropped from the list: %s; want 503 (the route was listed, no instance is alive), not 404 (statuses so far: %v)", last, statuses)
		default:
			row = 0
		}
		if row < inARow && time.Now().After(deadline) {
			t.Fatalf("GET /goods never answered 503 %d times in a row within 3 s of the distributor dropping its only instance; statuses: %v; last: %s", inARow, statuses, last)
		}
	}
	expect(t, "GET /goods with no instance alive", last, http.StatusServiceUnavailable)
	t.Logf("GET /goods with no instance: %s (statuses: %v)", last, statuses)
	expect(t, "GET /nowhere (never listed)", f.get(t, "/nowhere"), http.StatusNotFound)
	expect(t, "PUT /goods (a known path, a method never listed)", f.send(t, "PUT", "/goods", "application/json", []byte(`{}`)), http.StatusMethodNotAllowed)

	startAt := time.Now()
	f.startService("goods")
	f.pollStatus("/goods", http.StatusOK, 10*time.Second)
	t.Logf("a new goods instance served GET /goods %v after its start", time.Since(startAt).Round(time.Millisecond))
}

// ─── helpers ─────────────────────────────────────────────────────────────

func freeAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
}

// startNamedDistributor starts a distributor called name on a free port and
// waits until it accepts; f.distAddr is left alone.
func (f *fleet) startNamedDistributor(name string) (*proc, string) {
	f.t.Helper()
	addr := freeAddr(f.t)
	p := f.start(name, "distributor", "--addr", addr, "--log-level", "debug", "--fleet-key", "none")
	f.waitDial(addr, p)
	return p, addr
}

// waitListAt is waitNodes against the distributor called name at addr, with
// a timeout.
func (f *fleet) waitListAt(name, addr string, want map[string]int, timeout time.Duration) {
	f.t.Helper()
	nodes, err := watchList(addr, timeout, f.checkAlive, func(nodes []node) bool {
		got := countNames(nodes)
		for name, n := range want {
			if got[name] != n {
				return false
			}
		}
		return true
	})
	if err != nil {
		f.checkAlive()
		f.t.Fatalf("%s (%s) never listed %v within %v, with every process given --distributor %s: %v (last list: %+v)", name, addr, want, timeout, f.distAddr, err, nodes)
	}
}

// seedGoods adds n goods named "prefix N" and returns their names by id.
func (f *fleet) seedGoods(t *testing.T, prefix string, n int) map[int64]string {
	t.Helper()
	goods := map[int64]string{}
	for i := range n {
		name := fmt.Sprintf("%s %d", prefix, i)
		goods[f.addGood(t, good{Name: name, Category: "c", Price: int64(i + 1)})] = name
	}
	return goods
}

func sortedIDs(goods map[int64]string) []int64 {
	ids := make([]int64, 0, len(goods))
	for id := range goods {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ─── load ────────────────────────────────────────────────────────────────

// getSample is one GET of a load.
type getSample struct {
	start time.Time
	took  time.Duration
	fail  string // why the answer was wrong; empty when it was right
}

// getLoad is clients looping GET /goods?id=N through the gate, N cycling
// over the goods, each answer checked.
type getLoad struct {
	stopc   chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	done    atomic.Int64
	mu      sync.Mutex
	samples []getSample
}

func startGetLoad(f *fleet, clients int, goods map[int64]string) *getLoad {
	ids := sortedIDs(goods)
	l := &getLoad{stopc: make(chan struct{})}
	for w := range clients {
		l.wg.Go(func() {
			var mine []getSample
			defer func() {
				l.mu.Lock()
				l.samples = append(l.samples, mine...)
				l.mu.Unlock()
			}()
			for i := w; ; i++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				id := ids[i%len(ids)]
				start := time.Now()
				a, err := f.request("GET", "/goods?id="+strconv.FormatInt(id, 10), "", nil)
				mine = append(mine, getSample{start: start, took: time.Since(start), fail: checkGood(a, err, id, goods[id])})
				l.done.Add(1)
			}
		})
	}
	return l
}

// count is how many GETs have completed so far.
func (l *getLoad) count() int64 { return l.done.Load() }

// stop ends the load and returns every GET, in the order they started. It
// may be called more than once.
func (l *getLoad) stop() []getSample {
	l.once.Do(func() { close(l.stopc) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.SortFunc(l.samples, func(a, b getSample) int { return a.start.Compare(b.start) })
	return l.samples
}

// checkGood says what is wrong with the answer to GET /goods?id=id, or "".
func checkGood(a *answer, err error, id int64, name string) string {
	if err != nil {
		return err.Error()
	}
	if a.Status != http.StatusOK || a.ErrorCode == nil || *a.ErrorCode != 0 {
		return shorten(a.String(), 200)
	}
	var gs []good
	if json.Unmarshal(a.Results, &gs) != nil || len(gs) != 1 || gs[0].ID != id || gs[0].Name != name {
		return fmt.Sprintf("want exactly good %d %q: %s", id, name, shorten(a.String(), 200))
	}
	return ""
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// loadSummary sums up the samples that started in a window.
type loadSummary struct {
	n, failed     int
	max, p99      time.Duration
	maxStart      time.Time // when the slowest one started
	tally         string    // failures by kind
	firstFailures []string
	took          []time.Duration
}

func summarize(samples []getSample, from, to time.Time) loadSummary {
	var s loadSummary
	kinds := map[string]int{}
	for _, x := range samples {
		if x.start.Before(from) || !x.start.Before(to) {
			continue
		}
		s.n++
		s.took = append(s.took, x.took)
		if x.took > s.max {
			s.max, s.maxStart = x.took, x.start
		}
		if x.fail != "" {
			s.failed++
			kinds[failureKind(x.fail)]++
			if len(s.firstFailures) < 5 {
				s.firstFailures = append(s.firstFailures, x.fail)
			}
		}
	}
	s.p99 = percentile(s.took, 0.99)
	var parts []string
	for k, n := range kinds {
		parts = append(parts, fmt.Sprintf("%d× %s", n, k))
	}
	sort.Strings(parts)
	s.tally = strings.Join(parts, ", ")
	return s
}

// slowerThan counts the samples that took d or more.
func (s loadSummary) slowerThan(d time.Duration) int {
	n := 0
	for _, x := range s.took {
		if x >= d {
			n++
		}
	}
	return n
}

// failureKind is "HTTP 504" and the like for an answer, the message itself
// otherwise.
func failureKind(fail string) string {
	if strings.HasPrefix(fail, "HTTP ") && len(fail) >= 8 {
		return fail[:8]
	}
	if strings.HasPrefix(fail, "want exactly") {
		return "wrong good"
	}
	return shorten(fail, 60)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ─── metrics ─────────────────────────────────────────────────────────────

// scrapeWithin is scrape with a timeout and an error: a frozen process's
// kernel accepts the connection, and nothing answers.
func scrapeWithin(addr string, timeout time.Duration) (map[string]*dto.MetricFamily, error) {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", addr, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// sumOf sums every series of family name that has the label pairs given.
func sumOf(m map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	fam := m[name]
	if fam == nil {
		return 0
	}
	sum := 0.0
next:
	for _, mt := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range mt.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		if mt.Counter != nil {
			sum += mt.Counter.GetValue()
		}
	}
	return sum
}

// served is how many requests of route (as "GET /goods") the goods service at
// metrics address addr has answered successfully (code 0).
func served(addr, route string, timeout time.Duration) (float64, error) {
	m, err := scrapeWithin(addr, timeout)
	if err != nil {
		return 0, err
	}
	return value(m, "microshop_service_requests_total", "service", "goods", "route", route, "code", "0"), nil
}

// servedAll is served counting every answer, errors too.
func servedAll(addr, route string, timeout time.Duration) (float64, error) {
	m, err := scrapeWithin(addr, timeout)
	if err != nil {
		return 0, err
	}
	return sumOf(m, "microshop_service_requests_total", "service", "goods", "route", route), nil
}

func mustServed(t *testing.T, addr, route string) float64 {
	t.Helper()
	n, err := served(addr, route, 5*time.Second)
	if err != nil {
		t.Fatalf("metrics of %s: %v", addr, err)
	}
	return n
}

func mustServedAll(t *testing.T, addr, route string) float64 {
	t.Helper()
	n, err := servedAll(addr, route, 5*time.Second)
	if err != nil {
		t.Fatalf("metrics of %s: %v", addr, err)
	}
	return n
}

// waitServing sends GET /goods through the gate until every goods instance
// of addrs (metrics addresses) has answered at least one more route request.
func (f *fleet) waitServing(t *testing.T, route string, timeout time.Duration, addrs ...string) {
	t.Helper()
	base := make([]float64, len(addrs))
	deadline := time.Now().Add(timeout)
	for i, a := range addrs {
		for {
			n, err := served(a, route, time.Second)
			if err == nil {
				base[i] = n
				break
			}
			f.checkAlive()
			if time.Now().After(deadline) {
				t.Fatalf("metrics of %s: %v", a, err)
			}
			time.Sleep(pollEvery)
		}
	}
	for {
		f.request("GET", "/goods", "", nil)
		missing := ""
		for i, a := range addrs {
			if n, err := served(a, route, time.Second); err != nil || n <= base[i] {
				missing = a
				break
			}
		}
		if missing == "" {
			return
		}
		f.checkAlive()
		if time.Now().After(deadline) {
			t.Fatalf("the goods instance with metrics on %s answered no %s from the gate within %v", missing, route, timeout)
		}
		time.Sleep(pollEvery)
	}
}

// settledCount waits (at most 3 s) until the counters of route at addr, all
// codes, have not moved for 200 ms, and returns how far they went past
// before: after a thaw, the requests a frozen instance was sent.
func settledCount(t *testing.T, addr, route string, before float64) float64 {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	last, err := servedAll(addr, route, 3*time.Second)
	if err != nil {
		t.Fatalf("metrics of %s after the thaw: %v", addr, err)
	}
	still := time.Now()
	for time.Since(still) < 200*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
		n, err := servedAll(addr, route, time.Second)
		if err != nil {
			t.Fatalf("metrics of %s after the thaw: %v", addr, err)
		}
		if n != last {
			last, still = n, time.Now()
		}
	}
	return last - before
}

// backInRotation tells when a thawed instance served again.
type backInRotation struct {
	ok        bool
	firstSeen time.Duration // the first scrape answered, since the thaw
	atFirst   float64       // GETs answered between the freeze and that scrape
	settled   bool          // the counter stood still for 100 ms before moving again
	still     time.Duration // when it was taken to stand still (or 500 ms after firstSeen), since the thaw
	backlog   float64       // GETs answered between the freeze and then: those it read from its socket after the thaw
	serving   time.Duration // the first answer after that, since the thaw
	last      string
}

func (b backInRotation) String() string {
	if !b.ok {
		return fmt.Sprintf("not serving again (%s)", b.last)
	}
	if !b.settled {
		return fmt.Sprintf("after the thaw it answered its metrics scrape at +%v (%v GETs answered since the freeze by then), and its counter never stood still for 100 ms: %v by +%v, more at +%v (time to serve again: at most %v; the backlog of GETs sent while frozen cannot be told apart)",
			ms(b.firstSeen), b.atFirst, b.backlog, ms(b.still), ms(b.serving), ms(b.serving))
	}
	return fmt.Sprintf("after the thaw it answered its metrics scrape at +%v (%v GETs answered since the freeze by then), its counter stood still at %v since the freeze from +%v (what it read from its socket after the thaw), and it answered a new GET at +%v (time to serve again: %v)",
		ms(b.firstSeen), b.atFirst, b.backlog, ms(b.still), ms(b.serving), ms(b.serving))
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// since formats when t happened relative to ref: "+1.2s" or "-8ms".
func since(t, ref time.Time) string {
	d := ms(t.Sub(ref))
	if d < 0 {
		return d.String()
	}
	return "+" + d.String()
}

// waitBackInRotation waits until the goods instance with metrics on addr,
// thawed at thawAt, answers route requests again (before: its counter just
// before the freeze). The requests it was sent before it was marked down
// are still in its socket, and may be answered as soon as it runs: they are
// the backlog, taken to be over once its counter has not moved for 100 ms
// (or 500 ms after its first scrape); only an answer after that counts as
// serving again.
func waitBackInRotation(t *testing.T, addr, route string, before float64, thawAt time.Time, timeout time.Duration) backInRotation {
	t.Helper()
	deadline := thawAt.Add(timeout)
	var b backInRotation
	var first float64
	for {
		n, err := served(addr, route, time.Second)
		if err == nil {
			first = n
			break
		}
		if time.Now().After(deadline) {
			b.last = "its metrics never answered: " + err.Error()
			return b
		}
		time.Sleep(pollEvery)
	}
	b.firstSeen, b.atFirst = time.Since(thawAt), first-before
	firstAt := time.Now()
	last, still := first, time.Now()
	for {
		if time.Since(still) >= 100*time.Millisecond {
			b.settled = true
			break
		}
		if time.Since(firstAt) >= 500*time.Millisecond {
			break
		}
		time.Sleep(pollEvery)
		if n, err := served(addr, route, time.Second); err == nil && n != last {
			last, still = n, time.Now()
		}
	}
	b.still, b.backlog = time.Since(thawAt), last-before
	for {
		n, err := served(addr, route, time.Second)
		if err == nil && n > last {
			b.ok = true
			b.serving = time.Since(thawAt)
			return b
		}
		if time.Now().After(deadline) {
			b.last = fmt.Sprintf("its %s counter stayed at %v from +%v to +%v after the thaw (err %v)", route, last, ms(b.still), timeout, err)
			return b
		}
		time.Sleep(pollEvery)
	}
}
