package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/packet"
)

// Errors returned by Router.Call besides packet.ErrTimeout.
var (
	// ErrNoRoute means no process in the list serves the route.
	ErrNoRoute = errors.New("service: no such route")
	// ErrNoInstance means the route is listed but no instance of it is
	// connected now.
	ErrNoInstance = errors.New("service: no instance available")
	// ErrInstanceLost means the instance's connection dropped while the
	// request was in flight.
	ErrInstanceLost = errors.New("service: instance connection lost")
)

// RouterConfig configures a Router.
type RouterConfig struct {
	// RequestTimeout bounds a call whose context has no earlier deadline
	// (default 10s).
	RequestTimeout time.Duration
	// MaxPacket limits packet size (packet.DefaultMaxSize when 0).
	MaxPacket int
	// FleetKey, when set, signs the auth object of every CallAuth.
	FleetKey FleetKey
	Logger   *slog.Logger
}

// Router calls the routes of other processes. Fed with the distributor's
// list (Update), it keeps one connection to every listed instance,
// reconnecting while the instance stays listed, and sends each call to the
// next connected instance of its route, round robin. An instance whose
// connection drops is skipped at once; calls in flight on it fail at once,
// and a GET or DELETE is retried once on another instance.
type Router struct {
	cfg RouterConfig
	log *slog.Logger

	mu        sync.RWMutex
	routes    map[string]*route    // "GET/goods" → instances
	instances map[string]*instance // by host:port
	closed    bool
}

type route struct {
	next      atomic.Uint64
	instances []*instance
}

type instance struct {
	name  string
	addr  string
	conn  atomic.Pointer[packet.Conn] // nil while not connected
	stop  chan struct{}
	tried chan struct{} // closed after the first connection attempt
}

// NewRouter returns a router with no instances.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Router{cfg: cfg, log: cfg.Logger, routes: map[string]*route{}, instances: map[string]*instance{}}
}

// Update replaces the set of instances with those in nodes. Entries named
// "gate" are skipped: gates serve HTTP, not routes.
func (r *Router) Update(nodes []distributor.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	want := map[string]distributor.Node{}
	for _, n := range nodes {
		if n.Name == "gate" || len(n.URLs) == 0 {
			continue
		}
		want[n.Addr()] = n
	}
	for addr, in := range r.instances {
		if _, ok := want[addr]; !ok {
			delete(r.instances, addr)
			close(in.stop)
		}
	}
	routes := map[string]*route{}
	for addr, n := range want {
		in, ok := r.instances[addr]
		if !ok {
			in = &instance{name: n.Name, addr: addr, stop: make(chan struct{}), tried: make(chan struct{})}
			r.instances[addr] = in
			go r.keep(in)
		}
		for _, u := range n.URLs {
			rt := routes[u]
			if rt == nil {
				rt = &route{}
				if old := r.routes[u]; old != nil {
					rt.next.Store(old.next.Load())
				}
				routes[u] = rt
			}
			rt.instances = append(rt.instances, in)
		}
	}
	r.routes = routes
}

// keep holds a connection to in until it is removed, redialling with
// backoff whenever the connection drops.
func (r *Router) keep(in *instance) {
	var delay time.Duration
	var once sync.Once
	defer once.Do(func() { close(in.tried) })
	for {
		d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-in.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		nc, err := d.DialContext(ctx, "tcp", in.addr)
		cancel()
		if err == nil {
			delay = 0
			c := packet.NewConn(nc, packet.Options{MaxSize: r.cfg.MaxPacket, Logger: r.log})
			in.conn.Store(c)
			once.Do(func() { close(in.tried) })
			r.log.Debug("connected to instance", "name", in.name, "addr", in.addr)
			select {
			case <-c.Closed():
				in.conn.Store(nil)
				r.log.Info("instance connection lost", "name", in.name, "addr", in.addr)
			case <-in.stop:
				in.conn.Store(nil)
				r.retire(c)
				return
			}
		}
		once.Do(func() { close(in.tried) })
		if delay == 0 {
			delay = 100 * time.Millisecond
		} else if delay *= 2; delay > 2*time.Second {
			delay = 2 * time.Second
		}
		select {
		case <-time.After(delay):
		case <-in.stop:
			return
		}
	}
}

// retire closes a connection to a removed instance once its calls in flight
// have been answered (or the request timeout has passed).
func (r *Router) retire(c *packet.Conn) {
	deadline := time.Now().Add(r.cfg.RequestTimeout)
	for c.Pending() > 0 && time.Now().Before(deadline) {
		select {
		case <-c.Closed():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.Close()
}

// Has reports whether some listed process serves "METHOD/path".
func (r *Router) Has(method, path string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.routes[method+path] != nil
}

// pick returns the next connected instance of rt other than skip.
func pick(rt *route, skip *packet.Conn) *packet.Conn {
	n := uint64(len(rt.instances))
	start := rt.next.Add(1)
	for i := range n {
		c := rt.instances[(start+i)%n].conn.Load()
		if c != nil && c != skip {
			select {
			case <-c.Closed():
				continue
			default:
				return c
			}
		}
	}
	return nil
}

// Call sends a request for "METHOD path" to an instance and returns its
// answer. params is a JSON object (or nil). Errors: ErrNoRoute,
// ErrNoInstance, ErrInstanceLost, packet.ErrTimeout, or ctx's error.
func (r *Router) Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error) {
	return r.CallAuth(ctx, nil, method, path, params)
}

// CallAuth is Call with the identity the caller vouches for, sent as the
// request's "auth" object (none when auth is nil). The gate calls with it.
func (r *Router) CallAuth(ctx context.Context, auth *Auth, method, path string, params []byte) (*packet.Message, error) {
	m, err := r.callAuth(ctx, auth, method, path, params)
	routerCallsBy[callOutcome(err)].Inc()
	return m, err
}

// callOutcome names err for the router's metric.
func callOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNoRoute), errors.Is(err, ErrNoInstance):
		return "no_instance"
	case errors.Is(err, ErrInstanceLost):
		return "lost"
	case errors.Is(err, packet.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "error"
	}
}

func (r *Router) callAuth(ctx context.Context, auth *Auth, method, path string, params []byte) (*packet.Message, error) {
	var authJSON []byte
	if auth != nil {
		if len(r.cfg.FleetKey) > 0 {
			auth = r.cfg.FleetKey.sign(auth, method, path, time.Now())
		}
		var err error
		if authJSON, err = json.Marshal(auth); err != nil {
			return nil, err
		}
	}
	r.mu.RLock()
	rt := r.routes[method+path]
	r.mu.RUnlock()
	if rt == nil {
		return nil, ErrNoRoute
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.RequestTimeout)
		defer cancel()
	}
	retries := 0
	if method == "GET" || method == "DELETE" {
		retries = 1
	}
	var skip *packet.Conn
	for {
		c := pick(rt, skip)
		if c == nil && skip == nil && waitFirstAttempt(ctx, rt) {
			c = pick(rt, nil)
		}
		if c == nil {
			if skip != nil {
				return nil, ErrInstanceLost
			}
			return nil, ErrNoInstance
		}
		m, err := c.CallAuth(ctx, path, method, params, authJSON)
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, packet.ErrClosed) {
			return nil, err
		}
		if retries == 0 {
			return nil, ErrInstanceLost
		}
		retries--
		routerCallsBy["retried"].Inc()
		skip = c
	}
}

// waitFirstAttempt waits (at most a second) for instances of rt that were
// just listed and have not tried to connect yet; it reports whether it
// waited. Without it, the first requests after a new instance appears would
// get ErrNoInstance while the connection is being made.
func waitFirstAttempt(ctx context.Context, rt *route) bool {
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	waited := false
	for _, in := range rt.instances {
		select {
		case <-in.tried:
			continue
		default:
		}
		waited = true
		select {
		case <-in.tried:
		case <-ctx.Done():
			return waited
		case <-timer.C:
			return waited
		}
	}
	return waited
}

// Close drops every instance and closes its connection.
func (r *Router) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for addr, in := range r.instances {
		delete(r.instances, addr)
		close(in.stop)
	}
	r.routes = map[string]*route{}
}
