package catalog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

// TestFinder: many concurrent Finds, whose Redis reads share pipelines,
// answer each what Lookup.Find answers: a cached good, a 404 for a deleted
// one without asking the goods service, and the goods service's answer for
// a miss or a corrupt entry; with Redis down, the goods service's answer.
func TestFinder(t *testing.T) {
	ctx := context.Background()
	c := testenv.Cache(t)
	e := catalog.OwnEntries(c)
	e.Put(ctx, catalog.Good{ID: 2, Name: "cached2"})
	c.Set(ctx, e.Key(3), "not json", 0) // corrupt: asked of the goods service
	e.Put(ctx, catalog.Good{ID: 4, Name: "cached4"})
	e.Forget(ctx, 4) // deleted: a tombstone
	want := map[int64]string{1: "g1", 2: "cached2", 3: "g3", 4: "404", 42: "404"}
	answer := func(g catalog.Good, err error) string {
		if err != nil {
			code, _ := service.ErrorCode(err)
			return fmt.Sprint(code)
		}
		return g.Name
	}
	for _, tc := range []struct {
		name  string
		redis *cache.Cache
		want  map[int64]string
	}{
		{"redis up", c, want},
		{"redis down", downCache(t), map[int64]string{1: "g1", 2: "g2", 3: "g3", 4: "g4", 42: "404"}},
	} {
		svc := &goodsService{}
		f := catalog.NewFinder(catalog.NewLookup(tc.redis, catalog.Own, svc))
		var wg sync.WaitGroup
		for range 20 {
			for id, w := range tc.want {
				wg.Go(func() {
					if got := answer(f.Find(ctx, id)); got != w {
						t.Errorf("%s: Find(%d) = %s; want %s", tc.name, id, got, w)
					}
				})
			}
		}
		wg.Wait()
		if tc.redis == c {
			// Only the misses were asked: 1 (until the cache is refilled), 3
			// and 42 each time, never 2 or 4.
			if n := svc.calls.Load(); n > 3*20 || n < 2*20 {
				t.Errorf("%s: %d calls of the goods service; want 40 to 60 (for 1, 3 and 42 only)", tc.name, n)
			}
		}
	}
	// A caller that gives up while its batch is read asks the goods
	// service with its own ended context: a 503, as from Lookup.Find.
	done, cancel := context.WithCancel(ctx)
	cancel()
	svc := &goodsService{down: true}
	if _, err := catalog.NewFinder(catalog.NewLookup(c, catalog.Own, svc)).Find(done, 42); err == nil {
		t.Fatal("Find with an ended context and goods down: no error")
	}
}

// downCache is a Redis client for a port where nothing listens.
func downCache(t testing.TB) *cache.Cache {
	t.Helper()
	c, err := cache.Open("redis://127.0.0.1:1/0", "down:", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
