package ratings

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/microshop/microshop/internal/cache"
)

// ViewTTL is how long a good's Redis view lives before it is rebuilt from
// the database; it bounds how long an update lost to a Redis failure can
// be missing from the figures.
const ViewTTL = 24 * time.Hour

// chunk is how many ratings one merge script call carries during a rebuild.
const chunk = 500

// errRebuildRaced reports a rebuild whose view vanished under it (FLUSHALL,
// eviction, expiry); the reader tries again or computes in the database.
var errRebuildRaced = errors.New("ratings: the view vanished during its rebuild")

// mergeScript merges ratings into a good's hash, in cache's frame
// (cache.MergeScript): the entries are triples userid, version, stars; one
// replaces the member's field only when its version is higher, moving
// count, sum and the histogram by the difference (stars 0, a rating
// withdrawn, counts for nothing).
var mergeScript = cache.MergeScript(`
for i = 4, #ARGV, 3 do
  local field = 'u:' .. ARGV[i]
  local version = tonumber(ARGV[i + 1])
  local stars = tonumber(ARGV[i + 2])
  local cur = redis.call('HGET', key, field)
  local curVersion, curStars = 0, 0
  if cur then
    local colon = string.find(cur, ':', 1, true)
    curVersion = tonumber(string.sub(cur, 1, colon - 1))
    curStars = tonumber(string.sub(cur, colon + 1))
  end
  if version > curVersion then
    redis.call('HSET', key, field, ARGV[i + 1] .. ':' .. ARGV[i + 2])
    if curStars > 0 then
      redis.call('HINCRBY', key, 'count', -1)
      redis.call('HINCRBY', key, 'sum', -curStars)
      redis.call('HINCRBY', key, 'h' .. curStars, -1)
    end
    if stars > 0 then
      redis.call('HINCRBY', key, 'count', 1)
      redis.call('HINCRBY', key, 'sum', stars)
      redis.call('HINCRBY', key, 'h' .. stars, 1)
    end
    applied = applied + 1
  end
end
`)

// view is the rebuild machinery of the goods' views (see the package
// comment).
var view = &cache.View[entry]{
	Begin: cache.BeginScript,
	Merge: mergeScript,
	Args: func(args []any, e entry) ([]any, error) {
		return append(args, e.user, e.version, e.stars), nil
	},
	TTL:   ViewTTL,
	Chunk: chunk,
	Raced: errRebuildRaced,
}

// key returns the Redis key of good's view.
func (s *Service) key(good int64) string {
	return s.cache.Key("ratings:{" + itoa(good) + "}")
}

// merge merges es into good's view (see mergeScript).
func (s *Service) merge(ctx context.Context, good int64, epoch string, built bool, es []entry) error {
	return view.MergeEntries(ctx, s.cache, []string{s.key(good)}, epoch, built, es)
}

// summaryFields are read from a view: the sentinel, then the figures.
var summaryFields = []string{"built", "count", "sum", "h1", "h2", "h3", "h4", "h5"}

// viewSummary reads good's ratings from Redis, rebuilding the view when it
// is not built. Redis failures are returned as they are; database failures
// as *store.Error.
func (s *Service) viewSummary(ctx context.Context, good int64) (Summary, error) {
	var sum Summary
	err := view.Read(ctx, func() (bool, error) {
		vals, err := s.cache.HMGet(ctx, s.key(good), summaryFields...).Result()
		if err != nil || vals[0] == nil {
			return false, err
		}
		sum, err = parseSummary(vals)
		return true, err
	}, func(ctx context.Context) error { return s.rebuild(ctx, good) })
	if err != nil {
		return Summary{}, err
	}
	return sum, nil
}

func parseSummary(vals []any) (Summary, error) {
	n := make([]int64, len(vals))
	for i, v := range vals[1:] {
		if v == nil {
			continue
		}
		x, err := strconv.ParseInt(v.(string), 10, 64)
		if err != nil {
			return Summary{}, fmt.Errorf("ratings: corrupt counter %q", v)
		}
		n[i+1] = x
	}
	sum := Summary{Count: n[1], Sum: n[2]}
	copy(sum.Histogram[:], n[3:8])
	return sum, nil
}

// rebuild fills good's view from the database (see the package comment).
func (s *Service) rebuild(ctx context.Context, good int64) error {
	return view.Rebuild(ctx, s.cache, []string{s.key(good)}, func(ctx context.Context) ([]entry, error) {
		return s.snapshot(ctx, good)
	})
}
