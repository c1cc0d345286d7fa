package limit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/testenv"
)

// calls counts the commands a client sends Redis.
type calls struct{ n atomic.Int64 }

func (c *calls) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *calls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *calls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// twoGates returns two limiters on one Redis (the test's, or an embedded
// one), as two gates have, and a counter of the scripts each runs.
func twoGates(t *testing.T) (a, b *Limiter, ca, cb *calls) {
	t.Helper()
	url, _ := testenv.RedisURL(t)
	prefix := testenv.RandomName("mstest:") + ":"
	ca, cb = &calls{}, &calls{}
	open := func(n *calls) *Limiter {
		o, err := cache.Open(url, prefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			testenv.FlushPrefix(t, o)
			o.Close()
		})
		o.AddHook(n)
		return New(o, nil)
	}
	return open(ca), open(cb), ca, cb
}

// Two gates hammering one key through leases never let more through than
// the limit (plus what it refilled meanwhile), and refuse early by at most
// the leases they hold.
func TestLeasesNeverExceedTheLimit(t *testing.T) {
	a, b, _, _ := twoGates(t)
	lim := Limit{Rate: 1000, Burst: 1000, Period: time.Minute} // 16.7 a second refill; leases of up to 62
	ctx := context.Background()
	var allowed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 16 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Go(func() {
			for range 200 {
				if l.Allow(ctx, "k", lim).Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	refilled := int64(math.Ceil(time.Since(start).Seconds()*float64(lim.Rate)/lim.Period.Seconds())) + 1
	got := allowed.Load()
	if got > int64(lim.Burst)+refilled {
		t.Fatalf("%d of 3200 allowed; the limit lets through at most %d (burst %d, %d refilled)", got, int64(lim.Burst)+refilled, lim.Burst, refilled)
	}
	if held := int64(2 * maxLease(lim)); got < int64(lim.Burst)-held {
		t.Fatalf("%d of 3200 allowed; want at least %d (burst %d less two leases of %d)", got, int64(lim.Burst)-held, lim.Burst, maxLease(lim))
	}
	t.Logf("%d of 3200 allowed (burst %d, up to %d refilled)", got, lim.Burst, refilled)
}

// A busy key costs a round trip per lease, not per request; a quiet one is
// counted request by request, and a small burst is never leased.
func TestLeasesFollowTheRate(t *testing.T) {
	a, _, ca, _ := twoGates(t)
	ctx := context.Background()
	high := Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
	for i := range 2000 {
		if !a.Allow(ctx, "busy", high).Allowed {
			t.Fatalf("request %d refused under a limit of 1000000/s", i+1)
		}
	}
	if n := ca.n.Load(); n > 40 {
		t.Fatalf("2000 requests of a busy key cost %d round trips; want a few dozen at most (leases doubling)", n)
	}

	small := Limit{Rate: 10, Burst: 10, Period: time.Minute}
	before := ca.n.Load()
	for i := range 10 {
		res := a.Allow(ctx, "small", small)
		if !res.Allowed || res.Remaining != 9-i {
			t.Fatalf("request %d: %+v; want allowed, remaining %d", i+1, res, 9-i)
		}
		if a.leaseLeft("small") != 0 {
			t.Fatalf("a burst of 10 was leased (%d units held)", a.leaseLeft("small"))
		}
	}
	if n := ca.n.Load() - before; n != 10 {
		t.Fatalf("10 requests under a burst of 10 cost %d round trips; want 10", n)
	}
	res := a.Allow(ctx, "small", small)
	if res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > 6*time.Second {
		t.Fatalf("request 11: %+v; want refused, retry after at most 6s", res)
	}

	// Quiet: one request every leaseFor and more stays one unit a trip.
	quiet := Limit{Rate: 1000, Burst: 1000, Period: time.Second}
	for range 3 {
		a.Allow(ctx, "quiet", quiet)
		if left := a.leaseLeft("quiet"); left != 0 {
			t.Fatalf("a quiet key holds a lease of %d more units", left)
		}
		time.Sleep(leaseFor + 10*time.Millisecond)
	}
}

// The units a lease holds count in Redis the moment they are leased: a
// request through another gate (or the one-trip script) sees them gone.
func TestLeasedUnitsCountInRedis(t *testing.T) {
	a, b, _, _ := twoGates(t)
	ctx := context.Background()
	lim := Limit{Rate: 64, Burst: 64, Period: time.Hour} // leases of up to 4
	n := 0
	for a.Allow(ctx, "k", lim).Allowed {
		n++
		if n > 64 {
			t.Fatal("more than the burst allowed")
		}
	}
	if n != 64 {
		t.Fatalf("one gate alone: %d allowed; want 64 (what it leased it spent)", n)
	}
	if res := b.Allow(ctx, "k", lim); res.Allowed {
		t.Fatalf("the other gate was allowed %+v after the first took the whole burst", res)
	}
}

// A refused key is refused without a round trip until its retry time
// (when GCRA has a unit for it again, whichever gate asks), then allowed.
func TestRefusalsCostNoRoundTrip(t *testing.T) {
	a, _, ca, _ := twoGates(t)
	ctx := context.Background()
	lim := Limit{Rate: 4, Burst: 2, Period: time.Second} // one every 250 ms
	for i := range 2 {
		if !a.Allow(ctx, "k", lim).Allowed {
			t.Fatalf("request %d refused within the burst", i+1)
		}
	}
	first := a.Allow(ctx, "k", lim)
	if first.Allowed || first.RetryAfter <= 0 || first.RetryAfter > 250*time.Millisecond {
		t.Fatalf("over the burst: %+v; want refused, retry after at most 250ms", first)
	}
	before := ca.n.Load()
	for range 50 {
		res := a.Allow(ctx, "k", lim)
		if res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > first.RetryAfter {
			t.Fatalf("during the refusal: %+v; want refused, retry after at most %v", res, first.RetryAfter)
		}
		if all := a.AllowAll(ctx, []Check{{"other", Limit{Rate: 1000, Burst: 1000, Period: time.Second}}, {"k", lim}}); len(all) != 2 || !all[0].Allowed || all[1].Allowed {
			t.Fatalf("AllowAll during the refusal: %+v; want the first allowed, the second refused", all)
		}
	}
	if n := ca.n.Load() - before; n > 8 {
		t.Errorf("50 refused requests cost %d round trips; want none (but for the other key's leases)", n)
	}
	time.Sleep(first.RetryAfter + 10*time.Millisecond)
	if res := a.Allow(ctx, "k", lim); !res.Allowed {
		t.Fatalf("after the retry time: %+v; want allowed", res)
	}
}
