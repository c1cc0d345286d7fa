package console

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/service"
)

func handlers(t *testing.T, cfg Config) map[string]http.Handler {
	t.Helper()
	h, err := Handlers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func serve(h http.Handler, auth *service.Auth, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/", nil)
	if header != nil {
		r.Header = header
	}
	r = r.WithContext(gate.WithAuth(r.Context(), auth))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAssets(t *testing.T) {
	h := handlers(t, Config{})
	for route, want := range map[string]struct{ ctype, contains string }{
		"GET /":                  {"text/html; charset=utf-8", `<script src="/console/app.js"`},
		"GET /console/app.js":    {"text/javascript; charset=utf-8", "use strict"},
		"GET /console/style.css": {"text/css; charset=utf-8", "--accent"},
	} {
		w := serve(h[route], nil, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: status %d", route, w.Code)
		}
		if got := w.Header().Get("Content-Type"); got != want.ctype {
			t.Errorf("%s: Content-Type %q, want %q", route, got, want.ctype)
		}
		if !strings.Contains(w.Body.String(), want.contains) {
			t.Errorf("%s: body lacks %q", route, want.contains)
		}
		csp := w.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", route, csp)
		}
		etag := w.Header().Get("ETag")
		if etag == "" {
			t.Fatalf("%s: no ETag", route)
		}
		again := serve(h[route], nil, http.Header{"If-None-Match": {etag}})
		if again.Code != http.StatusNotModified || again.Body.Len() != 0 {
			t.Errorf("%s with If-None-Match: status %d, %d bytes; want 304 and none", route, again.Code, again.Body.Len())
		}
	}
}

// TestNoSecretStorage guards the promise that the page keeps tokens and the
// admin key in memory only.
func TestNoSecretStorage(t *testing.T) {
	for _, f := range []string{"app.js", "index.html"} {
		b, err := assets.ReadFile("assets/" + f)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"localStorage", "sessionStorage", "document.cookie", "indexedDB", "innerHTML", "http://", "https://"} {
			if bad == "http://" && f == "app.js" {
				continue // the SVG namespace
			}
			if strings.Contains(string(b), bad) {
				t.Errorf("%s uses %s", f, bad)
			}
		}
	}
}

func TestFleetNeedsAdminKey(t *testing.T) {
	h := handlers(t, Config{})["GET /console/fleet"]
	for _, c := range []struct {
		name string
		auth *service.Auth
		want int
	}{
		{"anonymous", &service.Auth{}, http.StatusUnauthorized},
		{"a member", &service.Auth{Member: 7}, http.StatusForbidden},
		{"the admin", &service.Auth{Admin: true}, http.StatusOK},
	} {
		w := serve(h, c.auth, nil)
		if w.Code != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, w.Code, c.want, w.Body)
		}
		if c.want != http.StatusOK {
			var e struct {
				ErrorCode    int    `json:"errorcode"`
				ErrorMessage string `json:"errormessage"`
			}
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.ErrorCode != c.want || !strings.Contains(e.ErrorMessage, "admin key") {
				t.Errorf("%s: body %s", c.name, w.Body)
			}
		}
	}
	open := handlers(t, Config{AuthOff: true})["GET /console/fleet"]
	if w := serve(open, nil, nil); w.Code != http.StatusOK {
		t.Errorf("--auth=off: status %d, want 200", w.Code)
	}
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func fleetState(t *testing.T, h http.Handler) Fleet {
	t.Helper()
	w := serve(h, nil, nil)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var f Fleet
	if err := json.Unmarshal(w.Body.Bytes(), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFleetProcessesAndRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricRequests, Help: "h"}, []string{"route", "status"})
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricSeconds, Help: "h", Buckets: []float64{.01, .1, 1}}, []string{"route"})
	reg.MustRegister(requests, seconds)

	nodes := []distributor.Node{
		{Name: "goods", Host: "127.0.0.1", Port: 9010, URLs: []string{"GET/goods", "POST/goods"}},
		{Name: "goods", Host: "::ffff:127.0.0.1", Port: 9011, URLs: []string{"GET/goods", "POST/goods"}},
		{Name: "goods", Host: "127.0.0.1", Port: 9011, URLs: []string{"GET/goods", "POST/goods"}}, // the same, from another distributor
		{Name: "members", Host: "127.0.0.1", Port: 9020, URLs: []string{"POST/sessions"}},
		{Name: "gate", Host: "127.0.0.1", Port: 8000, URLs: []string{}},
	}
	instances := []service.InstanceState{
		{Name: "goods", Addr: "127.0.0.1:9010", Up: true},
		{Name: "goods", Addr: "127.0.0.1:9011", Up: true, Ejected: true},
		{Name: "stores", Addr: "127.0.0.1:9060", Up: false}, // no longer listed, still kept
	}
	clk := &clock{now: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	h := handlers(t, Config{AuthOff: true, Metrics: reg, Now: clk.Now,
		Nodes: func() []distributor.Node { return nodes }, Instances: func() []service.InstanceState { return instances }})["GET /console/fleet"]

	f := fleetState(t, h)
	want := map[string]string{"gate 127.0.0.1:8000": "listed", "goods 127.0.0.1:9010": "up", "goods 127.0.0.1:9011": "ejected",
		"members 127.0.0.1:9020": "down", "stores 127.0.0.1:9060": "down"}
	if len(f.Processes) != len(want) {
		t.Fatalf("processes %+v; want %v", f.Processes, want)
	}
	for _, p := range f.Processes {
		if s, ok := want[p.Name+" "+p.Addr]; !ok || s != p.State {
			t.Errorf("process %s %s: state %q, want %q", p.Name, p.Addr, p.State, s)
		}
	}
	if f.Window != 0 {
		t.Errorf("first call: window %v, want 0 (no earlier sample)", f.Window)
	}

	// 10 s of traffic: 100 GET /goods (one a 503, 99 within 10 ms), 20
	// POST /goods (all 400s), 5 of the console's own
	for i := 0; i < 100; i++ {
		status, took := "200", 0.005
		if i == 0 {
			status, took = "503", 0.5
		}
		requests.WithLabelValues("GET /goods", status).Inc()
		seconds.WithLabelValues("GET /goods").Observe(took)
	}
	for i := 0; i < 20; i++ {
		requests.WithLabelValues("POST /goods", "400").Inc()
		seconds.WithLabelValues("POST /goods").Observe(0.05)
	}
	for i := 0; i < 5; i++ {
		requests.WithLabelValues("GET /console/fleet", "200").Inc()
		seconds.WithLabelValues("GET /console/fleet").Observe(0.001)
	}
	clk.add(10 * time.Second)
	f = fleetState(t, h)
	if f.Window != 10 {
		t.Fatalf("window %v, want 10", f.Window)
	}
	routes := map[string]RouteStats{}
	for _, r := range f.Routes {
		routes[r.Route] = r
	}
	get := routes["GET /goods"]
	if get.Service != "goods" || get.RPS != 10 || get.Errors != 0.1 || get.Client != 0 || get.Total != 100 {
		t.Errorf("GET /goods: %+v", get)
	}
	if get.P99 == nil || *get.P99 != 0.01 { // the 99th of 100 is the last within 10 ms
		t.Errorf("GET /goods p99 %v: want 0.01", deref(get.P99))
	}
	if post := routes["POST /goods"]; post.Client != 2 || post.Errors != 0 {
		t.Errorf("POST /goods: %+v", post)
	}
	if own := routes["GET /console/fleet"]; own.Service != "gate" || own.RPS != 0.5 {
		t.Errorf("GET /console/fleet: %+v", own)
	}
	services := map[string]ServiceStats{}
	for _, s := range f.Services {
		services[s.Name] = s
	}
	goods := services["goods"]
	if goods.Instances != 2 || goods.Up != 1 || goods.RPS != 12 || goods.Total != 120 {
		t.Errorf("goods: %+v", goods)
	}
	if g := services["gate"]; g.Instances != 1 || g.Up != 1 || g.RPS != 0.5 {
		t.Errorf("gate: %+v", g)
	}

	// quiet for a window: the rates fall to 0 and p99 is unknown
	clk.add(6 * time.Second)
	f = fleetState(t, h)
	if f.Window != 6 {
		t.Errorf("window %v, want 6 (the sample one to two windows ago)", f.Window)
	}
	for _, r := range f.Routes {
		if r.RPS != 0 || r.P99 != nil {
			t.Errorf("after a quiet window, %s: %+v (p99 %v)", r.Route, r, deref(r.P99))
		}
	}

	// 20 s later, the sample of 20 s ago is all there is
	clk.add(20 * time.Second)
	if f = fleetState(t, h); f.Window != 20 {
		t.Errorf("after 20 s: window %v, want 20", f.Window)
	}
	clk.add(time.Second)
	if f = fleetState(t, h); f.Window != 1 {
		t.Errorf("a second later: window %v, want 1 (the recent sample, not the stale one)", f.Window)
	}

	// polled every second from here on: the span settles on the window
	for range 8 {
		clk.add(time.Second)
		f = fleetState(t, h)
	}
	if f.Window != 5 {
		t.Errorf("polled every second: window %v, want 5", f.Window)
	}

	// opened again after a minute: the samples kept are at most 30 s old,
	// so the first answer has no rates, the next the second since
	clk.add(time.Minute)
	if f = fleetState(t, h); f.Window != 0 {
		t.Errorf("after a minute: window %v, want 0", f.Window)
	}
	clk.add(time.Second)
	if f = fleetState(t, h); f.Window != 1 {
		t.Errorf("a second later: window %v, want 1", f.Window)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestQuantile(t *testing.T) {
	bounds := []float64{1, 2, 4}
	for _, c := range []struct {
		q, count float64
		cum      []float64
		want     float64
	}{
		{0.5, 10, []float64{10, 10, 10}, 0.5},    // all in the first bucket: interpolated from 0
		{0.99, 100, []float64{0, 50, 100}, 3.96}, // in (2, 4]
		{0.99, 10, []float64{1, 2, 3}, 4},        // past the last bound: that bound
		{0.5, 4, []float64{2, 2, 4}, 1},          // exactly at a bucket's end
	} {
		if got := quantile(c.q, bounds, c.cum, c.count); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v, %v of %v) = %v, want %v", c.q, c.cum, c.count, got, c.want)
		}
	}
}

func TestRouteLabel(t *testing.T) {
	for in, want := range map[string]string{"GET/goods": "GET /goods", "POST/chat/history": "POST /chat/history", "odd": "odd"} {
		if got := routeLabel(in); got != want {
			t.Errorf("routeLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
