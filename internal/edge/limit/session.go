package limit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Check is one limit to check: the key, as Allow takes it, and the limit.
type Check struct {
	Key   string
	Limit Limit
}

// SessionResult is what AllowSession found.
type SessionResult struct {
	// Results are those of the checks, in order, up to and including the
	// first that refused.
	Results []Result
	// Value is the session key's value, Found whether it exists; read only
	// when every check allowed.
	Value string
	Found bool
	// Member is the member check's result, nil when it was not made.
	Member *Result
}

// Refused returns the first refused result and its index, or -1.
func (r *SessionResult) Refused() (Result, int) {
	for i, res := range r.Results {
		if !res.Allowed {
			return res, i
		}
	}
	return Result{}, -1
}

// OneTrip reports whether AllowSession can be used: the limits are kept in
// Redis, and in one server rather than a Redis Cluster (whose keys in
// several slots one script cannot touch).
func (l *Limiter) OneTrip() bool {
	if l.cache == nil {
		return false
	}
	_, cluster := l.cache.UniversalClient.(*redis.ClusterClient)
	return !cluster
}

// AllowSession does in one Redis round trip (one script) what a request
// with a member's token needs from Redis: Allow for each of checks in
// turn, stopping at the first that refuses (exactly redis_rate's GCRA, with
// the same keys); then, when every one allowed, it reads sessionKey (a full
// key); then, when member is not nil and the value read is a live session
// of memberID at now in the form of internal/members/sessioncache
// ("v1:MEMBER:EXPIRES:UNTIL:MAC", MEMBER = memberID, EXPIRES and UNTIL in
// Unix ms after now), Allow for member.
//
// The caller verifies the value (its MAC, with the same now) before
// believing it, and checks member itself when the script did not. So a
// member's allowance is taken only for a session Redis holds as live for
// that member, as Allow after a verified lookup would, save for a value
// whose MAC does not verify (which only whoever can write to Redis can
// make). It returns an error when Redis fails, having checked nothing in
// process: the caller then falls back to Allow, which falls back to the
// in-process limits.
func (l *Limiter) AllowSession(ctx context.Context, checks []Check, sessionKey string, member *Check, memberID int64, now time.Time) (*SessionResult, error) {
	if !l.OneTrip() {
		return nil, errors.New("limit: AllowSession needs a single Redis server")
	}
	keys := make([]string, 0, len(checks)+2)
	args := make([]any, 0, 3*len(checks)+6)
	args = append(args, len(checks))
	for _, c := range checks {
		keys = append(keys, l.cache.Prefix+redisPrefix+c.Key)
		args = append(args, c.Limit.Burst, c.Limit.Rate, c.Limit.Period.Seconds())
	}
	keys = append(keys, sessionKey)
	if member != nil {
		keys = append(keys, l.cache.Prefix+redisPrefix+member.Key)
		args = append(args, member.Limit.Burst, member.Limit.Rate, member.Limit.Period.Seconds(), strconv.FormatInt(memberID, 10), now.UnixMilli())
	}
	v, err := sessionScript.Run(ctx, l.cache, keys, args...).Slice()
	l.record(ctx, err)
	if err != nil {
		return nil, err
	}
	out, err := parseSession(v, checks, member)
	if err != nil {
		return nil, fmt.Errorf("limit: session script: %w", err)
	}
	return out, nil
}

// redisPrefix is redis_rate's: its keys are "rate:" + key.
const redisPrefix = "rate:"

// parseSession reads the script's answer: {results, value or nil, member
// result or nil}.
func parseSession(v []any, checks []Check, member *Check) (*SessionResult, error) {
	if len(v) != 3 {
		return nil, fmt.Errorf("%d values; want 3", len(v))
	}
	list, ok := v[0].([]any)
	if !ok || len(list) > len(checks) {
		return nil, fmt.Errorf("results %v", v[0])
	}
	out := &SessionResult{Results: make([]Result, len(list))}
	for i, r := range list {
		res, err := parseGCRA(r, checks[i].Limit)
		if err != nil {
			return nil, err
		}
		out.Results[i] = res
	}
	if s, ok := v[1].(string); ok {
		out.Value, out.Found = s, true
	}
	if v[2] != nil {
		if member == nil {
			return nil, errors.New("a member result for no member check")
		}
		res, err := parseGCRA(v[2], member.Limit)
		if err != nil {
			return nil, err
		}
		out.Member = &res
	}
	return out, nil
}

// parseGCRA reads one GCRA result, {allowed, remaining, retry_after,
// reset_after} as redis_rate's script answers it.
func parseGCRA(v any, lim Limit) (Result, error) {
	f, ok := v.([]any)
	if !ok || len(f) != 4 {
		return Result{}, fmt.Errorf("GCRA result %v", v)
	}
	allowed, ok1 := f[0].(int64)
	remaining, ok2 := f[1].(int64)
	retry, ok3 := f[2].(string)
	reset, ok4 := f[3].(string)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return Result{}, fmt.Errorf("GCRA result %v", v)
	}
	ra, err1 := strconv.ParseFloat(retry, 64)
	rs, err2 := strconv.ParseFloat(reset, 64)
	if err1 != nil || err2 != nil {
		return Result{}, fmt.Errorf("GCRA result %v", v)
	}
	return Result{Limit: lim, Allowed: allowed > 0, Remaining: int(remaining), RetryAfter: seconds(ra), ResetAfter: seconds(rs)}, nil
}

// seconds is redis_rate's dur: -1 stays -1 (no retry needed).
func seconds(f float64) time.Duration {
	if f == -1 {
		return -1
	}
	return time.Duration(f * float64(time.Second))
}

// sessionScript is AllowSession. KEYS: the checks' keys, the session key,
// then the member check's key if any. ARGV: the number of checks, then
// burst, rate, period of each check, then, with a member check, its burst,
// rate, period, the member id and now (Unix ms). The GCRA is takeLua's
// take with a cost of 1: redis_rate's allowN, so that it keeps the same
// state under the same keys.
var sessionScript = redis.NewScript(takeLua + `
local n = tonumber(ARGV[1])
local results = {}
for i = 1, n do
  local a = 1 + 3 * (i - 1)
  local r = take(KEYS[i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), 1)
  results[i] = r
  if r[1] == 0 then
    return {results, false, false}
  end
end

local v = redis.call("GET", KEYS[n + 1])
local member = false
if v and KEYS[n + 2] then
  local a = 1 + 3 * n
  local m, e, u = string.match(v, "^v1:(%d+):(%d+):(%d+):[^:]+$")
  local t = tonumber(ARGV[a + 5])
  if m and m == ARGV[a + 4] and tonumber(e) > t and tonumber(u) > t then
    member = take(KEYS[n + 2], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), 1)
  end
end
return {results, v, member}
`)
