package app

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/service"
)

func TestReadiness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready.json")
	rd := newReadiness(path)
	rd.listening("gate", "http", "127.0.0.1:8000")
	rd.listening("ops", "metrics", "127.0.0.1:9100")

	rec := httptest.NewRecorder()
	rd.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before ready: %d, want 503", rec.Code)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("ready file before ready: %v", err)
	}

	if err := rd.done(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st readyState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if !st.Ready || st.Pid != os.Getpid() || st.Components["gate"]["http"] != "127.0.0.1:8000" || st.Components["ops"]["metrics"] != "127.0.0.1:9100" {
		t.Fatalf("ready file: %s", b)
	}
	rec = httptest.NewRecorder()
	rd.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/readyz once ready: %d, want 200", rec.Code)
	}
	var st2 readyState
	if err := json.Unmarshal(rec.Body.Bytes(), &st2); err != nil || st2.Components["gate"]["http"] != "127.0.0.1:8000" {
		t.Fatalf("/readyz: %s (%v)", rec.Body.Bytes(), err)
	}
	if st.Peers != nil || st2.Peers != nil {
		t.Fatalf("peers without a gate's client: file %s, /readyz %s", b, rec.Body.Bytes())
	}

	// A gate's /readyz lists its client's instances: none yet is [].
	c := service.NewClient(service.ClientConfig{})
	defer c.Close()
	rd.gatePeers(c)
	rec = httptest.NewRecorder()
	rd.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if !strings.Contains(rec.Body.String(), `"peers":[]`) {
		t.Fatalf("/readyz of a gate with no instances: %s", rec.Body.Bytes())
	}
}

// TestReadyFileAll runs microshop all with the metrics listener and checks
// that the ready file lists every component and that /readyz agrees.
func TestReadyFileAll(t *testing.T) {
	st := fleetReady(t, "--metrics-addr", "127.0.0.1:0")
	for _, c := range components() {
		if st.Components[c.name][listenerName(c)] == "" {
			t.Errorf("ready file without %s's %s address: %v", c.name, listenerName(c), st.Components)
		}
	}
	ops := st.Components["ops"]["metrics"]
	if ops == "" {
		t.Fatalf("ready file without the metrics listener: %v", st.Components)
	}
	var got readyState
	// The gate connects to every service: each is a peer, up, at the
	// address the ready file gives.
	want := map[string]string{}
	for _, c := range components() {
		if c.kind == kindService {
			want[st.Components[c.name]["packet"]] = c.name
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = readyState{}
		resp, err := http.Get("http://" + ops + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got.Components["gate"]["http"] != st.Components["gate"]["http"] {
			t.Fatalf("/readyz: %d %v; want the ready file's components", resp.StatusCode, got)
		}
		// Ready (200) once the gate has its list: every check passes.
		up := 0
		if got.Peers != nil {
			for _, p := range *got.Peers {
				if p.Up && want[p.Addr] == p.Name {
					up++
				}
			}
		}
		if up == len(want) && resp.StatusCode == http.StatusOK {
			for name, state := range got.Checks {
				if state != "ok" {
					t.Errorf("/readyz check %s: %s; want ok", name, state)
				}
			}
			if len(got.Checks) != 3 || len(got.Degraded) != 0 {
				t.Errorf("/readyz checks %v, degraded %v; want database, redis and list, none degraded", got.Checks, got.Degraded)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz peers %+v; want every service up at %v", got.Peers, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A failing critical check (the database, the gate's list) makes /readyz a
// 503 that says which; a failing other one (Redis) is "degraded", still
// 200; the details of an error stay out of the answer.
func TestReadinessChecks(t *testing.T) {
	rd := newReadiness("")
	if err := rd.done(); err != nil {
		t.Fatal(err)
	}
	redisErr := errors.New("dial tcp 10.1.2.3:6379: connection refused")
	var dbErr error
	rd.check("database", true, func(context.Context) error { return dbErr })
	rd.check("redis", false, func(context.Context) error { return redisErr })
	read := func() (int, readyState) {
		rec := httptest.NewRecorder()
		rd.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		var st readyState
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(rec.Body.String(), "10.1.2.3") {
			t.Errorf("/readyz shows an error's details: %s", rec.Body)
		}
		return rec.Code, st
	}
	code, st := read()
	if code != 200 || !st.Ready || st.Checks["database"] != "ok" || st.Checks["redis"] != "failing: unreachable" || len(st.Degraded) != 1 || st.Degraded[0] != "redis" {
		t.Errorf("Redis down: %d %+v; want 200, ready, degraded [redis]", code, st)
	}
	dbErr = context.DeadlineExceeded
	if code, st = read(); code != 503 || st.Ready || !strings.Contains(st.Checks["database"], "no answer within") {
		t.Errorf("database not answering: %d %+v; want 503, not ready, database failing", code, st)
	}
	rec := httptest.NewRecorder()
	healthz.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 || rec.Body.String() != `{"status":"ok"}` {
		t.Errorf("/healthz: %d %s; want 200 {\"status\":\"ok\"}", rec.Code, rec.Body)
	}
}
