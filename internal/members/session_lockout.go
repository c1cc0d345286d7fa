package members

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/service"
)

// Login lockout. When the gate tells the client's address (Auth.Addr, sent
// by a microshop gate with authentication on), logins for a username are
// counted per address and per username:
//
//   - after LockoutThreshold failed logins for a username from one address
//     within LockoutWindow, that address's logins for it get a 429 until
//     the window (counted from the first of them) has passed, even with the
//     right password; a successful login from the address resets its count;
//   - after LockoutUsernameThreshold failed logins for the username from
//     all addresses together, every address gets the 429 until the window
//     has passed. An address that is locked out adds nothing more to that
//     count, so one address can no longer lock a member out: it takes
//     LockoutUsernameThreshold / LockoutThreshold addresses (20 by default).
//
// Without an address (a book gate, or a gate with --auth=off) there is one
// count per username, with LockoutThreshold, as before.
//
// Every attempt is counted before the password is checked (one script,
// atomic), so concurrent guesses cannot slip past a threshold. The counters
// lockout:{USERNAME} and lockout:{USERNAME}:ADDRESS are runtime state
// (DESIGN §2): a FLUSHALL resets them. With Redis down there is no lockout
// (logged); the gate's strict rate limit still bounds guessing.
const (
	DefaultLockoutThreshold         = 5
	DefaultLockoutUsernameThreshold = 100
	DefaultLockoutWindow            = 15 * time.Minute
)

// countAttempt counts an attempt. KEYS: the per-address counter, then the
// username's counter; or the username's counter alone. ARGV[1]: the window
// in ms; ARGV[2]: the per-address threshold (with two keys). It answers
// {which, count, ms left}: which is 1 when the per-address counter is over
// its threshold (the username's is then left alone), 2 otherwise, with the
// username's count.
var countAttempt = redis.NewScript(`
local function count(key)
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then redis.call('PEXPIRE', key, ARGV[1]); ttl = tonumber(ARGV[1]) end
  return n, ttl
end
if #KEYS == 2 then
  local n, ttl = count(KEYS[1])
  if n > tonumber(ARGV[2]) then return {1, n, ttl} end
end
local n, ttl = count(KEYS[#KEYS])
return {2, n, ttl}
`)

func (s *Service) lockoutKey(username string) string {
	return s.cache.Key("lockout:{" + username + "}")
}

func (s *Service) addrLockoutKey(username, addr string) string {
	return s.cache.Key("lockout:{" + username + "}:" + addr)
}

func (s *Service) lockoutLimits() (perAddr, perUsername int, window time.Duration) {
	perAddr, perUsername, window = s.LockoutThreshold, s.LockoutUsernameThreshold, s.LockoutWindow
	if perAddr <= 0 {
		perAddr = DefaultLockoutThreshold
	}
	if perUsername <= 0 {
		perUsername = DefaultLockoutUsernameThreshold
	}
	if window <= 0 {
		window = DefaultLockoutWindow
	}
	return perAddr, perUsername, window
}

// attempt counts a login attempt for username (already checked by
// validUsername) from addr ("" when unknown) and returns a 429 when it is
// locked out.
func (s *Service) attempt(ctx context.Context, username, addr string) error {
	if s.cache == nil {
		return nil
	}
	perAddr, perUsername, window := s.lockoutLimits()
	keys := []string{s.lockoutKey(username)}
	if addr != "" {
		keys = []string{s.addrLockoutKey(username, addr), keys[0]}
	} else {
		perUsername = perAddr
	}
	v, err := countAttempt.Run(ctx, s.cache, keys, window.Milliseconds(), perAddr).Int64Slice()
	if err != nil || len(v) != 3 {
		s.log.Warn("login lockout unavailable (Redis); login not limited per username", "err", err)
		return nil
	}
	if v[0] == 2 && v[1] <= int64(perUsername) {
		return nil
	}
	secs := max((v[2]+999)/1000, 1)
	msg := "too many failed logins for this username; try again in %d s"
	if v[0] == 1 {
		msg = "too many failed logins for this username from your address; try again in %d s"
	}
	e := service.TooManyRequests(msg, secs)
	e.Fields = service.Result{"retryafter": secs}
	return e
}

// forgetSuccess runs after a successful login from an address: it deletes
// the address's counter (KEYS[1]) and takes the success's own attempt back
// off the username's (KEYS[2]), leaving its failures to expire.
var forgetSuccess = redis.NewScript(`
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) and tonumber(redis.call('GET', KEYS[2])) > 0 then
  redis.call('DECR', KEYS[2])
end
return 1
`)

// loggedIn runs after username logged in from addr ("" when unknown).
// Without an address it resets the username's count. With one it resets
// the address's count and removes this attempt from the username's, whose
// failures are left to expire: a member logging in now and then neither
// clears a distributed attack's tally nor builds one up.
func (s *Service) loggedIn(ctx context.Context, username, addr string) {
	if s.cache == nil {
		return
	}
	var err error
	if addr == "" {
		err = s.cache.Del(ctx, s.lockoutKey(username)).Err()
	} else {
		err = forgetSuccess.Run(ctx, s.cache, []string{s.addrLockoutKey(username, addr), s.lockoutKey(username)}).Err()
	}
	if err != nil {
		s.log.Warn("login lockout counter not reset (Redis)", "err", err)
	}
}
