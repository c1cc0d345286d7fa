package purchases

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/microshop/microshop/internal/store"
)

// This file is the database side of the rankings: the purchases table read
// as sales. Every query is the same on both engines; only the date argument
// differs (dialect.dateArg).
//
// # The watermark and the barrier
//
// The Redis view of a window counts exactly the purchases with an id up to
// its watermark, plus the ones it has applied one by one since. A watermark
// W is only sound if no purchase with an id ≤ W can still commit after W
// was read. maxID reads W = MAX(id) so that this holds:
//
//   - SQLite runs one writer at a time and allocates the id inside it, so
//     every id in flight is above every committed id.
//   - InnoDB allocates ids at insert and may commit id 8 before id 7. Every
//     insert therefore holds the single row of rankings_barrier in share
//     mode from before its id is allocated until its commit (table.insert),
//     and maxID takes that row FOR UPDATE before it reads MAX(id): it waits
//     for the inserts in flight, and inserts that start later queue behind
//     it and get higher ids. Shared locks do not block each other, so
//     purchases stay concurrent; maxID holds the lock for one indexed read.

// Queries of the rankings, shared by both engines. The "window" forms take
// the window's bounds as two more arguments (date >= from AND date < to).
const (
	maxIDSQL = `SELECT COALESCE(MAX(id), 0) FROM purchases`

	countsSQL       = `SELECT goodsid, COUNT(*) FROM purchases WHERE id <= ? AND cancelled_at IS NULL GROUP BY goodsid`
	countsWindowSQL = `SELECT goodsid, COUNT(*) FROM purchases WHERE id <= ? AND date >= ? AND date < ? AND cancelled_at IS NULL GROUP BY goodsid`

	sinceSQL       = `SELECT id, goodsid FROM purchases WHERE id > ? AND id <= ? AND cancelled_at IS NULL ORDER BY id`
	sinceWindowSQL = `SELECT id, goodsid FROM purchases WHERE id > ? AND id <= ? AND date >= ? AND date < ? AND cancelled_at IS NULL ORDER BY id`

	topSQL       = `SELECT goodsid, COUNT(*) AS sales FROM purchases WHERE cancelled_at IS NULL GROUP BY goodsid ORDER BY sales DESC, goodsid ASC LIMIT ? OFFSET ?`
	topWindowSQL = `SELECT goodsid, COUNT(*) AS sales FROM purchases WHERE date >= ? AND date < ? AND cancelled_at IS NULL GROUP BY goodsid ORDER BY sales DESC, goodsid ASC LIMIT ? OFFSET ?`

	// cancelledSQL counts the cancelled purchases (from the index
	// purchases_cancelled): a view records it before its snapshot, and a
	// compaction that finds more drops the view (cancel.go).
	cancelledSQL = `SELECT COUNT(*) FROM purchases WHERE cancelled_at IS NOT NULL`
)

// sales is one good's number of sales.
type sales struct {
	good  int64
	sales int64
}

// sale is one purchase as the rankings see it.
type sale struct {
	id   int64
	good int64
}

// maxID returns a sound watermark: the highest purchase id, with no smaller
// id still in flight (see above).
func (t table) maxID(ctx context.Context) (int64, error) {
	var m int64
	if t.sql.takeBarrier == "" {
		if err := t.db.QueryRowContext(ctx, maxIDSQL).Scan(&m); err != nil {
			return 0, store.Failure("purchases", fmt.Errorf("read the watermark: %w", err))
		}
		return m, nil
	}
	tx, err := t.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, store.Failure("purchases", fmt.Errorf("read the watermark: %w", err))
	}
	defer tx.Rollback()
	var one int
	if err := tx.QueryRowContext(ctx, t.sql.takeBarrier).Scan(&one); err != nil {
		return 0, store.Failure("purchases", fmt.Errorf("read the watermark: barrier: %w", err))
	}
	if err := tx.QueryRowContext(ctx, maxIDSQL).Scan(&m); err != nil {
		return 0, store.Failure("purchases", fmt.Errorf("read the watermark: %w", err))
	}
	if err := tx.Commit(); err != nil {
		return 0, store.Failure("purchases", fmt.Errorf("read the watermark: %w", err))
	}
	return m, nil
}

// cancelled returns how many purchases were ever cancelled.
func (t table) cancelled(ctx context.Context) (int64, error) {
	var n int64
	if err := t.db.QueryRowContext(ctx, cancelledSQL).Scan(&n); err != nil {
		return 0, store.Failure("purchases", fmt.Errorf("count cancelled purchases: %w", err))
	}
	return n, nil
}

// windowArgs appends w's bounds to args, or nothing for all time.
func (t table) windowArgs(w window, args ...any) []any {
	if w.all() {
		return args
	}
	return append(args, t.sql.dateArg(w.from), t.sql.dateArg(w.to))
}

// counts returns the sales in w of every good, counting purchases with an
// id up to maxID.
func (t table) counts(ctx context.Context, w window, maxID int64) ([]sales, error) {
	q := countsSQL
	if !w.all() {
		q = countsWindowSQL
	}
	return t.querySales(ctx, "count sales of "+w.name, q, t.windowArgs(w, maxID)...)
}

// top returns up to n goods by sales in w, from the offset-th on, highest
// first, ties by goodsid ascending: the rankings computed in the database.
func (t table) top(ctx context.Context, w window, offset, n int) ([]sales, error) {
	q := topSQL
	if !w.all() {
		q = topWindowSQL
	}
	return t.querySales(ctx, "rank sales of "+w.name, q, append(t.windowArgs(w), n, offset)...)
}

func (t table) querySales(ctx context.Context, what, q string, args ...any) ([]sales, error) {
	rows, err := t.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, store.Failure("purchases", fmt.Errorf("%s: %w", what, err))
	}
	defer rows.Close()
	var list []sales
	for rows.Next() {
		var s sales
		if err := rows.Scan(&s.good, &s.sales); err != nil {
			return nil, store.Failure("purchases", fmt.Errorf("%s: %w", what, err))
		}
		list = append(list, s)
	}
	if err := rows.Err(); err != nil {
		return nil, store.Failure("purchases", fmt.Errorf("%s: %w", what, err))
	}
	return list, nil
}

// since returns the purchases in w with from < id ≤ to, by id.
func (t table) since(ctx context.Context, w window, from, to int64) ([]sale, error) {
	q := sinceSQL
	if !w.all() {
		q = sinceWindowSQL
	}
	rows, err := t.db.QueryContext(ctx, q, t.windowArgs(w, from, to)...)
	if err != nil {
		return nil, store.Failure("purchases", fmt.Errorf("read sales of %s since %d: %w", w.name, from, err))
	}
	defer rows.Close()
	var list []sale
	for rows.Next() {
		var s sale
		if err := rows.Scan(&s.id, &s.good); err != nil {
			return nil, store.Failure("purchases", fmt.Errorf("read sales of %s since %d: %w", w.name, from, err))
		}
		list = append(list, s)
	}
	if err := rows.Err(); err != nil {
		return nil, store.Failure("purchases", fmt.Errorf("read sales of %s since %d: %w", w.name, from, err))
	}
	return list, nil
}

// window is the span of time a ranking counts: a UTC day, an ISO week
// (Monday 00:00 UTC to the next Monday), or all time (zero bounds).
type window struct {
	name     string // "all", "day:2026-11-28", "week:2026-W48": the view's hash tag
	from, to time.Time
}

func (w window) all() bool { return w.to.IsZero() }

// windowOf returns the window of period that holds t.
func windowOf(p Period, t time.Time) window {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch p {
	case PeriodDay:
		return window{name: "day:" + day.Format("2006-01-02"), from: day, to: day.AddDate(0, 0, 1)}
	case PeriodWeek:
		monday := day.AddDate(0, 0, -((int(day.Weekday()) + 6) % 7))
		year, week := t.ISOWeek()
		return window{name: fmt.Sprintf("week:%04d-W%02d", year, week), from: monday, to: monday.AddDate(0, 0, 7)}
	default:
		return window{name: "all"}
	}
}
