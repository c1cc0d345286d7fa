package gate

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
)

func mustDecode(t *testing.T, s string) *packet.Message {
	t.Helper()
	m, err := packet.Decode([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseLimit(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Limit
		err  bool
	}{
		{"100/s", Limit{Rate: 100, Burst: 100, Period: time.Second}, false},
		{"10/m", Limit{Rate: 10, Burst: 10, Period: time.Minute}, false},
		{" 5 / h ", Limit{Rate: 5, Burst: 5, Period: time.Hour}, false},
		{"0", Limit{}, false},
		{"off", Limit{}, false},
		{"-1/s", Limit{}, true},
		{"10", Limit{}, true},
		{"10/d", Limit{}, true},
		{"x/s", Limit{}, true},
	} {
		got, err := ParseLimit(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ParseLimit(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, _ := ParseLimit(FormatLimit(got)); back != got {
				t.Errorf("FormatLimit(%v) = %q does not parse back", got, FormatLimit(got))
			}
		}
	}
}

func TestLocalLimiterGCRA(t *testing.T) {
	l := newLocalLimiter()
	lim := Limit{Rate: 10, Burst: 10, Period: time.Minute} // one every 6 s
	now := time.Unix(1000, 0)
	for i := range 10 {
		res := l.allow("k", lim, now)
		if !res.allowed || res.remaining != 9-i {
			t.Fatalf("request %d: %+v; want allowed, remaining %d", i+1, res, 9-i)
		}
	}
	res := l.allow("k", lim, now)
	if res.allowed || res.retryAfter != 6*time.Second || res.resetAfter != time.Minute {
		t.Fatalf("request 11: %+v; want refused, retry after 6s, reset after 1m", res)
	}
	if res := l.allow("other", lim, now); !res.allowed {
		t.Fatal("another key was limited")
	}
	if res := l.allow("k", lim, now.Add(6*time.Second)); !res.allowed || res.remaining != 0 {
		t.Fatalf("after one emission interval: %+v; want allowed, remaining 0", res)
	}
	// Entries back at full burst are swept.
	l.allow("k", lim, now.Add(time.Hour))
	if len(l.tat) != 1 {
		t.Fatalf("%d keys after the sweep; want 1", len(l.tat))
	}
}

func TestRateLimitHeaders(t *testing.T) {
	g := New(Config{Cache: testenv.Cache(t), Security: Security{AuthOff: true, RateLimit: Limit{Rate: 2, Burst: 2, Period: time.Minute}}})
	limitedBefore := testutil.ToFloat64(rateLimited.WithLabelValues("address"))
	var codes []int
	var last *httptest.ResponseRecorder
	for range 3 {
		r := httptest.NewRequest("GET", "/nowhere", nil)
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, r)
		codes = append(codes, w.Code)
		if w.Code == 404 && w.Header().Get("RateLimit-Limit") != "2" {
			t.Errorf("admitted request: RateLimit-Limit = %q; want 2", w.Header().Get("RateLimit-Limit"))
		}
		last = w
	}
	if codes[0] != 404 || codes[1] != 404 || codes[2] != 429 {
		t.Fatalf("statuses %v; want 404 404 429", codes)
	}
	if n := testutil.ToFloat64(rateLimited.WithLabelValues("address")) - limitedBefore; n != 1 {
		t.Errorf("microshop_gate_rate_limited_total{limit=\"address\"} went up by %v; want 1", n)
	}
	h := last.Header()
	ra, _ := strconv.Atoi(h.Get("Retry-After"))
	reset, _ := strconv.Atoi(h.Get("RateLimit-Reset"))
	if ra < 29 || ra > 30 || h.Get("RateLimit-Remaining") != "0" || h.Get("RateLimit-Limit") != "2" || reset < 59 || reset > 60 {
		t.Errorf("429 headers %v; want Retry-After 30, RateLimit-Limit 2, -Remaining 0, -Reset 60", h)
	}
	if body := last.Body.String(); body != `{"errorcode":429,"errormessage":"too many requests"}` {
		t.Errorf("429 body %s", body)
	}

	// Logins and writes have their own, stricter class.
	g = New(Config{Security: Security{AuthOff: true, RateLimit: Limit{Rate: 100, Burst: 100, Period: time.Minute}, StrictRateLimit: Limit{Rate: 1, Burst: 1, Period: time.Minute}}})
	strictBefore := testutil.ToFloat64(rateLimited.WithLabelValues("strict"))
	defer func() {
		if n := testutil.ToFloat64(rateLimited.WithLabelValues("strict")) - strictBefore; n != 2 {
			t.Errorf("microshop_gate_rate_limited_total{limit=\"strict\"} went up by %v; want 2", n)
		}
	}()
	for i, tt := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/sessions", 404}, {"DELETE", "/goods", 429}, {"GET", "/members", 429}, {"GET", "/goods", 404},
	} {
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))
		if w.Code != tt.status {
			t.Errorf("request %d %s %s: %d; want %d", i+1, tt.method, tt.path, w.Code, tt.status)
		}
	}
}

// TestLimiterFallback: with Redis down the limiter limits in process (never
// unlimited, never reject-all), tries Redis again at most once a second,
// and goes back to Redis when it answers.
func TestLimiterFallback(t *testing.T) {
	m := miniredis.RunT(t)
	addr := m.Addr()
	c, err := cache.Open("redis://"+addr+"/0", "test:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := newLimiter(c, slog.New(slog.DiscardHandler))
	lim := Limit{Rate: 3, Burst: 3, Period: time.Minute}
	ctx := context.Background()
	for range 3 {
		if !l.allow(ctx, "a", lim).allowed {
			t.Fatal("refused within the limit")
		}
	}
	if l.allow(ctx, "a", lim).allowed {
		t.Fatal("allowed over the limit")
	}
	if !m.Exists("test:rate:a") {
		t.Fatalf("keys %v; want test:rate:a (the deployment prefix first)", m.Keys())
	}

	m.Close()
	allowed := 0
	for range 10 {
		if l.allow(ctx, "b", lim).allowed {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("Redis down: %d of 10 allowed; want 3 (the same limit, in process)", allowed)
	}
	if l.redisUp() {
		t.Fatal("Redis down but the limiter believes it up")
	}
	// While down, no call goes to Redis until redisRetry has passed.
	for range 100 {
		l.allow(ctx, "c", lim)
		if _, use := l.useRedis(time.Now()); use {
			t.Fatal("with Redis down, a check within redisRetry would go to Redis")
		}
	}

	m2 := miniredis.NewMiniRedis()
	if err := m2.StartAddr(addr); err != nil {
		t.Skipf("cannot restart Redis on %s: %v", addr, err)
	}
	defer m2.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !l.redisUp() {
		if time.Now().After(deadline) {
			t.Fatal("the limiter did not go back to Redis")
		}
		l.allow(ctx, "d", lim)
		time.Sleep(50 * time.Millisecond)
	}
	if !m2.Exists("test:rate:d") {
		t.Fatalf("back on Redis: keys %v; want test:rate:d", m2.Keys())
	}
}

// TestAdminNotLimitedAsStranger: requests with the admin key skip the
// per-address limits (11 goods in a second used to get a 429); a wrong key,
// like any other request, does not.
func TestAdminNotLimitedAsStranger(t *testing.T) {
	const adminKey = "an admin key of some length"
	g := New(Config{Cache: testenv.Cache(t), FleetKey: testFleetKey, RequestTimeout: 200 * time.Millisecond, Security: Security{
		AdminKey:        adminKey,
		RateLimit:       Limit{Rate: 100, Burst: 100, Period: time.Second},
		StrictRateLimit: Limit{Rate: 10, Burst: 10, Period: time.Second},
	}})
	send := func(method, token string) int {
		r := httptest.NewRequest(method, "/nowhere", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, r)
		return w.Code
	}
	for i := range 200 {
		if code := send("POST", adminKey); code != 404 {
			t.Fatalf("admin POST #%d: %d; want 404 (admitted, unknown route)", i+1, code)
		}
	}
	for i := range 150 {
		if code := send("GET", adminKey); code != 404 {
			t.Fatalf("admin GET #%d: %d; want 404 (admitted, unknown route)", i+1, code)
		}
	}
	// The same address without the key, or with a wrong one, is a stranger.
	codes := map[int]int{}
	for range 11 {
		codes[send("POST", "")]++
	}
	if codes[429] != 1 {
		t.Errorf("11 anonymous POSTs from the admin's address: %v; want one 429", codes)
	}
	if code := send("POST", adminKey+"x"); code != 429 {
		t.Errorf("a wrong admin key: %d; want 429 (the strict limit)", code)
	}
}
