package service

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/packet"
)

// Errors returned by Client.Call besides packet.ErrTimeout.
var (
	// ErrNoRoute means no process in the list serves the route, and none
	// ever did.
	ErrNoRoute = errors.New("service: no such route")
	// ErrNoInstance means the route is or was listed but no instance of it
	// can take a call now.
	ErrNoInstance = errors.New("service: no instance available")
	// ErrInstanceLost means the instance's connection closed, or the
	// instance fell silent, while the request was in flight, and the
	// request could not be sent again elsewhere (a POST, which is never
	// re-sent: it may or may not have been applied).
	ErrInstanceLost = errors.New("service: instance lost with the request in flight")
	// ErrNotEnforcing means the route is served only by processes that do
	// not enforce identities (the book's services), to which a client with
	// ClientConfig.IdentitiesOnly sends nothing.
	ErrNotEnforcing = errors.New("service: the route is served only by processes that cannot enforce identities")
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// RequestTimeout bounds a call whose context has no earlier deadline
	// (default 10s).
	RequestTimeout time.Duration
	// MaxPacket limits packet size (packet.DefaultMaxSize when 0).
	MaxPacket int
	// Heartbeat, when positive, is the heartbeat timeout on connections to
	// instances that heartbeat (distributor.Node.Heartbeat): one silent for
	// longer is marked down, its calls in flight fail over, and it comes
	// back once it answers again. Zero turns heartbeats off.
	Heartbeat time.Duration
	// HedgeAfter is the least time a GET waits for its answer before it is
	// also sent to another instance (see hedge.go); zero turns hedging off.
	HedgeAfter time.Duration
	// FleetKey, when set, signs the auth object of every CallAuth.
	FleetKey FleetKey
	// IdentitiesOnly sends calls only to processes that enforce the
	// identity of a call (distributor.Node.Identities): a gate that checks
	// tokens sets it, since the book's services would let anyone do
	// anything. A route served by no other gets ErrNotEnforcing, and every
	// such process is logged once when listed.
	IdentitiesOnly bool
	Logger         *slog.Logger
}

// Client calls the routes of other processes, as net/http's Client calls
// HTTP servers. Fed with the distributor's list (Update), it keeps one
// connection to every listed instance (instance.go), sends each call to the
// least loaded of two random instances of its route (balance.go), ejects
// instances whose calls time out (eject.go), hedges slow GETs (hedge.go),
// and fails calls over when an instance's connection closes or it falls
// silent: a GET or DELETE is sent again to another instance at once, a POST
// fails with ErrInstanceLost.
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	keeper *keeper
	budget *hedgeBudget

	mu        sync.RWMutex
	routes    map[string]*route    // "GET/goods" → instances
	instances map[string]*instance // by host:port
	known     map[string]bool      // every route ever listed
	refused   map[string]bool      // routes listed now by processes IdentitiesOnly skips
	warned    map[string]bool      // the skipped processes logged, by host:port
	closed    bool
}

// route is one "METHOD/path" and the instances that serve it.
type route struct {
	instances []*instance
	rtt       *rtt // shared by the route's successive lists
}

// NewClient returns a client with no instances.
func NewClient(cfg ClientConfig) *Client {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{cfg: cfg, log: cfg.Logger, budget: newHedgeBudget(), routes: map[string]*route{}, instances: map[string]*instance{}, known: map[string]bool{},
		refused: map[string]bool{}, warned: map[string]bool{}}
	c.keeper = &keeper{cfg: &c.cfg, log: c.log, closing: make(chan struct{})}
	return c
}

// Update replaces the set of instances with those in nodes. Entries named
// "gate" are skipped: gates serve HTTP, not routes.
func (c *Client) Update(nodes []distributor.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := map[string]distributor.Node{}
	refused, warned := map[string]bool{}, map[string]bool{}
	for _, n := range nodes {
		if n.Name == "gate" || len(n.URLs) == 0 {
			continue
		}
		if c.cfg.IdentitiesOnly && !n.Identities {
			addr := n.Addr()
			if !c.warned[addr] {
				c.log.Warn("not routing to a process that cannot enforce identities (a book service?): with --auth=on the gate sends it nothing, and its routes answer 503 unless a microshop instance serves them too; run a fleet with the book's services with --auth=off",
					"name", n.Name, "addr", addr)
			}
			warned[addr] = true
			for _, u := range n.URLs {
				refused[u], c.known[u] = true, true
			}
			continue
		}
		want[n.Addr()] = n
	}
	c.refused, c.warned = refused, warned
	for addr, in := range c.instances {
		if n, ok := want[addr]; !ok || n.Heartbeat != in.heartbeat || n.Name != in.name {
			delete(c.instances, addr)
			close(in.stop)
		}
	}
	routes := map[string]*route{}
	for addr, n := range want {
		in, ok := c.instances[addr]
		if !ok {
			in = newInstance(n)
			c.instances[addr] = in
			c.keeper.wg.Add(1)
			go c.keeper.keep(in)
		}
		for _, u := range n.URLs {
			rt := routes[u]
			if rt == nil {
				rt = &route{rtt: &rtt{}}
				if old := c.routes[u]; old != nil {
					rt.rtt = old.rtt
				}
				routes[u] = rt
				c.known[u] = true
			}
			rt.instances = append(rt.instances, in)
		}
	}
	c.routes = routes
}

// Has reports whether some listed process serves "METHOD/path" now.
func (c *Client) Has(method, path string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.routes[method+path] != nil
}

// Known reports whether "METHOD/path" is or was listed: a route that
// lost its last instance is known (its calls fail with ErrNoInstance, a
// 503), one never listed is not (ErrNoRoute, a 404).
func (c *Client) Known(method, path string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.known[method+path]
}

// InstanceState is what a Client knows of one listed instance now.
type InstanceState struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`    // host:port
	Up      bool   `json:"up"`      // connected (and, if it heartbeats, answering): calls can be sent
	Ejected bool   `json:"ejected"` // its calls timed out: the balancer skips it for a while
}

// Instances reports every instance the client keeps now, sorted by name
// and address (the gate shows them on GET /readyz).
func (c *Client) Instances() []InstanceState {
	c.mu.RLock()
	out := make([]InstanceState, 0, len(c.instances))
	for _, in := range c.instances {
		out = append(out, InstanceState{Name: in.name, Addr: in.addr, Up: in.usable(), Ejected: in.health.ejected()})
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b InstanceState) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Addr, b.Addr))
	})
	return out
}

// Call sends a request for "METHOD path" to an instance and returns its
// answer. params is a JSON object (or nil). Errors: ErrNoRoute,
// ErrNoInstance, ErrInstanceLost, packet.ErrTimeout, or ctx's error.
func (c *Client) Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error) {
	return c.CallAuth(ctx, nil, method, path, params)
}

// CallAuth is Call with the identity the caller vouches for, sent as the
// request's "auth" object (none when auth is nil). The gate calls with it.
func (c *Client) CallAuth(ctx context.Context, auth *Auth, method, path string, params []byte) (*packet.Message, error) {
	m, err := c.callAuth(ctx, auth, method, path, params)
	clientCallsBy[callOutcome(err)].Inc()
	return m, err
}

// Do is the typed call: it calls "METHOD path" as auth (nil: no
// identity) with params encoded as a JSON object (nil: none; []byte and
// json.RawMessage are sent as they are) and decodes the answer into out
// (see Decode). Its errors are Call's, or an *Error for an answer that
// tells a failure: map either to an HTTP status with CallStatus.
func (c *Client) Do(ctx context.Context, auth *Auth, method, path string, params, out any) error {
	var body []byte
	switch p := params.(type) {
	case nil:
	case []byte:
		body = p
	case json.RawMessage:
		body = p
	default:
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("service: %s %s: cannot encode the parameters: %w", method, path, err)
		}
		body = b
	}
	m, err := c.CallAuth(ctx, auth, method, path, body)
	if err != nil {
		return err
	}
	return Decode(m, out)
}

// Decode turns an answer into a typed one, so that no caller parses
// errorcode: an answer that tells a failure is an *Error with the HTTP
// status and message of packet.Message.Status (the book's codes and
// database error objects included); a success is decoded into out (nil:
// not decoded), and one that does not decode is a 502 *Error.
func Decode(m *packet.Message, out any) error {
	if status, msg := m.Status(); status != http.StatusOK {
		return &Error{Code: status, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(m.Raw, out); err != nil {
			return &Error{Code: http.StatusBadGateway, Message: "a service answered what cannot be read"}
		}
	}
	return nil
}

// callOutcome names err for the client's metric.
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
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "error"
	}
}

func (c *Client) callAuth(ctx context.Context, auth *Auth, method, path string, params []byte) (*packet.Message, error) {
	var authJSON, signed []byte
	if auth != nil {
		if len(c.cfg.FleetKey) > 0 {
			signed = packet.SignedParams(params) // signed per attempt, for its connection
		} else {
			authJSON = appendAuth(nil, auth)
		}
	}
	key := method + path
	c.mu.RLock()
	rt, known, refused := c.routes[key], c.known[key], c.refused[key]
	c.mu.RUnlock()
	if rt == nil {
		if refused {
			return nil, ErrNotEnforcing
		}
		if known {
			return nil, ErrNoInstance
		}
		return nil, ErrNoRoute
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	x := exchange{c: c, rt: rt, ctx: ctx, method: method, path: path, params: params, auth: authJSON, identity: auth, signed: signed}
	return x.run()
}

// Close drops every instance, closes its connection and waits for the
// goroutines that kept them.
func (c *Client) Close() {
	c.mu.Lock()
	if !c.closed {
		close(c.keeper.closing)
	}
	c.closed = true
	for addr, in := range c.instances {
		delete(c.instances, addr)
		close(in.stop)
	}
	c.routes = map[string]*route{}
	c.mu.Unlock()
	c.keeper.wg.Wait()
}

// eject starts in's ejection unless the client is closed.
func (c *Client) eject(in *instance, d time.Duration) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.closed {
		c.keeper.eject(in, d)
	}
}

// epoch is the origin of the monotonic times the client keeps in atomics.
var epoch = time.Now()

func monotonic() int64 { return int64(time.Since(epoch)) }
