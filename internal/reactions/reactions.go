// Package reactions is the likes/dislikes service: one reaction ("like" or
// "dislike") per member per good, counted per good.
//
// Routes: POST /reactions {userid, goodsid, reaction} sets the member's
// reaction (switching moves the count, repeating changes nothing);
// DELETE /reactions?userid=&goodsid= withdraws it;
// GET /reactions?goodsid=N[&userid=M] answers {likes, dislikes[, mine]}.
//
// # Design
//
// The reactions table is the system of record. Every row carries a version
// that grows by one whenever the member's reaction to that good changes; a
// withdrawn reaction keeps its row with reaction ” (a tombstone), so a
// version is never reused.
//
// Redis holds one hash per good, reactions:{goodsid}, with the counters
// likes and dislikes, one field u:USERID = "VERSION:REACTION" per member,
// the sentinel field built (the hash is complete) and the field epoch (the
// rebuild in progress). One key per good means every script touches a
// single key, which is safe on a Redis Cluster.
//
// Every change of the hash goes through one Lua script, merge, which for
// each (member, version, reaction) keeps the entry with the higher version
// and moves the counters by the difference. Merging is idempotent and
// commutative, so the hash ends up equal to "the latest version of every
// member", whatever order the updates arrive in and however often they are
// repeated; and the counters always equal the tally of the member fields.
// That is why the counts are exact under concurrency: a write commits to the
// database (the row lock orders the writers of one member and good and
// gives each a version), then merges its (version, reaction) into Redis;
// concurrent or late merges cannot make the view go backwards.
//
// A hash without the built field is never trusted for reading. A reader
// that finds none rebuilds it: a begin script sets epoch to a random token
// (unless one is there), the reader reads every row of the good from the
// database, merges them in chunks, each chunk only if epoch still holds the
// token, and the last chunk sets built. Writes that commit during the
// rebuild are merged either way (versions settle the order); a FLUSHALL or
// eviction during the rebuild removes epoch, so the rebuild gives up instead
// of marking an incomplete view complete. The hash expires after ViewTTL, so
// an update lost to a Redis failure is forgotten at worst that much later.
//
// With Redis down, writes still commit to the database (the failure is
// logged at warn) and reads count from the database.
package reactions

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

// The reactions a member can give.
const (
	Like    = "like"
	Dislike = "dislike"
)

// Service serves the /reactions routes.
type Service struct {
	db    *store.DB
	q     *queries
	cache *cache.Cache
	goods *catalog.Lookup
	log   *slog.Logger
	// repairs retries the Redis updates that failed after a commit.
	repairs *cache.Repairs
}

// New returns the reactions service. goods is used to check that a good
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
		"POST/reactions":   s.handlePost,
		"GET/reactions":    s.handleGet,
		"DELETE/reactions": s.handleDelete,
	}
}

// actingMember returns the member acting in r (service.Request.Member):
// with authentication on, the token's member, and a userid naming someone
// else is a 403; without it, the userid parameter as in the book. For GET
// (required false) no member is 0: the counts without "mine"; with a token,
// "mine" is the token's member's own reaction.
func actingMember(r *service.Request, required bool) (int64, error) {
	return r.Member(required)
}

func (s *Service) handlePost(ctx context.Context, r *service.Request) (service.Result, error) {
	user, err := actingMember(r, true)
	if err != nil {
		return nil, err
	}
	good, err := r.Params.ID("goodsid")
	if err != nil {
		return nil, err
	}
	reaction, err := r.Params.String("reaction")
	if err != nil {
		return nil, err
	}
	if reaction != Like && reaction != Dislike {
		return nil, service.BadRequest("reaction must be %q or %q", Like, Dislike)
	}
	if _, err := s.goods.Find(ctx, good); err != nil {
		return nil, err
	}
	if err := s.Set(ctx, user, good, reaction); err != nil {
		return nil, err
	}
	return service.Result{}, nil
}

func (s *Service) handleDelete(ctx context.Context, r *service.Request) (service.Result, error) {
	user, err := actingMember(r, true)
	if err != nil {
		return nil, err
	}
	good, err := r.Params.ID("goodsid")
	if err != nil {
		return nil, err
	}
	if err := s.Set(ctx, user, good, ""); err != nil {
		return nil, err
	}
	return service.Result{}, nil
}

func (s *Service) handleGet(ctx context.Context, r *service.Request) (service.Result, error) {
	good, err := r.Params.ID("goodsid")
	if err != nil {
		return nil, err
	}
	user, err := actingMember(r, false)
	if err != nil {
		return nil, err
	}
	if _, err := s.goods.Find(ctx, good); err != nil {
		return nil, err
	}
	c, err := s.Counts(ctx, good, user)
	if err != nil {
		return nil, err
	}
	res := service.Result{"likes": c.Likes, "dislikes": c.Dislikes}
	if user != 0 {
		res["mine"] = c.Mine
	}
	return res, nil
}

// Counts are the reactions to one good.
type Counts struct {
	Likes, Dislikes int64
	// Mine is the asking member's reaction: Like, Dislike or "".
	Mine string
}

// Set records member user's reaction to good: Like, Dislike, or "" to
// withdraw it. The database is written first; the Redis view follows.
func (s *Service) Set(ctx context.Context, user, good int64, reaction string) error {
	st, ok, err := s.write(ctx, user, good, reaction)
	if err != nil {
		return err
	}
	if !ok {
		return nil // withdrawing a reaction never given
	}
	if err := s.merge(ctx, good, "", false, []entry{st}); err != nil {
		s.log.Warn("reactions: Redis update failed; retrying it in the background",
			"goodsid", good, "userid", user, "err", err)
		// Merges are versioned, so replaying this one later is safe.
		s.repairs.Add(fmt.Sprintf("reactions:%d:%d:%d", good, user, st.version), func(ctx context.Context) error {
			return s.merge(ctx, good, "", false, []entry{st})
		})
	}
	return nil
}

// Counts returns the reactions to good, and member user's own (user 0: none).
// It reads the Redis view, rebuilding it from the database when it is
// missing, and counts in the database when Redis cannot answer.
func (s *Service) Counts(ctx context.Context, good, user int64) (Counts, error) {
	c, err := s.viewCounts(ctx, good, user)
	if err == nil {
		return c, nil
	}
	if store.IsFailure(err) {
		return Counts{}, err
	}
	if !errors.Is(err, errRebuildRaced) {
		s.log.Warn("reactions: Redis unavailable, counting in the database", "goodsid", good, "err", err)
	}
	return s.dbCounts(ctx, good, user)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
