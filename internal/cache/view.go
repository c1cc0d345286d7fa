package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// BeginScript starts the rebuild of a view kept in one hash (KEYS[1]): it
// sets the epoch field to ARGV[1] unless a rebuild already set one, gives
// the hash its TTL (ARGV[2] seconds) unless it has one, and returns the
// epoch to rebuild under.
var BeginScript = redis.NewScript(`
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('HGET', KEYS[1], 'epoch')
`)

// MergeScript returns the merge script of a view kept in one hash
// (KEYS[1]), body wrapped in the frame every such view shares. ARGV: the
// epoch token ("" for none), "1" to mark the hash built, the TTL in
// seconds, then the entries from ARGV[4] on. With a token the script does
// nothing and returns -1 unless the hash's epoch field holds it (a rebuild
// whose view vanished: View.Raced); after body it marks the hash built when
// told, gives it the TTL unless it has one, and returns applied. body
// merges the entries: it sees key (KEYS[1]) and counts each entry it
// applies in applied. To keep the view exact whatever order merges arrive
// in, body applies an entry only when its version is higher than the
// view's.
func MergeScript(body string) *redis.Script {
	return redis.NewScript(`
local key = KEYS[1]
if ARGV[1] ~= '' and redis.call('HGET', key, 'epoch') ~= ARGV[1] then
  return -1
end
local applied = 0
` + body + `
if ARGV[2] == '1' then redis.call('HSET', key, 'built', '1') end
if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[3]) end
return applied
`)
}

// View is the machinery of a versioned Redis view of database rows, each
// entry carrying a version: writes merge their row at once, and a reader
// that finds the view not built rebuilds it from a database snapshot,
// merged in chunks under an epoch token so that a view that vanishes
// during the rebuild (FLUSHALL, eviction, expiry) is never marked built
// half full. The Lua scripts, which know the view's layout, are the
// package's own.
type View[E any] struct {
	// Begin starts a rebuild: ARGV[1] is a fresh random token, ARGV[2] the
	// TTL in seconds; it returns the epoch token to rebuild under (see
	// BeginScript).
	Begin *redis.Script
	// Merge merges entries: ARGV[1] is the epoch token ("" for none),
	// ARGV[2] "1" to mark the view built, ARGV[3] the TTL in seconds, then
	// the fields of every entry. It returns -1 without doing anything when
	// the epoch does not hold the token, else the number of entries applied.
	Merge *redis.Script
	// Args appends the merge script's fields of e to args.
	Args func(args []any, e E) ([]any, error)
	// TTL is how long the view lives before it is rebuilt.
	TTL time.Duration
	// Chunk is how many entries one merge carries during a rebuild.
	Chunk int
	// Raced is the error of a merge whose epoch no longer held: the view
	// vanished during its rebuild.
	Raced error
}

// MergeEntries merges es into the view at keys under epoch ("" for a write, which
// merges whatever the epoch), marking the view built when built is true.
// It returns v.Raced when the epoch no longer held.
func (v *View[E]) MergeEntries(ctx context.Context, c *Cache, keys []string, epoch string, built bool, es []E) error {
	finish := "0"
	if built {
		finish = "1"
	}
	args := make([]any, 0, 3+5*len(es))
	args = append(args, epoch, finish, int64(v.TTL/time.Second))
	for _, e := range es {
		var err error
		if args, err = v.Args(args, e); err != nil {
			return err
		}
	}
	n, err := v.Merge.Run(ctx, c, keys, args...).Int64()
	if err != nil {
		return err
	}
	if n < 0 {
		return v.Raced
	}
	return nil
}

// Rebuild fills the view at keys from snapshot (read after the rebuild has
// begun), in chunks of v.Chunk entries; the last chunk marks it built.
func (v *View[E]) Rebuild(ctx context.Context, c *Cache, keys []string, snapshot func(context.Context) ([]E, error)) error {
	epoch, err := v.Begin.Run(ctx, c, keys, token(), int64(v.TTL/time.Second)).Text()
	if err != nil {
		return err
	}
	es, err := snapshot(ctx)
	if err != nil {
		return err
	}
	for {
		n := min(len(es), v.Chunk)
		if err := v.MergeEntries(ctx, c, keys, epoch, n == len(es), es[:n]); err != nil {
			return err
		}
		es = es[n:]
		if len(es) == 0 {
			return nil
		}
	}
}

// Read calls read until it reports the view built, rebuilding the view
// (with rebuild) after each read that finds it not built. A rebuild that
// races (v.Raced) is not an error; after a third read that finds the view
// not built Read returns v.Raced. Any other error of read or rebuild is
// returned as it is.
func (v *View[E]) Read(ctx context.Context, read func() (built bool, err error), rebuild func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		built, err := read()
		if err != nil || built {
			return err
		}
		if attempt == 2 {
			return v.Raced
		}
		if err := rebuild(ctx); err != nil && !errors.Is(err, v.Raced) {
			return err
		}
	}
}

// token returns a random rebuild token.
func token() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
