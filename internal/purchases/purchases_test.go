package purchases_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/goods"
	"github.com/microshop/microshop/internal/purchases"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// goodsPeer stands in for a goods service reached over the protocol: it
// serves GET /goods with the real goods handler, in process, and answers
// with the *packet.Message a real peer's response decodes to.
type goodsPeer struct {
	routes map[string]service.Handler
	fail   error // when set, every call fails with it (peer unreachable)
	calls  atomic.Int32
}

func (p *goodsPeer) Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error) {
	n := p.calls.Add(1)
	if p.fail != nil {
		return nil, p.fail
	}
	key := json.RawMessage(jsonInt(int64(n)))
	h, ok := p.routes[method+path]
	if !ok {
		return decodeResponse(key, 404, "no such route", nil)
	}
	prm, err := service.DecodeParams(params)
	if err != nil {
		return nil, err
	}
	res, herr := h(ctx, &service.Request{Method: method, URI: path, Params: prm})
	code, msg := service.ErrorCode(herr)
	var body []byte
	if herr == nil {
		if body, err = json.Marshal(res); err != nil {
			return nil, err
		}
	}
	return decodeResponse(key, code, msg, body)
}

// decodeResponse frames a response as a peer writes it and decodes it as
// the reading side does.
func decodeResponse(key json.RawMessage, code int, msg string, body []byte) (*packet.Message, error) {
	framed := packet.AppendResponse(nil, key, code, msg, body)
	return packet.Decode(bytes.TrimSuffix(framed, []byte(packet.Separator)))
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

// fixture is a purchases service and a goods service sharing one database
// and one Redis (or, with down, a Redis that does not answer).
type fixture struct {
	db     *store.DB
	svc    *purchases.Service
	cache  *cache.Cache
	goods  map[string]service.Handler
	peer   *goodsPeer
	routes map[string]service.Handler
}

func newFixture(t testing.TB, c *cache.Cache) *fixture {
	t.Helper()
	db := testenv.DB(t)
	if c == nil {
		c = testenv.Cache(t)
	}
	g := goods.New(db, catalog.OwnEntries(c), nil).Routes()
	peer := &goodsPeer{routes: g}
	svc := purchases.New(db, c, catalog.NewLookup(c, catalog.Own, peer), nil)
	return &fixture{db: db, svc: svc, cache: c, goods: g, peer: peer, routes: svc.Routes()}
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

func call(t testing.TB, routes map[string]service.Handler, route, params string) (service.Result, error) {
	t.Helper()
	p, err := service.DecodeParams([]byte(params))
	if err != nil {
		t.Fatalf("bad test params %s: %v", params, err)
	}
	method, uri, _ := strings.Cut(route, "/")
	return routes[route](context.Background(), &service.Request{Method: method, URI: "/" + uri, Params: p})
}

// newGood creates a good through the goods service and returns its id.
func (f *fixture) newGood(t testing.TB, name string) int64 {
	t.Helper()
	res, err := call(t, f.goods, "POST/goods", `{"name":"`+name+`","price":100}`)
	if err != nil {
		t.Fatalf("POST /goods: %v", err)
	}
	return res["id"].(int64)
}

// buy runs POST /purchases and returns the new purchase id.
func (f *fixture) buy(t testing.TB, userID, goodsID int64) int64 {
	t.Helper()
	res, err := call(t, f.routes, "POST/purchases", `{"userid":`+jsonInt(userID)+`,"goodsid":`+jsonInt(goodsID)+`}`)
	if err != nil {
		t.Fatalf("POST /purchases userid=%d goodsid=%d: %v", userID, goodsID, err)
	}
	id, ok := res["id"].(int64)
	if !ok || id < 1 {
		t.Fatalf("POST /purchases = %v; want a positive id", res)
	}
	return id
}

func (f *fixture) list(t testing.TB, userID int64) []purchases.Purchase {
	t.Helper()
	res, err := call(t, f.routes, "GET/purchases", `{"userid":`+jsonInt(userID)+`}`)
	if err != nil {
		t.Fatalf("GET /purchases?userid=%d: %v", userID, err)
	}
	list, ok := res["results"].([]purchases.Purchase)
	if !ok {
		t.Fatalf("GET /purchases?userid=%d = %#v; want results", userID, res)
	}
	return list
}

func wantCode(t testing.TB, what string, err error, code int, msg string) {
	t.Helper()
	gotCode, gotMsg := service.ErrorCode(err)
	if gotCode != code || (msg != "" && gotMsg != msg) {
		t.Fatalf("%s: error = %d %q (%v); want %d %q", what, gotCode, gotMsg, err, code, msg)
	}
}

func TestValidation(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		route, params, msg string
	}{
		{"POST/purchases", `{"goodsid":1}`, "userid is required"},
		{"POST/purchases", `{"userid":1}`, "goodsid is required"},
		{"POST/purchases", `{"userid":0,"goodsid":1}`, "userid must be a positive integer"},
		{"POST/purchases", `{"userid":-1,"goodsid":1}`, "userid must be a positive integer"},
		{"POST/purchases", `{"userid":"abc","goodsid":1}`, "userid must be an integer"},
		{"POST/purchases", `{"userid":1.5,"goodsid":1}`, "userid must be an integer"},
		{"POST/purchases", `{"userid":1,"goodsid":"1.0"}`, "goodsid must be an integer"},
		{"POST/purchases", `{"userid":1,"goodsid":[1]}`, "goodsid must be an integer"},
		{"POST/purchases", `{"userid":1,"goodsid":99999999999999999999}`, "goodsid must be an integer"},
		{"POST/purchases", `{"userid":1,"goodsid":9007199254740993}`, "goodsid must be a positive integer"},
		{"GET/purchases", `{}`, "userid is required"},
		{"GET/purchases", `{"userid":"x"}`, "userid must be an integer"},
		{"GET/purchases", `{"userid":0}`, "userid must be a positive integer"},
	}
	for _, tt := range tests {
		_, err := call(t, f.routes, tt.route, tt.params)
		wantCode(t, tt.route+" "+tt.params, err, 400, tt.msg)
	}
	if n := f.peer.calls.Load(); n != 0 {
		t.Fatalf("invalid requests asked the goods service %d times; want 0", n)
	}
}

// TestGoodFromRedis: a cached good is found without asking goods.
func TestGoodFromRedis(t *testing.T) {
	f := newFixture(t, nil)
	gid := f.newGood(t, "pen") // goods caches it
	f.buy(t, 7, gid)
	if n := f.peer.calls.Load(); n != 0 {
		t.Fatalf("goods service asked %d times for a cached good; want 0", n)
	}
}

// TestGoodAfterFlush: with the cache lost, purchases asks goods and
// refills the cache for the next purchase.
func TestGoodAfterFlush(t *testing.T) {
	f := newFixture(t, nil)
	gid := f.newGood(t, "pen")
	testenv.FlushPrefix(t, f.cache)
	f.buy(t, 7, gid)
	if n := f.peer.calls.Load(); n != 1 {
		t.Fatalf("goods service asked %d times after a flush; want 1", n)
	}
	if g, err := catalog.OwnEntries(f.cache).Get(context.Background(), gid); err != nil || g.Name != "pen" {
		t.Fatalf("cache after the purchase = %+v, %v; want the good refilled", g, err)
	}
	f.buy(t, 8, gid)
	if n := f.peer.calls.Load(); n != 1 {
		t.Fatalf("goods service asked %d times for a refilled good; want still 1", n)
	}
}

// TestRedisDown: with Redis unreachable, purchases asks goods, which
// answers from the database.
func TestRedisDown(t *testing.T) {
	f := newFixture(t, downCache(t))
	gid := f.newGood(t, "pen")
	id := f.buy(t, 7, gid)
	if n := f.peer.calls.Load(); n != 1 {
		t.Fatalf("goods service asked %d times with Redis down; want 1", n)
	}
	if list := f.list(t, 7); len(list) != 1 || list[0].ID != id || list[0].GoodsID != gid {
		t.Fatalf("GET /purchases with Redis down = %+v; want purchase %d of good %d", list, id, gid)
	}
	_, err := call(t, f.routes, "POST/purchases", `{"userid":7,"goodsid":999}`)
	wantCode(t, "unknown good with Redis down", err, 404, "good 999 not found")
}

func TestUnknownGood(t *testing.T) {
	f := newFixture(t, nil)
	_, err := call(t, f.routes, "POST/purchases", `{"userid":7,"goodsid":999}`)
	wantCode(t, "POST /purchases unknown good", err, 404, "good 999 not found")

	// A deleted good is gone for purchases too (its cache entry is dropped).
	gid := f.newGood(t, "pen")
	if _, err := call(t, f.goods, "DELETE/goods", `{"id":`+jsonInt(gid)+`}`); err != nil {
		t.Fatal(err)
	}
	_, err = call(t, f.routes, "POST/purchases", `{"userid":7,"goodsid":`+jsonInt(gid)+`}`)
	wantCode(t, "POST /purchases deleted good", err, 404, "")
	if list := f.list(t, 7); len(list) != 0 {
		t.Fatalf("purchases after refusals = %+v; want none", list)
	}
}

func TestGoodsUnavailable(t *testing.T) {
	for _, fail := range []error{packet.ErrClosed, packet.ErrTimeout, context.Canceled} {
		f := newFixture(t, nil)
		gid := f.newGood(t, "pen")
		testenv.FlushPrefix(t, f.cache)
		f.peer.fail = fail
		_, err := call(t, f.routes, "POST/purchases", `{"userid":7,"goodsid":`+jsonInt(gid)+`}`)
		wantCode(t, "POST /purchases, goods failing with "+fail.Error(), err, 503, "")
		if list := f.list(t, 7); len(list) != 0 {
			t.Fatalf("purchases after a 503 = %+v; want none", list)
		}
	}
}

func TestList(t *testing.T) {
	f := newFixture(t, nil)
	pen, cup := f.newGood(t, "pen"), f.newGood(t, "cup")
	before := time.Now().UTC().Truncate(time.Millisecond)
	a := f.buy(t, 1, pen)
	f.buy(t, 2, pen)
	b := f.buy(t, 1, cup)
	c := f.buy(t, 1, pen)
	after := time.Now().UTC()

	list := f.list(t, 1)
	want := []struct{ id, goodsID int64 }{{a, pen}, {b, cup}, {c, pen}}
	if len(list) != len(want) {
		t.Fatalf("GET /purchases?userid=1 = %+v; want %d purchases", list, len(want))
	}
	for i, p := range list {
		if p.ID != want[i].id || p.GoodsID != want[i].goodsID {
			t.Fatalf("purchase %d = %+v; want id %d goodsid %d", i, p, want[i].id, want[i].goodsID)
		}
		d, err := time.Parse(time.RFC3339Nano, p.Date)
		if err != nil || !strings.HasSuffix(p.Date, "Z") || len(p.Date) != len("2006-01-02T15:04:05.000Z") {
			t.Fatalf("date %q: want RFC 3339 UTC with milliseconds (%v)", p.Date, err)
		}
		if d.Before(before) || d.After(after) {
			t.Fatalf("date %v; want between %v and %v", d, before, after)
		}
	}
	// The JSON answer has exactly the book's fields.
	res, _ := call(t, f.routes, "GET/purchases", `{"userid":2}`)
	b2, _ := json.Marshal(res)
	var decoded struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b2, &decoded); err != nil || len(decoded.Results) != 1 || len(decoded.Results[0]) != 3 ||
		decoded.Results[0]["goodsid"] != float64(pen) || decoded.Results[0]["date"] == nil || decoded.Results[0]["id"] == nil {
		t.Fatalf("GET /purchases?userid=2 JSON = %s; want results of {id, goodsid, date}", b2)
	}
	// A member without purchases gets an empty array.
	res, _ = call(t, f.routes, "GET/purchases", `{"userid":3}`)
	if b, _ := json.Marshal(res); string(b) != `{"results":[]}` {
		t.Fatalf("GET /purchases?userid=3 = %s; want {\"results\":[]}", b)
	}
}

func BenchmarkPurchaseCachedGood(b *testing.B) {
	f := newFixture(b, nil)
	gid := f.newGood(b, "pen")
	h := f.routes["POST/purchases"]
	r := &service.Request{Method: "POST", URI: "/purchases", Params: service.Params{"userid": json.Number("7"), "goodsid": json.Number(jsonInt(gid))}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}
