package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/packet"
)

// instance is one listed process that a Client calls: its connection, kept
// open and redialled while the process stays listed, and what the balancer
// and the outlier detector know of it.
type instance struct {
	name      string
	addr      string
	heartbeat bool   // the process heartbeats (its registration says so)
	probe     string // a GET route it serves, to probe it after an ejection ("" = none)

	conn  atomic.Pointer[packet.Conn] // nil while not connected or not answering
	auth  atomic.Pointer[connAuth]    // what signatures on conn are bound to
	stop  chan struct{}               // closed when the instance leaves the list
	tried chan struct{}               // closed after the first connection attempt

	inflight   atomic.Int64 // calls sent and not finished
	lastPick   atomic.Int64 // monotonic ns of the last call sent
	busySince  atomic.Int64 // monotonic ns when inflight last rose from 0
	lastAnswer atomic.Int64 // monotonic ns of the last answer
	latency    peakEWMA
	health     outlier
}

func newInstance(n distributor.Node) *instance {
	in := &instance{name: n.Name, addr: n.Addr(), heartbeat: n.Heartbeat, stop: make(chan struct{}), tried: make(chan struct{})}
	urls := slices.Sorted(slices.Values(n.URLs))
	for _, u := range urls {
		if strings.HasPrefix(u, "GET/") {
			in.probe = strings.TrimPrefix(u, "GET")
			break
		}
	}
	in.lastPick.Store(monotonic())
	return in
}

// usable reports whether calls can be sent to the instance now.
func (in *instance) usable() bool {
	c := in.conn.Load()
	if c == nil {
		return false
	}
	select {
	case <-c.Closed():
		return false
	default:
		return true
	}
}

// connAuth is the nonce an instance gave one connection, and the sequence
// numbers signed on it so far (see FleetKey).
type connAuth struct {
	conn  *packet.Conn
	nonce string
	seq   atomic.Uint64
}

// keeper holds the connections of a Client's instances.
type keeper struct {
	cfg     *ClientConfig
	log     *slog.Logger
	wg      sync.WaitGroup // keep and probe goroutines
	closing chan struct{}  // closed by Client.Close: retire without waiting
}

// keep holds a connection to in until it leaves the list, redialling with
// a back-off whenever the connection drops. A process that heartbeats is
// put in rotation only once it answers the first heartbeat: a frozen
// process's kernel still completes the TCP handshake.
func (k *keeper) keep(in *instance) {
	defer k.wg.Done()
	var delay time.Duration
	var once sync.Once
	defer once.Do(func() { close(in.tried) })
	wasDown := false // the last connection ended with the peer silent
	for {
		c, ca := k.connect(in)
		once.Do(func() { close(in.tried) })
		if c != nil {
			delay = 0
			in.auth.Store(ca)
			in.conn.Store(c)
			k.log.Debug("connected to instance", "name", in.name, "addr", in.addr, "heartbeat", c.Heartbeating())
			if wasDown {
				instanceEvents.WithLabelValues("back").Inc()
				k.log.Info("instance answering again; back in rotation", "name", in.name, "addr", in.addr)
				wasDown = false
			}
			select {
			case <-c.Closed():
				in.conn.Store(nil)
				if errors.Is(c.Err(), packet.ErrSilent) {
					wasDown = true
					instanceEvents.WithLabelValues("silent").Inc()
					k.log.Warn("instance silent past the heartbeat timeout; marked down, its calls failed over", "name", in.name, "addr", in.addr, "timeout", k.cfg.Heartbeat)
				} else {
					k.log.Info("instance connection lost", "name", in.name, "addr", in.addr)
				}
			case <-in.stop:
				in.conn.Store(nil)
				k.retire(c)
				return
			}
		}
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

// connect dials in and, for a process that heartbeats, waits for its first
// heartbeat and, in a fleet with a key, asks its nonce for the connection;
// it returns a nil connection when any of that fails or in leaves the list.
func (k *keeper) connect(in *instance) (*packet.Conn, *connAuth) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-in.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", in.addr)
	if err != nil {
		return nil, nil
	}
	hb := in.heartbeat && k.cfg.Heartbeat > 0
	opts := packet.Options{MaxSize: k.cfg.MaxPacket, Logger: k.log}
	if hb {
		opts.Heartbeat, opts.HeartbeatNow = k.cfg.Heartbeat, true
	}
	c := packet.NewConn(nc, opts)
	if hb && !k.heard(ctx, in, c) {
		c.Abort()
		return nil, nil
	}
	if !in.heartbeat || len(k.cfg.FleetKey) == 0 {
		return c, nil
	}
	// A microshop service binds signatures to the connection: ask its nonce
	// (a book service, which never heartbeats, is never asked).
	nctx, ncancel := context.WithTimeout(ctx, nonceTimeout)
	defer ncancel()
	m, err := c.Call(nctx, nonceMethod, nonceURI, nil)
	var ans struct {
		Nonce string `json:"nonce"`
	}
	if err != nil || json.Unmarshal(m.Raw, &ans) != nil || ans.Nonce == "" {
		k.log.Warn("instance gave no nonce for the connection; retrying", "name", in.name, "addr", in.addr, "err", err)
		c.Abort()
		return nil, nil
	}
	return c, &connAuth{conn: c, nonce: ans.Nonce}
}

// nonceTimeout bounds the wait for a connection's nonce.
const nonceTimeout = 2 * time.Second

// heard waits for c's first heartbeat, at most the heartbeat timeout.
func (k *keeper) heard(ctx context.Context, in *instance, c *packet.Conn) bool {
	t := time.NewTimer(k.cfg.Heartbeat)
	defer t.Stop()
	select {
	case <-c.Heard():
		return true
	case <-t.C:
		k.log.Debug("instance accepts connections but does not answer; retrying", "name", in.name, "addr", in.addr)
	case <-c.Closed():
	case <-ctx.Done():
	}
	return false
}

// retire closes a connection to an instance that left the list once its
// calls in flight have been answered (or the request timeout has passed, or
// the client is closing).
func (k *keeper) retire(c *packet.Conn) {
	deadline := time.Now().Add(k.cfg.RequestTimeout)
	for c.Pending() > 0 && time.Now().Before(deadline) {
		select {
		case <-c.Closed():
			return
		case <-k.closing:
			c.Close()
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.Close()
}

// eject takes in out of rotation for d, then probes it, again and again with
// a growing back-off, until a probe is answered or in leaves the list.
func (k *keeper) eject(in *instance, d time.Duration) {
	instanceEvents.WithLabelValues("ejected").Inc()
	k.log.Warn("instance ejected: calls in a row got no answer in time", "name", in.name, "addr", in.addr, "calls", ejectAfter, "for", d)
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			select {
			case <-time.After(d):
			case <-in.stop:
				return
			}
			if k.probeOnce(in) {
				in.health.readmit()
				instanceEvents.WithLabelValues("readmitted").Inc()
				k.log.Info("instance answered a probe; re-admitted", "name", in.name, "addr", in.addr)
				return
			}
			d = in.health.probeFailed()
			k.log.Warn("instance did not answer a probe; still ejected", "name", in.name, "addr", in.addr, "for", d)
		}
	}()
}

// probeOnce sends in a GET of one of its routes and reports whether any
// answer came within probeTimeout (an error answer proves life as well as a
// success). An instance with no GET route is re-admitted once connected.
func (k *keeper) probeOnce(in *instance) bool {
	c := in.conn.Load()
	if c == nil {
		return false
	}
	if in.probe == "" {
		return in.usable()
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	_, err := c.Call(ctx, "GET", in.probe, nil)
	return err == nil
}
