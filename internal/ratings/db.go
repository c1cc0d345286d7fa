package ratings

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/microshop/microshop/internal/store"
)

// queries holds the SQL of one engine. Only the upsert and the locking
// read differ.
type queries struct {
	// upsert sets (userid, goodsid)'s stars, bumping the version only when
	// they change. Arguments: userid, goodsid, stars.
	upsert string
	// current reads a row under the transaction's lock. Arguments: userid, goodsid.
	current string
	// histogram counts a good's ratings by stars. Argument: goodsid.
	histogram string
	// snapshot lists every rating of a good. Argument: goodsid.
	snapshot string
	// withdraw sets (userid, goodsid)'s stars to 0 (withdrawn), bumping
	// the version, unless they are 0 already. Arguments: userid, goodsid.
	withdraw string
}

const (
	withdrawSQL  = `UPDATE ratings SET version = version + 1, stars = 0 WHERE userid = ? AND goodsid = ? AND stars <> 0`
	histogramSQL = `SELECT stars, COUNT(*) FROM ratings WHERE goodsid = ? GROUP BY stars`
	snapshotSQL  = `SELECT userid, version, stars FROM ratings WHERE goodsid = ?`
)

var sqliteQueries = queries{
	upsert: `INSERT INTO ratings (userid, goodsid, stars, version) VALUES (?, ?, ?, 1)
ON CONFLICT (userid, goodsid) DO UPDATE SET
    version = CASE WHEN ratings.stars = excluded.stars THEN ratings.version ELSE ratings.version + 1 END,
    stars = excluded.stars`,
	current:   `SELECT version, stars FROM ratings WHERE userid = ? AND goodsid = ?`,
	histogram: histogramSQL,
	snapshot:  snapshotSQL,
	withdraw:  withdrawSQL,
}

var mysqlQueries = queries{
	// MySQL applies the assignments left to right: version sees the old stars.
	upsert: `INSERT INTO ratings (userid, goodsid, stars, version) VALUES (?, ?, ?, 1)
ON DUPLICATE KEY UPDATE
    version = IF(stars = VALUES(stars), version, version + 1),
    stars = VALUES(stars)`,
	current:   `SELECT version, stars FROM ratings WHERE userid = ? AND goodsid = ? FOR UPDATE`,
	histogram: histogramSQL,
	snapshot:  snapshotSQL,
	withdraw:  withdrawSQL,
}

func queriesFor(d store.Dialect) *queries {
	if d == store.MySQL {
		return &mysqlQueries
	}
	return &sqliteQueries
}

// entry is one member's rating of a good, as stored and as merged into
// Redis; stars 0 is a rating withdrawn (kept, with its version, so that a
// late merge of the rating before it cannot bring it back).
type entry struct {
	user    int64
	version int64
	stars   int
}

// errNoRating is a withdrawal of a rating never given.
var errNoRating = errors.New("no rating")

// unrate withdraws user's rating of good and returns the row as committed;
// errNoRating when the member never rated it.
func (s *Service) unrate(ctx context.Context, user, good int64) (entry, error) {
	e := entry{user: user}
	err := store.InTx(ctx, s.db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q.withdraw, user, good); err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, s.q.current, user, good).Scan(&e.version, &e.stars)
		if errors.Is(err, sql.ErrNoRows) {
			return errNoRating
		}
		return err
	})
	if errors.Is(err, errNoRating) {
		return entry{}, err
	}
	if err != nil {
		return entry{}, store.Failure("ratings", fmt.Errorf("withdraw the rating of good %d by member %d: %w", good, user, err))
	}
	return e, nil
}

// write stores user's rating of good and returns the row as committed.
func (s *Service) write(ctx context.Context, user, good int64, stars int) (entry, error) {
	e := entry{user: user}
	err := store.InTx(ctx, s.db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q.upsert, user, good, stars); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, s.q.current, user, good).Scan(&e.version, &e.stars)
	})
	if err != nil {
		return entry{}, store.Failure("ratings", fmt.Errorf("rate good %d by member %d: %w", good, user, err))
	}
	return e, nil
}

// dbSummary computes good's ratings in the database.
func (s *Service) dbSummary(ctx context.Context, good int64) (Summary, error) {
	var sum Summary
	rows, err := s.db.QueryContext(ctx, s.q.histogram, good)
	if err != nil {
		return Summary{}, store.Failure("ratings", fmt.Errorf("sum up ratings of good %d: %w", good, err))
	}
	defer rows.Close()
	for rows.Next() {
		var stars, n int64
		if err := rows.Scan(&stars, &n); err != nil {
			return Summary{}, store.Failure("ratings", fmt.Errorf("sum up ratings of good %d: %w", good, err))
		}
		if stars >= 1 && stars <= 5 {
			sum.Histogram[stars-1] = n
			sum.Count += n
			sum.Sum += stars * n
		}
	}
	if err := rows.Err(); err != nil {
		return Summary{}, store.Failure("ratings", fmt.Errorf("sum up ratings of good %d: %w", good, err))
	}
	return sum, nil
}

// snapshot reads every rating of good.
func (s *Service) snapshot(ctx context.Context, good int64) ([]entry, error) {
	rows, err := s.db.QueryContext(ctx, s.q.snapshot, good)
	if err != nil {
		return nil, store.Failure("ratings", fmt.Errorf("read ratings of good %d: %w", good, err))
	}
	defer rows.Close()
	var es []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.user, &e.version, &e.stars); err != nil {
			return nil, store.Failure("ratings", fmt.Errorf("read ratings of good %d: %w", good, err))
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, store.Failure("ratings", fmt.Errorf("read ratings of good %d: %w", good, err))
	}
	return es, nil
}
