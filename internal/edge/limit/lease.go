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
		ls.lim, ls.left, ls.ends, ls.size = lim, 0, time.Time{}, 1
	}
	if ls.left > 0 && now.Before(ls.ends) {
		ls.left--
		res = ls.shown
		res.Remaining += ls.left
		return res, true
	}
	switch {
	case ls.left > 0: // ended unspent
		ls.size = max(1, ls.size/2)
	case now.Before(ls.ends): // spent before its end
		ls.size = min(2*ls.size, maxLease(lim))
	}
	ls.left, ls.ends = 0, time.Time{}
	granted, res, err := l.take(ctx, key, lim, ls.size)
	l.record(ctx, err)
	if err != nil {
		return Result{}, false
	}
	if granted == 0 {
		return res, true
	}
	ls.left, ls.ends, ls.shown = granted-1, now.Add(leaseFor), res
	res.Remaining += ls.left
	return res, true
}

// take leases up to want units of key's allowance under lim from Redis
// (see takeScript): how many it got (0: refused), and Redis's result.
func (l *Limiter) take(ctx context.Context, key string, lim Limit, want int) (int, Result, error) {
	v, err := takeScript.Run(ctx, l.cache, []string{l.cache.Prefix + redisPrefix + key},
		lim.Burst, lim.Rate, lim.Period.Seconds(), want).Slice()
	if err != nil {
		return 0, Result{}, err
	}
	res, err := parseGCRA(v, lim)
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

// takeScript leases up to ARGV[4] units of the allowance kept under
// KEYS[1] (burst ARGV[1], rate ARGV[2] per ARGV[3] seconds): redis_rate's
// allowN (lua.go of github.com/go-redis/redis_rate/v10), the same state
// under the same key, but with a cost of as many units as are available,
// at most the asked: {granted, remaining, retry_after, reset_after}, as
// allowN answers them (granted 0: refused).
var takeScript = redis.NewScript(`
redis.replicate_commands()

local rate_limit_key = KEYS[1]
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local want = tonumber(ARGV[4])

local jan_1_2017 = 1483228800
local now = redis.call("TIME")
now = (now[1] - jan_1_2017) + (now[2] / 1000000)

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
`)

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
