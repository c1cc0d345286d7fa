package catalog

import (
	"context"

	"github.com/microshop/microshop/internal/cache"
)

// Finder is Lookup.Find with the Redis reads of concurrent calls sharing
// one pipeline (cache.SharedGets). Each call answers exactly as Find: the
// cached good, a 404 for a deleted one, or else (a miss, a corrupt entry,
// Redis failing, the caller giving up) it asks the goods service itself.
type Finder struct {
	l    *Lookup
	gets *cache.SharedGets // nil without Redis
}

// NewFinder returns a Finder over l.
func NewFinder(l *Lookup) *Finder {
	f := &Finder{l: l}
	if l != nil && l.Cache.Redis != nil {
		f.gets = cache.NewSharedGets(l.Cache.Redis)
	}
	return f
}

// Find returns good id as Lookup.Find does.
func (f *Finder) Find(ctx context.Context, id int64) (Good, error) {
	if f.gets != nil {
		b, err := f.gets.Get(ctx, f.l.Cache.Key(id))
		g, err := f.l.Cache.parse(id, b, err)
		if g, ok, err := cached(id, g, err); ok {
			return g, err
		}
	}
	return f.l.ask(ctx, id)
}
