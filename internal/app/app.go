// Package app is microshop's command line: it parses flags (each with an
// environment variable twin), opens the shared resources and runs one
// component of the fleet, or all of them in one process.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/bench"
	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/edge/chatws"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// Defaults shared by the help text, the README and the code.
const (
	defaultDistributor = "127.0.0.1:9000"
	defaultDB          = "sqlite:microshop.db"
	defaultRedis       = "redis://127.0.0.1:6379/0"
)

// options are the parsed flags of one command.
type options struct {
	addr         string
	distributors []string // --distributor, split at commas
	// distributorSet tells that --distributor (or its variable) was given,
	// even as the default: all with --random-ports then keeps it.
	distributorSet bool
	db             string
	redis          string
	redisPrefix    string
	logLevel       string
	logFormat      string
	debugAddr      string
	metricsAddr    string
	readyFile      string
	advertise      string
	maxPacket      int
	maxBody        int64
	requestTimeout time.Duration
	heartbeat      time.Duration
	hedgeAfter     time.Duration
	answerDelay    time.Duration
	goodsCache     catalog.Format
	all            bool          // the command is all
	conns          packet.Limits // --max-conns, --max-conns-per-host
	randomPorts    bool
	chat           chatws.Config
	corsOrigins    []string // --cors-origins
	sec            securityOptions
}

// Run is the whole program: args are the command-line arguments without the
// program name, getenv reads the environment. It returns when ctx is done
// (after a graceful shutdown) or on a fatal error.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	name, rest := args[0], args[1:]
	if name == "version" || name == "--version" {
		info, ok := debug.ReadBuildInfo()
		printVersion(stdout, info, ok)
		return nil
	}
	if name == "bench" {
		return bench.Run(ctx, rest, getenv, stdout, stderr)
	}
	if name == "all" {
		opts, err := parseFlags(name, rest, getenv, stdout, stderr)
		if err != nil {
			return err
		}
		return runAll(ctx, opts, stdout, stderr)
	}
	if name == "migrate" {
		opts, err := parseFlags(name, rest, getenv, stdout, stderr)
		if err != nil {
			return err
		}
		return migrate(ctx, opts, stdout)
	}
	c, ok := findComponent(name)
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown command %q", name)
	}
	opts, err := parseFlags(name, rest, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	return runOne(ctx, c, opts, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "microshop: a shop backend split into microservices, sharing SQL and Redis.")
	fmt.Fprintln(w, "\nUsage: microshop COMMAND [flags]   (microshop COMMAND --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	fmt.Fprintf(w, "  %-12s %s\n", "all", "the whole fleet in one process (embedded SQLite and Redis unless --db/--redis)")
	for _, c := range components() {
		fmt.Fprintf(w, "  %-12s %s (default port %d)\n", c.name, c.help, c.port)
	}
	fmt.Fprintf(w, "  %-12s %s\n", "migrate", "create or update the tables of --db, then exit (every process also does at start)")
	fmt.Fprintf(w, "  %-12s %s\n", "version", "print the build's version, VCS revision and Go version")
	fmt.Fprintf(w, "  %-12s %s\n", "bench chat", "a load generator for chat: subscribers and publishers across gates")
}

// errHelp is returned after --help printed the usage; Run's caller exits 0.
var errHelp = flag.ErrHelp

// IsHelp reports whether err only means that help was printed.
func IsHelp(err error) bool { return errors.Is(err, errHelp) }

func parseFlags(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("microshop "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{all: name == "all"}
	f := &envFlags{fs: fs, getenv: getenv, uses: flagsOf(name)}
	c, _ := findComponent(name)
	defAddr := ":" + strconv.Itoa(c.port)
	if name == "all" {
		defAddr = ":8000"
	}
	defRedis := defaultRedis
	if name == "all" {
		defRedis = "" // embedded
	}
	f.String(gProcess, &o.addr, "addr", "MICROSHOP_ADDR", defAddr, "listen address of this component (all: of the gate)")
	var distributors string
	f.String(gRegister|gAll, &distributors, "distributor", "MICROSHOP_DISTRIBUTOR", defaultDistributor, "the distributors' host:port, comma-separated: the process registers with and follows every one, so any one may be down (all: the first is where its own distributor listens)")
	f.String(gDB, &o.db, "db", "MICROSHOP_DB", defaultDB, "database: sqlite:PATH or mysql://user:pass@tcp(host:3306)/db")
	f.String(gRedis, &o.redis, "redis", "MICROSHOP_REDIS", defRedis, "Redis: redis://[:pass@]host:port/db, or host:port,host:port,... for a cluster (all: empty = embedded)")
	// --help shows the defaults; those taken from the environment may hold
	// passwords.
	if fl := fs.Lookup("db"); fl != nil {
		fl.DefValue = store.Redact(fl.DefValue)
	}
	if fl := fs.Lookup("redis"); fl != nil {
		fl.DefValue = cache.Redact(fl.DefValue)
	}
	f.String(gRedis, &o.redisPrefix, "redis-prefix", "MICROSHOP_REDIS_PREFIX", cache.DefaultPrefix, "prefix of every Redis key")
	f.String(gProcess, &o.logLevel, "log-level", "MICROSHOP_LOG_LEVEL", "info", "debug (one line per request), info, warn or error")
	f.String(gProcess, &o.logFormat, "log-format", "MICROSHOP_LOG_FORMAT", "text", "text or json")
	f.String(gProcess, &o.debugAddr, "debug-addr", "MICROSHOP_DEBUG_ADDR", "", "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; empty = off")
	f.String(gRegister|gAll, &o.advertise, "advertise", "MICROSHOP_ADVERTISE", "", "the address other processes dial to reach this one, HOST or HOST:PORT (all: HOST only), when the one the distributor sees is wrong (NAT, containers, several interfaces); empty = the address the registration comes from, and the listening port")
	f.String(gProcess, &o.metricsAddr, "metrics-addr", "MICROSHOP_METRICS_ADDR", "", "serve Prometheus metrics (/metrics) on this address, e.g. 127.0.0.1:9100; empty = off")
	f.String(gProcess, &o.readyFile, "ready-file", "MICROSHOP_READY_FILE", "", "once ready, write this JSON file (pid, the bound address of every listener); empty = none")
	var maxPacket int64
	f.Int64(gProcess, &maxPacket, "max-packet", "MICROSHOP_MAX_PACKET", 1<<20, "largest packet in bytes")
	f.Int64(gGate, &o.maxBody, "max-body", "MICROSHOP_MAX_BODY", 1<<20, "gate: largest request body in bytes")
	f.Duration(gCaller, &o.requestTimeout, "request-timeout", "MICROSHOP_REQUEST_TIMEOUT", 10*time.Second, "gate and callers: how long to wait for a service's answer")
	f.Duration(gProcess, &o.heartbeat, "heartbeat-timeout", "MICROSHOP_HEARTBEAT_TIMEOUT", defaultHeartbeat, "how long a microshop peer (instance, caller, distributor) may stay silent before it is marked down: its calls fail over and its connection is redialled; peers heartbeat 5 times as often; 0 = off")
	f.Duration(gCaller, &o.hedgeAfter, "hedge-after", "MICROSHOP_HEDGE_AFTER", defaultHedgeAfter, "gate and callers: the least wait before a GET with no answer is also sent to another instance (the wait is the route's usual latency plus 4 deviations when that is longer; hedges are capped at 10% of calls); 0 = off")
	var goodsCache string
	f.String(gGoodsCache, &goodsCache, "goods-cache", "MICROSHOP_GOODS_CACHE", "microshop", "goods, purchases, ratings, reactions: the format of the goods' Redis entries: microshop (PREFIX goods:{N}, an hour's TTL) or book (the book's bare key N, no expiry), for a fleet that mixes the book's goods or purchases with microshop's; every process of such a fleet must use the same")
	f.Duration(gService, &o.answerDelay, "answer-delay", "MICROSHOP_ANSWER_DELAY", 0, "services, for testing: delay every answer by this long, to see the fleet route around a slow instance")
	defConns, defPerHost := packet.DefaultMaxConns, packet.DefaultMaxConnsPerHost
	if name == "gate" || name == "all" {
		defConns, defPerHost = gate.DefaultMaxConns, gate.DefaultMaxConnsPerHost
	}
	var maxConns, maxPerHost int64
	f.Int64(gProcess, &maxConns, "max-conns", "MICROSHOP_MAX_CONNS", int64(defConns), "connections this component keeps open at once (the gate: HTTP connections; all: the gate's); one more is closed at once; -1 = no limit")
	f.Int64(gProcess, &maxPerHost, "max-conns-per-host", "MICROSHOP_MAX_CONNS_PER_HOST", int64(defPerHost), "connections from one IP address (the gate: --trusted-proxies exempt); -1 = no limit")
	f.Bool(gAll, &o.randomPorts, "random-ports", "MICROSHOP_RANDOM_PORTS", false, "all: services (and the distributor, unless --distributor is given) listen on free loopback ports instead of 9000, 9010, ...")
	checkChat := chatFlags(f, &o.chat)
	checkCORS := corsFlags(f, &o.corsOrigins)
	checkSec := securityFlags(f, name, &o.sec)
	if f.err != nil {
		return nil, f.err
	}
	fs.Usage = func() {
		switch name {
		case "all":
			fmt.Fprintln(stdout, "microshop all: the whole fleet in one process, each part on its own loopback port, talking the real protocol.")
		case "migrate":
			fmt.Fprintln(stdout, "microshop migrate: create or update the tables of --db, then exit (only --db matters).")
		default:
			fmt.Fprintf(stdout, "microshop %s: %s\n", name, c.help)
		}
		fmt.Fprintln(stdout, "\nFlags (each with its environment variable in brackets):")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	err := fs.Parse(args)
	if err != nil {
		return nil, err
	}
	if err = checkChat(); err != nil {
		return nil, err
	}
	if err = checkSec(); err != nil {
		return nil, err
	}
	if err = checkCORS(); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if maxPacket < 1024 || maxPacket > 1<<30 {
		return nil, fmt.Errorf("--max-packet: want a byte count from 1024 to 1073741824, got %d", maxPacket)
	}
	o.maxPacket = int(maxPacket)
	if o.maxBody < 1 {
		return nil, fmt.Errorf("--max-body: want a positive byte count, got %d", o.maxBody)
	}
	if o.requestTimeout <= 0 {
		return nil, fmt.Errorf("--request-timeout: want a positive duration, got %v", o.requestTimeout)
	}
	if o.heartbeat != 0 && (o.heartbeat < 50*time.Millisecond || o.heartbeat > time.Hour) {
		return nil, fmt.Errorf("--heartbeat-timeout: want 0 (off) or a duration from 50ms to 1h, got %v", o.heartbeat)
	}
	if o.hedgeAfter < 0 {
		return nil, fmt.Errorf("--hedge-after: want 0 (off) or a positive duration, got %v", o.hedgeAfter)
	}
	if o.goodsCache, err = catalog.ParseFormat(goodsCache); err != nil {
		return nil, fmt.Errorf("--goods-cache: %w", err)
	}
	if o.answerDelay < 0 {
		return nil, fmt.Errorf("--answer-delay: want 0 or a positive duration, got %v", o.answerDelay)
	}
	o.distributorSet = getenv("MICROSHOP_DISTRIBUTOR") != ""
	fs.Visit(func(f *flag.Flag) { o.distributorSet = o.distributorSet || f.Name == "distributor" })
	if o.distributors, err = parseDistributors(distributors); err != nil {
		return nil, fmt.Errorf("--distributor: %w", err)
	}
	if maxConns == 0 || maxConns < -1 || maxConns > 1<<20 {
		return nil, fmt.Errorf("--max-conns: want a count from 1 to 1048576, or -1 for no limit; got %d", maxConns)
	}
	if maxPerHost == 0 || maxPerHost < -1 || maxPerHost > 1<<20 {
		return nil, fmt.Errorf("--max-conns-per-host: want a count from 1 to 1048576, or -1 for no limit; got %d", maxPerHost)
	}
	o.conns = packet.Limits{Max: int(maxConns), PerHost: int(maxPerHost)}
	if _, port, err := distributor.Advertised(o.advertise, 0); err != nil {
		return nil, fmt.Errorf("--advertise: %w", err)
	} else if name == "all" && port != 0 {
		return nil, fmt.Errorf("--advertise: all runs every component on a port of its own; give a HOST only, got %q", o.advertise)
	}
	return o, nil
}

// Defaults of the fault flags (README "When things fail").
const (
	defaultHeartbeat  = 1500 * time.Millisecond
	defaultHedgeAfter = 50 * time.Millisecond
)

// parseDistributors splits a comma-separated list of host:port.
func parseDistributors(list string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("want host:port[,host:port...], got %q", a)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return nil, fmt.Errorf("bad port in %q", a)
		}
		if slices.Contains(addrs, a) {
			return nil, fmt.Errorf("%q is listed twice", a)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, errors.New("want at least one host:port")
	}
	return addrs, nil
}

func newLogger(o *options, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: want debug, info, warn or error, got %q", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", o.logFormat)
}

// resources are the shared database and Redis of a process.
type resources struct {
	db       *store.DB
	cache    *cache.Cache
	embedded *cache.Embedded
}

func (r *resources) close() {
	if r.cache != nil {
		r.cache.Close()
	}
	if r.embedded != nil {
		r.embedded.Close()
	}
	if r.db != nil {
		r.db.Close()
	}
}

// migrate creates or updates the tables of o.db and exits: for an operator
// who copies rows in before any process starts (the book's, say).
func migrate(ctx context.Context, o *options, stdout io.Writer) error {
	db, err := store.Open(ctx, o.db)
	if err != nil {
		return err
	}
	defer db.Close()
	fmt.Fprintf(stdout, "%s: tables up to date (%s)\n", store.Redact(o.db), db.Dialect)
	return nil
}

func openResources(ctx context.Context, o *options, log *slog.Logger) (*resources, error) {
	r := &resources{}
	db, err := store.Open(ctx, o.db)
	if err != nil {
		return nil, err
	}
	r.db = db
	url := o.redis
	if url == "" {
		e, err := cache.StartEmbedded("127.0.0.1:0")
		if err != nil {
			r.close()
			return nil, err
		}
		r.embedded = e
		url = e.URL()
		log.Info("embedded Redis started", "addr", e.Addr())
	}
	c, err := cache.Open(url, o.redisPrefix, log)
	if err != nil {
		r.close()
		return nil, err
	}
	r.cache = c
	if err := c.Ping(ctx, 2*time.Second); err != nil {
		log.Warn("Redis not reachable; running without it (slower) until it answers", "err", err)
	}
	log.Info("database opened", "db", store.Redact(o.db), "dialect", db.Dialect)
	return r, nil
}

func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// start runs component c on ln until ctx is done.
func start(ctx context.Context, c component, ln net.Listener, o *options, res *resources, rd *readiness, log *slog.Logger) error {
	switch c.kind {
	case kindDistributor:
		return newDistributor(o, log).Serve(ctx, ln)
	case kindGate:
		var c *cache.Cache
		if res != nil {
			c = res.cache
		}
		return runGate(ctx, o, c, ln, rd, log)
	}
	slog := log.With("component", c.name)
	d := deps{db: res.db, cache: res.cache, goodsCache: o.goodsCache, log: slog, sec: &o.sec}
	cfg := service.Config{Name: c.name, Distributors: o.distributors, Advertise: o.advertise, MaxPacket: o.maxPacket, FleetKey: service.FleetKey(o.sec.fleetKey),
		Heartbeat: o.heartbeat, AnswerDelay: o.answerDelay, Logger: log}
	if !o.all {
		cfg.Conns = o.conns // in all, the flags are the gate's; its services take loopback peers only
	}
	if c.calls {
		d.caller = service.NewClient(service.ClientConfig{RequestTimeout: o.requestTimeout, MaxPacket: o.maxPacket, FleetKey: service.FleetKey(o.sec.fleetKey),
			Heartbeat: o.heartbeat, HedgeAfter: o.hedgeAfter, Logger: slog})
		defer d.caller.Close()
		cfg.OnNodes = d.caller.Update
	}
	cfg.Routes = c.routes(d)
	return service.NewServer(cfg).Serve(ctx, ln)
}

func newDistributor(o *options, log *slog.Logger) *distributor.Server {
	d := distributor.NewServer(log.With("component", "distributor"), o.maxPacket)
	d.FleetKey = []byte(o.sec.fleetKey)
	d.Heartbeat = o.heartbeat
	if !o.all {
		d.Conns = o.conns
	}
	return d
}

// noFleetKeyWarning is logged at start by a process run with --fleet-key=none.
const noFleetKeyWarning = "--fleet-key=none: this process trusts its peers as the book's do (services believe any identity, the distributor lists any registration), so whoever reaches its port can act as anyone; set the same --fleet-key on every process"

// runOne runs a single component as its own process.
func runOne(ctx context.Context, c component, o *options, stderr io.Writer) error {
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	rd := newReadiness(o.readyFile)
	if err := serveOps(ctx, o.debugAddr, o.metricsAddr, rd, log); err != nil {
		return err
	}
	if o.sec.fleetKey == "" && needsFleetKey(c.name, o.sec.guard.AuthOff) {
		if !o.sec.noFleetKey {
			return fmt.Errorf("--fleet-key is required: give the distributor, every service and every gate the same secret (at least %d characters), "+
				"so that reaching a port inside the fleet is not enough to act as a member or to list a process; "+
				"--fleet-key=%s runs without one, trusting peers as the book's processes do "+
				"(for a fleet with the book's Node.js processes; never where others can reach the fleet's ports)", minAdminKey, FleetKeyNone)
		}
		log.Warn(noFleetKeyWarning)
	}
	var res *resources
	if c.kind == kindService {
		if o.redis == "" {
			return errors.New("--redis: separate processes must share one Redis; give its redis:// URL")
		}
		if res, err = openResources(ctx, o, log); err != nil {
			return err
		}
		defer res.close()
	}
	if c.kind == kindGate {
		if res, err = openGateCache(ctx, o, log); err != nil {
			return err
		}
		defer res.close()
	}
	rd.watch(res)
	ln, err := listen(o.addr)
	if err != nil {
		return err
	}
	rd.listening(c.name, listenerName(c), ln.Addr().String())
	if err := rd.done(); err != nil {
		ln.Close()
		return fmt.Errorf("--ready-file: %w", err)
	}
	err = start(ctx, c, ln, o, res, rd, log)
	log.Info("stopped", "component", c.name)
	return err
}

// runAll runs the whole fleet in one process: the distributor first, then
// the services, then the gate; on shutdown the gate stops first and the
// distributor last.
func runAll(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	rd := newReadiness(o.readyFile)
	if err := serveOps(ctx, o.debugAddr, o.metricsAddr, rd, log); err != nil {
		return err
	}
	if o.sec.noFleetKey {
		log.Warn(noFleetKeyWarning)
	}
	res, err := openResources(ctx, o, log)
	if err != nil {
		return err
	}
	defer res.close()
	rd.watch(res)

	type running struct {
		name   string
		cancel context.CancelFunc
		done   chan error
	}
	var fleet []running
	failed := make(chan error, 16)
	stopAll := func() {
		for i := len(fleet) - 1; i >= 0; i-- {
			fleet[i].cancel()
			<-fleet[i].done
		}
	}
	var once sync.Once
	var reg *distributor.Server
	var services []string
	for _, c := range components() {
		addr := "127.0.0.1:" + strconv.Itoa(c.port)
		switch {
		case c.kind == kindGate:
			addr = o.addr
		case c.kind == kindDistributor:
			addr = o.distributors[0]
			if o.randomPorts && !o.distributorSet {
				addr = "127.0.0.1:0" // an explicit --distributor is honoured
			}
		case o.randomPorts:
			addr = "127.0.0.1:0"
		}
		ln, err := listen(addr)
		if err != nil {
			stopAll()
			return err
		}
		rd.listening(c.name, listenerName(c), ln.Addr().String())
		run := func(ctx context.Context) error { return start(ctx, c, ln, o, res, rd, log) }
		if c.kind == kindDistributor {
			o.distributors[0] = ln.Addr().String()
			reg = newDistributor(o, log)
			run = func(ctx context.Context) error { return reg.Serve(ctx, ln) }
		}
		if c.kind == kindGate {
			// Open the front door once every service is registered, so
			// the first requests find their routes.
			// They are all in this process, so the distributor need not
			// wait out its settle period for anyone else.
			if waitRegistered(ctx, reg, services, 10*time.Second, log) {
				reg.EndSettle()
			}
		}
		if c.kind == kindService {
			services = append(services, c.name)
		}
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := running{name: c.name, cancel: cancel, done: make(chan error, 1)}
		go func() {
			err := run(cctx)
			if err == nil && cctx.Err() == nil {
				err = errors.New("stopped unexpectedly")
			}
			if err != nil && cctx.Err() == nil {
				once.Do(func() { failed <- fmt.Errorf("%s: %w", c.name, err) })
			}
			r.done <- err
		}()
		fleet = append(fleet, r)
		if c.kind == kindGate {
			log.Info("microshop is up", "gate", ln.Addr().String(), "distributor", o.distributors[0])
			printAdminKey(stdout, &o.sec, ln.Addr().String())
			if err := rd.done(); err != nil {
				stopAll()
				return fmt.Errorf("--ready-file: %w", err)
			}
		}
	}
	var ferr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case ferr = <-failed:
		log.Error("a component failed; shutting down", "err", ferr)
	}
	stopAll()
	return ferr
}

// waitRegistered waits until reg lists every named service, or d passes;
// it reports whether they all registered.
func waitRegistered(ctx context.Context, reg *distributor.Server, names []string, d time.Duration, log *slog.Logger) bool {
	deadline := time.Now().Add(d)
	for {
		listed := map[string]bool{}
		for _, n := range reg.Nodes() {
			listed[n.Name] = true
		}
		missing := 0
		for _, n := range names {
			if !listed[n] {
				missing++
			}
		}
		if missing == 0 {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			log.Warn("starting the gate before every service registered", "missing", missing)
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
