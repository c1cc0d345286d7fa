// Package catalog is the goods contract that other services rely on: the
// Good type, its Redis cache entry, and Lookup, which finds a good the way
// DESIGN §1 prescribes: Redis first; on a miss, or with Redis down, ask the
// goods service over the protocol and refill the cache with its answer.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// TTL bounds how long a cached good may live without being re-read from the
// database; it limits the damage of any cache-aside race.
const TTL = time.Hour

// Good is one item for sale, as stored, cached and answered.
type Good struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Category    string `json:"category"`
	Price       int64  `json:"price"`
	Description string `json:"description"`
}

// Format is how the goods' cache entries are kept in Redis.
type Format int

const (
	// Own is microshop's format, the default: the key PREFIX goods:{N}
	// (Key), the good's JSON with its id, an hour's TTL, and a tombstone
	// when the good is deleted.
	Own Format = iota
	// Book is the book's (chapter 11), for a fleet that mixes the book's
	// goods or purchases with microshop's: the bare key N (no prefix), the
	// JSON of name, category, price and description, no expiry, deleted
	// with DEL when the good is. The book's purchases sells a good only
	// while its key exists, so in this format only the goods services
	// write entries (every good they create or read), nobody writes a
	// tombstone, and a reader that misses asks the goods service.
	Book
)

// ParseFormat reads a --goods-cache value: microshop or book.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "microshop", "":
		return Own, nil
	case "book":
		return Book, nil
	}
	return Own, fmt.Errorf("want microshop or book, got %q", s)
}

// String returns the --goods-cache value of f.
func (f Format) String() string {
	if f == Book {
		return "book"
	}
	return "microshop"
}

// Entries are the goods' cache entries in one Redis, in one Format.
type Entries struct {
	Redis  *cache.Cache
	Format Format
}

// OwnEntries returns the entries in c in microshop's format.
func OwnEntries(c *cache.Cache) Entries { return Entries{Redis: c} }

// Key returns the Redis key of good id's entry.
func (e Entries) Key(id int64) string {
	if e.Format == Book {
		return strconv.FormatInt(id, 10)
	}
	return e.Redis.Key("goods:{" + strconv.FormatInt(id, 10) + "}")
}

// ttl is the expiry of an entry: none in the book's format.
func (e Entries) ttl() time.Duration {
	if e.Format == Book {
		return 0
	}
	return TTL
}

// bookEntry is a good as the book caches it: the parameters of its POST,
// which come as strings from the book's gate (price "300") and as numbers
// from microshop's, with the request's key among them.
type bookEntry struct {
	Name        *string         `json:"name"`
	Category    string          `json:"category"`
	Price       json.RawMessage `json:"price"`
	Description string          `json:"description"`
}

// encode returns g's entry.
func (e Entries) encode(g Good) ([]byte, error) {
	if e.Format == Book {
		return json.Marshal(struct {
			Name        string `json:"name"`
			Category    string `json:"category"`
			Price       int64  `json:"price"`
			Description string `json:"description"`
		}{g.Name, g.Category, g.Price, g.Description})
	}
	return json.Marshal(g)
}

// decode reads good id's entry b; ok is false when it is unreadable.
func (e Entries) decode(id int64, b []byte) (g Good, ok bool) {
	if e.Format != Book {
		return g, json.Unmarshal(b, &g) == nil && g.ID == id
	}
	var be bookEntry
	if json.Unmarshal(b, &be) != nil || be.Name == nil {
		return g, false
	}
	price := string(be.Price)
	if len(price) >= 2 && price[0] == '"' {
		price = price[1 : len(price)-1]
	}
	p, err := strconv.ParseInt(price, 10, 64)
	if err != nil {
		return g, false
	}
	return Good{ID: id, Name: *be.Name, Category: be.Category, Price: p, Description: be.Description}, true
}

// tombstone is the cache entry of a deleted good (microshop's format).
const tombstone = "deleted"

// Errors of Get besides redis.Nil (a miss) and Redis's own.
var (
	// ErrDeleted: the good's deletion is cached.
	ErrDeleted = errors.New("catalog: good deleted")
	// ErrCorrupt: the entry is unreadable; a reader that has the good from
	// the database overwrites it (Put), as for a miss.
	ErrCorrupt = errors.New("catalog: corrupt cache entry")
)

// Put writes a good to the cache (an idempotent SET). Only the goods
// service calls it, when the good is created or edited.
func (e Entries) Put(ctx context.Context, g Good) error {
	b, err := e.encode(g)
	if err != nil {
		return err
	}
	return e.Redis.Set(ctx, e.Key(g.ID), b, e.ttl()).Err()
}

// Fill caches a good a reader found in the database or got from the goods
// service, and reports whether it wrote the entry. It never overwrites an
// entry (SET NX): a reader that read the good just before it was deleted
// cannot bring it back over the deletion's tombstone, nor one that read a
// good just before an edit put the old version back over the edit's entry
// (the goods service writes an edited good with SET after the database
// changed). Ids are never reused. (The tombstone or the edit's entry can
// be lost to a FLUSHALL between the write and the fill, and the book's
// format has no tombstone: the goods service, after a fill, checks the
// database again and writes the row over a stale fill; a fill by another
// reader in that window lasts at most TTL.)
func (e Entries) Fill(ctx context.Context, g Good) (bool, error) {
	b, err := e.encode(g)
	if err != nil {
		return false, err
	}
	return e.Redis.SetNX(ctx, e.Key(g.ID), b, e.ttl()).Result()
}

// Forget records in the cache that good id was deleted (after the database
// delete). In microshop's format it writes a tombstone, with SET so it
// replaces a cached copy, that outlives every read begun before it (TTL);
// losing it (FLUSHALL) is safe: the next reader finds the good missing in
// the database. In the book's format it deletes the key, as the book's
// goods does (a tombstone would be a good to the book's purchases).
func (e Entries) Forget(ctx context.Context, id int64) error {
	if e.Format == Book {
		return e.Redis.Del(ctx, e.Key(id)).Err()
	}
	return e.Redis.Set(ctx, e.Key(id), tombstone, TTL).Err()
}

// Get reads good id from the cache. It returns redis.Nil on a miss,
// ErrDeleted when the good is known to be deleted and ErrCorrupt for an
// unreadable entry.
func (e Entries) Get(ctx context.Context, id int64) (Good, error) {
	b, err := e.Redis.Get(ctx, e.Key(id)).Bytes()
	return e.parse(id, b, err)
}

// parse is Get's answer from what the GET of good id's key returned.
func (e Entries) parse(id int64, b []byte, err error) (Good, error) {
	if err != nil {
		return Good{}, err
	}
	if e.Format == Own && string(b) == tombstone {
		return Good{}, ErrDeleted
	}
	g, ok := e.decode(id, b)
	if !ok {
		return Good{}, ErrCorrupt
	}
	return g, nil
}

// Caller calls a route of another service over the protocol; service.Router
// implements it.
type Caller interface {
	Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error)
}

// Lookup finds goods for services other than goods itself.
type Lookup struct {
	// Cache holds the entries; a nil Cache.Redis reads none.
	Cache  Entries
	Caller Caller
}

// NewLookup returns a Lookup of the entries in c in format f, asking
// caller on a miss.
func NewLookup(c *cache.Cache, f Format, caller Caller) *Lookup {
	return &Lookup{Cache: Entries{Redis: c, Format: f}, Caller: caller}
}

// Find returns good id: from Redis when cached, else from the goods service
// (refilling the cache in microshop's format). An unknown good is a 404
// *service.Error; a goods service that cannot answer is a 503.
//
// The goods service may be the book's, which ignores id and answers every
// good ("no data" when there is none): the good is looked for among the
// results, and a list without it means the good does not exist.
func (l *Lookup) Find(ctx context.Context, id int64) (Good, error) {
	if l.Cache.Redis != nil {
		g, err := l.Cache.Get(ctx, id)
		if g, ok, err := cached(id, g, err); ok {
			return g, err
		}
	}
	return l.ask(ctx, id)
}

// cached is Find's answer for good id from what Entries.Get returned, ok
// false when the goods service must be asked (a miss, a corrupt entry,
// Redis failing).
func cached(id int64, g Good, err error) (Good, bool, error) {
	switch {
	case err == nil:
		return g, true, nil
	case errors.Is(err, ErrDeleted):
		return Good{}, true, service.NotFound("good %d not found", id)
	}
	return Good{}, false, nil
}

// ask asks the goods service for good id, refilling the cache (see Find).
func (l *Lookup) ask(ctx context.Context, id int64) (Good, error) {
	params, _ := json.Marshal(map[string]int64{"id": id})
	m, err := l.Caller.Call(ctx, "GET", "/goods", params)
	if err != nil {
		return Good{}, service.Unavailable("goods service unavailable")
	}
	var body struct {
		Results []Good `json:"results"`
	}
	var se *service.Error
	switch err := service.Decode(m, &body); {
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		return Good{}, service.NotFound("good %d not found", id)
	case errors.As(err, &se) && se.Code == http.StatusBadGateway:
		return Good{}, service.Unavailable("goods service gave an unusable answer")
	case errors.As(err, &se):
		return Good{}, service.Unavailable("goods service answered %d: %s", se.Code, se.Message)
	}
	i := slices.IndexFunc(body.Results, func(g Good) bool { return g.ID == id })
	if i < 0 {
		return Good{}, service.NotFound("good %d not found", id)
	}
	g := body.Results[i]
	if l.Cache.Redis != nil && l.Cache.Format == Own {
		// Best effort: a Redis failure only costs speed. In the book's
		// format only the goods services write (see Book).
		l.Cache.Fill(ctx, g)
	}
	return g, nil
}

// GetMany reads goods ids from the cache in one round trip and returns them
// in the order of ids; found[i] tells whether ids[i] was cached. It uses a
// pipeline of GETs rather than MGET because every good's key has its own
// hash tag: on a Redis Cluster the client splits the pipeline by node, where
// an MGET across slots would be refused.
func (e Entries) GetMany(ctx context.Context, ids []int64) (goods []Good, found []bool, err error) {
	goods, found = make([]Good, len(ids)), make([]bool, len(ids))
	if len(ids) == 0 {
		return goods, found, nil
	}
	cmds := make([]*redis.StringCmd, len(ids))
	_, err = e.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Get(ctx, e.Key(id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return goods, found, err
	}
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		if err != nil {
			continue
		}
		goods[i], found[i] = e.decode(ids[i], b)
	}
	return goods, found, nil
}

// FindMany returns goods ids in the order of ids: the cached ones from one
// pipelined read of Redis, the others asked of the goods service
// concurrently (refilling the cache). An unknown good is returned as the
// zero Good (ID 0). Any other failure (the goods service unavailable) is
// returned as the error, a 503 *service.Error.
func (l *Lookup) FindMany(ctx context.Context, ids []int64) ([]Good, error) {
	goods, found := make([]Good, len(ids)), make([]bool, len(ids))
	if l.Cache.Redis != nil {
		// With Redis down every good is a miss, asked of the goods service.
		goods, found, _ = l.Cache.GetMany(ctx, ids)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		if found[i] {
			continue
		}
		wg.Go(func() {
			g, err := l.Find(ctx, id)
			if code, _ := service.ErrorCode(err); code == 404 {
				err = nil
			}
			goods[i], errs[i] = g, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // a *service.Error, as Find returns it
		}
	}
	return goods, nil
}
