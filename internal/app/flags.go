package app

import (
	"flag"
	"fmt"
	"strconv"
	"time"
)

// group is a set of flags; a command registers the groups it uses, so its
// --help lists only flags that change what it does, and a flag of another
// command is refused as unknown.
type group uint

const (
	gProcess    group = 1 << iota // every process: listen address, logs, ops, packets, heartbeats, connection caps, fleet key
	gRegister                     // every process that registers with a distributor: --distributor, --advertise
	gDB                           // the database
	gRedis                        // Redis
	gCaller                       // a process that calls services: request timeout, hedging
	gGoodsCache                   // a reader or owner of the goods' Redis entries
	gService                      // a service: test hooks
	gGate                         // the gate: bodies, authentication, rate limits, chat sockets
	gMembers                      // members: sessions and lockout
	gAll                          // all only
)

// flagsOf returns the groups command name uses: a component's row says its
// own; all uses every row's; migrate only the database.
func flagsOf(name string) group {
	switch name {
	case "all":
		g := gAll
		for _, c := range components() {
			g |= c.flags
		}
		return g
	case "migrate":
		return gDB
	}
	c, _ := findComponent(name)
	return c.flags
}

// envFlags registers flags that each have an environment variable twin,
// the flag winning over the variable and the variable over the default. A
// flag of a group the command does not use is not registered and keeps its
// default (its variable is not read). The first variable that does not
// parse is kept in err.
type envFlags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	uses   group
	err    error
}

// env returns the value of variable key, or "" when the group is unused.
func (f *envFlags) env(g group, key string) string {
	if f.uses&g == 0 {
		return ""
	}
	return f.getenv(key)
}

func (f *envFlags) fail(key, want, v string) {
	if f.err == nil {
		f.err = fmt.Errorf("%s: want %s, got %q", key, want, v)
	}
}

// help appends the variable's name to a flag's help, as --help shows it.
func help(text, key string) string { return text + " [" + key + "]" }

func (f *envFlags) String(g group, p *string, name, key, def, text string) {
	*p = def
	if v := f.env(g, key); v != "" {
		*p = v
	}
	if f.uses&g != 0 {
		f.fs.StringVar(p, name, *p, help(text, key))
	}
}

// Var registers a flag.Value whose current value is its default; v is set
// from the variable first.
func (f *envFlags) Var(g group, v flag.Value, name, key, text string) {
	if s := f.env(g, key); s != "" {
		v.Set(s)
	}
	if f.uses&g != 0 {
		f.fs.Var(v, name, help(text, key))
	}
}

// envValue is variable key parsed by parse, or def when the variable is
// unset or its group unused; a value that does not parse is kept in f.err
// ("want" says what was wanted).
func envValue[T any](f *envFlags, g group, key, want string, def T, parse func(string) (T, error)) T {
	v := f.env(g, key)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		f.fail(key, want, v)
	}
	return x
}

func (f *envFlags) Int64(g group, p *int64, name, key string, def int64, text string) {
	*p = envValue(f, g, key, "an integer", def, func(v string) (int64, error) { return strconv.ParseInt(v, 10, 64) })
	if f.uses&g != 0 {
		f.fs.Int64Var(p, name, *p, help(text, key))
	}
}

func (f *envFlags) Int(g group, p *int, name, key string, def int, text string) {
	*p = envValue(f, g, key, "an integer", def, strconv.Atoi)
	if f.uses&g != 0 {
		f.fs.IntVar(p, name, *p, help(text, key))
	}
}

func (f *envFlags) Float(g group, p *float64, name, key string, def float64, text string) {
	*p = envValue(f, g, key, "a number", def, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) })
	if f.uses&g != 0 {
		f.fs.Float64Var(p, name, *p, help(text, key))
	}
}

func (f *envFlags) Duration(g group, p *time.Duration, name, key string, def time.Duration, text string) {
	*p = envValue(f, g, key, "a duration like 10s", def, time.ParseDuration)
	if f.uses&g != 0 {
		f.fs.DurationVar(p, name, *p, help(text, key))
	}
}

func (f *envFlags) Bool(g group, p *bool, name, key string, def bool, text string) {
	*p = envValue(f, g, key, "true or false", def, strconv.ParseBool)
	if f.uses&g != 0 {
		f.fs.BoolVar(p, name, *p, help(text, key))
	}
}
