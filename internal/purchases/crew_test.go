package purchases

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCrew: every item queued runs once, in batches run by at most max
// leaders at a time, through bursts with idle leaders woken between them
// and after the leaders ended for idleness.
func TestCrew(t *testing.T) {
	for _, max := range []int{1, 4} {
		var mu sync.Mutex
		ran := map[int]int{}
		var busy, most atomic.Int32
		c := newCrew(max, 8, func(batch []int) {
			if n := busy.Add(1); n > most.Load() {
				most.Store(n)
			}
			time.Sleep(50 * time.Microsecond)
			mu.Lock()
			for _, x := range batch {
				ran[x]++
			}
			mu.Unlock()
			busy.Add(-1)
		})
		next := 0
		burst := func(n int) {
			var wg sync.WaitGroup
			for range n {
				x := next
				next++
				wg.Go(func() { c.add(x) })
			}
			wg.Wait()
		}
		for round := range 20 {
			burst(50)
			if round%5 == 4 {
				time.Sleep(crewIdle + 50*time.Millisecond) // the leaders end
			} else {
				time.Sleep(time.Millisecond) // they wait, idle
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			n := len(ran)
			mu.Unlock()
			if n == next || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		for x := range next {
			if ran[x] != 1 {
				t.Errorf("max %d: item %d ran %d times; want once", max, x, ran[x])
			}
		}
		mu.Unlock()
		if most.Load() > int32(max) {
			t.Errorf("max %d: %d batches ran at once", max, most.Load())
		}
		time.Sleep(crewIdle + 50*time.Millisecond)
		c.mu.Lock()
		if c.running != 0 || c.idle != 0 || len(c.queue) != 0 {
			t.Errorf("max %d: after idleness running %d, idle %d, queued %d; want none", max, c.running, c.idle, len(c.queue))
		}
		c.mu.Unlock()
	}
}
