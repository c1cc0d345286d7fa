package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/cache"
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
	g := gate.New(gate.Config{Distributors: o.distributors, Advertise: o.advertise, RequestTimeout: o.requestTimeout, MaxBody: o.maxBody,
		MaxPacket: o.maxPacket, FleetKey: fleetKey, Heartbeat: o.heartbeat, Client: client, Admit: guard,
		Handlers: handlers, OnShutdown: shutdown, Conns: conns, Logger: log})
	rd.gatePeers(client)
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
