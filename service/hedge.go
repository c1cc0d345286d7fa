package service

import (
	"sync"
	"sync/atomic"
	"time"
)

// Hedging: a GET that has no answer after a delay is sent to a second
// instance as well, and the first answer wins (the "tail at scale" hedged
// request). The delay is the route's usual latency plus four deviations
// (srtt + 4·rttvar, TCP's retransmission estimate, RFC 6298), but never
// less than ClientConfig.HedgeAfter, so only a call far slower than usual
// is hedged. A budget caps hedges at a tenth of the calls (with a burst of
// hedgeBurst): a fleet that is slow everywhere gets at most 10% more load,
// never double.

// Hedge budget tuning, in tenths of a hedge.
const (
	hedgeEarn  = 1       // every call earns a tenth of a hedge
	hedgeCost  = 10      // a hedge spends a whole one
	hedgeBurst = 20 * 10 // at most 20 hedges saved up
)

// hedgeBudget allows a hedge for every ten calls. It starts full: the
// first calls after a start may need hedges most (a peer frozen since).
type hedgeBudget struct{ tokens atomic.Int64 }

func newHedgeBudget() *hedgeBudget {
	b := &hedgeBudget{}
	b.tokens.Store(hedgeBurst)
	return b
}

func (b *hedgeBudget) earn() {
	if b.tokens.Load() < hedgeBurst {
		b.tokens.Add(hedgeEarn)
	}
}

func (b *hedgeBudget) take() bool {
	for {
		t := b.tokens.Load()
		if t < hedgeCost {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-hedgeCost) {
			return true
		}
	}
}

// rtt estimates a route's latency and its deviation (RFC 6298).
type rtt struct {
	mu     sync.Mutex
	srtt   time.Duration
	rttvar time.Duration
}

// observe folds in a sample; one that arrives while another is being
// folded in is dropped (the estimate does not miss it, the caller does not
// wait).
func (r *rtt) observe(d time.Duration) {
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if r.srtt == 0 {
		r.srtt, r.rttvar = d, d/2
		return
	}
	dev := r.srtt - d
	if dev < 0 {
		dev = -dev
	}
	r.rttvar = (3*r.rttvar + dev) / 4
	r.srtt = (7*r.srtt + d) / 8
}

// hedgeDelay is how long a call waits for its answer before it is hedged:
// srtt + 4·rttvar, at least floor and at most limit.
func (r *rtt) hedgeDelay(floor, limit time.Duration) time.Duration {
	r.mu.Lock()
	d := r.srtt + 4*r.rttvar
	r.mu.Unlock()
	return min(max(d, floor), limit)
}
