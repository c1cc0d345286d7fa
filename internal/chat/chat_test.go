package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/chat"
	"github.com/microshop/microshop/internal/chat/topic"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

type fixture struct {
	db      *store.DB
	cache   *cache.Cache
	h       map[string]service.Handler
	members *membersPeer
}

func setup(t testing.TB) *fixture {
	t.Helper()
	return withCache(t, testenv.DB(t), testenv.Cache(t))
}

func withCache(t testing.TB, db *store.DB, c *cache.Cache) *fixture {
	f := &fixture{db: db, cache: c, members: &membersPeer{names: map[int64]string{}}}
	f.h = chat.New(db, c, slog.New(slog.DiscardHandler), chat.Names(f.members)).Routes()
	return f
}

// membersPeer stands in for the members service: GET /members/name.
type membersPeer struct {
	mu    sync.Mutex
	names map[int64]string
	down  bool // every call fails, as with members unreachable
	calls int
}

func (p *membersPeer) set(id int64, name string) { p.mu.Lock(); p.names[id] = name; p.mu.Unlock() }

func (p *membersPeer) Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.down {
		return nil, errors.New("members unreachable")
	}
	var q struct{ ID int64 }
	if method != "GET" || path != "/members/name" || json.Unmarshal(params, &q) != nil {
		return packet.Decode([]byte(`{"key":1,"errorcode":400,"errormessage":"bad call"}`))
	}
	name, ok := p.names[q.ID]
	if !ok {
		return packet.Decode([]byte(`{"key":1,"errorcode":404,"errormessage":"member not found"}`))
	}
	b, _ := json.Marshal(map[string]any{"key": 1, "errorcode": 0, "errormessage": "success", "id": q.ID, "username": name})
	return packet.Decode(b)
}

// postAs posts as member with a token.
func (f *fixture) postAs(t testing.TB, member int64, room, text string) service.Result {
	t.Helper()
	p := service.Params{"room": room, "text": text}
	res, err := f.h["POST/chat"](context.Background(), &service.Request{Params: p, Auth: &service.Auth{Member: member}})
	if err != nil {
		t.Fatalf("POST /chat as member %d: %v", member, err)
	}
	return res
}

func (f *fixture) call(route string, params map[string]any) (service.Result, error) {
	p := service.Params{}
	for k, v := range params {
		if n, ok := v.(int); ok {
			v = json.Number(fmt.Sprint(n))
		}
		p[k] = v
	}
	return f.h[route](context.Background(), &service.Request{Params: p})
}

func (f *fixture) post(t testing.TB, room, user, text string) int64 {
	t.Helper()
	res, err := f.call("POST/chat", map[string]any{"room": room, "userid": user, "text": text})
	if err != nil {
		t.Fatalf("POST /chat %s %q: %v", room, text, err)
	}
	return res["id"].(int64)
}

func (f *fixture) history(t testing.TB, room string, limit int) []chat.Message {
	t.Helper()
	p := map[string]any{"room": room}
	if limit > 0 {
		p["limit"] = limit
	}
	res, err := f.call("GET/chat/history", p)
	if err != nil {
		t.Fatalf("GET /chat/history %s: %v", room, err)
	}
	return res["results"].([]chat.Message)
}

func code(err error) int {
	c, _ := service.ErrorCode(err)
	return c
}

func ids(msgs []chat.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func TestValidation(t *testing.T) {
	f := setup(t)
	long := strings.Repeat("é", chat.MaxTextLen)
	for _, tc := range []struct {
		name   string
		params map[string]any
		want   int
		msg    string
	}{
		{"ok", map[string]any{"room": "lobby", "text": "hi"}, 0, ""},
		{"longest text", map[string]any{"room": "a-b_C9", "text": long}, 0, ""},
		{"multiline", map[string]any{"room": "r", "text": "a\nb\tc"}, 0, ""},
		{"no room", map[string]any{"text": "hi"}, 400, "room is required"},
		{"room too long", map[string]any{"room": strings.Repeat("r", 65), "text": "hi"}, 400, "room must be"},
		{"room bad char", map[string]any{"room": "a b", "text": "hi"}, 400, "room must be"},
		{"room unicode", map[string]any{"room": "salle-é", "text": "hi"}, 400, "room must be"},
		{"room array", map[string]any{"room": []any{"a"}, "text": "hi"}, 400, "room must be a string"},
		{"no text", map[string]any{"room": "r"}, 400, "text is required"},
		{"blank text", map[string]any{"room": "r", "text": " \n "}, 400, "text is required"},
		{"text too long", map[string]any{"room": "r", "text": long + "x"}, 400, "at most 2000 characters"},
		{"control char", map[string]any{"room": "r", "text": "a\x00b"}, 400, "control characters"},
		{"bad userid", map[string]any{"room": "r", "text": "hi", "userid": "a b"}, 400, "userid must be"},
		{"long userid", map[string]any{"room": "r", "text": "hi", "userid": strings.Repeat("u", 65)}, 400, "userid must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.call("POST/chat", tc.params)
			if got := code(err); got != tc.want {
				t.Fatalf("POST /chat %v = %v; want code %d", tc.params, err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("POST /chat %v = %v; want a message with %q", tc.params, err, tc.msg)
			}
		})
	}
	for _, tc := range []struct {
		limit any
		want  int
	}{{0, 400}, {-1, 400}, {501, 400}, {"x", 400}, {1, 0}, {500, 0}} {
		_, err := f.call("GET/chat/history", map[string]any{"room": "r", "limit": tc.limit})
		if got := code(err); got != tc.want {
			t.Errorf("GET /chat/history limit=%v = %v; want code %d", tc.limit, err, tc.want)
		}
	}
	if _, err := f.call("GET/chat/history", map[string]any{"room": "no room"}); code(err) != 400 {
		t.Errorf("GET /chat/history with a bad room = %v; want 400", err)
	}
}

func TestUser(t *testing.T) {
	f := setup(t)
	res, err := f.call("POST/chat", map[string]any{"room": "r", "text": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if u := res["user"].(string); !strings.HasPrefix(u, "guest-") || len(u) != len("guest-")+6 {
		t.Errorf("user without userid = %q; want guest-xxxxxx", u)
	}
	res, err = f.call("POST/chat", map[string]any{"room": "r", "text": "hi", "userid": "ann@shop.example"})
	if err != nil || res["user"] != "ann@shop.example" {
		t.Errorf("user with userid = %v, %v; want ann@shop.example", res["user"], err)
	}
}

func TestPostPublishesAndHistory(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sub := f.cache.Subscribe(ctx, topic.Channel(f.cache.Prefix, "lobby"))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	id := f.post(t, "lobby", "ann", "hello ¶ world")
	f.post(t, "other", "bob", "elsewhere")
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got chat.Message
	if err := json.Unmarshal([]byte(msg.Payload), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != id || got.Room != "lobby" || got.User != "ann" || got.Text != "hello ¶ world" || got.Time.IsZero() {
		t.Fatalf("published %+v; want id %d in lobby from ann", got, id)
	}
	h := f.history(t, "lobby", 0)
	if len(h) != 1 || h[0] != got {
		t.Fatalf("history = %+v; want [%+v]", h, got)
	}
	// The window and the database agree, to the byte.
	f.flush(t)
	if h := f.history(t, "lobby", 0); len(h) != 1 || h[0] != got {
		t.Fatalf("history rebuilt = %+v; want [%+v]", h, got)
	}
}

func (f *fixture) flush(t testing.TB) { testenv.FlushPrefix(t, f.cache) }

func TestHistoryOrderLimitAndWindow(t *testing.T) {
	f := setup(t)
	const n = chat.MaxHistory + 20
	var want []int64
	for i := range n {
		want = append(want, f.post(t, "busy", "u", fmt.Sprint("m", i)))
	}
	check := func(what string) {
		t.Helper()
		if got := ids(f.history(t, "busy", 0)); fmt.Sprint(got) != fmt.Sprint(want[n-chat.DefaultHistory:]) {
			t.Fatalf("%s: default history = %v; want the last %d, oldest first", what, got, chat.DefaultHistory)
		}
		if got := ids(f.history(t, "busy", chat.MaxHistory)); fmt.Sprint(got) != fmt.Sprint(want[n-chat.MaxHistory:]) {
			t.Fatalf("%s: history of %d = %d messages from %d; want the last %d", what, chat.MaxHistory, len(got), got[0], chat.MaxHistory)
		}
		if got := ids(f.history(t, "busy", 3)); fmt.Sprint(got) != fmt.Sprint(want[n-3:]) {
			t.Fatalf("%s: history of 3 = %v; want %v", what, got, want[n-3:])
		}
	}
	check("window built as messages came")
	// The window holds at most MaxHistory messages (plus its marker).
	key := f.cache.Key("chat:{busy}:recent")
	if c, err := f.cache.ZCard(context.Background(), key).Result(); err != nil || c != chat.MaxHistory+1 {
		t.Fatalf("ZCARD %s = %d, %v; want %d", key, c, err, chat.MaxHistory+1)
	}
	f.flush(t)
	check("after FLUSHALL")
	check("rebuilt window")
	if h := f.history(t, "empty", 0); len(h) != 0 {
		t.Fatalf("history of an empty room = %v", h)
	}
}

// The history says where it was read: the window (published messages
// only) or the database (a rebuild, or Redis down).
func TestHistorySource(t *testing.T) {
	db := testenv.DB(t)
	f := withCache(t, db, testenv.Cache(t))
	f.post(t, "r", "u", "a")
	source := func(f *fixture) any {
		t.Helper()
		res, err := f.call("GET/chat/history", map[string]any{"room": "r"})
		if err != nil {
			t.Fatal(err)
		}
		return res["source"]
	}
	if s := source(f); s != "database" {
		t.Fatalf("source of a new room's first history = %v; want database (its window is built then)", s)
	}
	if s := source(f); s != "window" {
		t.Fatalf("source = %v; want window", s)
	}
	f.flush(t)
	if s := source(f); s != "database" {
		t.Fatalf("source while rebuilding = %v; want database", s)
	}
	if s := source(f); s != "window" {
		t.Fatalf("source once rebuilt = %v; want window", s)
	}
	down, err := cache.Open("redis://127.0.0.1:1/0", "x:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if s := source(withCache(t, db, down)); s != "database" {
		t.Fatalf("source with Redis down = %v; want database", s)
	}
}

// A window whose messages were posted while it was missing is rebuilt whole.
func TestHistoryAfterFlushWithNewMessages(t *testing.T) {
	f := setup(t)
	a := f.post(t, "r", "u", "a")
	f.flush(t)
	b := f.post(t, "r", "u", "b") // lands in a window that is not built
	if got := ids(f.history(t, "r", 0)); fmt.Sprint(got) != fmt.Sprint([]int64{a, b}) {
		t.Fatalf("history = %v; want [%d %d]", got, a, b)
	}
}

func TestRedisDown(t *testing.T) {
	db := testenv.DB(t)
	f := withCache(t, db, testenv.Cache(t))
	a := f.post(t, "r", "u", "before")
	down, err := cache.Open("redis://127.0.0.1:1/0", "x:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	g := withCache(t, db, down)
	_, err = g.call("POST/chat", map[string]any{"room": "r", "text": "lost?"})
	if code(err) != 503 || !strings.Contains(err.Error(), "not sent") {
		t.Fatalf("POST /chat with Redis down = %v; want 503 saying it was not sent", err)
	}
	if got := ids(g.history(t, "r", 0)); fmt.Sprint(got) != fmt.Sprint([]int64{a}) {
		t.Fatalf("history from the database = %v; want [%d] (the refused message not stored)", got, a)
	}
}

func TestCheckText(t *testing.T) {
	for _, tc := range []struct {
		text string
		ok   bool
	}{{"hi", true}, {"a\r\nb", true}, {"\t", false}, {"\xff", false}, {"a\x1bb", false}, {"a\u0085b", false}} {
		err := chat.CheckText(tc.text)
		if (err == nil) != tc.ok {
			t.Errorf("CheckText(%q) = %v; want ok %v", tc.text, err, tc.ok)
		}
		var se *service.Error
		if err != nil && (!errors.As(err, &se) || se.Code != 400) {
			t.Errorf("CheckText(%q) = %v; want a 400", tc.text, err)
		}
	}
}

// A member's messages carry their username as "username" (asked of members
// once, then kept), live and in the history from the window and from the
// database; "user" stays the member's id. Without members, and for
// messages stored before names, there is no name, and they decode as
// before.
func TestNames(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.members.set(7, "kim")
	// A message stored before names existed.
	if _, err := f.db.ExecContext(ctx, `INSERT INTO chat_messages (room, sender, body, created) VALUES ('lobby', '9', 'old', 0)`); err != nil {
		t.Fatal(err)
	}
	res := f.postAs(t, 7, "lobby", "hello")
	if res["user"] != "7" || res["username"] != "kim" {
		t.Fatalf("POST /chat as member 7 = %v; want user 7, name kim", res)
	}
	f.postAs(t, 7, "lobby", "again")
	if f.members.calls != 1 {
		t.Fatalf("members asked %d times for one member's name; want 1 (kept)", f.members.calls)
	}
	f.members.down = true
	if res := f.postAs(t, 8, "lobby", "no name"); res["username"] != nil || res["user"] != "8" {
		t.Fatalf("POST /chat with members down = %v; want user 8 and no name", res)
	}
	f.post(t, "lobby", "guest-1", "open mode") // no token: no name
	want := []struct{ user, name, text string }{{"9", "", "old"}, {"7", "kim", "hello"}, {"7", "kim", "again"}, {"8", "", "no name"}, {"guest-1", "", "open mode"}}
	check := func(what string, msgs []chat.Message) {
		t.Helper()
		if len(msgs) != len(want) {
			t.Fatalf("%s: %d messages; want %d", what, len(msgs), len(want))
		}
		for i, w := range want {
			if m := msgs[i]; m.User != w.user || m.Name != w.name || m.Text != w.text {
				t.Fatalf("%s: message %d = %+v; want user %q name %q text %q", what, i, m, w.user, w.name, w.text)
			}
		}
	}
	check("window", f.history(t, "lobby", 50))
	f.flush(t)
	msgs := f.history(t, "lobby", 50) // rebuilt from the database
	check("rebuilt window", msgs)
	older, _ := f.call("GET/chat/history", map[string]any{"room": "lobby", "before": 1 << 40})
	check("database", older["results"].([]chat.Message))
	if b, _ := json.Marshal(msgs[0]); strings.Contains(string(b), `"username"`) {
		t.Fatalf("a message without a name encodes as %s; want no username field", b)
	}
	// An entry of the window written before names (no "username") decodes.
	var m chat.Message
	if err := json.Unmarshal([]byte(`{"id":3,"room":"lobby","user":"1","text":"hi","time":"2026-11-28T17:40:01.123Z"}`), &m); err != nil || m.Name != "" || m.User != "1" {
		t.Fatalf("an old message decodes as %+v, %v", m, err)
	}
}
