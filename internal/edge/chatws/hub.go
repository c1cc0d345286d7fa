// Package chatws serves the chat sockets of the fleet's edge (GET /chat):
// an http.Handler the gate serves itself (gate.Config.Handlers). Each gate
// holds one Redis subscription to every room of the deployment and fans
// what is published out to its local sockets; what a client sends is
// posted to the chat service (POST /chat), and a joining client first gets
// the room's history (GET /chat/history). The rooms' channels and names
// are the chat service's contract, package internal/chat/topic.
package chatws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/chat/topic"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/service"
)

// Config configures a Hub. Zero fields take their defaults.
type Config struct {
	// Cache is the deployment's Redis, whose pub/sub carries the messages
	// to every gate (required).
	Cache *cache.Cache
	// Client calls the chat service (required).
	Client *service.Client
	// Limiter keeps each member's message allowance (nil: one in process).
	Limiter *limit.Limiter
	// SessionEnded, when set, reports whether a session (by its hash, see
	// service.Auth) has ended; a transient failure is false. Every
	// SessionCheck the sockets of ended sessions are closed.
	SessionEnded func(ctx context.Context, hash string) bool
	// TrustedProxies are the networks of proxies whose X-Forwarded-For is
	// believed (for the cap per client address, see gate.ClientAddr).
	TrustedProxies []netip.Prefix
	// RequestTimeout bounds each call to the chat service (default 10s).
	RequestTimeout time.Duration
	Logger         *slog.Logger

	// Queue bounds each client's send queue, in messages (default 256). A
	// client that falls that far behind is disconnected (close code 1008),
	// so that a slow reader never slows its room or the gate.
	Queue int
	// Rate is how many messages a second each member may send on average
	// (default 10), Burst how many at once (default 20), across all their
	// sockets and every gate (the limit lives in Redis, or in each gate
	// while Redis is down). A socket of the book's open mode (no member)
	// has a limit of its own.
	Rate  float64
	Burst int
	// MaxPerMember and MaxPerAddress cap the sockets one member, and one
	// client address, may hold open on a gate (defaults 20 and 100).
	MaxPerMember, MaxPerAddress int
	// SessionCheck is how often the gate checks that the session of every
	// member's socket is still live (default 2s): a socket whose session
	// ended (logout, expiry, account deleted) is closed with code 4001.
	SessionCheck time.Duration
	// PingInterval is how often the gate pings each client (default 30s),
	// keeping idle connections open through proxies; a client that does
	// not answer within the interval is disconnected.
	PingInterval time.Duration
	// WriteTimeout bounds each write to a client (default 10s).
	WriteTimeout time.Duration
	// History is how many recent messages a client receives when it joins
	// (default 50, at most 500).
	History int
	// OriginPatterns lists the other origins (host patterns as in
	// path.Match, e.g. "shop.example.com") whose web pages may open chat
	// sockets. The gate's own origin, and clients that send no Origin
	// header (command-line and server clients), are always allowed.
	OriginPatterns []string
}

func (c *Config) setDefaults() {
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Limiter == nil {
		c.Limiter = limit.New(nil, c.Logger)
	}
	if c.Queue <= 0 {
		c.Queue = 256
	}
	if c.Rate <= 0 {
		c.Rate = 10
	}
	if c.Burst <= 0 {
		c.Burst = 20
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.History <= 0 {
		c.History = 50
	}
	if c.History > 500 {
		c.History = 500
	}
	if c.MaxPerMember <= 0 {
		c.MaxPerMember = 20
	}
	if c.MaxPerAddress <= 0 {
		c.MaxPerAddress = 100
	}
	if c.SessionCheck <= 0 {
		c.SessionCheck = 2 * time.Second
	}
}

// statusSessionEnded is the close code of a socket whose session ended: an
// application code (4000–4999), so that a client tells it from the
// protocol's own.
const statusSessionEnded websocket.StatusCode = 4001

// Close reasons sent to chat clients.
const (
	reasonSlow     = "too slow: the send queue overflowed; reconnect to resume"
	reasonShutdown = "the gate is shutting down; reconnect"
	reasonSession  = "your session ended (logout, expiry or account deleted): log in again"
)

// kickGrace is how long a disconnected client's writer may go on with a
// write in progress before the connection is closed under it.
const kickGrace = time.Second

// Hub holds a gate's chat clients by room and the gate's one Redis
// subscription: a PSUBSCRIBE on every room's channel of the deployment.
// Each published message is received once per gate and fanned out to the
// room's local clients as the same bytes, without blocking on any client.
//
// Lock order: Hub.mu, then nothing (client fields it guards are
// marked; channel sends under it never block).
type Hub struct {
	cache *cache.Cache
	cfg   Config
	log   *slog.Logger

	ctx    context.Context // canceled when the hub closes
	cancel context.CancelFunc

	ready     chan struct{} // closed once the subscription is confirmed
	readyOnce sync.Once

	pubsub   *redis.PubSub
	received chan struct{} // closed when the receive loop has ended

	mu        sync.Mutex
	rooms     map[string]map[*chatClient]struct{}
	perMember map[int64]int  // sockets per member (members only)
	perAddr   map[string]int // sockets per client address
	closing   bool

	conns     sync.WaitGroup // chat sockets being served
	closeOnce sync.Once
}

// New returns a hub; Start subscribes it, ServeHTTP serves its sockets and
// Close ends them.
func New(cfg Config) *Hub {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		cache: cfg.Cache, cfg: cfg, log: cfg.Logger.With("component", "gate"),
		ctx: ctx, cancel: cancel,
		ready:     make(chan struct{}),
		received:  make(chan struct{}),
		rooms:     map[string]map[*chatClient]struct{}{},
		perMember: map[int64]int{},
		perAddr:   map[string]int{},
	}
}

// Start subscribes to every room's channel and fans out what arrives. The
// subscription survives Redis outages: go-redis reconnects and subscribes
// again by itself.
func (h *Hub) Start() {
	h.pubsub = h.cache.PSubscribe(h.ctx, topic.Pattern(h.cache.Prefix))
	ch := h.pubsub.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	go func() {
		defer close(h.received)
		subscribed := false
		for v := range ch {
			switch v := v.(type) {
			case *redis.Subscription:
				if v.Kind != "psubscribe" {
					continue
				}
				if subscribed {
					h.log.Info("chat: subscribed to Redis again; live delivery resumes")
				}
				subscribed = true
				h.readyOnce.Do(func() { close(h.ready) })
			case *redis.Message:
				chatReceived.Inc()
				if room, ok := topic.Room(h.cache.Prefix, v.Channel); ok {
					h.dispatch(room, []byte(v.Payload))
				}
			}
		}
	}()
	if h.cfg.SessionEnded != nil {
		go h.watchSessions()
	}
}

// watchSessions closes, every SessionCheck, the sockets whose session has
// ended: each distinct session is checked once (from Redis when its cached
// value verifies, else asked of the members service), on every gate, so a
// logout reaches every socket of the member within about SessionCheck.
func (h *Hub) watchSessions() {
	t := time.NewTicker(h.cfg.SessionCheck)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		bySession := map[string][]*chatClient{}
		for _, clients := range h.rooms {
			for c := range clients {
				if a := c.auth; a != nil && a.Session != "" {
					bySession[a.Session] = append(bySession[a.Session], c)
				}
			}
		}
		h.mu.Unlock()
		for hash, clients := range bySession {
			ctx, cancel := context.WithTimeout(h.ctx, h.cfg.SessionCheck)
			ended := h.cfg.SessionEnded(ctx, hash)
			cancel()
			if !ended {
				continue
			}
			h.mu.Lock()
			for _, c := range clients {
				h.dropLocked(c, statusSessionEnded, reasonSession)
			}
			h.mu.Unlock()
			chatDropped.WithLabelValues("session").Add(float64(len(clients)))
		}
	}
}

// Close disconnects every client (close code 1001), waits until their
// sockets are closed (a few seconds at most) and drops the subscription.
// Calls after the first do nothing.
func (h *Hub) Close() { h.closeOnce.Do(h.shutdown) }

func (h *Hub) shutdown() {
	h.mu.Lock()
	h.closing = true
	for _, clients := range h.rooms {
		for c := range clients {
			c.kick(websocket.StatusGoingAway, reasonShutdown)
			chatDropped.WithLabelValues("shutdown").Inc()
		}
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2*kickGrace + 5*time.Second):
		h.log.Warn("chat: sockets still open at shutdown; closing them")
	}
	h.cancel()
	if h.pubsub != nil {
		h.pubsub.Close()
		<-h.received
	}
}

// waitReady waits a moment for the subscription, so that a client joining
// just after the gate started misses nothing. With Redis down it gives up:
// the client gets the history and live messages once Redis is back.
func (h *Hub) waitReady(ctx context.Context) {
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-h.ready:
	case <-t.C:
	case <-ctx.Done():
	}
}

// dispatch hands frame to every client of room: joining clients buffer it,
// live ones queue it (unless their history already held it); a client
// whose buffer or queue is full is dropped.
func (h *Hub) dispatch(room string, frame []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := int64(-1) // parsed once, when a client needs it
	for c := range h.rooms[room] {
		if c.joining {
			if len(c.pending) >= h.cfg.Queue {
				h.dropLocked(c, websocket.StatusPolicyViolation, reasonSlow)
				continue
			}
			c.pending = append(c.pending, frame)
			continue
		}
		if c.sent != nil {
			if id < 0 {
				id = frameID(frame)
			}
			if c.alreadySent(id) {
				continue
			}
		}
		if !c.offer(frame) {
			h.dropLocked(c, websocket.StatusPolicyViolation, reasonSlow)
		}
	}
}

// Why join refuses a client.
var (
	errHubClosing  = errors.New("the gate is shutting down")
	errMemberFull  = errors.New("too many chat sockets for this member on this gate")
	errAddressFull = errors.New("too many chat sockets from this address on this gate")
)

// join adds c to its room in the joining state (live messages are
// buffered until goLive). It refuses c when the hub is closing, or when c's
// member or address holds its cap of sockets.
func (h *Hub) join(c *chatClient) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return errHubClosing
	}
	if c.member != 0 && h.perMember[c.member] >= h.cfg.MaxPerMember {
		return fmt.Errorf("%w (%d)", errMemberFull, h.cfg.MaxPerMember)
	}
	if c.addr != "" && h.perAddr[c.addr] >= h.cfg.MaxPerAddress {
		return fmt.Errorf("%w (%d)", errAddressFull, h.cfg.MaxPerAddress)
	}
	if c.member != 0 {
		h.perMember[c.member]++
	}
	if c.addr != "" {
		h.perAddr[c.addr]++
	}
	clients := h.rooms[c.room]
	if clients == nil {
		clients = map[*chatClient]struct{}{}
		h.rooms[c.room] = clients
	}
	clients[c] = struct{}{}
	c.joining = true
	h.conns.Add(1)
	chatClients.Inc()
	return nil
}

// leave removes c from its room (if still there) and frees the room when
// it was the last local client; each join is matched by one leave.
func (h *Hub) leave(c *chatClient) {
	h.mu.Lock()
	h.removeLocked(c)
	c.pending = nil
	if c.member != 0 {
		if h.perMember[c.member]--; h.perMember[c.member] <= 0 {
			delete(h.perMember, c.member)
		}
	}
	if c.addr != "" {
		if h.perAddr[c.addr]--; h.perAddr[c.addr] <= 0 {
			delete(h.perAddr, c.addr)
		}
	}
	h.mu.Unlock()
	h.conns.Done()
	chatClients.Dec()
}

func (h *Hub) removeLocked(c *chatClient) {
	clients := h.rooms[c.room]
	delete(clients, c)
	if len(clients) == 0 {
		delete(h.rooms, c.room)
	}
}

// dropLocked removes c from its room and disconnects it.
func (h *Hub) dropLocked(c *chatClient, code websocket.StatusCode, reason string) {
	if reason == reasonSlow {
		h.log.Info("chat: disconnected a slow client", "room", c.room, "user", c.user)
		chatDropped.WithLabelValues("slow").Inc()
	}
	h.removeLocked(c)
	c.pending = nil
	c.kick(code, reason)
}

// goLive queues the history frames (ids holds their ids), then the
// messages buffered since c joined that are not in the history, and makes
// c live. Publish order may differ from id order, so duplicates are found
// by id, not by comparing with the highest id.
//
// A message can be in the history and still be on its way to this gate:
// it was published before the history was read, but the gate's
// subscription had not delivered it yet when c joined. So c keeps the
// history's ids after going live, skipping those messages when they
// arrive, until a message newer than the whole history shows that the
// subscription has caught up (see alreadySent).
func (h *Hub) goLive(c *chatClient, hist chatHistory) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.rooms[c.room][c]; !ok {
		return // dropped (overflow or shutdown) while joining
	}
	ids := hist.ids
	for _, f := range hist.frames {
		if !c.offer(f) {
			h.dropLocked(c, websocket.StatusPolicyViolation, reasonSlow)
			return
		}
	}
	if len(ids) > 0 {
		c.sent = ids
		for id := range ids {
			c.newest = max(c.newest, id)
		}
		if !hist.published {
			c.sentUntil = time.Now().Add(unpublishedGrace)
		}
	}
	for _, f := range c.pending {
		if ids[frameID(f)] {
			continue
		}
		if !c.offer(f) {
			h.dropLocked(c, websocket.StatusPolicyViolation, reasonSlow)
			return
		}
	}
	c.pending = nil
	c.joining = false
}

// clients returns how many local clients room has (for tests).
func (h *Hub) clients(room string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms[room])
}

// frameID returns the id of a message frame, 0 when it has none.
func frameID(f []byte) int64 {
	var m struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal(f, &m)
	return m.ID
}

// chatClient is one chat socket.
type chatClient struct {
	room, user string
	auth       *service.Auth // the identity its messages are posted with
	member     int64         // the member it speaks as (0: none, the book's open mode)
	addr       string        // the client's address, for the cap per address
	conn       *websocket.Conn
	send       chan []byte // frames to write, in order

	joining bool     // guarded by Hub.mu
	pending [][]byte // guarded by Hub.mu: live frames buffered while joining

	// sent holds the ids of the history frames c was sent, and newest the
	// highest of them, until the subscription is known to have delivered
	// them all; sentUntil, for a history read from the database, is the
	// earliest time they may be forgotten. Guarded by Hub.mu.
	sent      map[int64]bool
	newest    int64
	sentUntil time.Time

	kickOnce sync.Once
	kicked   chan struct{} // closed when the client is to be disconnected
	code     websocket.StatusCode
	reason   string

	writes      context.Context // canceled kickGrace after a kick
	cancelWrite context.CancelFunc
	out         atomic.Pointer[batchConn] // the socket, once upgraded

	bucket bucket // used by the read loop only
}

func newChatClient(ctx context.Context, room, user string, cfg Config) *chatClient {
	c := &chatClient{
		room: room, user: user,
		// Room for the whole history on top of the queue.
		send:   make(chan []byte, cfg.Queue+cfg.History),
		kicked: make(chan struct{}),
		bucket: bucket{rate: cfg.Rate, burst: float64(cfg.Burst), tokens: float64(cfg.Burst)},
	}
	c.writes, c.cancelWrite = context.WithCancel(ctx)
	return c
}

// alreadySent reports whether the message id was in c's history. A message
// newer than the whole history was published after the history was read
// (the window holds every published message, and the history is its
// newest part), and Redis delivers a connection's messages in publish
// order: every history message has then arrived, and c forgets the ids.
// A history read from the database (while the window is rebuilt, or with
// Redis failing) may hold a message stored but not yet published, which
// another poster's newer message can overtake: such a client keeps the ids
// for unpublishedGrace at least.
func (c *chatClient) alreadySent(id int64) bool {
	if c.sent[id] {
		return true
	}
	if id > c.newest && (c.sentUntil.IsZero() || time.Now().After(c.sentUntil)) {
		c.sent = nil
	}
	return false
}

// unpublishedGrace is how long a client whose history was read from the
// database keeps its history's ids, however new the messages it receives:
// such a history may hold a message stored but not yet published, which
// the chat service publishes a moment later, possibly after newer ones.
const unpublishedGrace = 5 * time.Second

// offer queues frame without blocking; false means the queue is full.
func (c *chatClient) offer(frame []byte) bool {
	select {
	case c.send <- frame:
		return true
	default:
		return false
	}
}

// kick asks the writer to close the socket with code and reason; a write
// still blocked after kickGrace is abandoned and the connection closed.
// Only the first kick counts.
func (c *chatClient) kick(code websocket.StatusCode, reason string) {
	c.kickOnce.Do(func() {
		c.code, c.reason = code, reason
		close(c.kicked)
		time.AfterFunc(kickGrace, func() {
			c.cancelWrite()
			if out := c.out.Load(); out != nil {
				out.Conn.Close() // a write still blocked fails now
			}
		})
	})
}

// bucket is a token bucket: rate tokens a second, at most burst saved.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// allow takes a token at time now, reporting false when there is none.
func (b *bucket) allow(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
