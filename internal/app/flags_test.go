package app

import (
	"io"
	"slices"
	"strings"
	"testing"
)

// flagNames returns the flags that command name's --help lists.
func flagNames(t *testing.T, name string) []string {
	t.Helper()
	var out strings.Builder
	_, err := parseFlags(name, []string{"--help"}, func(string) string { return "" }, &out, io.Discard)
	if !IsHelp(err) {
		t.Fatalf("%s --help: %v; want the help", name, err)
	}
	var names []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "  -") {
			names = append(names, strings.TrimPrefix(strings.Fields(line)[0], "-"))
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s --help lists no flag:\n%s", name, out.String())
	}
	return names
}

// Each command lists, and takes, only the flags it uses.
func TestFlagsPerCommand(t *testing.T) {
	gateOnly := []string{"auth", "admin-key", "trusted-proxies", "max-body", "rate-limit", "rate-limit-member", "rate-limit-strict",
		"chat-queue", "chat-rate", "chat-burst", "chat-max-per-member", "chat-max-per-address", "chat-ping", "chat-origins"}
	all := flagNames(t, "all")
	for _, c := range components() {
		names := flagNames(t, c.name)
		for _, n := range names {
			if !slices.Contains(all, n) {
				t.Errorf("%s takes --%s, which all does not", c.name, n)
			}
		}
		for _, n := range gateOnly {
			if slices.Contains(names, n) != (c.name == "gate") {
				t.Errorf("%s --help lists --%s: %v; want it only for the gate", c.name, n, slices.Contains(names, n))
			}
		}
		for _, n := range []string{"session-ttl", "lockout-window"} {
			if slices.Contains(names, n) != (c.name == "members") {
				t.Errorf("%s --help lists --%s: %v; want it only for members", c.name, n, slices.Contains(names, n))
			}
		}
		for _, n := range []string{"request-timeout", "hedge-after"} {
			if slices.Contains(names, n) != (c.calls || c.name == "gate") {
				t.Errorf("%s --help lists --%s: %v; want it for the gate and the services that call others", c.name, n, slices.Contains(names, n))
			}
		}
		if slices.Contains(names, "random-ports") {
			t.Errorf("%s --help lists --random-ports, a flag of all", c.name)
		}
		if slices.Contains(names, "db") != (c.kind == kindService) {
			t.Errorf("%s --help lists --db: %v; want it for services only", c.name, slices.Contains(names, "db"))
		}
	}
	if got := flagNames(t, "migrate"); !slices.Equal(got, []string{"db"}) {
		t.Errorf("migrate --help lists %v; want [db]", got)
	}
	for _, n := range append(gateOnly, "session-ttl", "random-ports", "db", "answer-delay", "goods-cache") {
		if !slices.Contains(all, n) {
			t.Errorf("all --help does not list --%s", n)
		}
	}
}

// A flag another command uses is refused as unknown, and its environment
// variable is not read (one environment file may serve a whole fleet).
func TestFlagOfAnotherCommand(t *testing.T) {
	env := func(k string) string {
		if k == "MICROSHOP_CHAT_QUEUE" {
			return "not a number"
		}
		return ""
	}
	if _, err := parseFlags("goods", []string{"--chat-queue", "5"}, env, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "chat-queue") {
		t.Errorf("goods --chat-queue 5: %v; want an unknown-flag error", err)
	}
	if _, err := parseFlags("goods", nil, env, io.Discard, io.Discard); err != nil {
		t.Errorf("goods with MICROSHOP_CHAT_QUEUE=%q: %v; want it ignored", env("MICROSHOP_CHAT_QUEUE"), err)
	}
	if _, err := parseFlags("gate", nil, env, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "MICROSHOP_CHAT_QUEUE") {
		t.Errorf("gate with MICROSHOP_CHAT_QUEUE=%q: %v; want an error naming the variable", env("MICROSHOP_CHAT_QUEUE"), err)
	}
}
