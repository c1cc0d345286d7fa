package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/cors"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/edge/apidoc"
	"github.com/microshop/microshop/internal/edge/auth"
	"github.com/microshop/microshop/internal/edge/chatws"
	"github.com/microshop/microshop/internal/edge/console"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/service"
)

// runGate assembles the gate from its parts and serves it on ln until ctx
// is done: the proxy (package gate), the admission of requests (rate limits
// and tokens, internal/edge/auth) and chat sockets (internal/edge/chatws,
// with Redis only). c is nil without Redis.
func runGate(ctx context.Context, o *options, c *cache.Cache, ln net.Listener, rd *readiness, log *slog.Logger) error {
	fleetKey := service.FleetKey(o.sec.fleetKey)
	client := service.NewClient(service.ClientConfig{RequestTimeout: o.requestTimeout, MaxPacket: o.maxPacket, FleetKey: fleetKey,
		Heartbeat: o.heartbeat, HedgeAfter: o.hedgeAfter, IdentitiesOnly: !o.sec.guard.AuthOff, Logger: log.With("component", "gate")})
	limiter := limit.New(c, log.With("component", "gate"))
	ac := o.sec.guard
	ac.FleetKey, ac.Cache, ac.Client, ac.Limiter, ac.Logger = []byte(o.sec.fleetKey), c, client, limiter, log
	guard := auth.New(ac)
	defer guard.Close()
	guard.LogPosture()

	chat := chatws.Disabled
	shutdown := func() {}
	if c != nil {
		cc := o.chat
		cc.Cache, cc.Client, cc.Limiter, cc.TrustedProxies, cc.RequestTimeout, cc.Logger = c, client, limiter, ac.TrustedProxies, o.requestTimeout, log
		if !ac.AuthOff {
			cc.SessionEnded = guard.Ended
		}
		hub := chatws.New(cc)
		hub.Start()
		defer hub.Close()
		chat, shutdown = hub, hub.Close
	}
	conns := o.conns
	if conns.Max == 0 {
		conns.Max = gate.DefaultMaxConns
	}
	if conns.PerHost == 0 {
		conns.PerHost = gate.DefaultMaxConnsPerHost
	}
	conns.Exempt = func(host string) bool { // trusted proxies carry many clients
		a, err := netip.ParseAddr(host)
		return err == nil && gate.Trusted(a.Unmap(), ac.TrustedProxies)
	}
	handlers, stopConsole, err := consoleHandlers(ctx, o, client, log)
	if err != nil {
		return err
	}
	defer stopConsole()
	handlers["GET /chat"] = chat
	handlers["GET /healthz"] = healthz
	handlers["GET /readyz"] = rd.public()
	handlers["GET /openapi.json"] = apidoc.Handler()
	gc := gate.Config{Distributors: o.distributors, Advertise: o.advertise, RequestTimeout: o.requestTimeout, MaxBody: o.maxBody,
		MaxPacket: o.maxPacket, FleetKey: fleetKey, Heartbeat: o.heartbeat, Client: client, Admit: guard,
		Handlers: handlers, OnShutdown: shutdown, Conns: conns, Logger: log}
	if len(o.corsOrigins) > 0 {
		gc.Wrap = corsWrap(o.corsOrigins)
	}
	g := gate.New(gc)
	rd.gatePeers(client)
	rd.check("list", true, func(context.Context) error {
		if !g.Listed() {
			return &notListed{}
		}
		return nil
	})
	return g.Serve(ctx, ln)
}

// consoleHandlers returns the web console's routes (internal/edge/console)
// and a function that stops what they run: a watcher of the distributors'
// list (every process, gates included, for the operator view), which
// registers nothing. The figures are the gate's own metrics, read from a
// registry of the console's (whether or not --metrics-addr serves them).
func consoleHandlers(ctx context.Context, o *options, client *service.Client, log *slog.Logger) (map[string]http.Handler, func(), error) {
	watch := distributor.NewClient(distributor.ClientConfig{Addrs: o.distributors, MaxPacket: o.maxPacket,
		Logger: log.With("component", "gate", "part", "console")})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); watch.Run(wctx) }()
	stop := func() { cancel(); <-done }
	reg := prometheus.NewRegistry()
	for _, c := range gate.Collectors() {
		if err := reg.Register(c); err != nil {
			stop()
			return nil, nil, fmt.Errorf("console: %w", err)
		}
	}
	h, err := console.Handlers(console.Config{Instances: client.Instances, Nodes: watch.Nodes, Connected: watch.Connected,
		Metrics: reg, AuthOff: o.sec.guard.AuthOff})
	if err != nil {
		stop()
		return nil, nil, err
	}
	return h, stop, nil
}

// chatFlags adds the gate's chat flags, filling c. The returned check
// validates the values after parsing.
func chatFlags(f *envFlags, c *chatws.Config) (check func() error) {
	f.Int(gGate, &c.Queue, "chat-queue", "MICROSHOP_CHAT_QUEUE", 256, "gate: messages queued per chat socket before a slow reader is disconnected")
	f.Float(gGate, &c.Rate, "chat-rate", "MICROSHOP_CHAT_RATE", 10, "gate: messages a second each member may send, on average, across all their chat sockets and every gate (a socket of --auth=off: each socket)")
	f.Int(gGate, &c.Burst, "chat-burst", "MICROSHOP_CHAT_BURST", 20, "gate: messages each member (a socket of --auth=off: each socket) may send at once")
	f.Int(gGate, &c.MaxPerMember, "chat-max-per-member", "MICROSHOP_CHAT_MAX_PER_MEMBER", 20, "gate: chat sockets one member may hold open on this gate; one more gets 429")
	f.Int(gGate, &c.MaxPerAddress, "chat-max-per-address", "MICROSHOP_CHAT_MAX_PER_ADDRESS", 100, "gate: chat sockets one client address may hold open on this gate; one more gets 429")
	f.Duration(gGate, &c.PingInterval, "chat-ping", "MICROSHOP_CHAT_PING", 30*time.Second, "gate: how often chat sockets are pinged; a client that does not answer a ping within that time is disconnected")
	var origins string
	f.String(gGate, &origins, "chat-origins", "MICROSHOP_CHAT_ORIGINS", "", "gate: comma-separated host patterns of other web origins allowed to open chat sockets")
	return func() error {
		if c.Queue < 1 {
			return fmt.Errorf("--chat-queue: want a positive count, got %d", c.Queue)
		}
		if c.Rate <= 0 || c.Burst < 1 {
			return fmt.Errorf("--chat-rate and --chat-burst: want positive values, got %g and %d", c.Rate, c.Burst)
		}
		if c.MaxPerMember < 1 || c.MaxPerAddress < 1 {
			return fmt.Errorf("--chat-max-per-member and --chat-max-per-address: want positive counts, got %d and %d", c.MaxPerMember, c.MaxPerAddress)
		}
		if c.PingInterval < time.Second {
			return fmt.Errorf("--chat-ping: want at least 1s, got %v", c.PingInterval)
		}
		c.OriginPatterns = nil
		for _, o := range strings.Split(origins, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.OriginPatterns = append(c.OriginPatterns, o)
			}
		}
		return nil
	}
}

// corsFlags adds the gate's --cors-origins, filling origins. The returned
// check validates the value after parsing.
func corsFlags(f *envFlags, origins *[]string) (check func() error) {
	var raw string
	f.String(gGate, &raw, "cors-origins", "MICROSHOP_CORS_ORIGINS", "", "gate: comma-separated web origins (scheme://host[:port], a * in the host for any subdomain, or * for any origin) whose pages may call the API from a browser (CORS); tokens travel in the Authorization header, never in cookies, so no origin is sent credentials; empty = none")
	return func() error {
		*origins = nil
		for o := range strings.SplitSeq(raw, ",") {
			if o = strings.TrimSpace(o); o == "" {
				continue
			}
			if err := checkOrigin(o); err != nil {
				return fmt.Errorf("--cors-origins: %w", err)
			}
			*origins = append(*origins, o)
		}
		return nil
	}
}

// checkOrigin validates one --cors-origins entry.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(strings.Replace(o, "*", "wildcard", 1))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || strings.Count(o, "*") > 1 {
		return fmt.Errorf("%q: want scheme://host[:port] (http or https, no path), with at most one * in the host, or *", o)
	}
	return nil
}

// corsWrap returns the middleware that answers CORS preflights and labels
// the answers for the given origins: every method of the API, the headers
// it reads, and the rate limit headers it sends.
func corsWrap(origins []string) func(http.Handler) http.Handler {
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		AllowedHeaders: []string{"Authorization", "Content-Type", "Idempotency-Key"},
		ExposedHeaders: []string{"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "WWW-Authenticate"},
		MaxAge:         600,
	}).Handler
}

// openGateCache opens the Redis a separate gate process uses for chat;
// without --redis chat is disabled on that gate.
func openGateCache(ctx context.Context, o *options, log *slog.Logger) (*resources, error) {
	if o.redis == "" {
		log.Info("no --redis: chat sockets are disabled on this gate")
		return &resources{}, nil
	}
	c, err := cache.Open(o.redis, o.redisPrefix, log)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(ctx, 2*time.Second); err != nil {
		log.Warn("Redis not reachable; chat delivery starts when it answers", "err", err)
	}
	return &resources{cache: c}, nil
}
