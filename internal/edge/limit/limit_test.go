package limit

import (
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/microshop/microshop/internal/cache"
)

func TestParse(t *testing.T) {
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
		got, err := Parse(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, _ := Parse(Format(got)); back != got {
				t.Errorf("Format(%v) = %q does not parse back", got, Format(got))
			}
		}
	}
}

func TestAddrKey(t *testing.T) {
	if got := AddrKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")); got != "2001:db8:1:2::/64" {
		t.Errorf("AddrKey(ipv6) = %s; want the /64", got)
	}
	if got := AddrKey(netip.MustParseAddr("192.0.2.7")); got != "192.0.2.7" {
		t.Errorf("AddrKey(ipv4) = %s; want the address", got)
	}
	if got := AddrKey(netip.Addr{}); got != "unknown" {
		t.Errorf("AddrKey(none) = %s; want unknown", got)
	}
}

func TestLocalLimiterGCRA(t *testing.T) {
	l := newLocalLimiter()
	lim := Limit{Rate: 10, Burst: 10, Period: time.Minute} // one every 6 s
	now := time.Unix(1000, 0)
	for i := range 10 {
		res := l.allow("k", lim, now)
		if !res.Allowed || res.Remaining != 9-i {
			t.Fatalf("request %d: %+v; want allowed, remaining %d", i+1, res, 9-i)
		}
	}
	res := l.allow("k", lim, now)
	if res.Allowed || res.RetryAfter != 6*time.Second || res.ResetAfter != time.Minute {
		t.Fatalf("request 11: %+v; want refused, retry after 6s, reset after 1m", res)
	}
	if res := l.allow("other", lim, now); !res.Allowed {
		t.Fatal("another key was limited")
	}
	if res := l.allow("k", lim, now.Add(6*time.Second)); !res.Allowed || res.Remaining != 0 {
		t.Fatalf("after one emission interval: %+v; want allowed, remaining 0", res)
	}
	// Entries back at full burst are swept.
	l.allow("k", lim, now.Add(time.Hour))
	if len(l.tat) != 1 {
		t.Fatalf("%d keys after the sweep; want 1", len(l.tat))
	}
}

func TestSetHeaders(t *testing.T) {
	h := http.Header{}
	Result{Limit: Limit{Rate: 2, Burst: 2, Period: time.Minute}, RetryAfter: 29500 * time.Millisecond, ResetAfter: 59500 * time.Millisecond}.SetHeaders(h)
	if h.Get("RateLimit-Limit") != "2" || h.Get("RateLimit-Remaining") != "0" || h.Get("RateLimit-Reset") != "60" || h.Get("Retry-After") != "30" {
		t.Errorf("refused: headers %v; want limit 2, remaining 0, reset 60, Retry-After 30", h)
	}
	h = http.Header{}
	Result{Limit: Limit{Rate: 5, Burst: 5, Period: time.Second}, Allowed: true, Remaining: 4, ResetAfter: 200 * time.Millisecond}.SetHeaders(h)
	if h.Get("Retry-After") != "" || h.Get("RateLimit-Remaining") != "4" || h.Get("RateLimit-Reset") != "1" {
		t.Errorf("allowed: headers %v; want remaining 4, reset 1, no Retry-After", h)
	}
}

// TestLimiterFallback: with Redis down the limiter limits in process (never
// unlimited, never reject-all), and goes back to Redis when it answers.
func TestLimiterFallback(t *testing.T) {
	m := miniredis.RunT(t)
	addr := m.Addr()
	c, err := cache.Open("redis://"+addr+"/0", "test:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := New(c, nil)
	lim := Limit{Rate: 3, Burst: 3, Period: time.Minute}
	ctx := context.Background()
	for range 3 {
		if !l.Allow(ctx, "a", lim).Allowed {
			t.Fatal("refused within the limit")
		}
	}
	if l.Allow(ctx, "a", lim).Allowed {
		t.Fatal("allowed over the limit")
	}
	if !m.Exists("test:rate:a") {
		t.Fatalf("keys %v; want test:rate:a (the deployment prefix first)", m.Keys())
	}

	m.Close()
	allowed := 0
	for range 10 {
		if l.Allow(ctx, "b", lim).Allowed {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("Redis down: %d of 10 allowed; want 3 (the same limit, in process)", allowed)
	}
	if !l.fallback.Load() {
		t.Fatal("Redis down but the limiter believes it up")
	}

	m2 := miniredis.NewMiniRedis()
	if err := m2.StartAddr(addr); err != nil {
		t.Skipf("cannot restart Redis on %s: %v", addr, err)
	}
	defer m2.Close()
	deadline := time.Now().Add(5 * time.Second)
	for l.fallback.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the limiter did not go back to Redis")
		}
		l.Allow(ctx, "d", lim)
		time.Sleep(50 * time.Millisecond)
	}
	if !m2.Exists("test:rate:d") {
		t.Fatalf("back on Redis: keys %v; want test:rate:d", m2.Keys())
	}
}
