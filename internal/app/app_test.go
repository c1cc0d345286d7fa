package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

// fleet runs `microshop all` in this process on free ports and returns the
// gate's base URL once it answers.
func fleet(t testing.TB, extra ...string) string {
	t.Helper()
	return "http://" + fleetReady(t, extra...).Components["gate"]["http"]
}

// fleetReady runs `microshop all` like fleet and returns its ready file.
func fleetReady(t testing.TB, extra ...string) readyState {
	t.Helper()
	addr := "127.0.0.1:0"
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	redisURL, _ := testenv.RedisURL(t)
	args := append([]string{"all", "--addr", addr, "--random-ports", "--log-level", "error", "--auth=off", "--rate-limit", "0", "--rate-limit-strict", "0",
		"--db", testenv.DSN(t), "--redis", redisURL, "--redis-prefix", testenv.RandomName("mstest:") + ":"}, extra...)
	if strings.Contains(strings.Join(extra, " "), "--db") {
		args = append([]string{"all", "--addr", addr, "--random-ports", "--log-level", "error", "--auth=off", "--rate-limit", "0", "--rate-limit-strict", "0"}, extra...)
	}
	args = append(args, "--ready-file", readyFile)
	ctx, cancel := context.WithCancel(context.Background())
	var logs testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, func(string) string { return "" }, io.Discard, &logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v; logs:\n%s", err, logs.String())
		}
	})
	return waitReadyFile(t, readyFile, done, &logs)
}

// waitReadyFile waits until Run writes its ready file and returns what it
// says; it fails if Run returns first.
func waitReadyFile(t testing.TB, path string, done chan error, logs *testenv.SyncBuffer) readyState {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			var st readyState
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatalf("ready file %s: %v", b, err)
			}
			if !st.Ready || st.Components["gate"]["http"] == "" {
				t.Fatalf("ready file without the gate's address: %s", b)
			}
			return st
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Run returned %v before it was ready; logs:\n%s", err, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file after 20s; logs:\n%s", logs.String())
		}
	}
}

func call(t testing.TB, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v", method, url, err)
	}
	return resp.StatusCode, m
}

func TestAllServesTheBookFlow(t *testing.T) {
	base := fleet(t)
	if code, m := call(t, "POST", base+"/goods", `{"name":"tea","category":"drink","price":100,"description":"d"}`); code != 200 || m["id"] != 1.0 {
		t.Fatalf("POST /goods = %d %v; want 200 with id 1", code, m)
	}
	if code, m := call(t, "POST", base+"/members", `{"username":"kim","password":"secret123"}`); code != 200 || m["userid"] != 1.0 {
		t.Fatalf("POST /members = %d %v; want 200 with userid 1", code, m)
	}
	if code, m := call(t, "POST", base+"/purchases", `{"userid":1,"goodsid":1}`); code != 200 || m["id"] != 1.0 {
		t.Fatalf("POST /purchases = %d %v; want 200 with id 1", code, m)
	}
	if code, m := call(t, "POST", base+"/purchases", `{"userid":1,"goodsid":2}`); code != 404 || m["errorcode"] != 404.0 {
		t.Fatalf("POST /purchases of unknown good = %d %v; want 404", code, m)
	}
	for _, path := range []string{"/reactions?goodsid=1", "/ratings?goodsid=1", "/stores?longitude=0&latitude=0"} {
		if code, m := call(t, "GET", base+path, ""); code != 200 || m["errorcode"] != 0.0 {
			t.Errorf("GET %s = %d %v; want 200", path, code, m)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"nope"}, nil, `unknown command "nope"`},
		{[]string{"gate", "--max-body", "-1"}, nil, "--max-body"},
		{[]string{"gate", "--request-timeout", "soon"}, nil, "request-timeout"},
		{[]string{"gate"}, map[string]string{"MICROSHOP_REQUEST_TIMEOUT": "soon"}, "MICROSHOP_REQUEST_TIMEOUT"},
		{[]string{"all", "--log-level", "loud"}, nil, "--log-level"},
		{[]string{"goods", "--db", "postgres://x", "--fleet-key", "none"}, nil, "unsupported database"},
		{[]string{"goods"}, nil, "--fleet-key is required"},
		{[]string{"chat", "--fleet-key", "short"}, nil, "--fleet-key: want at least 16"},
		{[]string{"gate"}, nil, "--fleet-key is required"},
		{[]string{"gate"}, map[string]string{"MICROSHOP_FLEET_KEY": ""}, "--fleet-key is required"},
		{[]string{"gate", "extra"}, nil, "unexpected argument"},
	} {
		getenv := func(k string) string { return tc.env[k] }
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := Run(ctx, tc.args, getenv, io.Discard, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%q) = %v; want an error mentioning %q", tc.args, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"goods", "--help"}, func(string) string { return "" }, &out, io.Discard); !IsHelp(err) || !strings.Contains(out.String(), "MICROSHOP_DB") {
		t.Errorf("goods --help = %v, %q; want help listing MICROSHOP_DB", err, out.String())
	}
}

func TestListenFailureIsClear(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "x.db")
	err = Run(context.Background(), []string{"all", "--addr", ln.Addr().String(), "--random-ports", "--db", dsn, "--log-level", "error"},
		func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("all on a taken port = %v; want 'address already in use'", err)
	}
}

// BenchmarkGateGoodsRedis measures one request through the whole path:
// HTTP → gate → packet → goods service (its near cache, or Redis) → back,
// with auth off and unsigned requests (the book's open fleet), and with auth
// on and a fleet key (microshop's defaults, as scripts/bench.sh runs it): an
// anonymous request, signed by the gate and verified by goods.
func BenchmarkGateGoodsRedis(b *testing.B) {
	b.Run("open", func(b *testing.B) {
		base := fleet(b)
		call(b, "POST", base+"/goods", `{"name":"tea","price":100}`)
		benchmarkGetGood(b, base)
	})
	b.Run("keyed", func(b *testing.B) {
		const admin = "bench-admin-key-0123456789abcdef0123456789"
		base := fleet(b, "--auth=on", "--fleet-key", "bench-fleet-key-0123456789abcdef0123456789", "--admin-key", admin)
		req, _ := http.NewRequest("POST", base+"/goods", strings.NewReader(`{"name":"tea","price":100}`))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("POST /goods as the admin: status %d", resp.StatusCode)
		}
		benchmarkGetGood(b, base)
	})
}

// benchmarkGetGood runs GET /goods?id=1 against base in parallel.
func benchmarkGetGood(b *testing.B, base string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(base + "/goods?id=1")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// microshop all keeps its own distributor and registers every component
// with the other distributors it is given too.
func TestAllRegistersWithExtraDistributors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := distributor.NewServer(slog.New(slog.DiscardHandler), 0)
	other.Settle = 0
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); other.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })

	fleet(t, "--distributor", "127.0.0.1:0,"+ln.Addr().String())
	deadline := time.Now().Add(10 * time.Second)
	for {
		listed := map[string]bool{}
		for _, n := range other.Nodes() {
			listed[n.Name] = true
		}
		missing := []string{}
		for _, c := range components() {
			if c.kind != kindDistributor && !listed[c.name] {
				missing = append(missing, c.name)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other distributor does not list %v after 10s", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestParseDistributors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"127.0.0.1:9000", []string{"127.0.0.1:9000"}, false},
		{"10.0.0.1:9000, 10.0.0.2:9000", []string{"10.0.0.1:9000", "10.0.0.2:9000"}, false},
		{"[::1]:9000,", []string{"[::1]:9000"}, false},
		{"", nil, true},
		{"10.0.0.1", nil, true},
		{"10.0.0.1:x", nil, true},
		{"10.0.0.1:9000,10.0.0.1:9000", nil, true},
	} {
		got, err := parseDistributors(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("parseDistributors(%q) = %v, %v; want %v (error: %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
	// The flag's error names it.
	err := Run(context.Background(), []string{"goods", "--distributor", "nowhere"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--distributor") {
		t.Fatalf("goods --distributor nowhere = %v; want an error naming --distributor", err)
	}
}

// --help shows the defaults a command took from its environment without
// the passwords in them.
func TestHelpHidesPasswords(t *testing.T) {
	env := map[string]string{"MICROSHOP_DB": "mysql://root:hunter2@tcp(db:3306)/shop", "MICROSHOP_REDIS": "redis://:s3cret@cache:6379/0"}
	var out bytes.Buffer
	err := Run(context.Background(), []string{"goods", "--help"}, func(k string) string { return env[k] }, &out, io.Discard)
	if !IsHelp(err) {
		t.Fatalf("goods --help = %v", err)
	}
	if s := out.String(); strings.Contains(s, "hunter2") || strings.Contains(s, "s3cret") || !strings.Contains(s, "tcp(db:3306)/shop") {
		t.Fatalf("goods --help shows a password, or not the redacted defaults:\n%s", s)
	}
}

// all --random-ports keeps a --distributor given explicitly, even the
// default 127.0.0.1:9000 (where the book's processes look for it).
func TestRandomPortsKeepsAGivenDistributor(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want bool
	}{
		{[]string{"--random-ports"}, "", false},
		{[]string{"--random-ports", "--distributor", "127.0.0.1:9000"}, "", true},
		{[]string{"--random-ports"}, "127.0.0.1:9000", true},
	} {
		o, err := parseFlags("all", tc.args, func(k string) string {
			if k == "MICROSHOP_DISTRIBUTOR" {
				return tc.env
			}
			return ""
		}, io.Discard, io.Discard)
		if err != nil || o.distributorSet != tc.want {
			t.Errorf("parseFlags(all %q, MICROSHOP_DISTRIBUTOR=%q): distributorSet %v, %v; want %v", tc.args, tc.env, o != nil && o.distributorSet, err, tc.want)
		}
	}
}

// migrate creates the tables and exits; a second run finds nothing to do.
func TestMigrate(t *testing.T) {
	dsn := testenv.DSN(t)
	for range 2 {
		var out bytes.Buffer
		if err := Run(context.Background(), []string{"migrate", "--db", dsn}, func(string) string { return "" }, &out, io.Discard); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		if !strings.Contains(out.String(), "tables up to date") {
			t.Fatalf("migrate printed %q", out.String())
		}
	}
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), "insert into purchases(userid, goodsid) values(1, 1)"); err != nil {
		t.Fatalf("the migrated purchases table: %v", err)
	}
	if err := Run(context.Background(), []string{"migrate", "--db", "nosuch:x"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Fatal("migrate of a bad --db succeeded")
	}
}
