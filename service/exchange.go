package service

import (
	"context"
	"errors"
	"time"

	"github.com/microshop/microshop/packet"
)

// maxAttempts bounds how many instances one idempotent call is sent to
// after connections were lost under it (hedges not counted).
const maxAttempts = 3

// exchange is one call through a Client: the attempts it sends, at most two
// in flight at once (the first and a hedge), until one is answered.
type exchange struct {
	c                  *Client
	rt                 *route
	ctx                context.Context
	method, path       string
	params, auth       []byte
	tried              []*instance // instances sent to (or that failed to take it)
	attempts           int
	first, second      *attempt // in flight; second is the hedge
	deadline           time.Time
	hedgeTimer         *time.Timer
	idempotent, hedges bool
}

// attempt is the request sent to one instance.
type attempt struct {
	in    *instance
	call  *packet.Call
	start time.Time
}

func (x *exchange) run() (*packet.Message, error) {
	x.deadline, _ = x.ctx.Deadline()
	x.idempotent = x.method == "GET" || x.method == "DELETE"
	x.hedges = x.method == "GET" && x.c.cfg.HedgeAfter > 0
	x.c.budget.earn()
	a, err := x.send()
	if err != nil {
		return nil, err
	}
	x.first = a
	var hedgeC <-chan time.Time
	if x.hedges && len(x.rt.instances) > 1 {
		x.hedgeTimer = time.NewTimer(x.rt.rtt.hedgeDelay(x.c.cfg.HedgeAfter, x.c.cfg.RequestTimeout/2))
		defer x.hedgeTimer.Stop()
		hedgeC = x.hedgeTimer.C
	}
	for {
		var c1, c2 <-chan *packet.Message
		if x.first != nil {
			c1 = x.first.call.Done()
		}
		if x.second != nil {
			c2 = x.second.call.Done()
		}
		select {
		case m, ok := <-c1:
			if ok {
				x.answered(x.first)
				x.abandon(x.second)
				return m, nil
			}
			x.lost(x.first)
			x.first = nil
		case m, ok := <-c2:
			if ok {
				hedgeEvents.WithLabelValues("won").Inc()
				x.answered(x.second)
				x.abandon(x.first)
				return m, nil
			}
			x.lost(x.second)
			x.second = nil
		case <-hedgeC:
			hedgeC = nil
			x.hedge()
			continue
		case <-x.ctx.Done():
			x.timedOut(x.first)
			x.timedOut(x.second)
			if errors.Is(x.ctx.Err(), context.DeadlineExceeded) {
				return nil, packet.ErrTimeout
			}
			return nil, x.ctx.Err()
		}
		if x.first != nil || x.second != nil {
			continue // the other attempt may still be answered
		}
		// Every attempt lost its connection. A POST may have been applied:
		// it is never sent again. A GET or DELETE is, at once.
		if !x.idempotent || x.attempts >= maxAttempts {
			return nil, ErrInstanceLost
		}
		a, err := x.send()
		if err != nil {
			return nil, ErrInstanceLost
		}
		clientCallsBy["retried"].Inc()
		x.first = a
	}
}

// send picks an instance not tried yet and sends it the request. An
// instance whose connection refuses the write (closed just now) did not get
// it, so another is tried whatever the method.
func (x *exchange) send() (*attempt, error) {
	waited := false
	for {
		now := monotonic()
		in := pick(x.rt.instances, x.tried, now, x.hedges)
		if in == nil && len(x.tried) == 0 && !waited {
			waited = true
			if waitFirstAttempt(x.ctx, x.rt) {
				continue
			}
		}
		if in == nil {
			if len(x.tried) > 0 {
				return nil, ErrInstanceLost
			}
			return nil, ErrNoInstance
		}
		x.tried = append(x.tried, in)
		c := in.conn.Load()
		if c == nil {
			continue
		}
		in.begin(now)
		call, err := c.Go(x.ctx, x.method, x.path, x.params, x.auth)
		if err != nil {
			in.end(monotonic(), false)
			if errors.Is(err, packet.ErrClosed) {
				continue
			}
			return nil, err
		}
		x.attempts++
		return &attempt{in: in, call: call, start: time.Now()}, nil
	}
}

// hedge sends the request to a second instance, if the budget allows.
func (x *exchange) hedge() {
	if x.first == nil || x.second != nil || !x.c.budget.take() {
		return
	}
	// The first instance has taken at least this long: let the balancer know.
	x.first.in.latency.observe(time.Since(x.first.start), monotonic())
	a, err := x.send()
	if err != nil {
		return
	}
	hedgeEvents.WithLabelValues("sent").Inc()
	x.second = a
}

// answered records an answer.
func (x *exchange) answered(a *attempt) {
	took := time.Since(a.start)
	now := monotonic()
	a.in.end(now, true)
	a.in.latency.observe(took, now)
	a.in.health.success()
	x.rt.rtt.observe(took)
}

// lost records an attempt whose connection closed under it. That is not an
// outlier failure: the connection's keeper already takes the instance out
// of rotation until it answers again.
func (x *exchange) lost(a *attempt) {
	a.in.end(monotonic(), false)
}

// timedOut records an attempt that got no answer before the deadline.
func (x *exchange) timedOut(a *attempt) {
	if a == nil {
		return
	}
	a.call.Cancel()
	now := monotonic()
	a.in.end(now, false)
	a.in.latency.observe(time.Since(a.start), now)
	if eject, d := a.in.health.failure(); eject {
		x.c.eject(a.in, d)
	}
}

// abandon lets the attempt that lost the race run on in the background
// until it is answered or the call's deadline passes, so that its instance
// is judged by what really happened to it (a frozen instance's hedged calls
// time out and get it ejected).
func (x *exchange) abandon(a *attempt) {
	if a == nil {
		return
	}
	rest := time.Until(x.deadline)
	go func() {
		t := time.NewTimer(rest)
		defer t.Stop()
		select {
		case m, ok := <-a.call.Done():
			if ok && m != nil {
				x.answered(a)
			} else {
				x.lost(a)
			}
		case <-t.C:
			x.timedOut(a)
		}
	}()
}

// waitFirstAttempt waits (at most a second) for instances of rt that were
// just listed and have not tried to connect yet; it reports whether it
// waited. Without it, the first requests after a new instance appears would
// get ErrNoInstance while the connection is being made.
func waitFirstAttempt(ctx context.Context, rt *route) bool {
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	waited := false
	for _, in := range rt.instances {
		select {
		case <-in.tried:
			continue
		default:
		}
		waited = true
		select {
		case <-in.tried:
		case <-ctx.Done():
			return waited
		case <-timer.C:
			return waited
		}
	}
	return waited
}
