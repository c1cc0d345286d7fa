package distributor

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/microshop/microshop/packet"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Addrs are the distributors' host:port. The client registers with
	// every one and follows them all: the list it reports is the union of
	// theirs (see Client), so one frozen, killed or partitioned distributor
	// changes nothing while another answers.
	Addrs []string
	// Registration, when not nil, is sent on every (re)connection.
	Registration *Registration
	// OnChange is called with every new list (never twice in a row with the
	// same list). Calls do not overlap; keep them short.
	OnChange func([]Node)
	// RetryInterval is the wait between connection attempts (default 1s).
	RetryInterval time.Duration
	// MaxPacket limits packet size (packet.DefaultMaxSize when 0).
	MaxPacket int
	// FleetKey, when set, signs the registration, as a distributor with
	// the same key requires.
	FleetKey []byte
	// Heartbeat, when positive, is the heartbeat timeout: the registration
	// says the process heartbeats, a microshop distributor then heartbeats
	// on the connection, and one silent for longer is dropped and redialled
	// (a book distributor, which never heartbeats, is followed as before).
	Heartbeat time.Duration
	// Settle is how long after a distributor (re)connects its lists may only
	// add to what the client knew, not take away (default DefaultSettle): a
	// distributor that restarted, thawed or came back from a partition
	// lists the processes only as they re-register.
	Settle time.Duration
	Logger *slog.Logger
}

// helloTimeout bounds the wait for a new connection's first packet. A
// distributor that accepts but says nothing (frozen: its kernel still
// completes the handshake) is never counted as connected meanwhile.
const helloTimeout = 10 * time.Second

// Client keeps a process registered with its distributors and follows the
// list they push. The list it reports is the union of the last lists of the
// distributors it is connected to now, so a process registered with any of
// them is listed; while none is connected it keeps the last list.
type Client struct {
	cfg ClientConfig
	log *slog.Logger

	mu        sync.Mutex
	sources   []*source
	nodes     []Node // the union last reported; nil before the first list
	ready     chan struct{}
	readyOnce sync.Once
	notify    sync.Mutex // serializes OnChange calls, taken before mu
}

// source is one distributor's state. Guarded by Client.mu.
type source struct {
	addr  string
	live  bool      // connected, and the distributor has answered
	list  []Node    // the last list of this connection; nil until one came
	since time.Time // when this connection's first list came
}

// NewClient returns a client; call Run to start it.
func NewClient(cfg ClientConfig) *Client {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}
	for _, a := range cfg.Addrs {
		c.sources = append(c.sources, &source{addr: a})
	}
	return c
}

// Nodes returns the last list reported.
func (c *Client) Nodes() []Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Connected reports whether some distributor is connected and answering now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if s.live {
			return true
		}
	}
	return false
}

// Ready is closed once the first list has arrived.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Run connects to every distributor, registers and follows the lists until
// ctx is done; then it closes the connections, which removes this process
// from the registries.
func (c *Client) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range c.sources {
		wg.Go(func() { c.follow(ctx, s) })
	}
	wg.Wait()
	return nil
}

// follow keeps one distributor connected until ctx is done.
func (c *Client) follow(ctx context.Context, s *source) {
	warned := false
	for {
		d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
		nc, err := d.DialContext(ctx, "tcp", s.addr)
		if err == nil {
			warned = false
			c.session(ctx, s, nc)
		} else if ctx.Err() == nil && !warned {
			c.log.Warn("distributor unreachable; keeping the last list and retrying", "addr", s.addr, "err", err, "every", c.cfg.RetryInterval)
			warned = true
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-time.After(c.cfg.RetryInterval):
		case <-ctx.Done():
			return
		}
	}
}

// session runs one connection until it drops or ctx is done.
func (c *Client) session(ctx context.Context, s *source, nc net.Conn) {
	conn := packet.NewConn(nc, packet.Options{MaxSize: c.cfg.MaxPacket, Logger: c.log, Heartbeat: c.cfg.Heartbeat,
		OnMessage: func(_ *packet.Conn, m *packet.Message) { c.onMessage(s, m) }})
	defer func() {
		c.setLive(s, false)
		conn.Abort()
		<-conn.Done()
	}()
	if r := c.cfg.Registration; r != nil {
		reg := *r
		if reg.URLs == nil {
			reg.URLs = []string{}
		}
		reg.Heartbeat = c.cfg.Heartbeat > 0
		if len(c.cfg.FleetKey) > 0 {
			reg.Nonce = c.challenge(ctx, conn, s)
			sign(c.cfg.FleetKey, &reg, time.Now())
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := conn.Send(wctx, registerPacket{URI: "/distributes", Method: "POST", Key: 0, Params: reg})
		cancel()
		if err != nil {
			return
		}
	}
	// Connected only once the distributor answers: its heartbeat, or (a
	// book distributor, or a watcher's connection) its list.
	hello := time.NewTimer(helloTimeout)
	defer hello.Stop()
	select {
	case <-conn.Heard():
	case <-conn.Done():
		return
	case <-hello.C:
		c.log.Warn("distributor accepted the connection but says nothing; reconnecting", "addr", s.addr, "waited", helloTimeout)
		return
	case <-ctx.Done():
		conn.Close()
		return
	}
	c.setLive(s, true)
	sessions.WithLabelValues("up").Inc()
	c.log.Info("connected to distributor", "addr", s.addr)
	select {
	case <-conn.Done():
		if ctx.Err() != nil {
			return
		}
		if errors.Is(conn.Err(), packet.ErrSilent) {
			sessions.WithLabelValues("silent").Inc()
			c.log.Warn("distributor silent past the heartbeat timeout; following the others and reconnecting", "addr", s.addr, "timeout", c.cfg.Heartbeat)
		} else {
			sessions.WithLabelValues("lost").Inc()
			c.log.Warn("lost the distributor; keeping the last list and reconnecting", "addr", s.addr)
		}
	case <-ctx.Done():
		conn.Close()
		<-conn.Done()
	}
}

// challengeTimeout bounds the wait for a distributor's challenge. The book's
// distributor never answers one (nor checks signatures): the registration
// then goes without.
const challengeTimeout = 2 * time.Second

// challenge asks the distributor for the nonce this connection's signed
// registration must carry; "" when it gives none.
func (c *Client) challenge(ctx context.Context, conn *packet.Conn, s *source) string {
	cctx, cancel := context.WithTimeout(ctx, challengeTimeout)
	defer cancel()
	m, err := conn.Call(cctx, challengeMethod, challengeURI, nil)
	var ans struct {
		Nonce string `json:"nonce"`
	}
	if err != nil || json.Unmarshal(m.Raw, &ans) != nil || ans.Nonce == "" {
		c.log.Debug("distributor gave no challenge; registering without", "addr", s.addr, "err", err)
		return ""
	}
	return ans.Nonce
}

// setLive marks s connected or not; a source that goes away takes its list
// out of the union.
func (c *Client) setLive(s *source, live bool) {
	c.mu.Lock()
	if s.live == live {
		c.mu.Unlock()
		return
	}
	s.live = live
	if !live {
		s.list = nil
	}
	c.mu.Unlock()
	c.update() // a list may have come before the session counted as live
}

func (c *Client) onMessage(s *source, m *packet.Message) {
	// Recognise the list by its array params, not by its uri.
	nodes, ok := decodeList(m.Params)
	if !ok {
		return
	}
	c.mu.Lock()
	first := s.list == nil
	s.list = nodes
	if first {
		s.since = time.Now()
	}
	c.mu.Unlock()
	if first {
		// Once this list is past its settle period it may take nodes away.
		time.AfterFunc(c.cfg.Settle, c.update)
	}
	c.update()
}

// update recomputes the union and reports it if it changed.
func (c *Client) update() {
	c.notify.Lock()
	defer c.notify.Unlock()
	c.mu.Lock()
	nodes, ok := c.unionLocked(time.Now())
	changed := ok && (c.nodes == nil || !slices.EqualFunc(c.nodes, nodes, Node.Equal))
	if changed {
		c.nodes = nodes
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	if changed && c.cfg.OnChange != nil {
		c.cfg.OnChange(slices.Clone(nodes))
	}
	c.readyOnce.Do(func() { close(c.ready) })
}

// unionLocked returns the union of the lists of the connected distributors,
// each process once (by address), in the order the distributors list them.
// While every one of those lists is in its settle period the last union's
// processes are kept too. ok is false when no connected distributor has
// sent a list: then the last list stands.
func (c *Client) unionLocked(now time.Time) (nodes []Node, ok bool) {
	seen := map[string]bool{}
	add := func(list []Node) {
		for _, n := range list {
			if a := n.Addr(); !seen[a] {
				seen[a] = true
				nodes = append(nodes, n)
			}
		}
	}
	settled := false
	for _, s := range c.sources {
		if s.live && s.list != nil {
			ok = true
			add(s.list)
			if now.Sub(s.since) >= c.cfg.Settle {
				settled = true
			}
		}
	}
	if ok && !settled {
		add(c.nodes)
	}
	if nodes == nil {
		nodes = []Node{}
	}
	return nodes, ok
}
