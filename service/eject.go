package service

import (
	"sync"
	"sync/atomic"
	"time"
)

// Outlier ejection, for instances that stop answering calls without closing
// their connection — in particular the book's Node.js services, which cannot
// heartbeat. It follows Envoy's outlier detection: after ejectAfter calls in
// a row that got no answer in time, the instance is ejected (the balancer
// skips it) for a back-off that doubles with every ejection in a row, then
// probed; it is re-admitted only once a probe is answered.

// Ejection tuning.
const (
	ejectAfter    = 3                // calls in a row without an answer in time
	ejectBase     = time.Second      // the first ejection's length
	ejectMax      = 30 * time.Second // the longest ejection
	probeTimeout  = time.Second      // how long a probe may take to be answered
	healAfterOKs  = 20               // answers in a row that forget past ejections
	maxEjectShift = 5                // ejectBase << 5 > ejectMax
)

// outlier is an instance's ejection state.
type outlier struct {
	out   atomic.Bool // ejected now: skipped by the balancer
	clean atomic.Bool // no failure or ejection to forget: success has nothing to do

	mu        sync.Mutex
	failures  int // calls in a row that timed out
	oks       int // calls in a row answered since the last ejection
	ejections int // ejections in a row (not yet healed)
}

func (o *outlier) ejected() bool { return o.out.Load() }

// success records an answered call. On a healthy instance it only reads an
// atomic: answers take no lock.
func (o *outlier) success() {
	if o.clean.Load() {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	defer func() { o.clean.Store(o.failures == 0 && o.ejections == 0 && !o.out.Load()) }()
	o.failures = 0
	if o.ejections > 0 && !o.out.Load() {
		if o.oks++; o.oks >= healAfterOKs {
			o.ejections, o.oks = 0, 0
		}
	}
}

// failure records a call that timed out; it reports whether the instance
// is ejected by it, and for how long.
func (o *outlier) failure() (eject bool, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clean.Store(false)
	if o.out.Load() {
		return false, 0
	}
	if o.failures++; o.failures < ejectAfter {
		return false, 0
	}
	o.failures, o.oks = 0, 0
	o.out.Store(true)
	return true, o.nextBackoffLocked()
}

// nextBackoffLocked counts an ejection and returns its length.
func (o *outlier) nextBackoffLocked() time.Duration {
	shift := min(o.ejections, maxEjectShift)
	o.ejections++
	return min(ejectBase<<shift, ejectMax)
}

// probeFailed extends an ejection whose probe got no answer; it returns the
// new back-off.
func (o *outlier) probeFailed() time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nextBackoffLocked()
}

// readmit ends an ejection after a probe was answered.
func (o *outlier) readmit() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures, o.oks = 0, 0
	o.out.Store(false)
}
