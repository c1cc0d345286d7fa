package purchases

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
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
	// lockBarrier locks the row of rankings_barrier shared on its own,
	// before a multi-row insert (commit.go); empty where there is none.
	lockBarrier string
}

// The insert of a purchase, on both engines, and of n at once: insertInto
// then n insertRow, separated by commas.
const (
	insertInto = `INSERT INTO purchases (userid, goodsid, date, idem_key) VALUES `
	insertRow  = `(?, ?, ?, ?)`
)

// insertN is the insert of n rows (n ≥ 1).
func insertN(n int) string {
	return insertInto + strings.TrimSuffix(strings.Repeat(insertRow+", ", n), ", ")
}

// table is the purchases table.
type table struct {
	db    *store.DB
	sql   *dialect
	batch *committer   // the group commit of inserts (commit.go)
	stmt  *lazyStmt    // the insert, prepared
	multi *multiInsert // MySQL: batches in one INSERT (commit.go); nil elsewhere
}

// Leaders of the group commit per engine: SQLite runs one writer at a
// time anyway. On MySQL a batch of one INSERT of many rows (commit.go,
// multiInsert) costs the server far less per purchase than its rows
// inserted one by one, so few leaders, for big batches: two, so that one
// batch is inserted while the other commits (scripts/bench.sh, POST
// /purchases on MariaDB, 2026-12-03, ratio to the raw insert rate: 32
// leaders 0.61, 16 0.74, 8 0.78, 4 0.83–0.94, 2 0.96–0.97, 1 1.16). Where
// a batch's rows must be inserted one by one (a server whose ids are not
// consecutive within a statement), InnoDB commits concurrently and merges
// the concurrent commits' log flushes itself, so as many batches as the
// pool has connections (store.Open: 32) may be in flight, and purchases
// batch only once every connection is busy (with 4 leaders, 32 purchases
// at once ran 4 at a time and the ratio fell from 0.52 to 0.31).
const (
	sqliteLeaders     = 1
	mysqlLeaders      = 32
	mysqlMultiLeaders = 2
)

// newTable returns the purchases table of db. On MySQL it asks the server
// once whether a multi-row INSERT's ids are consecutive (multiRow); when
// it cannot tell, batches insert row by row.
func newTable(db *store.DB, log *slog.Logger) table {
	t := &table{db: db, sql: &sqliteSQL, stmt: &lazyStmt{}}
	leaders := sqliteLeaders
	if db.Dialect == store.MySQL {
		t.sql, leaders = &mysqlSQL, mysqlLeaders
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok, err := multiRow(ctx, db)
		cancel()
		switch {
		case ok:
			t.multi, leaders = &multiInsert{}, mysqlMultiLeaders
		case log != nil:
			log.Info("purchases: batches insert row by row: the ids of a multi-row insert may not be consecutive", "err", err)
		}
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
