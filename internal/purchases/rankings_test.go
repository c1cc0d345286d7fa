package purchases_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/purchases"
	"github.com/microshop/microshop/internal/testenv"
)

// clock is a settable clock for the service under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// wednesday is the test's "now": Wednesday of ISO week 2026-W48.
var wednesday = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func (f *fixture) clock(t time.Time) *clock {
	c := &clock{t: t}
	purchases.SetNow(f.svc, c.now)
	return c
}

// rank is a ranking line without the name, for comparisons.
type rank struct{ good, sales int64 }

func (f *fixture) rankings(t testing.TB, p purchases.Period, top int) []purchases.Ranked {
	t.Helper()
	list, err := f.svc.Rankings(context.Background(), p, top)
	if err != nil {
		t.Fatalf("Rankings(%s, %d): %v", p, top, err)
	}
	return list
}

func strip(list []purchases.Ranked) []rank {
	out := []rank{}
	for i, r := range list {
		if r.Rank != i+1 {
			panic(fmt.Sprintf("rank %d at position %d", r.Rank, i+1))
		}
		out = append(out, rank{r.GoodsID, r.Sales})
	}
	return out
}

func wantRanks(t testing.TB, what string, got []purchases.Ranked, want []rank) {
	t.Helper()
	for i, r := range got {
		if r.Rank != i+1 {
			t.Fatalf("%s: line %d has rank %d; want %d (%+v)", what, i, r.Rank, i+1, got)
		}
	}
	if g := strip(got); !reflect.DeepEqual(g, want) {
		t.Fatalf("%s = %v; want %v", what, g, want)
	}
}

// wantSameAsDB checks the Redis-backed ranking against the ranking computed
// in the database, for every period.
func (f *fixture) wantSameAsDB(t testing.TB, what string, top int) {
	t.Helper()
	for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodWeek, purchases.PeriodAll} {
		got := f.rankings(t, p, top)
		want, err := purchases.RankInDB(context.Background(), f.svc, p, top)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: period %s: Redis ranking = %v; database says %v", what, p, strip(got), strip(want))
		}
	}
}

func TestRankingsValidation(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct{ params, msg string }{
		{`{"top":0}`, "top must be an integer from 1 to 100"},
		{`{"top":101}`, "top must be an integer from 1 to 100"},
		{`{"top":-3}`, "top must be an integer from 1 to 100"},
		{`{"top":"abc"}`, "top must be an integer"},
		{`{"top":1.5}`, "top must be an integer"},
		{`{"top":[1]}`, "top must be an integer"},
		{`{"period":"bogus"}`, "period must be day, week or all"},
		{`{"period":"DAY"}`, "period must be day, week or all"},
		{`{"period":"month","top":5}`, "period must be day, week or all"},
		{`{"period":{"a":1}}`, "period must be a string"},
	}
	for _, tt := range tests {
		_, err := call(t, f.routes, "GET/rankings", tt.params)
		wantCode(t, "GET /rankings "+tt.params, err, 400, tt.msg)
	}
	for _, ok := range []string{`{}`, `{"top":1}`, `{"top":"100"}`, `{"period":"day"}`, `{"period":"week","top":7}`, `{"period":"all"}`, `{"period":""}`} {
		res, err := call(t, f.routes, "GET/rankings", ok)
		if err != nil {
			t.Fatalf("GET /rankings %s: %v", ok, err)
		}
		if b, _ := json.Marshal(res); string(b) != `{"results":[]}` {
			t.Fatalf("GET /rankings %s with no sales = %s; want empty results", ok, b)
		}
	}
}

// TestRankingsOrder: highest sales first, ties by goodsid ascending, the
// same way every time and the same as the database, including ids whose
// decimal strings do not sort like the numbers (2 < 10, 9 < 11).
func TestRankingsOrder(t *testing.T) {
	f := newFixture(t, nil)
	g := make([]int64, 13) // g[1..12], created in order: ascending ids
	for i := 1; i <= 12; i++ {
		g[i] = f.newGood(t, "good"+strconv.Itoa(i))
	}
	f.rankings(t, purchases.PeriodAll, 10) // build the view: the sales below are live updates
	buys := map[int]int{10: 3, 2: 2, 9: 2}
	for i := 1; i <= 12; i++ {
		n := buys[i]
		if n == 0 {
			n = 1
		}
		for range n {
			f.buy(t, 1, g[i])
		}
	}
	want := []rank{{g[10], 3}, {g[2], 2}, {g[9], 2}, {g[1], 1}, {g[3], 1}, {g[4], 1}, {g[5], 1}, {g[6], 1}, {g[7], 1}, {g[8], 1}, {g[11], 1}, {g[12], 1}}
	for range 3 {
		wantRanks(t, "ranking of 12", f.rankings(t, purchases.PeriodAll, 12), want)
		wantRanks(t, "top 10", f.rankings(t, purchases.PeriodAll, 10), want[:10])
		wantRanks(t, "top 4", f.rankings(t, purchases.PeriodAll, 4), want[:4])
	}
	f.wantSameAsDB(t, "live view", 12)
	testenv.FlushPrefix(t, f.cache)
	wantRanks(t, "rebuilt ranking", f.rankings(t, purchases.PeriodAll, 12), want)

	// The answer through the route: {rank, goodsid, name, sales}.
	res, err := call(t, f.routes, "GET/rankings", `{"top":"2"}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	wantJSON := fmt.Sprintf(`{"results":[{"rank":1,"goodsid":%d,"name":"good10","sales":3},{"rank":2,"goodsid":%d,"name":"good2","sales":2}]}`, g[10], g[2])
	if string(b) != wantJSON {
		t.Fatalf("GET /rankings?top=2 = %s; want %s", b, wantJSON)
	}
	// Default top is 10.
	res, _ = call(t, f.routes, "GET/rankings", `{}`)
	if list := res["results"].([]purchases.Ranked); len(list) != 10 {
		t.Fatalf("GET /rankings gave %d lines; want 10", len(list))
	}
}

func TestWindows(t *testing.T) {
	tests := []struct {
		p        purchases.Period
		at       time.Time
		name     string
		from, to string
	}{
		{purchases.PeriodDay, wednesday, "day:2026-11-25", "2026-11-25", "2026-11-26"},
		{purchases.PeriodWeek, wednesday, "week:2026-W48", "2026-11-23", "2026-11-30"},
		{purchases.PeriodWeek, time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), "week:2026-W48", "2026-11-23", "2026-11-30"},
		{purchases.PeriodWeek, time.Date(2026, 11, 29, 23, 59, 59, 0, time.UTC), "week:2026-W48", "2026-11-23", "2026-11-30"},
		{purchases.PeriodWeek, time.Date(2027, 1, 1, 10, 0, 0, 0, time.UTC), "week:2026-W53", "2026-12-28", "2027-01-04"},
		{purchases.PeriodWeek, time.Date(2024, 12, 30, 0, 0, 0, 0, time.UTC), "week:2025-W01", "2024-12-30", "2025-01-06"},
		// A time in another zone counts in its UTC day.
		{purchases.PeriodDay, time.Date(2026, 11, 26, 0, 30, 0, 0, time.FixedZone("CET", 3600)), "day:2026-11-25", "2026-11-25", "2026-11-26"},
	}
	for _, tt := range tests {
		name, from, to := purchases.WindowOf(tt.p, tt.at)
		if name != tt.name || from.Format(time.DateOnly) != tt.from || to.Format(time.DateOnly) != tt.to ||
			from.Location() != time.UTC || !from.Equal(from.Truncate(24*time.Hour)) {
			t.Errorf("WindowOf(%s, %v) = %s [%v, %v); want %s [%s, %s)", tt.p, tt.at, name, from, to, tt.name, tt.from, tt.to)
		}
	}
	if name, from, to := purchases.WindowOf(purchases.PeriodAll, wednesday); name != "all" || !from.IsZero() || !to.IsZero() {
		t.Errorf("WindowOf(all) = %s [%v, %v); want all, no bounds", name, from, to)
	}
}

// TestRankingsPeriods: day and week are real UTC calendar windows.
func TestRankingsPeriods(t *testing.T) {
	f := newFixture(t, nil)
	clk := f.clock(wednesday)
	g := make([]int64, 6)
	for i := 1; i <= 5; i++ {
		g[i] = f.newGood(t, "good"+strconv.Itoa(i))
	}
	for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodWeek, purchases.PeriodAll} {
		f.rankings(t, p, 10) // build the views
	}
	sales := []struct {
		at   time.Time
		good int64
		n    int
	}{
		{time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), g[1], 1},                     // today's first millisecond
		{time.Date(2026, 11, 24, 23, 59, 59, 999e6, time.UTC), g[2], 2},              // yesterday, this week
		{time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), g[3], 3},                     // Monday: this week
		{time.Date(2026, 11, 22, 23, 59, 59, 999e6, time.UTC), g[4], 4},              // Sunday: last week
		{time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC), g[5], 5},                       // last year
		{time.Date(2026, 11, 26, 0, 30, 0, 0, time.FixedZone("CET", 3600)), g[1], 1}, // 23:30 UTC today
	}
	for _, s := range sales {
		clk.set(s.at)
		for range s.n {
			f.buy(t, 1, s.good)
		}
	}
	clk.set(wednesday)
	want := map[purchases.Period][]rank{
		purchases.PeriodDay:  {{g[1], 2}},
		purchases.PeriodWeek: {{g[3], 3}, {g[1], 2}, {g[2], 2}},
		purchases.PeriodAll:  {{g[5], 5}, {g[4], 4}, {g[3], 3}, {g[1], 2}, {g[2], 2}},
	}
	check := func(what string) {
		t.Helper()
		for p, w := range want {
			wantRanks(t, what+" "+string(p), f.rankings(t, p, 10), w)
			res, err := call(t, f.routes, "GET/rankings", `{"period":"`+string(p)+`"}`)
			if err != nil {
				t.Fatal(err)
			}
			wantRanks(t, what+" GET /rankings?period="+string(p), res["results"].([]purchases.Ranked), w)
		}
		f.wantSameAsDB(t, what, 10)
	}
	check("live views")
	testenv.FlushPrefix(t, f.cache)
	check("rebuilt views")

	// On Monday of the next week, that week and day are empty; all remains.
	clk.set(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
	for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodWeek} {
		if got := f.rankings(t, p, 10); len(got) != 0 {
			t.Fatalf("next Monday, %s = %v; want empty", p, strip(got))
		}
	}
	wantRanks(t, "next Monday, all", f.rankings(t, purchases.PeriodAll, 10), want[purchases.PeriodAll])

	// Day and week views expire a few days after their window; all does not.
	ctx := context.Background()
	clk.set(wednesday)
	for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodWeek, purchases.PeriodAll} {
		keys := purchases.ViewKeys(f.svc, p)
		for _, k := range keys[:2] {
			ttl, err := f.cache.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			_, _, to := purchases.WindowOf(p, wednesday)
			switch {
			case p == purchases.PeriodAll && ttl != -1:
				t.Errorf("TTL of %s = %v; want none", k, ttl)
			case p != purchases.PeriodAll && (ttl <= to.Sub(wednesday) || ttl > to.Add(purchases.Retain).Sub(wednesday)):
				t.Errorf("TTL of %s = %v; want more than %v, at most %v", k, ttl, to.Sub(wednesday), to.Add(purchases.Retain).Sub(wednesday))
			}
		}
	}
}

// TestRankingsDeletedGood: a deleted good leaves the rankings, and the next
// goods move up so that top=N still answers N lines.
func TestRankingsDeletedGood(t *testing.T) {
	f := newFixture(t, nil)
	a, b, c, d := f.newGood(t, "a"), f.newGood(t, "b"), f.newGood(t, "c"), f.newGood(t, "d")
	for good, n := range map[int64]int{a: 3, b: 2, c: 1, d: 1} {
		for range n {
			f.buy(t, 1, good)
		}
	}
	wantRanks(t, "before", f.rankings(t, purchases.PeriodAll, 2), []rank{{a, 3}, {b, 2}})
	f.rankings(t, purchases.PeriodDay, 2)
	if _, err := call(t, f.goods, "DELETE/goods", `{"id":`+jsonInt(a)+`}`); err != nil {
		t.Fatal(err)
	}
	wantRanks(t, "after deleting the best seller, top 2", f.rankings(t, purchases.PeriodAll, 2), []rank{{b, 2}, {c, 1}})
	ctx := context.Background()
	for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodAll} {
		if err := f.cache.ZScore(ctx, purchases.ViewKeys(f.svc, p)[0], purchases.Member(a)).Err(); err != redis.Nil {
			t.Fatalf("deleted good in the %s view: ZSCORE err = %v; want redis.Nil (removed)", p, err)
		}
	}
	wantRanks(t, "after deleting, top 10", f.rankings(t, purchases.PeriodAll, 10), []rank{{b, 2}, {c, 1}, {d, 1}})
	wantRanks(t, "after deleting, day", f.rankings(t, purchases.PeriodDay, 1), []rank{{b, 2}})
	db, err := purchases.RankInDB(ctx, f.svc, purchases.PeriodAll, 2)
	if err != nil {
		t.Fatal(err)
	}
	wantRanks(t, "after deleting, in the database", db, []rank{{b, 2}, {c, 1}})
	// Deleting them all leaves an empty ranking, whatever fills the view.
	for _, g := range []int64{b, c, d} {
		if _, err := call(t, f.goods, "DELETE/goods", `{"id":`+jsonInt(g)+`}`); err != nil {
			t.Fatal(err)
		}
	}
	testenv.FlushPrefix(t, f.cache)
	if got := f.rankings(t, purchases.PeriodAll, 1); len(got) != 0 {
		t.Fatalf("all goods deleted: ranking = %v; want empty", strip(got))
	}
}

// TestRankingsConcurrentPurchases: 200 concurrent purchases of 20 goods;
// the Redis views equal the database's counts.
func TestRankingsConcurrentPurchases(t *testing.T) {
	f := newFixture(t, nil)
	goods := make([]int64, 20)
	for i := range goods {
		goods[i] = f.newGood(t, "good"+strconv.Itoa(i))
	}
	f.wantSameAsDB(t, "before", 20) // builds the views
	var wg sync.WaitGroup
	for j := range 200 {
		wg.Go(func() { f.buy(t, int64(j+1), goods[(j*j+j/7)%20]) })
	}
	wg.Wait()
	f.wantSameAsDB(t, "after 200 concurrent purchases", 20)
	total := int64(0)
	for _, r := range f.rankings(t, purchases.PeriodAll, 20) {
		total += r.Sales
	}
	if total != 200 {
		t.Fatalf("total sales in the ranking = %d; want 200", total)
	}
}

// TestRankingsRacingRebuilds: purchases keep committing while the views are
// flushed and rebuilt again and again; once they stop, the views are exact.
func TestRankingsRacingRebuilds(t *testing.T) {
	f := newFixture(t, nil)
	goods := make([]int64, 10)
	for i := range goods {
		goods[i] = f.newGood(t, "good"+strconv.Itoa(i))
	}
	ctx := context.Background()
	stop := make(chan struct{})
	var buyers, readers sync.WaitGroup
	for w := range 8 {
		buyers.Go(func() {
			for j := range 40 {
				f.buy(t, int64(w+1), goods[(w*7+j*j)%len(goods)])
			}
		})
	}
	for range 3 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodAll} {
					if _, err := f.svc.Rankings(ctx, p, 10); err != nil {
						t.Errorf("Rankings during the race: %v", err)
						return
					}
				}
			}
		})
	}
	readers.Go(func() { // the flusher: views vanish at any moment
		for {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			keys := purchases.ViewKeys(f.svc, purchases.PeriodAll)
			f.cache.Del(ctx, keys[0], keys[1], keys[2], keys[3])
			f.cache.Del(ctx, purchases.ViewKeys(f.svc, purchases.PeriodDay)[1])
		}
	})
	buyers.Wait()
	close(stop)
	readers.Wait()
	f.wantSameAsDB(t, "after racing rebuilds", 10)
}

// TestRankingsSelfHealing: a view lost whole (FLUSHALL) or in part (one key
// evicted) rebuilds itself to the same rankings.
func TestRankingsSelfHealing(t *testing.T) {
	f := newFixture(t, nil)
	goods := make([]int64, 5)
	for i := range goods {
		goods[i] = f.newGood(t, "good"+strconv.Itoa(i))
	}
	f.rankings(t, purchases.PeriodAll, 10)
	f.rankings(t, purchases.PeriodWeek, 10)
	for i, g := range goods {
		for range i + 1 {
			f.buy(t, 9, g)
		}
	}
	want := map[purchases.Period][]purchases.Ranked{}
	for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodWeek, purchases.PeriodAll} {
		want[p] = f.rankings(t, p, 10)
		if len(want[p]) != 5 || want[p][0].GoodsID != goods[4] || want[p][0].Sales != 5 {
			t.Fatalf("%s = %v; want 5 goods, %d first with 5 sales", p, strip(want[p]), goods[4])
		}
	}
	check := func(what string) {
		t.Helper()
		for p, w := range want {
			if got := f.rankings(t, p, 10); !reflect.DeepEqual(got, w) {
				t.Fatalf("%s: %s = %v; want %v", what, p, strip(got), strip(w))
			}
		}
	}
	ctx := context.Background()
	testenv.FlushPrefix(t, f.cache)
	check("after FLUSHALL")
	for i, name := range []string{"sorted set", "meta", "seen"} {
		f.buy(t, 9, goods[0]) // a live update puts a sale in seen
		for p := range want {
			want[p] = f.rankings(t, p, 10)
		}
		for p := range want {
			if err := f.cache.Del(ctx, purchases.ViewKeys(f.svc, p)[i]).Err(); err != nil {
				t.Fatal(err)
			}
		}
		check("after losing the " + name)
	}
}

// TestRankingsLostUpdate: a sale whose Redis update was lost is counted by
// the compaction that the first read after CompactEvery runs, and the seen
// set is trimmed.
func TestRankingsLostUpdate(t *testing.T) {
	f := newFixture(t, nil)
	clk := f.clock(wednesday)
	a, b := f.newGood(t, "a"), f.newGood(t, "b")
	f.rankings(t, purchases.PeriodAll, 10)
	f.buy(t, 1, a)
	f.buy(t, 1, a)
	ctx := context.Background()
	if _, err := purchases.InsertOnly(ctx, f.svc, 1, b, wednesday); err != nil {
		t.Fatal(err)
	}
	if _, err := purchases.InsertOnly(ctx, f.svc, 1, b, wednesday); err != nil {
		t.Fatal(err)
	}
	f.buy(t, 1, b)
	wantRanks(t, "before compaction", f.rankings(t, purchases.PeriodAll, 10), []rank{{a, 2}, {b, 1}})
	seen := purchases.ViewKeys(f.svc, purchases.PeriodAll)[2]
	if n := f.cache.ZCard(ctx, seen).Val(); n != 3 {
		t.Fatalf("seen holds %d sales; want 3", n)
	}
	clk.set(wednesday.Add(purchases.CompactEvery))
	wantRanks(t, "after compaction", f.rankings(t, purchases.PeriodAll, 10), []rank{{b, 3}, {a, 2}})
	if n := f.cache.ZCard(ctx, seen).Val(); n != 0 {
		t.Fatalf("seen holds %d sales after compaction; want 0", n)
	}
	f.buy(t, 1, a)
	f.buy(t, 1, a) // above the new watermark: counted live again
	wantRanks(t, "after more sales", f.rankings(t, purchases.PeriodAll, 10), []rank{{a, 4}, {b, 3}})
	f.wantSameAsDB(t, "after compaction", 10)
}

// TestRankingsRedisDown: with Redis unreachable, purchases commit and the
// rankings are computed in the database, equal to what Redis answered.
func TestRankingsRedisDown(t *testing.T) {
	f := newFixture(t, nil)
	goods := make([]int64, 4)
	for i := range goods {
		goods[i] = f.newGood(t, "good"+strconv.Itoa(i))
	}
	for i, g := range goods {
		for range 4 - i {
			f.buy(t, 3, g)
		}
	}
	down := purchases.New(f.db, downCache(t), catalog.NewLookup(downCache(t), catalog.Own, f.peer), nil)
	downRoutes := down.Routes()
	for _, p := range []string{"day", "week", "all"} {
		up, err := call(t, f.routes, "GET/rankings", `{"period":"`+p+`"}`)
		if err != nil {
			t.Fatal(err)
		}
		dn, err := call(t, downRoutes, "GET/rankings", `{"period":"`+p+`"}`)
		if err != nil {
			t.Fatalf("GET /rankings?period=%s with Redis down: %v", p, err)
		}
		if !reflect.DeepEqual(up, dn) || len(up["results"].([]purchases.Ranked)) != 4 {
			t.Fatalf("period %s: with Redis down %v; with Redis %v", p, dn, up)
		}
	}
	// A purchase with Redis down commits and counts.
	if _, err := call(t, downRoutes, "POST/purchases", `{"userid":3,"goodsid":`+jsonInt(goods[3])+`}`); err != nil {
		t.Fatalf("POST /purchases with Redis down: %v", err)
	}
	list, err := down.Rankings(context.Background(), purchases.PeriodAll, 1)
	if err != nil {
		t.Fatal(err)
	}
	wantRanks(t, "with Redis down, after a purchase", list, []rank{{goods[0], 4}})
	list, _ = down.Rankings(context.Background(), purchases.PeriodAll, 4)
	wantRanks(t, "with Redis down, top 4", list, []rank{{goods[0], 4}, {goods[1], 3}, {goods[2], 2}, {goods[3], 2}})
}
