package catalog_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// bookGoods answers GET /goods as the book's goods does: every good, id
// ignored, or "no data" when there is none.
type bookGoods struct{ goods []catalog.Good }

func (g *bookGoods) Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error) {
	var framed []byte
	if len(g.goods) == 0 {
		framed = []byte(`{"key":1,"errorcode":1,"errormessage":"no data"}`)
	} else {
		b, _ := json.Marshal(map[string]any{"key": 1, "errorcode": 0, "errormessage": "success", "results": g.goods})
		framed = b
	}
	return packet.Decode(framed)
}

// The book's format: the bare key N, the JSON of the good's POST (as the
// book's goods writes it: strings from the book's gate, a key among them),
// no expiry, and DEL for a deletion, never a tombstone.
func TestBookFormat(t *testing.T) {
	ctx := context.Background()
	c := testenv.Cache(t)
	e := catalog.Entries{Redis: c, Format: catalog.Book}
	id := 900000 + rand.Int64N(90000)
	if k := e.Key(id); k != itoa(id) {
		t.Fatalf("Key(%d) = %q; want the bare id", id, k)
	}
	t.Cleanup(func() { c.Del(context.Background(), itoa(id), itoa(id+1)) })

	// An entry the book's goods wrote.
	c.Set(ctx, itoa(id), `{"name":"tea","category":"drinks","price":"300","description":"green","key":7}`, 0)
	g, err := e.Get(ctx, id)
	if err != nil || g != (catalog.Good{ID: id, Name: "tea", Category: "drinks", Price: 300, Description: "green"}) {
		t.Fatalf("Get of the book's entry = %+v, %v", g, err)
	}
	// One microshop's goods writes, read back and as the book reads it.
	cup := catalog.Good{ID: id + 1, Name: "cup", Category: "kitchen", Price: 800}
	if err := e.Put(ctx, cup); err != nil {
		t.Fatal(err)
	}
	raw := c.Get(ctx, itoa(id+1)).Val()
	var be map[string]any
	if json.Unmarshal([]byte(raw), &be) != nil || be["name"] != "cup" || be["price"] != 800.0 {
		t.Fatalf("entry written = %s; want the book's fields", raw)
	}
	if ttl := c.TTL(ctx, itoa(id+1)).Val(); ttl != -1 {
		t.Fatalf("TTL of a book entry = %v; want none (the book's purchases sells only what is cached)", ttl)
	}
	if got, err := e.Get(ctx, id+1); err != nil || got != cup {
		t.Fatalf("Get after Put = %+v, %v", got, err)
	}
	goods, found, err := e.GetMany(ctx, []int64{id + 1, id + 2, id})
	if err != nil || !found[0] || found[1] || !found[2] || goods[2].Name != "tea" {
		t.Fatalf("GetMany = %+v, %v, %v", goods, found, err)
	}
	// A deletion removes the key: the book's purchases then refuses the good.
	if err := e.Forget(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, itoa(id)).Val(); n != 0 {
		t.Fatalf("after Forget the key exists (%d); want it deleted", n)
	}
	if _, err := e.Get(ctx, id); !errors.Is(err, redis.Nil) {
		t.Fatalf("Get after Forget = %v; want a miss", err)
	}
	c.Set(ctx, itoa(id), `{"name":"x","price":"12.5"}`, 0)
	if _, err := e.Get(ctx, id); !errors.Is(err, catalog.ErrCorrupt) {
		t.Fatalf("Get of an unreadable price = %v; want ErrCorrupt", err)
	}
}

// Asking the book's goods: good N is found among all the goods it answers;
// absent, or "no data", it is a 404. In the book's format a lookup never
// writes the cache (only goods services do).
func TestLookupWithTheBooksGoods(t *testing.T) {
	ctx := context.Background()
	c := testenv.Cache(t)
	id := 800000 + rand.Int64N(90000)
	t.Cleanup(func() { c.Del(context.Background(), itoa(id), itoa(id+1)) })
	svc := &bookGoods{goods: []catalog.Good{{ID: id - 1, Name: "a"}, {ID: id, Name: "b", Price: 5}, {ID: id + 2, Name: "c"}}}
	for _, f := range []catalog.Format{catalog.Own, catalog.Book} {
		l := catalog.NewLookup(c, f, svc)
		g, err := l.Find(ctx, id)
		if err != nil || g.Name != "b" || g.ID != id {
			t.Fatalf("%v: Find(%d) = %+v, %v; want b, found among all the goods", f, id, g, err)
		}
		if _, err := l.Find(ctx, id+1); !isStatus(err, 404) {
			t.Fatalf("%v: Find of a good the book's list lacks = %v; want 404", f, err)
		}
	}
	if n := c.Exists(ctx, itoa(id)).Val(); n != 0 {
		t.Fatalf("a book-format lookup wrote the cache")
	}
	l := catalog.NewLookup(c, catalog.Book, &bookGoods{})
	if _, err := l.Find(ctx, id+1); !isStatus(err, 404) {
		t.Fatalf("Find with the book's \"no data\" = %v; want 404", err)
	}
}

func isStatus(err error, status int) bool {
	code, _ := service.ErrorCode(err)
	return code == status
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
