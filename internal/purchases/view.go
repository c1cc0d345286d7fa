package purchases

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tuning of the Redis views (see the package comment).
const (
	// CompactEvery bounds how long a sale whose Redis update was lost (Redis
	// failed between the commit and the update) can be missing from a view:
	// the first read after that long re-reads the sales above the watermark
	// from the database, applies the missing ones and advances the watermark.
	CompactEvery = time.Minute
	// Retain is how long a day or week view outlives its window.
	Retain = 3 * 24 * time.Hour
	// maxSeen is how many sales above the watermark a view may hold before a
	// purchase compacts it (reads compact it every CompactEvery anyway).
	maxSeen = 10_000
	// rebuildLease bounds a rebuild: a rebuilder that dies holds the view
	// that long at most; every chunk it writes extends the lease.
	rebuildLease = time.Minute
	// rebuildWait is how long a reader waits for a rebuild by someone else
	// before it computes its answer in the database.
	rebuildWait = 3 * time.Second
	// recordAttempts is how many times a purchase tries its Redis update.
	recordAttempts = 3
	// chunk is how many entries one script call carries.
	chunk = 500
)

var (
	// errRebuildRaced reports a rebuild whose view or lease vanished under
	// it (FLUSHALL, eviction, a newer rebuild); the reader tries again.
	errRebuildRaced = errors.New("purchases: a rankings view changed during its rebuild")
	// errNoCache reports a service without Redis.
	errNoCache = errors.New("purchases: no Redis")
	// errRebuildBusy reports a view being rebuilt by someone else.
	errRebuildBusy = errors.New("purchases: a rankings view is being rebuilt")
)

// viewLua are the helpers every script shares. KEYS are always: the sorted
// set, the meta hash, the seen set, the rebuild lease (one hash tag).
//
// view() returns the meta fields {built, wm, n, s, gen, compacted} of a
// built and whole view, or nil. A view whose sorted set or seen set does not
// hold as many members as meta says (one key lost on its own to eviction or
// a partial flush) is deleted, to be rebuilt. expire() gives the keys their
// TTL in ms ("0": none). tally() records the sizes.
const viewLua = `
local function view()
  local m = redis.call('HMGET', KEYS[2], 'built', 'wm', 'n', 's', 'gen', 'compacted')
  if not m[1] then return nil end
  if tonumber(m[3]) ~= redis.call('ZCARD', KEYS[1]) or tonumber(m[4]) ~= redis.call('ZCARD', KEYS[3]) then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return nil
  end
  return m
end
local function expire(ms)
  if ms ~= '0' then
    for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ms) end
  end
end
local function tally()
  redis.call('HSET', KEYS[2], 'n', redis.call('ZCARD', KEYS[1]), 's', redis.call('ZCARD', KEYS[3]))
end
`

// applyScript counts sales in a built view, each at most once.
// ARGV: TTL ms, generation ("" for any), then pairs purchase id, member.
// A sale is counted only if its id is above the watermark and not yet in
// the seen set; it is then added to seen and its good's score goes down by
// one (scores are minus the sales). Returns {applied, size of seen}, or
// {-1, 0} when the view is not built (or not of that generation).
var applyScript = redis.NewScript(viewLua + `
local m = view()
if not m or (ARGV[2] ~= '' and m[5] ~= ARGV[2]) then return {-1, 0} end
local wm = tonumber(m[2])
local applied = 0
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i]) > wm and redis.call('ZADD', KEYS[3], 'NX', ARGV[i], ARGV[i]) == 1 then
    redis.call('ZINCRBY', KEYS[1], -1, ARGV[i + 1])
    applied = applied + 1
  end
end
tally()
expire(ARGV[1])
return {applied, redis.call('ZCARD', KEYS[3])}
`)

// readScript returns {1, compacted, [member, score, ...]} for ranks ARGV[1]
// to ARGV[2] (0-based, inclusive) of a built view, or {0}.
var readScript = redis.NewScript(viewLua + `
local m = view()
if not m then return {0} end
return {1, m[6] or '0', redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')}
`)

// beginScript starts a rebuild: it returns 1 if the view is built, 2 if
// someone else holds the lease, else 0 after taking the lease (token
// ARGV[1] for ARGV[2] ms) and dropping any partial view.
var beginScript = redis.NewScript(viewLua + `
if view() then return 1 end
if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 0
`)

// chunkScript writes counted sales into a view being rebuilt, if the lease
// still holds token ARGV[1] (it is extended by ARGV[2] ms).
// ARGV[3..]: pairs score, member. Returns 1, or -1 when the lease is lost.
var chunkScript = redis.NewScript(`
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[4], ARGV[2])
if #ARGV > 2 then redis.call('ZADD', KEYS[1], unpack(ARGV, 3)) end
return 1
`)

// finishScript marks a rebuilt view built, if the lease still holds token
// ARGV[1]: watermark ARGV[2], generation = the token, compacted ARGV[4]
// (unix ms), TTL ARGV[3] ms, cancelled purchases counted before the
// snapshot ARGV[5] (cx). Returns 1, or -1 when the lease is lost.
var finishScript = redis.NewScript(viewLua + `
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[2], 'built', '1', 'wm', ARGV[2], 'gen', ARGV[1], 'compacted', ARGV[4], 'cx', ARGV[5])
tally()
expire(ARGV[3])
return 1
`)

// releaseScript drops the lease if it still holds token ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
return 1
`)

// advanceScript moves the watermark of a built view of generation ARGV[1]
// up to ARGV[2] (never down), forgets the seen sales at or below it and
// records the compaction time ARGV[3]; TTL ARGV[4] ms. The caller must have
// applied every sale up to ARGV[2] to this generation first. Returns the
// size of seen, or -1.
var advanceScript = redis.NewScript(viewLua + `
local m = view()
if not m or m[5] ~= ARGV[1] then return -1 end
if tonumber(ARGV[2]) > tonumber(m[2]) then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
  redis.call('HSET', KEYS[2], 'wm', ARGV[2])
end
redis.call('HSET', KEYS[2], 'compacted', ARGV[3])
tally()
expire(ARGV[4])
return redis.call('ZCARD', KEYS[3])
`)

// removeScript removes the members ARGV from a built view (deleted goods).
var removeScript = redis.NewScript(viewLua + `
if not view() then return 0 end
local n = redis.call('ZREM', KEYS[1], unpack(ARGV))
tally()
return n
`)

// viewKeys returns the keys of w's view, sharing the hash tag {w.name}: the
// sorted set, the meta hash, the seen set and the rebuild lease.
func (s *Service) viewKeys(w window) []string {
	base := s.cache.Key("rankings:{" + w.name + "}")
	return []string{base, base + ":meta", base + ":seen", base + ":rebuild"}
}

// compactKey is the key of the lease that keeps compactions of w apart.
func (s *Service) compactKey(w window) string {
	return s.cache.Key("rankings:{" + w.name + "}:compact")
}

// ttl returns the TTL of w's keys in ms: 0 for none (all time), negative
// when the window is past keeping.
func (s *Service) ttl(w window) int64 {
	if w.all() {
		return 0
	}
	ms := w.to.Add(Retain).Sub(s.now()).Milliseconds()
	if ms == 0 {
		ms = -1
	}
	return ms
}

// member is a good's member in a sorted set: its id zero-padded to 16
// digits (ids are below 2^53), so that the lexicographic order Redis uses
// between equal scores is the numeric order.
func member(good int64) string { return fmt.Sprintf("%016d", good) }

// scriptCall is one call of a script in a pipeline.
type scriptCall struct {
	keys []string
	args []any
}

// runPipelined runs calls of script in one pipeline (one round trip per
// node), loading the script if Redis lost it. The scripts are idempotent,
// so calls that ran before a NOSCRIPT are safe to run again.
func (s *Service) runPipelined(ctx context.Context, script *redis.Script, calls []scriptCall) ([]*redis.Cmd, error) {
	run := func(sha bool) ([]*redis.Cmd, error) {
		cmds := make([]*redis.Cmd, len(calls))
		_, err := s.cache.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, c := range calls {
				if sha {
					cmds[i] = script.EvalSha(ctx, p, c.keys, c.args...)
				} else {
					cmds[i] = script.Eval(ctx, p, c.keys, c.args...)
				}
			}
			return nil
		})
		return cmds, err
	}
	cmds, err := run(true)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmds, err = run(false)
	}
	return cmds, err
}

// viewPage returns ranks [off, off+n) of w's view, rebuilding the view when
// it is missing and compacting it when it is due. Redis failures are
// returned as they are, database failures as *store.Error.
func (s *Service) viewPage(ctx context.Context, w window, off, n int) ([]sales, error) {
	if s.cache == nil {
		return nil, errNoCache
	}
	keys := s.viewKeys(w)
	deadline := time.Now().Add(rebuildWait)
	compactTried := false
	for attempt := 0; ; attempt++ {
		res, err := readScript.Run(ctx, s.cache, keys, off, off+n-1).Slice()
		if err != nil {
			return nil, err
		}
		if len(res) == 3 && res[0] == int64(1) {
			compacted, _ := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
			if !compactTried && s.now().Sub(time.UnixMilli(compacted)) >= CompactEvery {
				// Due: bring the view up to date, then read it again.
				compactTried = true
				s.compact(ctx, w)
				continue
			}
			return parseRange(res[2])
		}
		if attempt > 0 && time.Now().After(deadline) {
			return nil, errRebuildBusy
		}
		err = s.rebuild(ctx, w)
		switch {
		case err == nil, errors.Is(err, errRebuildRaced):
		case errors.Is(err, errRebuildBusy):
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		default:
			return nil, err
		}
	}
}

// parseRange parses ZRANGE ... WITHSCORES: member, score, member, score...
func parseRange(v any) ([]sales, error) {
	flat, ok := v.([]any)
	if !ok || len(flat)%2 != 0 {
		return nil, fmt.Errorf("purchases: unexpected rankings range %T", v)
	}
	list := make([]sales, 0, len(flat)/2)
	for i := 0; i < len(flat); i += 2 {
		m, _ := flat[i].(string)
		sc, _ := flat[i+1].(string)
		good, err := strconv.ParseInt(m, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("purchases: corrupt rankings member %q", m)
		}
		score, err := strconv.ParseFloat(sc, 64)
		if err != nil {
			return nil, fmt.Errorf("purchases: corrupt rankings score %q", sc)
		}
		list = append(list, sales{good: good, sales: int64(-score)})
	}
	return list, nil
}

// rebuild fills w's view from the database (see the package comment).
func (s *Service) rebuild(ctx context.Context, w window) (err error) {
	keys := s.viewKeys(w)
	tok := token()
	lease := rebuildLease.Milliseconds()
	st, err := beginScript.Run(ctx, s.cache, keys, tok, lease).Int64()
	if err != nil {
		return err
	}
	switch st {
	case 1:
		return nil
	case 2:
		return errRebuildBusy
	}
	defer func() {
		if err != nil { // let the next reader start over at once
			releaseScript.Run(context.WithoutCancel(ctx), s.cache, keys, tok)
		}
	}()
	// Read before the snapshot: a cancel that commits after this read is
	// either in the snapshot or counted above cx, never lost (cancel.go).
	cx, err := s.store.cancelled(ctx)
	if err != nil {
		return err
	}
	wm, err := s.store.maxID(ctx)
	if err != nil {
		return err
	}
	counts, err := s.store.counts(ctx, w, wm)
	if err != nil {
		return err
	}
	if s.hook != nil {
		s.hook("counted")
	}
	for len(counts) > 0 {
		n := min(len(counts), chunk)
		args := make([]any, 0, 2+2*n)
		args = append(args, tok, lease)
		for _, c := range counts[:n] {
			args = append(args, -c.sales, member(c.good))
		}
		ok, err := chunkScript.Run(ctx, s.cache, keys, args...).Int64()
		if err != nil {
			return err
		}
		if ok < 0 {
			return errRebuildRaced
		}
		counts = counts[n:]
	}
	ok, err := finishScript.Run(ctx, s.cache, keys, tok, wm, s.ttl(w), s.now().UnixMilli(), cx).Int64()
	if err != nil {
		return err
	}
	if ok < 0 {
		return errRebuildRaced
	}
	if s.hook != nil {
		s.hook("finished")
	}
	// Sales committed after wm was read had their updates ignored until
	// now: count them. A failure here is repaired by the next compaction.
	if err := s.catchUp(ctx, w, tok, wm); err != nil && !errors.Is(err, errRebuildRaced) {
		s.log.Warn("rankings: catching up after a rebuild failed; the next compaction will", "view", w.name, "err", err)
	}
	return nil
}

// compact brings w's view up to date with the database and trims its seen
// set, unless another compaction of w ran recently. Failures are logged.
func (s *Service) compact(ctx context.Context, w window) {
	ok, err := s.cache.SetNX(ctx, s.compactKey(w), 1, CompactEvery/2).Result()
	if err != nil || !ok {
		return
	}
	meta, err := s.cache.HMGet(ctx, s.viewKeys(w)[1], "built", "gen", "wm", "cx").Result()
	if err != nil || meta[0] == nil {
		return
	}
	if stale, err := s.missedCancel(ctx, meta[3]); err != nil || stale {
		if stale {
			s.dropViews(ctx, []window{w})
		}
		return
	}
	gen, _ := meta[1].(string)
	wm, _ := strconv.ParseInt(fmt.Sprint(meta[2]), 10, 64)
	if err := s.catchUp(ctx, w, gen, wm); err != nil && !errors.Is(err, errRebuildRaced) {
		s.log.Warn("rankings: compaction failed", "view", w.name, "err", err)
	}
}

// catchUp applies to generation gen of w's view every sale above watermark
// wm up to a fresh sound watermark, then advances the view's watermark to
// it. Sales already counted are skipped by applyScript.
func (s *Service) catchUp(ctx context.Context, w window, gen string, wm int64) error {
	keys := s.viewKeys(w)
	top, err := s.store.maxID(ctx)
	if err != nil {
		return err
	}
	list, err := s.store.since(ctx, w, wm, top)
	if err != nil {
		return err
	}
	ttl := s.ttl(w)
	for len(list) > 0 {
		n := min(len(list), chunk)
		args := make([]any, 0, 2+2*n)
		args = append(args, ttl, gen)
		for _, sl := range list[:n] {
			args = append(args, sl.id, member(sl.good))
		}
		res, err := applyScript.Run(ctx, s.cache, keys, args...).Int64Slice()
		if err != nil {
			return err
		}
		if len(res) != 2 || res[0] < 0 {
			return errRebuildRaced
		}
		list = list[n:]
	}
	n, err := advanceScript.Run(ctx, s.cache, keys, gen, top, s.now().UnixMilli(), ttl).Int64()
	if err != nil {
		return err
	}
	if n < 0 {
		return errRebuildRaced
	}
	return nil
}

// forget removes deleted goods from the current day, week and all-time
// views. Best effort: a good left behind is skipped and removed again by
// the next read.
func (s *Service) forget(ctx context.Context, goods []int64) {
	args := make([]any, len(goods))
	for i, g := range goods {
		args[i] = member(g)
	}
	var calls []scriptCall
	for _, p := range []Period{PeriodDay, PeriodWeek, PeriodAll} {
		calls = append(calls, scriptCall{keys: s.viewKeys(windowOf(p, s.now())), args: args})
	}
	if _, err := s.runPipelined(ctx, removeScript, calls); err != nil {
		s.log.Warn("rankings: removing deleted goods failed", "goodsids", goods, "err", err)
	}
}

// token returns a random rebuild token.
func token() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
