package auth

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/edge/limit"
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
	}
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
