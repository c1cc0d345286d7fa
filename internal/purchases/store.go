package purchases

import (
	"context"
	"fmt"
	"time"

	"github.com/microshop/microshop/internal/store"
)

// dialect is the SQL of one engine and how it stores a date; see
// sql_sqlite.go and sql_mysql.go.
type dialect struct {
	insert string // args: userid, goodsid, dateArg(date)
	list   string // args: userid, after, limit; columns: id, goodsid, date
	// dateArg converts a UTC time, truncated to milliseconds, to the value
	// stored in purchases.date.
	dateArg func(time.Time) any
	// scanDate converts what the driver returns for purchases.date.
	scanDate func(src any) (time.Time, error)
	// shareBarrier is the insert that also locks the row of
	// rankings_barrier shared (args as insert); takeBarrier locks it
	// exclusively, for a reader of the watermark. Empty where writes are
	// serialised anyway (SQLite). See sales.go.
	shareBarrier, takeBarrier string
}

// table is the purchases table.
type table struct {
	db  *store.DB
	sql *dialect
}

func newTable(db *store.DB) table {
	if db.Dialect == store.MySQL {
		return table{db: db, sql: &mysqlSQL}
	}
	return table{db: db, sql: &sqliteSQL}
}

// insert records a purchase at date (stored in UTC to the millisecond) and
// returns its id.
func (t table) insert(ctx context.Context, userID, goodsID int64, date time.Time) (int64, error) {
	date = date.UTC().Truncate(time.Millisecond)
	if t.sql.shareBarrier == "" {
		res, err := t.db.ExecContext(ctx, t.sql.insert, userID, goodsID, t.sql.dateArg(date))
		if err != nil {
			return 0, fmt.Errorf("purchases: insert: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return 0, fmt.Errorf("purchases: insert: id: %w", err)
		}
		return id, nil
	}
	// One statement holds the barrier shared from before the id is
	// allocated until its commit (INSERT ... SELECT ... LOCK IN SHARE MODE,
	// autocommit), so that a watermark reader never sees a committed id
	// above an id still in flight (sales.go); one round trip, not four.
	res, err := t.db.ExecContext(ctx, t.sql.shareBarrier, userID, goodsID, t.sql.dateArg(date))
	if err != nil {
		return 0, fmt.Errorf("purchases: insert: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return 0, fmt.Errorf("purchases: insert: the rankings barrier row is missing (%d rows, %v)", n, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("purchases: insert: id: %w", err)
	}
	return id, nil
}

// list returns up to limit purchases of userID whose id is above after,
// ordered by id (never nil).
func (t table) list(ctx context.Context, userID, after int64, limit int) ([]Purchase, error) {
	rows, err := t.db.QueryContext(ctx, t.sql.list, userID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("purchases: list: %w", err)
	}
	defer rows.Close()
	list := []Purchase{}
	for rows.Next() {
		var p Purchase
		var raw any
		if err := rows.Scan(&p.ID, &p.GoodsID, &raw); err != nil {
			return nil, fmt.Errorf("purchases: list: %w", err)
		}
		date, err := t.sql.scanDate(raw)
		if err != nil {
			return nil, fmt.Errorf("purchases: list: purchase %d: %w", p.ID, err)
		}
		p.Date = date.UTC().Format(DateLayout)
		list = append(list, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("purchases: list: %w", err)
	}
	return list, nil
}
