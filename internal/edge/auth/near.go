package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
)

// nearSessions keeps in the gate's memory the sessions it read from Redis
// and verified, so that a member's next requests are admitted without a
// round trip. It is kept exact as the goods near cache is: the members
// service announces every revoked session (sessioncache.Topic) once its
// tombstone is in Redis, and a cache.Follower drops it here on hearing it;
// whatever the follower cannot be sure to have heard (a lost, silent or
// renewed connection, a FLUSHALL) empties everything, and while it is not
// subscribed nothing is kept. A session is kept until the first of its
// expiry, the end of validity its cached value carries, and NearMaxAge
// after it was read. A logout or an account deletion through this gate
// drops the token at once and keeps it out until the members service has
// surely answered (bar): its own invalidation may reach this gate after
// the answer does.
type nearSessions struct {
	follow *cache.Follower

	mu      sync.RWMutex
	live    bool
	gen     uint64 // bumped by every invalidation, bar and reset
	entries map[[sha256.Size]byte]nearSession
	barred  map[[sha256.Size]byte]time.Time // until when a token is not kept

	heardN atomic.Uint64 // invalidations heard (tests)
	resets atomic.Uint64 // times emptied wholesale (tests)
}

// nearSession is one verified live session.
type nearSession struct {
	member int64
	until  time.Time
}

// nearSessionsMax bounds the sessions kept (about 6 MB): past it they are
// all forgotten.
const nearSessionsMax = 1 << 16

// newNearSessions starts following the sessions' invalidations on c.
func newNearSessions(c *cache.Cache, log *slog.Logger) *nearSessions {
	n := &nearSessions{entries: map[[sha256.Size]byte]nearSession{}, barred: map[[sha256.Size]byte]time.Time{}}
	n.follow = cache.Follow(c, sessioncache.Topic, log, n.heard, n.reset)
	return n
}

// close stops following.
func (n *nearSessions) close() { n.follow.Close() }

// get returns the member of the session of token sum, kept and live at now.
func (n *nearSessions) get(sum [sha256.Size]byte, now time.Time) (int64, bool) {
	n.mu.RLock()
	e, ok := n.entries[sum]
	live := n.live
	n.mu.RUnlock()
	if !ok || !live || !now.Before(e.until) {
		return 0, false
	}
	return e.member, true
}

// token returns the generation to hand to put, read before Redis is.
func (n *nearSessions) token() uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.gen
}

// put keeps the session of token sum, read from Redis at read after token
// returned gen, unless an invalidation came since (the value read may be
// older than the tombstone it announced) or the token is barred.
func (n *nearSessions) put(gen uint64, sum [sha256.Size]byte, s sessioncache.Session, read time.Time) {
	until := read.Add(sessioncache.NearMaxAge)
	for _, t := range []time.Time{s.Expires, s.Until} {
		if t.Before(until) {
			until = t
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.live || n.gen != gen || read.Before(n.barred[sum]) {
		return
	}
	if len(n.entries) >= nearSessionsMax {
		clear(n.entries)
	}
	n.entries[sum] = nearSession{member: s.Member, until: until}
}

// bar drops the session of token sum and keeps it out for NearMaxAge: r,
// which presents it, may end it (a logout, an account deletion).
func (n *nearSessions) bar(sum [sha256.Size]byte, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	delete(n.entries, sum)
	if len(n.barred) >= nearSessionsMax {
		for k, t := range n.barred {
			if !now.Before(t) {
				delete(n.barred, k)
			}
		}
	}
	n.barred[sum] = now.Add(sessioncache.NearMaxAge)
}

// heard drops the session whose token hash is hash; a name that is not a
// token hash empties everything, to be safe.
func (n *nearSessions) heard(hash string) {
	defer n.heardN.Add(1)
	var sum [sha256.Size]byte
	if _, err := hex.Decode(sum[:], []byte(hash)); err != nil || !sessioncache.ValidHash(hash) {
		n.mu.RLock()
		live := n.live
		n.mu.RUnlock()
		n.reset(live)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	delete(n.entries, sum)
}

// reset empties everything; live says whether sessions may be kept from
// now on.
func (n *nearSessions) reset(live bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	clear(n.entries)
	n.live = live
	n.resets.Add(1)
}

// len returns how many sessions are kept (tests).
func (n *nearSessions) len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.entries)
}

// mayEnd reports whether r may end the session it presents: a logout, or
// the deletion of the account (with the book's GET-free DELETE /members).
func mayEnd(r *http.Request) bool {
	return r.Method == http.MethodDelete && (r.URL.Path == "/sessions" || r.URL.Path == "/members")
}
