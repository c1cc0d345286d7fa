package purchases

import (
	"context"
	"strings"
	"time"
)

// SetNow sets the clock s dates purchases and picks windows by.
func SetNow(s *Service, now func() time.Time) { s.now = now }

// InsertOnly records a purchase in the database without telling Redis: an
// update lost to a Redis failure.
func InsertOnly(ctx context.Context, s *Service, user, good int64, date time.Time) (int64, error) {
	return s.store.insert(ctx, user, good, date)
}

// RankInDB ranks in the database, as with Redis down.
func RankInDB(ctx context.Context, s *Service, p Period, top int) ([]Ranked, error) {
	w := windowOf(p, s.now())
	return s.rank(ctx, top, func(off, n int) ([]sales, error) { return s.store.top(ctx, w, off, n) }, nil)
}

// ViewKeys returns the keys of the current view of p: sorted set, meta,
// seen, lease.
func ViewKeys(s *Service, p Period) []string { return s.viewKeys(windowOf(p, s.now())) }

// Member is a good's member in a view.
var Member = member

// WindowOf returns the name and bounds of the window of p holding t.
func WindowOf(p Period, t time.Time) (name string, from, to time.Time) {
	w := windowOf(p, t)
	return w.name, w.from, w.to
}

// BulkInsert records purchases of goods (one per entry) by user at date in
// multi-row INSERTs inside one transaction, without telling Redis: for
// seeding benchmarks.
func BulkInsert(ctx context.Context, s *Service, user int64, goods []int64, date time.Time) error {
	tx, err := s.store.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	d := s.store.sql.dateArg(date.UTC().Truncate(time.Millisecond))
	for len(goods) > 0 {
		n := min(len(goods), 500)
		q := "INSERT INTO purchases (userid, goodsid, date) VALUES " + strings.Repeat("(?, ?, ?), ", n-1) + "(?, ?, ?)"
		args := make([]any, 0, 3*n)
		for _, g := range goods[:n] {
			args = append(args, user, g, d)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		goods = goods[n:]
	}
	return tx.Commit()
}
