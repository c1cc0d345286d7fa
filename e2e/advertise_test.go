package e2e

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// TestAdvertise: a goods service reachable only through a port forward (as
// behind NAT or a container's port mapping) registers the forwarded address
// with --advertise, and the gate reaches it there.
func TestAdvertise(t *testing.T) {
	f := newFleet(t, "")
	f.startDistributor()
	gate := f.startGate()
	goodsPort := proctest.FreePort(t)
	fwd := startForward(t, "127.0.0.1:"+strconv.Itoa(goodsPort))
	goods := f.startService("goods", "--addr", "127.0.0.1:"+strconv.Itoa(goodsPort), "--advertise", fwd.addr())
	nodes := nodesNamed(f.waitNodes(map[string]int{"goods": 1}), "goods")
	if got := nodes[0].addr(); got != fwd.addr() {
		t.Fatalf("the distributor lists goods at %s; want the advertised %s (it listens on %s)", got, fwd.addr(), f.listenAddr(goods))
	}
	f.waitGateConnected(gate, fwd.addr())
	expect(t, "GET /goods through the forward", f.pollStatus("/goods", http.StatusOK, startTimeout), http.StatusOK)
	if fwd.accepted.Load() == 0 {
		t.Fatal("the gate reached goods without going through the advertised address")
	}

	// A bad advertise address stops the process with a clear error.
	p := proctest.Start(t, "goods-bad", binary, "goods", "--addr", "127.0.0.1:0", "--distributor", f.distAddr,
		"--db", f.db, "--redis", f.redis, "--fleet-key", "none", "--advertise", "no spaces allowed")
	select {
	case <-p.Done():
	case <-time.After(startTimeout):
		p.Kill(t)
		t.Fatal("goods with --advertise 'no spaces allowed' kept running; want it to stop with an error")
	}
	if p.Err() == nil {
		t.Fatal("goods with --advertise 'no spaces allowed' exited 0; want an error")
	}
	if len(p.LogLines("--advertise")) == 0 {
		t.Fatalf("goods with a bad --advertise did not say why:\n%s", p.Logs())
	}
}

// forward is a TCP port forward on a free loopback port.
type forward struct {
	ln       net.Listener
	accepted atomic.Int64
}

func (w *forward) addr() string { return w.ln.Addr().String() }

func startForward(t *testing.T, to string) *forward {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &forward{ln: ln}
	var (
		mu    sync.Mutex
		open  = map[net.Conn]bool{}
		conns sync.WaitGroup
	)
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			w.accepted.Add(1)
			conns.Go(func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", to, 2*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				track(c, true)
				track(up, true)
				defer track(c, false)
				defer track(up, false)
				done := make(chan struct{})
				go func() { io.Copy(up, c); up.Close(); close(done) }()
				io.Copy(c, up)
				c.Close()
				<-done
			})
		}
	}()
	return w
}
