package limit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Leases: a busy key's allowance taken from Redis a few units at a time.
//
// Allow takes, from Redis, not one unit of a key's allowance but a lease:
// up to n units at once (one GCRA step of cost n, on the very key and
// state that redis_rate keeps), which this process then spends, request by
// request, without a round trip, until the lease is spent or leaseFor has
// passed; units still unspent then are forfeited. Redis counts a leased
// unit as used the moment it is leased, so across every gate a client never
// gets more than its limit; what leasing costs it is that a unit leased by
// one gate and not spent there is not available through another, so a
// client may be refused early by at most the units leased and unspent
// (at most maxLease per gate and key, forfeited within leaseFor).
//
// A lease's size follows the key's rate: it starts at 1 (one round trip
// per request, exactly as without leases), doubles each time a lease is
// spent before its end, and halves each time one ends unspent; it never
// passes maxLease(limit), a sixteenth of the burst. A client that sends a
// request now and then (nearly every client) is counted in Redis request
// by request, as before; one that sends thousands a second through this
// gate costs one round trip per lease.
const (
	// leaseFor is how long a lease may be spent.
	leaseFor = 100 * time.Millisecond
	// leasesMax bounds the leases kept: past it, they are all forgotten
	// (their units forfeited).
	leasesMax = 1 << 16
)

// maxLease is the largest lease of lim: a sixteenth of its burst, at
// least 1 (a burst of under 32 is counted request by request).
func maxLease(lim Limit) int { return max(1, lim.Burst/16) }

// lease is the allowance of one key leased to this process.
type lease struct {
	mu    sync.Mutex // held across the Redis call that renews the lease
	lim   Limit      // the limit it was leased under
	left  int        // units leased and not spent
	ends  time.Time  // when unspent units are forfeited
	size  int        // the size of the next lease
	shown Result     // Redis's answer to the last lease, for the headers
	// refused, until refusedUntil, is Redis's last refusal: GCRA has no
	// unit to give before its retry time, whichever gate asks (every gate
	// only takes), so until then the key is refused here, exactly, without
	// a round trip: a flood costs Redis nothing.
	refused      Result
	refusedUntil time.Time
}

// refusal returns the refusal standing at now, if any.
func (ls *lease) refusal(now time.Time) (Result, bool) {
	if !now.Before(ls.refusedUntil) {
		return Result{}, false
	}
	res := ls.refused
	elapsed := now.Sub(ls.refusedUntil.Add(-res.RetryAfter))
	res.RetryAfter -= elapsed
	res.ResetAfter = max(res.ResetAfter-elapsed, 0)
	return res, true
}

// refuse records res, a refusal from Redis at now.
func (ls *lease) refuse(res Result, now time.Time) {
	if res.RetryAfter > 0 {
		ls.refused, ls.refusedUntil = res, now.Add(res.RetryAfter)
	}
}

// leased returns the lease of key, creating it.
func (l *Limiter) leased(key string) *lease {
	l.leaseMu.Lock()
	defer l.leaseMu.Unlock()
	ls := l.leases[key]
	if ls == nil {
		if len(l.leases) >= leasesMax {
			clear(l.leases)
		}
		ls = &lease{size: 1}
		l.leases[key] = ls
	}
	return ls
}

// allowLeased is Allow on Redis, by leases; ok is false when Redis failed
// (nothing was taken from it: the caller falls back to the in-process
// limits).
func (l *Limiter) allowLeased(ctx context.Context, key string, lim Limit) (res Result, ok bool) {
	ls := l.leased(key)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	now := time.Now()
	if ls.lim != lim { // a new key, or a limit changed: start afresh
		ls.reset(lim)
	}
	if res, ok := ls.refusal(now); ok {
		return res, true
	}
	if ls.left > 0 && now.Before(ls.ends) {
		ls.left--
		res = ls.shown
		res.Remaining += ls.left
		return res, true
	}
	ls.resize(now)
	granted, res, err := l.take(ctx, key, lim, ls.size)
	l.record(ctx, err)
	if err != nil {
		return Result{}, false
	}
	if granted == 0 {
		ls.refuse(res, now)
		return res, true
	}
	ls.left, ls.ends, ls.shown = granted-1, now.Add(leaseFor), res
	res.Remaining += ls.left
	return res, true
}

// AllowAll is Allow for each of checks in turn, stopping at the first that
// refuses, with one Redis round trip for all those whose lease must be
// renewed (one script, when OneTrip; else one call each). It returns the
// results up to and including the first refusal. The checks' keys must be
// distinct, and every caller must list its kinds of keys in one order (the
// leases are locked in the order given).
func (l *Limiter) AllowAll(ctx context.Context, checks []Check) []Result {
	out := make([]Result, 0, len(checks))
	if !l.OneTrip() {
		for _, c := range checks {
			res := l.Allow(ctx, c.Key, c.Limit)
			out = append(out, res)
			if !res.Allowed {
				break
			}
		}
		return out
	}
	now := time.Now()
	var held []*lease
	defer func() {
		for _, ls := range held {
			ls.mu.Unlock()
		}
	}()
	// Every lease is locked first and nothing spent: a unit of a later
	// check's lease must not go to a request an earlier check refuses. A
	// standing refusal ends the checks there.
	var renew []int // indexes of the checks to renew in Redis
	var refusal *Result
	for i, c := range checks {
		ls := l.leased(c.Key)
		ls.mu.Lock()
		held = append(held, ls)
		if ls.lim != c.Limit {
			ls.reset(c.Limit)
		}
		if res, ok := ls.refusal(now); ok {
			refusal = &res
			break
		}
		if !(ls.left > 0 && now.Before(ls.ends)) {
			renew = append(renew, i)
		}
	}
	var results []Result
	var granted []int
	var err error
	if len(renew) > 0 {
		for _, i := range renew {
			held[i].resize(now)
		}
		results, granted, err = l.takeAll(ctx, checks, renew, held)
	}
	j := 0 // the next of renew
	for i, c := range checks[:len(held)-btoi(refusal != nil)] {
		var res Result
		switch {
		case j < len(renew) && renew[j] == i && err != nil:
			// Nothing known to be taken: the in-process limits (record
			// logged the switch to them).
			res = l.local.allow(c.Key, c.Limit, now)
			j++
		case j < len(renew) && renew[j] == i:
			res = results[j]
			ls := held[i]
			if granted[j] > 0 {
				ls.left, ls.ends, ls.shown = granted[j]-1, now.Add(leaseFor), res
				res.Remaining += ls.left
			} else {
				ls.refuse(res, now)
			}
			j++
		default:
			ls := held[i]
			ls.left--
			res = ls.shown
			res.Remaining += ls.left
		}
		out = append(out, res)
		if !res.Allowed {
			return out
		}
	}
	if refusal != nil {
		out = append(out, *refusal)
	}
	return out
}

// takeAll renews in one script the leases of checks[i] for i in renew, of
// held[i].size units each: the results up to the first refusal, and the
// units granted.
func (l *Limiter) takeAll(ctx context.Context, checks []Check, renew []int, held []*lease) ([]Result, []int, error) {
	keys := make([]string, len(renew))
	args := make([]any, 0, 1+4*len(renew))
	args = append(args, len(renew))
	for j, i := range renew {
		c := checks[i]
		keys[j] = l.cache.Prefix + redisPrefix + c.Key
		args = append(args, c.Limit.Burst, c.Limit.Rate, c.Limit.Period.Seconds(), held[i].size)
	}
	v, err := takeAllScript.Run(ctx, l.cache, keys, args...).Slice()
	l.record(ctx, err)
	if err != nil {
		return nil, nil, err
	}
	return parseTakeAll(v, checks, renew, held)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// reset starts the lease afresh under lim.
func (ls *lease) reset(lim Limit) {
	ls.lim, ls.left, ls.ends, ls.size = lim, 0, time.Time{}, 1
	ls.refused, ls.refusedUntil = Result{}, time.Time{}
}

// resize sets the size of the lease about to be renewed at now: halved
// when the last one ended unspent, doubled when it was spent before its
// end. It empties the lease.
func (ls *lease) resize(now time.Time) {
	switch {
	case ls.left > 0:
		ls.size = max(1, ls.size/2)
	case now.Before(ls.ends):
		ls.size = min(2*ls.size, maxLease(ls.lim))
	}
	ls.left, ls.ends = 0, time.Time{}
}

// parseTakeAll reads takeAllScript's answer: one result per check renewed,
// up to the first refusal.
func parseTakeAll(v []any, checks []Check, renew []int, held []*lease) ([]Result, []int, error) {
	if len(v) == 0 || len(v) > len(renew) {
		return nil, nil, fmt.Errorf("limit: lease script: %d results for %d keys", len(v), len(renew))
	}
	results := make([]Result, len(v))
	granted := make([]int, len(v))
	for j, r := range v {
		i := renew[j]
		res, err := parseGCRA(r, checks[i].Limit)
		if err != nil {
			return nil, nil, fmt.Errorf("limit: lease script: %w", err)
		}
		g, _ := r.([]any)[0].(int64)
		if g < 0 || g > int64(held[i].size) {
			return nil, nil, fmt.Errorf("limit: lease script granted %d of %d", g, held[i].size)
		}
		res.Allowed = g > 0
		results[j], granted[j] = res, int(g)
		if g == 0 && j != len(v)-1 {
			return nil, nil, fmt.Errorf("limit: lease script went on after a refusal")
		}
	}
	if len(v) < len(renew) && granted[len(v)-1] > 0 {
		return nil, nil, fmt.Errorf("limit: lease script stopped before a refusal")
	}
	return results, granted, nil
}

// take leases up to want units of key's allowance under lim from Redis
// (see takeAllScript): how many it got (0: refused), and Redis's result.
func (l *Limiter) take(ctx context.Context, key string, lim Limit, want int) (int, Result, error) {
	all, err := takeAllScript.Run(ctx, l.cache, []string{l.cache.Prefix + redisPrefix + key},
		1, lim.Burst, lim.Rate, lim.Period.Seconds(), want).Slice()
	if err != nil {
		return 0, Result{}, err
	}
	if len(all) != 1 {
		return 0, Result{}, fmt.Errorf("limit: lease script: %d results for 1 key", len(all))
	}
	v, _ := all[0].([]any)
	res, err := parseGCRA(all[0], lim)
	if err != nil {
		return 0, Result{}, fmt.Errorf("limit: lease script: %w", err)
	}
	granted, _ := v[0].(int64)
	if granted < 0 || granted > int64(want) {
		return 0, Result{}, fmt.Errorf("limit: lease script granted %d of %d", granted, want)
	}
	res.Allowed = granted > 0
	return int(granted), res, nil
}

// takeAllScript leases, from each of KEYS in turn, stopping at the first
// refused, up to the units wanted of it: redis_rate's allowN (lua.go of
// github.com/go-redis/redis_rate/v10), the same state under the same key,
// but with a cost of as many units as are available, at most the wanted.
// ARGV: the number of keys, then burst, rate, period (seconds) and the
// units wanted of each. It answers, for each key up to and including the
// first refused, {granted, remaining, retry_after, reset_after} as allowN
// answers them (granted 0: refused).
var takeAllScript = redis.NewScript(takeLua + `
local n = tonumber(ARGV[1])
local results = {}
for i = 1, n do
  local a = 2 + 4 * (i - 1)
  local r = take(KEYS[i], tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
  results[i] = r
  if r[1] == 0 then
    break
  end
end
return results
`)

// takeLua is the preamble of the limiter's scripts: now, from Redis's
// clock in redis_rate's epoch, and take(key, burst, rate, period, want),
// which leases up to want units of key's allowance (see takeAllScript).
// With want 1 it is redis_rate's allowN with a cost of 1.
const takeLua = `redis.replicate_commands()

local jan_1_2017 = 1483228800
local now = redis.call("TIME")
now = (now[1] - jan_1_2017) + (now[2] / 1000000)

local function take(rate_limit_key, burst, rate, period, want)
  local emission_interval = period / rate
  local burst_offset = emission_interval * burst

  local tat = redis.call("GET", rate_limit_key)
  if not tat then
    tat = now
  else
    tat = tonumber(tat)
  end
  tat = math.max(tat, now)

  local available = math.floor((now - tat + burst_offset) / emission_interval)
  local granted = math.min(want, available)
  if granted < 1 then
    local retry_after = tat + emission_interval - burst_offset - now
    return {0, 0, tostring(retry_after), tostring(tat - now)}
  end

  local new_tat = tat + emission_interval * granted
  local remaining = math.floor((now - (new_tat - burst_offset)) / emission_interval)
  local reset_after = new_tat - now
  if reset_after > 0 then
    redis.call("SET", rate_limit_key, new_tat, "EX", math.ceil(reset_after))
  end
  return {granted, remaining, "-1", tostring(reset_after)}
end
`

// leaseLeft returns the units of key's lease not spent yet (tests).
func (l *Limiter) leaseLeft(key string) int {
	l.leaseMu.Lock()
	ls := l.leases[key]
	l.leaseMu.Unlock()
	if ls == nil {
		return 0
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !time.Now().Before(ls.ends) {
		return 0
	}
	return ls.left
}
