package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/packet"
)

// Config configures a Server.
type Config struct {
	// Name is the service name registered with the distributor ("goods").
	Name string
	// Routes maps "METHOD/path" (e.g. "GET/goods") to handlers.
	Routes map[string]Handler
	// Distributors are the registries' host:port: the server registers with
	// every one (see distributor.Client); none runs without a registry.
	Distributors []string
	// OnNodes, when set, receives every list the distributors push (a
	// service that calls others feeds it to a Client).
	OnNodes func([]distributor.Node)
	// HandlerTimeout bounds each request (default 30s).
	HandlerTimeout time.Duration
	// DrainTimeout bounds the wait for in-flight requests at shutdown
	// (default 10s).
	DrainTimeout time.Duration
	// Advertise is the address others should dial to reach this server:
	// "HOST" or "HOST:PORT" (see distributor.Advertised); empty registers
	// the host the distributor sees and the listening port.
	Advertise string
	// MaxPacket limits packet size (packet.DefaultMaxSize when 0).
	MaxPacket int
	// FleetKey, when set, makes the server accept only auth objects signed
	// with it and treat a request without one as anonymous (see FleetKey).
	FleetKey FleetKey
	// Heartbeat, when positive, is the heartbeat timeout: the registration
	// says the server heartbeats, so microshop callers and distributors
	// heartbeat with it, and a caller silent for longer is disconnected
	// (see packet.Options.Heartbeat). Zero turns heartbeats off.
	Heartbeat time.Duration
	// AnswerDelay delays every answer by this long: a test hook, to see how
	// callers treat a slow instance.
	AnswerDelay time.Duration
	// Conns caps the connections the server keeps, in all and per remote
	// host (the zero value: packet.DefaultMaxConns and
	// packet.DefaultMaxConnsPerHost). One over a limit is closed at once.
	Conns packet.Limits
	// MaxInFlight bounds the requests handled at once from one connection
	// (DefaultMaxInFlight when 0); MaxInFlightAll, from all of them
	// (DefaultMaxInFlightAll when 0). A connection at its bound is not read
	// until a request is done: the peer's writes wait (back-pressure).
	MaxInFlight, MaxInFlightAll int
	// FirstPacket bounds how long a new connection may stay open without
	// sending a packet (DefaultFirstPacket when 0). Once it has, it stays
	// open however quiet (a book gate may go hours without a request); a
	// silent peer that heartbeats is closed by the heartbeat timeout.
	FirstPacket time.Duration
	Logger      *slog.Logger
}

// Defaults of the server's bounds (see Config).
const (
	DefaultMaxInFlight    = 128
	DefaultMaxInFlightAll = 1024
	DefaultFirstPacket    = 30 * time.Second
)

// Server hosts a service: it serves its routes on every connection, many
// requests at once, and keeps it registered with the distributor.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *serverMetrics

	active      atomic.Int64
	lastRequest atomic.Int64  // unix nanos
	inFlight    chan struct{} // a token per request handled, MaxInFlightAll of them
	refusedAt   atomic.Int64  // unix nanos of the last warning about a refused connection
	admit       *packet.ConnCounter

	mu    sync.Mutex
	conns map[*packet.Conn]struct{}
	connW sync.WaitGroup
	dc    *distributor.Client
}

// NewServer returns a server for cfg.
func NewServer(cfg Config) *Server {
	if cfg.HandlerTimeout <= 0 {
		cfg.HandlerTimeout = 30 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxInFlightAll <= 0 {
		cfg.MaxInFlightAll = DefaultMaxInFlightAll
	}
	if cfg.FirstPacket <= 0 {
		cfg.FirstPacket = DefaultFirstPacket
	}
	return &Server{
		inFlight: make(chan struct{}, cfg.MaxInFlightAll),
		admit:    packet.NewConnCounter(cfg.Conns),
		cfg:      cfg,
		log:      cfg.Logger.With("service", cfg.Name),
		metrics:  newServerMetrics(cfg.Name, cfg.Routes),
		conns:    make(map[*packet.Conn]struct{}),
	}
}

// URLs returns the routes in the distributor's "METHOD/path" form, sorted.
func (s *Server) URLs() []string {
	urls := make([]string, 0, len(s.cfg.Routes))
	for u := range s.cfg.Routes {
		urls = append(urls, u)
	}
	slices.Sort(urls)
	return urls
}

// Distributor returns the registry client once Serve has started, or nil.
func (s *Server) Distributor() *distributor.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dc
}

// Serve registers with the distributor and serves connections from ln
// until ctx is done. Then it leaves the registry, keeps answering until
// in-flight requests are done and the peers have had a moment to notice it
// left (at most DrainTimeout), closes its connections and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	regCtx, leave := context.WithCancel(context.WithoutCancel(ctx))
	var regDone chan struct{}
	if len(s.cfg.Distributors) > 0 {
		host, port, err := distributor.Advertised(s.cfg.Advertise, ln.Addr().(*net.TCPAddr).Port)
		if err != nil {
			leave()
			return err
		}
		dc := distributor.NewClient(distributor.ClientConfig{
			Addrs:        s.cfg.Distributors,
			Heartbeat:    s.cfg.Heartbeat,
			Registration: &distributor.Registration{Name: s.cfg.Name, Host: host, Port: port, URLs: s.URLs(), Identities: true},
			FleetKey:     s.cfg.FleetKey,
			OnChange:     s.cfg.OnNodes,
			MaxPacket:    s.cfg.MaxPacket,
			Logger:       s.log,
		})
		s.mu.Lock()
		s.dc = dc
		s.mu.Unlock()
		regDone = make(chan struct{})
		go func() { defer close(regDone); dc.Run(regCtx) }()
	}
	s.log.Info("service listening", "addr", ln.Addr().String(), "routes", len(s.cfg.Routes))

	acceptDone := make(chan error, 1)
	go func() { acceptDone <- s.accept(ctx, ln) }()
	select {
	case <-ctx.Done():
	case err := <-acceptDone:
		if err != nil {
			leave()
			s.closeConns()
			return err
		}
	}
	ln.Close()
	<-acceptDone

	// Leave the registry first so that peers stop sending, then drain.
	leave()
	if regDone != nil {
		<-regDone
	}
	s.drain()
	s.closeConns()
	return nil
}

func (s *Server) accept(ctx context.Context, ln net.Listener) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		release, ok := s.admit.Admit(nc.RemoteAddr())
		if !ok {
			nc.Close()
			s.refused(nc.RemoteAddr())
			continue
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetKeepAlive(true)
			tc.SetKeepAlivePeriod(15 * time.Second)
		}
		cs := &connState{slots: make(chan struct{}, s.cfg.MaxInFlight)}
		c := packet.NewConn(nc, packet.Options{MaxSize: s.cfg.MaxPacket, Logger: s.log, Heartbeat: s.cfg.Heartbeat,
			OnMessage: func(c *packet.Conn, m *packet.Message) { s.onMessage(c, m, cs) }})
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.connW.Add(1)
		first := time.AfterFunc(s.cfg.FirstPacket, func() {
			select {
			case <-c.Heard():
			default:
				s.log.Debug("closing a connection that sent nothing", "remote", c.RemoteAddr().String(), "after", s.cfg.FirstPacket)
				c.Abort()
			}
		})
		go func() {
			defer s.connW.Done()
			defer release()
			<-c.Done()
			first.Stop()
			if errors.Is(c.Err(), packet.ErrSilent) {
				s.log.Warn("caller silent past the heartbeat timeout; connection closed", "remote", c.RemoteAddr().String(), "timeout", s.cfg.Heartbeat)
			}
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// drain waits until no request is in flight and none has arrived for a
// short quiet period, or DrainTimeout passes.
func (s *Server) drain() {
	const quiet = 150 * time.Millisecond
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	for time.Now().Before(deadline) {
		last := time.Unix(0, s.lastRequest.Load())
		if s.active.Load() == 0 && time.Since(last) >= quiet {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.log.Warn("drain timeout: closing with requests in flight", "inflight", s.active.Load())
}

func (s *Server) closeConns() {
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.connW.Wait()
}

// refused logs a connection closed for the limits, at most once a second.
func (s *Server) refused(addr net.Addr) {
	connsRefused.WithLabelValues(s.cfg.Name).Inc()
	now := time.Now().UnixNano()
	if last := s.refusedAt.Load(); now-last > int64(time.Second) && s.refusedAt.CompareAndSwap(last, now) {
		s.log.Warn("connection refused: too many connections (in all, or from its host)", "remote", addr.String(),
			"max", s.cfg.Conns.Max, "per_host", s.cfg.Conns.PerHost)
	}
}

// onMessage dispatches one request on its own goroutine, so a slow request
// never blocks the others on the connection. It takes one of the
// connection's slots and one of the server's first, waiting (and so not
// reading the connection) while there is none: a connection cannot make
// the server take on more than MaxInFlight of its requests, nor all of them
// more than MaxInFlightAll.
func (s *Server) onMessage(c *packet.Conn, m *packet.Message, cs *connState) {
	if isDistributorList(m) {
		return // a list pushed on a service connection; not a request
	}
	if m.Method == nonceMethod && m.URI == nonceURI {
		s.answerNonce(c, m, cs)
		return
	}
	slots := cs.slots
	select {
	case slots <- struct{}{}:
	case <-c.Closed():
		return
	}
	select {
	case s.inFlight <- struct{}{}:
	case <-c.Closed():
		<-slots
		return
	}
	s.lastRequest.Store(time.Now().UnixNano())
	s.active.Add(1)
	s.metrics.inFlight.Inc()
	go func() {
		defer func() { <-s.inFlight; <-slots }()
		defer s.active.Add(-1)
		defer s.metrics.inFlight.Dec()
		s.serve(c, m, cs)
	}()
}

// connState is what a server keeps of one connection.
type connState struct {
	slots chan struct{} // a token per request of it in flight

	mu     sync.Mutex
	nonce  string       // guarded by mu; given to the caller that asks
	window replayWindow // the sequence numbers of its signed requests
}

// connNonce returns the connection's nonce, made on first use.
func (cs *connState) connNonce() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.nonce == "" {
		cs.nonce = newNonce()
	}
	return cs.nonce
}

// askedNonce returns the nonce if a caller has asked for it, else "".
func (cs *connState) askedNonce() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.nonce
}

// The request a caller sends a microshop service, once per connection, for
// the nonce its signatures must cover there (see FleetKey). The runtime
// answers it; a book service never receives it (callers ask only services
// that heartbeat).
const (
	nonceMethod = "NONCE"
	nonceURI    = "/connection"
)

// answerNonce answers a request for the connection's nonce.
func (s *Server) answerNonce(c *packet.Conn, m *packet.Message, cs *connState) {
	body, _ := json.Marshal(map[string]string{"nonce": cs.connNonce()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Write(ctx, packet.AppendResponse(nil, m.Key, 0, "success", body))
}

// checkSignature verifies a request's auth object. A server that
// heartbeats (as its registration says) requires the signature to cover its
// connection's nonce and a sequence number not seen on it before; one that
// does not, the route and parameters only.
func (s *Server) checkSignature(a *Auth, m *packet.Message, cs *connState) error {
	b := binding{params: packet.ReceivedParams(m.Params)}
	bound := s.cfg.Heartbeat > 0
	if bound {
		b.nonce = cs.askedNonce()
		if b.nonce == "" {
			return Unauthorized("the request's auth object is not bound to this connection: ask its nonce first (a microshop gate does)")
		}
	}
	if !s.cfg.FleetKey.verify(a, m.Method, m.URI, b, time.Now()) {
		return Unauthorized("the request's auth object is not signed with this fleet's key (--fleet-key) for this request on this connection")
	}
	if bound && !cs.window.accept(a.Seq) {
		return Unauthorized("the request's auth object was used before: a replay")
	}
	return nil
}

func (s *Server) maxPacket() int {
	if s.cfg.MaxPacket > 0 {
		return s.cfg.MaxPacket
	}
	return packet.DefaultMaxSize
}

func isDistributorList(m *packet.Message) bool {
	return strings.TrimPrefix(m.URI, "/") == "distributes" && len(m.Params) > 0 && m.Params[0] == '['
}

func (s *Server) serve(c *packet.Conn, m *packet.Message, cs *connState) {
	lazy := newLazyDeadline(s.cfg.HandlerTimeout)
	defer lazy.end()
	var ctx context.Context = lazy
	start := time.Now()
	res, err := s.call(ctx, m, cs)
	code, msg := ErrorCode(err)
	var body []byte
	if err != nil {
		res = nil
		if se := (*Error)(nil); errors.As(err, &se) {
			res = se.Fields
		}
	}
	if len(res) > 0 {
		if body, err = res.Encode(); err != nil {
			err = fmt.Errorf("encode result: %w", err)
			code, msg = ErrorCode(err)
			body = nil
		}
	}
	if code >= 500 {
		s.log.Error("request failed", "method", m.Method, "uri", m.URI, "code", code, "err", err, "took", time.Since(start))
	} else if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("request", "method", m.Method, "uri", m.URI, "code", code, "took", time.Since(start))
	}
	if s.cfg.AnswerDelay > 0 {
		time.Sleep(s.cfg.AnswerDelay)
	}
	answer := packet.AppendResponse(answerBufs.Get(), m.Key, code, msg, body)
	if limit := s.maxPacket(); len(answer)-len(packet.Separator) > limit {
		// The caller would drop it and wait for its deadline: tell it now.
		s.log.Warn("answer over the packet limit; sent an error instead", "method", m.Method, "uri", m.URI, "bytes", len(answer), "limit", limit)
		code = http.StatusInternalServerError
		answer = packet.AppendResponse(nil, m.Key, code, fmt.Sprintf("the answer would be %d bytes, over the packet limit of %d: ask for fewer results", len(answer), limit), nil)
	}
	if err := c.WriteWithinFree(answer, 5*time.Second, freeAnswer); err != nil {
		s.log.Debug("response not sent", "method", m.Method, "uri", m.URI, "err", err)
	}
	s.metrics.done(m.Method+m.URI, code, time.Since(start))
}

// answerBufs holds the buffers answers are encoded into, given back by the
// connection once written: a list answer of kilobytes costs no new buffer
// per request. A rare answer over 64 KB is not kept.
var (
	answerBufs = packet.Buffers{Max: 64 << 10}
	freeAnswer = answerBufs.Put // made once, not per answer
)

// call runs the handler, turning a panic into an internal error.
func (s *Server) call(ctx context.Context, m *packet.Message, cs *connState) (res Result, err error) {
	h, ok := s.cfg.Routes[m.Method+m.URI]
	if !ok {
		return nil, NotFound("unknown route %s %s", m.Method, m.URI)
	}
	params, err := DecodeParams(m.Params)
	if err != nil {
		return nil, err
	}
	auth, err := decodeAuth(m.Auth)
	if err != nil {
		return nil, err
	}
	if len(s.cfg.FleetKey) > 0 {
		if auth == nil {
			auth = &Auth{} // anonymous: no open book behaviour on a keyed fleet
		} else if err := s.checkSignature(auth, m, cs); err != nil {
			return nil, err
		}
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return h(ctx, &Request{Method: m.Method, URI: m.URI, Params: params, Auth: auth})
}
