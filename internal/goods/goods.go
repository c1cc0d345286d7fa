// Package goods is the goods service of microshop: it owns the goods table
// and the goods cache entries in Redis that other services read
// (catalog.Key). Routes:
//
//	POST   /goods  {name, category, price, description} → {"id": N}
//	GET    /goods  [{limit, after}]                      → {"results": [a page of goods by id], "next": "N"}
//	GET    /goods  {id}                                   → {"results": [good]}
//	PATCH  /goods  {id, any of name, category, price, description} → {"results": [good as changed]}
//	DELETE /goods  {id}                                   → success
//
// The list pages by id (keyset pagination): a page holds the goods whose id
// is above after (0, the first page, when absent), lowest first, at most
// limit of them (DefaultLimit when absent, at most MaxLimit); "next" is the
// after of the following page, present when more goods may follow. Goods
// that exist throughout a walk through the pages are listed exactly once,
// in order, whatever is added or deleted meanwhile (a good added during the
// walk shows up at its end if its id is above the cursor). The list is read
// from the database, the system of record; with NearCache, into a view of
// the first viewMaxGoods goods whose pages are encoded once and served until
// a good is created, changed or deleted (near.go), pages past the view being read
// from the database each time.
//
// The database is the system of record: every write goes to it first, then
// to Redis; a Redis failure is logged and never fails a request. Reads of
// one good are cache-aside: with NearCache the near cache in this
// process's memory first, then Redis, on a miss the database, then the
// entry is written back. Every create, edit and delete is announced on a Redis
// channel that every goods instance with NearCache follows to drop what it
// keeps (near.go); the near cache and the view are used in microshop's
// cache format only (the book's goods announce nothing).
//
// With authentication on (the request carries the gate's auth object),
// POST, PATCH and DELETE need the admin key: no token is a 401, a member's a 403.
package goods

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// Limits on the fields of a good, in characters (price in its unit).
const (
	MaxNameLen        = 128
	MaxCategoryLen    = 64
	MaxDescriptionLen = 2000
	// MaxPrice is the largest price accepted: 2^53-1, the largest integer a
	// JavaScript peer reads exactly.
	MaxPrice = 1<<53 - 1
)

// Paging of GET /goods.
const (
	// DefaultLimit is the size of a page without a limit parameter (so a
	// book client, which sends none, gets the first page).
	DefaultLimit = 20
	// MaxLimit is the largest limit: MaxLimit goods of the largest kind
	// take MaxLimit × MaxGoodBytes = 662,250 bytes, which leaves the
	// envelope (key, errorcode, errormessage, next: under 200 bytes) and a
	// third of packet.DefaultMaxSize (1 MiB) spare.
	MaxLimit = 50
	// MaxGoodBytes is the most bytes one good can take in an answer packet,
	// its comma in the results array included. The runtime encodes answers
	// with encoding/json, which writes each character of a string in at
	// most 6 bytes: \u00XX for <, >, & and control characters (only tab,
	// CR and LF are accepted, as \t \r \n), \u2028 and \u2029 for those
	// two 3-byte characters, 2 to 4 bytes for any other multi-byte UTF-8
	// character, and ¶ (2 bytes) becomes \u00b6 when the packet is framed.
	// Lengths are limited in characters, so the worst good is
	//
	//	{"id":  6 + 19 (int64)  ,"name":"  9 + 6×128  "  1
	//	,"category":"  13 + 6×64  "  1  ,"price":  9 + 16 (2^53-1)
	//	,"description":"  16 + 6×2000  "}  2  ,  1
	//	= 6+19+9+768+1+13+384+1+9+16+16+12000+2+1 = 13,245 bytes.
	//
	// TestWorstCasePage builds such goods and measures them.
	MaxGoodBytes = 6 + 19 + 9 + 6*MaxNameLen + 1 + 13 + 6*MaxCategoryLen + 1 + 9 + 16 + 16 + 6*MaxDescriptionLen + 2 + 1
)

// Service serves the goods routes.
type Service struct {
	store table
	cache catalog.Entries
	log   *slog.Logger
	// repairs retries the tombstones that Redis failed to take.
	repairs *cache.Repairs

	// degraded is set while Redis fails, so that an outage is logged once
	// at warn when it starts and once when it ends, not on every request.
	degraded atomic.Bool
	// near keeps goods and the list view in memory (near.go); nil in the
	// book's cache format.
	near *near
	// beforeKeep, when set (by tests), runs between reading a good and
	// keeping it in the near cache: the window an invalidation can fall in.
	beforeKeep func()
}

// Option changes what New returns.
type Option func(*options)

type options struct {
	near bool
}

// NearCache makes the service keep goods and the list view in memory,
// kept exact across goods instances by invalidations through Redis
// (near.go), in microshop's cache format (the option does nothing in the
// book's). Its reads then no longer see what is written to Redis behind
// the goods services' back (only what they announce, and a FLUSHALL).
func NearCache() Option { return func(o *options) { o.near = true } }

// New returns the goods service over db (the system of record) and c (the
// goods' cache entries, in microshop's format or the book's); neither db
// nor c.Redis may be nil. log receives Redis warnings; nil discards them.
func New(db *store.DB, c catalog.Entries, log *slog.Logger, opts ...Option) *Service {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("service", "goods")
	s := &Service{store: table{db: db}, cache: c, log: log, repairs: cache.NewRepairs(log)}
	if o.near && c.Format == catalog.Own {
		// Its listener ends with Close, or when c.Redis is closed.
		s.near = newNear(c.Redis, log)
	}
	return s
}

// Close stops following the invalidations of other goods instances; the
// service then reads Redis and the database for every request.
func (s *Service) Close() {
	if s.near != nil {
		s.near.close()
	}
}

// Routes returns the handlers of the goods service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/goods":   service.Admin(s.create),
		"GET/goods":    s.get,
		"PATCH/goods":  service.Admin(s.edit),
		"DELETE/goods": service.Admin(s.delete),
	}
}

// create validates a new good, inserts it, then caches it.
func (s *Service) create(ctx context.Context, r *service.Request) (service.Result, error) {
	g, err := parseGood(r.Params)
	if err != nil {
		return nil, err
	}
	if g.ID, err = s.store.insert(ctx, g); err != nil {
		return nil, err
	}
	s.redisDone(s.cache.Put(ctx, g), "cache new good", g.ID)
	s.changed(ctx, g.ID)
	return service.Result{"id": g.ID}, nil
}

// get answers a page of goods, or the one named by id (cache-aside).
func (s *Service) get(ctx context.Context, r *service.Request) (service.Result, error) {
	if !r.Params.Has("id") {
		return s.list(ctx, r.Params)
	}
	id, err := r.Params.ID("id")
	if err != nil {
		return nil, err
	}
	if s.near != nil {
		if e := s.near.get(id); e != nil {
			return e.res, nil
		}
	}
	g, err := s.find(ctx, id)
	if err != nil {
		return nil, err
	}
	return service.Results([]catalog.Good{g}), nil
}

// list answers the page of goods that after and limit ask for (see the
// package comment): from the list view when it reaches that far, else
// from the database.
func (s *Service) list(ctx context.Context, p service.Params) (service.Result, error) {
	after, limit, err := p.Page(DefaultLimit, MaxLimit)
	if err != nil {
		return nil, err
	}
	if v, err := s.view(ctx); err != nil {
		return nil, err
	} else if v != nil {
		if res, ok := v.page(after, limit); ok {
			return res, nil
		}
	}
	// One row more than the page tells whether another page follows.
	list, err := s.store.page(ctx, after, limit+1)
	if err != nil {
		return nil, err
	}
	return service.PageResult(list, limit, func(g catalog.Good) int64 { return g.ID }), nil
}

// view returns the list view, building it when there is none; nil when
// there is none to use (the invalidations are not followed, or another
// request is building it: this one reads the database meanwhile).
func (s *Service) view(ctx context.Context) (*listView, error) {
	if s.near == nil {
		return nil, nil
	}
	if v := s.near.currentView(); v != nil {
		return v, nil
	}
	gen, live := s.near.token()
	if !live || !s.near.building.TryLock() {
		return nil, nil
	}
	defer s.near.building.Unlock()
	if v := s.near.currentView(); v != nil {
		return v, nil // built while this request waited for the lock
	}
	rows, err := s.store.page(ctx, 0, viewMaxGoods+1)
	if err != nil {
		return nil, err
	}
	v, err := newListView(rows)
	if err != nil {
		return nil, err
	}
	// Kept unless a good changed meanwhile; this request may use it either
	// way: it was read from the database after the request came.
	s.near.setView(gen, v)
	return v, nil
}

// find returns good id from Redis, or from the database, caching it then
// (in Redis, and in the near cache unless a good changed meanwhile).
func (s *Service) find(ctx context.Context, id int64) (catalog.Good, error) {
	var gen uint64
	if s.near != nil {
		gen, _ = s.near.token()
	}
	keep := func(g catalog.Good) {
		if s.beforeKeep != nil {
			s.beforeKeep()
		}
		if s.near != nil {
			s.near.put(gen, g)
		}
	}
	g, cerr := s.cache.Get(ctx, id)
	if cerr == nil {
		s.redisDone(nil, "", id)
		keep(g)
		return g, nil
	}
	if errors.Is(cerr, catalog.ErrDeleted) {
		s.redisDone(nil, "", id)
		return catalog.Good{}, service.NotFound("good %d not found", id)
	}
	g, err := s.store.get(ctx, id)
	if err != nil {
		return catalog.Good{}, err
	}
	switch {
	case errors.Is(cerr, redis.Nil):
		wrote, err := s.cache.Fill(ctx, g)
		s.redisDone(err, "refill cache", id)
		if wrote {
			s.recheck(ctx, g)
		}
		if err == nil {
			keep(g)
		}
	case errors.Is(cerr, catalog.ErrCorrupt):
		err := s.cache.Put(ctx, g)
		s.redisDone(err, "repair cache", id)
		if err == nil {
			keep(g)
		}
	default:
		// Redis failed: do not wait for it a second time in this request.
		s.redisDone(cerr, "read cache", id)
	}
	return g, nil
}

// recheck runs after find cached good g it had read from the database: if
// the good was deleted or edited meanwhile and the write's own entry was
// lost (a FLUSHALL between the two), the entry just written would bring
// the old good back for catalog.TTL, so it writes the tombstone again, or
// settles the entry to the row (edit.go). One more query, on cache misses
// only.
func (s *Service) recheck(ctx context.Context, g catalog.Good) {
	now, err := s.store.get(ctx, g.ID)
	if code, _ := service.ErrorCode(err); code == http.StatusNotFound {
		s.forget(ctx, g.ID)
		return
	}
	if err != nil || now == g {
		return // unchanged (or the database failed: the entry stands, as before)
	}
	if _, err := s.settleOrRepair(ctx, g.ID); err != nil {
		s.log.Debug("recheck: settling an edited good", "good", g.ID, "err", err)
	}
}

// forget writes good id's tombstone and tells every goods instance,
// retrying in the background when Redis fails.
func (s *Service) forget(ctx context.Context, id int64) {
	if err := s.cache.Forget(ctx, id); err != nil {
		s.redisDone(err, "cache the deletion", id)
		// The good may still be cached (a Redis that failed for a moment
		// keeps its data), and purchases would believe it: write the
		// tombstone as soon as Redis answers, then tell the goods
		// instances again (they may have read the entry meanwhile).
		s.repairs.Add(fmt.Sprintf("goods:%d", id), func(ctx context.Context) error {
			if err := s.cache.Forget(ctx, id); err != nil {
				return err
			}
			if s.near != nil {
				return s.near.changed(ctx, id)
			}
			return nil
		})
		if s.near != nil {
			s.near.invalidate(id)
		}
		return
	}
	s.redisDone(nil, "", id)
	s.changed(ctx, id)
}

// changed tells every goods instance that good id was created or deleted,
// after its Redis entry was written, retrying in the background when
// Redis fails.
func (s *Service) changed(ctx context.Context, id int64) {
	if s.near == nil {
		return
	}
	if err := s.near.changed(ctx, id); err != nil {
		s.redisDone(err, "announce the change", id)
		s.repairs.Add(fmt.Sprintf("goods-changed:%d", id), func(ctx context.Context) error {
			return s.near.changed(ctx, id)
		})
	}
}

// delete removes a good from the database, then replaces its cache entry
// with a tombstone (see catalog.Forget).
func (s *Service) delete(ctx context.Context, r *service.Request) (service.Result, error) {
	id, err := r.Params.ID("id")
	if err != nil {
		return nil, err
	}
	if err := s.store.delete(ctx, id); err != nil {
		return nil, err
	}
	s.forget(ctx, id)
	return service.Result{}, nil
}

// redisDone records the outcome of a Redis operation that must not fail the
// request: the first failure of an outage is logged at warn, later ones at
// debug, and the recovery at info.
func (s *Service) redisDone(err error, op string, id int64) {
	if err == nil {
		if s.degraded.CompareAndSwap(true, false) {
			s.log.Info("redis is answering again")
		}
		return
	}
	if s.degraded.CompareAndSwap(false, true) {
		s.log.Warn("redis failed; serving from the database", "op", op, "good", id, "err", err)
		return
	}
	s.log.Debug("redis failed", "op", op, "good", id, "err", err)
}

// parseGood validates the parameters of a new good.
func parseGood(p service.Params) (catalog.Good, error) {
	var g catalog.Good
	var err error
	if g.Name, err = text(p, "name", 1, MaxNameLen, false); err != nil {
		return g, err
	}
	if strings.TrimSpace(g.Name) == "" {
		return g, service.BadRequest("name is required")
	}
	if g.Category, err = text(p, "category", 0, MaxCategoryLen, false); err != nil {
		return g, err
	}
	if g.Description, err = text(p, "description", 0, MaxDescriptionLen, true); err != nil {
		return g, err
	}
	if g.Price, err = p.Int("price"); err != nil {
		return g, err
	}
	if g.Price < 0 {
		return g, service.BadRequest("price must not be negative")
	}
	if g.Price > MaxPrice {
		return g, service.BadRequest("price must be at most %d", MaxPrice)
	}
	return g, nil
}

// text reads a string parameter of min..max characters that is valid UTF-8
// without control characters (multiline allows tab, CR and LF).
func text(p service.Params, name string, min, max int, multiline bool) (string, error) {
	s, err := p.Text(name, min, max)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(s) {
		return "", service.BadRequest("%s must be valid UTF-8", name)
	}
	for _, c := range s {
		if unicode.IsControl(c) && !(multiline && (c == '\n' || c == '\r' || c == '\t')) {
			return "", service.BadRequest("%s must not contain control characters", name)
		}
	}
	return s, nil
}
