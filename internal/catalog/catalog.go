// Package catalog is the goods contract that other services rely on: the
// Good type, its Redis cache entry, and Lookup, which finds a good the way
// DESIGN §1 prescribes: Redis first; on a miss, or with Redis down, ask the
// goods service over the protocol and refill the cache with its answer.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
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

// Key returns the Redis key of good id's cache entry.
func Key(c *cache.Cache, id int64) string {
	return c.Key("goods:{" + strconv.FormatInt(id, 10) + "}")
}

// tombstone is the cache entry of a deleted good.
const tombstone = "deleted"

// Errors of Get besides redis.Nil (a miss) and Redis's own.
var (
	// ErrDeleted: the good's deletion is cached.
	ErrDeleted = errors.New("catalog: good deleted")
	// ErrCorrupt: the entry is unreadable; a reader that has the good from
	// the database overwrites it (Put), as for a miss.
	ErrCorrupt = errors.New("catalog: corrupt cache entry")
)

// Put writes a new good to the cache (an idempotent SET with TTL). Only the
// goods service calls it, when the good is created.
func Put(ctx context.Context, c *cache.Cache, g Good) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return c.Set(ctx, Key(c, g.ID), b, TTL).Err()
}

// Fill caches a good a reader found in the database or got from the goods
// service, and reports whether it wrote the entry. It never overwrites an
// entry (SET NX): a reader that read the good just before it was deleted
// cannot bring it back over the deletion's tombstone. Goods are never
// changed in place and ids are never reused, so an existing entry is never
// older than what the reader has. (The tombstone itself can be lost to a
// FLUSHALL between the deletion and the fill: a writer that filled checks
// the database again, see goods.)
func Fill(ctx context.Context, c *cache.Cache, g Good) (bool, error) {
	b, err := json.Marshal(g)
	if err != nil {
		return false, err
	}
	return c.SetNX(ctx, Key(c, g.ID), b, TTL).Result()
}

// Forget records in the cache that good id was deleted (after the database
// delete): a tombstone, written with SET so it replaces a cached copy, that
// outlives every read begun before it (TTL). Losing it (FLUSHALL) is safe:
// the next reader finds the good missing in the database.
func Forget(ctx context.Context, c *cache.Cache, id int64) error {
	return c.Set(ctx, Key(c, id), tombstone, TTL).Err()
}

// Get reads good id from the cache. It returns redis.Nil on a miss,
// ErrDeleted when the good is known to be deleted and ErrCorrupt for an
// unreadable entry.
func Get(ctx context.Context, c *cache.Cache, id int64) (Good, error) {
	b, err := c.Get(ctx, Key(c, id)).Bytes()
	if err != nil {
		return Good{}, err
	}
	if string(b) == tombstone {
		return Good{}, ErrDeleted
	}
	var g Good
	if err := json.Unmarshal(b, &g); err != nil || g.ID != id {
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
	Cache  *cache.Cache
	Caller Caller
}

// Find returns good id: from Redis when cached, else from the goods service
// (refilling the cache). An unknown good is a 404 *service.Error; a goods
// service that cannot answer is a 503.
func (l *Lookup) Find(ctx context.Context, id int64) (Good, error) {
	if l.Cache != nil {
		g, err := Get(ctx, l.Cache, id)
		if err == nil {
			return g, nil
		}
		if errors.Is(err, ErrDeleted) {
			return Good{}, service.NotFound("good %d not found", id)
		}
	}
	params, _ := json.Marshal(map[string]int64{"id": id})
	m, err := l.Caller.Call(ctx, "GET", "/goods", params)
	if err != nil {
		var se *service.Error
		if errors.As(err, &se) {
			return Good{}, se
		}
		return Good{}, service.Unavailable("goods service unavailable")
	}
	code := 0
	if m.ErrorCode != nil {
		code = *m.ErrorCode
	}
	switch {
	case code == 404:
		return Good{}, service.NotFound("good %d not found", id)
	case code != 0:
		return Good{}, service.Unavailable("goods service answered %d: %s", code, m.ErrorMessage)
	}
	var body struct {
		Results []Good `json:"results"`
	}
	if err := json.Unmarshal(m.Raw, &body); err != nil || len(body.Results) == 0 || body.Results[0].ID != id {
		return Good{}, service.Unavailable("goods service gave an unusable answer")
	}
	g := body.Results[0]
	if l.Cache != nil {
		Fill(ctx, l.Cache, g) // best effort: a Redis failure only costs speed
	}
	return g, nil
}

// GetMany reads goods ids from the cache in one round trip and returns them
// in the order of ids; found[i] tells whether ids[i] was cached. It uses a
// pipeline of GETs rather than MGET because every good's key has its own
// hash tag: on a Redis Cluster the client splits the pipeline by node, where
// an MGET across slots would be refused.
func GetMany(ctx context.Context, c *cache.Cache, ids []int64) (goods []Good, found []bool, err error) {
	goods, found = make([]Good, len(ids)), make([]bool, len(ids))
	if len(ids) == 0 {
		return goods, found, nil
	}
	cmds := make([]*redis.StringCmd, len(ids))
	_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Get(ctx, Key(c, id))
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
		var g Good
		if json.Unmarshal(b, &g) == nil && g.ID == ids[i] {
			goods[i], found[i] = g, true
		}
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
	if l.Cache != nil {
		// With Redis down every good is a miss, asked of the goods service.
		goods, found, _ = GetMany(ctx, l.Cache, ids)
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
