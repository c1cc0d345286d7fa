// Package limit is the rate limiter of the fleet's edge: GCRA limits kept
// in Redis (redis_rate's algorithm and keys), so that they hold across
// every gate, taken from Redis by leases when a key is busy (lease.go),
// with a per-process fallback of the same limits while Redis fails.
package limit

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/microshop/microshop/internal/cache"
)

// Limit is a rate limit: Rate requests per Period, with bursts of up to
// Burst at once (GCRA). The zero Limit is off.
type Limit = redis_rate.Limit

// Parse parses "N/s", "N/m" or "N/h" (burst N), or "0" / "off" (no
// limit).
func Parse(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "off" || s == "" {
		return Limit{}, nil
	}
	n, unit, ok := strings.Cut(s, "/")
	rate, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || rate < 1 {
		return Limit{}, fmt.Errorf("rate limit %q: want N/s, N/m, N/h or 0", s)
	}
	switch strings.TrimSpace(unit) {
	case "s":
		return redis_rate.PerSecond(rate), nil
	case "m":
		return redis_rate.PerMinute(rate), nil
	case "h":
		return redis_rate.PerHour(rate), nil
	}
	return Limit{}, fmt.Errorf("rate limit %q: want N/s, N/m, N/h or 0", s)
}

// Format is the inverse of Parse.
func Format(l Limit) string {
	if l.IsZero() {
		return "0"
	}
	u := "s"
	switch l.Period {
	case time.Minute:
		u = "m"
	case time.Hour:
		u = "h"
	}
	return strconv.Itoa(l.Rate) + "/" + u
}

// AddrKey is the limiter's key for a client address: an IPv4 address, or
// the /64 of an IPv6 one (what one host usually gets); "unknown" for no
// address.
func AddrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// Result is the outcome of one limit check.
type Result struct {
	Limit      Limit
	Allowed    bool
	Remaining  int
	RetryAfter time.Duration // until the next request is allowed (when refused)
	ResetAfter time.Duration // until the limit is back to its full burst
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// SetHeaders writes the RateLimit-* headers (draft-ietf-httpapi-ratelimit-
// headers): the limit per period, the requests left now, and the seconds
// until the full burst is back; and Retry-After (at least 1 s) when refused.
func (res Result) SetHeaders(h http.Header) {
	h.Set("RateLimit-Limit", strconv.Itoa(res.Limit.Rate))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(res.Remaining, 0)))
	h.Set("RateLimit-Reset", strconv.FormatInt(max(ceilSeconds(res.ResetAfter), 0), 10))
	if !res.Allowed {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(res.RetryAfter), 1), 10))
	}
}

// Limiter checks limits in Redis (redis_rate, GCRA), so that they hold
// across every gate. When Redis fails it falls back to an in-process GCRA
// with the same limits (so a client may then get up to that much per
// process); the cache's breaker (see cache.Open) makes those failures
// immediate while Redis does not answer, and lets one call through now and
// then, so the limiter is back on Redis as soon as it answers.
//
// A key that is busy through this process is taken from Redis by leases,
// several units a round trip (see lease.go).
type Limiter struct {
	cache *cache.Cache // nil without Redis
	local *localLimiter
	log   *slog.Logger

	leaseMu sync.Mutex
	leases  map[string]*lease

	fallback atomic.Bool // the last Redis call failed
}

// New returns a limiter on c (nil: in process only).
func New(c *cache.Cache, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{cache: c, local: newLocalLimiter(), log: log, leases: map[string]*lease{}}
}

// Allow takes one request from key's allowance under lim: from this
// process's lease of it, or from Redis (see lease.go); from the in-process
// limits while Redis fails.
func (l *Limiter) Allow(ctx context.Context, key string, lim Limit) Result {
	if l.cache != nil {
		if res, ok := l.allowLeased(ctx, key, lim); ok {
			return res
		}
	}
	return l.local.allow(key, lim, time.Now())
}

// record logs the switches between Redis and the fallback.
func (l *Limiter) record(ctx context.Context, err error) {
	switch {
	case err != nil && ctx.Err() == nil:
		if !l.fallback.Swap(true) {
			l.log.Warn("Redis failed; rate limits are kept per process until it answers", "err", err)
		}
	case err == nil:
		if l.fallback.Swap(false) {
			l.log.Info("Redis answers again; rate limits are shared by every gate")
		}
	}
}

// localLimiter is an in-process GCRA with the semantics of redis_rate: a
// theoretical arrival time per key.
type localLimiter struct {
	mu        sync.Mutex
	tat       map[string]time.Time
	nextSweep time.Time
}

// localMaxKeys bounds the fallback's memory: past it, entries back at their
// full burst are swept at once.
const localMaxKeys = 100_000

func newLocalLimiter() *localLimiter { return &localLimiter{tat: map[string]time.Time{}} }

func (l *localLimiter) allow(key string, lim Limit, now time.Time) Result {
	emission := lim.Period / time.Duration(lim.Rate)
	burstOffset := emission * time.Duration(lim.Burst)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.nextSweep) || len(l.tat) > localMaxKeys {
		for k, t := range l.tat {
			if !t.After(now) {
				delete(l.tat, k)
			}
		}
		l.nextSweep = now.Add(10 * time.Second)
	}
	tat := l.tat[key]
	if tat.Before(now) {
		tat = now
	}
	newTat := tat.Add(emission)
	diff := now.Sub(newTat.Add(-burstOffset))
	if diff < 0 {
		return Result{Limit: lim, RetryAfter: -diff, ResetAfter: tat.Sub(now)}
	}
	l.tat[key] = newTat
	return Result{Limit: lim, Allowed: true, Remaining: int(diff / emission), RetryAfter: -1, ResetAfter: newTat.Sub(now)}
}
