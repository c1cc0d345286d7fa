package packet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned for calls on, or pending on, a closed connection.
var ErrClosed = errors.New("packet: connection closed")

// ErrTimeout is returned by Call when no answer came within the deadline.
var ErrTimeout = errors.New("packet: request timed out")

// Options configure a Conn. The zero value is usable.
type Options struct {
	// MaxSize is the largest packet accepted (DefaultMaxSize when 0).
	MaxSize int
	// OnMessage receives every request or push (a packet with a URI) read
	// from the connection. It runs on the read loop: hand long work to a
	// goroutine. Nil drops such packets.
	OnMessage func(c *Conn, m *Message)
	// WriteTimeout bounds each write to the socket (default 10s).
	WriteTimeout time.Duration
	// QueueSize is the number of packets that may wait to be written
	// (default 1024).
	QueueSize int
	// Logger receives protocol errors (default slog.Default()).
	Logger *slog.Logger
}

// Conn is a packet connection. Both sides may send requests: Call sends one
// and waits for the answer with the same key, while responses may arrive in
// any order; requests from the peer go to Options.OnMessage.
//
// Conn runs one read loop and one write loop; all methods are safe for
// concurrent use.
type Conn struct {
	nc   net.Conn
	opts Options
	log  *slog.Logger

	out      chan []byte
	stopping chan struct{} // closed by Close: flush the queue, then close
	stopOnce sync.Once
	closing  chan struct{}
	done     chan struct{} // closed when both loops have stopped
	once     sync.Once
	err      atomic.Value // error that closed the connection

	nextKey atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]chan *Message // guarded by mu
}

// NewConn wraps nc and starts its read and write loops.
func NewConn(nc net.Conn, opts Options) *Conn {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Conn{
		nc:       nc,
		opts:     opts,
		log:      opts.Logger,
		out:      make(chan []byte, opts.QueueSize),
		stopping: make(chan struct{}),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		pending:  make(map[uint64]chan *Message),
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.readLoop() }()
	go func() { defer wg.Done(); c.writeLoop() }()
	go func() { wg.Wait(); close(c.done) }()
	return c
}

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Done is closed once the connection has closed and its loops have ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Closed is closed as soon as the connection starts closing.
func (c *Conn) Closed() <-chan struct{} { return c.closing }

// Err returns the reason the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	if e, ok := c.err.Load().(error); ok {
		return e
	}
	return nil
}

// Close closes the connection after writing the packets already queued
// (each write still bounded by WriteTimeout). Pending calls fail with
// ErrClosed.
func (c *Conn) Close() error {
	c.stopOnce.Do(func() { close(c.stopping) })
	return nil
}

// Abort closes the connection at once, dropping queued packets.
func (c *Conn) Abort() {
	c.shutdown(ErrClosed)
}

func (c *Conn) shutdown(err error) {
	c.once.Do(func() {
		c.err.Store(err)
		close(c.closing)
		c.nc.Close()
		c.mu.Lock()
		for k, ch := range c.pending {
			delete(c.pending, k)
			close(ch)
		}
		c.mu.Unlock()
	})
}

// Pending returns the number of calls waiting for an answer.
func (c *Conn) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Write queues one framed packet for sending. It blocks while the queue is
// full, until ctx is done or the connection closes.
func (c *Conn) Write(ctx context.Context, framed []byte) error {
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	select {
	case c.out <- framed:
		return nil
	case <-c.stopping:
		return ErrClosed
	case <-c.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Send encodes v as JSON and queues it as one packet.
func (c *Conn) Send(ctx context.Context, v any) error {
	b, err := Marshal(v)
	if err != nil {
		return err
	}
	return c.Write(ctx, b)
}

// Call sends a request and waits for the response with its key. It fails with
// ErrTimeout when ctx has no answer in time (a context without deadline gets
// none from Call itself: pass one), and with ErrClosed when the connection
// closes first.
func (c *Conn) Call(ctx context.Context, uri, method string, params []byte) (*Message, error) {
	return c.CallAuth(ctx, uri, method, params, nil)
}

// CallAuth is Call with an "auth" object in the request (see
// AppendRequestAuth); nil auth sends none.
func (c *Conn) CallAuth(ctx context.Context, uri, method string, params, auth []byte) (*Message, error) {
	key := c.nextKey.Add(1)
	ch := make(chan *Message, 1)
	c.mu.Lock()
	select {
	case <-c.closing:
		c.mu.Unlock()
		return nil, ErrClosed
	default:
	}
	c.pending[key] = ch
	c.mu.Unlock()

	if err := c.Write(ctx, AppendRequestAuth(nil, uri, method, key, params, auth)); err != nil {
		c.forget(key)
		return nil, callErr(err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, ErrClosed
		}
		return m, nil
	case <-ctx.Done():
		c.forget(key)
		return nil, callErr(ctx.Err())
	}
}

func callErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return err
}

func (c *Conn) forget(key uint64) {
	c.mu.Lock()
	delete(c.pending, key)
	c.mu.Unlock()
}

func (c *Conn) readLoop() {
	dec := NewDecoder(c.nc, c.opts.MaxSize)
	for {
		p, err := dec.Next()
		if errors.Is(err, ErrTooLarge) {
			c.log.Warn("packet over size limit dropped", "remote", c.nc.RemoteAddr().String(), "limit", c.opts.MaxSize)
			continue
		}
		if err != nil {
			c.shutdown(fmt.Errorf("packet: read: %w", err))
			return
		}
		m, err := Decode(p)
		if err != nil {
			c.log.Warn("malformed packet dropped", "remote", c.nc.RemoteAddr().String(), "err", err)
			continue
		}
		if m.IsRequest() {
			if c.opts.OnMessage != nil {
				c.opts.OnMessage(c, m)
			}
			continue
		}
		key, ok := m.KeyUint()
		if !ok {
			c.log.Warn("response without a usable key dropped", "remote", c.nc.RemoteAddr().String())
			continue
		}
		c.mu.Lock()
		ch := c.pending[key]
		delete(c.pending, key)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

func (c *Conn) writeLoop() {
	w := bufio.NewWriterSize(c.nc, 32<<10)
	for {
		var b []byte
		select {
		case b = <-c.out:
		case <-c.closing:
			return
		case <-c.stopping:
			err := c.flushQueue(w)
			if err == nil {
				err = ErrClosed
			}
			c.shutdown(err)
			return
		}
		c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
		_, err := w.Write(b)
		// Batch whatever else is already queued into the same flush.
	drain:
		for err == nil {
			select {
			case b = <-c.out:
				_, err = w.Write(b)
			default:
				break drain
			}
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			c.shutdown(fmt.Errorf("packet: write: %w", err))
			return
		}
	}
}

// flushQueue writes everything still queued, then flushes.
func (c *Conn) flushQueue(w *bufio.Writer) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	for {
		select {
		case b := <-c.out:
			if _, err := w.Write(b); err != nil {
				return err
			}
		default:
			return w.Flush()
		}
	}
}
