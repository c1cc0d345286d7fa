package purchases

import (
	"runtime"
	"sync"
	"time"
)

// crew runs the batches of a queue (the group commit, the group
// recording): a queued item wakes a leader waiting for work or, while
// fewer than max leaders run, starts one; a leader takes what is queued
// (up to limit items at a time) and runs it, until the queue is empty;
// then it waits for work, and ends after crewIdle without any. Nothing
// waits for a batch to fill: a batch is what queued while the previous one
// ran. Leaders that live on under load keep their grown stacks: started
// afresh for every batch, they spent about 4% of the CPU of POST
// /purchases on MariaDB growing them.
//
// Invariant (under mu): idle = leaders waiting − wake tokens in flight, so
// that every token finds a leader and every leader counted idle can be
// woken.
type crew[T any] struct {
	max   int       // at most this many leaders
	limit int       // the largest batch
	run   func([]T) // runs one batch
	// yieldLone, with one leader, makes it yield once before taking a
	// batch of one (see committer.lead).
	yieldLone bool

	wake chan struct{} // capacity max: sending never blocks

	mu      sync.Mutex
	queue   []T
	running int // leaders alive
	idle    int // leaders waiting for work without a token
}

// crewIdle is how long a leader waits for work before it ends.
const crewIdle = 100 * time.Millisecond

func newCrew[T any](max, limit int, run func([]T)) *crew[T] {
	return &crew[T]{max: max, limit: limit, run: run, wake: make(chan struct{}, max)}
}

// add queues x.
func (c *crew[T]) add(x T) {
	c.mu.Lock()
	c.queue = append(c.queue, x)
	wake := false
	switch {
	case c.idle > 0:
		c.idle--
		wake = true
	case c.running < c.max:
		c.running++
		go c.lead()
	}
	c.mu.Unlock()
	if wake {
		c.wake <- struct{}{}
	}
}

// lead runs batches, and waits for more, until it has waited crewIdle.
func (c *crew[T]) lead() {
	timer := time.NewTimer(crewIdle)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) == 1 && c.yieldLone && c.max == 1 {
			// A yield, not a wait: with nothing else to run it returns at
			// once.
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
		}
		n := min(len(c.queue), c.limit)
		if n == 0 {
			c.idle++
			c.mu.Unlock()
			timer.Reset(crewIdle)
			select {
			case <-c.wake:
				continue
			case <-timer.C:
			}
			c.mu.Lock()
			if c.idle > 0 { // no token is meant for this leader: end
				c.idle--
				c.running--
				c.mu.Unlock()
				return
			}
			// Every waiting leader has a token coming, this one too.
			c.mu.Unlock()
			<-c.wake
			continue
		}
		batch := make([]T, n)
		copy(batch, c.queue)
		rest := copy(c.queue, c.queue[n:])
		clear(c.queue[rest:])
		c.queue = c.queue[:rest]
		c.mu.Unlock()
		c.run(batch)
	}
}
