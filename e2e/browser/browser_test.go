// Package browser tests the web console in a real browser: Debian's
// chromium driven by playwright-core (console.mjs), against the built
// binary run as `microshop all` plus a second goods instance of its own,
// which the test kills while the operator view watches.
//
// It needs /usr/bin/chromium (apt-get install chromium), node and
// `npm ci` in this folder; without them it skips, unless
// MICROSHOP_TEST_REQUIRE_BROWSER=1 (as in CI), which makes that a failure.
// MICROSHOP_TEST_SCREENSHOTS=DIR keeps the screenshots there (a relative DIR
// is taken from the repository's root; the README's are in docs/screenshots);
// otherwise they go to a temporary folder.
package browser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

var binary string

func TestMain(m *testing.M) { os.Exit(proctest.Run(m, &binary)) }

const (
	adminKey = "browser-test-admin-key-0123456789"
	fleetKey = "browser-test-fleet-key-0123456789"
	password = "correct horse battery"
)

// browserTools returns node's path and chromium's, or skips (or fails,
// with MICROSHOP_TEST_REQUIRE_BROWSER=1) when one is missing.
func browserTools(t *testing.T) (node, chromium string) {
	t.Helper()
	missing := func(what string) {
		msg := what + "; install with: apt-get install -y chromium nodejs npm && (cd e2e/browser && npm ci)"
		if os.Getenv("MICROSHOP_TEST_REQUIRE_BROWSER") == "1" {
			t.Fatal("MICROSHOP_TEST_REQUIRE_BROWSER=1: " + msg)
		}
		t.Skip("browser test skipped: " + msg)
	}
	if testing.Short() {
		t.Skip("browser test; skipped with -short")
	}
	chromium = os.Getenv("MICROSHOP_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missing("no chromium at " + chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on the PATH")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "playwright-core", "package.json")); err != nil {
		missing("e2e/browser/node_modules/playwright-core is missing")
	}
	return node, chromium
}

func TestConsoleAuthOn(t *testing.T)  { runConsole(t, true) }
func TestConsoleAuthOff(t *testing.T) { runConsole(t, false) }

// runConsole starts a fleet (microshop all and a second goods instance,
// sharing a Redis and a SQLite file), seeds it and runs console.mjs.
func runConsole(t *testing.T, auth bool) {
	node, chromium := browserTools(t)
	dir := t.TempDir()
	redis := proctest.StartRedis(t, 0, true)
	db := "sqlite:" + filepath.Join(dir, "shop.db")
	fk := fleetKey
	args := []string{"all", "--addr", "127.0.0.1:0", "--random-ports", "--db", db, "--redis", redis.URL, "--log-level", "info"}
	if auth {
		args = append(args, "--admin-key", adminKey, "--fleet-key", fk)
	} else {
		fk = "none"
		args = append(args, "--auth=off", "--fleet-key", fk, "--rate-limit-strict", "100/s")
	}
	all := proctest.StartReady(t, "all", binary, args...)
	ready := all.WaitReady(t, 60*time.Second)
	gateAddr, dist := ready.Components["gate"]["http"], ready.Components["distributor"]["packet"]
	if gateAddr == "" || dist == "" {
		t.Fatalf("the ready file lacks the gate's or the distributor's address: %+v", ready)
	}
	goods2 := proctest.StartReady(t, "goods#2", binary, "goods", "--addr", "127.0.0.1:0", "--distributor", dist,
		"--db", db, "--redis", redis.URL, "--fleet-key", fk, "--log-level", "info")
	goods2Addr := goods2.WaitReady(t, 30*time.Second).Components["goods"]["packet"]
	if goods2Addr == "" {
		t.Fatal("goods#2's ready file names no packet address")
	}
	defer proctest.StopAll(t, 10*time.Second, goods2, all)

	base := "http://" + gateAddr
	c := &client{t: t, base: base}
	if auth {
		c.admin = adminKey
	}
	waitGoodsUp(t, c, 2)

	// seed: two members, ten goods (two pages of 8), three stores
	users := []string{"kim", "lee"}
	for _, u := range users {
		c.call("POST", "/members", map[string]any{"username": u, "password": password}, http.StatusOK)
	}
	for i, name := range []string{"green tea", "black coffee", "barley tea", "yuja tea", "citron ade", "plum juice", "rice cake", "honey bread", "kimchi", "seaweed"} {
		c.call("POST", "/goods", map[string]any{"name": name, "category": "food", "price": 1000 + 500*i, "description": "seeded by the browser test"}, http.StatusOK)
	}
	for _, s := range []struct {
		name     string
		lon, lat float64
	}{{"Myeongdong", 126.9850, 37.5636}, {"City Hall", 126.9779, 37.5663}, {"Gangnam", 127.0276, 37.4979}} {
		c.call("POST", "/stores", map[string]any{"name": s.name, "longitude": s.lon, "latitude": s.lat}, http.StatusOK)
	}

	shots := os.Getenv("MICROSHOP_TEST_SCREENSHOTS")
	switch {
	case shots == "":
		shots = filepath.Join(dir, "screenshots")
	case !filepath.IsAbs(shots):
		// relative to the repository's root, where `go test ./e2e/browser` is typed
		// (the test itself runs in e2e/browser)
		abs, err := filepath.Abs(filepath.Join("..", "..", shots))
		if err != nil {
			t.Fatalf("MICROSHOP_TEST_SCREENSHOTS=%s: %v", shots, err)
		}
		shots = abs
	}
	mode := "on"
	if !auth {
		mode = "off"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.mjs")
	cmd.Env = append(os.Environ(), "MICROSHOP_BASE="+base, "MICROSHOP_AUTH="+mode, "MICROSHOP_ADMIN="+c.admin,
		"MICROSHOP_USER1="+users[0], "MICROSHOP_USER2="+users[1], "MICROSHOP_PASSWORD="+password,
		"MICROSHOP_SCREENSHOTS="+shots, "MICROSHOP_CHROMIUM="+chromium)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if line == "KILL goods" && !killed {
			goods2.Kill(t)
			killed = true
			fmt.Fprintf(stdin, "killed %s\n", goods2Addr)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("console.mjs failed after %v: %v\n%s\ngate's log (tail):\n%s", time.Since(start).Round(time.Millisecond), err, stderr.String(), all.LogTail(8<<10))
	}
	if !killed {
		t.Fatal("console.mjs ended without asking to kill the goods instance")
	}
	t.Logf("browser checks passed in %v; screenshots in %s", time.Since(start).Round(time.Millisecond), shots)
}

// waitGoodsUp waits until the console's fleet view shows n goods instances up.
func waitGoodsUp(t *testing.T, c *client, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var f struct {
			Processes []struct{ Name, State string } `json:"processes"`
		}
		json.Unmarshal(c.call("GET", "/console/fleet", nil, http.StatusOK), &f)
		up := 0
		for _, p := range f.Processes {
			if p.Name == "goods" && p.State == "up" {
				up++
			}
		}
		if up == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet view shows %d goods instances up after 20s, want %d: %+v", up, n, f.Processes)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// client calls the gate as the seeding admin.
type client struct {
	t     *testing.T
	base  string
	admin string
}

// call sends a JSON request and fails the test unless it answers want.
func (c *client) call(method, path string, body any, want int) []byte {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.admin != "" {
		req.Header.Set("Authorization", "Bearer "+c.admin)
	}
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: HTTP %d %s; want %d", method, path, resp.StatusCode, strings.TrimSpace(string(b)), want)
	}
	return b
}
