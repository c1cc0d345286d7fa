package ratings_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/ratings"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// fakeGoods answers GET /goods as the goods service does, for goods 1..n.
type fakeGoods struct{ n int64 }

func (f fakeGoods) Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error) {
	var p struct{ ID int64 }
	json.Unmarshal(params, &p)
	var b []byte
	if method == "GET" && path == "/goods" && p.ID >= 1 && p.ID <= f.n {
		body := fmt.Sprintf(`{"results":[{"id":%d,"name":"good %d","category":"c","price":100,"description":""}]}`, p.ID, p.ID)
		b = packet.AppendResponse(nil, json.RawMessage("1"), 0, "success", []byte(body))
	} else {
		b = packet.AppendResponse(nil, json.RawMessage("1"), 404, "not found", nil)
	}
	return packet.Decode(b[:len(b)-len(packet.Separator)])
}

type fixture struct {
	db    *store.DB
	cache *cache.Cache
	h     map[string]service.Handler
}

func setup(t testing.TB) *fixture {
	t.Helper()
	return withCache(t, testenv.DB(t), testenv.Cache(t))
}

func withCache(t testing.TB, db *store.DB, c *cache.Cache) *fixture {
	svc := ratings.New(db, c, catalog.NewLookup(c, catalog.Own, fakeGoods{n: 10}), slog.New(slog.DiscardHandler))
	return &fixture{db: db, cache: c, h: svc.Routes()}
}

// call runs route with params given as Go values (ints become json.Number,
// as in a JSON body).
func (f *fixture) call(route string, params map[string]any) (service.Result, error) {
	p := service.Params{}
	for k, v := range params {
		if n, ok := v.(int); ok {
			v = json.Number(fmt.Sprint(n))
		}
		p[k] = v
	}
	return f.h[route](context.Background(), &service.Request{Params: p})
}

func (f *fixture) must(t testing.TB, route string, params map[string]any) service.Result {
	t.Helper()
	res, err := f.call(route, params)
	if err != nil {
		t.Fatalf("%s %v: %v", route, params, err)
	}
	return res
}

func (f *fixture) rate(t testing.TB, user, good, stars int) {
	t.Helper()
	f.must(t, "POST/ratings", map[string]any{"userid": user, "goodsid": good, "stars": stars})
}

func code(err error) int {
	var se *service.Error
	if errors.As(err, &se) {
		return se.Code
	}
	if err == nil {
		return 0
	}
	return http.StatusInternalServerError
}

// summary renders GET /ratings?goodsid=good.
func (f *fixture) summary(t testing.TB, good int) string {
	t.Helper()
	return fmt.Sprint(f.must(t, "GET/ratings", map[string]any{"goodsid": good}))
}

// want renders the answer expected for count, average and histogram h.
func want(count int64, avg float64, h [5]int64) string {
	hist := map[string]int64{}
	for i, n := range h {
		hist[fmt.Sprint(i+1)] = n
	}
	return fmt.Sprint(service.Result{"count": count, "average": avg, "histogram": hist})
}

// dbFigures computes count and average straight from the database.
func dbFigures(t testing.TB, db *store.DB, good int) (count int64, avg float64) {
	t.Helper()
	var sum int64
	if err := db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(stars), 0) FROM ratings WHERE goodsid = ? AND stars > 0`, good).Scan(&count, &sum); err != nil {
		t.Fatal(err)
	}
	return count, ratings.Summary{Count: count, Sum: sum}.Average()
}

func TestValidation(t *testing.T) {
	f := setup(t)
	tests := []struct {
		route  string
		params map[string]any
		code   int
	}{
		{"POST/ratings", map[string]any{"goodsid": 1, "stars": 3}, 400},
		{"POST/ratings", map[string]any{"userid": "bob", "goodsid": 1, "stars": 3}, 400},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": "x", "stars": 3}, 400},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": 1}, 400},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": 1, "stars": 0}, 400},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": 1, "stars": 6}, 400},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": 1, "stars": json.Number("2.5")}, 400},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": 1, "stars": "five"}, 400},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": 99, "stars": 3}, 404},
		{"GET/ratings", map[string]any{}, 400},
		{"GET/ratings", map[string]any{"goodsid": "1e3"}, 400},
		{"GET/ratings", map[string]any{"goodsid": 99}, 404},
		{"POST/ratings", map[string]any{"userid": 1, "goodsid": 1, "stars": "5"}, 0},
		{"GET/ratings", map[string]any{"goodsid": "1"}, 0},
	}
	for _, tt := range tests {
		_, err := f.call(tt.route, tt.params)
		if got := code(err); got != tt.code {
			t.Errorf("%s %v: code %d (%v); want %d", tt.route, tt.params, got, err, tt.code)
		}
	}
}

func TestAverage(t *testing.T) {
	tests := []struct {
		count, sum int64
		want       float64
	}{
		{0, 0, 0},
		{1, 5, 5},
		{3, 5, 1.67},  // 1.666…
		{3, 4, 1.33},  // 1.333…
		{8, 29, 3.63}, // 3.625 rounds half up
		{200, 999, 5}, // 4.995 rounds half up
		{7, 30, 4.29}, // 4.2857…
	}
	for _, tt := range tests {
		if got := (ratings.Summary{Count: tt.count, Sum: tt.sum}).Average(); got != tt.want {
			t.Errorf("Summary{Count: %d, Sum: %d}.Average() = %v; want %v", tt.count, tt.sum, got, tt.want)
		}
	}
}

func TestRateAndReplace(t *testing.T) {
	f := setup(t)
	if got, w := f.summary(t, 1), want(0, 0, [5]int64{}); got != w {
		t.Fatalf("no ratings: %s; want %s", got, w)
	}
	steps := []struct {
		user, stars int
		count       int64
		avg         float64
		hist        [5]int64
	}{
		{1, 5, 1, 5, [5]int64{0, 0, 0, 0, 1}},
		{2, 1, 2, 3, [5]int64{1, 0, 0, 0, 1}},
		{3, 2, 3, 2.67, [5]int64{1, 1, 0, 0, 1}},
		{3, 2, 3, 2.67, [5]int64{1, 1, 0, 0, 1}}, // the same again changes nothing
		{1, 4, 3, 2.33, [5]int64{1, 1, 0, 1, 0}}, // a new rating replaces the old
	}
	for _, st := range steps {
		f.rate(t, st.user, 1, st.stars)
		if got, w := f.summary(t, 1), want(st.count, st.avg, st.hist); got != w {
			t.Fatalf("after member %d gave %d stars: %s; want %s", st.user, st.stars, got, w)
		}
	}
	if got, w := f.summary(t, 2), want(0, 0, [5]int64{}); got != w {
		t.Fatalf("other good: %s; want %s", got, w)
	}
}

// DELETE /ratings withdraws one's own rating: the figures drop it, again
// changes nothing, a rating never given is a 404, a new rating counts
// again, and the view rebuilt after a FLUSHALL agrees.
func TestWithdraw(t *testing.T) {
	f := setup(t)
	f.rate(t, 1, 5, 5)
	f.rate(t, 2, 5, 1)
	for i := range 2 {
		f.must(t, "DELETE/ratings", map[string]any{"userid": 1, "goodsid": 5})
		if got, w := f.summary(t, 5), want(1, 1, [5]int64{1, 0, 0, 0, 0}); got != w {
			t.Fatalf("after withdrawal #%d: %s; want %s", i+1, got, w)
		}
	}
	if _, err := f.call("DELETE/ratings", map[string]any{"userid": 3, "goodsid": 5}); code(err) != http.StatusNotFound {
		t.Fatalf("withdrawing a rating never given: %v; want 404", err)
	}
	f.rate(t, 1, 5, 3)
	w := want(2, 2, [5]int64{1, 0, 1, 0, 0})
	if got := f.summary(t, 5); got != w {
		t.Fatalf("rated again: %s; want %s", got, w)
	}
	f.must(t, "DELETE/ratings", map[string]any{"userid": 2, "goodsid": 5})
	w = want(1, 3, [5]int64{0, 0, 1, 0, 0})
	testenv.FlushPrefix(t, f.cache)
	if got := f.summary(t, 5); got != w {
		t.Fatalf("after a withdrawal and a FLUSHALL: %s; want %s", got, w)
	}

	// Members rating and withdrawing at once: the view agrees with the
	// database, whatever order the merges land in.
	var wg sync.WaitGroup
	for u := 1; u <= 60; u++ {
		wg.Go(func() {
			f.call("POST/ratings", map[string]any{"userid": u, "goodsid": 6, "stars": u%5 + 1})
			if u%2 == 0 {
				f.call("DELETE/ratings", map[string]any{"userid": u, "goodsid": 6})
			}
		})
	}
	wg.Wait()
	res := f.must(t, "GET/ratings", map[string]any{"goodsid": 6})
	count, avg := dbFigures(t, f.db, 6)
	if res["count"] != count || res["average"] != avg || count != 30 {
		t.Fatalf("GET /ratings = %v; database says count %d, average %v (want count 30)", res, count, avg)
	}
}

func TestConcurrentReRating(t *testing.T) {
	for _, warm := range []bool{false, true} {
		t.Run(fmt.Sprintf("warm=%v", warm), func(t *testing.T) {
			f := setup(t)
			if warm {
				f.summary(t, 3)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 300)
			for round := range 3 {
				for u := 1; u <= 100; u++ {
					wg.Go(func() {
						stars := (u*7+round*3)%5 + 1
						if _, err := f.call("POST/ratings", map[string]any{"userid": u, "goodsid": 3, "stars": stars}); err != nil {
							errs <- err
						}
					})
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			res := f.must(t, "GET/ratings", map[string]any{"goodsid": 3})
			count, avg := dbFigures(t, f.db, 3)
			if res["count"] != count || res["average"] != avg || count != 100 {
				t.Fatalf("GET /ratings = %v; database says count %d, average %v (want count 100)", res, count, avg)
			}
		})
	}
}

func TestSelfHealing(t *testing.T) {
	f := setup(t)
	for u := 1; u <= 40; u++ {
		f.rate(t, u, 4, u%5+1)
	}
	f.rate(t, 1, 4, 1)
	before := f.summary(t, 4)
	testenv.FlushPrefix(t, f.cache)
	if got := f.summary(t, 4); got != before {
		t.Fatalf("after FLUSHALL: %s; want %s", got, before)
	}
	// A rating that lands on an empty Redis is kept, and the view still
	// rebuilds complete.
	testenv.FlushPrefix(t, f.cache)
	f.rate(t, 41, 4, 5)
	f.rate(t, 2, 4, 5)
	count, avg := dbFigures(t, f.db, 4)
	res := f.must(t, "GET/ratings", map[string]any{"goodsid": 4})
	if res["count"] != count || res["average"] != avg {
		t.Fatalf("GET /ratings = %v; database says count %d, average %v", res, count, avg)
	}
}

func TestRedisDown(t *testing.T) {
	db := testenv.DB(t)
	down, err := cache.Open("redis://127.0.0.1:1/0", "x:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	f := withCache(t, db, down)
	f.rate(t, 1, 2, 5)
	f.rate(t, 2, 2, 4)
	f.rate(t, 2, 2, 2)
	w := want(2, 3.5, [5]int64{0, 1, 0, 0, 1})
	if got := f.summary(t, 2); got != w {
		t.Fatalf("Redis down: %s; want %s", got, w)
	}
	up := withCache(t, db, testenv.Cache(t))
	if got := up.summary(t, 2); got != w {
		t.Fatalf("Redis back: %s; want %s", got, w)
	}
}

// BenchmarkGet measures GET /ratings on a good with 1,000 ratings, served
// from the Redis view.
func BenchmarkGet(b *testing.B) {
	f := setup(b)
	for u := 1; u <= 1000; u++ {
		if _, err := f.call("POST/ratings", map[string]any{"userid": u, "goodsid": 1, "stars": u%5 + 1}); err != nil {
			b.Fatal(err)
		}
	}
	f.summary(b, 1)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.call("GET/ratings", map[string]any{"goodsid": 1}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
