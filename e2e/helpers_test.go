package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

// binary is the microshop binary built by TestMain.
var binary string

// Timeouts of the harness. None of them is a performance assertion: they only
// bound how long a broken system can make a test hang.
const (
	startTimeout = 20 * time.Second // a process or the fleet becoming ready
	stopTimeout  = 5 * time.Second  // SIGTERM → exit, before SIGKILL
	pollEvery    = 20 * time.Millisecond
)

func TestMain(m *testing.M) { os.Exit(proctest.Run(m, &binary)) }

// proc is one microshop process (or a helper server) started by a test.
type proc = proctest.Proc

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
}

// fleet is one test's set of processes and the resources they share.
type fleet struct {
	t         *testing.T
	db        string // DSN shared by the services
	redis     string // Redis URL shared by the services
	realDB    bool   // db is a MySQL database
	realRedis bool   // redis is the shared real test Redis: never FLUSHALL it
	prefix    string // this test's Redis key prefix
	distAddr  string // where the distributor listens (or a fake one)
	gateURL   string // http://127.0.0.1:PORT of the gate, once started

	client    *http.Client
	transport *http.Transport

	// common is appended to every process's arguments (set it before the
	// first start).
	common []string

	mu    sync.Mutex
	procs []*proc
}

// newFleet prepares a fleet for t: a fresh database, Redis (redisURL, or the
// test Redis when empty) and a random key prefix. Every process started
// through it is stopped, concurrently, when the test ends; each must then
// exit cleanly on SIGTERM.
//
// The database is migrated before any process starts (see
// TestConcurrentStartFreshDatabase for processes racing to migrate it).
func newFleet(t *testing.T, redisURL string) *fleet {
	t.Helper()
	f := newBareFleet(t, redisURL)
	db, err := store.Open(context.Background(), f.db)
	if err != nil {
		t.Fatalf("migrate %s: %v", store.Redact(f.db), err)
	}
	db.Close()
	return f
}

// newBareFleet is newFleet with a database that is created but empty.
func newBareFleet(t *testing.T, redisURL string) *fleet {
	t.Helper()
	skipShort(t)
	real := false
	if redisURL == "" {
		redisURL, real = testenv.RedisURL(t)
	}
	f := &fleet{t: t, db: testenv.DSN(t), redis: redisURL, realRedis: real, prefix: testenv.RandomName("e2e") + ":"}
	f.realDB = strings.HasPrefix(f.db, "mysql:")
	f.client, f.transport = newHTTPClient()
	t.Cleanup(f.dropKeys) // runs after stop: LIFO
	t.Cleanup(f.stop)
	return f
}

func (f *fleet) add(p *proc) *proc {
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p
}

// start runs `microshop args...` as part of the fleet, with a --ready-file
// for ready and listenAddr.
func (f *fleet) start(name string, args ...string) *proc {
	f.t.Helper()
	return f.add(proctest.StartReady(f.t, name, binary, append(args, f.common...)...))
}

// ready waits until p has written its ready file and returns it.
func (f *fleet) ready(p *proc) proctest.Ready {
	f.t.Helper()
	return p.WaitReady(f.t, startTimeout)
}

func (f *fleet) stop() {
	t := f.t
	// A polite client: an open keep-alive connection that never carried a
	// request holds up an HTTP server's graceful shutdown for 5 s.
	f.transport.CloseIdleConnections()
	f.mu.Lock()
	procs := append([]*proc(nil), f.procs...)
	f.mu.Unlock()
	proctest.StopAll(t, stopTimeout, procs...)
}

// dropKeys deletes this test's keys from the shared real Redis.
func (f *fleet) dropKeys() {
	if !f.realRedis {
		return // an embedded or private Redis goes away with the test
	}
	c, err := cache.Open(f.redis, f.prefix, nil)
	if err != nil {
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	testenv.DeleteKeys(ctx, c.UniversalClient, f.prefix)
}

// checkAlive fails the test at once, with its output, when one of the
// fleet's processes has died without the test killing it.
func (f *fleet) checkAlive() {
	f.t.Helper()
	f.mu.Lock()
	procs := append([]*proc(nil), f.procs...)
	f.mu.Unlock()
	for _, p := range procs {
		if !p.Killed() && p.Exited() {
			f.t.Fatalf("%s exited unexpectedly (%v); output:\n%s", p.Name, p.Err(), p.LogTail(16<<10))
		}
	}
}

// startDistributor starts the distributor on f.distAddr (a free port when
// empty, so that a restart reuses the address) and waits until it accepts.
func (f *fleet) startDistributor() *proc {
	f.t.Helper()
	if f.distAddr == "" {
		f.distAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(f.t))
	}
	p := f.start("distributor", "distributor", "--addr", f.distAddr, "--log-level", "debug", "--fleet-key", "none")
	f.waitDial(f.distAddr, p)
	return p
}

// startGate starts the gate on a free port and waits until it accepts. It
// serves /metrics and /readyz on an ops listener of its own (waitGateConnected
// reads its peers there).
// These tests exercise the book's open API, so the gate runs --auth=off
// without rate limits; e2e/security tests authentication and limits.
func (f *fleet) startGate(extra ...string) *proc {
	f.t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(f.t))
	args := append([]string{"gate", "--addr", addr, "--distributor", f.distAddr,
		"--log-level", "debug", "--metrics-addr", "127.0.0.1:0", "--request-timeout", "5s", "--max-body", strconv.Itoa(maxBody),
		"--auth=off", "--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0"}, extra...)
	p := f.start("gate", args...)
	f.gateURL = "http://" + addr
	f.waitDial(addr, p)
	return p
}

// callsOthers reports whether service name calls other services, and so
// takes --request-timeout (each command takes only the flags it uses).
func callsOthers(name string) bool {
	return name == "purchases" || name == "reactions" || name == "ratings"
}

// maxBody is the gate's --max-body in these tests.
const maxBody = 64 << 10

// startService starts service name (goods, members, purchases, …) on a free
// port of its own choosing; it registers the port with the distributor. It
// runs with --fleet-key=none, believing the identities it is sent, as the
// book's services do: these tests speak the book's open API through a gate
// with --auth=off (e2e/security runs a keyed fleet).
func (f *fleet) startService(name string, extra ...string) *proc {
	f.t.Helper()
	args := []string{name, "--addr", "127.0.0.1:0", "--distributor", f.distAddr,
		"--db", f.db, "--redis", f.redis, "--redis-prefix", f.prefix,
		"--log-level", "info", "--fleet-key", "none"}
	if callsOthers(name) {
		args = append(args, "--request-timeout", "5s")
	}
	args = append(args, extra...)
	f.mu.Lock()
	n := 0
	for _, p := range f.procs {
		if p.Args[0] == name {
			n++
		}
	}
	f.mu.Unlock()
	label := name
	if n > 0 {
		label = fmt.Sprintf("%s#%d", name, n+1)
	}
	return f.start(label, args...)
}

// waitDial polls addr until it accepts a TCP connection.
func (f *fleet) waitDial(addr string, p *proc) {
	f.t.Helper()
	proctest.WaitDial(f.t, addr, p, startTimeout)
}

// node is one entry of the distributor's list.
type node struct {
	Name string   `json:"name"`
	Host string   `json:"host"`
	Port int      `json:"port"`
	URLs []string `json:"urls"`
}

// addr is the node's host:port with an IPv4-mapped host unmapped.
func (n node) addr() string {
	host := n.Host
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return net.JoinHostPort(host, strconv.Itoa(n.Port))
}

func countNames(nodes []node) map[string]int {
	m := map[string]int{}
	for _, n := range nodes {
		m[n.Name]++
	}
	return m
}

// waitNodes watches the distributor's list (as a raw, unregistered
// connection, which the distributor pushes the list to) until it holds
// exactly want[name] processes of every name in want, and returns it.
func (f *fleet) waitNodes(want map[string]int) []node {
	f.t.Helper()
	nodes, err := watchList(f.distAddr, startTimeout, f.checkAlive, func(nodes []node) bool {
		got := countNames(nodes)
		for name, n := range want {
			if got[name] != n {
				return false
			}
		}
		return true
	})
	if err != nil {
		f.checkAlive()
		f.t.Fatalf("distributor list never held %v: %v (last list: %+v)", want, err, nodes)
	}
	return nodes
}

// watchList reads the lists the distributor at addr pushes until ok accepts
// one. It returns the last list seen. It calls alive between reads.
func watchList(addr string, timeout time.Duration, alive func(), ok func([]node) bool) ([]node, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	r := newPacketReader(c)
	var last []node
	for {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		p, err := r.next()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && time.Now().Before(deadline) {
			alive()
			continue
		}
		if err != nil {
			return last, err
		}
		if nodes, isList := decodeList(p); isList {
			last = nodes
			if ok(nodes) {
				return nodes, nil
			}
		}
	}
}

// decodeList parses a list push: any packet whose params is an array.
func decodeList(p []byte) ([]node, bool) {
	var m struct {
		Params json.RawMessage `json:"params"`
	}
	if json.Unmarshal(p, &m) != nil || len(m.Params) == 0 || m.Params[0] != '[' {
		return nil, false
	}
	var nodes []node
	if json.Unmarshal(m.Params, &nodes) != nil {
		return nil, false
	}
	return nodes, true
}

// nodesNamed returns the nodes called name.
func nodesNamed(nodes []node, name string) []node {
	var out []node
	for _, n := range nodes {
		if n.Name == name {
			out = append(out, n)
		}
	}
	return out
}

// waitGateConnected waits until the gate's GET /readyz (on its ops
// listener) lists every one of addrs as an up peer.
func (f *fleet) waitGateConnected(gate *proc, addrs ...string) {
	f.t.Helper()
	ops := f.opsAddr(gate)
	deadline := time.Now().Add(startTimeout)
	var last []proctest.Peer
	for {
		missing := ""
		if r, ok := readyz(ops); ok {
			last = r.Peers
			for _, a := range addrs {
				if !slices.ContainsFunc(r.Peers, func(p proctest.Peer) bool { return p.Addr == a && p.Up }) {
					missing = a
					break
				}
			}
		} else {
			missing = addrs[0]
		}
		if missing == "" {
			return
		}
		f.checkAlive()
		if time.Now().After(deadline) {
			f.t.Fatalf("the gate's /readyz never listed %s up (all of %v) in %v; its peers: %+v", missing, addrs, startTimeout, last)
		}
		time.Sleep(pollEvery)
	}
}

// opsAddr returns the address of p's ops listener (--metrics-addr or
// --debug-addr), from its ready file.
func (f *fleet) opsAddr(p *proc) string {
	f.t.Helper()
	ops := f.ready(p).Components["ops"]
	addr := cmp.Or(ops["metrics"], ops["debug"])
	if addr == "" {
		f.t.Fatalf("%s: no ops listener in its ready file (run it with --metrics-addr)", p.Name)
	}
	return addr
}

// readyz reads GET /readyz on ops; ok is false until it answers 200.
func readyz(ops string) (r proctest.Ready, ok bool) {
	resp, err := http.Get("http://" + ops + "/readyz")
	if err != nil {
		return r, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&r) != nil {
		return r, false
	}
	return r, true
}

// listenAddr returns the address service p listens on, from its ready file.
func (f *fleet) listenAddr(p *proc) string {
	f.t.Helper()
	addr := f.ready(p).Components[p.Args[0]]["packet"]
	if addr == "" {
		f.t.Fatalf("%s: no packet listener in its ready file", p.Name)
	}
	return addr
}

// ─── HTTP ────────────────────────────────────────────────────────────────

// newHTTPClient returns the HTTP client of one fleet.
func newHTTPClient() (*http.Client, *http.Transport) {
	tr := &http.Transport{
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}
	return &http.Client{Timeout: 15 * time.Second, Transport: tr}, tr
}

// answer is one HTTP answer of the gate, with the book's fields decoded.
type answer struct {
	Status      int
	ContentType string
	Header      http.Header
	Body        []byte

	ErrorCode    *int            `json:"errorcode"`
	ErrorMessage *string         `json:"errormessage"`
	ID           *int64          `json:"id"`
	UserID       *int64          `json:"userid"`
	Results      json.RawMessage `json:"results"`
	decodeErr    error
}

func (a *answer) String() string { return fmt.Sprintf("HTTP %d %s", a.Status, a.Body) }

// request sends one HTTP request to the gate. It is safe to call from any
// goroutine; it does not touch f.t.
func (f *fleet) request(method, path, contentType string, body []byte) (*answer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.gateURL+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	a := &answer{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Header: resp.Header, Body: b}
	a.decodeErr = json.Unmarshal(b, a)
	return a, nil
}

// send sends a request and checks what every answer must be: JSON, with an
// errorcode that is 0 on 200 and the HTTP status otherwise (the book's
// errorcode 1 of a Node peer is checked by its own test), and an
// errormessage.
func (f *fleet) send(t testing.TB, method, path, contentType string, body []byte) *answer {
	t.Helper()
	a, err := f.request(method, path, contentType, body)
	if err != nil {
		f.checkAlive()
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if a.decodeErr != nil {
		t.Errorf("%s %s: answer is not a JSON object (%v): %s", method, path, a.decodeErr, a)
	}
	if !strings.HasPrefix(a.ContentType, "application/json") {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, a.ContentType)
	}
	return a
}

func (f *fleet) sendJSON(t testing.TB, method, path string, v any) *answer {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return f.send(t, method, path, "application/json", b)
}

func (f *fleet) sendForm(t testing.TB, method, path string, v url.Values) *answer {
	t.Helper()
	return f.send(t, method, path, "application/x-www-form-urlencoded", []byte(v.Encode()))
}

func (f *fleet) get(t testing.TB, path string) *answer {
	t.Helper()
	return f.send(t, "GET", path, "", nil)
}

// expect checks a's status and the book's fields that go with it.
func expect(t testing.TB, what string, a *answer, status int) {
	t.Helper()
	if a.Status != status {
		t.Fatalf("%s: got %s, want HTTP %d", what, a, status)
	}
	wantCode := 0
	if status != http.StatusOK {
		wantCode = status
	}
	if a.ErrorCode == nil || *a.ErrorCode != wantCode {
		t.Errorf("%s: errorcode %v, want %d: %s", what, deref(a.ErrorCode), wantCode, a)
	}
	if a.ErrorMessage == nil || (status != http.StatusOK && *a.ErrorMessage == "") {
		t.Errorf("%s: missing errormessage: %s", what, a)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// pollStatus polls GET path through the gate until it answers status, and
// returns that answer; it fails the test after timeout.
func (f *fleet) pollStatus(path string, status int, timeout time.Duration) *answer {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		a, err := f.request("GET", path, "", nil)
		if err == nil && a.Status == status {
			return a
		}
		if err != nil {
			last = err.Error()
		} else {
			last = a.String()
		}
		f.checkAlive()
		if time.Now().After(deadline) {
			f.t.Fatalf("GET %s never answered %d within %v; last: %s", path, status, timeout, last)
		}
		time.Sleep(pollEvery)
	}
}

// good is a good as the API answers it.
type good struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Category    string `json:"category"`
	Price       int64  `json:"price"`
	Description string `json:"description"`
}

// purchase is a purchase as GET /purchases answers it.
type purchase struct {
	ID      int64  `json:"id"`
	GoodsID int64  `json:"goodsid"`
	Date    string `json:"date"`
}

// results decodes a's results into a slice of T.
func results[T any](t testing.TB, what string, a *answer) []T {
	t.Helper()
	if len(a.Results) == 0 || a.Results[0] != '[' {
		t.Fatalf("%s: results is not an array: %s", what, a)
	}
	var out []T
	if err := json.Unmarshal(a.Results, &out); err != nil {
		t.Fatalf("%s: results: %v: %s", what, err, a)
	}
	return out
}

// addGood creates g through the gate (JSON body) and returns its id.
func (f *fleet) addGood(t testing.TB, g good) int64 {
	t.Helper()
	a := f.sendJSON(t, "POST", "/goods", map[string]any{"name": g.Name, "category": g.Category, "price": g.Price, "description": g.Description})
	expect(t, "POST /goods", a, http.StatusOK)
	if a.ID == nil || *a.ID <= 0 {
		t.Fatalf("POST /goods: no positive id: %s", a)
	}
	return *a.ID
}

// getGood reads good id through the gate and checks it is the only result.
func (f *fleet) getGood(t testing.TB, id int64) good {
	t.Helper()
	a := f.get(t, "/goods?id="+strconv.FormatInt(id, 10))
	expect(t, "GET /goods?id", a, http.StatusOK)
	gs := results[good](t, "GET /goods?id", a)
	if len(gs) != 1 || gs[0].ID != id {
		t.Fatalf("GET /goods?id=%d: want exactly that good, got %s", id, a)
	}
	return gs[0]
}

// addMember registers a member and returns its userid.
func (f *fleet) addMember(t testing.TB, username, password string) int64 {
	t.Helper()
	a := f.sendJSON(t, "POST", "/members", map[string]any{"username": username, "password": password})
	expect(t, "POST /members", a, http.StatusOK)
	if a.UserID == nil || *a.UserID <= 0 {
		t.Fatalf("POST /members: no positive userid: %s", a)
	}
	return *a.UserID
}

// buy posts a purchase and returns the answer.
func (f *fleet) buy(t testing.TB, userid, goodsid int64) *answer {
	t.Helper()
	return f.sendJSON(t, "POST", "/purchases", map[string]any{"userid": userid, "goodsid": goodsid})
}

// purchases lists userid's purchases.
func (f *fleet) purchases(t testing.TB, userid int64) []purchase {
	t.Helper()
	a := f.get(t, "/purchases?userid="+strconv.FormatInt(userid, 10))
	expect(t, "GET /purchases", a, http.StatusOK)
	return results[purchase](t, "GET /purchases", a)
}

// ─── Redis ───────────────────────────────────────────────────────────────

// redisClient returns a plain client of the fleet's Redis (no prefix): a
// single server's or a cluster's.
func (f *fleet) redisClient() redis.UniversalClient {
	f.t.Helper()
	c, err := cache.Open(f.redis, "", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c.UniversalClient
}

// goodsKey is the Redis key of good id's cache entry.
func (f *fleet) goodsKey(id int64) string {
	return f.prefix + "goods:{" + strconv.FormatInt(id, 10) + "}"
}

// controlledRedis returns a Redis this test alone uses, so that it may stop
// it (stop may be called more than once). With real servers (the test Redis
// is real) and a redis-server binary on the PATH it is a real redis-server
// child process; otherwise an embedded one.
func controlledRedis(t *testing.T) (url string, stop func()) {
	t.Helper()
	skipShort(t)
	r := proctest.StartRedis(t, 0, os.Getenv(testenv.EnvRedis) != "")
	return r.URL, func() { r.Kill(t) }
}

// ─── raw packets ─────────────────────────────────────────────────────────

// sep is the packet separator ¶ (C2 B6). The tests split packets with their
// own reader rather than the packet package, so that they check the code
// under test instead of trusting it.
var sep = []byte("\xc2\xb6")

type packetReader struct {
	r   io.Reader
	buf []byte
	tmp []byte
}

func newPacketReader(r io.Reader) *packetReader {
	return &packetReader{r: r, tmp: make([]byte, 32<<10)}
}

// next returns the next packet without its separator.
func (p *packetReader) next() ([]byte, error) {
	for {
		if i := bytes.Index(p.buf, sep); i >= 0 {
			pkt := bytes.Clone(p.buf[:i])
			p.buf = p.buf[i+len(sep):]
			return pkt, nil
		}
		n, err := p.r.Read(p.tmp)
		p.buf = append(p.buf, p.tmp[:n]...)
		if err != nil {
			if n > 0 {
				continue
			}
			if len(p.buf) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// rawPeer is a raw TCP connection speaking packets, as a Node peer does.
type rawPeer struct {
	net.Conn
	r *packetReader
}

func dialRaw(t testing.TB, addr string) *rawPeer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{Conn: c, r: newPacketReader(c)}
}

// write sends s exactly as given.
func (p *rawPeer) write(t testing.TB, s string) {
	t.Helper()
	p.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(p.Conn, s); err != nil {
		t.Fatalf("write to %s: %v", p.RemoteAddr(), err)
	}
}

// read returns the next packet, failing the test after timeout.
func (p *rawPeer) read(t testing.TB, timeout time.Duration) []byte {
	t.Helper()
	p.SetReadDeadline(time.Now().Add(timeout))
	b, err := p.r.next()
	if err != nil {
		t.Fatalf("read a packet from %s: %v", p.RemoteAddr(), err)
	}
	return b
}

// response is a service's answer packet.
type response struct {
	Key          json.RawMessage `json:"key"`
	ErrorCode    *int            `json:"errorcode"`
	ErrorMessage *string         `json:"errormessage"`
	ID           *int64          `json:"id"`
	Results      json.RawMessage `json:"results"`
	raw          []byte
}

// readResponses reads n answer packets and returns them by key.
func (p *rawPeer) readResponses(t testing.TB, n int) map[string]response {
	t.Helper()
	out := map[string]response{}
	for range n {
		b := p.read(t, 10*time.Second)
		var r response
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("answer is not JSON (%v): %q", err, b)
		}
		r.raw = b
		out[string(r.Key)] = r
	}
	return out
}
