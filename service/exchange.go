package service

import (
	"context"
	"errors"
	"time"

	"github.com/microshop/microshop/packet"
)

// maxAttempts bounds how many instances one idempotent call is sent to
// after connections were lost under it (hedges not counted); maxTried, how
// many instances one call tries, counting those whose connection closed
// just as it was picked.
const (
	maxAttempts = 3
	maxTried    = 8
)

// exchange is one call through a Client: the attempts it sends, at most two
// in flight at once (the first and a hedge), until one is answered. It
// lives on its caller's stack.
type exchange struct {
	c             *Client
	rt            *route
	ctx           context.Context
	method, path  string
	params, auth  []byte              // auth: the auth object as sent, unless signed per attempt
	identity      *Auth               // the identity to sign per attempt (with a FleetKey)
	signed        []byte              // packet.SignedParams of params, for those signatures
	tried         [maxTried]*instance // instances sent to (or that failed to take it)
	nTried        int
	attempts      int
	first, second attempt // in flight when in is set; second is the hedge
	idempotent    bool
	hedges        bool
}

// attempt is the request sent to one instance; in is nil for none.
type attempt struct {
	in    *instance
	call  packet.Call
	start time.Time
}

func (x *exchange) run() (*packet.Message, error) {
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
		t := time.NewTimer(x.rt.rtt.hedgeDelay(x.c.cfg.HedgeAfter, x.c.cfg.RequestTimeout/2))
		defer t.Stop()
		hedgeC = t.C
	}
	for {
		var c1, c2 <-chan *packet.Message
		if x.first.in != nil {
			c1 = x.first.call.Done()
		}
		if x.second.in != nil {
			c2 = x.second.call.Done()
		}
		select {
		case m, ok := <-c1:
			if ok {
				answered(x.rt, x.first)
				x.abandon(x.second)
				return m, nil
			}
			lost(x.first)
			x.first = attempt{}
		case m, ok := <-c2:
			if ok {
				hedgeEvents.WithLabelValues("won").Inc()
				answered(x.rt, x.second)
				x.abandon(x.first)
				return m, nil
			}
			lost(x.second)
			x.second = attempt{}
		case <-hedgeC:
			hedgeC = nil
			x.hedge()
			continue
		case <-x.ctx.Done():
			if !errors.Is(x.ctx.Err(), context.DeadlineExceeded) {
				// The caller gave up (its client went away): that says
				// nothing about the instances.
				dropped(x.first)
				dropped(x.second)
				return nil, x.ctx.Err()
			}
			timedOut(x.c, x.first)
			timedOut(x.c, x.second)
			return nil, packet.ErrTimeout
		}
		if x.first.in != nil || x.second.in != nil {
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
func (x *exchange) send() (attempt, error) {
	waited := false
	for {
		now := monotonic()
		var in *instance
		if x.nTried < maxTried {
			in = pick(x.rt.instances, x.tried[:x.nTried], now, x.hedges)
		}
		if in == nil && x.nTried == 0 && !waited {
			waited = true
			if waitFirstAttempt(x.ctx, x.rt) {
				continue
			}
		}
		if in == nil {
			if x.nTried > 0 {
				return attempt{}, ErrInstanceLost
			}
			return attempt{}, ErrNoInstance
		}
		x.tried[x.nTried] = in
		x.nTried++
		c := in.conn.Load()
		if c == nil {
			continue
		}
		auth, err := x.authFor(in, c)
		if err != nil {
			return attempt{}, err
		}
		in.begin(now)
		call, err := c.Go(x.ctx, x.method, x.path, x.params, auth)
		if err != nil {
			in.end(monotonic(), false)
			if errors.Is(err, packet.ErrClosed) {
				continue
			}
			return attempt{}, err
		}
		x.attempts++
		return attempt{in: in, call: call, start: time.Now()}, nil
	}
}

// authFor returns the auth object to send on connection c of in: with a
// FleetKey, signed for this request and, where the instance gave c a nonce,
// bound to c with the next sequence number.
func (x *exchange) authFor(in *instance, c *packet.Conn) ([]byte, error) {
	if x.identity == nil || len(x.c.cfg.FleetKey) == 0 {
		return x.auth, nil
	}
	b := binding{params: x.signed}
	if ca := in.auth.Load(); ca != nil && ca.conn == c {
		b.nonce, b.seq = ca.nonce, ca.seq.Add(1)
	}
	return x.c.cfg.FleetKey.appendSigned(nil, x.identity, x.method, x.path, b, time.Now()), nil
}

// hedge sends the request to a second instance, if the budget allows.
func (x *exchange) hedge() {
	if x.first.in == nil || x.second.in != nil || !x.c.budget.take() {
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

// abandon lets the attempt that lost the race run on in the background
// until it is answered or the call's deadline passes, so that its instance
// is judged by what really happened to it (a frozen instance's hedged calls
// time out and get it ejected).
func (x *exchange) abandon(a attempt) {
	if a.in == nil {
		return
	}
	c, rt := x.c, x.rt
	deadline, _ := x.ctx.Deadline()
	go func() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case m, ok := <-a.call.Done():
			if ok && m != nil {
				answered(rt, a)
			} else {
				lost(a)
			}
		case <-t.C:
			timedOut(c, a)
		case <-c.keeper.closing:
			dropped(a)
		}
	}()
}

// answered records an answer.
func answered(rt *route, a attempt) {
	took := time.Since(a.start)
	now := monotonic()
	a.in.end(now, true)
	a.in.latency.observe(took, now)
	a.in.health.success()
	rt.rtt.observe(took)
}

// lost records an attempt whose connection closed under it. That is not an
// outlier failure: the connection's keeper already takes the instance out
// of rotation until it answers again.
func lost(a attempt) {
	a.in.end(monotonic(), false)
}

// dropped forgets an attempt whose caller gave up.
func dropped(a attempt) {
	if a.in == nil {
		return
	}
	a.call.Cancel()
	a.in.end(monotonic(), false)
}

// timedOut records an attempt that got no answer before the deadline.
func timedOut(c *Client, a attempt) {
	if a.in == nil {
		return
	}
	a.call.Cancel()
	now := monotonic()
	a.in.end(now, false)
	a.in.latency.observe(time.Since(a.start), now)
	if eject, d := a.in.health.failure(); eject {
		c.eject(a.in, d)
	}
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
