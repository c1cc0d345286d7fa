package app

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestSecurityFlags(t *testing.T) {
	parse := func(name string, env map[string]string, args ...string) (*options, error) {
		return parseFlags(name, args, func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	o, err := parse("gate", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := o.sec
	if s.guard.AuthOff || s.guard.AdminKey != "" || s.guard.RateLimit.Rate != 100 || s.guard.StrictRateLimit.Rate != 10 ||
		s.guard.MemberRateLimit.Rate != 100 || s.sessionTTL != 24*time.Hour || s.lockoutWindow != 15*time.Minute {
		t.Errorf("gate defaults = %+v; want auth on, no key, 100/s, 100/s, 10/s, 24h, 15m", s)
	}
	o, err = parse("gate", map[string]string{"MICROSHOP_AUTH": "off", "MICROSHOP_RATE_LIMIT": "0", "MICROSHOP_TRUSTED_PROXIES": "10.0.0.0/8"},
		"--rate-limit-strict", "5/m")
	if err != nil {
		t.Fatal(err)
	}
	if s := o.sec; !s.guard.AuthOff || !s.guard.RateLimit.IsZero() || s.guard.StrictRateLimit.Period != time.Minute ||
		len(s.guard.TrustedProxies) != 1 {
		t.Errorf("parsed %+v", s)
	}
	if o, err = parse("members", nil, "--session-ttl", "2s"); err != nil || o.sec.sessionTTL != 2*time.Second {
		t.Errorf("members --session-ttl 2s: %v, %v; want 2s", o.sec.sessionTTL, err)
	}
	// all without a key makes one up (printed at start-up); a gate does not.
	o, err = parse("all", nil)
	if err != nil || len(o.sec.guard.AdminKey) < minAdminKey || !o.sec.generatedKey {
		t.Errorf("all: admin key %q, generated %v, %v; want a generated key", o.sec.guard.AdminKey, o.sec.generatedKey, err)
	}
	if o, _ := parse("all", nil, "--auth=off"); o.sec.guard.AdminKey != "" {
		t.Error("all --auth=off generated an admin key")
	}
	// all with auth on generates a fleet key, unless told none (a fleet with
	// the book's processes, which cannot sign).
	if o, err := parse("all", nil); err != nil || len(o.sec.fleetKey) < minAdminKey || o.sec.noFleetKey {
		t.Errorf("all: fleet key %q, none %v, %v; want a generated key", o.sec.fleetKey, o.sec.noFleetKey, err)
	}
	if o, err := parse("all", nil, "--fleet-key=none"); err != nil || o.sec.fleetKey != "" || !o.sec.noFleetKey {
		t.Errorf("all --fleet-key=none: fleet key %q, none %v, %v; want no key", o.sec.fleetKey, o.sec.noFleetKey, err)
	}
	if o, err := parse("all", map[string]string{"MICROSHOP_FLEET_KEY": "none"}); err != nil || o.sec.fleetKey != "" {
		t.Errorf("all with MICROSHOP_FLEET_KEY=none: fleet key %q, %v; want no key", o.sec.fleetKey, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--auth", "maybe"}, "--auth"},
		{[]string{"--rate-limit", "5/x"}, "--rate-limit"},
		{[]string{"--rate-limit-member", "many"}, "--rate-limit-member"},
		{[]string{"--admin-key", "short"}, "--admin-key"},
		{[]string{"--trusted-proxies", "10.0.0.0/8,nope"}, "--trusted-proxies"},
		{[]string{"--session-ttl", "10ms"}, "--session-ttl"},
		{[]string{"--lockout-window", "0s"}, "--lockout-window"},
	} {
		name := "gate"
		if strings.HasPrefix(tc.want, "--session") || strings.HasPrefix(tc.want, "--lockout") {
			name = "members"
		}
		if _, err := parse(name, nil, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v; want an error mentioning %s", tc.args, err, tc.want)
		}
	}
}
