package packet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned for calls on, or pending on, a closed connection.
var ErrClosed = errors.New("packet: connection closed")

// ErrTimeout is returned by Call when no answer came within the deadline.
var ErrTimeout = errors.New("packet: request timed out")

// ErrSilent is the reason a connection closed when its peer, which
// heartbeats, sent nothing for longer than Options.Heartbeat: a frozen
// process, a cut link or a partition, none of which TCP reports. It wraps
// ErrClosed: a call pending on such a connection fails with it.
var ErrSilent = fmt.Errorf("%w: the peer was silent past the heartbeat timeout", ErrClosed)

// Options configure a Conn. The zero value is usable.
type Options struct {
	// MaxSize is the largest packet accepted (DefaultMaxSize when 0).
	MaxSize int
	// OnMessage receives every request or push (a packet with a URI) read
	// from the connection. It runs on the read loop: hand long work to a
	// goroutine, and block only to push back (nothing more is read from the
	// connection meanwhile, and the time spent there does not count as the
	// peer's silence). Nil drops such packets.
	OnMessage func(c *Conn, m *Message)
	// WriteTimeout bounds each write to the socket (default 10s).
	WriteTimeout time.Duration
	// QueueSize is the number of packets that may wait to be written
	// (default 1024).
	QueueSize int
	// MaxQueuedBytes bounds the bytes waiting to be written (default twice
	// MaxSize): past it, Write waits for the peer to read. One packet is
	// always let in, however large.
	MaxQueuedBytes int
	// Logger receives protocol errors (default slog.Default()).
	Logger *slog.Logger

	// Heartbeat, when positive, is how long the peer may stay silent once
	// both ends heartbeat: past it the connection closes with ErrSilent.
	// While heartbeating, a Conn sends a heartbeat packet whenever it has
	// written nothing for a fifth of this, so a live peer is never silent
	// that long. Heartbeats are a microshop extension that a book peer must
	// never receive: they start only when HeartbeatNow is set (the side that
	// knows its peer heartbeats, from the distributor's list or its
	// registration) or once the peer sends one (the side that cannot tell).
	// Zero turns them off: a heartbeat received is ignored.
	Heartbeat time.Duration
	// HeartbeatNow starts heartbeats at once (see Heartbeat).
	HeartbeatNow bool
}

// heartbeatPacket is the body of the heartbeat packet. It is request-shaped,
// so an older microshop peer that got one would answer "unknown route"
// rather than log a malformed packet; a book peer never gets one.
const heartbeatPacket = `{"uri":"/heartbeat","method":"HEARTBEAT","key":0}`

var heartbeatFrame = []byte(heartbeatPacket + Separator)

// epoch is the origin of the monotonic times kept in atomics.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

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

	out      chan outPacket
	stopping chan struct{} // closed by Close: flush the queue, then close
	stopOnce sync.Once
	closing  chan struct{}
	done     chan struct{} // closed when both loops have stopped
	once     sync.Once
	err      atomic.Value // error that closed the connection

	nextKey atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]chan *Message // guarded by mu; closing closes under mu

	queued    atomic.Int64  // bytes in out (see MaxQueuedBytes)
	room      chan struct{} // a token after each flush, for writers waiting for room
	inMessage atomic.Bool   // the read loop is in OnMessage: not reading, on purpose
	lastRead  atomic.Int64  // monotonic ns (see now) of the last bytes read
	lastWrite atomic.Int64  // monotonic ns of the last flush
	heard     chan struct{} // closed once the first packet arrives
	heardOnce sync.Once
	beating   atomic.Bool // heartbeats started
	loops     sync.WaitGroup
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
	if opts.MaxQueuedBytes <= 0 {
		opts.MaxQueuedBytes = 2 * opts.MaxSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Conn{
		nc:       nc,
		opts:     opts,
		log:      opts.Logger,
		out:      make(chan outPacket, opts.QueueSize),
		stopping: make(chan struct{}),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		pending:  make(map[uint64]chan *Message),
		heard:    make(chan struct{}),
		room:     make(chan struct{}, 1),
	}
	c.lastRead.Store(now())
	c.lastWrite.Store(now())
	c.loops.Add(2)
	go func() { defer c.loops.Done(); c.readLoop() }()
	go func() { defer c.loops.Done(); c.writeLoop() }()
	if opts.HeartbeatNow {
		c.StartHeartbeat()
	}
	go func() { c.loops.Wait(); close(c.done) }()
	return c
}

// Heard is closed once the first packet (of any kind, a heartbeat too) has
// arrived from the peer: the peer is not only accepting bytes but answering.
func (c *Conn) Heard() <-chan struct{} { return c.heard }

// Heartbeating reports whether heartbeats run on the connection.
func (c *Conn) Heartbeating() bool { return c.beating.Load() }

// StartHeartbeat starts heartbeats (once), for a side that learns after
// NewConn that its peer heartbeats (the distributor, from a registration).
// A Conn without Options.Heartbeat never heartbeats.
func (c *Conn) StartHeartbeat() {
	if c.opts.Heartbeat <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closing:
		return // the loops are ending
	default:
	}
	if !c.beating.CompareAndSwap(false, true) {
		return
	}
	c.loops.Add(1)
	go func() { defer c.loops.Done(); c.heartbeatLoop() }()
}

// heartbeatLoop sends a heartbeat whenever nothing was written for a fifth
// of the timeout, and closes the connection with ErrSilent when nothing was
// read for the whole timeout. It runs apart from the write loop, which a
// peer that stopped reading can hold in a write for WriteTimeout.
func (c *Conn) heartbeatLoop() {
	timeout := c.opts.Heartbeat
	every := timeout / 5
	c.queueHeartbeat() // the first one at once: it answers the peer's
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-t.C:
		}
		n := now()
		if !c.inMessage.Load() && time.Duration(n-c.lastRead.Load()) > timeout {
			c.shutdown(ErrSilent) // the owner, who knows the peer, logs it
			return
		}
		if time.Duration(n-c.lastWrite.Load()) >= every {
			c.queueHeartbeat()
		}
	}
}

// queueHeartbeat queues a heartbeat unless the queue is full (then packets
// are on their way anyway).
func (c *Conn) queueHeartbeat() { c.tryQueue(heartbeatFrame) }

// tryQueue queues b if there is room now, and reports whether it did.
func (c *Conn) tryQueue(b []byte) bool {
	c.queued.Add(int64(len(b)))
	select {
	case c.out <- outPacket{b: b}:
		return true
	default:
		c.queued.Add(-int64(len(b)))
		return false
	}
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
		// closing closes under mu: whoever holds mu and sees it open knows
		// the loops are running (see StartHeartbeat).
		c.mu.Lock()
		close(c.closing)
		for k, ch := range c.pending {
			delete(c.pending, k)
			close(ch)
		}
		c.mu.Unlock()
		c.nc.Close()
	})
}

// Pending returns the number of calls waiting for an answer.
func (c *Conn) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Write queues one framed packet for sending. It blocks while the queue is
// full (in packets, or in bytes: see Options.MaxQueuedBytes), until ctx is
// done or the connection closes.
func (c *Conn) Write(ctx context.Context, framed []byte) error {
	return c.write(ctx, outPacket{b: framed})
}

// outPacket is a packet in the write queue; free, if set, is given b once
// it is written.
type outPacket struct {
	b    []byte
	free func([]byte)
}

// written is called once p is in the writer's buffer or on the wire: its
// buffer goes back to its owner.
func (p outPacket) written() {
	if p.free != nil {
		p.free(p.b)
	}
}

func (c *Conn) write(ctx context.Context, p outPacket) error {
	framed := p.b
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	n := int64(len(framed))
	for {
		q := c.queued.Load()
		if q == 0 || q+n <= int64(c.opts.MaxQueuedBytes) {
			if c.queued.CompareAndSwap(q, q+n) {
				break
			}
			continue
		}
		select {
		case <-c.room:
		case <-c.stopping:
			return ErrClosed
		case <-c.closing:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case c.out <- p:
		return nil
	case <-c.stopping:
	case <-c.closing:
	case <-ctx.Done():
		c.queued.Add(-n)
		return ctx.Err()
	}
	c.queued.Add(-n)
	return ErrClosed
}

// WriteWithin is Write with a timeout of d. A packet that fits in the
// queue costs no timer: answers on a busy connection are queued without
// one.
func (c *Conn) WriteWithin(framed []byte, d time.Duration) error {
	return c.WriteWithinFree(framed, d, nil)
}

// WriteWithinFree is WriteWithin for a packet whose buffer the caller gives
// up: once the packet is written, free (unless nil) is given the buffer,
// for reuse. A packet that is never written (the connection closed first,
// or d passed) is left to the garbage collector.
func (c *Conn) WriteWithinFree(framed []byte, d time.Duration, free func([]byte)) error {
	p := outPacket{b: framed, free: free}
	if c.tryWrite(p) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.write(ctx, p)
}

// tryWrite queues framed if that needs no wait, and reports whether it
// did.
func (c *Conn) tryWrite(p outPacket) bool {
	framed := p.b
	select {
	case <-c.closing:
		return false
	default:
	}
	n := int64(len(framed))
	q := c.queued.Load()
	if q != 0 && q+n > int64(c.opts.MaxQueuedBytes) || !c.queued.CompareAndSwap(q, q+n) {
		return false
	}
	select {
	case c.out <- p:
		return true
	default:
		c.queued.Add(-n)
		return false
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
func (c *Conn) Call(ctx context.Context, method, uri string, params []byte) (*Message, error) {
	return c.CallAuth(ctx, method, uri, params, nil)
}

// CallAuth is Call with an "auth" object in the request (see
// AppendRequestAuth); nil auth sends none.
func (c *Conn) CallAuth(ctx context.Context, method, uri string, params, auth []byte) (*Message, error) {
	call, err := c.Go(ctx, method, uri, params, auth)
	if err != nil {
		return nil, err
	}
	select {
	case m, ok := <-call.Done():
		if !ok {
			return nil, c.closedErr()
		}
		return m, nil
	case <-ctx.Done():
		call.Cancel()
		return nil, callErr(ctx.Err())
	}
}

// A Call is a request sent on a Conn whose answer has not been taken yet.
// It is a small value: copy it freely.
type Call struct {
	c   *Conn
	key uint64
	ch  chan *Message
}

// Go sends a request (with an "auth" object unless auth is nil) and returns
// without waiting for the answer, which Call.Done delivers. ctx bounds only
// the wait for room in the write queue.
func (c *Conn) Go(ctx context.Context, method, uri string, params, auth []byte) (Call, error) {
	key := c.nextKey.Add(1)
	call := Call{c: c, key: key, ch: make(chan *Message, 1)}
	c.mu.Lock()
	select {
	case <-c.closing:
		c.mu.Unlock()
		return Call{}, c.closedErr()
	default:
	}
	c.pending[key] = call.ch
	c.mu.Unlock()

	if err := c.write(ctx, outPacket{b: AppendRequestAuth(requestBufs.Get(), uri, method, key, params, auth), free: freeRequest}); err != nil {
		call.Cancel()
		if errors.Is(err, ErrClosed) {
			err = c.closedErr()
		}
		return Call{}, callErr(err)
	}
	return call, nil
}

// requestBufs holds the buffers requests are encoded into, given back once
// written.
var (
	requestBufs = Buffers{Max: 16 << 10}
	freeRequest = requestBufs.Put // made once: a method value made per call would be allocated per call
)

// Buffers is a pool of packet buffers for WriteWithinFree: Get one, append
// a packet to it, and pass Put as the free function. Buffers larger than
// Max bytes are not kept, so that a rare large packet does not stay in
// memory. The zero value keeps none; a Buffers must not be copied.
type Buffers struct {
	Max  int
	pool sync.Pool
}

// Get returns an empty buffer, reused when one was put back.
func (p *Buffers) Get() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

// Put keeps b for reuse, unless it is larger than Max; b must not be used
// after.
func (p *Buffers) Put(b []byte) {
	if cap(b) <= p.Max {
		p.pool.Put(&b)
	}
}

// Done delivers the answer. It is closed without one when the connection
// closes first (Conn.Err then says why: ErrSilent for a silent peer).
func (call Call) Done() <-chan *Message { return call.ch }

// Conn returns the connection the call was sent on.
func (call Call) Conn() *Conn { return call.c }

// Cancel forgets the call: an answer that still comes is dropped.
func (call Call) Cancel() { call.c.forget(call.key) }

// closedErr is the error of a call on, or pending on, a closed connection:
// ErrSilent when the peer fell silent, else ErrClosed.
func (c *Conn) closedErr() error {
	if errors.Is(c.Err(), ErrSilent) {
		return ErrSilent
	}
	return ErrClosed
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

// activity records the time of every read that returned bytes.
type activity struct {
	r    net.Conn
	last *atomic.Int64
}

func (a activity) Read(b []byte) (int, error) {
	n, err := a.r.Read(b)
	if n > 0 {
		a.last.Store(now())
	}
	return n, err
}

func (c *Conn) readLoop() {
	dec := NewDecoder(activity{c.nc, &c.lastRead}, c.opts.MaxSize)
	for {
		p, err := dec.Next()
		if errors.Is(err, ErrTooLarge) {
			c.reject(dec.Head(), http.StatusRequestEntityTooLarge, fmt.Sprintf("request over the packet limit of %d bytes", c.opts.MaxSize),
				fmt.Sprintf("the answer was over the packet limit of %d bytes: ask for fewer results", c.opts.MaxSize))
			continue
		}
		if err != nil {
			c.shutdown(fmt.Errorf("packet: read: %w", err))
			return
		}
		c.heardOnce.Do(func() { close(c.heard) })
		if string(p) == heartbeatPacket {
			c.StartHeartbeat() // the peer heartbeats: answer in kind
			continue
		}
		m, err := Decode(p)
		if err != nil {
			c.reject(p, http.StatusBadRequest, "malformed packet: not a JSON object", "the answer was not a readable JSON object")
			continue
		}
		// A packet with an errorcode whose key is a call in flight is that
		// call's answer, whatever else it carries (some of the book's
		// answers echo the request's uri); requests carry no errorcode.
		if m.IsRequest() && (m.ErrorCode == nil || !c.answer(m)) {
			if c.opts.OnMessage == nil {
				c.log.Debug("request dropped: this connection serves none", "remote", c.nc.RemoteAddr().String(), "uri", m.URI)
				continue
			}
			c.inMessage.Store(true)
			c.opts.OnMessage(c, m)
			c.inMessage.Store(false)
			c.lastRead.Store(now()) // the peer was not silent while we pushed back
			continue
		}
		if !m.IsRequest() && !c.answer(m) {
			if _, ok := m.KeyUint(); !ok {
				c.log.Warn("answer without a usable key dropped", "remote", c.nc.RemoteAddr().String())
			} else {
				// Late answers (to a call that timed out, or a hedge's
				// loser) are routine.
				c.log.Debug("answer to no call in flight dropped", "remote", c.nc.RemoteAddr().String(), "key", string(m.Key))
			}
		}
	}
}

// answer hands m to the call in flight whose key it carries and reports
// whether there was one.
func (c *Conn) answer(m *Message) bool {
	key, ok := m.KeyUint()
	if !ok {
		return false
	}
	c.mu.Lock()
	ch := c.pending[key]
	delete(c.pending, key)
	c.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- m
	return true
}

// reject deals with a packet that cannot be handled (over the size limit,
// or not JSON) from its first bytes: a request whose key can be read gets
// an error answer (status, toRequest) at once, instead of none; a call
// whose answer it is fails at once with a 502 answer (toCall), instead of
// waiting for its deadline. Either way it is logged.
func (c *Conn) reject(head []byte, status int, toRequest, toCall string) {
	key, request, ok := KeyOf(head)
	c.log.Warn("packet dropped", "remote", c.nc.RemoteAddr().String(), "why", toRequest, "request", request, "key", string(key))
	if !ok {
		return
	}
	if request {
		if c.opts.OnMessage != nil {
			c.tryQueue(AppendResponse(nil, key, status, toRequest, nil)) // dropped when full: the peer is not reading anyway
		}
		return
	}
	k, ok := (&Message{Key: key}).KeyUint()
	if !ok {
		return
	}
	c.mu.Lock()
	ch := c.pending[k]
	delete(c.pending, k)
	c.mu.Unlock()
	if ch != nil {
		raw := AppendResponse(nil, key, http.StatusBadGateway, toCall, nil)
		if m, err := Decode(raw[:len(raw)-len(sep)]); err == nil {
			ch <- m
		}
	}
}

func (c *Conn) writeLoop() {
	w := bufio.NewWriterSize(c.nc, 32<<10)
	for {
		var p outPacket
		select {
		case p = <-c.out:
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
		_, err := w.Write(p.b)
		written := len(p.b)
		p.written()
		// Batch whatever else is already queued into the same flush; then
		// yield once, so that goroutines about to queue (answers being
		// encoded, requests being signed) join it rather than costing a
		// write each. With nothing else to run, Gosched returns at once.
		for yielded := false; err == nil; {
			select {
			case p = <-c.out:
				_, err = w.Write(p.b)
				written += len(p.b)
				p.written()
				continue
			default:
			}
			if yielded {
				break
			}
			yielded = true
			runtime.Gosched()
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			c.shutdown(fmt.Errorf("packet: write: %w", err))
			return
		}
		c.queued.Add(-int64(written))
		select {
		case c.room <- struct{}{}:
		default:
		}
		c.lastWrite.Store(now())
	}
}

// flushQueue writes everything still queued, then flushes.
func (c *Conn) flushQueue(w *bufio.Writer) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	for {
		select {
		case p := <-c.out:
			if _, err := w.Write(p.b); err != nil {
				return err
			}
			p.written()
		default:
			return w.Flush()
		}
	}
}
