package service

import (
	"net"
	"testing"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/packet"
)

// testInstance returns an instance with an open connection (to nowhere
// useful: a pipe), its latency average set to lat and last picked just now.
func testInstance(t *testing.T, name string, lat time.Duration) *instance {
	t.Helper()
	in := newInstance(distributor.Node{Name: name, Host: "127.0.0.1", Port: 1, URLs: []string{"GET/x"}})
	a, b := net.Pipe()
	c := packet.NewConn(a, packet.Options{})
	t.Cleanup(func() { c.Abort(); b.Close() })
	in.conn.Store(c)
	in.latency.observe(lat, monotonic())
	in.lastPick.Store(monotonic())
	return in
}

func shares(insts []*instance, skip []*instance, n int) map[*instance]int {
	got := map[*instance]int{}
	for range n {
		got[pick(insts, skip, monotonic(), true)]++
	}
	return got
}

func TestPickSharesEqualInstances(t *testing.T) {
	a, b, c := testInstance(t, "a", 300*time.Microsecond), testInstance(t, "b", 400*time.Microsecond), testInstance(t, "c", 200*time.Microsecond)
	insts := []*instance{a, b, c}
	got := shares(insts, nil, 30000)
	for _, in := range insts {
		// Each share is 1/3 ± 3%: over 10 standard deviations of luck.
		if n := got[in]; n < 9000 || n > 11000 {
			t.Errorf("instance %s got %d of 30000 picks; want about 10000 (all under the latency floor)", in.name, n)
		}
	}
}

func TestPickAvoidsSlowAndBusyInstances(t *testing.T) {
	fast, slow := testInstance(t, "fast", 2*time.Millisecond), testInstance(t, "slow", 50*time.Millisecond)
	got := shares([]*instance{fast, slow}, nil, 1000)
	if got[slow] != 0 {
		t.Errorf("a 50ms instance got %d of 1000 picks against a 2ms one; want 0", got[slow])
	}
	// A stall (a frozen instance, before anything has declared it down:
	// calls in flight for 100ms and no answer) outweighs a good latency.
	stuck, idle := testInstance(t, "stuck", time.Millisecond), testInstance(t, "idle", 3*time.Millisecond)
	stuck.begin(monotonic() - int64(100*time.Millisecond))
	got = shares([]*instance{stuck, idle}, nil, 1000)
	if got[stuck] != 0 {
		t.Errorf("an instance stalled for 100ms got %d of 1000 picks against an idle one; want 0", got[stuck])
	}
	// A fast instance busy with many calls, answering all along, still
	// beats one 10 times slower.
	busy, slow10 := testInstance(t, "busy", 5*time.Millisecond), testInstance(t, "slow", 50*time.Millisecond)
	for range 8 {
		busy.begin(monotonic())
	}
	busy.end(monotonic(), true)
	busy.begin(monotonic())
	if got := shares([]*instance{busy, slow10}, nil, 1000); got[slow10] != 0 {
		t.Errorf("a 50ms instance got %d of 1000 picks against a 5ms one with 8 calls in flight; want 0", got[slow10])
	}
	// Between equals, calls in flight decide.
	loaded, free := testInstance(t, "loaded", 2*time.Millisecond), testInstance(t, "free", 2*time.Millisecond)
	loaded.begin(monotonic())
	if got := shares([]*instance{loaded, free}, nil, 1000); got[loaded] != 0 {
		t.Errorf("an instance with a call in flight got %d of 1000 picks against an equal idle one; want 0", got[loaded])
	}
}

func TestPickForcesACallToAnIdleInstance(t *testing.T) {
	fast, slow := testInstance(t, "fast", 2*time.Millisecond), testInstance(t, "slow", 50*time.Millisecond)
	slow.lastPick.Store(monotonic() - int64(2*forcePick))
	if got := pick([]*instance{fast, slow}, nil, monotonic(), true); got != slow {
		t.Fatalf("picked %s; want the instance left alone for 2s, to measure it again", got.name)
	}
	if got := pick([]*instance{fast, slow}, nil, monotonic(), false); got != fast {
		t.Fatalf("picked %s for a call that may not explore (a POST: no hedge covers it); want fast", got.name)
	}
	slow.inflight.Store(1) // …nor when a call is on it already
	if got := pick([]*instance{fast, slow}, nil, monotonic(), true); got != fast {
		t.Fatalf("picked %s; want fast: the idle one has a call in flight", got.name)
	}
}

func TestPickSkipsEjectedUnlessNothingElse(t *testing.T) {
	a, b := testInstance(t, "a", time.Millisecond), testInstance(t, "b", time.Millisecond)
	a.health.out.Store(true)
	if got := shares([]*instance{a, b}, nil, 100); got[a] != 0 {
		t.Fatalf("an ejected instance got %d of 100 picks", got[a])
	}
	b.health.out.Store(true)
	if got := shares([]*instance{a, b}, nil, 100); got[nil] != 0 {
		t.Fatalf("with every instance ejected, %d of 100 picks found none; want the outliers used", got[nil])
	}
	if got := pick([]*instance{a, b}, []*instance{a, b}, monotonic(), true); got != nil {
		t.Fatalf("pick with every instance skipped = %s; want nil", got.name)
	}
	b.conn.Load().Abort()
	if got := shares([]*instance{a, b}, []*instance{a}, 10); got[nil] != 10 {
		t.Fatalf("a closed connection was picked: %v", got)
	}
}

func TestPeakEWMA(t *testing.T) {
	var e peakEWMA
	now := monotonic()
	e.observe(time.Millisecond, now)
	e.observe(50*time.Millisecond, now+1)
	if v := e.get(now + 1); v != float64(50*time.Millisecond) {
		t.Fatalf("after a 50ms sample the average is %v; want it at once", time.Duration(v))
	}
	// 1000 fast samples over the next second bring it most of the way down.
	for i := range 1000 {
		e.observe(time.Millisecond, now+int64(i+1)*int64(time.Millisecond))
	}
	end := now + int64(time.Second)
	if v := time.Duration(e.get(end)); v > 20*time.Millisecond || v < time.Millisecond {
		t.Fatalf("after a second of 1ms samples the average is %v; want it between 1ms and 20ms (e^-1 of the way)", v)
	}
	// Without samples a high average fades, slowly.
	e.observe(5*time.Second, end)
	if v := time.Duration(e.get(end + int64(forcePick))); v != 5*time.Second {
		t.Fatalf("average %v a moment after a 5s sample; want 5s", v)
	}
	if v := time.Duration(e.get(end + int64(100*time.Second))); v > time.Millisecond {
		t.Fatalf("average %v 100s after a 5s sample with none since; want it faded under 1ms", v)
	}
}
