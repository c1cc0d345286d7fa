package distributor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/faultnet"
	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/packet"
)

const testHeartbeat = 300 * time.Millisecond

var quiet = slog.New(slog.DiscardHandler)

// runServer serves a registry with heartbeats and no settle period on a
// freezable listener until the test ends (or stop is called).
func runServer(t *testing.T, addr string) (*faultnet.Listener, func()) {
	t.Helper()
	ln, err := faultnet.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(quiet, 0)
	s.Settle = 0
	s.Heartbeat = testHeartbeat
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() { once.Do(func() { ln.Thaw(); cancel(); <-done }) }
	t.Cleanup(stop)
	return ln, stop
}

// watcher is a registered client whose reported lists the test reads.
type watcher struct {
	c     *Client
	mu    sync.Mutex
	lists [][]Node
}

func runClient(t *testing.T, name string, port int, settle time.Duration, addrs ...string) *watcher {
	t.Helper()
	w := &watcher{}
	w.c = NewClient(ClientConfig{Addrs: addrs, Logger: quiet, RetryInterval: 50 * time.Millisecond, Heartbeat: testHeartbeat, Settle: settle,
		Registration: &Registration{Name: name, Port: port, URLs: []string{"GET/" + name}},
		OnChange: func(n []Node) {
			w.mu.Lock()
			w.lists = append(w.lists, n)
			w.mu.Unlock()
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func names(nodes []Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// waitNames waits until w reports exactly want (sorted names).
func (w *watcher) waitNames(t *testing.T, d time.Duration, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(d)
	for !slices.Equal(names(w.c.Nodes()), want) {
		if time.Now().After(deadline) {
			t.Fatalf("list %v after %v; want %v", names(w.c.Nodes()), d, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A process following two distributors lists what either lists; a frozen
// one changes nothing: a process that registers afterwards is listed
// through the other, and one that leaves is dropped.
func TestClientFollowsSeveralDistributors(t *testing.T) {
	a, _ := runServer(t, "127.0.0.1:0")
	b, _ := runServer(t, "127.0.0.1:0")
	A, B := a.Addr().String(), b.Addr().String()
	gate := runClient(t, "gate", 8000, time.Millisecond, A, B)
	runClient(t, "onlya", 9001, time.Millisecond, A)
	runClient(t, "onlyb", 9002, time.Millisecond, B)
	gate.waitNames(t, 5*time.Second, "gate", "onlya", "onlyb")

	a.Freeze()
	frozen := time.Now()
	late := runClient(t, "late", 9003, time.Millisecond, A, B)
	// onlya was listed only by A, which no longer answers: once the gate's
	// heartbeat notices, A's list leaves the union.
	gate.waitNames(t, 5*time.Second, "gate", "late", "onlyb")
	// Silence counts from A's last heartbeat, up to a fifth of the timeout
	// before the freeze.
	if took := time.Since(frozen); took < testHeartbeat*4/5 {
		t.Fatalf("A's list left after %v, before the heartbeat timeout %v could have passed", took, testHeartbeat)
	}
	if !late.c.Connected() {
		t.Fatal("a client with one distributor frozen and one answering reports not connected")
	}
	a.Thaw()
	gate.waitNames(t, 5*time.Second, "gate", "late", "onlya", "onlyb")
}

// A distributor drops a process that registered with heartbeats and then
// fell silent; one that registered without (a book process) stays listed
// however quiet it is.
func TestServerDropsSilentProcess(t *testing.T) {
	ln, _ := runServer(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	dial := func(reg string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, reg); err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, c) // read, as a frozen process's kernel does
		return c
	}
	dial(`{"uri":"/distributes","method":"POST","key":0,"params":{"name":"silent","port":9001,"urls":[],"heartbeat":true}}¶`)
	dial(`{"uri":"/distributes","method":"POST","key":0,"params":{"name":"book","port":9002,"urls":[]}}¶`)
	w := runClient(t, "gate", 8000, time.Millisecond, addr)
	w.waitNames(t, 5*time.Second, "book", "gate", "silent")
	start := time.Now()
	w.waitNames(t, 5*time.Second, "book", "gate")
	took := time.Since(start)
	if took > 3*testHeartbeat {
		t.Errorf("the silent process was dropped %v after it was seen listed; want within about %v", took, testHeartbeat)
	}
	time.Sleep(3 * testHeartbeat)
	if got := names(w.c.Nodes()); !slices.Contains(got, "book") {
		t.Fatalf("list %v: the quiet book process, which never heartbeats, was dropped", got)
	}
}

// After a distributor comes back (restarted, thawed, healed), its lists
// may only add for the settle period: processes that have not registered
// with it again yet stay listed, and leave once the period is over unless
// they have.
func TestClientSettleKeepsProcessesAfterReconnect(t *testing.T) {
	testSettle(t, 600*time.Millisecond, true)
}

// The same with no settle period shows the list the rule guards against.
func TestClientWithoutSettleDropsProcessesAfterReconnect(t *testing.T) {
	testSettle(t, time.Millisecond, false)
}

func testSettle(t *testing.T, settle time.Duration, wantKept bool) {
	// A port outside the kernel's range for outgoing connections, which
	// could take it while the registry is away (CI: bind: address already
	// in use on the restart).
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	_, stop := runServer(t, addr)
	register := func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, `{"uri":"/distributes","method":"POST","key":0,"params":{"name":"goods","port":9010,"urls":["GET/goods"]}}¶`)
		go io.Copy(io.Discard, c)
	}
	w := runClient(t, "gate", 8000, settle, addr)
	register()
	w.waitNames(t, 5*time.Second, "gate", "goods")
	time.Sleep(settle) // past the first session's settle period
	w.mu.Lock()
	before := len(w.lists)
	w.mu.Unlock()
	stop()
	runServer(t, addr) // empty: every process must register again
	back := time.Now()
	// The gate reconnects within 50 ms; goods registers again only after
	// 300 ms, within the settle period.
	time.Sleep(300 * time.Millisecond)
	register()
	w.waitNames(t, 5*time.Second, "gate", "goods")
	time.Sleep(2 * settle)
	w.mu.Lock()
	defer w.mu.Unlock()
	dropped := false
	for _, l := range w.lists[before:] {
		if !slices.Contains(names(l), "goods") {
			dropped = true
		}
	}
	if dropped == wantKept {
		t.Fatalf("settle %v: lists reported after the registry came back %v ago: %v; want goods in every one: %v", settle, time.Since(back), w.lists[before:], wantKept)
	}
}

// A signed registration is bound to the connection it was made for: the
// same bytes sent on another connection (a replay from elsewhere) are
// refused, whether that connection asked a challenge of its own or not.
func TestRegistrationBoundToConnection(t *testing.T) {
	key := []byte("a-fleet-key-0123456789")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(quiet, 0)
	s.Settle = 0
	s.FleetKey = key
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := ln.Addr().String()

	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	challenge := func(c net.Conn) string {
		t.Helper()
		io.WriteString(c, `{"uri":"/distributes","method":"CHALLENGE","key":1}¶`)
		d := packet.NewDecoder(c, 0)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			p, err := d.Next()
			if err != nil {
				t.Fatalf("no challenge: %v", err)
			}
			var ans struct {
				Key   int    `json:"key"`
				Nonce string `json:"nonce"`
			}
			if json.Unmarshal(p, &ans) == nil && ans.Key == 1 && ans.Nonce != "" {
				return ans.Nonce
			}
		}
	}
	register := func(c net.Conn, r Registration) {
		b, _ := packet.Marshal(registerPacket{URI: "/distributes", Method: "POST", Params: r})
		c.Write(b)
	}
	listed := func(name string) bool {
		for _, n := range s.Nodes() {
			if n.Name == name {
				return true
			}
		}
		return false
	}

	c1 := dial()
	reg := Registration{Name: "members", Port: 9020, URLs: []string{"POST/sessions"}, Nonce: challenge(c1)}
	sign(key, &reg, time.Now())
	// The replay first: on a connection that asked its own challenge, and
	// on one that asked none.
	c2 := dial()
	challenge(c2)
	register(c2, reg)
	c3 := dial()
	register(c3, reg)
	// Then the real one, which must be listed; the replays must not be.
	register(c1, reg)
	deadline := time.Now().Add(5 * time.Second)
	for !listed("members") {
		if time.Now().After(deadline) {
			t.Fatal("the registration made for its connection was not listed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A packet is handled after the ones sent before it on its connection:
	// once c2 and c3 answer a challenge, their registrations were handled.
	challenge(c2)
	challenge(c3)
	if n := len(s.Nodes()); n != 1 {
		t.Fatalf("%d processes listed: %+v; want only the real one (the replays refused)", n, s.Nodes())
	}
	// And a client does all this by itself.
	w := NewClient(ClientConfig{Addrs: []string{addr}, Logger: quiet, RetryInterval: 50 * time.Millisecond, FleetKey: key,
		Registration: &Registration{Name: "goods", Port: 9010, URLs: []string{"GET/goods"}}})
	wctx, wcancel := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() { defer close(wdone); w.Run(wctx) }()
	defer func() { wcancel(); <-wdone }()
	for !listed("goods") {
		if time.Now().After(deadline) {
			t.Fatal("a keyed client's registration was not listed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Lists are pushed outside the registry's lock, in any order between
// pushes, yet every connection sees them in the order they were made:
// while processes only join, each list a watcher gets is at least as long
// as the one before. A connection that never reads slows nobody.
func TestListsInOrderWhileManyJoin(t *testing.T) {
	ln, _ := runServer(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	stuck, err := net.Dial("tcp", addr) // connects and never reads
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	w := runClient(t, "watcher", 1, 0, addr)
	w.waitNames(t, 5*time.Second, "watcher")
	const n = 30
	want := []string{"watcher"}
	for i := range n {
		name := fmt.Sprintf("p%02d", i)
		want = append(want, name)
		go runClient(t, name, 100+i, 0, addr)
	}
	w.waitNames(t, 10*time.Second, want...)
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := 1; i < len(w.lists); i++ {
		if len(w.lists[i]) < len(w.lists[i-1]) {
			t.Fatalf("list %d has %d processes after one of %d: an older list arrived after a newer one", i, len(w.lists[i]), len(w.lists[i-1]))
		}
	}
}
