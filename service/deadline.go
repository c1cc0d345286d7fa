package service

import (
	"context"
	"sync"
	"time"
)

// lazyDeadline is the context a handler runs in: Background with a
// deadline, whose timer is made only when something asks for Done or Err.
// An answer from memory (the goods near cache) never does, and so costs no
// timer; a handler that waits on a database or Redis does, and gets an
// ordinary context.WithDeadline, whose Value also lets contexts derived
// from this one cancel with it without a goroutine.
type lazyDeadline struct {
	deadline time.Time
	once     sync.Once
	ctx      context.Context    // set by once
	cancel   context.CancelFunc // set by once, nil when ended before use
}

// canceled is the context of a lazyDeadline ended before anything used it.
var canceled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func newLazyDeadline(d time.Duration) *lazyDeadline {
	return &lazyDeadline{deadline: time.Now().Add(d)}
}

func (c *lazyDeadline) real() context.Context {
	c.once.Do(func() { c.ctx, c.cancel = context.WithDeadline(context.Background(), c.deadline) })
	return c.ctx
}

// end cancels the context, as the cancel func of context.WithDeadline does.
func (c *lazyDeadline) end() {
	c.once.Do(func() { c.ctx = canceled })
	if c.cancel != nil {
		c.cancel()
	}
}

func (c *lazyDeadline) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *lazyDeadline) Done() <-chan struct{}       { return c.real().Done() }
func (c *lazyDeadline) Err() error                  { return c.real().Err() }
func (c *lazyDeadline) Value(key any) any           { return c.real().Value(key) }
