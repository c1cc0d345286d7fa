package gate

import (
	"context"
	"crypto/sha256"
	"errors"
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
	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/service"
)

// Limit is a rate limit: Rate requests per Period, with bursts of up to
// Burst at once (GCRA). The zero Limit is off.
type Limit = redis_rate.Limit

// ParseLimit parses "N/s", "N/m" or "N/h" (burst N), or "0" / "off" (no
// limit).
func ParseLimit(s string) (Limit, error) {
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

// FormatLimit is the inverse of ParseLimit.
func FormatLimit(l Limit) string {
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

// guard is the gate's security state: the admin key's hash, the
// limiter, and the verifier of cached sessions.
type guard struct {
	adminHash []byte // SHA-256 of the admin key, nil without one
	limiter   *limiter
	// sessions verifies cached sessions; nil without a fleet key, when
	// the gate believes no cached session.
	sessions *sessioncache.Signer
	// lastUnverified is when a cached session last failed verification
	// (unix nanos), to log it at most once a minute.
	lastUnverified atomic.Int64
}

func newGuard(cfg Config, log *slog.Logger) *guard {
	g := &guard{limiter: newLimiter(cfg.Cache, log), sessions: sessioncache.NewSigner(cfg.FleetKey)}
	if cfg.Security.AdminKey != "" {
		sum := sha256.Sum256([]byte(cfg.Security.AdminKey))
		g.adminHash = sum[:]
	}
	return g
}

// unverified logs, at most once a minute, that a cached session failed
// verification and was ignored.
func (gd *guard) unverified(log *slog.Logger) {
	now := time.Now().UnixNano()
	last := gd.lastUnverified.Load()
	if now-last < int64(time.Minute) || !gd.lastUnverified.CompareAndSwap(last, now) {
		return
	}
	log.Warn("a cached session in Redis did not verify with this fleet's key and was ignored; asked the members service instead " +
		"(written by another deployment sharing Redis, made up by someone who can write to it, or cached before a fleet key change)")
}

// admit applies the rate limits and authentication to r, in that order (so
// a flood of bad tokens is limited before it costs a lookup): per client
// address; for logins and writes, the strict limit per address; then the
// token; then per member. It returns the identity to send with the request
// (nil with authentication off), or writes the refusal (429, 401, 503) and
// returns its status.
//
// A request that presents the admin key skips the per-address limits
// (checking the key costs one SHA-256, no lookup): those limits are for
// strangers, and the operator seeding goods or stores from one address
// must not be throttled like one (adding 11 goods in a second used to get
// a 429). The admin has no limit of its own: whoever holds the key can
// delete the shop's goods and stores anyway, so a limit would protect
// nothing, and guesses at the key are not the key, so they are limited as
// any request.
func (g *Gate) admit(w http.ResponseWriter, r *http.Request) (*service.Auth, int) {
	sec := &g.cfg.Security
	ctx := r.Context()
	if !sec.AuthOff && g.guard.adminHash != nil {
		if token, ok := bearerToken(bearer(r)); ok && g.guard.isAdmin(token) {
			return g.authenticate(ctx, w, r)
		}
	}
	var addr string
	if !sec.RateLimit.IsZero() || !sec.StrictRateLimit.IsZero() {
		addr = addrKey(ClientAddr(r, sec.TrustedProxies))
	}
	var shown *rateResult
	check := func(key string, l Limit) bool {
		if l.IsZero() {
			return true
		}
		res := g.guard.limiter.allow(ctx, key, l)
		if shown == nil || !res.allowed || res.remaining < shown.remaining {
			shown = &res
		}
		return res.allowed
	}
	if !check("ip:"+addr, sec.RateLimit) {
		rateLimited.WithLabelValues("address").Inc()
		return nil, writeLimited(w, *shown)
	}
	if strictClass(r) && !check("strict:"+addr, sec.StrictRateLimit) {
		rateLimited.WithLabelValues("strict").Inc()
		return nil, writeLimited(w, *shown)
	}
	auth, status := g.authenticate(ctx, w, r)
	if status != 0 {
		return nil, status
	}
	if auth != nil && auth.Member != 0 && !check("member:"+strconv.FormatInt(auth.Member, 10), sec.MemberRateLimit) {
		rateLimited.WithLabelValues("member").Inc()
		return nil, writeLimited(w, *shown)
	}
	if shown != nil {
		shown.setHeaders(w.Header())
	}
	return auth, 0
}

// strictClass reports whether r is a login (POST /sessions, or the book's
// GET /members) or a write (any method but GET and HEAD).
func strictClass(r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return r.URL.Path == "/members"
	}
	return true
}

// addrKey is the limiter's key for a client address: an IPv4 address, or
// the /64 of an IPv6 one (what one host usually gets).
func addrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// rateResult is the outcome of one limit check.
type rateResult struct {
	limit      Limit
	allowed    bool
	remaining  int
	retryAfter time.Duration // until the next request is allowed (when refused)
	resetAfter time.Duration // until the limit is back to its full burst
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// setHeaders writes the RateLimit-* headers (draft-ietf-httpapi-ratelimit-
// headers): the limit per period, the requests left now, and the seconds
// until the full burst is back; and Retry-After (at least 1 s) when refused.
func (res rateResult) setHeaders(h http.Header) {
	h.Set("RateLimit-Limit", strconv.Itoa(res.limit.Rate))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(res.remaining, 0)))
	h.Set("RateLimit-Reset", strconv.FormatInt(max(ceilSeconds(res.resetAfter), 0), 10))
	if !res.allowed {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(res.retryAfter), 1), 10))
	}
}

func writeLimited(w http.ResponseWriter, res rateResult) int {
	res.setHeaders(w.Header())
	return writeError(w, http.StatusTooManyRequests, "too many requests")
}

// limiter checks limits in Redis (redis_rate, GCRA), so that they hold
// across every gate. When Redis fails it falls back to a per-gate
// in-process GCRA with the same limits (so a client may then get up to
// that much per gate), and tries Redis again at most once a second, one
// request at a time, switching back as soon as it answers.
type limiter struct {
	redis *redis_rate.Limiter // nil without Redis
	local *localLimiter
	log   *slog.Logger

	downUntil atomic.Int64 // unix nanos; 0 while Redis is up
	probing   atomic.Bool
}

// redisRetry is how long the limiter stays on its local fallback after a
// Redis failure before it tries Redis again.
const redisRetry = time.Second

func newLimiter(c *cache.Cache, log *slog.Logger) *limiter {
	l := &limiter{local: newLocalLimiter(), log: log}
	if c != nil {
		l.redis = redis_rate.NewLimiter(prefixed{c})
	}
	return l
}

func (l *limiter) allow(ctx context.Context, key string, lim Limit) rateResult {
	if l.redis != nil {
		if probe, use := l.useRedis(time.Now()); use {
			r, err := l.redis.Allow(ctx, key, lim)
			l.done(ctx, probe, err)
			if err == nil {
				return rateResult{limit: lim, allowed: r.Allowed > 0, remaining: r.Remaining, retryAfter: r.RetryAfter, resetAfter: r.ResetAfter}
			}
		}
	}
	return l.local.allow(key, lim, time.Now())
}

// useRedis tells whether to ask Redis now: always while it is up; after a
// failure, once redisRetry has passed, one call at a time (the probe).
func (l *limiter) useRedis(now time.Time) (probe, use bool) {
	until := l.downUntil.Load()
	if until == 0 {
		return false, true
	}
	if now.UnixNano() < until || !l.probing.CompareAndSwap(false, true) {
		return false, false
	}
	return true, true
}

// done records the outcome of a Redis call allowed by useRedis (err nil or
// redis.Nil is a success). A failure sends the gate to its fallbacks (local
// limits; sessions from the members service) for redisRetry.
func (l *limiter) done(ctx context.Context, probe bool, err error) {
	if err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() == nil && l.downUntil.Swap(time.Now().Add(redisRetry).UnixNano()) == 0 {
			l.log.Warn("Redis failed; limiting per gate and asking the members service for sessions until it answers", "err", err)
		}
	} else if probe {
		l.downUntil.Store(0)
		l.log.Info("Redis answers again; rate limits are shared by every gate")
	}
	if probe {
		l.probing.Store(false)
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

func (l *localLimiter) allow(key string, lim Limit, now time.Time) rateResult {
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
		return rateResult{limit: lim, retryAfter: -diff, resetAfter: tat.Sub(now)}
	}
	l.tat[key] = newTat
	return rateResult{limit: lim, allowed: true, remaining: int(diff / emission), retryAfter: -1, resetAfter: newTat.Sub(now)}
}

// prefixed gives redis_rate the deployment's key prefix: its keys become
// PREFIX + "rate:" + key.
type prefixed struct{ c *cache.Cache }

func (p prefixed) keys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = p.c.Prefix + k
	}
	return out
}

func (p prefixed) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.c.Eval(ctx, script, p.keys(keys), args...)
}

func (p prefixed) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.c.EvalSha(ctx, sha1, p.keys(keys), args...)
}

func (p prefixed) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.c.EvalRO(ctx, script, p.keys(keys), args...)
}

func (p prefixed) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.c.EvalShaRO(ctx, sha1, p.keys(keys), args...)
}

func (p prefixed) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return p.c.ScriptExists(ctx, hashes...)
}

func (p prefixed) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return p.c.ScriptLoad(ctx, script)
}

func (p prefixed) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return p.c.Del(ctx, p.keys(keys)...)
}

// redisUp reports whether the gate believes Redis up (no failure since the
// last success).
func (l *limiter) redisUp() bool { return l.downUntil.Load() == 0 }
