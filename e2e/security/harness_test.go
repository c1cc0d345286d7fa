// Package security_test checks microshop's security end to end: real
// processes of the built binary (distributor, services, gates) on free
// loopback ports, sharing a database and Redis (real ones when
// MICROSHOP_TEST_MYSQL / MICROSHOP_TEST_REDIS are set), driven over HTTP.
package security_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/proctest"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

// binary is the microshop binary, built by TestMain.
var binary string

const (
	startTimeout = 20 * time.Second
	stopTimeout  = 5 * time.Second
)

func TestMain(m *testing.M) { os.Exit(proctest.Run(m, &binary)) }

// proc is a process started by a test.
type proc = proctest.Proc

// fleet is one test's processes, database and Redis.
type fleet struct {
	t        *testing.T
	db       string
	redis    string
	prefix   string
	distAddr string
	dist     *proc
	gates    []string // http://host:port of every gate
	client   *http.Client

	mu    sync.Mutex
	procs []*proc
}

// adminKey is the admin key of every gate in these tests.
const adminKey = "test-admin-key-0123456789"

// newFleet prepares a fleet with a migrated database and Redis redisURL
// (the test Redis when empty), and starts its distributor.
func newFleet(t *testing.T, redisURL string) *fleet {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	real := false
	if redisURL == "" {
		redisURL, real = testenv.RedisURL(t)
	}
	f := &fleet{t: t, db: testenv.DSN(t), redis: redisURL, prefix: testenv.RandomName("sec") + ":",
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	db, err := store.Open(context.Background(), f.db)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	db.Close()
	if real {
		t.Cleanup(f.dropKeys)
	}
	t.Cleanup(f.stop)
	f.distAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	f.dist = f.start("distributor", "distributor", "--addr", f.distAddr, "--fleet-key", fleetKey, "--metrics-addr", "127.0.0.1:0")
	f.waitDial(f.distAddr, f.dist)
	return f
}

func (f *fleet) start(name string, args ...string) *proc {
	f.t.Helper()
	p := proctest.StartReady(f.t, name, binary, args...)
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p
}

// service starts a service process.
func (f *fleet) service(name string, extra ...string) *proc {
	f.t.Helper()
	args := []string{name, "--addr", "127.0.0.1:0", "--distributor", f.distAddr,
		"--db", f.db, "--redis", f.redis, "--redis-prefix", f.prefix, "--fleet-key", fleetKey}
	if name == "purchases" || name == "reactions" || name == "ratings" { // they call others
		args = append(args, "--request-timeout", "5s")
	}
	return f.start(name, append(args, extra...)...)
}

// gate starts a gate that trusts loopback proxies (so each test client can
// pose as its own address with X-Forwarded-For) and returns its URL.
func (f *fleet) gate(extra ...string) string {
	f.t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(f.t))
	p := f.start("gate", append([]string{"gate", "--addr", addr, "--distributor", f.distAddr,
		"--redis", f.redis, "--redis-prefix", f.prefix, "--request-timeout", "5s",
		"--admin-key", adminKey, "--trusted-proxies", "127.0.0.0/8", "--fleet-key", fleetKey}, extra...)...)
	f.waitDial(addr, p)
	u := "http://" + addr
	f.gates = append(f.gates, u)
	return u
}

func (f *fleet) waitDial(addr string, p *proc) {
	f.t.Helper()
	proctest.WaitDial(f.t, addr, p, startTimeout)
}

// waitRoutes waits until every gate routes each "METHOD /path" (an answer
// other than 404 unknown route or 503), asking as client address
// 192.0.2.254 so that the test's own clients keep their full limits.
func (f *fleet) waitRoutes(routes ...string) {
	f.t.Helper()
	for _, g := range f.gates {
		for _, rt := range routes {
			method, path, _ := strings.Cut(rt, " ")
			deadline := time.Now().Add(startTimeout)
			for {
				a := f.do(g, method, path, "", "192.0.2.254", nil)
				if a.Status != 503 && !(a.Status == 404 && strings.Contains(a.Msg, "unknown route")) {
					break
				}
				if time.Now().After(deadline) {
					f.t.Fatalf("%s %s%s: still %v after %v", method, g, path, a, startTimeout)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

func (f *fleet) stop() {
	f.mu.Lock()
	procs := f.procs
	f.mu.Unlock()
	proctest.StopAll(f.t, stopTimeout, procs...)
}

func (f *fleet) dropKeys() {
	c, err := cache.Open(f.redis, f.prefix, nil)
	if err != nil {
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	testenv.DeleteKeys(ctx, c.UniversalClient, f.prefix)
}

// answer is an HTTP answer.
type answer struct {
	Status int
	Header http.Header
	Body   map[string]any
	Msg    string
	raw    string
}

func (a *answer) String() string { return fmt.Sprintf("HTTP %d %s", a.Status, a.raw) }

// do sends a request to gate g with a JSON body (nil: none), the bearer
// token (""= none), as client address client ("" = the loopback peer).
func (f *fleet) do(g, method, path, token, client string, body map[string]any) *answer {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, g+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if client != "" {
		req.Header.Set("X-Forwarded-For", client)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := &answer{Status: resp.StatusCode, Header: resp.Header, raw: string(raw)}
	json.Unmarshal(raw, &a.Body)
	a.Msg, _ = a.Body["errormessage"].(string)
	return a
}

// want fails unless a has the status.
func want(t *testing.T, what string, a *answer, status int) *answer {
	t.Helper()
	if a.Status != status {
		t.Fatalf("%s: %v; want HTTP %d", what, a, status)
	}
	if code, _ := a.Body["errorcode"].(float64); (status == 200) != (code == 0) {
		t.Fatalf("%s: %v; errorcode does not match the status", what, a)
	}
	return a
}
