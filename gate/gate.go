// Package gate is the fleet's only HTTP front door. It turns each HTTP
// request into a packet, sends it to the next instance of the service that
// owns the route (round robin, as the distributor lists them), and turns
// the answer back into HTTP: the book's JSON body, with an HTTP status that
// tells the outcome.
//
// The gate is the proxy only. Who makes a request and whether it may pass
// (tokens, rate limits) is an Admitter's to decide; routes the gate serves
// itself (chat sockets) are http.Handlers given in Config.Handlers. A
// program assembles the three: microshop's own are in internal/edge.
package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// Config configures a Gate.
type Config struct {
	// Distributors are the registries' host:port: the gate registers with
	// and follows every one (see distributor.Client).
	Distributors []string
	// Advertise is the address the gate registers ("HOST" or "HOST:PORT",
	// see distributor.Advertised); empty registers the host the
	// distributor sees and the listening port.
	Advertise string
	// RequestTimeout bounds each request's wait for its answer (default 10s);
	// past it the client gets 504.
	RequestTimeout time.Duration
	// MaxBody limits request bodies (default 1 MiB); larger ones get 413.
	MaxBody int64
	// MaxPacket limits packet size (packet.DefaultMaxSize when 0).
	MaxPacket int
	// FleetKey signs the gate's registration (and, in a Client made by New,
	// the auth object of every request: see service.FleetKey).
	FleetKey service.FleetKey
	// Heartbeat is the heartbeat timeout (service.ClientConfig.Heartbeat);
	// zero turns heartbeats off.
	Heartbeat time.Duration
	// Client is how the gate calls services; the gate feeds it the
	// distributor's list, and Serve closes it when it returns. nil: New
	// makes one from the fields above.
	Client *service.Client
	// Admit decides who makes each request and whether it may pass (rate
	// limits, tokens): see Admitter. nil admits every request with no
	// identity, as the book's gate does.
	Admit Admitter
	// Handlers are routes the gate serves itself, by "METHOD /path" (for
	// example "GET /chat" for chat sockets), after Admit and before the
	// distributor's routes; AuthFrom tells a handler who is asking.
	Handlers map[string]http.Handler
	// Wrap, when set, wraps the gate's handler (see Handler) in middleware
	// that runs before everything, admission included: CORS, for example.
	Wrap func(http.Handler) http.Handler
	// OnShutdown, when set, is called once Serve begins to stop, before it
	// waits for the requests in flight: connections a handler took over
	// (WebSockets) are its to close.
	OnShutdown func()
	// Conns caps the HTTP connections, in all and per client address
	// (DefaultMaxConns and DefaultMaxConnsPerHost for zero fields). A
	// connection over a cap is closed at once.
	Conns  packet.Limits
	Logger *slog.Logger
}

// Defaults of the gate's HTTP connection caps: a front door takes many
// clients, each with a few connections (a browser opens six).
const (
	DefaultMaxConns        = 16384
	DefaultMaxConnsPerHost = 256
)

// Gate routes HTTP requests to services.
type Gate struct {
	cfg    Config
	log    *slog.Logger
	client *service.Client
	listed atomic.Bool // the distributor's list has arrived
}

// New returns a gate; Serve starts it.
func New(cfg Config) *Gate {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gate{cfg: cfg, log: cfg.Logger.With("component", "gate"), client: cfg.Client}
	if g.client == nil {
		g.client = service.NewClient(service.ClientConfig{RequestTimeout: cfg.RequestTimeout, MaxPacket: cfg.MaxPacket, FleetKey: cfg.FleetKey,
			Heartbeat: cfg.Heartbeat, Logger: g.log})
	}
	return g
}

// Listed reports whether the distributor's list has arrived (a gate
// without one routes nothing: a readiness check).
func (g *Gate) Listed() bool { return g.listed.Load() }

// Client returns the client the gate calls services with (for tests and
// embedding).
func (g *Gate) Client() *service.Client { return g.client }

// Serve registers the gate with the distributor (name "gate", no urls),
// follows the list, and serves HTTP on ln until ctx is done; then it stops
// accepting, finishes the requests in flight and returns.
func (g *Gate) Serve(ctx context.Context, ln net.Listener) error {
	host, port, err := distributor.Advertised(g.cfg.Advertise, ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	dc := distributor.NewClient(distributor.ClientConfig{
		Addrs:        g.cfg.Distributors,
		Heartbeat:    g.cfg.Heartbeat,
		Registration: &distributor.Registration{Name: "gate", Host: host, Port: port, URLs: []string{}},
		FleetKey:     g.cfg.FleetKey,
		OnChange:     g.client.Update,
		MaxPacket:    g.cfg.MaxPacket,
		Logger:       g.log,
	})
	regCtx, leave := context.WithCancel(context.WithoutCancel(ctx))
	regDone := make(chan struct{})
	go func() { defer close(regDone); dc.Run(regCtx) }()
	go func() {
		select {
		case <-dc.Ready():
			g.listed.Store(true)
		case <-regDone:
		}
	}()
	defer func() {
		leave()
		<-regDone
		g.client.Close()
	}()

	// Serve once the first list has arrived (or after a short wait when the
	// distributor is away), so the first requests find their routes.
	select {
	case <-dc.Ready():
		g.listed.Store(true) // before the first request is served
	case <-time.After(2 * time.Second):
		g.log.Warn("no list from the distributor yet; serving anyway")
	case <-ctx.Done():
	}

	handler := g.Handler()
	if g.cfg.Wrap != nil {
		handler = g.cfg.Wrap(handler)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      g.cfg.RequestTimeout + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	// Connections that have not sent a byte yet: Shutdown counts them as
	// busy for their first 5 s (net/http's rule), so it closes them itself.
	var fresh sync.Map // net.Conn → struct{}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			fresh.Store(c, struct{}{})
		} else {
			fresh.Delete(c)
		}
	}
	limits := g.cfg.Conns
	if limits.Max == 0 {
		limits.Max = DefaultMaxConns
	}
	if limits.PerHost == 0 {
		limits.PerHost = DefaultMaxConnsPerHost
	}
	var refusedAt atomic.Int64
	ln = packet.LimitListener(ln, packet.NewConnCounter(limits), func(addr net.Addr) {
		connsRefused.Inc()
		now := time.Now().UnixNano()
		if last := refusedAt.Load(); now-last > int64(time.Second) && refusedAt.CompareAndSwap(last, now) {
			g.log.Warn("HTTP connection refused: too many connections (in all, or from its address)", "remote", addr.String(), "max", limits.Max, "per_address", limits.PerHost)
		}
	})
	g.log.Info("gate listening", "addr", ln.Addr().String(), "distributors", strings.Join(g.cfg.Distributors, ","))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("gate: %w", err)
	case <-ctx.Done():
	}
	if g.cfg.OnShutdown != nil {
		g.cfg.OnShutdown() // taken-over connections: Shutdown does not wait for them
	}
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout+time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	select {
	case err = <-shut:
	case <-time.After(freshGrace):
		// Still waiting: close the connections that have sent nothing
		// since Shutdown began; a request on its way in was not started.
		n := 0
		fresh.Range(func(k, _ any) bool {
			k.(net.Conn).Close()
			n++
			return true
		})
		if n > 0 {
			g.log.Info("closed connections that had sent no request", "count", n)
		}
		err = <-shut
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("gate: shutdown: %w", err)
	}
	return nil
}

// freshGrace is how long a stopping gate lets a connection that has sent
// nothing yet start its request before closing it.
const freshGrace = 250 * time.Millisecond
