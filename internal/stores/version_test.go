package stores

import (
	"context"
	"log/slog"
	"testing"

	"github.com/microshop/microshop/internal/testenv"
)

// A merge that arrives late (a write whose Redis update was slow, or a
// rebuild chunk read before an edit) never undoes a newer version: an
// edit is not undone by the add before it, a delete by an edit before it.
func TestMergeKeepsNewestVersion(t *testing.T) {
	ctx := context.Background()
	s := New(testenv.DB(t), testenv.Cache(t), slog.New(slog.DiscardHandler))
	id, err := s.Add(ctx, "first", 2.35, 48.85)
	if err != nil {
		t.Fatal(err)
	}
	name := "second"
	edited, err := s.edit(ctx, id, change{name: &name})
	if err != nil || edited.version != 2 {
		t.Fatalf("edit = %+v, %v; want version 2", edited, err)
	}
	late := entry{id: id, name: "first", lon: 2.35, lat: 48.85, version: 1}
	if err := s.merge(ctx, "", false, []entry{late}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.viewNear(ctx, 2.35, 48.85, 1, 10); err != nil || len(got) != 1 || got[0].Name != "second" {
		t.Fatalf("after a late merge of version 1: %v, %v; want the edit (second)", got, err)
	}
	if err := s.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.merge(ctx, "", false, []entry{edited}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.viewNear(ctx, 2.35, 48.85, 1, 10); err != nil || len(got) != 0 {
		t.Fatalf("after a late merge of the edit over the delete: %v, %v; want none", got, err)
	}
}
