// Package auth admits requests at the fleet's edge: it is microshop's
// gate.Admitter. It applies the rate limits and turns a bearer token into
// the identity the gate sends with the request (service.Auth).
//
// Authentication: a request with "Authorization: Bearer TOKEN" is the
// admin's when TOKEN is the admin key, else the member's whose session
// TOKEN starts (see internal/members/session.go). The guard looks the
// session up in Redis (in the format of package
// internal/members/sessioncache, the members service's contract) and
// believes what it finds only when its MAC, made with the fleet key,
// verifies; on a miss, on a value that does not verify, with Redis down,
// or without a fleet key (nothing to verify with) it asks the members
// service (GET /sessions), which reads the database. A request without the
// header is anonymous. Each service then decides what its caller may do.
// With authentication off the guard sends no identity: the book's open
// behaviour.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/service"
)

// Config configures a Guard. The zero value authenticates (members by
// token; no admin key, so no admin) and does not limit.
type Config struct {
	// AuthOff turns authentication off: the book's open behaviour.
	AuthOff bool
	// AdminKey, sent as the bearer token, manages goods and stores; empty
	// means nobody can.
	AdminKey string
	// TrustedProxies are the networks of proxies whose X-Forwarded-For is
	// believed (see gate.ClientAddr).
	TrustedProxies []netip.Prefix
	// The rate limits; a zero Limit is off.
	RateLimit       limit.Limit // every request, per client address
	MemberRateLimit limit.Limit // every request with a member's token, per member
	StrictRateLimit limit.Limit // logins and writes, per client address
	// FleetKey verifies the sessions cached in Redis; without one the
	// guard believes none and asks the members service every time.
	FleetKey []byte
	// Cache is the deployment's Redis (nil: sessions from the members
	// service only).
	Cache *cache.Cache
	// Client asks the members service (GET /sessions).
	Client *service.Client
	// Limiter keeps the rate limits (nil: one in process).
	Limiter *limit.Limiter
	Logger  *slog.Logger
}

// Guard is the edge's gate.Admitter.
type Guard struct {
	cfg       Config
	log       *slog.Logger
	adminHash []byte // SHA-256 of the admin key, nil without one
	// sessions verifies cached sessions; nil without a fleet key, when
	// the guard believes no cached session.
	sessions *sessioncache.Signer
	// lastUnverified is when a cached session last failed verification
	// (unix nanos), to log it at most once a minute.
	lastUnverified atomic.Int64
	// members remembers the member of each token seen (see memberOf).
	members memberOf
	// gets reads cached sessions, the reads of concurrent requests sharing
	// one Redis pipeline; nil without Redis.
	gets *cache.SharedGets
	// stepsOnly, set by tests, makes Admit check one step after the other
	// always (admitSteps), to compare it with the one-trip path.
	stepsOnly bool
	// near keeps verified sessions in memory (see nearSessions); nil
	// without a fleet key or Redis, or with authentication off.
	near *nearSessions
}

// memberOf remembers the member each token hash (a session) belongs to,
// which never changes, so that Admit can check the member's limit in the
// same Redis round trip as the session lookup. It is never believed for
// authentication: only to name the limit key that the one-trip script
// takes from only if Redis holds the session as live for that member (see
// limit.Limiter.AllowSession). Bounded: emptied when full.
type memberOf struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]int64
}

// memberOfMax bounds memberOf: about 4 MB at most.
const memberOfMax = 1 << 16

func (o *memberOf) get(sum [sha256.Size]byte) int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.m[sum]
}

func (o *memberOf) put(sum [sha256.Size]byte, member int64) {
	o.mu.RLock()
	known := o.m[sum] == member
	o.mu.RUnlock()
	if known {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil || len(o.m) >= memberOfMax {
		o.m = make(map[[sha256.Size]byte]int64)
	}
	o.m[sum] = member
}

// New returns a guard.
func New(cfg Config) *Guard {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Limiter == nil {
		cfg.Limiter = limit.New(nil, cfg.Logger)
	}
	g := &Guard{cfg: cfg, log: cfg.Logger.With("component", "gate"), sessions: sessioncache.NewSigner(cfg.FleetKey)}
	if cfg.Cache != nil {
		g.gets = cache.NewSharedGets(cfg.Cache)
	}
	if cfg.AdminKey != "" {
		sum := sha256.Sum256([]byte(cfg.AdminKey))
		g.adminHash = sum[:]
	}
	if !cfg.AuthOff && g.sessions != nil && cfg.Cache != nil {
		g.near = newNearSessions(cfg.Cache, g.log)
	}
	return g
}

// Close stops following the sessions' invalidations (see nearSessions).
func (g *Guard) Close() {
	if g.near != nil {
		g.near.close()
	}
}

// maxToken bounds the bearer tokens worth hashing (a session token is 43
// characters; the admin key is the operator's choice).
const maxToken = 1024

var errBadToken = errors.New("invalid or expired token")

// bearer returns the credential r presents: the Authorization header, ""
// when none. Browsers cannot set headers on a WebSocket: a WebSocket
// upgrade (a chat socket) may give its token as ?token= instead.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if h == "" && r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		if t := r.URL.Query().Get("token"); t != "" {
			h = "Bearer " + t
		}
	}
	return h
}

// bearerToken parses an Authorization header h: the token, and ok false
// when h is not "Bearer TOKEN".
func bearerToken(h string) (token string, ok bool) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(h), " ")
	token = strings.TrimSpace(token)
	return token, strings.EqualFold(scheme, "Bearer") && token != ""
}

// credential is what a request presents, read once: the Authorization
// header (or a WebSocket's ?token=), its token, and the token's SHA-256,
// which is both what the admin key is compared with and, in hex, the hash
// sessions are stored under.
type credential struct {
	present   bool // the request presents something
	malformed bool // not "Bearer TOKEN"
	tooLong   bool // a token of more than maxToken characters: never hashed
	sum       [sha256.Size]byte
	admin     bool // the token is the admin key
}

// credential reads r's credential: one SHA-256 and, with an admin key, a
// constant-time comparison; no lookup, so it is cheap enough to run before
// the rate limits.
func (g *Guard) credential(r *http.Request) credential {
	h := bearer(r)
	if h == "" {
		return credential{}
	}
	token, ok := bearerToken(h)
	switch {
	case !ok:
		return credential{present: true, malformed: true}
	case len(token) > maxToken:
		return credential{present: true, tooLong: true}
	}
	c := credential{present: true, sum: sha256.Sum256([]byte(token))}
	c.admin = g.adminHash != nil && subtle.ConstantTimeCompare(c.sum[:], g.adminHash) == 1
	return c
}

// authenticate returns the identity of r, whose credential is cr and whose
// client address is addr ("" when unknown), to send with its request; nil
// with authentication off. A 401 (or 503) is written when the token cannot
// be accepted; its status is returned then.
func (g *Guard) authenticate(ctx context.Context, w http.ResponseWriter, r *http.Request, cr credential, addr string) (auth *service.Auth, status int) {
	if g.cfg.AuthOff {
		return nil, 0
	}
	switch {
	case !cr.present:
		return &service.Auth{Addr: addr}, 0
	case cr.malformed:
		return nil, writeUnauthorized(w, "malformed Authorization header: want Bearer TOKEN")
	case cr.tooLong:
		return nil, writeUnauthorized(w, errBadToken.Error())
	case cr.admin:
		return &service.Auth{Admin: true, Addr: addr}, 0
	}
	hash := hex.EncodeToString(cr.sum[:]) // sessioncache.HashToken's
	member, err := g.session(ctx, hash)
	if err != nil {
		return nil, g.refuse(w, r, err)
	}
	g.members.put(cr.sum, member)
	return &service.Auth{Member: member, Session: hash, Addr: addr}, 0
}

// refuse writes the answer to a token that could not be accepted, err
// from session, and returns its status: 401 for errBadToken, else 503 (or
// gate.StatusClientGone when the client has gone).
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, err error) int {
	if errors.Is(err, errBadToken) {
		return writeUnauthorized(w, err.Error())
	}
	if r.Context().Err() != nil {
		return gate.StatusClientGone
	}
	g.log.Warn("cannot check a token: members service unavailable", "err", err)
	return gate.WriteError(w, http.StatusServiceUnavailable, "cannot check the token now; retry")
}

func writeUnauthorized(w http.ResponseWriter, msg string) int {
	w.Header().Set("WWW-Authenticate", `Bearer realm="microshop"`)
	return gate.WriteError(w, http.StatusUnauthorized, msg)
}

// Ended reports whether the session with the given hash has ended (logout,
// expiry, account deleted); a failure to tell is false. Chat sockets close
// with it.
func (g *Guard) Ended(ctx context.Context, hash string) bool {
	_, err := g.session(ctx, hash)
	return errors.Is(err, errBadToken)
}

// session returns the member of the live session with the given hash:
// from Redis when the cached value verifies, else from the members service.
// errBadToken means the token is unknown, expired or revoked.
func (g *Guard) session(ctx context.Context, hash string) (int64, error) {
	if c := g.cfg.Cache; g.sessions != nil && c != nil {
		gen := g.nearToken()
		// With Redis failing, the cache's breaker answers at once.
		if v, err := g.gets.Get(ctx, sessioncache.Key(c, hash)); err == nil {
			if member, verified, err := g.cached(gen, hash, string(v), time.Now()); verified {
				return member, err
			}
		}
	}
	return g.askMembers(ctx, hash)
}

// cached reads v, the session cached in Redis under hash, at now: its
// member, or errBadToken for an ended session; verified false when v does
// not verify (the members service must be asked). A live session is kept
// in the near cache, unless an invalidation came after nearToken returned
// gen (before v was read).
func (g *Guard) cached(gen uint64, hash, v string, now time.Time) (member int64, verified bool, err error) {
	switch s := g.sessions.Open(hash, v, now); s.State {
	case sessioncache.Live:
		if g.near != nil {
			var sum [sha256.Size]byte
			if _, err := hex.Decode(sum[:], []byte(hash)); err == nil {
				g.near.put(gen, sum, s, now)
			}
		}
		return s.Member, true, nil
	case sessioncache.Ended:
		return 0, true, errBadToken
	}
	g.unverified()
	return 0, false, nil
}

// nearToken returns the near cache's generation, to read before Redis.
func (g *Guard) nearToken() uint64 {
	if g.near == nil {
		return 0
	}
	return g.near.token()
}

// askMembers asks the members service for the member of the session with
// the given hash (GET /sessions, which reads the database).
func (g *Guard) askMembers(ctx context.Context, hash string) (int64, error) {
	var res struct {
		UserID int64 `json:"userid"`
	}
	var se *service.Error
	switch err := g.cfg.Client.Do(ctx, &service.Auth{Session: hash}, "GET", "/sessions", nil, &res); {
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
		return 0, errBadToken
	case err != nil:
		return 0, fmt.Errorf("GET /sessions: %w", err)
	case res.UserID < 1:
		return 0, errors.New("GET /sessions: no userid in the answer")
	}
	return res.UserID, nil
}

// unverified logs, at most once a minute, that a cached session failed
// verification and was ignored.
func (g *Guard) unverified() {
	now := time.Now().UnixNano()
	last := g.lastUnverified.Load()
	if now-last < int64(time.Minute) || !g.lastUnverified.CompareAndSwap(last, now) {
		return
	}
	g.log.Warn("a cached session in Redis did not verify with this fleet's key and was ignored; asked the members service instead " +
		"(written by another deployment sharing Redis, made up by someone who can write to it, or cached before a fleet key change)")
}

// LogPosture tells at start-up how the guard protects the fleet, loudly
// when it does not.
func (g *Guard) LogPosture() {
	c := &g.cfg
	if c.AuthOff {
		g.log.Warn("AUTHENTICATION IS OFF (--auth=off): anyone can act as any member and manage goods and stores, as in the book. Never expose this gate.")
	} else if c.AdminKey == "" {
		g.log.Warn("no admin key (--admin-key): nobody can add or delete goods and stores through this gate")
	}
	g.log.Info("rate limits", "per_address", limit.Format(c.RateLimit), "per_member", limit.Format(c.MemberRateLimit),
		"strict_per_address", limit.Format(c.StrictRateLimit), "shared_in_redis", c.Cache != nil, "trusted_proxies", len(c.TrustedProxies))
}
