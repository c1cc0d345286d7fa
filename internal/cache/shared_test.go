package cache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/testenv"
)

// TestSharedGets: concurrent Gets, sharing pipelines, each get what their
// own GET would have (the value, or redis.Nil); a caller whose context ends
// gets its error; with Redis down, every Get fails; and a leader that went
// idle is started again.
func TestSharedGets(t *testing.T) {
	ctx := context.Background()
	c := testenv.Cache(t)
	for i := range 10 {
		c.Set(ctx, c.Key(fmt.Sprint("k", i)), fmt.Sprint("v", i), time.Minute)
	}
	g := cache.NewSharedGets(c)
	check := func(round int) {
		var wg sync.WaitGroup
		for n := range 200 {
			wg.Go(func() {
				i := n % 12 // k10 and k11 do not exist
				v, err := g.Get(ctx, c.Key(fmt.Sprint("k", i)))
				switch {
				case i >= 10 && !errors.Is(err, redis.Nil):
					t.Errorf("round %d: Get(k%d) = %q, %v; want redis.Nil", round, i, v, err)
				case i < 10 && (err != nil || string(v) != fmt.Sprint("v", i)):
					t.Errorf("round %d: Get(k%d) = %q, %v; want v%d", round, i, v, err, i)
				}
			})
		}
		wg.Wait()
	}
	check(1)
	time.Sleep(150 * time.Millisecond) // past leaderIdle: the leader has ended
	check(2)

	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.Get(done, c.Key("k1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with an ended context = %v; want context.Canceled", err)
	}

	down, err := cache.Open("redis://127.0.0.1:1/0", "down:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	dg := cache.NewSharedGets(down)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if v, err := dg.Get(ctx, "down:k"); err == nil || errors.Is(err, redis.Nil) {
				t.Errorf("Get with Redis down = %q, %v; want a failure", v, err)
			}
		})
	}
	wg.Wait()
}
