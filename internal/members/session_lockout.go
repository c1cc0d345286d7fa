package members

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/service"
)

// Login lockout: after LockoutThreshold logins for one username within
// LockoutWindow that did not succeed, further logins for it get a 429 until
// the window (counted from the first of them) has passed, even with the
// right password; a successful login resets the count.
//
// Every attempt is counted before the password is checked (one atomic
// INCR, and PEXPIRE on the first), and a success deletes the counter, so
// concurrent guesses cannot slip past the threshold. The counter
// lockout:{USERNAME} is runtime state (DESIGN §2): a FLUSHALL resets it.
// With Redis down there is no lockout (logged); the gate's strict rate
// limit still bounds guessing.
const (
	DefaultLockoutThreshold = 5
	DefaultLockoutWindow    = 15 * time.Minute
)

// countAttempt increments the counter and answers {count, ms left}.
var countAttempt = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
`)

func (s *Service) lockoutKey(username string) string {
	return s.cache.Key("lockout:{" + username + "}")
}

// attempt counts a login attempt for username (already checked by
// validUsername) and returns a 429 when the username is locked out.
func (s *Service) attempt(ctx context.Context, username string) error {
	if s.cache == nil {
		return nil
	}
	threshold, window := s.LockoutThreshold, s.LockoutWindow
	if threshold <= 0 {
		threshold = DefaultLockoutThreshold
	}
	if window <= 0 {
		window = DefaultLockoutWindow
	}
	v, err := countAttempt.Run(ctx, s.cache, []string{s.lockoutKey(username)}, window.Milliseconds()).Int64Slice()
	if err != nil || len(v) != 2 {
		s.log.Warn("login lockout unavailable (Redis); login not limited per username", "err", err)
		return nil
	}
	if v[0] <= int64(threshold) {
		return nil
	}
	secs := (v[1] + 999) / 1000
	e := service.TooManyRequests("too many failed logins for this username; try again in %d s", secs)
	e.Fields = service.Result{"retryafter": max(secs, 1)}
	return e
}

// loggedIn resets username's counter after a successful login.
func (s *Service) loggedIn(ctx context.Context, username string) {
	if s.cache == nil {
		return
	}
	if err := s.cache.Del(ctx, s.lockoutKey(username)).Err(); err != nil {
		s.log.Warn("login lockout counter not reset (Redis)", "err", err)
	}
}
