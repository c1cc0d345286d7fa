package auth

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/microshop/microshop/internal/edge/limit"
	"github.com/microshop/microshop/internal/testenv"
)

func TestRateLimitHeaders(t *testing.T) {
	c := testenv.Cache(t)
	g := testGuard(t, Config{Cache: c, Limiter: limit.New(c, nil), AuthOff: true, RateLimit: limit.Limit{Rate: 2, Burst: 2, Period: time.Minute}})
	limitedBefore := testutil.ToFloat64(rateLimited.WithLabelValues("address"))
	var codes []int
	var last *httptest.ResponseRecorder
	for range 3 {
		status, w := admit(g, httptest.NewRequest("GET", "/nowhere", nil))
		codes = append(codes, status)
		if status == 0 && w.Header().Get("RateLimit-Limit") != "2" {
			t.Errorf("admitted request: RateLimit-Limit = %q; want 2", w.Header().Get("RateLimit-Limit"))
		}
		last = w
	}
	if codes[0] != 0 || codes[1] != 0 || codes[2] != 429 {
		t.Fatalf("statuses %v; want 0 0 429 (admitted twice, then refused)", codes)
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
	g = testGuard(t, Config{AuthOff: true, RateLimit: limit.Limit{Rate: 100, Burst: 100, Period: time.Minute}, StrictRateLimit: limit.Limit{Rate: 1, Burst: 1, Period: time.Minute}})
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
		{"POST", "/sessions", 0}, {"DELETE", "/goods", 429}, {"GET", "/members", 429}, {"GET", "/goods", 0},
	} {
		if status, _ := admit(g, httptest.NewRequest(tt.method, tt.path, nil)); status != tt.status {
			t.Errorf("request %d %s %s: %d; want %d", i+1, tt.method, tt.path, status, tt.status)
		}
	}
}

// TestAdminNotLimitedAsStranger: requests with the admin key skip the
// per-address limits (11 goods in a second used to get a 429); a wrong key,
// like any other request, does not.
func TestAdminNotLimitedAsStranger(t *testing.T) {
	const adminKey = "an admin key of some length"
	c := testenv.Cache(t)
	g := testGuard(t, Config{Cache: c, Limiter: limit.New(c, nil), FleetKey: testFleetKey,
		AdminKey:  adminKey,
		RateLimit: limit.Limit{Rate: 100, Burst: 100, Period: time.Second},
		// Per minute: the 11th request in a row meets the limit however
		// slow the machine (10/s refilled a token while 11 went by under
		// -race on a busy one).
		StrictRateLimit: limit.Limit{Rate: 10, Burst: 10, Period: time.Minute},
	})
	send := func(method, token string) int {
		r := httptest.NewRequest(method, "/nowhere", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		status, _ := admit(g, r)
		return status
	}
	for i := range 200 {
		if code := send("POST", adminKey); code != 0 {
			t.Fatalf("admin POST #%d: %d; want 0 (admitted)", i+1, code)
		}
	}
	for i := range 150 {
		if code := send("GET", adminKey); code != 0 {
			t.Fatalf("admin GET #%d: %d; want 0 (admitted)", i+1, code)
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
