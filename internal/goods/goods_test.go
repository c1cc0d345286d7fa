package goods_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/goods"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

// fixture is a goods service over a fresh database and Redis prefix.
type fixture struct {
	svc    *goods.Service
	cache  *cache.Cache
	db     *store.DB
	routes map[string]service.Handler
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	c := testenv.Cache(t)
	db := testenv.DB(t)
	svc := goods.New(db, catalog.OwnEntries(c), nil)
	return &fixture{svc: svc, cache: c, db: db, routes: svc.Routes()}
}

// call runs route with params given as JSON, as they arrive in a packet.
func (f *fixture) call(t testing.TB, route, params string) (service.Result, error) {
	t.Helper()
	p, err := service.DecodeParams([]byte(params))
	if err != nil {
		t.Fatalf("bad test params %s: %v", params, err)
	}
	h, ok := f.routes[route]
	if !ok {
		t.Fatalf("no route %q", route)
	}
	method, uri, _ := strings.Cut(route, "/")
	return h(context.Background(), &service.Request{Method: method, URI: "/" + uri, Params: p})
}

// create adds a good and returns its id.
func (f *fixture) create(t testing.TB, g catalog.Good) int64 {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"name": g.Name, "category": g.Category, "price": g.Price, "description": g.Description})
	res, err := f.call(t, "POST/goods", string(b))
	if err != nil {
		t.Fatalf("POST /goods %s: %v", b, err)
	}
	id, ok := res["id"].(int64)
	if !ok || id < 1 {
		t.Fatalf("POST /goods = %v; want a positive int64 id", res)
	}
	return id
}

// one runs GET /goods?id= and returns the single good answered.
func (f *fixture) one(t testing.TB, id int64) catalog.Good {
	t.Helper()
	res, err := f.call(t, "GET/goods", `{"id":`+jsonInt(id)+`}`)
	if err != nil {
		t.Fatalf("GET /goods?id=%d: %v", id, err)
	}
	list, ok := res["results"].([]catalog.Good)
	if !ok || len(list) != 1 {
		t.Fatalf("GET /goods?id=%d = %#v; want one good in results", id, res)
	}
	return list[0]
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

// wantCode checks that err maps to the given errorcode and message.
func wantCode(t testing.TB, what string, err error, code int, msg string) {
	t.Helper()
	gotCode, gotMsg := service.ErrorCode(err)
	if gotCode != code || (msg != "" && gotMsg != msg) {
		t.Fatalf("%s: error = %d %q (%v); want %d %q", what, gotCode, gotMsg, err, code, msg)
	}
}

func TestCreateValidation(t *testing.T) {
	f := newFixture(t)
	long := func(n int) string { return strings.Repeat("é", n) }
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	tests := []struct {
		name   string
		params string
		msg    string // "" for success
	}{
		{"ok", `{"name":"pen","category":"office","price":120,"description":"blue"}`, ""},
		{"ok price as string", `{"name":"pen","price":"120"}`, ""},
		{"ok price zero", `{"name":"free pen","price":0}`, ""},
		{"ok max lengths", js(map[string]any{"name": long(128), "category": long(64), "description": long(2000), "price": 1}), ""},
		{"ok max price", `{"name":"gold","price":9007199254740991}`, ""},
		{"ok multiline description", js(map[string]any{"name": "pen", "price": 1, "description": "line1\nline2\ttab"}), ""},
		{"name missing", `{"price":1}`, "name is required"},
		{"name empty", `{"name":"","price":1}`, "name is required"},
		{"name blank", `{"name":"   ","price":1}`, "name is required"},
		{"name null", `{"name":null,"price":1}`, "name is required"},
		{"name too long", js(map[string]any{"name": long(129), "price": 1}), "name must be at most 128 characters"},
		{"name control char", js(map[string]any{"name": "a\x00b", "price": 1}), "name must not contain control characters"},
		{"name newline", js(map[string]any{"name": "a\nb", "price": 1}), "name must not contain control characters"},
		{"name object", `{"name":{"a":1},"price":1}`, "name must be a string"},
		{"category too long", js(map[string]any{"name": "pen", "category": long(65), "price": 1}), "category must be at most 64 characters"},
		{"description too long", js(map[string]any{"name": "pen", "description": long(2001), "price": 1}), "description must be at most 2000 characters"},
		{"description NUL", js(map[string]any{"name": "pen", "description": "a\x00", "price": 1}), "description must not contain control characters"},
		{"price missing", `{"name":"pen"}`, "price is required"},
		{"price empty", `{"name":"pen","price":""}`, "price is required"},
		{"price fraction", `{"name":"pen","price":12.5}`, "price must be an integer"},
		{"price fraction string", `{"name":"pen","price":"12.5"}`, "price must be an integer"},
		{"price negative", `{"name":"pen","price":-1}`, "price must not be negative"},
		{"price negative string", `{"name":"pen","price":"-1"}`, "price must not be negative"},
		{"price word", `{"name":"pen","price":"abc"}`, "price must be an integer"},
		{"price huge", `{"name":"pen","price":99999999999999999999999}`, "price must be an integer"},
		{"price over 2^53", `{"name":"pen","price":9007199254740992}`, "price must be at most 9007199254740991"},
		{"price exponent", `{"name":"pen","price":1e3}`, "price must be an integer"},
		{"price bool", `{"name":"pen","price":true}`, "price must be an integer"},
		{"price array", `{"name":"pen","price":[1]}`, "price must be an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := f.call(t, "POST/goods", tt.params)
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("POST /goods %s: %v; want success", tt.params, err)
				}
				if id, _ := res["id"].(int64); id < 1 {
					t.Fatalf("POST /goods %s = %v; want an id", tt.params, res)
				}
				return
			}
			wantCode(t, "POST /goods "+tt.params, err, 400, tt.msg)
		})
	}
}

func TestCreateGetList(t *testing.T) {
	f := newFixture(t)
	pen := catalog.Good{Name: "pen", Category: "office", Price: 120, Description: "blue ink"}
	cup := catalog.Good{Name: "cup", Category: "kitchen", Price: 800}
	pen.ID = f.create(t, pen)
	cup.ID = f.create(t, cup)
	if cup.ID <= pen.ID {
		t.Fatalf("ids %d then %d; want increasing", pen.ID, cup.ID)
	}
	if got := f.one(t, pen.ID); got != pen {
		t.Fatalf("GET /goods?id=%d = %+v; want %+v", pen.ID, got, pen)
	}
	res, err := f.call(t, "GET/goods", `{}`)
	if err != nil {
		t.Fatalf("GET /goods: %v", err)
	}
	list, _ := res["results"].([]catalog.Good)
	if len(list) != 2 || list[0] != pen || list[1] != cup {
		t.Fatalf("GET /goods = %+v; want [%+v %+v]", res["results"], pen, cup)
	}
	// The id parameter may come as a query-string string.
	res, err = f.call(t, "GET/goods", `{"id":"`+jsonInt(cup.ID)+`","key":5}`)
	if err != nil {
		t.Fatalf("GET /goods?id=%d (string): %v", cup.ID, err)
	}
	if list, _ := res["results"].([]catalog.Good); len(list) != 1 || list[0] != cup {
		t.Fatalf("GET /goods?id=%d = %+v; want [%+v]", cup.ID, res["results"], cup)
	}
}

func TestListEmptyIsArray(t *testing.T) {
	f := newFixture(t)
	res, err := f.call(t, "GET/goods", `{}`)
	if err != nil {
		t.Fatalf("GET /goods: %v", err)
	}
	b, _ := json.Marshal(res)
	if string(b) != `{"results":[]}` {
		t.Fatalf("GET /goods on an empty shop = %s; want {\"results\":[]}", b)
	}
}

func TestGetErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		params string
		code   int
		msg    string
	}{
		{`{"id":999}`, 404, "good 999 not found"},
		{`{"id":"abc"}`, 400, "id must be an integer"},
		{`{"id":""}`, 400, "id is required"},
		{`{"id":0}`, 400, "id must be a positive integer"},
		{`{"id":-3}`, 400, "id must be a positive integer"},
		{`{"id":1.5}`, 400, "id must be an integer"},
		{`{"id":99999999999999999999}`, 400, "id must be an integer"},
	}
	for _, tt := range tests {
		_, err := f.call(t, "GET/goods", tt.params)
		wantCode(t, "GET /goods "+tt.params, err, tt.code, tt.msg)
	}
}

func TestCacheAside(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	g := catalog.Good{Name: "lamp", Category: "home", Price: 2500, Description: "warm"}
	g.ID = f.create(t, g)

	// Written to Redis on create.
	cached, err := catalog.OwnEntries(f.cache).Get(ctx, g.ID)
	if err != nil || cached != g {
		t.Fatalf("cache after create = %+v, %v; want %+v", cached, err, g)
	}
	if ttl := f.cache.TTL(ctx, catalog.OwnEntries(f.cache).Key(g.ID)).Val(); ttl <= 0 || ttl > catalog.TTL {
		t.Fatalf("TTL of cache entry = %v; want in (0, %v]", ttl, catalog.TTL)
	}

	// After the cache is lost, GET still answers (from the database) and refills it.
	testenv.FlushPrefix(t, f.cache)
	if _, err := catalog.OwnEntries(f.cache).Get(ctx, g.ID); !errors.Is(err, redis.Nil) {
		t.Fatalf("cache after flush: err = %v; want redis.Nil", err)
	}
	if got := f.one(t, g.ID); got != g {
		t.Fatalf("GET after flush = %+v; want %+v", got, g)
	}
	if cached, err := catalog.OwnEntries(f.cache).Get(ctx, g.ID); err != nil || cached != g {
		t.Fatalf("cache after GET = %+v, %v; want %+v (refilled)", cached, err, g)
	}

	// GET reads Redis first: a (deliberately different) cached entry wins.
	marked := g
	marked.Name = "from redis"
	if err := catalog.OwnEntries(f.cache).Put(ctx, marked); err != nil {
		t.Fatal(err)
	}
	if got := f.one(t, g.ID); got != marked {
		t.Fatalf("GET with a cached entry = %+v; want the cached %+v", got, marked)
	}

	// A corrupt entry is a miss, repaired from the database.
	if err := f.cache.Set(ctx, catalog.OwnEntries(f.cache).Key(g.ID), "{not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := f.one(t, g.ID); got != g {
		t.Fatalf("GET with a corrupt entry = %+v; want %+v", got, g)
	}
	if cached, err := catalog.OwnEntries(f.cache).Get(ctx, g.ID); err != nil || cached != g {
		t.Fatalf("cache after repair = %+v, %v; want %+v", cached, err, g)
	}
}

func TestPilcrowRoundTrip(t *testing.T) {
	f := newFixture(t)
	g := catalog.Good{Name: "¶ pilcrow¶", Category: "¶", Price: 1, Description: "a¶b\n¶¶ \\u00b6 literal"}
	g.ID = f.create(t, g)
	testenv.FlushPrefix(t, f.cache) // force the database path
	if got := f.one(t, g.ID); got != g {
		t.Fatalf("GET from the database = %+v; want %+v", got, g)
	}
	if got := f.one(t, g.ID); got != g { // now from Redis
		t.Fatalf("GET from Redis = %+v; want %+v", got, g)
	}
}

func TestDelete(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.create(t, catalog.Good{Name: "vase", Price: 10})
	keep := f.create(t, catalog.Good{Name: "bowl", Price: 20})

	res, err := f.call(t, "DELETE/goods", `{"id":`+jsonInt(id)+`}`)
	if err != nil || len(res) != 0 {
		t.Fatalf("DELETE /goods?id=%d = %v, %v; want an empty success", id, res, err)
	}
	if _, err := catalog.OwnEntries(f.cache).Get(ctx, id); !errors.Is(err, catalog.ErrDeleted) {
		t.Fatalf("cache entry of deleted good: Get = %v; want catalog.ErrDeleted (a tombstone)", err)
	}
	// A reader that read the good from the database just before the delete
	// and refills the cache after it cannot bring it back.
	if wrote, err := catalog.OwnEntries(f.cache).Fill(ctx, catalog.Good{ID: id, Name: "vase", Price: 10}); err != nil || wrote {
		t.Fatalf("late refill = %v, %v; want nothing written over the tombstone", wrote, err)
	}
	if _, err := catalog.OwnEntries(f.cache).Get(ctx, id); !errors.Is(err, catalog.ErrDeleted) {
		t.Fatalf("after a late refill: Get = %v; want catalog.ErrDeleted", err)
	}
	_, err = f.call(t, "GET/goods", `{"id":`+jsonInt(id)+`}`)
	wantCode(t, "GET deleted good", err, 404, "good "+jsonInt(id)+" not found")
	_, err = f.call(t, "DELETE/goods", `{"id":`+jsonInt(id)+`}`)
	wantCode(t, "DELETE twice", err, 404, "good "+jsonInt(id)+" not found")
	_, err = f.call(t, "DELETE/goods", `{}`)
	wantCode(t, "DELETE without id", err, 400, "id is required")
	_, err = f.call(t, "DELETE/goods", `{"id":"x"}`)
	wantCode(t, "DELETE bad id", err, 400, "id must be an integer")

	if got := f.one(t, keep); got.Name != "bowl" {
		t.Fatalf("other good after delete = %+v; want bowl", got)
	}
}

// TestRedisDown shows that the database alone serves every route.
func TestRedisDown(t *testing.T) {
	down, err := cache.Open("redis://127.0.0.1:1/0", "down:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	svc := goods.New(testenv.DB(t), catalog.OwnEntries(down), nil)
	f := &fixture{svc: svc, cache: down, routes: svc.Routes()}

	g := catalog.Good{Name: "kettle", Price: 3000}
	g.ID = f.create(t, g)
	if got := f.one(t, g.ID); got != g {
		t.Fatalf("GET with Redis down = %+v; want %+v", got, g)
	}
	if _, err := f.call(t, "DELETE/goods", `{"id":`+jsonInt(g.ID)+`}`); err != nil {
		t.Fatalf("DELETE with Redis down: %v", err)
	}
	_, err = f.call(t, "GET/goods", `{"id":`+jsonInt(g.ID)+`}`)
	wantCode(t, "GET deleted good with Redis down", err, 404, "")
}

// TestDatabaseErrorIsHidden checks that a database failure is an opaque 500.
func TestDatabaseErrorIsHidden(t *testing.T) {
	db := testenv.DB(t)
	svc := goods.New(db, catalog.OwnEntries(testenv.Cache(t)), nil)
	db.Close()
	_, err := svc.Routes()["GET/goods"](context.Background(), &service.Request{Params: service.Params{}})
	if err == nil {
		t.Fatal("GET /goods on a closed database: nil error")
	}
	wantCode(t, "closed database", err, 500, "internal error")
}

func BenchmarkGetGoodCached(b *testing.B) {
	f := newFixture(b)
	id := f.create(b, catalog.Good{Name: "pen", Category: "office", Price: 120, Description: "blue"})
	h := f.routes["GET/goods"]
	r := &service.Request{Method: "GET", URI: "/goods", Params: service.Params{"id": json.Number(jsonInt(id))}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// A Redis that fails for a moment keeps its data: a delete whose tombstone
// it missed is repaired in the background once it answers, so the good
// does not stay cached (and buyable) until the entry expires.
func TestDeleteDuringRedisBlip(t *testing.T) {
	m := miniredis.RunT(t)
	c, err := cache.Open("redis://"+m.Addr()+"/0", "blip:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc := goods.New(testenv.DB(t), catalog.OwnEntries(c), nil)
	f := &fixture{svc: svc, cache: c, routes: svc.Routes()}
	g := catalog.Good{Name: "kettle", Price: 3000}
	g.ID = f.create(t, g)
	f.one(t, g.ID) // cached
	m.Close()
	if _, err := f.call(t, "DELETE/goods", `{"id":`+jsonInt(g.ID)+`}`); err != nil {
		t.Fatalf("DELETE with Redis away: %v", err)
	}
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // a hang guard only
	for {
		_, err := catalog.OwnEntries(c).Get(context.Background(), g.ID)
		if errors.Is(err, catalog.ErrDeleted) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted good is still cached after Redis came back (Get: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With --goods-cache=book, goods keeps the book's entries: the bare key N
// without expiry for a good created or read, DEL when it is deleted (a
// tombstone would be a good to the book's purchases), and a fill of a good
// deleted meanwhile taken back by the recheck.
func TestBookCacheFormat(t *testing.T) {
	ctx := context.Background()
	c := testenv.Cache(t)
	db := testenv.DB(t)
	testenv.SpreadGoodsIDs(t, db)
	e := catalog.Entries{Redis: c, Format: catalog.Book}
	svc := goods.New(db, e, nil)
	f := &fixture{svc: svc, cache: c, routes: svc.Routes()}
	id := f.create(t, catalog.Good{Name: "tea", Category: "drinks", Price: 300})
	t.Cleanup(func() { c.Del(context.Background(), e.Key(id)) })
	if ttl := c.TTL(ctx, e.Key(id)).Val(); ttl != -1 {
		t.Fatalf("TTL of the new good's book entry %q = %v; want no expiry", e.Key(id), ttl)
	}
	if g, err := e.Get(ctx, id); err != nil || g.Name != "tea" || g.Price != 300 {
		t.Fatalf("book entry after POST = %+v, %v", g, err)
	}
	// Lost (FLUSHALL), it comes back on the next read, still without expiry.
	c.Del(ctx, e.Key(id))
	if g := f.one(t, id); g.Name != "tea" {
		t.Fatalf("GET after losing the entry = %+v", g)
	}
	if ttl := c.TTL(ctx, e.Key(id)).Val(); ttl != -1 {
		t.Fatalf("TTL of the refilled book entry = %v; want no expiry", ttl)
	}
	if _, err := f.call(t, "DELETE/goods", `{"id":`+jsonInt(id)+`}`); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, e.Key(id)).Val(); n != 0 {
		t.Fatalf("after DELETE the book entry exists; want it deleted")
	}
	if _, err := f.call(t, "GET/goods", `{"id":`+jsonInt(id)+`}`); err == nil {
		t.Fatalf("GET of the deleted good answered it")
	}
	if n := c.Exists(ctx, e.Key(id)).Val(); n != 0 {
		t.Fatalf("a GET of the deleted good wrote its book entry back")
	}
}

// PATCH /goods changes the fields given and keeps the others, in the
// database and in the cache entry; bad input is a 400 that changes
// nothing, a missing good a 404.
func TestEdit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	g := catalog.Good{Name: "vase", Category: "home", Price: 10, Description: "blue"}
	g.ID = f.create(t, g)
	f.one(t, g.ID) // cached
	for _, tc := range []struct{ params, msg string }{
		{`{"id":` + jsonInt(g.ID) + `}`, "nothing to change: give one of name, category, price, description"},
		{`{"id":` + jsonInt(g.ID) + `,"colour":"red","name":"x"}`, "unknown field colour: a good has name, category, price, description"},
		{`{"id":` + jsonInt(g.ID) + `,"price":-1}`, "price must not be negative"},
		{`{"id":` + jsonInt(g.ID) + `,"price":"ten"}`, "price must be an integer"},
		{`{"id":` + jsonInt(g.ID) + `,"price":9007199254740992}`, "price must be at most 9007199254740991"},
		{`{"id":` + jsonInt(g.ID) + `,"name":"  "}`, "name must not be blank"},
		{`{"id":` + jsonInt(g.ID) + `,"name":""}`, "name is required"},
		{`{"id":` + jsonInt(g.ID) + `,"name":"a\u0001b"}`, "name must not contain control characters"},
		{`{"id":` + jsonInt(g.ID) + `,"category":"` + strings.Repeat("c", goods.MaxCategoryLen+1) + `"}`, "category must be at most 64 characters"},
		{`{"id":` + jsonInt(g.ID) + `,"name":["x"]}`, "name must be a string"},
		{`{"name":"x"}`, "id is required"},
		{`{"id":0,"name":"x"}`, "id must be a positive integer"},
	} {
		_, err := f.call(t, "PATCH/goods", tc.params)
		wantCode(t, "PATCH "+tc.params, err, 400, tc.msg)
	}
	if got := f.one(t, g.ID); got != g {
		t.Fatalf("after refused edits: %+v; want %+v unchanged", got, g)
	}
	_, err := f.call(t, "PATCH/goods", `{"id":`+jsonInt(g.ID+1000)+`,"price":1}`)
	wantCode(t, "PATCH missing good", err, 404, "good "+jsonInt(g.ID+1000)+" not found")

	res, err := f.call(t, "PATCH/goods", `{"id":`+jsonInt(g.ID)+`,"price":"12","description":"","key":7}`)
	if err != nil {
		t.Fatalf("PATCH price and description: %v", err)
	}
	want := g
	want.Price, want.Description = 12, ""
	if list, _ := res["results"].([]catalog.Good); len(list) != 1 || list[0] != want {
		t.Fatalf("PATCH answer = %#v; want [%+v]", res, want)
	}
	if got, err := catalog.OwnEntries(f.cache).Get(ctx, g.ID); err != nil || got != want {
		t.Fatalf("cache entry after PATCH = %+v, %v; want %+v", got, err, want)
	}
	if got := f.one(t, g.ID); got != want {
		t.Fatalf("GET after PATCH = %+v; want %+v", got, want)
	}
	// The same values again (MySQL reports no row changed): still a success.
	if _, err := f.call(t, "PATCH/goods", `{"id":`+jsonInt(g.ID)+`,"price":12}`); err != nil {
		t.Fatalf("PATCH to the same price: %v", err)
	}
	// The cache lost (FLUSHALL): the next read fills it with the edit.
	f.cache.Del(ctx, catalog.OwnEntries(f.cache).Key(g.ID))
	if got := f.one(t, g.ID); got != want {
		t.Fatalf("GET after losing the entry = %+v; want %+v", got, want)
	}
	if _, err := f.call(t, "DELETE/goods", `{"id":`+jsonInt(g.ID)+`}`); err != nil {
		t.Fatal(err)
	}
	_, err = f.call(t, "PATCH/goods", `{"id":`+jsonInt(g.ID)+`,"price":1}`)
	wantCode(t, "PATCH deleted good", err, 404, "")
	if _, err := catalog.OwnEntries(f.cache).Get(ctx, g.ID); !errors.Is(err, catalog.ErrDeleted) {
		t.Fatalf("after PATCH of a deleted good: Get = %v; want the tombstone kept", err)
	}
}

// Concurrent edits of one good, each from its own goroutine, leave its
// cache entry equal to the row, whatever order their commits and their
// Redis writes came in.
func TestEditConcurrent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for round := range 20 {
		id := f.create(t, catalog.Good{Name: "pen", Price: 1})
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				p := `{"id":` + jsonInt(id) + `,"price":` + jsonInt(int64(100*round+i)) + `}`
				if _, err := f.call(t, "PATCH/goods", p); err != nil {
					t.Errorf("PATCH %s: %v", p, err)
				}
			})
		}
		wg.Wait()
		want := catalog.Good{ID: id, Name: "pen"}
		if err := f.db.QueryRowContext(ctx, `SELECT price FROM goods WHERE id = ?`, id).Scan(&want.Price); err != nil {
			t.Fatal(err)
		}
		if got, err := catalog.OwnEntries(f.cache).Get(ctx, id); err != nil || got != want {
			t.Fatalf("round %d: cache entry = %+v, %v; want the row %+v", round, got, err, want)
		}
	}
}

// An edit while Redis is away still commits, and its answer is the row;
// once Redis answers again, the cached entry (which a Redis that failed
// for a moment keeps) is repaired in the background to the edited good.
func TestEditDuringRedisBlip(t *testing.T) {
	m := miniredis.RunT(t)
	c, err := cache.Open("redis://"+m.Addr()+"/0", "blip:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc := goods.New(testenv.DB(t), catalog.OwnEntries(c), nil)
	f := &fixture{svc: svc, cache: c, routes: svc.Routes()}
	g := catalog.Good{Name: "kettle", Price: 3000}
	g.ID = f.create(t, g)
	f.one(t, g.ID) // cached
	m.Close()
	res, err := f.call(t, "PATCH/goods", `{"id":`+jsonInt(g.ID)+`,"price":2500}`)
	if err != nil {
		t.Fatalf("PATCH with Redis away: %v", err)
	}
	want := g
	want.Price = 2500
	if list, _ := res["results"].([]catalog.Good); len(list) != 1 || list[0] != want {
		t.Fatalf("PATCH answer with Redis away = %v; want [%+v]", res, want)
	}
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // a hang guard only
	for {
		got, err := catalog.OwnEntries(c).Get(context.Background(), g.ID)
		if err == nil && got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cached good is still %+v (%v) after Redis came back; want %+v", got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := f.one(t, g.ID); got != want {
		t.Fatalf("GET after the repair = %+v; want %+v", got, want)
	}
}
