package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startDistributor runs a registry on addr until the returned stop is called.
func startDistributor(t *testing.T, addr string) (string, func()) {
	t.Helper()
	ln := listen(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); distributor.NewServer(nil, 0).Serve(ctx, ln) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// startService runs a service named name whose GET/who answers its id.
func startService(t *testing.T, dist, name, id string, extra map[string]service.Handler) (stop func()) {
	t.Helper()
	routes := map[string]service.Handler{
		"GET/who": func(ctx context.Context, r *service.Request) (service.Result, error) {
			if d, _ := r.Params.IntDefault("sleep", 0); d > 0 {
				time.Sleep(time.Duration(d) * time.Millisecond)
			}
			return service.Result{"id": id}, nil
		},
	}
	for k, v := range extra {
		routes[k] = v
	}
	ln := listen(t, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv := service.NewServer(service.Config{Name: name, Routes: routes, Distributors: []string{dist}, DrainTimeout: 2 * time.Second})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// newClient follows dist's list.
func newClient(t *testing.T, dist string) *service.Client {
	t.Helper()
	r := service.NewClient(service.ClientConfig{RequestTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	dc := distributor.NewClient(distributor.ClientConfig{Addrs: []string{dist}, OnChange: r.Update, RetryInterval: 100 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); dc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; r.Close() })
	return r
}

func who(t *testing.T, r *service.Client, params string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := r.Call(ctx, "GET", "/who", []byte(params))
	if err != nil {
		return "", err
	}
	var body struct {
		ID        string `json:"id"`
		ErrorCode int    `json:"errorcode"`
	}
	if err := json.Unmarshal(m.Raw, &body); err != nil || body.ErrorCode != 0 {
		t.Fatalf("answer %s (%v); want errorcode 0", m.Raw, err)
	}
	return body.ID, nil
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connectedInstances counts distinct ids answering GET /who.
func distinct(t *testing.T, r *service.Client, n int) map[string]int {
	seen := map[string]int{}
	for range n {
		if id, err := who(t, r, ""); err == nil {
			seen[id]++
		}
	}
	return seen
}

func TestBalancingAndInstanceLoss(t *testing.T) {
	dist, _ := startDistributor(t, "127.0.0.1:0")
	stopA := startService(t, dist, "who", "a", nil)
	startService(t, dist, "who", "b", nil)
	r := newClient(t, dist)
	waitFor(t, 5*time.Second, "both instances answer", func() bool { return len(distinct(t, r, 4)) == 2 })

	// Two equally fast instances share concurrent calls: the balancer
	// weighs calls in flight (balance_test.go checks the shares exactly).
	var mu sync.Mutex
	seen := map[string]int{}
	var workers sync.WaitGroup
	for range 4 {
		workers.Go(func() {
			for range 100 {
				if id, err := who(t, r, `{"sleep":1}`); err == nil {
					mu.Lock()
					seen[id]++
					mu.Unlock()
				}
			}
		})
	}
	workers.Wait()
	if seen["a"] < 40 || seen["b"] < 40 {
		t.Fatalf("400 concurrent calls were spread %v; want each instance to get at least 40", seen)
	}

	// Calls in flight on a that dies fail at once and, being GETs, are
	// retried on b.
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := who(t, r, `{"sleep":300}`); err != nil {
				failed.Add(1)
				t.Errorf("GET during instance loss: %v", err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // let the calls get in flight
	stopA()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d GETs failed while an instance left", failed.Load())
	}
	if seen := distinct(t, r, 10); seen["b"] != 10 {
		t.Fatalf("after a left, answers came from %v; want only b", seen)
	}
}

func TestNoRouteNoInstanceAndTimeout(t *testing.T) {
	dist, _ := startDistributor(t, "127.0.0.1:0")
	startService(t, dist, "who", "a", nil)
	r := service.NewClient(service.ClientConfig{RequestTimeout: 200 * time.Millisecond})
	defer r.Close()
	if _, err := r.Call(context.Background(), "GET", "/who", nil); !errors.Is(err, service.ErrNoRoute) {
		t.Fatalf("Call before any list = %v; want ErrNoRoute", err)
	}
	// A listed instance nobody can connect to: no instance.
	ln := listen(t, "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r.Update([]distributor.Node{{Name: "ghost", Host: "::ffff:127.0.0.1", Port: port, URLs: []string{"GET/ghost"}}})
	if _, err := r.Call(context.Background(), "GET", "/ghost", nil); !errors.Is(err, service.ErrNoInstance) {
		t.Fatalf("Call to unreachable instance = %v; want ErrNoInstance", err)
	}

	r2 := newClient(t, dist)
	waitFor(t, 5*time.Second, "client sees /who", func() bool { return r2.Has("GET", "/who") })
	waitFor(t, 5*time.Second, "instance connected", func() bool { _, err := who(t, r2, ""); return err == nil })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := r2.Call(ctx, "GET", "/who", []byte(`{"sleep":1000}`)); !errors.Is(err, packet.ErrTimeout) {
		t.Fatalf("slow call = %v; want packet.ErrTimeout", err)
	}
}

func TestSlowRequestDoesNotBlockOthers(t *testing.T) {
	dist, _ := startDistributor(t, "127.0.0.1:0")
	release := make(chan struct{})
	started := make(chan struct{})
	startService(t, dist, "who", "a", map[string]service.Handler{
		// GET /block answers only once the test releases it.
		"GET/block": func(ctx context.Context, r *service.Request) (service.Result, error) {
			close(started)
			select {
			case <-release:
				return service.Result{}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	})
	r := newClient(t, dist)
	waitFor(t, 5*time.Second, "routes listed", func() bool { return r.Has("GET", "/block") })
	waitFor(t, 5*time.Second, "instance answers", func() bool { _, err := who(t, r, ""); return err == nil })
	blocked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := r.Call(ctx, "GET", "/block", nil)
		blocked <- err
	}()
	<-started
	// The blocked request is in flight on the same connection: if requests
	// were served one after another, these would wait for it and time out.
	for range 20 {
		if _, err := who(t, r, ""); err != nil {
			t.Fatalf("fast call behind a blocked one: %v", err)
		}
	}
	select {
	case err := <-blocked:
		t.Fatalf("the blocked call ended (%v) before it was released", err)
	default:
	}
	close(release)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
}

func TestErrorsAndPanicsBecomeAnswers(t *testing.T) {
	dist, _ := startDistributor(t, "127.0.0.1:0")
	startService(t, dist, "who", "a", map[string]service.Handler{
		"GET/bad": func(ctx context.Context, r *service.Request) (service.Result, error) {
			if _, err := r.Params.ID("id"); err != nil {
				return nil, err
			}
			return nil, errors.New("SELECT secret FROM table failed")
		},
		"GET/panic": func(ctx context.Context, r *service.Request) (service.Result, error) {
			panic("boom")
		},
	})
	r := newClient(t, dist)
	waitFor(t, 5*time.Second, "routes listed", func() bool { return r.Has("GET", "/panic") })
	waitFor(t, 5*time.Second, "instance answers", func() bool { _, err := who(t, r, ""); return err == nil })
	for _, tc := range []struct {
		path, params string
		code         int
		msg          string
	}{
		{"/bad", `{"id":"x"}`, 400, "id must be an integer"},
		{"/bad", `{"id":5}`, 500, "internal error"},
		{"/panic", ``, 500, "internal error"},
	} {
		m, err := r.Call(context.Background(), "GET", tc.path, []byte(tc.params))
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		if m.ErrorCode == nil || *m.ErrorCode != tc.code || m.ErrorMessage != tc.msg {
			t.Errorf("GET %s %s = %s; want errorcode %d, message %q", tc.path, tc.params, m.Raw, tc.code, tc.msg)
		}
	}
	// The service survived the panic.
	if _, err := who(t, r, ""); err != nil {
		t.Fatalf("after a panic: %v", err)
	}
}

func TestDistributorRestart(t *testing.T) {
	// A port outside the kernel's range for outgoing connections, which
	// could take it while the registry is away.
	dist, stopDist := startDistributor(t, fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t)))
	startService(t, dist, "who", "a", nil)
	r := newClient(t, dist)
	waitFor(t, 5*time.Second, "instance answers", func() bool { _, err := who(t, r, ""); return err == nil })

	stopDist()
	// While the registry is away, routing goes on with the last list.
	for range 10 {
		if _, err := who(t, r, ""); err != nil {
			t.Fatalf("call while distributor down: %v", err)
		}
	}
	// A service started meanwhile appears within 3s of the registry's return.
	startService(t, dist, "who", "late", nil)
	startDistributor(t, dist)
	back := time.Now()
	waitFor(t, 3*time.Second, "the late instance becomes reachable", func() bool { return distinct(t, r, 4)["late"] > 0 })
	t.Logf("late instance reachable %v after the distributor came back", time.Since(back).Round(time.Millisecond))
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	dist, _ := startDistributor(t, "127.0.0.1:0")
	stop := startService(t, dist, "who", "a", nil)
	r := newClient(t, dist)
	waitFor(t, 5*time.Second, "instance answers", func() bool { _, err := who(t, r, ""); return err == nil })
	res := make(chan error, 1)
	go func() { _, err := who(t, r, `{"sleep":500}`); res <- err }()
	time.Sleep(50 * time.Millisecond)
	stop()
	if err := <-res; err != nil {
		t.Fatalf("in-flight request during shutdown: %v", err)
	}
}

func TestParams(t *testing.T) {
	p, err := service.DecodeParams([]byte(`{"n":"12","f":12.0,"big":9007199254740993,"s":7,"neg":"-3","frac":"1.5","arr":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   bool
		want int64
		err  string
	}{
		{"n", true, 12, ""},
		{"s", true, 7, ""},
		{"neg", false, -3, ""},
		{"neg", true, 0, "neg must be a positive integer"},
		{"frac", false, 0, "frac must be an integer"},
		{"big", true, 0, "big must be a positive integer"},
		{"arr", false, 0, "arr must be an integer"},
		{"missing", false, 0, "missing is required"},
	} {
		var got int64
		if tc.id {
			got, err = p.ID(tc.name)
		} else {
			got, err = p.Int(tc.name)
		}
		_, msg := service.ErrorCode(err)
		if err == nil {
			msg = ""
		}
		if got != tc.want || msg != tc.err {
			t.Errorf("%s = %d, %q; want %d, %q", tc.name, got, msg, tc.want, tc.err)
		}
	}
	if _, err := service.DecodeParams([]byte(`[1,2]`)); err == nil {
		t.Error("DecodeParams(array) = nil error")
	}
	if s, err := p.Text("s", 1, 10); s != "7" || err != nil {
		t.Errorf("Text(s) = %q, %v", s, err)
	}
	if _, err := p.Text("n", 3, 10); err == nil {
		t.Error("Text with min 3 of a 2-char value = nil error")
	}
}
