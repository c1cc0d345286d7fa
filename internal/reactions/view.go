package reactions

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
// be missing from the counts.
const ViewTTL = 24 * time.Hour

// chunk is how many members one merge script call carries during a rebuild.
const chunk = 500

// errRebuildRaced reports a rebuild whose view vanished under it (FLUSHALL,
// eviction, expiry); the reader tries again or counts in the database.
var errRebuildRaced = errors.New("reactions: the view vanished during its rebuild")

// mergeScript merges member entries into a good's hash, in cache's frame
// (cache.MergeScript): the entries are triples userid, version, reaction;
// one replaces the member's field only when its version is higher, moving
// the counters by the difference.
var mergeScript = cache.MergeScript(`
for i = 4, #ARGV, 3 do
  local field = 'u:' .. ARGV[i]
  local version = tonumber(ARGV[i + 1])
  local reaction = ARGV[i + 2]
  local cur = redis.call('HGET', key, field)
  local curVersion, curReaction = 0, ''
  if cur then
    local colon = string.find(cur, ':', 1, true)
    curVersion = tonumber(string.sub(cur, 1, colon - 1))
    curReaction = string.sub(cur, colon + 1)
  end
  if version > curVersion then
    redis.call('HSET', key, field, ARGV[i + 1] .. ':' .. reaction)
    if curReaction ~= '' then redis.call('HINCRBY', key, curReaction .. 's', -1) end
    if reaction ~= '' then redis.call('HINCRBY', key, reaction .. 's', 1) end
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
		return append(args, e.user, e.version, e.reaction), nil
	},
	TTL:   ViewTTL,
	Chunk: chunk,
	Raced: errRebuildRaced,
}

// key returns the Redis key of good's view.
func (s *Service) key(good int64) string {
	return s.cache.Key("reactions:{" + itoa(good) + "}")
}

// merge merges es into good's view (see mergeScript).
func (s *Service) merge(ctx context.Context, good int64, epoch string, built bool, es []entry) error {
	return view.MergeEntries(ctx, s.cache, []string{s.key(good)}, epoch, built, es)
}

// viewCounts reads good's counts from Redis, rebuilding the view when it is
// not built. Redis failures are returned as they are; database failures as
// *store.Error.
func (s *Service) viewCounts(ctx context.Context, good, user int64) (Counts, error) {
	fields := []string{"built", "likes", "dislikes"}
	if user != 0 {
		fields = append(fields, "u:"+itoa(user))
	}
	var c Counts
	err := view.Read(ctx, func() (bool, error) {
		vals, err := s.cache.HMGet(ctx, s.key(good), fields...).Result()
		if err != nil || vals[0] == nil {
			return false, err
		}
		c, err = parseCounts(vals)
		return true, err
	}, func(ctx context.Context) error { return s.rebuild(ctx, good) })
	if err != nil {
		return Counts{}, err
	}
	return c, nil
}

func parseCounts(vals []any) (Counts, error) {
	var c Counts
	var err error
	num := func(v any) int64 {
		if v == nil || err != nil {
			return 0
		}
		n, e := strconv.ParseInt(v.(string), 10, 64)
		if e != nil {
			err = fmt.Errorf("reactions: corrupt counter %q", v)
		}
		return n
	}
	c.Likes, c.Dislikes = num(vals[1]), num(vals[2])
	if len(vals) > 3 && vals[3] != nil {
		s := vals[3].(string)
		for i := 0; i < len(s); i++ {
			if s[i] == ':' {
				c.Mine = s[i+1:]
				break
			}
		}
	}
	return c, err
}

// rebuild fills good's view from the database (see the package comment).
func (s *Service) rebuild(ctx context.Context, good int64) error {
	return view.Rebuild(ctx, s.cache, []string{s.key(good)}, func(ctx context.Context) ([]entry, error) {
		return s.snapshot(ctx, good)
	})
}
