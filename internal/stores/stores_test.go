package stores_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/stores"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

type fixture struct {
	db    *store.DB
	cache *cache.Cache
	svc   *stores.Service
	h     map[string]service.Handler
}

func setup(t testing.TB) *fixture {
	t.Helper()
	return withCache(t, testenv.DB(t), testenv.Cache(t))
}

func withCache(t testing.TB, db *store.DB, c *cache.Cache) *fixture {
	svc := stores.New(db, c, slog.New(slog.DiscardHandler))
	return &fixture{db: db, cache: c, svc: svc, h: svc.Routes()}
}

// call runs route with params given as Go values (numbers become
// json.Number, as in a JSON body).
func (f *fixture) call(route string, params map[string]any) (service.Result, error) {
	p := service.Params{}
	for k, v := range params {
		switch v.(type) {
		case int, int64, float64:
			v = json.Number(fmt.Sprint(v))
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

func (f *fixture) add(t testing.TB, name string, lon, lat float64) int64 {
	t.Helper()
	return f.must(t, "POST/stores", map[string]any{"name": name, "longitude": lon, "latitude": lat})["id"].(int64)
}

func (f *fixture) near(t testing.TB, lon, lat, radius float64, limit int) []stores.Store {
	t.Helper()
	res := f.must(t, "GET/stores", map[string]any{"longitude": lon, "latitude": lat, "radius": radius, "limit": limit})
	return res["results"].([]stores.Store)
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

// The center of the tests: Paris, Notre-Dame.
const lon0, lat0 = 2.3499, 48.8530

// kmEast returns the longitude d km east of the center along its parallel.
func kmEast(d float64) float64 {
	return lon0 + d/(6372.797560856*math.Pi/180*math.Cos(lat0*math.Pi/180))
}

// sameStores reports whether a and b list the same stores in the same
// order, with distances within tol km.
func sameStores(a, b []stores.Store, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Name != y.Name || x.Longitude != y.Longitude || x.Latitude != y.Latitude ||
			math.Abs(x.Distance-y.Distance) > tol {
			return false
		}
	}
	return true
}

func TestValidation(t *testing.T) {
	f := setup(t)
	id := f.add(t, "Here", lon0, lat0)
	ok := map[string]any{"name": "A", "longitude": 1, "latitude": 1}
	with := func(base map[string]any, kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	near := map[string]any{"longitude": lon0, "latitude": lat0}
	tests := []struct {
		route  string
		params map[string]any
		code   int
	}{
		{"POST/stores", with(ok, "name", nil), 400},
		{"POST/stores", with(ok, "name", "   "), 400},
		{"POST/stores", with(ok, "name", strings.Repeat("é", 129)), 400},
		{"POST/stores", with(ok, "longitude", nil), 400},
		{"POST/stores", with(ok, "longitude", 180.5), 400},
		{"POST/stores", with(ok, "longitude", -181), 400},
		{"POST/stores", with(ok, "latitude", 85.06), 400},
		{"POST/stores", with(ok, "latitude", -89), 400},
		{"POST/stores", with(ok, "latitude", "north"), 400},
		{"POST/stores", with(ok, "name", strings.Repeat("é", 128), "longitude", 180, "latitude", -85.05112878), 0},
		{"GET/stores", map[string]any{"latitude": lat0}, 400},
		{"GET/stores", with(near, "longitude", 200), 400},
		{"GET/stores", with(near, "latitude", 86), 400},
		{"GET/stores", with(near, "radius", 0), 400},
		{"GET/stores", with(near, "radius", -2), 400},
		{"GET/stores", with(near, "radius", 1000.5), 400},
		{"GET/stores", with(near, "radius", "far"), 400},
		{"GET/stores", with(near, "limit", 0), 400},
		{"GET/stores", with(near, "limit", 101), 400},
		{"GET/stores", with(near, "limit", "2.5"), 400},
		{"GET/stores", with(near, "radius", 1000, "limit", 100), 0},
		{"GET/stores", with(near, "radius", ""), 0},
		{"DELETE/stores", map[string]any{}, 400},
		{"DELETE/stores", map[string]any{"id": "seven"}, 400},
		{"DELETE/stores", map[string]any{"id": 999}, 404},
		{"DELETE/stores", map[string]any{"id": id}, 0},
		{"DELETE/stores", map[string]any{"id": id}, 404},
	}
	for _, tt := range tests {
		_, err := f.call(tt.route, tt.params)
		if got := code(err); got != tt.code {
			t.Errorf("%s %v: code %d (%v); want %d", tt.route, tt.params, got, err, tt.code)
		}
	}
}

func TestNearestFirst(t *testing.T) {
	f := setup(t)
	ids := map[string]int64{}
	for _, s := range []struct {
		name string
		km   float64
	}{{"three", 3}, {"zero", 0}, {"one", 1}, {"seven", 7}, {"two", 2}, {"far", 40}} {
		ids[s.name] = f.add(t, s.name, kmEast(s.km), lat0)
	}
	tests := []struct {
		radius float64
		limit  int
		want   []string
	}{
		{5, 20, []string{"zero", "one", "two", "three"}},
		{5, 2, []string{"zero", "one"}},
		{10, 20, []string{"zero", "one", "two", "three", "seven"}},
		{0.5, 20, []string{"zero"}},
		{100, 20, []string{"zero", "one", "two", "three", "seven", "far"}},
	}
	for _, tt := range tests {
		got := f.near(t, lon0, lat0, tt.radius, tt.limit)
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
			if s.ID != ids[s.Name] {
				t.Errorf("%s has id %d; want %d", s.Name, s.ID, ids[s.Name])
			}
		}
		if fmt.Sprint(names) != fmt.Sprint(tt.want) {
			t.Errorf("radius %v limit %d: %v; want %v", tt.radius, tt.limit, names, tt.want)
		}
	}
	// Distances in km to the metre; coordinates as given.
	got := f.near(t, lon0, lat0, 5, 20)
	for i, want := range []float64{0, 1, 2, 3} {
		if math.Abs(got[i].Distance-want) > 0.002 {
			t.Errorf("%s: distance %v; want %v", got[i].Name, got[i].Distance, want)
		}
	}
	if got[1].Longitude != kmEast(1) || got[1].Latitude != lat0 {
		t.Errorf("one at (%v, %v); want (%v, %v)", got[1].Longitude, got[1].Latitude, kmEast(1), lat0)
	}
	// Defaults: radius 5, limit 20.
	res := f.must(t, "GET/stores", map[string]any{"longitude": lon0, "latitude": lat0})
	if n := len(res["results"].([]stores.Store)); n != 4 {
		t.Errorf("default radius: %d stores; want 4", n)
	}

	f.must(t, "DELETE/stores", map[string]any{"id": ids["one"]})
	got = f.near(t, lon0, lat0, 5, 20)
	if len(got) != 3 || got[1].Name != "two" {
		t.Errorf("after deleting one: %v", got)
	}
}

func TestSelfHealing(t *testing.T) {
	f := setup(t)
	for i := range 30 {
		f.add(t, fmt.Sprintf("s%d", i), kmEast(float64(i)*0.3), lat0+float64(i%3)*0.001)
	}
	f.must(t, "DELETE/stores", map[string]any{"id": 5})
	before := f.near(t, lon0, lat0, 5, 100)
	if len(before) == 0 {
		t.Fatal("no stores found")
	}
	testenv.FlushPrefix(t, f.cache)
	if after := f.near(t, lon0, lat0, 5, 100); !sameStores(after, before, 0) {
		t.Fatalf("after FLUSHALL:\n%v\nwant\n%v", after, before)
	}
	// Writes that land on an empty Redis are kept, and the view still
	// rebuilds complete.
	testenv.FlushPrefix(t, f.cache)
	id := f.add(t, "new", lon0+0.0001, lat0)
	f.must(t, "DELETE/stores", map[string]any{"id": 6})
	got := f.near(t, lon0, lat0, 5, 100)
	if len(got) != len(before) || got[1].ID != id {
		t.Fatalf("after writes on an empty Redis: %v", got)
	}
	for _, s := range got {
		if s.ID == 6 {
			t.Fatalf("deleted store 6 still found: %v", got)
		}
	}
	// A GEO set lost on its own (eviction) is noticed and rebuilt.
	if err := f.cache.Del(context.Background(), f.cache.Key("stores:{geo}")).Err(); err != nil {
		t.Fatal(err)
	}
	if again := f.near(t, lon0, lat0, 5, 100); !sameStores(again, got, 0) {
		t.Fatalf("after losing the GEO set:\n%v\nwant\n%v", again, got)
	}
}

// TestConcurrentWritesAndRebuilds adds and deletes stores while readers
// search and Redis is flushed; the view must end equal to the database.
func TestConcurrentWritesAndRebuilds(t *testing.T) {
	f := setup(t)
	var ids []int64
	for i := range 60 {
		ids = append(ids, f.add(t, fmt.Sprint(i), kmEast(float64(i)*0.05), lat0))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := range 60 {
		wg.Go(func() {
			_, err := f.call("POST/stores", map[string]any{"name": fmt.Sprint("n", i), "longitude": kmEast(float64(i) * 0.043), "latitude": lat0 + 0.0003})
			if err != nil {
				errs <- err
			}
		})
		if i%2 == 0 {
			wg.Go(func() {
				if _, err := f.call("DELETE/stores", map[string]any{"id": ids[i]}); err != nil {
					errs <- err
				}
			})
		}
		wg.Go(func() {
			if _, err := f.call("GET/stores", map[string]any{"longitude": lon0, "latitude": lat0}); err != nil {
				errs <- err
			}
		})
		if i%10 == 0 {
			wg.Go(func() { testenv.FlushPrefix(t, f.cache) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := f.near(t, lon0, lat0, 10, 100)
	fromDB := withCache(t, f.db, deadCache(t)).near(t, lon0, lat0, 10, 100)
	if len(got) != 90 || !sameStores(got, fromDB, 0.002) {
		t.Fatalf("view (%d stores):\n%v\ndatabase (%d stores):\n%v", len(got), got, len(fromDB), fromDB)
	}
}

func deadCache(t testing.TB) *cache.Cache {
	c, err := cache.Open("redis://127.0.0.1:1/0", "x:", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisDown(t *testing.T) {
	db := testenv.DB(t)
	down := withCache(t, db, deadCache(t))
	for i := range 8 {
		down.add(t, fmt.Sprint("s", i), kmEast(float64(i)), lat0)
	}
	down.must(t, "DELETE/stores", map[string]any{"id": 2})
	got := down.near(t, lon0, lat0, 5, 3)
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	if fmt.Sprint(names) != "[s0 s2 s3]" {
		t.Fatalf("Redis down: %v; want [s0 s2 s3]", got)
	}
	// Redis back: the view builds from what the database recorded, and
	// agrees with the database search.
	up := withCache(t, db, testenv.Cache(t))
	if view := up.near(t, lon0, lat0, 5, 3); !sameStores(view, got, 0.002) {
		t.Fatalf("Redis back:\n%v\nwant\n%v", view, got)
	}
}

// BenchmarkNear measures GET /stores among 10,000 stores spread over about
// 50 km × 50 km, served from the Redis view (radius 5 km, 20 results).
func BenchmarkNear(b *testing.B) {
	f := setup(b)
	tx, err := f.db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		lon := lon0 - 0.35 + 0.7*float64(i%100)/100
		lat := lat0 - 0.22 + 0.44*float64(i/100)/100
		if _, err := tx.Exec(`INSERT INTO stores (name, longitude, latitude) VALUES (?, ?, ?)`, fmt.Sprint("store ", i), lon, lat); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	if got := f.near(b, lon0, lat0, 5, 20); len(got) != 20 { // builds the view
		b.Fatalf("found %d stores; want 20", len(got))
	}
	params := map[string]any{"longitude": lon0, "latitude": lat0}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.call("GET/stores", params); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
