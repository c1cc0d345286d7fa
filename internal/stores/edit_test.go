package stores_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/testenv"
)

// PATCH /stores changes the fields given of a live store, in the database
// and in the Redis view (its position too); bad input is a 400 that
// changes nothing, an unknown or deleted store a 404.
func TestEdit(t *testing.T) {
	f := setup(t)
	id := f.add(t, "Myeongdong", kmEast(1), lat0)
	other := f.add(t, "Jongno", kmEast(2), lat0)
	for _, tc := range []struct {
		params map[string]any
		msg    string
	}{
		{map[string]any{"id": id}, "nothing to change: give one of name, longitude, latitude"},
		{map[string]any{"id": id, "colour": "red"}, "unknown field colour: a store has name, longitude, latitude"},
		{map[string]any{"id": id, "longitude": 181}, "longitude must be between -180 and 180"},
		{map[string]any{"id": id, "latitude": "north"}, "latitude must be a number"},
		{map[string]any{"id": id, "name": "  "}, "name must not be blank"},
		{map[string]any{"name": "x"}, "id is required"},
	} {
		_, err := f.call("PATCH/stores", tc.params)
		if code(err) != 400 || err.Error() != "400 "+tc.msg {
			t.Fatalf("PATCH %v: %v; want 400 %q", tc.params, err, tc.msg)
		}
	}
	if _, err := f.call("PATCH/stores", map[string]any{"id": other + 10, "name": "x"}); code(err) != 404 {
		t.Fatalf("PATCH an unknown store: %v; want 404", err)
	}
	near := f.near(t, lon0, lat0, 5, 10)
	if len(near) != 2 || near[0].ID != id {
		t.Fatalf("before the edit: %v", near)
	}
	// Moved 4 km further east and renamed: now the farther of the two.
	res := f.must(t, "PATCH/stores", map[string]any{"id": id, "name": "Myeongdong 2", "longitude": kmEast(5)})
	if res["name"] != "Myeongdong 2" || res["longitude"] != kmEast(5) || res["latitude"] != lat0 {
		t.Fatalf("PATCH answer = %v", res)
	}
	check := func(what string) {
		t.Helper()
		got := f.near(t, lon0, lat0, 10, 10)
		if len(got) != 2 || got[0].ID != other || got[1].ID != id || got[1].Name != "Myeongdong 2" || got[1].Longitude != kmEast(5) {
			t.Fatalf("%s: %v; want %d then the moved %d", what, got, other, id)
		}
		if got := f.near(t, kmEast(1), lat0, 0.5, 10); len(got) != 0 {
			t.Fatalf("%s: still found at its old place: %v", what, got)
		}
		fromDB := withCache(t, f.db, deadCache(t)).near(t, lon0, lat0, 10, 10)
		if !sameStores(got, fromDB, 0.002) {
			t.Fatalf("%s: view %v; database %v", what, got, fromDB)
		}
	}
	check("after the edit")
	testenv.FlushPrefix(t, f.cache)
	check("after a FLUSHALL")
	f.must(t, "DELETE/stores", map[string]any{"id": id})
	if _, err := f.call("PATCH/stores", map[string]any{"id": id, "name": "back"}); code(err) != 404 {
		t.Fatalf("PATCH a deleted store: %v; want 404", err)
	}
	if got := f.near(t, lon0, lat0, 10, 10); len(got) != 1 || got[0].ID != other {
		t.Fatalf("after deleting the edited store: %v", got)
	}
}

// Concurrent edits of the same stores (names and positions), with deletes,
// searches and FLUSHALLs meanwhile: the view ends equal to the database,
// whatever order the merges arrived in.
func TestEditConcurrent(t *testing.T) {
	f := setup(t)
	var ids []int64
	for i := range 20 {
		ids = append(ids, f.add(t, fmt.Sprint("s", i), kmEast(float64(i)*0.2), lat0))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for round := range 10 {
		for i, id := range ids {
			wg.Go(func() {
				_, err := f.call("PATCH/stores", map[string]any{"id": id, "name": fmt.Sprint("s", i, "r", round), "longitude": kmEast(float64(i)*0.2 + float64(round)*0.01)})
				if err != nil && !(i == 7 && code(err) == 404) {
					errs <- err
				}
			})
		}
		wg.Go(func() { f.call("GET/stores", map[string]any{"longitude": lon0, "latitude": lat0}) })
		if round == 5 {
			wg.Go(func() { f.call("DELETE/stores", map[string]any{"id": ids[7]}) })
		}
		if round%3 == 0 {
			wg.Go(func() { testenv.FlushPrefix(t, f.cache) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := f.near(t, lon0, lat0, 10, 100)
	fromDB := withCache(t, f.db, deadCache(t)).near(t, lon0, lat0, 10, 100)
	if len(got) != 19 || !sameStores(got, fromDB, 0.002) {
		t.Fatalf("view (%d stores):\n%v\ndatabase (%d stores):\n%v", len(got), got, len(fromDB), fromDB)
	}
}

// A view written before stores had versions ("1:JSON", "2") is read, and
// an edit replaces its entry.
func TestEditOverOldFormat(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	id := f.add(t, "old", kmEast(1), lat0)
	info := f.cache.Key("stores:{geo}") + ":info"
	if err := f.cache.HSet(ctx, info, fmt.Sprint(id), fmt.Sprintf(`1:{"name":"old","longitude":%v,"latitude":%v}`, kmEast(1), lat0)).Err(); err != nil {
		t.Fatal(err)
	}
	if got := f.near(t, lon0, lat0, 5, 10); len(got) != 1 || got[0].Name != "old" {
		t.Fatalf("an entry in the old format: %v", got)
	}
	f.must(t, "PATCH/stores", map[string]any{"id": id, "name": "new"})
	if got := f.near(t, lon0, lat0, 5, 10); len(got) != 1 || got[0].Name != "new" {
		t.Fatalf("after an edit over the old format: %v", got)
	}
}
