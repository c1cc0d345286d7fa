package cache

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is the error of a Redis command not sent because Redis
// failed a moment ago (see breaker). Callers treat it as any Redis failure:
// they fall back to the database, or skip the cache.
var ErrUnavailable = errors.New("cache: Redis unavailable: a call failed just now; trying again shortly")

// breakerOpen is how long commands fail at once after a Redis failure,
// before one is let through to see whether Redis answers again.
const breakerOpen = time.Second

// breaker is a go-redis hook that stops sending commands to a Redis that
// does not answer. Without it, every request waits for the client's
// timeouts (a second, and a retry) while Redis is unreachable — a host cut
// off, a frozen server — and a fleet that should only be slower without
// Redis stalls instead. After a command fails for a reason that is
// Redis's (not a reply error such as WRONGTYPE, not redis.Nil, not the
// caller giving up), commands fail at once with ErrUnavailable for
// breakerOpen; then one command at a time is let through as a probe, and
// the first that is answered closes the breaker.
type breaker struct {
	log       *slog.Logger
	openUntil atomic.Int64 // unix nanos; 0 while closed
	probing   atomic.Bool
}

// allow reports whether a command may be sent now, and whether it is the
// probe.
func (b *breaker) allow() (ok, probe bool) {
	until := b.openUntil.Load()
	if until == 0 {
		return true, false
	}
	if time.Now().UnixNano() < until || !b.probing.CompareAndSwap(false, true) {
		return false, false
	}
	return true, true
}

// done records the outcome of a command that was sent.
func (b *breaker) done(ctx context.Context, probe bool, err error) {
	if probe {
		defer b.probing.Store(false)
	}
	switch {
	case redisFault(ctx, err):
		if b.openUntil.Swap(time.Now().Add(breakerOpen).UnixNano()) == 0 {
			b.log.Warn("Redis failed; commands fail at once for a moment, then one is tried", "err", err, "for", breakerOpen)
		}
	case ctx.Err() != nil && err != nil:
		// The caller gave up: that tells nothing about Redis.
	case probe || b.openUntil.Load() != 0:
		if b.openUntil.Swap(0) != 0 {
			b.log.Info("Redis answers again")
		}
	}
}

// redisFault reports whether err means Redis (or the way to it) failed.
func redisFault(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
		return false
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		var ne net.Error
		return errors.As(err, &ne) // a reply error is Redis answering; a network one is not
	}
	return true
}

func (b *breaker) DialHook(next redis.DialHook) redis.DialHook { return next }

func (b *breaker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ok, probe := b.allow()
		if !ok {
			cmd.SetErr(ErrUnavailable)
			return ErrUnavailable
		}
		err := next(ctx, cmd)
		b.done(ctx, probe, err)
		return err
	}
}

func (b *breaker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ok, probe := b.allow()
		if !ok {
			for _, c := range cmds {
				c.SetErr(ErrUnavailable)
			}
			return ErrUnavailable
		}
		err := next(ctx, cmds)
		b.done(ctx, probe, err)
		return err
	}
}
