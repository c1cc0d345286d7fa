// Package sessioncache is the contract between the members service, which
// caches login sessions in Redis, and the gates, which read that cache to
// check a bearer token without asking the members service: the key of a
// cached session, the format of its value, and the MAC that authenticates
// it. It is a leaf package (it imports only internal/cache), so that the
// gate can follow the contract without depending on the members service.
// (The redesign issue moves contracts like this one; until then this is the
// one place that knows the format.)
//
// A cached value is believed only when it carries a valid MAC made with the
// fleet key (service.FleetKey): Redis is shared with whoever can write
// there (another deployment, as --redis-prefix invites), and a value such a
// writer made up must not turn a made-up token into a member. The MAC
// covers the token hash (so a value cannot be moved to another key), the
// member, the session's expiry and the value's own end of validity, which
// is at most the cache TTL away (so a captured value written back after a
// revocation is believed for no longer than a lost tombstone would be).
// Without a fleet key there is nothing to sign with: the members service
// then writes nothing, and a gate believes nothing, asking the members
// service (which reads the database) for every token.
//
// Values, in Redis under Key(hash):
//
//	v1:MEMBER:EXPIRESMS:UNTILMS:MAC   a live session
//	v1:revoked:UNTILMS:MAC            a revoked one (the tombstone)
//
// where the times are Unix milliseconds and MAC is the unpadded base64url
// HMAC-SHA256, under a key derived from the fleet key, of
// "live|HASH|MEMBER|EXPIRESMS|UNTILMS" or "revoked|HASH|UNTILMS".
package sessioncache

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/microshop/microshop/internal/cache"
)

// Key returns the Redis key of the cached session whose token hash is hash.
func Key(c *cache.Cache, hash string) string { return c.Key("session:{" + hash + "}") }

// HashToken returns the hash under which a token is stored and cached:
// SHA-256, lowercase hex.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ValidHash reports whether h looks like a token hash (64 lowercase hex
// digits).
func ValidHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Topic is the cache.Follower topic on which the members service
// announces, by token hash, every session it revoked once its tombstone is
// in Redis, so that gates keeping verified sessions in memory drop them.
const Topic = "sessions"

// NearMaxAge bounds how long a gate keeps a session in memory without
// reading Redis again: a backstop for an invalidation that was not
// published (Redis failing at that moment).
const NearMaxAge = 5 * time.Second

// version starts every value of this format.
const version = "v1:"

// keyLabel derives the MAC key from the fleet key, so that a MAC of this
// contract can never be mistaken for another use of the fleet key (the
// auth object's signature).
const keyLabel = "microshop session cache v1"

// Signer makes and checks cached session values with a key derived from
// the fleet key. A nil *Signer (no fleet key) makes nothing and believes
// nothing.
type Signer struct {
	key []byte
}

// NewSigner returns the Signer of fleetKey, nil when it is empty.
func NewSigner(fleetKey []byte) *Signer {
	if len(fleetKey) == 0 {
		return nil
	}
	h := hmac.New(sha256.New, fleetKey)
	h.Write([]byte(keyLabel))
	return &Signer{key: h.Sum(nil)}
}

func (s *Signer) mac(msg []byte) string {
	h := hmac.New(sha256.New, s.key)
	h.Write(msg)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func liveMsg(hash, member, expires, until string) []byte {
	return []byte("live|" + hash + "|" + member + "|" + expires + "|" + until)
}

func revokedMsg(hash, until string) []byte {
	return []byte("revoked|" + hash + "|" + until)
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// Live returns the value of a live session of member with token hash hash,
// expiring at expires, to be believed until until (when it leaves Redis).
// It returns "" for a nil Signer.
func (s *Signer) Live(hash string, member int64, expires, until time.Time) string {
	if s == nil {
		return ""
	}
	m, e, u := strconv.FormatInt(member, 10), ms(expires), ms(until)
	return version + m + ":" + e + ":" + u + ":" + s.mac(liveMsg(hash, m, e, u))
}

// Revoked returns the tombstone of the session with token hash hash, to be
// believed until until. It returns "" for a nil Signer.
func (s *Signer) Revoked(hash string, until time.Time) string {
	if s == nil {
		return ""
	}
	u := ms(until)
	return version + "revoked:" + u + ":" + s.mac(revokedMsg(hash, u))
}

// State is what a cached value says about a session.
type State uint8

// The states of a cached value.
const (
	// Unverified: not a value this fleet's key made for this hash, or one
	// past its end of validity (also every value for a nil Signer). Treat
	// it as a miss: ask the members service.
	Unverified State = iota
	// Live: the session is live; Session.Member is its member.
	Live
	// Ended: the session was revoked or has expired.
	Ended
)

// Session is a verified cached value.
type Session struct {
	State   State
	Member  int64     // Live only
	Expires time.Time // Live only
	Until   time.Time // Live only: the end of the value's validity
}

// Open checks the cached value v of the session with token hash hash at
// time now.
func (s *Signer) Open(hash, v string, now time.Time) Session {
	rest, ok := strings.CutPrefix(v, version)
	if s == nil || !ok {
		return Session{}
	}
	f := strings.Split(rest, ":")
	var msg []byte
	var until string
	switch {
	case len(f) == 3 && f[0] == "revoked":
		until, msg = f[1], revokedMsg(hash, f[1])
	case len(f) == 4:
		until, msg = f[2], liveMsg(hash, f[0], f[1], f[2])
	default:
		return Session{}
	}
	if !hmac.Equal([]byte(s.mac(msg)), []byte(f[len(f)-1])) {
		return Session{}
	}
	u, err := strconv.ParseInt(until, 10, 64)
	if err != nil || u <= now.UnixMilli() {
		return Session{}
	}
	if len(f) == 3 {
		return Session{State: Ended}
	}
	member, err1 := strconv.ParseInt(f[0], 10, 64)
	exp, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || member < 1 {
		return Session{}
	}
	if exp <= now.UnixMilli() {
		return Session{State: Ended}
	}
	return Session{State: Live, Member: member, Expires: time.UnixMilli(exp), Until: time.UnixMilli(u)}
}
