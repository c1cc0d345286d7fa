package distributor

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/microshop/microshop/packet"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Addr is the distributor's host:port.
	Addr string
	// Registration, when not nil, is sent on every (re)connection.
	Registration *Registration
	// OnChange is called with every new list (never twice in a row with the
	// same list). It runs on the client's read loop: keep it short.
	OnChange func([]Node)
	// RetryInterval is the wait between connection attempts (default 1s).
	RetryInterval time.Duration
	// MaxPacket limits packet size (packet.DefaultMaxSize when 0).
	MaxPacket int
	// FleetKey, when set, signs the registration, as a distributor with
	// the same key requires.
	FleetKey []byte
	Logger   *slog.Logger
}

// Client keeps a process registered with the distributor and follows the
// list. While the distributor is away it keeps the last list and retries.
type Client struct {
	cfg ClientConfig
	log *slog.Logger

	mu        sync.Mutex
	nodes     []Node
	connected bool
	ready     chan struct{}
	readyOnce sync.Once
}

// NewClient returns a client; call Run to start it.
func NewClient(cfg ClientConfig) *Client {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}
}

// Nodes returns the last list received.
func (c *Client) Nodes() []Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Connected reports whether the client is connected to the distributor now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Ready is closed once the first list has arrived.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Run connects, registers and follows the list until ctx is done; then it
// closes the connection, which removes this process from the registry.
func (c *Client) Run(ctx context.Context) error {
	warned := false
	for {
		d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
		nc, err := d.DialContext(ctx, "tcp", c.cfg.Addr)
		if err == nil {
			warned = false
			c.session(ctx, nc)
		} else if ctx.Err() == nil && !warned {
			c.log.Warn("distributor unreachable; keeping the last list and retrying", "addr", c.cfg.Addr, "err", err, "every", c.cfg.RetryInterval)
			warned = true
		}
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-time.After(c.cfg.RetryInterval):
		case <-ctx.Done():
			return nil
		}
	}
}

// session runs one connection until it drops or ctx is done.
func (c *Client) session(ctx context.Context, nc net.Conn) {
	conn := packet.NewConn(nc, packet.Options{MaxSize: c.cfg.MaxPacket, Logger: c.log, OnMessage: c.onMessage})
	if r := c.cfg.Registration; r != nil {
		reg := *r
		if reg.URLs == nil {
			reg.URLs = []string{}
		}
		if len(c.cfg.FleetKey) > 0 {
			sign(c.cfg.FleetKey, &reg, time.Now())
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := conn.Send(wctx, registerPacket{URI: "/distributes", Method: "POST", Key: 0, Params: reg})
		cancel()
		if err != nil {
			conn.Abort()
			<-conn.Done()
			return
		}
	}
	c.setConnected(true)
	c.log.Info("connected to distributor", "addr", c.cfg.Addr)
	select {
	case <-conn.Done():
		if ctx.Err() == nil {
			c.log.Warn("lost the distributor; keeping the last list and reconnecting", "addr", c.cfg.Addr)
		}
	case <-ctx.Done():
		conn.Close()
		<-conn.Done()
	}
	c.setConnected(false)
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
}

func (c *Client) onMessage(_ *packet.Conn, m *packet.Message) {
	// Recognise the list by its array params, not by its uri.
	nodes, ok := decodeList(m.Params)
	if !ok {
		return
	}
	c.mu.Lock()
	same := c.nodes != nil && slices.EqualFunc(c.nodes, nodes, Node.Equal)
	if !same {
		c.nodes = nodes
	}
	c.mu.Unlock()
	if !same && c.cfg.OnChange != nil {
		c.cfg.OnChange(slices.Clone(nodes))
	}
	c.readyOnce.Do(func() { close(c.ready) })
}
