package service

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The balancer: power of two choices over a route's usable instances, each
// weighed by the wait a new call can expect there — a peak-sensitive moving
// average of its latency (Finagle's "peak EWMA"), or, when longer, how long
// its calls in flight have gone without any answer (a stall), raised by a
// quarter for every call in flight. A slow instance thus gets little
// traffic, and a frozen one none within a few milliseconds, long before
// anything declares it down.
//
// go-zero and Finagle multiply the latency by (calls in flight + 1), as if
// an instance served one call at a time. microshop's serve many at once,
// and their latency already includes their queueing: on a saturated
// machine that rule sends calls to an instance ten times slower whenever the
// fast one has ten calls in flight. A stalled instance is told by its stall
// instead.

// Balancer tuning.
const (
	// latencyDecay is the time constant of the latency average: a sample
	// counts for e^-1 of its weight after this long.
	latencyDecay = time.Second
	// idleDecay is the time constant with which the average of an instance
	// that gets no calls fades towards zero, so that one avoided after a
	// bad spell is tried again in the end even where no GET explores it.
	idleDecay = 10 * time.Second
	// latencyFloor keeps the differences of a few milliseconds between
	// healthy instances — scheduling noise on a busy machine, a GC — from
	// deciding anything: below it, calls in flight decide. A spike above it
	// on one instance would otherwise leave it without calls, and so
	// without samples to show it recovered, until forcePick.
	latencyFloor = 5 * time.Millisecond
	// nearTie is the cost ratio under which two instances count as equally
	// loaded: the first of the two random picks wins, so equals share evenly.
	nearTie = 1.1
	// forcePick sends a call to an instance that has had none for this
	// long, so a recovered instance gets a fresh latency sample.
	forcePick = time.Second
)

// peakEWMA is a moving average of latency that jumps to a sample above it
// at once and decays towards lower ones with time constant latencyDecay: a
// sample after a long quiet spell weighs much, a sample among many little.
// Without samples it fades with idleDecay. Readers never wait; a sample
// that arrives while another is being folded in is dropped, which an
// average of thousands of samples does not miss.
type peakEWMA struct {
	mu    sync.Mutex    // serializes observe
	value atomic.Uint64 // math.Float64bits of the average in ns; 0 before the first sample
	at    atomic.Int64  // monotonic ns of the last sample
}

func (e *peakEWMA) observe(d time.Duration, now int64) {
	if !e.mu.TryLock() {
		return
	}
	defer e.mu.Unlock()
	s, v := float64(d), math.Float64frombits(e.value.Load())
	if v != 0 && s < v {
		w := math.Exp(-float64(now-e.at.Load()) / float64(latencyDecay))
		s = v*w + s*(1-w)
	}
	e.value.Store(math.Float64bits(s))
	e.at.Store(now)
}

// get returns the average as of now.
func (e *peakEWMA) get(now int64) float64 {
	v := math.Float64frombits(e.value.Load())
	if idle := now - e.at.Load(); idle > int64(forcePick) {
		v *= math.Exp(-float64(idle) / float64(idleDecay))
	}
	return v
}

// inflightWeight is how much each call in flight adds to the expected wait,
// as a share of the latency.
const inflightWeight = 0.25

// cost is the instance's load as the balancer weighs it.
func (in *instance) cost(now int64) float64 {
	wait := math.Max(math.Max(in.latency.get(now), float64(in.stall(now))), float64(latencyFloor))
	return wait * (1 + inflightWeight*float64(in.inflight.Load()))
}

// begin counts a call sent to the instance.
func (in *instance) begin(now int64) {
	if in.inflight.Add(1) == 1 {
		in.busySince.Store(now)
	}
	in.lastPick.Store(now)
}

// end counts a call finished; answered tells whether an answer came.
func (in *instance) end(now int64, answered bool) {
	if answered {
		in.lastAnswer.Store(now)
	}
	in.inflight.Add(-1)
}

// stall is how long the instance has had calls in flight without answering
// any (0 when it has none in flight).
func (in *instance) stall(now int64) time.Duration {
	if in.inflight.Load() == 0 {
		return 0
	}
	return time.Duration(now - max(in.busySince.Load(), in.lastAnswer.Load()))
}

// pick returns the instance of insts that the next call should go to, or nil
// when none is usable: connected, not ejected and not in skip. When every
// connected instance not in skip is ejected, it picks among those rather
// than fail: an outlier is a better chance than none. explore lets it send
// the call to an instance left alone for forcePick, to measure it again: a
// GET's, which a hedge covers should that instance be stuck.
func pick(insts []*instance, skip []*instance, now int64, explore bool) *instance {
	var buf [8]*instance
	cands := buf[:0]
	ejected := 0
	for _, in := range insts {
		if in.usable() && !contains(skip, in) {
			cands = append(cands, in)
			if in.health.ejected() {
				ejected++
			}
		}
	}
	if ejected > 0 && ejected < len(cands) {
		n := 0
		for _, in := range cands {
			if !in.health.ejected() {
				cands[n] = in
				n++
			}
		}
		cands = cands[:n]
	}
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	i := rand.IntN(len(cands))
	j := rand.IntN(len(cands) - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	// An idle instance left alone for a while gets a call, to measure it
	// again (its average moves only with samples).
	if explore {
		if a.inflight.Load() == 0 && now-a.lastPick.Load() > int64(forcePick) {
			return a
		}
		if b.inflight.Load() == 0 && now-b.lastPick.Load() > int64(forcePick) {
			return b
		}
	}
	ca, cb := a.cost(now), b.cost(now)
	if ca <= cb*nearTie {
		return a
	}
	return b
}

func contains(list []*instance, in *instance) bool {
	for _, x := range list {
		if x == in {
			return true
		}
	}
	return false
}
