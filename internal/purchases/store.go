package purchases

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"time"

	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// dialect is the SQL of one engine and how it stores a date; see
// sql_sqlite.go and sql_mysql.go.
type dialect struct {
	insert string // args: userid, goodsid, dateArg(date), idem_key (NULL: none)
	byKey  string // args: userid, idem_key; columns: id, goodsid
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
	db    *store.DB
	sql   *dialect
	batch *committer // the group commit of inserts (commit.go)
	stmt  *lazyStmt  // the insert, prepared
}

// Leaders of the group commit per engine: SQLite runs one writer at a time
// anyway; InnoDB commits concurrently (and merges the concurrent commits'
// log flushes itself), so as many batches as the pool has connections
// (store.Open: 32) may be in flight, and purchases batch only once every
// connection is busy (with 4 leaders, 32 purchases at once ran 4 at a time
// and POST /purchases on MariaDB fell from 0.52 to 0.31 of the raw rate).
const (
	sqliteLeaders = 1
	mysqlLeaders  = 32
)

func newTable(db *store.DB) table {
	t := &table{db: db, sql: &sqliteSQL, stmt: &lazyStmt{}}
	leaders := sqliteLeaders
	if db.Dialect == store.MySQL {
		t.sql, leaders = &mysqlSQL, mysqlLeaders
	}
	t.batch = newCommitter(t, leaders)
	return *t
}

// insert records a purchase at date (stored in UTC to the millisecond) and
// returns its id.
func (t table) insert(ctx context.Context, userID, goodsID int64, date time.Time) (int64, error) {
	id, _, err := t.insertOnce(ctx, userID, goodsID, date, "")
	return id, err
}

// errKeyReused is the answer to an Idempotency-Key used again for another
// good: the draft's 422.
var errKeyReused = service.Errorf(http.StatusUnprocessableEntity, "this Idempotency-Key was used for another purchase: use a new key for a new purchase")

// insertOnce is insert with an idempotency key (none when empty): when
// userID made a purchase with key before, it makes none and returns that
// one's id, with first false (errKeyReused if it was of another good).
// The unique index on (userid, idem_key) decides, so two at once make one.
func (t table) insertOnce(ctx context.Context, userID, goodsID int64, date time.Time, key string) (id int64, first bool, err error) {
	var k sql.NullString
	if key != "" {
		k = sql.NullString{String: key, Valid: true}
	}
	id, err = t.insertRow(ctx, userID, goodsID, date, k)
	if err == nil || key == "" || !store.IsDuplicate(err) {
		return id, err == nil, err
	}
	var good int64
	if err := t.db.QueryRowContext(ctx, t.sql.byKey, userID, key).Scan(&id, &good); err != nil {
		return 0, false, fmt.Errorf("purchases: find by idempotency key: %w", err)
	}
	if good != goodsID {
		return 0, false, errKeyReused
	}
	return id, false, nil
}

func (t table) insertRow(ctx context.Context, userID, goodsID int64, date time.Time, key sql.NullString) (int64, error) {
	date = date.UTC().Truncate(time.Millisecond)
	// On MySQL the insert holds the barrier shared from before the id is
	// allocated until its commit (INSERT ... SELECT ... LOCK IN SHARE MODE),
	// so that a watermark reader never sees a committed id above an id
	// still in flight (sales.go); it is one round trip, not four.
	id, err := t.batch.insert(ctx, []any{userID, goodsID, t.sql.dateArg(date), key})
	if err != nil {
		return 0, fmt.Errorf("purchases: insert: %w", err)
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
