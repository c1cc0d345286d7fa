package app

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/edge/auth"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/internal/members"
	"github.com/microshop/microshop/service"
)

// Defaults of the security flags, shared by the help text and the README.
const (
	defaultRateLimit       = "100/s"
	defaultMemberRateLimit = "100/s"
	defaultStrictRateLimit = "10/s"
	minAdminKey            = 16
)

// securityOptions are the flags of authentication, sessions and limits.
type securityOptions struct {
	guard         auth.Config // the gate's admission: auth and limits
	sessionTTL    time.Duration
	lockoutWindow time.Duration
	// generatedKey is set when `all` made up the admin key.
	generatedKey bool
	// fleetKey signs the gate's auth objects (service.FleetKey).
	fleetKey string
	// noFleetKey is set by --fleet-key=none: no key, on purpose.
	noFleetKey bool
}

// securityFlags adds the security flags, filling s. The returned check
// validates them after parsing; for `all` without an admin key it generates
// one.
func securityFlags(f *envFlags, name string, s *securityOptions) (check func() error) {
	var auth, proxies string
	f.String(gGate, &auth, "auth", "MICROSHOP_AUTH", "on", "gate: on = bearer tokens and the admin key decide who may do what; off = the book's open behaviour (never expose it)")
	f.Var(gGate, secretFlag{&s.guard.AdminKey}, "admin-key", "MICROSHOP_ADMIN_KEY", fmt.Sprintf("gate: the bearer token that manages goods and stores (a `key` of at least %d characters; all: generated and printed when empty)", minAdminKey))
	f.Var(gProcess, secretFlag{&s.fleetKey}, "fleet-key", "MICROSHOP_FLEET_KEY", fmt.Sprintf("a `secret` shared by the whole fleet (at least %d characters): gates sign the identity they send with it and services refuse identities not signed with it; every process signs its registration and the distributor lists only signed ones; required by the distributor, services and gates with --auth=on; none = run without one on purpose, as the book's processes do (all with --auth=on: generated when empty)", minAdminKey))
	f.String(gGate, &proxies, "trusted-proxies", "MICROSHOP_TRUSTED_PROXIES", "", "gate: comma-separated CIDRs of proxies whose X-Forwarded-For is believed")
	limits := []struct {
		flag, env, def, help string
		dst                  *limit.Limit
	}{
		{"rate-limit", "MICROSHOP_RATE_LIMIT", defaultRateLimit, "gate: requests per client address (N/s, N/m, N/h; 0 = off)", &s.guard.RateLimit},
		{"rate-limit-member", "MICROSHOP_RATE_LIMIT_MEMBER", defaultMemberRateLimit, "gate: requests per member with a token (0 = off)", &s.guard.MemberRateLimit},
		{"rate-limit-strict", "MICROSHOP_RATE_LIMIT_STRICT", defaultStrictRateLimit, "gate: logins and writes (every method but GET and HEAD) per client address (0 = off)", &s.guard.StrictRateLimit},
	}
	raw := make([]string, len(limits))
	for i, l := range limits {
		f.String(gGate, &raw[i], l.flag, l.env, l.def, l.help)
	}
	f.Duration(gMembers, &s.sessionTTL, "session-ttl", "MICROSHOP_SESSION_TTL", members.DefaultSessionTTL, "members: how long a login token lasts")
	f.Duration(gMembers, &s.lockoutWindow, "lockout-window", "MICROSHOP_LOCKOUT_WINDOW", members.DefaultLockoutWindow, fmt.Sprintf("members: after %d wrong passwords for a username from one address within this window, that address's logins for it get 429 until it has passed; after %d from all addresses, every address's but those the member logged in from before", members.DefaultLockoutThreshold, members.DefaultLockoutUsernameThreshold))
	return func() error {
		switch strings.ToLower(auth) {
		case "on", "true", "1":
			s.guard.AuthOff = false
		case "off", "false", "0":
			s.guard.AuthOff = true
		default:
			return fmt.Errorf("--auth: want on or off, got %q", auth)
		}
		for i, l := range limits {
			lim, err := limit.Parse(raw[i])
			if err != nil {
				return fmt.Errorf("--%s: %w", l.flag, err)
			}
			*l.dst = lim
		}
		p, err := gate.ParseTrustedProxies(proxies)
		if err != nil {
			return fmt.Errorf("--trusted-proxies: %w", err)
		}
		s.guard.TrustedProxies = p
		if s.sessionTTL < time.Second {
			return fmt.Errorf("--session-ttl: want at least 1s, got %v", s.sessionTTL)
		}
		if s.lockoutWindow < time.Second {
			return fmt.Errorf("--lockout-window: want at least 1s, got %v", s.lockoutWindow)
		}
		if k := s.guard.AdminKey; k != "" && len(k) < minAdminKey {
			return fmt.Errorf("--admin-key: want at least %d characters", minAdminKey)
		}
		if s.fleetKey == FleetKeyNone {
			s.fleetKey, s.noFleetKey = "", true
		} else if k := s.fleetKey; k != "" && len(k) < minAdminKey {
			return fmt.Errorf("--fleet-key: want at least %d characters", minAdminKey)
		}
		if name == "all" && !s.guard.AuthOff && s.fleetKey == "" && !s.noFleetKey {
			b := make([]byte, 24)
			rand.Read(b)
			s.fleetKey = base64.RawURLEncoding.EncodeToString(b)
		}
		if name == "all" && !s.guard.AuthOff && s.guard.AdminKey == "" {
			b := make([]byte, 24)
			rand.Read(b)
			s.guard.AdminKey = base64.RawURLEncoding.EncodeToString(b)
			s.generatedKey = true
		}
		return nil
	}
}

// secretFlag is a string flag whose value --help never shows (its default
// may come from the environment): the flag package prints a default only
// when it differs from the zero value's String, which is always "" here.
type secretFlag struct{ p *string }

func (f secretFlag) String() string { return "" }

func (f secretFlag) Set(v string) error {
	*f.p = v
	return nil
}

// FleetKeyNone is the --fleet-key value that runs a service or gate
// without a fleet key, on purpose.
const FleetKeyNone = "none"

// needsFleetKey reports whether command name must be given a fleet key: the
// distributor (it lists only registrations signed with it), a service, or a
// gate that checks tokens (it signs the identities it sends). all generates
// one; a gate with --auth=off has no identities to vouch for (it signs its
// registration when given a key).
func needsFleetKey(name string, authOff bool) bool {
	switch name {
	case "gate":
		return !authOff
	case "distributor":
		return true
	}
	c, ok := findComponent(name)
	return ok && c.kind == kindService
}

// printAdminKey tells the operator of `all` the admin key it generated, on
// stdout (not in the log), with a curl example.
func printAdminKey(w io.Writer, s *securityOptions, gateAddr string) {
	if !s.generatedKey {
		return
	}
	host := gateAddr
	if strings.HasPrefix(host, "[::]:") || strings.HasPrefix(host, "0.0.0.0:") {
		host = "localhost:" + host[strings.LastIndexByte(host, ':')+1:]
	}
	fmt.Fprintf(w, "\nNo --admin-key given: this run's admin key is\n\n    %s\n\n"+
		"Add goods with it, for example:\n\n"+
		"    curl -X POST http://%s/goods -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"name\":\"tea\",\"category\":\"drinks\",\"price\":300}'\n\n"+
		"Set --admin-key (MICROSHOP_ADMIN_KEY) to keep one across restarts.\n\n",
		s.guard.AdminKey, host, s.guard.AdminKey)
}

// newMembers builds the members service with the session and lockout flags.
func newMembers(d deps) map[string]service.Handler {
	m := members.New(d.db, d.cache, d.log)
	if d.sec != nil {
		m.SessionTTL = d.sec.sessionTTL
		m.LockoutWindow = d.sec.lockoutWindow
		m.FleetKey = []byte(d.sec.fleetKey)
	}
	return m.Routes()
}
