package service

import (
	"testing"
	"time"
)

// Hedges are capped at a tenth of the calls, after the initial burst.
func TestHedgeBudget(t *testing.T) {
	b := newHedgeBudget()
	hedges := 0
	const calls = 10000
	for range calls {
		b.earn()
		if b.take() {
			hedges++ // a fleet where every call is slow asks for a hedge each time
		}
	}
	if max := calls/10 + hedgeBurst/hedgeCost; hedges > max || hedges < calls/10 {
		t.Fatalf("%d hedges for %d calls that all wanted one; want %d to %d", hedges, calls, calls/10, max)
	}
}

func TestHedgeDelay(t *testing.T) {
	var r rtt
	floor, limit := 50*time.Millisecond, 5*time.Second
	if d := r.hedgeDelay(floor, limit); d != floor {
		t.Fatalf("delay with no samples = %v; want the floor %v", d, floor)
	}
	for range 100 {
		r.observe(time.Millisecond)
	}
	if d := r.hedgeDelay(floor, limit); d != floor {
		t.Fatalf("delay for a 1ms route = %v; want the floor %v", d, floor)
	}
	for range 100 {
		r.observe(200 * time.Millisecond)
		r.observe(100 * time.Millisecond)
	}
	// srtt ≈ 150ms, rttvar ≈ 50ms: srtt + 4·rttvar ≈ 350ms.
	if d := r.hedgeDelay(floor, limit); d < 250*time.Millisecond || d > 450*time.Millisecond {
		t.Fatalf("delay for a route alternating 100ms and 200ms = %v; want about 350ms", d)
	}
	if d := r.hedgeDelay(floor, 100*time.Millisecond); d != 100*time.Millisecond {
		t.Fatalf("delay = %v; want the limit 100ms", d)
	}
}
