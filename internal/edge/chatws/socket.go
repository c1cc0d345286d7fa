package chatws

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/chat/topic"
	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// maxChatFrame limits what a chat client may send in one message: a text
// of 2,000 characters, each escaped as \uXXXX, fits.
const maxChatFrame = 16 << 10

// chatUser is the one place that says who a chat socket speaks as. With
// authentication on it is the token's member (no token: 401; a userid
// naming someone else: 403); the admin key, or authentication off (the
// book's behaviour), speaks as the userid query parameter when given, else
// as a generated guest name. status is the HTTP status of a refusal.
func chatUser(r *http.Request) (user string, status int, err error) {
	q := r.URL.Query().Get("userid")
	if a := gate.AuthFrom(r.Context()); a != nil && !a.Admin {
		switch {
		case a.Member == 0:
			return "", http.StatusUnauthorized, errors.New("log in first: connect with Authorization: Bearer TOKEN or ?token=TOKEN")
		case q != "" && q != strconv.FormatInt(a.Member, 10):
			return "", http.StatusForbidden, errors.New("you may chat only as yourself")
		}
		return strconv.FormatInt(a.Member, 10), 0, nil
	}
	u, err := chatUserParam(q)
	if err != nil {
		return "", http.StatusBadRequest, err
	}
	return u, 0, nil
}

// chatUserParam validates a userid query parameter, or makes a guest name.
func chatUserParam(u string) (string, error) {
	if u == "" {
		return guestName(), nil
	}
	if err := topic.CheckUser(u); err != nil {
		return "", err
	}
	return u, nil
}

// Disabled is the handler of GET /chat on a gate without Redis.
var Disabled http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	gate.WriteError(w, http.StatusServiceUnavailable, "chat is disabled on this gate: it was started without Redis (--redis)")
})

// ServeHTTP serves GET /chat?room=NAME: it upgrades to a WebSocket, sends
// the room's recent history, then every message of the room from any gate,
// and posts what the client sends ({"text": "..."}) to the chat service.
// It returns once the socket is closed. Who the socket speaks as comes
// from gate.AuthFrom (see chatUser).
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.serve(w, r) }

// serve is ServeHTTP; it returns the status written (101 for a socket).
func (h *Hub) serve(w http.ResponseWriter, r *http.Request) int {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return gate.WriteError(w, http.StatusBadRequest, "GET /chat is a WebSocket: connect with a WebSocket client to ws://HOST/chat?room=NAME; past messages are at GET /chat/history?room=NAME")
	}
	room := r.URL.Query().Get("room")
	if err := topic.CheckRoom(room); err != nil {
		return gate.WriteError(w, http.StatusBadRequest, err.Error())
	}
	user, status, err := chatUser(r)
	if err != nil {
		return gate.WriteError(w, status, err.Error())
	}

	// Subscribed before the history is read, with live messages buffered
	// meanwhile: nothing falls between the history and the live messages.
	h.waitReady(r.Context())
	c := newChatClient(h.ctx, room, user, h.cfg)
	c.auth = gate.AuthFrom(r.Context())
	if a := c.auth; a != nil && !a.Admin {
		c.member = a.Member
	}
	c.addr = limit.AddrKey(gate.ClientAddr(r, h.cfg.TrustedProxies))
	if err := h.join(c); err != nil {
		if errors.Is(err, errHubClosing) {
			return gate.WriteError(w, http.StatusServiceUnavailable, err.Error())
		}
		w.Header().Set("Retry-After", "60")
		return gate.WriteError(w, http.StatusTooManyRequests, err.Error()+": close one first")
	}
	defer h.leave(c)
	history, status, msg := h.history(r.Context(), room)
	if status != 0 {
		if status == gate.StatusClientGone {
			return status
		}
		return gate.WriteError(w, status, msg)
	}
	bw := &batchWriter{ResponseWriter: w, timeout: h.cfg.WriteTimeout}
	conn, err := websocket.Accept(bw, r, &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns})
	if err != nil {
		h.log.Debug("chat: upgrade refused", "err", err)
		return http.StatusBadRequest // Accept wrote the answer
	}
	conn.SetReadLimit(maxChatFrame)
	c.conn = conn
	c.out.Store(bw.conn)
	h.goLive(c, history)
	h.log.Debug("chat: joined", "room", room, "user", user)

	var wg sync.WaitGroup
	wg.Go(func() { h.writeLoop(c) })
	wg.Go(func() { h.pingLoop(c) })
	h.readLoop(c)
	c.kick(websocket.StatusNormalClosure, "")
	wg.Wait()
	c.cancelWrite()
	conn.CloseNow()
	h.log.Debug("chat: left", "room", room, "user", user)
	return http.StatusSwitchingProtocols
}

// history fetches the room's recent messages from the chat service as
// frames to send, with their ids; or an HTTP status and message when it
// cannot.
func (h *Hub) history(ctx context.Context, room string) (hist chatHistory, status int, msg string) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.RequestTimeout)
	defer cancel()
	var res struct {
		Results []json.RawMessage `json:"results"`
		Source  string            `json:"source"`
	}
	if err := h.cfg.Client.Do(ctx, nil, http.MethodGet, "/chat/history", map[string]any{"room": room, "limit": h.cfg.History}, &res); err != nil {
		status, msg := callError(ctx, http.MethodGet, err)
		return hist, status, msg
	}
	hist.ids = make(map[int64]bool, len(res.Results))
	for _, f := range res.Results {
		hist.frames = append(hist.frames, f)
		hist.ids[frameID(f)] = true
	}
	hist.published = res.Source == "window"
	return hist, 0, ""
}

// chatHistory is the history a joining client gets.
type chatHistory struct {
	frames [][]byte
	ids    map[int64]bool // the frames' message ids
	// published is set when the history holds only published messages
	// (read from the Redis window); one read from the database may hold a
	// message stored but not published yet.
	published bool
}

// callError maps a Client error of a call to the chat service to an HTTP
// status and message: service.CallStatus's, except that a chat service
// never listed is a 503 (chat sockets are the gate's route, and the chat
// service a dependency of theirs).
func callError(ctx context.Context, method string, err error) (int, string) {
	switch {
	case ctx.Err() != nil && !errors.Is(err, packet.ErrTimeout):
		return gate.StatusClientGone, "the client went away"
	case errors.Is(err, service.ErrNoRoute):
		return http.StatusServiceUnavailable, "no chat service is running"
	}
	return service.CallStatus(method, err)
}

// readLoop reads the client's messages until the socket closes and
// posts each to the chat service, one at a time, so that a client's
// messages reach the room in the order sent. Errors go back to the client
// as {"error": "..."} frames.
func (h *Hub) readLoop(c *chatClient) {
	for {
		typ, data, err := c.conn.Read(h.ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			h.fail(c, `send text frames holding {"text": "..."}`)
			continue
		}
		var in struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(data, &in); err != nil || in.Text == nil {
			h.fail(c, `send a JSON object {"text": "..."}`)
			continue
		}
		if !h.allow(c) {
			h.fail(c, fmt.Sprintf("too many messages: at most %g a second, %d at once, for each member across all their sockets; this one was not sent", h.cfg.Rate, h.cfg.Burst))
			continue
		}
		if msg := h.post(c, *in.Text); msg != "" {
			h.fail(c, msg)
		}
	}
}

// allow takes one message from c's allowance: a member's, shared by all
// their sockets on every gate (the limiter: GCRA in Redis, or per gate
// while Redis is down); a socket without a member, its own.
func (h *Hub) allow(c *chatClient) bool {
	if c.member == 0 {
		return c.bucket.allow(time.Now())
	}
	cfg := h.cfg
	// cfg.Rate a second, as a count per 1,000 s so that a fraction is exact.
	lim := limit.Limit{Rate: int(math.Round(cfg.Rate * 1000)), Burst: cfg.Burst, Period: 1000 * time.Second}
	ctx, cancel := context.WithTimeout(h.ctx, time.Second)
	defer cancel()
	return cfg.Limiter.Allow(ctx, "chat:member:"+strconv.FormatInt(c.member, 10), lim).Allowed
}

// post sends one message through POST /chat; it returns an error message
// for the client, or "" on success.
func (h *Hub) post(c *chatClient, text string) string {
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.RequestTimeout)
	defer cancel()
	err := h.cfg.Client.Do(ctx, c.auth, http.MethodPost, "/chat", map[string]any{"room": c.room, "text": text, "userid": c.user}, nil)
	var se *service.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &se) && se.Message == "":
		return "the message was not sent"
	}
	_, msg := callError(ctx, http.MethodPost, err)
	return msg
}

// fail queues an error frame for c, disconnecting it when its queue is full.
func (h *Hub) fail(c *chatClient, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	if !c.offer(b) {
		h.mu.Lock()
		h.dropLocked(c, websocket.StatusPolicyViolation, reasonSlow)
		h.mu.Unlock()
	}
}

// writeLoop is the only writer of c's messages: it writes the queued
// frames in order, many per socket write when they pile up, until c is
// kicked, then closes the socket with the kick's code and reason.
func (h *Hub) writeLoop(c *chatClient) {
	for {
		select {
		case <-c.kicked:
			c.close()
			return
		default:
		}
		select {
		case <-c.kicked:
			c.close()
			return
		case f := <-c.send:
			if err := c.writeBatch(f); err != nil {
				c.kick(websocket.StatusGoingAway, "write failed")
				c.conn.CloseNow()
				return
			}
		}
	}
}

// maxBatchFrames bounds how many queued frames one socket write carries.
const maxBatchFrames = 256

// writeBatch writes f and whatever else is queued now (up to
// maxBatchFrames) in one socket write; see batchConn.
func (c *chatClient) writeBatch(f []byte) error {
	out := c.out.Load()
	out.hold()
	// The frames only go to out's buffer here; flush does the socket
	// write, bounded by the write timeout.
	err := c.conn.Write(context.Background(), websocket.MessageText, f)
more:
	for n := 1; err == nil && n < maxBatchFrames && !out.full(); n++ {
		select {
		case f = <-c.send:
			err = c.conn.Write(context.Background(), websocket.MessageText, f)
		default:
			break more
		}
	}
	if ferr := out.flush(); err == nil {
		err = ferr
	}
	return err
}

// close closes c's socket with its kick's code and reason.
func (c *chatClient) close() {
	if c.code == websocket.StatusNormalClosure && c.reason == "" {
		// The client is gone or closed first: nothing to tell it.
		c.conn.CloseNow()
		return
	}
	c.conn.Close(c.code, c.reason)
}

// pingLoop pings c every PingInterval and closes the socket when a pong
// does not come back within the interval.
func (h *Hub) pingLoop(c *chatClient) {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.kicked:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(c.writes, h.cfg.PingInterval)
			err := c.conn.Ping(ctx)
			cancel()
			if err != nil {
				h.log.Debug("chat: ping failed; closing", "room", c.room, "user", c.user, "err", err)
				c.kick(websocket.StatusGoingAway, "ping timeout")
				c.conn.CloseNow()
				return
			}
		}
	}
}

// guestName returns a new random guest name, "guest-" and 6 hex digits.
func guestName() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "guest-" + hex.EncodeToString(b)
}
