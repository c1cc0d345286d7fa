package purchases

import (
	"context"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/testenv"
)

// TestApplyBatch: one batch of sales of several days, one of them past
// keeping and one sent twice, counts each sale exactly once in each of its
// views, and leaves out the views that are past keeping.
func TestApplyBatch(t *testing.T) {
	ctx := context.Background()
	s := New(testenv.DB(t), testenv.Cache(t), nil, nil)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) // a Wednesday
	s.now = func() time.Time { return now }
	yesterday, old := now.AddDate(0, 0, -1), now.AddDate(0, 0, -30)
	views := []window{windowOf(PeriodDay, now), windowOf(PeriodDay, yesterday), windowOf(PeriodWeek, now), windowOf(PeriodAll, now)}
	for _, w := range views { // built before the batch, so that it counts
		viewCounts(t, s, w)
	}
	var batch []*recording
	buy := func(good int64, date time.Time) {
		t.Helper()
		id, err := s.store.insert(ctx, 1, good, date)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, &recording{ctx: ctx, id: id, good: good, date: date})
	}
	buy(1, now)
	buy(2, now)
	buy(1, yesterday)
	buy(3, old) // its day and week are past keeping
	buy(1, now)
	batch = append(batch, batch[0]) // a duplicate in the same batch
	s.apply(batch)
	s.apply(batch[:2]) // and a retried part of it
	for _, tc := range []struct {
		w    window
		want map[int64]int64
	}{
		{views[0], map[int64]int64{1: 2, 2: 1}},
		{views[1], map[int64]int64{1: 1}},
		{views[2], map[int64]int64{1: 3, 2: 1}}, // Monday to Wednesday
		{views[3], map[int64]int64{1: 3, 2: 1, 3: 1}},
	} {
		got := viewCounts(t, s, tc.w)
		if len(got) != len(tc.want) {
			t.Errorf("view %s = %v; want %v", tc.w.name, got, tc.want)
			continue
		}
		for g, n := range tc.want {
			if got[g] != n {
				t.Errorf("view %s = %v; want %v", tc.w.name, got, tc.want)
			}
		}
	}
	for _, p := range []Period{PeriodDay, PeriodWeek} {
		w := windowOf(p, old)
		if n := s.cache.Exists(ctx, s.viewKeys(w)...).Val(); n != 0 {
			t.Errorf("view %s, past keeping: %d keys exist; want none", w.name, n)
		}
	}
}
