package purchases

import (
	"context"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/testenv"
)

// viewCounts reads a view's sorted set as good → sales.
func viewCounts(t *testing.T, s *Service, w window) map[int64]int64 {
	t.Helper()
	list, err := s.viewPage(context.Background(), w, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int64]int64{}
	for _, e := range list {
		m[e.good] = e.sales
	}
	return m
}

// TestRebuildInterleavings runs purchases and duplicated updates at the
// worst moments of a rebuild: after its snapshot is counted (the new sales
// are above the watermark, their updates find the view not built) and after
// it is marked built (a late update of a sale inside the snapshot arrives).
// The view must still count every sale exactly once.
func TestRebuildInterleavings(t *testing.T) {
	ctx := context.Background()
	s := New(testenv.DB(t), testenv.Cache(t), nil, nil)
	now := time.Now().UTC()
	var during []sale
	buy := func(good int64) sale {
		t.Helper()
		id, err := s.store.insert(ctx, 1, good, now)
		if err != nil {
			t.Fatal(err)
		}
		s.record(ctx, id, good, now)
		return sale{id, good}
	}
	old := buy(1).id
	buy(2)
	s.hook = func(stage string) {
		switch stage {
		case "counted":
			during = append(during, buy(1), buy(3))
			s.record(ctx, old, 1, now) // a late duplicate, view not built
		case "finished":
			s.record(ctx, old, 1, now) // a late duplicate, below the watermark
			during = append(during, buy(3))
		}
	}
	w := windowOf(PeriodAll, now)
	want := map[int64]int64{1: 2, 2: 1, 3: 2}
	if got := viewCounts(t, s, w); len(got) != 3 || got[1] != 2 || got[2] != 1 || got[3] != 2 {
		t.Fatalf("view after a rebuild with interleaved sales = %v; want %v", got, want)
	}
	s.hook = nil
	for _, sl := range during { // every update again: retried or duplicated
		s.record(ctx, sl.id, sl.good, now)
	}
	if got := viewCounts(t, s, w); got[1] != 2 || got[2] != 1 || got[3] != 2 {
		t.Fatalf("view after duplicated updates = %v; want %v", got, want)
	}
	// The same after a compaction has moved the watermark and trimmed seen.
	s.compact(ctx, w)
	for _, sl := range during {
		s.record(ctx, sl.id, sl.good, now)
	}
	if got := viewCounts(t, s, w); got[1] != 2 || got[2] != 1 || got[3] != 2 {
		t.Fatalf("view after compaction and duplicated updates = %v; want %v", got, want)
	}
}

// TestBarrier: on MySQL, where InnoDB commits ids out of order, a watermark
// read waits for every insert in flight; on SQLite writers are serialised.
func TestBarrier(t *testing.T) {
	ctx := context.Background()
	tbl := newTable(testenv.DB(t), nil)
	if tbl.sql.takeBarrier == "" {
		t.Skip("SQLite commits ids in order")
	}
	tx, err := tbl.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	// An insert in flight: the barrier insert inside a transaction that
	// has not committed yet.
	res, err := tx.ExecContext(ctx, tbl.sql.shareBarrier, 1, 1, tbl.sql.dateArg(time.Now()), nil)
	if err != nil {
		t.Fatal(err)
	}
	inFlight, _ := res.LastInsertId()
	later, err := tbl.insert(ctx, 1, 2, time.Now()) // commits first, with a higher id
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int64, 1)
	go func() {
		m, err := tbl.maxID(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- m
	}()
	select {
	case m := <-got:
		t.Fatalf("maxID = %d while purchase %d was in flight; want it to wait", m, inFlight)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != later || inFlight > later {
		t.Fatalf("maxID = %d; want %d (with %d committed before)", m, later, inFlight)
	}
}

// TestRebuildCancelInterleavings cancels purchases at the worst moments of
// a rebuild: after its snapshot is counted (the snapshot still counts the
// sale; the rebuild must not be marked built with it) and after it is
// marked built (the built view counts it; the cancel's drop takes it away).
// The view then counts exactly the purchases not cancelled.
func TestRebuildCancelInterleavings(t *testing.T) {
	ctx := context.Background()
	s := New(testenv.DB(t), testenv.Cache(t), nil, nil)
	now := time.Now().UTC()
	buy := func(good int64) int64 {
		t.Helper()
		id, err := s.store.insert(ctx, 1, good, now)
		if err != nil {
			t.Fatal(err)
		}
		s.record(ctx, id, good, now)
		return id
	}
	cancel := func(id int64) {
		t.Helper()
		c, err := s.store.cancel(ctx, 1, id, now)
		if err != nil {
			t.Fatal(err)
		}
		s.dropViews(ctx, salesWindows(c.date))
	}
	a, b := buy(1), buy(1)
	buy(2)
	stages := 0
	s.hook = func(stage string) {
		stages++
		switch stage {
		case "counted":
			if stages == 1 {
				cancel(a)
			}
		case "finished":
			if stages == 3 { // the second rebuild's (the first lost its lease)
				cancel(b)
			}
		}
	}
	w := windowOf(PeriodAll, now)
	if got := viewCounts(t, s, w); len(got) != 1 || got[2] != 1 {
		t.Fatalf("view after rebuilds with cancels = %v; want only good 2 with 1 sale", got)
	}
	if stages != 5 {
		t.Fatalf("%d rebuild stages ran; want 5: counted (cancel), counted, finished (cancel), counted, finished", stages)
	}
}
