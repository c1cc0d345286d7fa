package members

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/service"
)

// Login lockout: guessing stays capped, and yet no attacker, from however
// many addresses, can keep a member from logging in from an address the
// member has logged in from before.
//
// Wrong passwords are counted per username and client address (the address
// the gate vouches for, Auth.Addr) and per username:
//
//   - after LockoutThreshold wrong passwords for a username from one
//     address within LockoutWindow, that address's logins for it get a 429
//     until the window (counted from the first of them) has passed, even
//     with the right password; a successful login from the address resets
//     its count. A guesser locks out only itself.
//   - after LockoutUsernameThreshold wrong passwords for the username from
//     all addresses together, the username's logins get a 429 until the
//     window has passed, from every address except the member's known
//     addresses: those it logged in from successfully within
//     KnownAddressTTL, recorded in the database (login_addresses). This caps
//     a distributed attack at LockoutUsernameThreshold guesses a window
//     however many addresses it has (an address that is locked out adds
//     nothing: it is refused before its password is checked), and yet it
//     cannot lock the member out, since the member's own address proved it
//     knows the password, which no guess can do without succeeding.
//
// This is OWASP's answer to lockout abuse, the device cookie ("Slow Down
// Online Guessing Attacks with Device Cookies"), with the address that
// logged in before as the device: the book's clients keep no cookies, and
// the gate already vouches for the address. An address is a weaker device
// than a cookie: a member logging in from a new address during an attack
// waits for the window like everyone else, and an attacker behind the
// member's own address (a shared NAT) shares its per-address count. A known
// address keeps its own per-address cap, so in all an attacker gets at most
// LockoutUsernameThreshold + LockoutThreshold × (the member's known
// addresses) guesses a window. Known addresses live in the database, not in
// Redis, so that a FLUSHALL, Redis being down, or anyone who can write to
// Redis cannot take them away (nor add one).
//
// Only a wrong password counts: a correct login never does, however many
// run at once. (The lockout used to count every attempt before checking its
// password and take the successes back afterwards, so the sixth of six
// simultaneous correct logins found five attempts counted and got the 429.)
// So that concurrent guesses cannot slip past a threshold either, the lock
// is checked again once the login holds one of the hasher's slots, and a
// failure is counted before that slot is released (checkPassword): at any
// moment at most one attempt per slot in the fleet (GOMAXPROCS per members
// process) is between its check and its count, which bounds how far a
// threshold can be overrun.
//
// Without an address (behind a book gate, or a gate with --auth=off) there
// is one count per username, with LockoutThreshold: a guesser can then lock
// the member out, which nothing that cannot tell clients apart can avoid.
// With a fleet key, the members service takes logins only from gates
// (requireGate), so nobody can guess or count failures, or choose the
// address they are counted under, by reaching the members port directly.
//
// The counters lockout:{USERNAME}:ADDRESS and lockout:{USERNAME} are
// runtime state in Redis (DESIGN §2: a FLUSHALL resets them, which lets
// nobody in). When Redis fails, each members process counts in its own
// memory instead (localLockout) until Redis answers again: the limits then
// hold per process (with N members processes, up to N times the
// thresholds), never not at all. That memory is bounded: at most
// localLockoutMax counters (under 50 MB even with the longest usernames),
// each made by a wrong password, that is by a full argon2id verification;
// when they are all live, a username this process holds no count for is
// treated as locked (its known addresses still get in) until they expire.
const (
	DefaultLockoutThreshold         = 5
	DefaultLockoutUsernameThreshold = 100
	DefaultLockoutWindow            = 15 * time.Minute
	// KnownAddressTTL is how long after a successful login its address
	// stays exempt from the username's lock.
	KnownAddressTTL = 90 * 24 * time.Hour
)

// localLockoutMax bounds the counters of the in-process fallback.
const localLockoutMax = 100_000

// maxAddrLen bounds the client address a gate may report (an IPv6 /64 is
// at most 24 characters).
const maxAddrLen = 64

// readCounts answers {count, ms left} for each of KEYS (0 and -2 for a
// missing counter).
var readCounts = redis.NewScript(`
local r = {}
for _, k in ipairs(KEYS) do
  r[#r + 1] = tonumber(redis.call('GET', k) or '0')
  r[#r + 1] = redis.call('PTTL', k)
end
return r
`)

// countFailure adds one to each of KEYS; a new counter (or one without a
// TTL) lives for ARGV[1] ms (the window, less the time since the attempt
// arrived).
var countFailure = redis.NewScript(`
for _, k in ipairs(KEYS) do
  local n = redis.call('INCR', k)
  if n == 1 or redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ARGV[1]) end
end
return 1
`)

// loginAttempt is one login as the lockout sees it.
type loginAttempt struct {
	username string // valid (validUsername)
	addr     string // "" when unknown
	member   int64  // 0 for an unknown username
	known    int8   // whether addr is a known address of member: 0 not asked yet, 1 yes, -1 no
	// at is when the attempt arrived: a failure's window starts then, not
	// when its password check ended (tens of milliseconds later).
	at time.Time
}

// lockState is a counter: its count and the time left in its window.
type lockState struct {
	n    int64
	left time.Duration
}

// lockout is the login lockout's state outside Redis.
type lockout struct {
	local   *localLockout
	onLocal atomic.Bool // counting in memory (logged when it changes)
}

func newLockout() *lockout { return &lockout{local: newLocalLockout(localLockoutMax)} }

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

// lockKeys returns the names of a's counters: the address's, then the
// username's (which all share the username's hash tag, for a Redis
// Cluster); the username's alone without an address.
func lockKeys(a *loginAttempt) []string {
	user := "lockout:{" + a.username + "}"
	if a.addr == "" {
		return []string{user}
	}
	return []string{user + ":" + a.addr, user}
}

// redisFailed reports whether err (of a call made with ctx) means
// counting in memory, and logs the switch to it when Redis failed (or back
// when Redis answered).
func (s *Service) redisFailed(ctx context.Context, err error) bool {
	if err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() == nil && !s.lock.onLocal.Swap(true) {
			s.log.Warn("login lockout counting in this process's memory until Redis answers (limits per members process)", "err", err)
		}
		return true
	}
	if s.lock.onLocal.Swap(false) {
		s.log.Info("login lockout counting in Redis again")
	}
	return false
}

func (s *Service) prefixed(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = s.cache.Key(k)
	}
	return out
}

// counts returns the states of keys, and whether the in-process fallback
// is saturated and holds no count for the last key (the username's).
func (s *Service) counts(ctx context.Context, keys []string) ([]lockState, bool) {
	if s.cache != nil {
		v, err := readCounts.Run(ctx, s.cache, s.prefixed(keys)).Int64Slice()
		if err == nil && len(v) != 2*len(keys) {
			err = errors.New("members: lockout: unexpected answer from Redis")
		}
		if !s.redisFailed(ctx, err) {
			st := make([]lockState, len(keys))
			for i := range keys {
				st[i] = lockState{n: v[2*i], left: time.Duration(max(v[2*i+1], 0)) * time.Millisecond}
			}
			return st, false
		}
	}
	return s.lock.local.get(keys, s.now())
}

// checkLock returns a 429 when a is locked out (see above), nil when it
// may have its password checked.
func (s *Service) checkLock(ctx context.Context, a *loginAttempt) error {
	perAddr, perUsername, _ := s.lockoutLimits()
	keys := lockKeys(a)
	st, saturated := s.counts(ctx, keys)
	if a.addr != "" && st[0].n >= int64(perAddr) {
		return lockedOut("too many failed logins for this username from your address; try again in %d s", st[0].left)
	}
	if a.addr == "" {
		perUsername = perAddr
	}
	user := st[len(st)-1]
	if user.n < int64(perUsername) && !saturated {
		return nil
	}
	if known, err := s.knownAddr(ctx, a); err != nil || known {
		return err
	}
	left := user.left
	if saturated {
		left = s.lock.local.saturatedFor(s.now())
	}
	return lockedOut("too many failed logins for this username; try again in %d s (or from an address you have logged in from before)", left)
}

func lockedOut(format string, left time.Duration) error {
	secs := max(int64((left+time.Second-1)/time.Second), 1)
	e := service.TooManyRequests(format, secs)
	e.Fields = service.Result{"retryafter": secs}
	return e
}

// knownAddr reports whether a's address is one its member logged in from
// within KnownAddressTTL (asked once per attempt).
func (s *Service) knownAddr(ctx context.Context, a *loginAttempt) (bool, error) {
	if a.addr == "" || a.member == 0 {
		return false, nil
	}
	if a.known == 0 {
		known, err := s.store.knownAddr(ctx, a.member, a.addr, s.now().Add(-KnownAddressTTL))
		if err != nil {
			return false, err
		}
		a.known = -1
		if known {
			a.known = 1
		}
	}
	return a.known == 1, nil
}

// loginFailed counts a wrong password for a, also when the caller has
// gone (a guesser must not escape the count by hanging up).
func (s *Service) loginFailed(ctx context.Context, a *loginAttempt) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _, window := s.lockoutLimits()
	window = max(window-s.now().Sub(a.at), time.Millisecond)
	keys := lockKeys(a)
	if s.cache != nil {
		err := countFailure.Run(ctx, s.cache, s.prefixed(keys), window.Milliseconds()).Err()
		if !s.redisFailed(ctx, err) {
			return
		}
	}
	s.lock.local.add(keys, window, s.now())
}

// loginSucceeded runs after a logged in: it resets the address's count
// (without an address, the username's), and records the address as known.
// The username's count is left to expire: a member logging in now and then
// neither clears a distributed attack's tally nor builds one up.
func (s *Service) loginSucceeded(ctx context.Context, a *loginAttempt) {
	key := lockKeys(a)[0]
	s.lock.local.del(key)
	if s.cache != nil {
		s.redisFailed(ctx, s.cache.Del(ctx, s.cache.Key(key)).Err())
	}
	if a.addr != "" && a.member != 0 {
		if err := s.store.rememberAddr(ctx, a.member, a.addr, s.now()); err != nil {
			s.log.Warn("login address not remembered; it is not exempt from a lock on the username", "userid", a.member, "err", err)
		}
	}
}

// localLockout counts failures in memory when Redis fails, with at most max
// counters.
type localLockout struct {
	mu        sync.Mutex
	max       int
	counts    map[string]localCount
	nextSweep time.Time
	fullUntil time.Time // a count found no room: the fallback is saturated until then
}

type localCount struct {
	n    int64
	ends time.Time
}

func newLocalLockout(max int) *localLockout {
	return &localLockout{max: max, counts: map[string]localCount{}}
}

// get returns the states of keys at now, and whether the fallback is
// saturated and holds no count for the last key.
func (l *localLockout) get(keys []string, now time.Time) ([]lockState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := make([]lockState, len(keys))
	for i, k := range keys {
		if c, ok := l.counts[k]; ok && c.ends.After(now) {
			st[i] = lockState{n: c.n, left: c.ends.Sub(now)}
		}
	}
	return st, now.Before(l.fullUntil) && st[len(st)-1].n == 0
}

// add counts a failure on each of keys at now.
func (l *localLockout) add(keys []string, window time.Duration, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.nextSweep) {
		// Every 10 s, and at most once a second when full.
		for k, c := range l.counts {
			if !c.ends.After(now) {
				delete(l.counts, k)
			}
		}
		l.nextSweep = now.Add(10 * time.Second)
	}
	for _, k := range keys {
		c, ok := l.counts[k]
		if !ok || !c.ends.After(now) {
			if !ok && len(l.counts) >= l.max {
				l.fullUntil = now.Add(window)
				l.nextSweep = now.Add(time.Second)
				continue
			}
			c = localCount{ends: now.Add(window)}
		}
		c.n++
		l.counts[k] = c
	}
}

func (l *localLockout) del(key string) {
	l.mu.Lock()
	delete(l.counts, key)
	l.mu.Unlock()
}

// saturatedFor returns how long the fallback stays saturated after now.
func (l *localLockout) saturatedFor(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fullUntil.Sub(now)
}
