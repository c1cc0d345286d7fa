package reactions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/reactions"
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
	svc   *reactions.Service
	h     map[string]service.Handler
}

func setup(t testing.TB) *fixture {
	t.Helper()
	db := testenv.DB(t)
	c := testenv.Cache(t)
	return withCache(t, db, c)
}

func withCache(t testing.TB, db *store.DB, c *cache.Cache) *fixture {
	svc := reactions.New(db, c, catalog.NewLookup(c, catalog.Own, fakeGoods{n: 10}), slog.New(slog.DiscardHandler))
	return &fixture{db: db, cache: c, svc: svc, h: svc.Routes()}
}

// call runs route with params given as Go values (numbers become json.Number,
// as in a JSON body).
func (f *fixture) call(route string, params map[string]any) (service.Result, error) {
	p := service.Params{}
	for k, v := range params {
		switch v := v.(type) {
		case int:
			p[k] = json.Number(fmt.Sprint(v))
		case int64:
			p[k] = json.Number(fmt.Sprint(v))
		default:
			p[k] = v
		}
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

// dbCounts counts a good's reactions straight from the database.
func dbCounts(t testing.TB, db *store.DB, good int64) (likes, dislikes int64) {
	t.Helper()
	err := db.QueryRow(`SELECT
  COALESCE(SUM(CASE WHEN reaction = 'like' THEN 1 ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN reaction = 'dislike' THEN 1 ELSE 0 END), 0)
FROM reactions WHERE goodsid = ?`, good).Scan(&likes, &dislikes)
	if err != nil {
		t.Fatal(err)
	}
	return likes, dislikes
}

func wantCounts(t testing.TB, f *fixture, good int64, user int64, likes, dislikes int64, mine string) {
	t.Helper()
	params := map[string]any{"goodsid": good}
	if user != 0 {
		params["userid"] = user
	}
	res := f.must(t, "GET/reactions", params)
	want := service.Result{"likes": likes, "dislikes": dislikes}
	if user != 0 {
		want["mine"] = mine
	}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Fatalf("GET /reactions %v = %v; want %v", params, res, want)
	}
}

func TestValidation(t *testing.T) {
	f := setup(t)
	tests := []struct {
		route  string
		params map[string]any
		code   int
	}{
		{"POST/reactions", map[string]any{"goodsid": 1, "reaction": "like"}, 400},
		{"POST/reactions", map[string]any{"userid": "x", "goodsid": 1, "reaction": "like"}, 400},
		{"POST/reactions", map[string]any{"userid": 1, "goodsid": "1.5", "reaction": "like"}, 400},
		{"POST/reactions", map[string]any{"userid": 1, "goodsid": 0, "reaction": "like"}, 400},
		{"POST/reactions", map[string]any{"userid": 1, "goodsid": 1, "reaction": "love"}, 400},
		{"POST/reactions", map[string]any{"userid": 1, "goodsid": 1}, 400},
		{"POST/reactions", map[string]any{"userid": 1, "goodsid": 99, "reaction": "like"}, 404},
		{"GET/reactions", map[string]any{}, 400},
		{"GET/reactions", map[string]any{"goodsid": "abc"}, 400},
		{"GET/reactions", map[string]any{"goodsid": 1, "userid": -3}, 400},
		{"GET/reactions", map[string]any{"goodsid": 99}, 404},
		{"DELETE/reactions", map[string]any{"goodsid": 1}, 400},
		{"DELETE/reactions", map[string]any{"userid": 1}, 400},
		{"POST/reactions", map[string]any{"userid": 1, "goodsid": 1, "reaction": "like"}, 0},
		{"GET/reactions", map[string]any{"goodsid": "1", "userid": "1"}, 0},
	}
	for _, tt := range tests {
		_, err := f.call(tt.route, tt.params)
		if got := code(err); got != tt.code {
			t.Errorf("%s %v: code %d (%v); want %d", tt.route, tt.params, got, err, tt.code)
		}
	}
}

func TestLikeSwitchWithdraw(t *testing.T) {
	f := setup(t)
	wantCounts(t, f, 1, 0, 0, 0, "")
	wantCounts(t, f, 1, 1, 0, 0, "")
	steps := []struct {
		route           string
		user            int64
		reaction        string
		likes, dislikes int64
		mine1           string
	}{
		{"POST/reactions", 1, "like", 1, 0, "like"},
		{"POST/reactions", 1, "like", 1, 0, "like"}, // repeating changes nothing
		{"POST/reactions", 2, "like", 2, 0, "like"},
		{"POST/reactions", 1, "dislike", 1, 1, "dislike"}, // switching moves the count
		{"POST/reactions", 3, "dislike", 1, 2, "dislike"},
		{"DELETE/reactions", 1, "", 1, 1, ""},
		{"DELETE/reactions", 1, "", 1, 1, ""}, // withdrawing twice is harmless
		{"DELETE/reactions", 9, "", 1, 1, ""}, // never reacted
		{"POST/reactions", 1, "like", 2, 1, "like"},
	}
	for i, st := range steps {
		p := map[string]any{"userid": st.user, "goodsid": 1}
		if st.reaction != "" {
			p["reaction"] = st.reaction
		}
		f.must(t, st.route, p)
		wantCounts(t, f, 1, 1, st.likes, st.dislikes, st.mine1)
		if l, d := dbCounts(t, f.db, 1); l != st.likes || d != st.dislikes {
			t.Fatalf("step %d: database has %d likes, %d dislikes; want %d, %d", i, l, d, st.likes, st.dislikes)
		}
	}
	wantCounts(t, f, 2, 1, 0, 0, "") // other goods untouched
}

func TestConcurrentLikesByManyMembers(t *testing.T) {
	for _, warm := range []bool{false, true} {
		t.Run(fmt.Sprintf("warm=%v", warm), func(t *testing.T) {
			f := setup(t)
			if warm {
				wantCounts(t, f, 3, 0, 0, 0, "") // view built before the storm
			}
			var wg sync.WaitGroup
			errs := make(chan error, 200)
			for u := 1; u <= 200; u++ {
				wg.Go(func() {
					if _, err := f.call("POST/reactions", map[string]any{"userid": u, "goodsid": 3, "reaction": "like"}); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			wantCounts(t, f, 3, 7, 200, 0, "like")
			if l, _ := dbCounts(t, f.db, 3); l != 200 {
				t.Fatalf("database has %d likes; want 200", l)
			}
		})
	}
}

func TestConcurrentLikesByOneMember(t *testing.T) {
	f := setup(t)
	wantCounts(t, f, 4, 0, 0, 0, "")
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			if _, err := f.call("POST/reactions", map[string]any{"userid": 5, "goodsid": 4, "reaction": "like"}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantCounts(t, f, 4, 5, 1, 0, "like")
}

// TestConcurrentSwitching has members flip between like, dislike and
// nothing concurrently; the Redis view must end equal to the database.
func TestConcurrentSwitching(t *testing.T) {
	f := setup(t)
	wantCounts(t, f, 5, 0, 0, 0, "")
	routes := []string{"POST/reactions", "POST/reactions", "DELETE/reactions"}
	kinds := []string{"like", "dislike", ""}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			p := map[string]any{"userid": i%10 + 1, "goodsid": 5}
			if k := kinds[i%3]; k != "" {
				p["reaction"] = k
			}
			if _, err := f.call(routes[i%3], p); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	l, d := dbCounts(t, f.db, 5)
	wantCounts(t, f, 5, 0, l, d, "")
	testenv.FlushPrefix(t, f.cache)
	wantCounts(t, f, 5, 0, l, d, "")
}

func TestSelfHealing(t *testing.T) {
	f := setup(t)
	for u := 1; u <= 30; u++ {
		r := "like"
		if u%3 == 0 {
			r = "dislike"
		}
		f.must(t, "POST/reactions", map[string]any{"userid": u, "goodsid": 6, "reaction": r})
	}
	f.must(t, "DELETE/reactions", map[string]any{"userid": 1, "goodsid": 6})
	wantCounts(t, f, 6, 3, 19, 10, "dislike")

	testenv.FlushPrefix(t, f.cache)
	wantCounts(t, f, 6, 3, 19, 10, "dislike")

	// Writes that land on an empty Redis are kept, and the view still
	// rebuilds complete.
	testenv.FlushPrefix(t, f.cache)
	f.must(t, "POST/reactions", map[string]any{"userid": 2, "goodsid": 6, "reaction": "dislike"})
	f.must(t, "POST/reactions", map[string]any{"userid": 40, "goodsid": 6, "reaction": "like"})
	wantCounts(t, f, 6, 2, 19, 11, "dislike")
	wantCounts(t, f, 6, 1, 19, 11, "")
}

func TestRedisDown(t *testing.T) {
	db := testenv.DB(t)
	down, err := cache.Open("redis://127.0.0.1:1/0", "x:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	f := withCache(t, db, down)
	f.must(t, "POST/reactions", map[string]any{"userid": 1, "goodsid": 2, "reaction": "like"})
	f.must(t, "POST/reactions", map[string]any{"userid": 2, "goodsid": 2, "reaction": "dislike"})
	f.must(t, "POST/reactions", map[string]any{"userid": 3, "goodsid": 2, "reaction": "dislike"})
	f.must(t, "DELETE/reactions", map[string]any{"userid": 3, "goodsid": 2})
	wantCounts(t, f, 2, 2, 1, 1, "dislike")

	// Redis back: the view builds from what the database recorded.
	up := withCache(t, db, testenv.Cache(t))
	wantCounts(t, up, 2, 1, 1, 1, "like")
}

// A like whose Redis update failed while Redis was away for a moment (it
// kept its data, with the view built) reaches the view in the background
// once Redis answers, instead of when the view expires.
func TestRedisBlip(t *testing.T) {
	m := miniredis.RunT(t)
	c, err := cache.Open("redis://"+m.Addr()+"/0", "blip:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := withCache(t, testenv.DB(t), c)
	f.must(t, "POST/reactions", map[string]any{"userid": 1, "goodsid": 3, "reaction": "like"})
	wantCounts(t, f, 3, 1, 1, 0, "like") // the view is built
	m.Close()
	f.must(t, "POST/reactions", map[string]any{"userid": 2, "goodsid": 3, "reaction": "like"})
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // a hang guard only
	for {
		res := f.must(t, "GET/reactions", map[string]any{"goodsid": 3})
		if res["likes"] == int64(2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /reactions = %v after Redis came back; want the 2 likes the database holds", res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantCounts(t, f, 3, 2, 2, 0, "like")
}
