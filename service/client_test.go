package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/internal/faultnet"
	"github.com/microshop/microshop/service"
)

// hb is the heartbeat timeout of these tests.
const hb = 300 * time.Millisecond

// instance is a who service on a listener that the test can freeze, as
// SIGSTOP freezes a process; posts counts the POST /who it handled.
type instance struct {
	ln    *faultnet.Listener
	posts atomic.Int64
}

func startFreezable(t *testing.T, dist, id string, heartbeat time.Duration) *instance {
	t.Helper()
	ln, err := faultnet.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{ln: ln}
	routes := map[string]service.Handler{
		"GET/who": func(ctx context.Context, r *service.Request) (service.Result, error) {
			if d, _ := r.Params.IntDefault("sleep", 0); d > 0 {
				time.Sleep(time.Duration(d) * time.Millisecond)
			}
			return service.Result{"id": id}, nil
		},
		"POST/who": func(ctx context.Context, r *service.Request) (service.Result, error) {
			in.posts.Add(1)
			return service.Result{"id": id}, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv := service.NewServer(service.Config{Name: "who", Routes: routes, Distributors: []string{dist}, DrainTimeout: time.Second, Heartbeat: heartbeat})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	t.Cleanup(func() { ln.Thaw(); cancel(); <-done })
	return in
}

// newFaultClient follows dist's list with heartbeats, hedging after hedge
// (0: off).
func newFaultClient(t *testing.T, dist string, hedge time.Duration) *service.Client {
	t.Helper()
	c := service.NewClient(service.ClientConfig{RequestTimeout: 5 * time.Second, Heartbeat: hb, HedgeAfter: hedge})
	ctx, cancel := context.WithCancel(context.Background())
	dc := distributor.NewClient(distributor.ClientConfig{Addrs: []string{dist}, OnChange: c.Update, RetryInterval: 50 * time.Millisecond, Heartbeat: hb})
	done := make(chan struct{})
	go func() { defer close(done); dc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	return c
}

// callWho calls "METHOD /who", bounded by the client's RequestTimeout.
func callWho(c *service.Client, method, params string) (string, error) {
	m, err := c.Call(context.Background(), method, "/who", []byte(params))
	if err != nil {
		return "", err
	}
	var body struct {
		ID string `json:"id"`
	}
	json.Unmarshal(m.Raw, &body)
	return body.ID, nil
}

// startedDistributor is startDistributor with no settle period.
func startedDistributor(t *testing.T) string {
	t.Helper()
	ln := listen(t, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d := distributor.NewServer(nil, 0)
	d.Settle = 0
	d.Heartbeat = hb
	go func() { defer close(done); d.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// A frozen instance that heartbeats is marked down within the heartbeat
// timeout: its GETs in flight are sent again to the other instance, its
// POSTs fail with ErrInstanceLost and are not sent again, and it is out of
// rotation until it answers again.
func TestFrozenInstanceFailsOver(t *testing.T) {
	dist := startedDistributor(t)
	a := startFreezable(t, dist, "a", hb)
	b := startFreezable(t, dist, "b", hb)
	c := newFaultClient(t, dist, 0) // no hedging: the failover alone
	waitFor(t, 5*time.Second, "both instances answer", func() bool { return len(distinct(t, c, 8)) == 2 })

	b.ln.Freeze()
	frozen := time.Now()
	type result struct {
		method, id string
		err        error
		took       time.Duration
	}
	results := make(chan result, 40)
	var wg sync.WaitGroup
	for i := range 40 {
		method := "GET"
		if i%4 == 0 {
			method = "POST"
		}
		wg.Go(func() {
			start := time.Now()
			id, err := callWho(c, method, `{"sleep":5}`)
			results <- result{method, id, err, time.Since(start)}
		})
	}
	wg.Wait()
	close(results)
	lostPosts := 0
	for r := range results {
		switch {
		case r.method == "GET" && (r.err != nil || r.id != "a"):
			t.Errorf("GET during the freeze: %q, %v; want answered by a", r.id, r.err)
		case r.method == "POST" && r.err != nil:
			if !errors.Is(r.err, service.ErrInstanceLost) {
				t.Errorf("POST during the freeze: %v; want ErrInstanceLost or an answer", r.err)
			}
			lostPosts++
		}
		if r.took > 3*hb {
			t.Errorf("a %s took %v; want it answered or failed within about the heartbeat timeout %v", r.method, r.took, hb)
		}
	}
	detected := time.Since(frozen)
	t.Logf("freeze noticed, and every call answered or failed over, %v after it began; %d POSTs failed as lost", detected.Round(time.Millisecond), lostPosts)
	if posts := b.posts.Load(); posts != 0 {
		t.Fatalf("the frozen instance handled %d POSTs", posts)
	}
	// Marked down: calls no longer go to b at all.
	for range 20 {
		if id, err := callWho(c, "GET", ""); err != nil || id != "a" {
			t.Fatalf("GET after the freeze was noticed: %q, %v; want a", id, err)
		}
	}
	// The POSTs lost with b were never applied twice: after the thaw, b
	// reads them from its socket but can no longer answer, and a never got
	// them.
	b.ln.Thaw()
	waitFor(t, 10*time.Second, "the thawed instance serves again", func() bool { return distinct(t, c, 8)["b"] > 0 })
	if got, want := a.posts.Load()+b.posts.Load(), int64(10-lostPosts); got > 10 || got < want {
		t.Fatalf("%d POSTs were handled; want %d to 10 (each at most once)", got, want)
	}
}

// A GET to a frozen instance is hedged: the other instance's answer comes
// long before the freeze is noticed.
func TestHedgedGetBeatsAFrozenInstance(t *testing.T) {
	dist := startedDistributor(t)
	startFreezable(t, dist, "a", hb)
	b := startFreezable(t, dist, "b", hb)
	c := service.NewClient(service.ClientConfig{RequestTimeout: 5 * time.Second, Heartbeat: 10 * time.Second, HedgeAfter: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	dc := distributor.NewClient(distributor.ClientConfig{Addrs: []string{dist}, OnChange: c.Update, RetryInterval: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); dc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	waitFor(t, 5*time.Second, "both instances answer", func() bool { return len(distinct(t, c, 8)) == 2 })
	b.ln.Freeze()
	for i := range 10 {
		start := time.Now()
		id, err := callWho(c, "GET", "")
		if err != nil || id != "a" {
			t.Fatalf("GET %d with b frozen: %q, %v; want a's answer", i, id, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("GET %d took %v; a hedge after 20ms should have been answered long before the 10s heartbeat timeout", i, took)
		}
	}
}

// A process that never heartbeats (a book peer) and stops answering is
// ejected after calls in a row time out, and re-admitted once a probe is
// answered. Meanwhile hedges answer every GET.
func TestSilentBookPeerIsEjectedAndReadmitted(t *testing.T) {
	dist := startedDistributor(t)
	startFreezable(t, dist, "a", 0)
	b := startFreezable(t, dist, "b", 0) // no heartbeat: judged by its answers
	c := service.NewClient(service.ClientConfig{RequestTimeout: 200 * time.Millisecond, HedgeAfter: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	dc := distributor.NewClient(distributor.ClientConfig{Addrs: []string{dist}, OnChange: c.Update, RetryInterval: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); dc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	waitFor(t, 5*time.Second, "both instances answer", func() bool { return len(distinct(t, c, 8)) == 2 })
	bAddr := b.ln.Addr().String() // as the distributor lists it: the address it sees

	b.ln.Freeze()
	frozen := time.Now()
	// GETs go on; once a second one explores b (its answer would refresh
	// what the balancer knows), is hedged to a, and times out on b.
	for !c.Ejected(bAddr) {
		if id, err := callWho(c, "GET", ""); err != nil || id != "a" {
			t.Fatalf("GET with b frozen: %q, %v; want a's answer (hedged)", id, err)
		}
		if time.Since(frozen) > 20*time.Second {
			t.Fatal("b was not ejected within 20s of its freeze")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("b ejected %v after its freeze", time.Since(frozen).Round(time.Millisecond))
	// Instances reports it: both listed and connected, b ejected, a not.
	got := c.Instances()
	ok := len(got) == 2
	for _, in := range got {
		ok = ok && in.Up && in.Ejected == (in.Addr == bAddr)
	}
	if !ok {
		t.Errorf("Instances() with b (%s) ejected = %+v", bAddr, got)
	}
	b.ln.Thaw()
	waitFor(t, 10*time.Second, "b is probed and re-admitted", func() bool { return !c.Ejected(bAddr) })
	waitFor(t, 5*time.Second, "b answers again", func() bool { return distinct(t, c, 8)["b"] > 0 })
}

// A route that was listed and lost its last instance fails with
// ErrNoInstance (the gate's 503); one never listed with ErrNoRoute (404).
func TestKnownRouteWithoutInstance(t *testing.T) {
	c := service.NewClient(service.ClientConfig{RequestTimeout: time.Second})
	defer c.Close()
	c.Update([]distributor.Node{{Name: "who", Host: "127.0.0.1", Port: 1, URLs: []string{"GET/who"}}})
	c.Update(nil)
	if _, err := c.Call(context.Background(), "GET", "/who", nil); !errors.Is(err, service.ErrNoInstance) {
		t.Fatalf("Call to a route that lost its instances = %v; want ErrNoInstance", err)
	}
	if _, err := c.Call(context.Background(), "GET", "/never", nil); !errors.Is(err, service.ErrNoRoute) {
		t.Fatalf("Call to a route never listed = %v; want ErrNoRoute", err)
	}
	if !c.Known("GET", "/who") || c.Has("GET", "/who") || c.Known("GET", "/never") {
		t.Fatalf("Known/Has wrong: Known(/who)=%v Has(/who)=%v Known(/never)=%v", c.Known("GET", "/who"), c.Has("GET", "/who"), c.Known("GET", "/never"))
	}
}

// Calls whose caller gives up (an HTTP client that went away) say nothing
// about the instance: however many, they never eject it.
func TestCanceledCallsDoNotEject(t *testing.T) {
	dist := startedDistributor(t)
	a := startFreezable(t, dist, "a", hb)
	c := newFaultClient(t, dist, 0)
	waitFor(t, 5*time.Second, "the instance answers", func() bool { return len(distinct(t, c, 2)) == 1 })
	addr := a.ln.Addr().String() // as the distributor lists it: the address it sees
	for range 10 {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(5 * time.Millisecond); cancel() }()
		if _, err := c.Call(ctx, "GET", "/who", []byte(`{"sleep":200}`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled call = %v; want context.Canceled", err)
		}
	}
	if c.Ejected(addr) {
		t.Fatal("the instance was ejected for calls its callers canceled")
	}
}

// A client with IdentitiesOnly (a gate that checks tokens) sends nothing to
// a process that does not say it enforces identities (the book's
// services): a route served only by such is ErrNotEnforcing, one also
// served by a microshop instance goes to that instance only.
func TestIdentitiesOnly(t *testing.T) {
	dist := startedDistributor(t)
	startFreezable(t, dist, "microshop", hb) // service.Server registers with Identities
	c := service.NewClient(service.ClientConfig{RequestTimeout: 2 * time.Second, IdentitiesOnly: true})
	defer c.Close()
	book := distributor.Node{Name: "who", Host: "127.0.0.1", Port: 1, URLs: []string{"GET/who", "GET/book"}} // nothing listens on port 1
	lists := make(chan []distributor.Node, 16)
	watcher := distributor.NewClient(distributor.ClientConfig{Addrs: []string{dist}, OnChange: func(n []distributor.Node) {
		select {
		case lists <- n:
		default:
		}
	}, RetryInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); watcher.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var nodes []distributor.Node
	for timeout := time.After(5 * time.Second); len(nodes) == 0; {
		select {
		case nodes = <-lists:
		case <-timeout:
			t.Fatal("no list with the microshop instance within 5 s")
		}
	}
	if len(nodes) != 1 || !nodes[0].Identities {
		t.Fatalf("the distributor lists %+v; want the microshop instance, with identities", nodes)
	}
	c.Update(append([]distributor.Node{book}, nodes...))
	if _, err := c.Call(context.Background(), "GET", "/book", nil); !errors.Is(err, service.ErrNotEnforcing) {
		t.Fatalf("Call to a route only a book service serves = %v; want ErrNotEnforcing", err)
	}
	if !c.Known("GET", "/book") {
		t.Fatal("a route listed by a book service only is not Known (a 404 instead of a 503)")
	}
	for i := range 20 {
		if who, err := callWho(c, "GET", "{}"); err != nil || who != "microshop" {
			t.Fatalf("GET /who #%d = %q, %v; want the microshop instance every time", i, who, err)
		}
	}
}
