package gate

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// Security configures the gate's authentication and rate limiting. The zero
// value authenticates (members by token; no admin key, so no admin) and does
// not limit.
//
// Authentication: a request with "Authorization: Bearer TOKEN" is the
// admin's when TOKEN is AdminKey, else the member's whose session TOKEN
// starts (see internal/members/session.go). The gate looks the session up
// in Redis (session:{SHA256(TOKEN)}, in the format of package
// internal/members/sessioncache) and believes what it finds only when its
// MAC, made with the fleet key, verifies; on a miss, on a value that does
// not verify, with Redis down, or without a fleet key (nothing to verify
// with) it asks the members service (GET /sessions), which reads the
// database. A request without the header is anonymous. Every request then carries the gate's auth object
// (service.Auth) and each service decides what its caller may do. With
// AuthOff the gate sends no auth object: the book's open behaviour.
type Security struct {
	// AuthOff turns authentication off: the book's open behaviour.
	AuthOff bool
	// AdminKey, sent as the bearer token, manages goods and stores; empty
	// means nobody can.
	AdminKey string
	// TrustedProxies are the networks of proxies whose X-Forwarded-For the
	// gate believes (see ClientAddr).
	TrustedProxies []netip.Prefix
	// Limits of the rate limiter (ratelimit.go); a zero Limit is off.
	RateLimit       Limit // every request, per client address
	MemberRateLimit Limit // every request with a member's token, per member
	StrictRateLimit Limit // logins and writes, per client address
}

// HashToken returns the hash of a token as sessions are stored: SHA-256, hex.
func HashToken(token string) string { return sessioncache.HashToken(token) }

// maxToken bounds the bearer tokens worth hashing (a session token is 43
// characters; the admin key is the operator's choice).
const maxToken = 1024

var errBadToken = errors.New("invalid or expired token")

// bearer returns the credential r presents: the Authorization header (a
// chat socket may give its token as ?token= instead), "" when none.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if h == "" && isChatSocket(r) && r.URL.Query().Get("token") != "" {
		// Browsers cannot set headers on a WebSocket: the chat socket
		// also takes its token from ?token=.
		h = "Bearer " + r.URL.Query().Get("token")
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

// isAdmin reports whether token is the admin key: one SHA-256 and a
// constant-time comparison, no lookup, so it is cheap enough to run before
// the rate limits.
func (gd *guard) isAdmin(token string) bool {
	if gd.adminHash == nil || len(token) > maxToken {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], gd.adminHash) == 1
}

// authenticate returns the identity of r to send with its request, nil
// with authentication off. A 401 (or 503) is written when the token cannot
// be accepted; its status is returned then.
func (g *Gate) authenticate(ctx context.Context, w http.ResponseWriter, r *http.Request) (auth *service.Auth, status int) {
	sec := &g.cfg.Security
	if sec.AuthOff {
		return nil, 0
	}
	h := bearer(r)
	addr := addrKey(ClientAddr(r, sec.TrustedProxies))
	if addr == "unknown" {
		addr = ""
	}
	if h == "" {
		return &service.Auth{Addr: addr}, 0
	}
	token, ok := bearerToken(h)
	if !ok {
		return nil, writeUnauthorized(w, "malformed Authorization header: want Bearer TOKEN")
	}
	if len(token) > maxToken {
		return nil, writeUnauthorized(w, errBadToken.Error())
	}
	if g.guard.isAdmin(token) {
		return &service.Auth{Admin: true, Addr: addr}, 0
	}
	hash := HashToken(token)
	member, err := g.session(ctx, hash)
	switch {
	case errors.Is(err, errBadToken):
		return nil, writeUnauthorized(w, err.Error())
	case err != nil:
		if r.Context().Err() != nil {
			return nil, 499
		}
		g.log.Warn("cannot check a token: members service unavailable", "err", err)
		return nil, writeError(w, http.StatusServiceUnavailable, "cannot check the token now; retry")
	}
	return &service.Auth{Member: member, Session: hash, Addr: addr}, 0
}

func writeUnauthorized(w http.ResponseWriter, msg string) int {
	w.Header().Set("WWW-Authenticate", `Bearer realm="microshop"`)
	return writeError(w, http.StatusUnauthorized, msg)
}

// session returns the member of the live session with the given hash:
// from Redis when the cached value verifies, else from the members service.
// errBadToken means the token is unknown, expired or revoked.
func (g *Gate) session(ctx context.Context, hash string) (int64, error) {
	if sg, c := g.guard.sessions, g.cfg.Cache; sg != nil && c != nil {
		if probe, use := g.guard.limiter.useRedis(time.Now()); use {
			v, err := c.Get(ctx, sessioncache.Key(c, hash)).Result()
			g.guard.limiter.done(ctx, probe, err)
			if err == nil {
				switch s := sg.Open(hash, v, time.Now()); s.State {
				case sessioncache.Live:
					return s.Member, nil
				case sessioncache.Ended:
					return 0, errBadToken
				default:
					g.guard.unverified(g.log)
				}
			}
		}
	}
	m, err := g.client.CallAuth(ctx, &service.Auth{Session: hash}, "GET", "/sessions", nil)
	if err != nil {
		return 0, err
	}
	if Status(m) == http.StatusUnauthorized {
		return 0, errBadToken
	}
	if Status(m) != http.StatusOK {
		return 0, errors.New("GET /sessions answered " + strconv.Itoa(Status(m)) + " " + m.ErrorMessage)
	}
	var res struct {
		UserID int64 `json:"userid"`
	}
	if err := json.Unmarshal(m.Raw, &res); err != nil || res.UserID < 1 {
		return 0, errors.New("GET /sessions: no userid in the answer")
	}
	return res.UserID, nil
}

// ParseTrustedProxies parses a comma-separated list of CIDRs or addresses
// (an address is its own /32 or /128).
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, errors.New("trusted proxies: " + strconv.Quote(f) + " is neither a CIDR nor an address")
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func trusted(a netip.Addr, proxies []netip.Prefix) bool {
	for _, p := range proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr returns the address of the client of r: the direct peer,
// unless the peer is a trusted proxy; then the rightmost address of
// X-Forwarded-For that is not a trusted proxy (each trusted proxy appends
// the address it got the request from, so everything left of the first
// untrusted hop may be forged by the client). When every hop is trusted,
// the leftmost; a malformed entry ends the walk at the last good one.
func ClientAddr(r *http.Request, proxies []netip.Prefix) netip.Addr {
	peer := parseHop(r.RemoteAddr)
	if !peer.IsValid() || len(proxies) == 0 || !trusted(peer, proxies) {
		return peer
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a := parseHop(hops[i])
		if !a.IsValid() {
			break
		}
		client = a
		if !trusted(a, proxies) {
			break
		}
	}
	return client
}

// parseHop parses an address with or without a port.
func parseHop(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// logSecurity tells at start-up how the gate protects the fleet, loudly
// when it does not.
func (g *Gate) logSecurity() {
	sec := &g.cfg.Security
	if sec.AuthOff {
		g.log.Warn("AUTHENTICATION IS OFF (--auth=off): anyone can act as any member and manage goods and stores, as in the book. Never expose this gate.")
	} else if sec.AdminKey == "" {
		g.log.Warn("no admin key (--admin-key): nobody can add or delete goods and stores through this gate")
	}
	g.log.Info("rate limits", "per_address", FormatLimit(sec.RateLimit), "per_member", FormatLimit(sec.MemberRateLimit),
		"strict_per_address", FormatLimit(sec.StrictRateLimit), "shared_in_redis", g.cfg.Cache != nil, "trusted_proxies", len(sec.TrustedProxies))
}

type authKey struct{}

func withAuth(ctx context.Context, a *service.Auth) context.Context {
	return context.WithValue(ctx, authKey{}, a)
}

// AuthFrom returns the identity the gate established for the request whose
// context is ctx (for handlers the gate serves itself, like chat sockets):
// nil with authentication off; Member 0 for an anonymous client.
func AuthFrom(ctx context.Context) *service.Auth {
	a, _ := ctx.Value(authKey{}).(*service.Auth)
	return a
}

// setRetryAfter gives a service's 429 (the login lockout) its Retry-After
// header, from the answer's retryafter field (seconds).
func setRetryAfter(h http.Header, m *packet.Message) {
	var res struct {
		RetryAfter int64 `json:"retryafter"`
	}
	json.Unmarshal(m.Raw, &res)
	h.Set("Retry-After", strconv.FormatInt(max(res.RetryAfter, 1), 10))
}
