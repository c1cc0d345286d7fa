package e2e

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// Bounds a flooded goods service stays under (README, "Bounds"). The
// goroutines: the server's in-flight cap (1024) and two loops per admitted
// connection (at most 64 from the attacker's address), with room for the
// runtime's own.
const (
	floodMaxGoroutines = 1500
	floodMaxRSS        = 300 << 20
)

// TestFloodedGoodsPort floods a goods instance's packet port from another
// address (127.0.0.2) while 4 clients GET goods through the gate: one
// connection writing 50,000 requests without reading an answer, then 600
// connections each sending 1 MB without a separator. The service's
// goroutines and memory stay bounded, and the gate's GETs keep succeeding.
func TestFloodedGoodsPort(t *testing.T) {
	f := newFleet(t, "")
	if proctest.Race {
		// The race detector makes goods' code 5-20 times slower: on two
		// cores shared with the other packages' tests, the flood then
		// starved goods' reader of the gate's connection past the 1.5 s
		// heartbeat timeout (goods closed it as silent; CI at 4144271).
		// This test is about bounds under a flood; without the race
		// detector it runs with the default timeout.
		f.common = []string{"--heartbeat-timeout", "6s"}
	}
	f.startDistributor()
	f.startGate()
	metrics := freeAddr(t)
	goods := f.startService("goods", "--metrics-addr", metrics)
	f.waitNodes(map[string]int{"gate": 1, "goods": 1})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	id := f.addGood(t, good{Name: "tea", Category: "drink", Price: 3})
	addr := f.listenAddr(goods)
	attacker := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	if c, err := attacker.Dial("tcp", addr); err != nil {
		t.Skipf("cannot dial from 127.0.0.2 (%v): the flood needs a second loopback address", err)
	} else {
		c.Close()
	}

	// Clients through the gate, for the whole test.
	var stop atomic.Bool
	var ok, failed atomic.Int64
	var clients sync.WaitGroup
	var firstFailure atomic.Value
	for range 4 {
		clients.Go(func() {
			for !stop.Load() {
				a, err := f.request("GET", "/goods?id="+strconv.FormatInt(id, 10), "", nil)
				if err == nil && a.Status == http.StatusOK {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				if err != nil {
					firstFailure.CompareAndSwap(nil, err.Error())
				} else {
					firstFailure.CompareAndSwap(nil, a.String())
				}
			}
		})
	}
	defer func() { stop.Store(true); clients.Wait() }()

	peak := func(what string, d time.Duration) {
		t.Helper()
		var g, rss float64
		samples := 0
		var lastErr error
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) || samples == 0 && time.Now().Before(deadline.Add(10*time.Second)) {
			m, err := scrapeWithin(metrics, 5*time.Second)
			if err != nil {
				lastErr = err // a flooded process may answer its metrics late
				continue
			}
			samples++
			g = max(g, value(m, "go_goroutines"))
			rss = max(rss, value(m, "process_resident_memory_bytes"))
			time.Sleep(100 * time.Millisecond)
		}
		if samples == 0 {
			t.Errorf("%s: no metrics from goods: %v", what, lastErr)
			return
		}
		t.Logf("%s: goods peaked at %.0f goroutines and %.0f MiB; gate GETs so far: %d ok, %d failed", what, g, rss/(1<<20), ok.Load(), failed.Load())
		if g > floodMaxGoroutines {
			t.Errorf("%s: goods reached %.0f goroutines; want at most %d", what, g, floodMaxGoroutines)
		}
		maxRSS := float64(floodMaxRSS)
		if proctest.Race {
			maxRSS *= 4 // the race detector's shadow memory
		}
		if rss > maxRSS {
			t.Errorf("%s: goods reached %.0f MiB; want at most %.0f MiB", what, rss/(1<<20), maxRSS/(1<<20))
		}
	}

	// 1. One connection, 50,000 requests, no answer ever read.
	c, err := attacker.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var burst strings.Builder
	for k := range 50000 {
		burst.WriteString(`{"uri":"/goods","method":"GET","key":` + strconv.Itoa(k+1) + `,"params":{"id":"` + strconv.FormatInt(id, 10) + `"}}¶`)
	}
	go func() {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte(burst.String()))
	}()
	peak("one connection writing 50,000 requests", 3*time.Second)
	c.Close()

	// 2. 600 connections, each 1 MB without a separator.
	chunk := []byte(`{"uri":"/goods","method":"GET","params":{"pad":"` + strings.Repeat("x", 1<<20))
	var conns []net.Conn
	var mu sync.Mutex
	var dialers sync.WaitGroup
	for range 600 {
		dialers.Go(func() {
			c, err := attacker.Dial("tcp", addr)
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			c.Write(chunk)
		})
	}
	peak("600 connections of 1 MB without a separator", 4*time.Second)
	dialers.Wait()
	for _, c := range conns {
		c.Close()
	}
	stop.Store(true)
	clients.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of %d GETs through the gate failed during the floods; first: %v", failed.Load(), failed.Load()+ok.Load(), firstFailure.Load())
	}
	if ok.Load() == 0 {
		t.Error("no GET through the gate succeeded during the floods")
	}
	f.checkAlive()
}
