// Package purchases is the purchases service of microshop: it records who
// bought which good and when, and ranks the best sellers. Routes:
//
//	POST   /purchases  {userid, goodsid}          → {"id": N}
//	GET    /purchases  {userid, [limit, after]}   → {"results": [{"id", "goodsid", "date"}, ...], "next": "N"}
//	DELETE /purchases  {userid, id}               → {"id", "goodsid", "date", "cancelled"} (cancel.go)
//	GET  /rankings   {top: 1..100, period: day|week|all}
//	                 → {"results": [{"rank", "goodsid", "name", "sales"}, ...]}
//
// GET /purchases pages by id (keyset pagination): a page holds the member's
// purchases whose id is above after (0, the first page, when absent),
// oldest first, at most limit of them (DefaultLimit when absent, at most
// MaxLimit); "next" is the after of the following page, present when more
// may follow. It reads the database, the system of record; cancelled
// purchases are left out.
//
// Before recording a purchase it checks that the good exists the way
// DESIGN §1 prescribes (catalog.Lookup): in Redis first, else by asking the
// goods service over the protocol. The acting member comes from
// service.Request.Member: the token's member when the gate enforces
// authentication, the userid parameter in the book's open mode.
//
// # Rankings
//
// Every purchase not cancelled is one sale of its good (a cancel drops the
// views it was counted in, see cancel.go). The rankings live here because the
// purchases table is their system of record: a ranking is
// SELECT goodsid, COUNT(*) ... GROUP BY goodsid over a window, day (the UTC
// date), week (the ISO week, Monday 00:00 UTC) or all time, highest first,
// ties by goodsid ascending. Goods' names come from the goods cache or the
// goods service (catalog.Lookup.FindMany), never from the goods table; a
// good the goods service no longer knows is left out, removed from the
// views, and the next good moves up so that top=N still answers N.
//
// Redis holds one view per window, four keys sharing the hash tag of the
// window, so every script touches one cluster slot:
//
//	rankings:{all}           sorted set: member = goodsid zero-padded to 16
//	rankings:{day:2026-11-28}  digits, score = minus its sales
//	rankings:{week:2026-W48}
//	…:meta                   hash: built, wm (watermark), gen (generation),
//	                         n and s (sizes of the sets), compacted (unix ms),
//	                         cx (cancelled purchases before the snapshot)
//	…:seen                   sorted set of the ids of the sales above wm
//	                         counted one by one
//	…:rebuild                the rebuild lease (a random token, with a TTL)
//
// Scores are minus the sales and members zero-padded so that a plain ZRANGE
// (ascending score, then ascending member bytes) is exactly "sales
// descending, goodsid ascending": the order of the SQL fallback, every time.
// Day and week views expire Retain after their window ends; the all-time
// view has no TTL.
//
// The view counts exactly the sales with id ≤ wm plus the sales in seen.
// Every update is a Lua script on one view, idempotent and exact:
//
//   - A purchase commits to the database first, then applies its (id, good)
//     to its day, week and all-time views (three scripts, one pipeline,
//     shared with the purchases committed at the same time: record.go). A
//     view counts it only if it is built, id > wm and id is not in seen; it
//     then adds id to seen and takes one off the good's score. A retried or
//     duplicated update changes nothing.
//   - A reader that finds a view not built rebuilds it: a begin script takes
//     the lease and drops any partial view; the reader reads a sound
//     watermark M (sales.go: no id ≤ M can commit later, thanks to the
//     barrier on MySQL), counts the sales with id ≤ M per good in the
//     database, writes them in chunks (each only while it holds the lease),
//     then a finish script sets wm = M, gen = the lease token and built.
//     Finally it catches up: it reads the sales with M < id ≤ M2 (a new
//     sound watermark) and applies them like a purchase would, then
//     advances wm to M2 and trims seen.
//
// Why this is exact under concurrency: a sale with id ≤ M is in the
// snapshot, and any update for it is ignored (not built, or id ≤ wm). A sale
// with id > M committed before its own update; if that update came before
// the view was built it was ignored, but the sale had committed before the
// catch-up's read, which counts it; if it came after, it is counted once,
// seen making the catch-up skip it. A FLUSHALL or eviction during a rebuild
// removes the lease (the rebuild gives up) or a key of a built view (the
// sizes in meta no longer match the sets and the view is dropped, to be
// rebuilt): a view is never marked built unless whole.
//
// Compaction is the same catch-up, run by the first read once a view's
// compaction is CompactEvery old, or by a purchase when seen grows past
// maxSeen: it applies the sales above wm that a lost Redis update left out
// (bounding how long a Redis failure costs), then advances wm and trims
// seen. Only a compaction of the same generation may advance wm.
//
// With Redis down purchases still commit (the failed update is logged) and
// GET /rankings ranks in the database: right, only slower.
package purchases

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// DateLayout is the form of a purchase date in answers: RFC 3339 in UTC with
// milliseconds, e.g. "2024-05-01T09:30:00.250Z".
const DateLayout = "2006-01-02T15:04:05.000Z07:00"

// Paging of GET /purchases.
const (
	// DefaultLimit is the size of a page without a limit parameter (so a
	// book client, which sends none, gets the first page).
	DefaultLimit = 100
	// MaxLimit is the largest limit: a page of MaxLimit purchases takes at
	// most MaxLimit × MaxPurchaseBytes = 91,000 bytes, a tenth of
	// packet.DefaultMaxSize (1 MiB).
	MaxLimit = 1000
	// MaxPurchaseBytes is the most bytes one purchase takes in an answer,
	// its comma in the results array included (nothing in it is escaped):
	//
	//	{"id":  6 + 19 (int64)  ,"goodsid":  11 + 19
	//	,"date":"  9 + 24 (DateLayout)  "}  2  ,  1
	//	= 6+19+11+19+9+24+2+1 = 91 bytes.
	MaxPurchaseBytes = 6 + 19 + 11 + 19 + 9 + len("2006-01-02T15:04:05.000Z") + 2 + 1
)

// Purchase is one purchase as answered by GET /purchases.
type Purchase struct {
	ID      int64  `json:"id"`
	GoodsID int64  `json:"goodsid"`
	Date    string `json:"date"`
}

// Service serves the purchases routes.
type Service struct {
	store table
	cache *cache.Cache // the rankings views; nil: rank in the database
	goods *catalog.Lookup
	// find is goods.Find sharing Redis round trips between concurrent
	// purchases (the check that a good exists).
	find *catalog.Finder
	log  *slog.Logger
	now  func() time.Time
	// repairs retries the drops of views that Redis failed to take after
	// a cancel (cancel.go).
	repairs *cache.Repairs
	// recorder applies the Redis updates of purchases in batches (record.go).
	recorder *recorder
	// hook, when set by a test, is called at the named stages of a rebuild
	// ("counted", "finished") to interleave other work deterministically.
	hook func(stage string)
}

// New returns the purchases service over db. It finds goods in c, or asks
// the goods service through goods (for example a service.Router). log may be
// nil.
func New(db *store.DB, c *cache.Cache, goods *catalog.Lookup, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store: newTable(db, log),
		cache: c,
		goods: goods,
		find:  catalog.NewFinder(goods),
		log:   log.With("service", "purchases"),
		now:   time.Now,

		repairs: cache.NewRepairs(log),
	}
	s.recorder = newRecorder(s)
	return s
}

// Routes returns the handlers of the purchases service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/purchases":   s.buy,
		"GET/purchases":    s.list,
		"DELETE/purchases": s.cancel,
		"GET/rankings":     s.rankings,
	}
}

// buy records a purchase of an existing good.
func (s *Service) buy(ctx context.Context, r *service.Request) (service.Result, error) {
	userID, err := r.Member(true)
	if err != nil {
		return nil, err
	}
	goodsID, err := r.Params.ID("goodsid")
	if err != nil {
		return nil, err
	}
	if _, err := s.find.Find(ctx, goodsID); err != nil {
		if code, _ := service.ErrorCode(err); code == http.StatusServiceUnavailable {
			s.log.Warn("cannot check a good: goods service unavailable", "good", goodsID, "err", err)
		}
		return nil, err
	}
	key, err := idempotencyKey(r.Params)
	if err != nil {
		return nil, err
	}
	date := s.now()
	id, first, err := s.store.insertOnce(ctx, userID, goodsID, date, key)
	if err != nil {
		return nil, err
	}
	if first {
		s.record(ctx, id, goodsID, date)
	}
	return service.Result{"id": id}, nil
}

// idempotencyKey returns the purchase's Idempotency-Key, which the gate
// passes as the parameter gate.IdempotencyParam ("" when none).
func idempotencyKey(p service.Params) (string, error) {
	if !p.Has(idempotencyParam) {
		return "", nil
	}
	return p.Text(idempotencyParam, 1, 255)
}

// idempotencyParam is gate.IdempotencyParam (a business package does not
// import the gate).
const idempotencyParam = "idempotency_key"

// list answers a page of a member's purchases, oldest first (see the
// package comment).
func (s *Service) list(ctx context.Context, r *service.Request) (service.Result, error) {
	userID, err := r.Member(true)
	if err != nil {
		return nil, err
	}
	after, limit, err := r.Params.Page(DefaultLimit, MaxLimit)
	if err != nil {
		return nil, err
	}
	// One row more than the page tells whether another page follows.
	list, err := s.store.list(ctx, userID, after, limit+1)
	if err != nil {
		return nil, err
	}
	return service.PageResult(list, limit, func(p Purchase) int64 { return p.ID }), nil
}
