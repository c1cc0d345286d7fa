package chatws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/chat"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

func TestBucket(t *testing.T) {
	b := bucket{rate: 10, burst: 3, tokens: 3}
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !b.allow(now) {
			t.Fatalf("message %d of a burst of 3 refused", i+1)
		}
	}
	if b.allow(now) {
		t.Fatal("4th message of a burst of 3 allowed")
	}
	if b.allow(now.Add(50 * time.Millisecond)) {
		t.Fatal("allowed after half a token's time")
	}
	if !b.allow(now.Add(101 * time.Millisecond)) {
		t.Fatal("refused after a token's time")
	}
	if n := 0; true {
		later := now.Add(time.Hour)
		for b.allow(later) {
			n++
		}
		if n != 3 {
			t.Fatalf("after a long pause %d messages allowed at once; want the burst, 3", n)
		}
	}
}

func testHub(queue int) *Hub {
	return New(Config{Queue: queue, History: 4, Logger: slog.New(slog.DiscardHandler)})
}

func frame(id int) []byte { return []byte(fmt.Sprintf(`{"id":%d,"room":"r","text":"m%d"}`, id, id)) }

func drain(c *chatClient) []int64 {
	var got []int64
	for {
		select {
		case f := <-c.send:
			got = append(got, frameID(f))
		default:
			return got
		}
	}
}

// The history comes first, then the messages that arrived while joining
// that the history does not hold (by id, whatever their order), then live
// ones.
func TestJoinNoGapNoDuplicate(t *testing.T) {
	h := testHub(16)
	c := newChatClient(h.ctx, "r", "u", h.cfg)
	if err := h.join(c); err != nil {
		t.Fatalf("join refused: %v", err)
	}
	// Published while the history was read: 5 (in it), then 7, then 6 (in
	// it: publish order differs from id order), then 8.
	for _, id := range []int{5, 7, 6, 8} {
		h.dispatch("r", frame(id))
	}
	h.dispatch("other", frame(99))
	history := [][]byte{frame(3), frame(4), frame(5), frame(6)}
	h.goLive(c, chatHistory{frames: history, ids: map[int64]bool{3: true, 4: true, 5: true, 6: true}, published: true})
	h.dispatch("r", frame(9))
	if got, want := fmt.Sprint(drain(c)), "[3 4 5 6 7 8 9]"; got != want {
		t.Fatalf("frames = %s; want %s", got, want)
	}
	h.leave(c)
	if n := h.clients("r"); n != 0 {
		t.Fatalf("room has %d clients after the last left; want it freed", n)
	}
}

// A message in the history may reach the gate's subscription only after
// the client went live (it was published before the history was read but
// was still on its way): it is not sent twice. A message newer than the
// whole history ends that check.
func TestHistoryMessageArrivingLate(t *testing.T) {
	h := testHub(16)
	c := newChatClient(h.ctx, "r", "u", h.cfg)
	if err := h.join(c); err != nil {
		t.Fatalf("join refused: %v", err)
	}
	h.dispatch("r", frame(4)) // arrived while joining, in the history
	h.goLive(c, history3to6(true))
	for _, id := range []int{6, 5, 7, 8} { // 5 and 6 arrive late
		h.dispatch("r", frame(id))
	}
	if got, want := fmt.Sprint(drain(c)), "[3 4 5 6 7 8]"; got != want {
		t.Fatalf("frames = %s; want %s", got, want)
	}
	h.mu.Lock()
	forgot := c.sent == nil
	h.mu.Unlock()
	if !forgot {
		t.Fatal("the client still holds the history ids after a newer message")
	}
	h.leave(c)
}

func history3to6(published bool) chatHistory {
	return chatHistory{
		frames:    [][]byte{frame(3), frame(4), frame(5), frame(6)},
		ids:       map[int64]bool{3: true, 4: true, 5: true, 6: true},
		published: published,
	}
}

// A history read from the database may hold a message stored but not yet
// published (6 here), which a newer message (7) can overtake: the client
// keeps the history's ids anyway, and does not get 6 twice.
func TestUnpublishedHistoryMessage(t *testing.T) {
	h := testHub(16)
	c := newChatClient(h.ctx, "r", "u", h.cfg)
	if err := h.join(c); err != nil {
		t.Fatalf("join refused: %v", err)
	}
	h.goLive(c, history3to6(false))
	for _, id := range []int{7, 6, 8} {
		h.dispatch("r", frame(id))
	}
	if got, want := fmt.Sprint(drain(c)), "[3 4 5 6 7 8]"; got != want {
		t.Fatalf("frames = %s; want %s", got, want)
	}
	h.leave(c)
}

// A client whose queue is full is dropped and told why; the others still
// get every message.
func TestSlowClientDropped(t *testing.T) {
	slowBefore := testutil.ToFloat64(chatDropped.WithLabelValues("slow"))
	clientsBefore := testutil.ToFloat64(chatClients)
	h := testHub(4)
	slow := newChatClient(h.ctx, "r", "slow", h.cfg)
	fast := newChatClient(h.ctx, "r", "fast", h.cfg)
	for _, c := range []*chatClient{slow, fast} {
		h.join(c)
		h.goLive(c, chatHistory{published: true})
	}
	capacity := cap(slow.send)
	for i := 1; i <= capacity+1; i++ {
		h.dispatch("r", frame(i))
		if i%2 == 0 {
			drain(fast) // the fast client keeps up
		}
	}
	select {
	case <-slow.kicked:
	default:
		t.Fatal("the slow client was not disconnected when its queue overflowed")
	}
	if slow.code != websocket.StatusPolicyViolation || !strings.Contains(slow.reason, "too slow") {
		t.Fatalf("slow client closed with %d %q; want 1008 saying it is too slow", slow.code, slow.reason)
	}
	if n := h.clients("r"); n != 1 {
		t.Fatalf("room has %d clients; want only the fast one", n)
	}
	drain(fast)
	h.dispatch("r", frame(100))
	if got := drain(fast); len(got) != 1 || got[0] != 100 {
		t.Fatalf("fast client got %v after the drop; want [100]", got)
	}
	select {
	case <-fast.kicked:
		t.Fatal("the fast client was disconnected")
	default:
	}
	// A joining client overflows its buffer the same way.
	joining := newChatClient(h.ctx, "r", "j", h.cfg)
	h.join(joining)
	for i := range h.cfg.Queue + 1 {
		h.dispatch("r", frame(200+i))
		drain(fast)
	}
	select {
	case <-joining.kicked:
	default:
		t.Fatal("a joining client with a full buffer was not disconnected")
	}
	if n := testutil.ToFloat64(chatDropped.WithLabelValues("slow")) - slowBefore; n != 2 {
		t.Errorf("microshop_gate_chat_disconnects_total{reason=\"slow\"} went up by %v; want 2", n)
	}
	if n := testutil.ToFloat64(chatClients) - clientsBefore; n != 3 {
		t.Errorf("microshop_gate_chat_clients went up by %v; want 3 (joined, not left yet)", n)
	}
	for _, c := range []*chatClient{slow, fast, joining} {
		h.leave(c)
	}
	if n := testutil.ToFloat64(chatClients) - clientsBefore; n != 0 {
		t.Errorf("microshop_gate_chat_clients is %v above where it was after every client left; want 0", n)
	}
}

// chatFleet is a distributor, a chat service and a gate serving a hub, in
// process.
type chatFleet struct {
	hub   *Hub   // nil: chat disabled
	url   string // ws://127.0.0.1:PORT
	http  string // http://127.0.0.1:PORT
	cache *cache.Cache
}

func startChatFleet(t *testing.T, cfg Config, withCache bool) *chatFleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stops []chan struct{}
	t.Cleanup(func() {
		cancel()
		for _, s := range stops {
			<-s
		}
	})
	run := func(f func(net.Listener)) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		stops = append([]chan struct{}{done}, stops...)
		go func() { defer close(done); f(ln) }()
		return ln.Addr().String()
	}
	quiet := slog.New(slog.DiscardHandler)
	dist := run(func(ln net.Listener) { distributor.NewServer(quiet, 0).Serve(ctx, ln) })
	c := testenv.Cache(t)
	svc := chat.New(testenv.DB(t), c, quiet)
	run(func(ln net.Listener) {
		service.NewServer(service.Config{Name: "chat", Routes: svc.Routes(), Distributors: []string{dist}, DrainTimeout: time.Second, Logger: quiet}).Serve(ctx, ln)
	})
	// These tests are about chat mechanics, in the book's open mode;
	// TestChatUser covers who a socket speaks as with authentication on.
	// No Admitter: every socket is the book's open mode.
	client := service.NewClient(service.ClientConfig{RequestTimeout: 5 * time.Second, Logger: quiet})
	f := &chatFleet{cache: c}
	handler := Disabled
	if withCache {
		cfg.Cache, cfg.Client, cfg.RequestTimeout, cfg.Logger = c, client, 5*time.Second, quiet
		f.hub = New(cfg)
		f.hub.Start()
		handler = f.hub
	}
	g := gate.New(gate.Config{Distributors: []string{dist}, RequestTimeout: 5 * time.Second, Client: client, Logger: quiet,
		Handlers: map[string]http.Handler{"GET /chat": handler}, OnShutdown: func() {
			if f.hub != nil {
				f.hub.Close()
			}
		}})
	addr := run(func(ln net.Listener) { g.Serve(ctx, ln) })
	f.url, f.http = "ws://"+addr, "http://"+addr
	deadline := time.Now().Add(10 * time.Second)
	for !g.Client().Has("POST", "/chat") {
		if time.Now().After(deadline) {
			t.Fatal("the gate never learnt the chat routes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return f
}

func (f *chatFleet) dial(t *testing.T, query string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, f.url+"/chat?"+query, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", query, err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func (f *chatFleet) post(t *testing.T, room, text string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"room": room, "text": text, "userid": "poster"})
	resp, err := http.Post(f.http+"/chat", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /chat: %d %s", resp.StatusCode, b)
	}
}

type wsMsg struct {
	ID    int64  `json:"id"`
	Room  string `json:"room"`
	User  string `json:"user"`
	Text  string `json:"text"`
	Error string `json:"error"`
}

func read(t *testing.T, c *websocket.Conn) wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("frame %s: %v", data, err)
	}
	return m
}

func send(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := c.Write(context.Background(), websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

func TestChatSockets(t *testing.T) {
	f := startChatFleet(t, Config{Rate: 1, Burst: 2}, true)
	f.post(t, "lobby", "before anyone came")
	ann := f.dial(t, "room=lobby&userid=ann")
	if m := read(t, ann); m.Text != "before anyone came" || m.User != "poster" {
		t.Fatalf("first frame = %+v; want the history", m)
	}
	guest := f.dial(t, "room=lobby")
	if m := read(t, guest); m.Text != "before anyone came" {
		t.Fatalf("guest's first frame = %+v; want the history", m)
	}
	other := f.dial(t, "room=other")

	send(t, ann, map[string]string{"text": "hello"})
	for _, c := range []*websocket.Conn{ann, guest} {
		if m := read(t, c); m.Text != "hello" || m.User != "ann" || m.Room != "lobby" || m.ID == 0 {
			t.Fatalf("frame = %+v; want ann's hello", m)
		}
	}
	send(t, guest, map[string]string{"text": "hi ann"})
	m := read(t, ann)
	if !strings.HasPrefix(m.User, "guest-") {
		t.Fatalf("guest's message came from %q; want guest-…", m.User)
	}
	read(t, guest)

	// Errors come back as {"error": ...} frames to the sender only.
	for _, tc := range []struct {
		frame, want string
	}{
		{`not json`, `{"text": "..."}`},
		{`{"txt":"x"}`, `{"text": "..."}`},
		{`{"text":"` + strings.Repeat("x", chat.MaxTextLen+1) + `"}`, "at most 2000 characters"},
		{`{"text":"x"}`, "too many messages"}, // the burst of 2 is spent
	} {
		if err := ann.Write(context.Background(), websocket.MessageText, []byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		if m := read(t, ann); !strings.Contains(m.Error, tc.want) {
			t.Errorf("after %.40s: frame %+v; want an error with %q", tc.frame, m, tc.want)
		}
	}
	// The other room heard nothing: its first frame is a later message.
	f.post(t, "other", "for other only")
	if m := read(t, other); m.Text != "for other only" {
		t.Fatalf("other room's first frame = %+v; want its own message", m)
	}

	// A closed client frees its room.
	other.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the other room to be freed", func() bool { return f.hub.clients("other") == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestChatHTTPErrors(t *testing.T) {
	f := startChatFleet(t, Config{}, true)
	noChat := startChatFleet(t, Config{}, false)
	for _, tc := range []struct {
		base, query string
		upgrade     bool
		want        int
		msg         string
	}{
		{f.http, "room=lobby", false, 400, "WebSocket"},
		{f.http, "room=bad%20room", true, 400, "room must be"},
		{f.http, "", true, 400, "room is required"},
		{f.http, "room=r&userid=a%20b", true, 400, "userid must be"},
		{noChat.http, "room=lobby", true, 503, "chat is disabled"},
	} {
		req, _ := http.NewRequest("GET", tc.base+"/chat?"+tc.query, nil)
		if tc.upgrade {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			ErrorCode    int    `json:"errorcode"`
			ErrorMessage string `json:"errormessage"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || body.ErrorCode != tc.want || !strings.Contains(body.ErrorMessage, tc.msg) {
			t.Errorf("GET /chat?%s = %d %+v; want %d with %q", tc.query, resp.StatusCode, body, tc.want, tc.msg)
		}
	}
}

// A client that never reads is disconnected once its queue overflows; the
// others keep receiving everything, in order.
func TestSlowClientDisconnected(t *testing.T) {
	f := startChatFleet(t, Config{Queue: 8, Rate: 1000, Burst: 1000}, true)
	slow := f.dial(t, "room=busy&userid=slow") // never reads
	fast := f.dial(t, "room=busy&userid=fast")
	got := make(chan []string, 1)
	go func() {
		var texts []string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, data, err := fast.Read(ctx)
			cancel()
			if err != nil {
				got <- texts
				return
			}
			var m wsMsg
			json.Unmarshal(data, &m)
			texts = append(texts, m.Text)
			if m.Text == "end" {
				got <- texts
				return
			}
		}
	}()
	// Big messages fill the socket buffers, then the queue.
	pad := strings.Repeat("p", chat.MaxTextLen-10)
	n := 0
	for f.hub.clients("busy") == 2 {
		n++
		if n > 20000 {
			t.Fatal("the slow client was never disconnected")
		}
		f.post(t, "busy", fmt.Sprint(n, pad))
	}
	f.post(t, "busy", "end")
	texts := <-got
	if len(texts) != n+1 {
		t.Fatalf("fast client got %d messages; want %d", len(texts), n+1)
	}
	for i, s := range texts[:n] {
		if !strings.HasPrefix(s, fmt.Sprint(i+1, "p")) {
			t.Fatalf("fast client's message %d = %.10s…; want message %d (in order)", i+1, s, i+1)
		}
	}
	// The slow client finds its buffered messages, then the end.
	var err error
	for err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err = slow.Read(ctx)
		cancel()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the slow client's socket is still open: %v", err)
	}
	t.Logf("slow client disconnected after %d messages: %v", n, err)
}

func TestChatUser(t *testing.T) {
	for _, tc := range []struct {
		name   string
		auth   *service.Auth
		query  string
		want   string
		status int
	}{
		{name: "auth off, userid", query: "userid=ann", want: "ann"},
		{name: "auth off, bad userid", query: "userid=a%20b", status: 400},
		{name: "anonymous", auth: &service.Auth{}, query: "", status: 401},
		{name: "anonymous naming a user", auth: &service.Auth{}, query: "userid=7", status: 401},
		{name: "member", auth: &service.Auth{Member: 7}, want: "7"},
		{name: "member naming itself", auth: &service.Auth{Member: 7}, query: "userid=7", want: "7"},
		{name: "member naming another", auth: &service.Auth{Member: 7}, query: "userid=8", status: 403},
		{name: "admin", auth: &service.Auth{Admin: true}, query: "userid=shop", want: "shop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/chat?room=r&"+tc.query, nil)
			if tc.auth != nil {
				r = r.WithContext(gate.WithAuth(r.Context(), tc.auth))
			}
			got, status, err := chatUser(r)
			if tc.status != 0 {
				if err == nil || status != tc.status {
					t.Fatalf("chatUser = %q, %d, %v; want status %d", got, status, err, tc.status)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("chatUser = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// A member's message allowance is shared by all their sockets: two sockets
// of one member get one burst between them; another member has their own,
// and a socket without a member (the book's open mode) its own.
func TestChatRatePerMember(t *testing.T) {
	h := New(Config{Rate: 0.001, Burst: 3, Logger: slog.New(slog.DiscardHandler)})
	a1, a2 := newChatClient(h.ctx, "r", "7", h.cfg), newChatClient(h.ctx, "r", "7", h.cfg)
	a1.member, a2.member = 7, 7
	b := newChatClient(h.ctx, "r", "8", h.cfg)
	b.member = 8
	guest := newChatClient(h.ctx, "r", "guest", h.cfg)
	sent := 0
	for range 4 {
		for _, c := range []*chatClient{a1, a2} {
			if h.allow(c) {
				sent++
			}
		}
	}
	if sent != 3 {
		t.Fatalf("two sockets of one member sent %d of 8 messages with a burst of 3; want 3", sent)
	}
	for _, c := range []*chatClient{b, guest} {
		if !h.allow(c) {
			t.Fatalf("%s's first message was refused: the allowance is not its own", c.user)
		}
	}
}
