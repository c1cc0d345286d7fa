package auth

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/internal/members/sessioncache"
	"github.com/microshop/microshop/service"
)

// rateLimited counts the requests refused with 429. This package registers
// it nowhere: a program registers Collectors() with its registry.
var rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "microshop_gate_rate_limited_total",
	Help: "Requests refused with 429, by the limit that refused them: address, strict (logins and writes per address) or member.",
}, []string{"limit"})

// Collectors returns the package's metrics, for a Prometheus registry.
func Collectors() []prometheus.Collector { return []prometheus.Collector{rateLimited} }

// Admit applies the rate limits and authentication to r, in that order (so
// a flood of bad tokens is limited before it costs a lookup): per client
// address; for logins and writes, the strict limit per address; then the
// token; then per member. It returns the identity to send with the request
// (nil with authentication off), or writes the refusal (429, 401, 503) and
// returns its status (see gate.Admitter).
//
// A request that presents the admin key skips the per-address limits
// (checking the key costs one SHA-256, no lookup): those limits are for
// strangers, and the operator seeding goods or stores from one address
// must not be throttled like one (adding 11 goods in a second used to get
// a 429). The admin has no limit of its own: whoever holds the key can
// delete the shop's goods and stores anyway, so a limit would protect
// nothing, and guesses at the key are not the key, so they are limited as
// any request.
func (g *Guard) Admit(w http.ResponseWriter, r *http.Request) (*service.Auth, int) {
	c := &g.cfg
	ctx := r.Context()
	limited := !c.RateLimit.IsZero() || !c.StrictRateLimit.IsZero()
	var addr string // the client address, read once, as the limiter keys it
	if limited || !c.AuthOff {
		addr = limit.AddrKey(gate.ClientAddr(r, c.TrustedProxies))
	}
	authAddr := addr // the address the services are told: none when unknown
	if authAddr == "unknown" {
		authAddr = ""
	}
	var cr credential
	if !c.AuthOff {
		cr = g.credential(r)
		if cr.admin {
			return g.authenticate(ctx, w, r, cr, authAddr)
		}
		if g.near != nil && !g.stepsOnly && cr.present && !cr.malformed && !cr.tooLong {
			// A session kept in memory: no lookup, and the limits from
			// this gate's leases (no round trip while they last).
			now := time.Now()
			if mayEnd(r) {
				g.near.bar(cr.sum, now)
			} else if member, ok := g.near.get(cr.sum, now); ok {
				return g.admitKnown(w, r, cr, addr, authAddr, member)
			}
		}
		if g.oneTrip(r, cr) {
			if auth, status, done := g.admitOneTrip(w, r, cr, addr, authAddr); done {
				return auth, status
			}
		}
	}
	return g.admitSteps(w, r, cr, addr, authAddr)
}

// admitSteps is Admit one step after the other: each limit, then the
// session, then the member's limit, each its own Redis call (each falling
// back on its own when Redis fails).
func (g *Guard) admitSteps(w http.ResponseWriter, r *http.Request, cr credential, addr, authAddr string) (*service.Auth, int) {
	c := &g.cfg
	ctx := r.Context()
	var shown *limit.Result // the tightest result, for the headers
	check := func(key string, l limit.Limit) bool {
		if l.IsZero() {
			return true
		}
		res := c.Limiter.Allow(ctx, key, l)
		if shown == nil || !res.Allowed || res.Remaining < shown.Remaining {
			shown = &res
		}
		return res.Allowed
	}
	if !check("ip:"+addr, c.RateLimit) {
		return nil, writeLimited(w, *shown, "address")
	}
	if strictClass(r) && !check("strict:"+addr, c.StrictRateLimit) {
		return nil, writeLimited(w, *shown, "strict")
	}
	auth, status := g.authenticate(ctx, w, r, cr, authAddr)
	if status != 0 {
		return nil, status
	}
	if auth != nil && auth.Member != 0 && !check("member:"+strconv.FormatInt(auth.Member, 10), c.MemberRateLimit) {
		return nil, writeLimited(w, *shown, "member")
	}
	if shown != nil {
		shown.SetHeaders(w.Header())
	}
	return auth, 0
}

// oneTrip reports whether Admit checks r, presenting cr, in one Redis
// round trip: a member's token (not the admin key, not malformed), cached
// sessions believed (a fleet key), the limits in one Redis server, and at
// least one limit on for r (else the session's GET is the only Redis call
// anyway, and a plain GET costs Redis less than a script).
func (g *Guard) oneTrip(r *http.Request, cr credential) bool {
	c := &g.cfg
	limited := !c.RateLimit.IsZero() || !c.MemberRateLimit.IsZero() || (!c.StrictRateLimit.IsZero() && strictClass(r))
	return limited && !g.stepsOnly && cr.present && !cr.malformed && !cr.tooLong && !cr.admin &&
		g.sessions != nil && c.Cache != nil && c.Limiter.OneTrip()
}

// admitOneTrip is Admit for a member's token in one Redis round trip (see
// limit.Limiter.AllowSession): the per-address limits, the session and,
// when the token's member is known from an earlier request, the member's
// limit, in that order and with the same outcome as admitSteps. done is
// false when Redis failed and nothing was decided: admitSteps decides then,
// falling back step by step as it does.
func (g *Guard) admitOneTrip(w http.ResponseWriter, r *http.Request, cr credential, addr, authAddr string) (auth *service.Auth, status int, done bool) {
	c := &g.cfg
	ctx := r.Context()
	checks, which := g.addrChecks(r, addr, 2)
	hash := hex.EncodeToString(cr.sum[:]) // sessioncache.HashToken's
	predicted := g.members.get(cr.sum)
	var mc *limit.Check
	if predicted != 0 && !c.MemberRateLimit.IsZero() {
		mc = &limit.Check{Key: "member:" + strconv.FormatInt(predicted, 10), Limit: c.MemberRateLimit}
	}
	now := time.Now()
	gen := g.nearToken()
	sr, err := c.Limiter.AllowSession(ctx, checks, sessioncache.Key(c.Cache, hash), mc, predicted, now)
	if err != nil {
		return nil, 0, false
	}
	var shown *limit.Result // the tightest result, for the headers
	for i := range sr.Results {
		res := &sr.Results[i]
		if shown == nil || !res.Allowed || res.Remaining < shown.Remaining {
			shown = res
		}
		if !res.Allowed {
			return nil, writeLimited(w, *res, which[i]), true
		}
	}
	var member int64
	verified := false
	if sr.Found {
		member, verified, err = g.cached(gen, hash, sr.Value, now)
	}
	if !verified {
		member, err = g.askMembers(ctx, hash)
	}
	if err != nil {
		return nil, g.refuse(w, r, err), true
	}
	g.members.put(cr.sum, member)
	if !c.MemberRateLimit.IsZero() {
		res := sr.Member
		if res == nil || member != predicted {
			// Not taken by the script: the member was not known yet, or
			// Redis did not hold the session as live for them.
			v := c.Limiter.Allow(ctx, "member:"+strconv.FormatInt(member, 10), c.MemberRateLimit)
			res = &v
		}
		if shown == nil || !res.Allowed || res.Remaining < shown.Remaining {
			shown = res
		}
		if !res.Allowed {
			return nil, writeLimited(w, *res, "member"), true
		}
	}
	if shown != nil {
		shown.SetHeaders(w.Header())
	}
	return &service.Auth{Member: member, Session: hash, Addr: authAddr}, 0, true
}

// addrChecks returns the per-address limits to check for r from addr, in
// order, and their names for the metric, with room for more.
func (g *Guard) addrChecks(r *http.Request, addr string, room int) (checks []limit.Check, which []string) {
	c := &g.cfg
	checks, which = make([]limit.Check, 0, room), make([]string, 0, room)
	if !c.RateLimit.IsZero() {
		checks, which = append(checks, limit.Check{Key: "ip:" + addr, Limit: c.RateLimit}), append(which, "address")
	}
	if strictClass(r) && !c.StrictRateLimit.IsZero() {
		checks, which = append(checks, limit.Check{Key: "strict:" + addr, Limit: c.StrictRateLimit}), append(which, "strict")
	}
	return checks, which
}

// admitKnown is Admit for a member's token whose session the near cache
// holds (see nearSessions): no lookup, and every limit in one Redis round
// trip at most, none while this gate's leases last (see limit.AllowAll),
// with the outcome of admitSteps.
func (g *Guard) admitKnown(w http.ResponseWriter, r *http.Request, cr credential, addr, authAddr string, member int64) (*service.Auth, int) {
	c := &g.cfg
	checks, which := g.addrChecks(r, addr, 3)
	if !c.MemberRateLimit.IsZero() {
		checks = append(checks, limit.Check{Key: "member:" + strconv.FormatInt(member, 10), Limit: c.MemberRateLimit})
		which = append(which, "member")
	}
	var shown *limit.Result // the tightest result, for the headers
	results := c.Limiter.AllowAll(r.Context(), checks)
	for i := range results {
		res := &results[i]
		if shown == nil || !res.Allowed || res.Remaining < shown.Remaining {
			shown = res
		}
		if !res.Allowed {
			return nil, writeLimited(w, *res, which[i])
		}
	}
	if shown != nil {
		shown.SetHeaders(w.Header())
	}
	return &service.Auth{Member: member, Session: hex.EncodeToString(cr.sum[:]), Addr: authAddr}, 0
}

// strictClass reports whether r is a login (POST /sessions, or the book's
// GET /members) or a write (any method but GET and HEAD).
func strictClass(r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return r.URL.Path == "/members"
	}
	return true
}

// writeLimited writes the 429 of the limit named which.
func writeLimited(w http.ResponseWriter, res limit.Result, which string) int {
	rateLimited.WithLabelValues(which).Inc()
	res.SetHeaders(w.Header())
	return gate.WriteError(w, http.StatusTooManyRequests, "too many requests")
}
