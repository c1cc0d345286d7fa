package cache

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Repairs retries, in the background, Redis writes that failed after the
// database had committed: a cache entry or view that missed an update is
// then fixed within seconds of Redis answering again, instead of staying
// stale until it expires (views live a day, cached goods an hour).
//
// A fix must be idempotent and correct whenever it runs, such as deleting
// a view (the next read rebuilds it from the database) or writing a
// tombstone. Fixes are keyed: a later fix for the same key replaces an
// earlier one. The pending fixes live in this process; if it stops before
// Redis is back, expiry is the backstop.
type Repairs struct {
	log *slog.Logger
	// Interval is the wait between rounds while fixes are pending
	// (DefaultRepairInterval when 0); Max bounds how many may be pending
	// (DefaultMaxRepairs when 0): beyond it a fix is dropped, and logged.
	Interval time.Duration
	Max      int

	mu      sync.Mutex
	pending map[string]repair
	gen     uint64
	running bool
	wg      sync.WaitGroup
}

type repair struct {
	fix func(context.Context) error
	gen uint64 // tells a fix from a later one under the same key
}

// Defaults of Repairs.
const (
	DefaultRepairInterval = time.Second
	DefaultMaxRepairs     = 100_000
)

// NewRepairs returns an empty set of repairs; log receives what it does
// (nil discards it).
func NewRepairs(log *slog.Logger) *Repairs {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Repairs{log: log, pending: map[string]repair{}}
}

// Add schedules fix under key. A worker goroutine runs while fixes are
// pending and ends when none are left.
func (r *Repairs) Add(key string, fix func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	limit := r.Max
	if limit <= 0 {
		limit = DefaultMaxRepairs
	}
	if _, ok := r.pending[key]; !ok && len(r.pending) >= limit {
		r.log.Warn("too many Redis repairs pending; this one is left to expiry", "key", key, "pending", len(r.pending))
		return
	}
	r.gen++
	r.pending[key] = repair{fix: fix, gen: r.gen}
	if !r.running {
		r.running = true
		r.wg.Add(1)
		go r.work()
	}
}

// Pending returns how many fixes wait for Redis.
func (r *Repairs) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Wait waits until the worker has ended (no fix pending), for tests and
// shutdown.
func (r *Repairs) Wait() { r.wg.Wait() }

func (r *Repairs) work() {
	defer r.wg.Done()
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultRepairInterval
	}
	for {
		time.Sleep(interval)
		r.mu.Lock()
		batch := make(map[string]repair, len(r.pending))
		for k, rp := range r.pending {
			batch[k] = rp
		}
		r.mu.Unlock()
		fixed := 0
		for k, rp := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := rp.fix(ctx)
			cancel()
			if err != nil {
				break // Redis still failing: try the rest next round
			}
			fixed++
			r.mu.Lock()
			if r.pending[k].gen == rp.gen { // no newer fix for k meanwhile
				delete(r.pending, k)
			}
			r.mu.Unlock()
		}
		r.mu.Lock()
		left := len(r.pending)
		if left == 0 {
			r.running = false
		}
		r.mu.Unlock()
		if fixed > 0 {
			r.log.Info("repaired Redis after a failed update", "fixed", fixed, "pending", left)
		}
		if left == 0 {
			return
		}
	}
}
