// Package ratings is the star ratings service: one rating of 1 to 5 stars
// per member per good, a new one replacing the old, summed up per good as a
// count, an average and a histogram.
//
// Routes: POST /ratings {userid, goodsid, stars} rates a good;
// DELETE /ratings?goodsid=N withdraws one's rating; GET /ratings?goodsid=N
// answers {count, average, histogram}.
//
// # Design
//
// The ratings table is the system of record. Every row carries a version
// that grows by one whenever the member changes the stars given to that
// good.
//
// Redis holds one hash per good, ratings:{goodsid}, with the counters count,
// sum and h1..h5, one field u:USERID = "VERSION:STARS" per member, the
// sentinel field built (the hash is complete) and the field epoch (the
// rebuild in progress). One key per good means every script touches a
// single key, which is safe on a Redis Cluster.
//
// Every change of the hash goes through one Lua script, merge, which for
// each (member, version, stars) keeps the entry with the higher version and
// moves the counters by the difference. Merging is idempotent and
// commutative, so the hash ends up equal to "the latest version of every
// member's rating" whatever order the updates arrive in and however often
// they are repeated, and the counters always equal the tally of the member
// fields. That is why the figures are exact under concurrency: a write
// commits to the database (the row lock orders the writers of one member
// and good and gives each a version), then merges its (version, stars) into
// Redis; concurrent or late merges cannot make the view go backwards.
//
// A hash without the built field is never trusted for reading. A reader
// that finds none rebuilds it: a begin script sets epoch to a random token
// (unless one is there), the reader reads every rating of the good from the
// database and merges them in chunks, each chunk only if epoch still holds
// the token; the last chunk sets built. Writes that commit during the
// rebuild are merged either way (versions settle the order); a FLUSHALL or
// eviction during the rebuild removes epoch, so the rebuild gives up instead
// of marking an incomplete view complete. The hash expires after ViewTTL, so
// an update lost to a Redis failure is forgotten at worst that much later.
//
// With Redis down, writes still commit to the database (the failure is
// logged at warn) and reads compute the figures in the database.
package ratings

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// Service serves the /ratings routes.
type Service struct {
	db    *store.DB
	q     *queries
	cache *cache.Cache
	goods *catalog.Lookup
	log   *slog.Logger
	// repairs retries the Redis updates that failed after a commit.
	repairs *cache.Repairs
}

// New returns the ratings service. goods is used to check that a good
// exists (Redis first, then the goods service).
func New(db *store.DB, c *cache.Cache, goods *catalog.Lookup, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		db:      db,
		q:       queriesFor(db.Dialect),
		cache:   c,
		goods:   goods,
		log:     log,
		repairs: cache.NewRepairs(log),
	}
}

// Routes returns the handlers of the service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/ratings":   s.handlePost,
		"GET/ratings":    s.handleGet,
		"DELETE/ratings": s.handleDelete,
	}
}

// actingMember returns the member acting in r (service.Request.Member):
// with authentication on, the token's member, and a userid naming someone
// else is a 403; without it, the userid parameter as in the book.
func actingMember(r *service.Request) (int64, error) {
	return r.Member(true)
}

// memberAndGood reads who acts in r and on which good (goodsid).
func memberAndGood(r *service.Request) (user, good int64, err error) {
	if user, err = actingMember(r); err != nil {
		return 0, 0, err
	}
	good, err = r.Params.ID("goodsid")
	return user, good, err
}

func (s *Service) handlePost(ctx context.Context, r *service.Request) (service.Result, error) {
	user, good, err := memberAndGood(r)
	if err != nil {
		return nil, err
	}
	stars, err := r.Params.Int("stars")
	if err != nil {
		return nil, err
	}
	if stars < 1 || stars > 5 {
		return nil, service.BadRequest("stars must be an integer from 1 to 5")
	}
	if _, err := s.goods.Find(ctx, good); err != nil {
		return nil, err
	}
	if err := s.Rate(ctx, user, good, int(stars)); err != nil {
		return nil, err
	}
	return service.Result{}, nil
}

func (s *Service) handleDelete(ctx context.Context, r *service.Request) (service.Result, error) {
	user, good, err := memberAndGood(r)
	if err != nil {
		return nil, err
	}
	err = s.Unrate(ctx, user, good)
	if errors.Is(err, errNoRating) {
		return nil, service.NotFound("member %d has not rated good %d", user, good)
	}
	if err != nil {
		return nil, err
	}
	return service.Result{}, nil
}

func (s *Service) handleGet(ctx context.Context, r *service.Request) (service.Result, error) {
	good, err := r.Params.ID("goodsid")
	if err != nil {
		return nil, err
	}
	if _, err := s.goods.Find(ctx, good); err != nil {
		return nil, err
	}
	sum, err := s.Summary(ctx, good)
	if err != nil {
		return nil, err
	}
	hist := make(map[string]int64, 5)
	for i, n := range sum.Histogram {
		hist[strconv.Itoa(i+1)] = n
	}
	return service.Result{"count": sum.Count, "average": sum.Average(), "histogram": hist}, nil
}

// Summary sums up the ratings of one good.
type Summary struct {
	Count int64
	// Sum is the total of all stars given.
	Sum int64
	// Histogram[i] counts the ratings of i+1 stars.
	Histogram [5]int64
}

// Average returns the mean rating rounded half up to two decimals, 0 when
// there is no rating.
func (s Summary) Average() float64 {
	if s.Count == 0 {
		return 0
	}
	hundredths := (200*s.Sum + s.Count) / (2 * s.Count)
	return float64(hundredths) / 100
}

// Rate records member user's rating of good (1 to 5 stars), replacing any
// earlier one. The database is written first; the Redis view follows.
func (s *Service) Rate(ctx context.Context, user, good int64, stars int) error {
	e, err := s.write(ctx, user, good, stars)
	if err != nil {
		return err
	}
	s.mergeOrRepair(ctx, good, e)
	return nil
}

// Unrate withdraws member user's rating of good (again: nothing changes);
// errNoRating when the member never rated it. The database is written
// first; the Redis view follows, as for Rate.
func (s *Service) Unrate(ctx context.Context, user, good int64) error {
	e, err := s.unrate(ctx, user, good)
	if err != nil {
		return err
	}
	s.mergeOrRepair(ctx, good, e)
	return nil
}

// mergeOrRepair merges e into good's view, or queues the merge for repair
// when Redis fails (merges are versioned, so replaying one later is safe).
func (s *Service) mergeOrRepair(ctx context.Context, good int64, e entry) {
	if err := s.merge(ctx, good, "", false, []entry{e}); err != nil {
		s.log.Warn("ratings: Redis update failed; retrying it in the background",
			"goodsid", good, "userid", e.user, "err", err)
		s.repairs.Add(fmt.Sprintf("ratings:%d:%d:%d", good, e.user, e.version), func(ctx context.Context) error {
			return s.merge(ctx, good, "", false, []entry{e})
		})
	}
}

// Summary returns the ratings of good. It reads the Redis view, rebuilding
// it from the database when it is missing, and computes the figures in the
// database when Redis cannot answer.
func (s *Service) Summary(ctx context.Context, good int64) (Summary, error) {
	sum, err := s.viewSummary(ctx, good)
	if err == nil {
		return sum, nil
	}
	if store.IsFailure(err) {
		return Summary{}, err
	}
	if !errors.Is(err, errRebuildRaced) {
		s.log.Warn("ratings: Redis unavailable, computing in the database", "goodsid", good, "err", err)
	}
	return s.dbSummary(ctx, good)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
