package purchases_test

import (
	"context"
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/purchases"
	"github.com/microshop/microshop/service"
)

// benchGoods is how many goods the rankings benchmark ranks.
const benchGoods = 100_000

// seedRanked creates benchGoods goods (straight into the goods table: this
// is test set-up, not the service's way) and about 1.2 sales each, good i
// selling 1 + i%5/4 + (i%1000 == 0 ? i/1000 : 0), so that the top is made
// of distinct counts and the rest of long ties.
func seedRanked(b *testing.B, f *fixture) {
	b.Helper()
	ctx := context.Background()
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	for first := 1; first <= benchGoods; first += 500 {
		n := min(500, benchGoods-first+1)
		q := "INSERT INTO goods (id, name, category, price, description) VALUES " + strings.Repeat("(?, ?, '', 100, ''), ", n-1) + "(?, ?, '', 100, '')"
		args := make([]any, 0, 2*n)
		for id := first; id < first+n; id++ {
			args = append(args, id, "good"+strconv.Itoa(id))
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	var sales []int64
	for i := int64(1); i <= benchGoods; i++ {
		n := 1 + i%5/4
		if i%1000 == 0 {
			n += i / 1000
		}
		for range n {
			sales = append(sales, i)
		}
	}
	if err := purchases.BulkInsert(ctx, f.svc, 1, sales, time.Now()); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d goods, %d sales", benchGoods, len(sales))
}

// BenchmarkRankings100k measures GET /rankings?top=10 (all time) over
// 100,000 ranked goods: from the Redis view (one script call, one
// pipelined read of ten names), and computed in the database as with Redis
// down. The first read, which rebuilds the view, is logged.
func BenchmarkRankings100k(b *testing.B) {
	f := newFixture(b, nil)
	seedRanked(b, f)
	ctx := context.Background()
	start := time.Now()
	list, err := f.svc.Rankings(ctx, purchases.PeriodAll, 10)
	if err != nil || len(list) != 10 || list[0].GoodsID != benchGoods {
		b.Fatalf("first ranking = %+v, %v", list, err)
	}
	b.Logf("first read (rebuilds the all-time view of %d goods, names from goods): %v", benchGoods, time.Since(start))
	req := &service.Request{Method: "GET", URI: "/rankings", Params: service.Params{"top": json.Number("10")}}

	b.Run("redis", func(b *testing.B) {
		h := f.routes["GET/rankings"]
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("database", func(b *testing.B) {
		h := purchases.New(f.db, downCache(b), catalog.NewLookup(downCache(b), catalog.Own, f.peer), nil).Routes()["GET/rankings"]
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBuy measures POST /purchases through the handler, 32
// purchases at a time (the bench's wrk connections), each with its own
// Idempotency-Key, the rankings views built so that every sale is
// recorded: the group commit, the group recording and the shared goods
// lookups at work. Embedded Redis and SQLite unless MICROSHOP_TEST_* name
// real servers.
func BenchmarkBuy(b *testing.B) {
	f := newFixture(b, nil)
	good := f.newGood(b, "tea")
	for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodWeek, purchases.PeriodAll} {
		f.rankings(b, p, 10) // builds the view
	}
	h := f.routes["POST/purchases"]
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := &service.Request{Method: "POST", URI: "/purchases", Params: service.Params{
				"userid": json.Number("1"), "goodsid": json.Number(strconv.FormatInt(good, 10)),
				"idempotency_key": "bench-" + strconv.FormatInt(n.Add(1), 10),
			}}
			if _, err := h(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
