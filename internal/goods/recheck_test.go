package goods

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/testenv"
)

// A reader that read a good just before its deletion, and fills the cache
// after a FLUSHALL took the deletion's tombstone away (or, in the book's
// format, after the deletion's DEL), would bring the good back: the recheck
// that follows a fill takes it away again. A good that still exists keeps
// its entry.
func TestRecheckAfterFill(t *testing.T) {
	for _, format := range []catalog.Format{catalog.Own, catalog.Book} {
		t.Run(format.String(), func(t *testing.T) {
			ctx := context.Background()
			c := testenv.Cache(t)
			db := testenv.DB(t)
			testenv.SpreadGoodsIDs(t, db)
			e := catalog.Entries{Redis: c, Format: format}
			s := New(db, e, nil)
			gone, err := s.store.insert(ctx, catalog.Good{Name: "vase", Price: 10})
			if err != nil {
				t.Fatal(err)
			}
			kept, err := s.store.insert(ctx, catalog.Good{Name: "bowl", Price: 20})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Del(context.Background(), e.Key(gone), e.Key(kept)) })
			if err := s.store.delete(ctx, gone); err != nil {
				t.Fatal(err)
			}
			// The tombstone is lost (or there is none); the late reader's fill lands.
			for _, id := range []int64{gone, kept} {
				if wrote, err := e.Fill(ctx, catalog.Good{ID: id, Name: "x", Price: 1}); err != nil || !wrote {
					t.Fatalf("fill %d = %v, %v", id, wrote, err)
				}
				s.recheck(ctx, catalog.Good{ID: id, Name: "x", Price: 1})
			}
			want := catalog.ErrDeleted
			if format == catalog.Book {
				want = redis.Nil
			}
			if _, err := e.Get(ctx, gone); !errors.Is(err, want) {
				t.Fatalf("deleted good after the recheck: Get = %v; want %v", err, want)
			}
			// The late fill of the existing good was not the row (an edit
			// whose entry was lost): the recheck wrote the row over it.
			if g, err := e.Get(ctx, kept); err != nil || g.Name != "bowl" || g.Price != 20 {
				t.Fatalf("existing good after the recheck: Get = %+v, %v; want the row (bowl, 20)", g, err)
			}
		})
	}
}
