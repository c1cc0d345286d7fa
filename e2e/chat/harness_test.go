// Package chat_test holds the end-to-end tests of chat: real microshop
// processes (the built binary) on free loopback ports, two gates sharing a
// distributor and a Redis, and WebSocket clients on both.
package chat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/internal/testenv"
)

// binary is the microshop binary, built by TestMain.
var binary string

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

func TestMain(m *testing.M) { os.Exit(proctest.Run(m, &binary)) }

// proc is a process started by a test.
type proc = proctest.Proc

// start starts a process that is stopped when the test ends; the test then
// fails unless it exited cleanly on SIGTERM (or was killed on purpose), and
// on a data race or panic in its output.
func start(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	p := proctest.StartReady(t, name, path, args...)
	t.Cleanup(func() { proctest.StopAll(t, stopTimeout, p) })
	return p
}

// redisServer is the Redis of one test: the shared test Redis
// (MICROSHOP_TEST_REDIS, keys under a random prefix), else a redis-server
// child on a free port, else an embedded miniredis.
type redisServer struct {
	url    string
	prefix string
	shared bool
	srv    *proctest.Redis // a private one: a redis-server child or embedded
	port   int
	t      *testing.T
}

func newRedis(t *testing.T, private bool) *redisServer {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	r := &redisServer{prefix: testenv.RandomName("e2echat") + ":", t: t}
	if u := os.Getenv(testenv.EnvRedis); u != "" && !private {
		r.url, _ = testenv.RedisURL(t)
		r.shared = true
		t.Cleanup(func() { r.flush() })
		return r
	}
	r.port = proctest.FreePort(t)
	r.url = "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0"
	r.start()
	return r
}

// start starts the private Redis on its port (again, after kill).
func (r *redisServer) start() {
	r.t.Helper()
	r.srv = proctest.StartRedis(r.t, r.port, true)
}

// kill stops a private Redis at once, as a crash would.
func (r *redisServer) kill() {
	r.srv.Kill(r.t)
}

func (r *redisServer) client() *cache.Cache {
	c, err := cache.Open(r.url, r.prefix, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// flush is FLUSHALL on a private Redis, and deletes this test's keys only
// on the shared one.
func (r *redisServer) flush() {
	c := r.client()
	defer c.Close()
	ctx := context.Background()
	if !r.shared {
		if err := c.FlushAll(ctx).Err(); err != nil {
			r.t.Fatalf("FLUSHALL: %v", err)
		}
		return
	}
	if _, err := testenv.DeleteKeys(ctx, c.UniversalClient, r.prefix); err != nil {
		r.t.Fatalf("delete this test's keys: %v", err)
	}
}

// fleet is `microshop all` plus a second gate.
type fleet struct {
	t            *testing.T
	redis        *redisServer
	all, second  *proc
	gate1, gate2 string // http://127.0.0.1:PORT
}

// startFleet starts `microshop all` and a second gate process that share
// the distributor and Redis; extra flags go to both gates.
func startFleet(t *testing.T, r *redisServer, extra ...string) *fleet {
	t.Helper()
	f := &fleet{t: t, redis: r}
	p1, p0, p2 := proctest.FreePort(t), proctest.FreePort(t), proctest.FreePort(t)
	// Chat mechanics in the book's open mode; who a socket speaks as with
	// tokens is covered by gate.TestChatUser.
	common := append([]string{"--auth=off", "--redis", r.url, "--redis-prefix", r.prefix, "--request-timeout", "5s",
		"--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0"}, extra...)
	f.all = start(t, "all", binary, append([]string{"all", "--random-ports",
		"--addr", "127.0.0.1:" + strconv.Itoa(p1), "--distributor", "127.0.0.1:" + strconv.Itoa(p0),
		"--db", testenv.DSN(t)}, common...)...)
	f.gate1 = "http://127.0.0.1:" + strconv.Itoa(p1)
	// The distributor's address, from the ready file of microshop all.
	dist := f.all.WaitReady(t, startTimeout).Components["distributor"]["packet"]
	deadline := time.Now().Add(startTimeout)
	f.second = start(t, "gate2", binary, append([]string{"gate", "--addr", "127.0.0.1:" + strconv.Itoa(p2),
		"--distributor", dist, "--metrics-addr", "127.0.0.1:0"}, common...)...) // its /metrics: TestSlowClient
	f.gate2 = "http://127.0.0.1:" + strconv.Itoa(p2)
	for _, g := range []struct {
		url string
		p   *proc
	}{{f.gate1, f.all}, {f.gate2, f.second}} {
		for {
			if status, _ := f.get(g.url + "/chat/history?room=ready"); status == 200 {
				break
			}
			f.checkAlive(g.p, deadline)
			time.Sleep(50 * time.Millisecond)
		}
	}
	return f
}

func (f *fleet) checkAlive(p *proc, deadline time.Time) {
	f.t.Helper()
	if p.Exited() {
		f.t.Fatalf("%s exited: %v\n%s", p.Name, p.Err(), p.Logs())
	}
	if time.Now().After(deadline) {
		f.t.Fatalf("%s not ready after %v", p.Name, startTimeout)
	}
}

func (f *fleet) get(url string) (int, []byte) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// post sends POST /chat to gate and returns the status and body.
func (f *fleet) post(gate, room, text string) (int, []byte) {
	body, _ := json.Marshal(map[string]string{"room": room, "text": text, "userid": "poster"})
	resp, err := http.Post(gate+"/chat", "application/json", bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *fleet) mustPost(gate, room, text string) {
	f.t.Helper()
	if status, body := f.post(gate, room, text); status != 200 {
		f.t.Fatalf("POST /chat %s: %d %s", room, status, body)
	}
}

// history returns GET /chat/history from gate.
func (f *fleet) history(gate, room string, limit int) []msg {
	f.t.Helper()
	url := gate + "/chat/history?room=" + room
	if limit > 0 {
		url += "&limit=" + strconv.Itoa(limit)
	}
	status, body := f.get(url)
	if status != 200 {
		f.t.Fatalf("GET /chat/history: %d %s", status, body)
	}
	var res struct{ Results []msg }
	if err := json.Unmarshal(body, &res); err != nil {
		f.t.Fatal(err)
	}
	return res.Results
}

// msg is a frame a chat client receives.
type msg struct {
	ID    int64  `json:"id"`
	Room  string `json:"room"`
	User  string `json:"user"`
	Text  string `json:"text"`
	Time  string `json:"time"`
	Error string `json:"error"`
}

// client is a WebSocket chat client whose frames are collected as they
// come.
type client struct {
	t      *testing.T
	name   string
	conn   *websocket.Conn
	frames chan msg
	closed chan error // gets the read error that ended the client
}

func dial(t *testing.T, gate, room, user string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.Replace(gate, "http://", "ws://", 1) + "/chat?room=" + room
	if user != "" {
		url += "&userid=" + user
	}
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c := &client{t: t, name: user, conn: conn, frames: make(chan msg, 10000), closed: make(chan error, 1)}
	go func() {
		for {
			_, data, err := conn.Read(context.Background())
			if err != nil {
				c.closed <- err
				close(c.frames)
				return
			}
			var m msg
			if err := json.Unmarshal(data, &m); err != nil {
				m.Error = "undecodable frame: " + string(data)
			}
			c.frames <- m
		}
	}()
	t.Cleanup(func() { conn.CloseNow() })
	return c
}

// dialRaw connects a client that reads nothing unless the test does.
func dialRaw(t *testing.T, gate, room, user string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.Replace(gate, "http://", "ws://", 1) + "/chat?room=" + room + "&userid=" + user
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func (c *client) send(text string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]string{"text": text})
	if err := c.conn.Write(context.Background(), websocket.MessageText, b); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

// next returns the next frame, failing after timeout.
func (c *client) next(timeout time.Duration) msg {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("%s: closed: %v", c.name, <-c.closed)
		}
		return m
	case <-time.After(timeout):
		c.t.Fatalf("%s: no frame within %v", c.name, timeout)
	}
	return msg{}
}

// until collects frames until one whose text is end.
func (c *client) until(end string) []msg {
	c.t.Helper()
	var got []msg
	for {
		m := c.next(15 * time.Second)
		if m.Error != "" {
			c.t.Fatalf("%s: error frame %q", c.name, m.Error)
		}
		got = append(got, m)
		if m.Text == end {
			return got
		}
	}
}
