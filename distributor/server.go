package distributor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/microshop/microshop/packet"
)

// DefaultSettle is how long a freshly started registry waits before it
// pushes lists: long enough for every process that was registered with a
// previous instance to reconnect (clients retry every second), so that no
// one is told a partial list and drops routes that are still alive.
const DefaultSettle = 1500 * time.Millisecond

// Server is the registry. It is safe for concurrent use.
type Server struct {
	// Settle is the quiet period after Serve starts during which no list is
	// pushed (DefaultSettle unless changed before Serve; 0 pushes at once).
	Settle time.Duration

	// FleetKey, when set before Serve, makes the server list only
	// registrations signed with it (ClientConfig.FleetKey): without the key
	// nobody can put a process on the list, say a fake members service
	// that would receive logins. Connections may still watch the list.
	FleetKey []byte

	// Heartbeat, when set before Serve, is the heartbeat timeout of the
	// connections whose registration says they heartbeat: one silent for
	// longer is closed, and its process leaves the list.
	Heartbeat time.Duration

	// Conns, when set before Serve, caps the connections in all and per
	// remote host (packet's defaults for zero fields): one over a cap is
	// closed at once.
	Conns packet.Limits

	log      *slog.Logger
	maxSize  int
	settled  bool // guarded by mu; lists are pushed only once settled
	stopping bool // guarded by mu; a stopping registry pushes no more lists

	// Lock order: mu, then nothing. mu is never held while writing to a
	// connection: one pusher goroutine sends the lists (see pushLoop).
	mu      sync.Mutex // guards conns, seq, version
	conns   map[*packet.Conn]*member
	seq     uint64
	version uint64         // of the list: one more at every change
	wake    chan struct{}  // tells the pusher to look (capacity 1)
	wg      sync.WaitGroup // connection goroutines and the pusher
}

type member struct {
	node  *Node  // nil until the connection registers
	seq   uint64 // registration order, to keep the list stable
	nonce string // the challenge given to the connection, if it asked
	sent  uint64 // the version of the last list queued on it
}

// The request with which a client asks for the nonce its signed
// registration must carry (Registration.Nonce); the book's distributor
// ignores it, as it ignores every packet but a registration.
const (
	challengeMethod = "CHALLENGE"
	challengeURI    = "/distributes"
)

// NewServer returns a registry server. maxPacket limits packet size
// (packet.DefaultMaxSize when 0).
func NewServer(log *slog.Logger, maxPacket int) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{Settle: DefaultSettle, log: log, maxSize: maxPacket, conns: make(map[*packet.Conn]*member), wake: make(chan struct{}, 1), version: 1}
}

// EndSettle ends the settle period at once and pushes the list, for a
// caller that knows every process that matters has registered (microshop
// all, once its own services have). Calls after the first do nothing.
func (s *Server) EndSettle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.settled || s.stopping {
		return
	}
	s.settled = true
	s.broadcastLocked()
}

// pushLoop is the one pusher: woken after a change (or a new connection),
// it queues the current list, encoded once, on every connection that has
// not had it, outside mu. A connection whose queue stays full for a
// second is too slow to follow the registry and is dropped; meanwhile
// registrations and heartbeats go on (a reader never waits for a push).
// Being one goroutine, it gives every connection the lists in order, and
// skips those made obsolete while it was busy.
func (s *Server) pushLoop(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-s.wake:
		}
		s.mu.Lock()
		if !s.settled {
			s.mu.Unlock()
			continue
		}
		version := s.version
		var todo []*packet.Conn
		for c, m := range s.conns {
			if m.sent < version {
				todo = append(todo, c)
				m.sent = version
			}
		}
		var b []byte
		var err error
		if len(todo) > 0 {
			broadcasts.Inc()
			b, err = packet.Marshal(listPacket{URI: "/distributes", Method: "GET", Key: 0, Params: s.listLocked()})
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Error("distributor: encode list", "err", err)
			continue
		}
		for _, c := range todo {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.Write(ctx, b)
			cancel()
			if err != nil && !errors.Is(err, packet.ErrClosed) {
				s.log.Warn("distributor: dropping a connection that does not read", "remote", c.RemoteAddr().String())
				c.Abort()
			}
		}
	}
}

// Serve accepts connections on ln until ctx is done, then closes every
// connection and returns once they have all ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	settle := time.AfterFunc(s.Settle, s.EndSettle)
	defer settle.Stop()
	pusherDone := make(chan struct{})
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.pushLoop(pusherDone) }()
	admit := packet.NewConnCounter(s.Conns)
	var refusedAt time.Time
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || !errors.Is(err, net.ErrClosed) {
				delay = backoff(delay)
				s.log.Warn("distributor: accept failed; retrying", "err", err, "delay", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("distributor: accept: %w", err)
		}
		delay = 0
		release, ok := admit.Admit(nc.RemoteAddr())
		if !ok {
			nc.Close()
			if time.Since(refusedAt) > time.Second {
				refusedAt = time.Now()
				s.log.Warn("distributor: connection refused: too many connections (in all, or from its host)", "remote", nc.RemoteAddr().String())
			}
			continue
		}
		s.add(nc, release)
	}
	settle.Stop()
	s.mu.Lock()
	s.settled = false // a registry going away pushes no more (partial) lists
	s.stopping = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	close(pusherDone)
	s.wg.Wait()
	return nil
}

func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	if d *= 2; d > time.Second {
		d = time.Second
	}
	return d
}

func (s *Server) add(nc net.Conn, release func()) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(15 * time.Second)
	}
	// Hold the lock while the connection starts, so that a registration
	// sent at once (onMessage takes the lock) finds the connection known.
	s.mu.Lock()
	c := packet.NewConn(nc, packet.Options{MaxSize: s.maxSize, Logger: s.log, OnMessage: s.onMessage, Heartbeat: s.Heartbeat})
	s.conns[c] = &member{}
	s.mu.Unlock()
	s.poke() // a new connection gets the list at once (once the registry settled)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer release()
		<-c.Done()
		s.mu.Lock()
		m := s.conns[c]
		delete(s.conns, c)
		if m != nil && m.node != nil {
			if errors.Is(c.Err(), packet.ErrSilent) {
				silentDropped.Inc()
				s.log.Warn("distributor: process silent past the heartbeat timeout; dropped from the list", "name", m.node.Name, "addr", m.node.Addr(), "timeout", s.Heartbeat)
			} else {
				s.log.Info("distributor: process left", "name", m.node.Name, "addr", m.node.Addr())
			}
			registered.Dec()
			s.broadcastLocked()
		}
		s.mu.Unlock()
	}()
}

func (s *Server) onMessage(c *packet.Conn, m *packet.Message) {
	if m.Method == challengeMethod && m.URI == challengeURI {
		s.challenge(c, m)
		return
	}
	if !isListURI(m.URI) || m.Method != "POST" {
		s.log.Debug("distributor: ignored packet", "uri", m.URI, "method", m.Method)
		return
	}
	var reg Registration
	if err := json.Unmarshal(m.Params, &reg); err != nil {
		s.log.Warn("distributor: malformed registration", "remote", c.RemoteAddr().String(), "err", err)
		refusedBy["malformed"].Inc()
		return
	}
	if err := validate(reg); err != nil {
		s.log.Warn("distributor: registration refused", "remote", c.RemoteAddr().String(), "err", err)
		refusedBy["invalid"].Inc()
		return
	}
	if len(s.FleetKey) > 0 && !verifySig(s.FleetKey, &reg, time.Now()) {
		s.log.Warn("distributor: registration refused: not signed with this fleet's key (--fleet-key)", "remote", c.RemoteAddr().String(), "name", reg.Name)
		refusedBy["unsigned"].Inc()
		return
	}
	if len(s.FleetKey) > 0 && (reg.Nonce == "" || reg.Nonce != s.nonceOf(c)) {
		s.log.Warn("distributor: registration refused: not made for this connection (a replay, or a client that did not ask its challenge)", "remote", c.RemoteAddr().String(), "name", reg.Name)
		refusedBy["replay"].Inc()
		return
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	if reg.Host != "" {
		host = reg.Host
	}
	n := &Node{Name: reg.Name, Host: host, Port: reg.Port, URLs: reg.URLs, Heartbeat: reg.Heartbeat, Identities: reg.Identities}
	if reg.Heartbeat {
		c.StartHeartbeat() // a no-op unless this server has Heartbeat set
	}
	if n.URLs == nil {
		n.URLs = []string{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mem, ok := s.conns[c]
	if !ok {
		return // already gone
	}
	if mem.node == nil {
		s.seq++
		mem.seq = s.seq
		registered.Inc()
	}
	mem.node = n
	s.log.Info("distributor: process registered", "name", n.Name, "addr", n.Addr(), "urls", len(n.URLs))
	s.broadcastLocked()
}

// challenge answers a client's request for its connection's nonce.
func (s *Server) challenge(c *packet.Conn, m *packet.Message) {
	b := make([]byte, 16)
	rand.Read(b)
	nonce := hex.EncodeToString(b)
	s.mu.Lock()
	mem, ok := s.conns[c]
	if ok && mem.nonce == "" {
		mem.nonce = nonce
	} else if ok {
		nonce = mem.nonce
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	body, _ := json.Marshal(map[string]string{"nonce": nonce})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Write(ctx, packet.AppendResponse(nil, m.Key, 0, "success", body))
}

// nonceOf returns the nonce given to c, or "".
func (s *Server) nonceOf(c *packet.Conn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mem, ok := s.conns[c]; ok {
		return mem.nonce
	}
	return ""
}

// ValidHost reports whether h is an IP address or a host name (letters,
// digits, '-' and '.', at most 253 bytes): what a registration may
// advertise.
func ValidHost(h string) bool {
	if h == "" || len(h) > maxHostLen {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func validate(r Registration) error {
	switch {
	case r.Name == "" || len(r.Name) > maxNameLen:
		return fmt.Errorf("name must be 1–%d bytes", maxNameLen)
	case r.Port < 1 || r.Port > 65535:
		return fmt.Errorf("port %d out of range", r.Port)
	case len(r.URLs) > maxURLs:
		return fmt.Errorf("too many urls (%d > %d)", len(r.URLs), maxURLs)
	case r.Host != "" && !ValidHost(r.Host):
		return fmt.Errorf("host %q is neither an IP address nor a host name", r.Host)
	}
	for _, u := range r.URLs {
		if len(u) > maxURLLen {
			return fmt.Errorf("url longer than %d bytes", maxURLLen)
		}
	}
	return nil
}

// Nodes returns the current list, in registration order.
func (s *Server) Nodes() []Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listLocked()
}

func (s *Server) listLocked() []Node {
	type item struct {
		seq  uint64
		node Node
	}
	var items []item
	for _, m := range s.conns {
		if m.node != nil {
			items = append(items, item{m.seq, *m.node})
		}
	}
	// Insertion sort by seq: lists are small.
	for i := 1; i < len(items); i++ {
		for j := i; j > 0 && items[j].seq < items[j-1].seq; j-- {
			items[j], items[j-1] = items[j-1], items[j]
		}
	}
	nodes := make([]Node, len(items))
	for i, it := range items {
		nodes[i] = it.node
	}
	return nodes
}

// broadcastLocked records that the list changed: the pusher sends the new
// one to every connection (once the registry settled).
func (s *Server) broadcastLocked() {
	s.version++
	s.poke()
}

// poke wakes the pusher without waiting.
func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default: // it is awake already, and will look again
	}
}
