package members

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/service"
)

// Sessions.
//
// A token is 32 random bytes in unpadded base64url: opaque, so it can be
// revoked at once, and unguessable. Only its SHA-256 (hex, "the hash") is
// stored, so a copy of the database or of Redis lets nobody in.
//
// The sessions table is the system of record. Redis caches each row under
// session:{HASH} for the time the session has left (at most
// SessionCacheTTL), in the format of package sessioncache: a value
// authenticated with the fleet key (Service.FleetKey), which the gate
// verifies before believing it, so that nobody who can merely write to
// Redis can make a token up. It is written when the session starts, and
// refilled with SET NX by a lookup that found it in the database.
// Revocation deletes the row, then SETs the key to the (authenticated)
// tombstone (SET, not DEL: a lookup racing with it read the row before it
// was deleted, and its SET NX must not bring the session back). So a
// FLUSHALL logs nobody out and lets nobody in: the database decides on
// every miss. Without a fleet key nothing is cached (no gate could verify
// it): every token is checked in the database. The gate asks GET /sessions
// on a miss, on a value it cannot verify, or when Redis is down.
const (
	// DefaultSessionTTL is how long a session lasts unless configured.
	DefaultSessionTTL = 24 * time.Hour
	// SessionCacheTTL bounds the life of a cached session (its key's TTL
	// and the end of validity its MAC covers), and so the harm of a
	// tombstone lost to a Redis failure, or of a captured value written
	// back over a tombstone.
	SessionCacheTTL = 10 * time.Minute
	// sweepEvery is how often expired rows are deleted (on the next login).
	sweepEvery = time.Minute
)

// Session SQL, the same on SQLite and MySQL. Times are Unix milliseconds.
const (
	sqlSessionInsert  = `INSERT INTO sessions (hash, member_id, expires_at, created_at) VALUES (?, ?, ?, ?)`
	sqlSessionLookup  = `SELECT member_id, expires_at FROM sessions WHERE hash = ? AND expires_at > ?`
	sqlSessionDelete  = `DELETE FROM sessions WHERE hash = ?`
	sqlSessionsOf     = `SELECT hash, expires_at FROM sessions WHERE member_id = ?`
	sqlSessionsDelete = `DELETE FROM sessions WHERE member_id = ?`
	sqlSessionsSweep  = `DELETE FROM sessions WHERE expires_at <= ?`
)

// NewToken returns a new session token and its hash.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("members: token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken returns the hash under which a token is stored: SHA-256, hex.
func HashToken(token string) string { return sessioncache.HashToken(token) }

// errToken is the answer for a token that is unknown, expired or revoked.
func errToken() error { return service.Unauthorized("invalid or expired token") }

// sessions is the sessions table and its Redis cache.
type sessions struct {
	svc       *Service
	lastSweep atomic.Int64 // unix nanos
}

func cacheTTL(left time.Duration) time.Duration {
	return max(min(left, SessionCacheTTL), time.Millisecond)
}

// start begins a session for member and returns its token and expiry.
func (s *sessions) start(ctx context.Context, member int64) (string, time.Time, error) {
	token, hash, err := NewToken()
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.svc.now()
	ttl := s.svc.SessionTTL
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	expires := now.Add(ttl)
	if _, err := s.svc.store.db.ExecContext(ctx, sqlSessionInsert, hash, member, expires.UnixMilli(), now.UnixMilli()); err != nil {
		return "", time.Time{}, fmt.Errorf("members: start session: %w", err)
	}
	if c, sg := s.svc.cache, s.svc.signer(); c != nil && sg != nil {
		if err := c.Set(ctx, sessioncache.Key(c, hash), sg.Live(hash, member, expires, now.Add(cacheTTL(ttl))), cacheTTL(ttl)).Err(); err != nil {
			s.svc.log.Warn("session not cached; the gate will ask the database", "userid", member, "err", err)
		}
	}
	s.sweep(ctx, now)
	return token, expires, nil
}

// sweep deletes expired rows, and the known addresses of logins older
// than KnownAddressTTL (session_lockout.go), at most once per sweepEvery.
func (s *sessions) sweep(ctx context.Context, now time.Time) {
	last := s.lastSweep.Load()
	if now.UnixNano()-last < int64(sweepEvery) || !s.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	if _, err := s.svc.store.db.ExecContext(ctx, sqlSessionsSweep, now.UnixMilli()); err != nil {
		s.svc.log.Warn("expired sessions not swept", "err", err)
	}
	if err := s.svc.store.sweepAddrs(ctx, now.Add(-KnownAddressTTL)); err != nil {
		s.svc.log.Warn("old known login addresses not swept", "err", err)
	}
}

// lookup returns the member and expiry of the live session with hash h, a
// 401 when there is none, and refills the cache (SET NX, see above).
func (s *sessions) lookup(ctx context.Context, h string) (int64, time.Time, error) {
	if !sessioncache.ValidHash(h) {
		return 0, time.Time{}, errToken()
	}
	now := s.svc.now()
	var member, exp int64
	err := s.svc.store.db.QueryRowContext(ctx, sqlSessionLookup, h, now.UnixMilli()).Scan(&member, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, errToken()
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("members: session lookup: %w", err)
	}
	expires := time.UnixMilli(exp)
	if c, sg := s.svc.cache, s.svc.signer(); c != nil && sg != nil {
		ttl := cacheTTL(expires.Sub(now))
		if err := c.SetNX(ctx, sessioncache.Key(c, h), sg.Live(h, member, expires, now.Add(ttl)), ttl).Err(); err != nil {
			s.svc.log.Debug("session cache not refilled", "err", err)
		}
	}
	return member, expires, nil
}

// revoke ends the session with hash h: the row goes, then the tombstone is
// set. A tombstone that cannot be written is a 503 (the row is gone, but a
// cached copy may still let the token in for up to SessionCacheTTL): the
// client should retry.
func (s *sessions) revoke(ctx context.Context, h string) error {
	if !sessioncache.ValidHash(h) {
		return errToken()
	}
	var member, exp int64
	err := s.svc.store.db.QueryRowContext(ctx, sqlSessionLookup, h, int64(0)).Scan(&member, &exp)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("members: revoke: %w", err)
	}
	if _, err := s.svc.store.db.ExecContext(ctx, sqlSessionDelete, h); err != nil {
		return fmt.Errorf("members: revoke: %w", err)
	}
	left := SessionCacheTTL
	if exp != 0 {
		left = time.UnixMilli(exp).Sub(s.svc.now())
	}
	return s.bury(ctx, []string{h}, []time.Duration{left})
}

// revokeMember ends every session of member (when the member is deleted).
func (s *sessions) revokeMember(ctx context.Context, member int64) error {
	rows, err := s.svc.store.db.QueryContext(ctx, sqlSessionsOf, member)
	if err != nil {
		return fmt.Errorf("members: sessions of %d: %w", member, err)
	}
	var hashes []string
	var lefts []time.Duration
	now := s.svc.now()
	for rows.Next() {
		var h string
		var exp int64
		if err := rows.Scan(&h, &exp); err != nil {
			rows.Close()
			return fmt.Errorf("members: sessions of %d: %w", member, err)
		}
		hashes, lefts = append(hashes, h), append(lefts, time.UnixMilli(exp).Sub(now))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("members: sessions of %d: %w", member, err)
	}
	if _, err := s.svc.store.db.ExecContext(ctx, sqlSessionsDelete, member); err != nil {
		return fmt.Errorf("members: sessions of %d: %w", member, err)
	}
	return s.bury(ctx, hashes, lefts)
}

// bury sets the tombstones of revoked sessions; an expired one needs none.
func (s *sessions) bury(ctx context.Context, hashes []string, lefts []time.Duration) error {
	c, sg := s.svc.cache, s.svc.signer()
	if c == nil || sg == nil || len(hashes) == 0 {
		return nil
	}
	var failed error
	now := time.Now()
	for i, h := range hashes {
		if lefts[i] <= 0 {
			continue
		}
		ttl := cacheTTL(lefts[i])
		err := c.Set(ctx, sessioncache.Key(c, h), sg.Revoked(h, now.Add(ttl)), ttl).Err()
		if err == nil {
			s.invalidate(ctx, h)
		} else {
			failed = err
			// Keep trying in the background, until the session would
			// have expired anyway.
			h, key, ends := h, sessioncache.Key(c, h), now.Add(lefts[i])
			s.svc.repairs.Add(key, func(ctx context.Context) error {
				left := time.Until(ends)
				if left <= 0 {
					return nil
				}
				ttl := cacheTTL(left)
				if err := c.Set(ctx, key, sg.Revoked(h, time.Now().Add(ttl)), ttl).Err(); err != nil {
					return err
				}
				s.invalidate(ctx, h)
				return nil
			})
		}
	}
	if failed != nil {
		s.svc.log.Warn("session revoked in the database, but Redis did not take the tombstone; retrying it in the background", "err", failed)
		return service.Unavailable("the session is revoked, but a cached copy may still be accepted until Redis answers again (a few minutes at most); retry")
	}
	return nil
}

// invalidate tells the gates' near caches of sessions (see
// sessioncache.Topic) that the session with hash h ended, once its
// tombstone is in Redis. A failure is logged, not returned: a gate keeps a
// session for sessioncache.NearMaxAge at most, and the gate that forwarded
// the logout has dropped it already.
func (s *sessions) invalidate(ctx context.Context, h string) {
	if err := cache.Invalidate(ctx, s.svc.cache, sessioncache.Topic, h); err != nil {
		s.svc.log.Warn("session revoked, but its invalidation was not published; gates may accept it from memory for a few seconds", "err", err)
	}
}
