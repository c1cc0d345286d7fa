package reactions

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/microshop/microshop/internal/store"
)

// queries holds the SQL of one engine. Only the upsert differs.
type queries struct {
	// upsert sets (userid, goodsid)'s reaction, bumping the version only
	// when the reaction changes. Arguments: userid, goodsid, reaction.
	upsert string
	// withdraw empties a reaction, bumping the version. Arguments: userid, goodsid.
	withdraw string
	// current reads a row under the transaction's lock. Arguments: userid, goodsid.
	current string
	// counts tallies a good's reactions. Argument: goodsid.
	counts string
	// snapshot lists every row of a good, tombstones included. Argument: goodsid.
	snapshot string
	// mine reads one member's reaction without locking. Arguments: userid, goodsid.
	mine string
}

const (
	withdrawSQL = `UPDATE reactions SET reaction = '', version = version + 1
WHERE userid = ? AND goodsid = ? AND reaction <> ''`
	countsSQL = `SELECT reaction, COUNT(*) FROM reactions
WHERE goodsid = ? AND reaction <> '' GROUP BY reaction`
	snapshotSQL = `SELECT userid, version, reaction FROM reactions WHERE goodsid = ?`
	mineSQL     = `SELECT reaction FROM reactions WHERE userid = ? AND goodsid = ?`
)

var sqliteQueries = queries{
	upsert: `INSERT INTO reactions (userid, goodsid, reaction, version) VALUES (?, ?, ?, 1)
ON CONFLICT (userid, goodsid) DO UPDATE SET
    version = CASE WHEN reactions.reaction = excluded.reaction THEN reactions.version ELSE reactions.version + 1 END,
    reaction = excluded.reaction`,
	withdraw: withdrawSQL,
	current:  `SELECT version, reaction FROM reactions WHERE userid = ? AND goodsid = ?`,
	counts:   countsSQL,
	snapshot: snapshotSQL,
	mine:     mineSQL,
}

var mysqlQueries = queries{
	// MySQL applies the assignments left to right: version sees the old reaction.
	upsert: `INSERT INTO reactions (userid, goodsid, reaction, version) VALUES (?, ?, ?, 1)
ON DUPLICATE KEY UPDATE
    version = IF(reaction = VALUES(reaction), version, version + 1),
    reaction = VALUES(reaction)`,
	withdraw: withdrawSQL,
	current:  `SELECT version, reaction FROM reactions WHERE userid = ? AND goodsid = ? FOR UPDATE`,
	counts:   countsSQL,
	snapshot: snapshotSQL,
	mine:     mineSQL,
}

func queriesFor(d store.Dialect) *queries {
	if d == store.MySQL {
		return &mysqlQueries
	}
	return &sqliteQueries
}

// entry is one member's state for a good, as stored and as merged into Redis.
type entry struct {
	user     int64
	version  int64
	reaction string // Like, Dislike, or "" (withdrawn)
}

// write stores user's reaction to good ("" withdraws it) and returns the
// row as committed. ok is false when there is no row (withdrawing a
// reaction never given).
func (s *Service) write(ctx context.Context, user, good int64, reaction string) (e entry, ok bool, err error) {
	err = store.InTx(ctx, s.db, func(tx *sql.Tx) error {
		if reaction == "" {
			_, err = tx.ExecContext(ctx, s.q.withdraw, user, good)
		} else {
			_, err = tx.ExecContext(ctx, s.q.upsert, user, good, reaction)
		}
		if err != nil {
			return err
		}
		e = entry{user: user}
		err = tx.QueryRowContext(ctx, s.q.current, user, good).Scan(&e.version, &e.reaction)
		if errors.Is(err, sql.ErrNoRows) {
			ok = false
			return nil
		}
		ok = err == nil
		return err
	})
	if err != nil {
		return entry{}, false, store.Failure("reactions", fmt.Errorf("set reaction of member %d to good %d: %w", user, good, err))
	}
	return e, ok, nil
}

// dbCounts counts good's reactions in the database.
func (s *Service) dbCounts(ctx context.Context, good, user int64) (Counts, error) {
	var c Counts
	rows, err := s.db.QueryContext(ctx, s.q.counts, good)
	if err != nil {
		return Counts{}, store.Failure("reactions", fmt.Errorf("count reactions of good %d: %w", good, err))
	}
	defer rows.Close()
	for rows.Next() {
		var r string
		var n int64
		if err := rows.Scan(&r, &n); err != nil {
			return Counts{}, store.Failure("reactions", fmt.Errorf("count reactions of good %d: %w", good, err))
		}
		switch r {
		case Like:
			c.Likes = n
		case Dislike:
			c.Dislikes = n
		}
	}
	if err := rows.Err(); err != nil {
		return Counts{}, store.Failure("reactions", fmt.Errorf("count reactions of good %d: %w", good, err))
	}
	if user != 0 {
		err := s.db.QueryRowContext(ctx, s.q.mine, user, good).Scan(&c.Mine)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return Counts{}, store.Failure("reactions", fmt.Errorf("read reaction of member %d to good %d: %w", user, good, err))
		}
	}
	return c, nil
}

// snapshot reads every row of good, tombstones included.
func (s *Service) snapshot(ctx context.Context, good int64) ([]entry, error) {
	rows, err := s.db.QueryContext(ctx, s.q.snapshot, good)
	if err != nil {
		return nil, store.Failure("reactions", fmt.Errorf("read reactions of good %d: %w", good, err))
	}
	defer rows.Close()
	var es []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.user, &e.version, &e.reaction); err != nil {
			return nil, store.Failure("reactions", fmt.Errorf("read reactions of good %d: %w", good, err))
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, store.Failure("reactions", fmt.Errorf("read reactions of good %d: %w", good, err))
	}
	return es, nil
}
