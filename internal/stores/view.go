package stores

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
)

// ViewTTL is how long the Redis view lives before it is rebuilt from the
// database; it bounds how long a write whose Redis update was lost can be
// missing from searches.
const ViewTTL = 24 * time.Hour

// chunk is how many stores one merge script call carries during a rebuild.
const chunk = 500

// errRebuildRaced reports a rebuild whose view vanished under it (FLUSHALL,
// eviction, expiry); the reader tries again or searches the database.
var errRebuildRaced = errors.New("stores: the view vanished during its rebuild")

// mergeScript merges stores into the view: KEYS[1] the GEO set, KEYS[2] the
// info hash. ARGV: epoch token ("" for none), "1" to mark the view built
// (and give both keys ARGV[3] seconds to live), TTL in seconds, then groups
// of id, version, state (1 live, 2 deleted), longitude, latitude, details
// JSON. An entry applies only when its version is higher than the view's,
// so the script is idempotent and order-independent. With an epoch token it
// does nothing and returns -1 unless the hash's epoch field holds that
// token. It returns the number of entries applied.
//
// The hash holds "vVERSION:1:JSON" for a live store and "vVERSION:2" for a
// deleted one; the format before edits, "1:JSON" and "2", is read as
// version 1 live and version 2 deleted, the versions those rows were given.
var mergeScript = redis.NewScript(`
local geo, info = KEYS[1], KEYS[2]
if ARGV[1] ~= '' and redis.call('HGET', info, 'epoch') ~= ARGV[1] then
  return -1
end
local applied = 0
for i = 4, #ARGV, 6 do
  local id = ARGV[i]
  local version = tonumber(ARGV[i + 1])
  local state = ARGV[i + 2]
  local cur = redis.call('HGET', info, id)
  local curVersion, curLive = 0, false
  if cur then
    local v, st = string.match(cur, '^v(%d+):(%d)')
    if v then
      curVersion, curLive = tonumber(v), st == '1'
    else
      curVersion = tonumber(string.sub(cur, 1, 1)) or 0
      curLive = curVersion == 1
    end
  end
  if version > curVersion then
    if state == '1' then
      redis.call('GEOADD', geo, ARGV[i + 3], ARGV[i + 4], id)
      redis.call('HSET', info, id, 'v' .. ARGV[i + 1] .. ':1:' .. ARGV[i + 5])
      if not curLive then redis.call('HINCRBY', info, 'live', 1) end
    else
      redis.call('HSET', info, id, 'v' .. ARGV[i + 1] .. ':2')
      if curLive then
        redis.call('ZREM', geo, id)
        redis.call('HINCRBY', info, 'live', -1)
      end
    end
    applied = applied + 1
  end
end
if ARGV[2] == '1' then
  redis.call('HSET', info, 'built', '1')
  redis.call('EXPIRE', info, ARGV[3])
  redis.call('EXPIRE', geo, ARGV[3])
end
return applied
`)

// wholeLua is true when the GEO set holds exactly the live stores the hash
// counts: a key lost on its own (eviction, expiry) breaks it.
const wholeLua = `
local function whole(geo, info)
  return redis.call('ZCARD', geo) == tonumber(redis.call('HGET', info, 'live') or '0')
end
`

// beginScript starts a rebuild: it drops a view that is not whole, sets the
// epoch field to ARGV[1] unless a rebuild already set one, and returns the
// epoch to rebuild under (the TTL, ARGV[2], is set by the merge that marks
// the view built).
var beginScript = redis.NewScript(wholeLua + `
if not whole(KEYS[1], KEYS[2]) then redis.call('DEL', KEYS[1], KEYS[2]) end
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[1])
return redis.call('HGET', KEYS[2], 'epoch')
`)

// searchScript searches the view from ARGV longitude, latitude, radius (km)
// and count. It returns nil when the view is not built and whole, else a
// flat list of id, distance, details for each store found, nearest first.
var searchScript = redis.NewScript(wholeLua + `
local geo, info = KEYS[1], KEYS[2]
if redis.call('HEXISTS', info, 'built') == 0 or not whole(geo, info) then
  return false
end
local found = redis.call('GEOSEARCH', geo, 'FROMLONLAT', ARGV[1], ARGV[2],
  'BYRADIUS', ARGV[3], 'km', 'ASC', 'COUNT', ARGV[4], 'WITHDIST')
local out = {}
for _, r in ipairs(found) do
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = redis.call('HGET', info, r[1]) or ''
end
return out
`)

// keys returns the view's keys: the GEO set and the info hash.
func (s *Service) keys() []string {
	geo := s.cache.Key("stores:{geo}")
	return []string{geo, geo + ":info"}
}

// details is what the info hash keeps of a live store.
type details struct {
	Name      string  `json:"name"`
	Longitude float64 `json:"longitude"`
	Latitude  float64 `json:"latitude"`
}

// view is the rebuild machinery of the stores' view (see the package
// comment).
var view = &cache.View[entry]{
	Begin: beginScript,
	Merge: mergeScript,
	Args:  mergeArgs,
	TTL:   ViewTTL,
	Chunk: chunk,
	Raced: errRebuildRaced,
}

// mergeArgs appends e's fields of mergeScript to args.
func mergeArgs(args []any, e entry) ([]any, error) {
	if e.deleted {
		return append(args, e.id, e.version, 2, 0, 0, ""), nil
	}
	js, err := json.Marshal(details{Name: e.name, Longitude: e.lon, Latitude: e.lat})
	if err != nil {
		return nil, err
	}
	return append(args, e.id, e.version, 1, e.lon, e.lat, js), nil
}

// merge merges es into the view (see mergeScript).
func (s *Service) merge(ctx context.Context, epoch string, built bool, es []entry) error {
	return view.MergeEntries(ctx, s.cache, s.keys(), epoch, built, es)
}

// viewNear searches the Redis view, rebuilding it when it is not built.
// Redis failures are returned as they are; database failures as *store.Error.
func (s *Service) viewNear(ctx context.Context, lon, lat, radius float64, limit int) ([]Store, error) {
	var found []Store
	err := view.Read(ctx, func() (bool, error) {
		vals, err := searchScript.Run(ctx, s.cache, s.keys(), lon, lat, radius, limit).Slice()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		found, err = parseFound(vals)
		return true, err
	}, s.rebuild)
	if err != nil {
		return nil, err
	}
	return found, nil
}

func parseFound(vals []any) ([]Store, error) {
	found := make([]Store, 0, len(vals)/3)
	for i := 0; i+2 < len(vals); i += 3 {
		idS, _ := vals[i].(string)
		distS, _ := vals[i+1].(string)
		info, _ := vals[i+2].(string)
		id, err1 := strconv.ParseInt(idS, 10, 64)
		dist, err2 := strconv.ParseFloat(distS, 64)
		var d details
		js, ok := liveDetails(info)
		if err1 != nil || err2 != nil || !ok || json.Unmarshal([]byte(js), &d) != nil {
			return nil, fmt.Errorf("stores: corrupt view entry %q", idS)
		}
		found = append(found, Store{ID: id, Name: d.Name, Longitude: d.Longitude, Latitude: d.Latitude, Distance: roundKM(dist)})
	}
	return found, nil
}

// rebuild fills the view from the database (see the package comment).
func (s *Service) rebuild(ctx context.Context) error {
	return view.Rebuild(ctx, s.cache, s.keys(), s.snapshot)
}

// liveDetails returns the JSON of a live store's hash value: "vN:1:JSON",
// or "1:JSON" as written before stores had versions.
func liveDetails(v string) (string, bool) {
	if rest, ok := strings.CutPrefix(v, "v"); ok {
		_, rest, _ = strings.Cut(rest, ":")
		return strings.CutPrefix(rest, "1:")
	}
	return strings.CutPrefix(v, "1:")
}
