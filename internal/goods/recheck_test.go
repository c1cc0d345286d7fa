package goods

import (
	"context"
	"errors"
	"testing"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/testenv"
)

// A reader that read a good just before its deletion, and fills the cache
// after a FLUSHALL took the deletion's tombstone away, would bring the good
// back: the recheck that follows a fill puts the tombstone back. A good
// that still exists keeps its entry.
func TestRecheckAfterFill(t *testing.T) {
	ctx := context.Background()
	c := testenv.Cache(t)
	s := New(testenv.DB(t), c, nil)
	gone, err := s.store.insert(ctx, catalog.Good{Name: "vase", Price: 10})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := s.store.insert(ctx, catalog.Good{Name: "bowl", Price: 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	// The tombstone is lost; the late reader's fill lands.
	for _, id := range []int64{gone, kept} {
		if wrote, err := catalog.Fill(ctx, c, catalog.Good{ID: id, Name: "x", Price: 1}); err != nil || !wrote {
			t.Fatalf("fill %d = %v, %v", id, wrote, err)
		}
		s.recheck(ctx, id)
	}
	if _, err := catalog.Get(ctx, c, gone); !errors.Is(err, catalog.ErrDeleted) {
		t.Fatalf("deleted good after the recheck: Get = %v; want catalog.ErrDeleted", err)
	}
	if _, err := catalog.Get(ctx, c, kept); err != nil {
		t.Fatalf("existing good after the recheck: Get = %v; want its entry", err)
	}
}
