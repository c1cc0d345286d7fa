package purchases

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/microshop/microshop/internal/store"
)

// Group commit: purchases made at the same time share one transaction, so
// that N of them cost one commit (one WAL sync on SQLite, one redo log
// flush on InnoDB) instead of N.
//
// A purchase queues its insert; it wakes a leader waiting for work or,
// while fewer than the engine's leaders run, starts one (see crew), a
// goroutine that takes what is queued (up to maxBatch at a time) and
// inserts it in one transaction, until the queue is empty: on MySQL in one
// multi-row INSERT after taking the rankings barrier shared until the
// commit (sales.go, multiInsert), else (SQLite, or a MySQL whose ids are
// not consecutive within a statement) each purchase its own INSERT as
// before (on MySQL the same INSERT ... SELECT that holds the barrier);
// then it waits for more (and ends after crewIdle without). A purchase alone in its batch is inserted as before, in
// autocommit. Nothing waits for a batch to fill: a batch is what queued
// while the previous one ran (the single leader of SQLite, finding one
// purchase queued, yields once first; see newCommitter).
//
// Exactness: each purchase gets its own id and its own outcome. A
// duplicate idempotency key fails that INSERT only (both engines roll back
// the statement, not the transaction; a multi-row INSERT that fails for
// one is followed by each row's own INSERT), and insertOnce then finds the first
// purchase with the key as it always did, after the commit. Any other
// failure of an INSERT rolls the batch back and inserts each of its
// purchases on its own, in autocommit, as if never batched. A failed
// commit fails every purchase of the batch (as a failed autocommit insert
// fails its purchase): none is retried, for a commit whose outcome is
// unknown may have happened.
type committer struct {
	t     *table
	batch *crew[*pending] // its leaders: at most the engine's
}

// maxBatch bounds a batch (and how long it holds the write lock).
const maxBatch = 64

// batchTimeout bounds one batch's transaction.
const batchTimeout = 10 * time.Second

// pending is one queued insert.
type pending struct {
	ctx  context.Context
	args []any         // the dialect's insert arguments
	done chan inserted // buffered: the leader never waits
}

type inserted struct {
	id  int64
	err error
}

func newCommitter(t *table, leaders int) *committer {
	c := &committer{t: t}
	c.batch = newCrew(leaders, maxBatch, c.run)
	// One writer (SQLite), one purchase queued: a lone insert costs a
	// whole commit (its WAL frames written), so the leader lets the
	// purchases already runnable (their good just read from Redis, say)
	// queue first.
	c.batch.yieldLone = true
	return c
}

// insert queues an insert with args (the dialect's insert arguments) and
// waits for its outcome.
func (c *committer) insert(ctx context.Context, args []any) (int64, error) {
	p := &pending{ctx: ctx, args: args, done: make(chan inserted, 1)}
	c.batch.add(p)
	select {
	case r := <-p.done:
		return r.id, r.err
	case <-ctx.Done():
		// Taken into a batch or not, the insert may still commit, as an
		// autocommit insert whose caller has gone may.
		return 0, ctx.Err()
	}
}

// run inserts batch: in one transaction, or on its own when alone.
func (c *committer) run(batch []*pending) {
	live := batch[:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done <- inserted{err: err} // its caller has gone: not inserted
			continue
		}
		live = append(live, p)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		c.alone(live)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(live[0].ctx), batchTimeout)
	defer cancel()
	tx, err := c.t.db.BeginTx(ctx, nil)
	if err != nil {
		c.alone(live)
		return
	}
	out, err := c.t.insertMany(ctx, tx, live)
	if err != nil {
		// A deadlock, or any other failure: as if never batched.
		tx.Rollback()
		c.alone(live)
		return
	}
	if err := tx.Commit(); err != nil {
		err = fmt.Errorf("purchases: insert: commit: %w", err)
		for _, p := range live {
			p.done <- inserted{err: err}
		}
		return
	}
	for i, p := range live {
		p.done <- out[i]
	}
}

// insertMany inserts ps in tx and returns their outcomes, in order: in one
// multi-row INSERT where the engine can tell each row's id (t.multi),
// else, or when that INSERT failed for a duplicate key (which rolls the
// statement back, not the transaction), each with its own INSERT, so that
// a duplicate key fails its purchase only. Any other error is the batch's.
func (t *table) insertMany(ctx context.Context, tx *sql.Tx, ps []*pending) ([]inserted, error) {
	out := make([]inserted, len(ps))
	if t.multi != nil {
		first, err := t.execMulti(ctx, tx, ps)
		if err == nil {
			for i := range out {
				out[i].id = first + int64(i)
			}
			return out, nil
		}
		if !store.IsDuplicate(err) {
			return nil, err
		}
	}
	for i, p := range ps {
		id, err := t.exec(ctx, tx, p.args)
		if err != nil && !store.IsDuplicate(err) {
			return nil, err
		}
		out[i] = inserted{id: id, err: err}
	}
	return out, nil
}

// Multi-row inserts (MySQL/MariaDB): a batch's rows in one INSERT cost the
// server a fraction of as many INSERTs (a test program on this MariaDB,
// 2026-12-03: 62 us of mysqld CPU a row in transactions of 8 rows, against
// 247 us for one autocommit INSERT ... SELECT a row). InnoDB gives the rows
// of one such INSERT consecutive ids, the first of which LastInsertId
// returns, as long as innodb_autoinc_lock_mode is 0 or 1 (MariaDB's default
// is 1; MySQL 8's 2 interleaves concurrent statements' ids) and
// auto_increment_increment is 1: multiRow checks both. The barrier
// (sales.go) is taken shared first, in the same transaction, so that it is
// held from before the ids are allocated until the commit, as the
// single-row INSERT ... SELECT holds it.
type multiInsert struct {
	stmts [maxBatch + 1]lazyStmt // the INSERT of n rows, prepared at first use
}

// multiRow reports whether the server behind db gives the rows of one
// INSERT consecutive ids, one apart.
func multiRow(ctx context.Context, db *store.DB) (bool, error) {
	var mode, step int64
	err := db.QueryRowContext(ctx, `SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment`).Scan(&mode, &step)
	if err != nil {
		return false, err
	}
	if mode > 1 || step != 1 {
		return false, fmt.Errorf("innodb_autoinc_lock_mode %d, auto_increment_increment %d", mode, step)
	}
	return true, nil
}

// execMulti takes the barrier shared in tx, inserts ps in one INSERT and
// returns the id of its first row.
func (t *table) execMulti(ctx context.Context, tx *sql.Tx, ps []*pending) (int64, error) {
	var one int64
	if err := tx.QueryRowContext(ctx, t.sql.lockBarrier).Scan(&one); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			err = errors.New("the rankings barrier row is missing")
		}
		return 0, err
	}
	args := make([]any, 0, len(ps)*len(ps[0].args))
	for _, p := range ps {
		args = append(args, p.args...)
	}
	q := insertN(len(ps))
	var res sql.Result
	var err error
	if stmt := t.multi.stmts[len(ps)].get(t.db, q); stmt != nil {
		res, err = tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
	} else {
		res, err = tx.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, err
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(ps)) {
		return 0, fmt.Errorf("a multi-row insert of %d rows made %d (%v)", len(ps), n, err)
	}
	return res.LastInsertId()
}

// alone inserts each of ps on its own, in autocommit. An insert the engine
// refused for a deadlock (on InnoDB a batch holding a duplicate key's lock
// can be in a cycle with an INSERT ... SELECT waiting for it while holding
// the table's AUTO-INC lock) was not made, and is tried again.
func (c *committer) alone(ps []*pending) {
	for _, p := range ps {
		var id int64
		var err error
		for attempt := 1; ; attempt++ {
			id, err = c.t.exec(p.ctx, nil, p.args)
			if err == nil || !notMade(err) || attempt == aloneAttempts {
				break
			}
			select {
			case <-p.ctx.Done():
			case <-time.After(time.Duration(attempt) * time.Millisecond):
			}
			if p.ctx.Err() != nil {
				break
			}
		}
		p.done <- inserted{id: id, err: err}
	}
}

// aloneAttempts bounds the attempts of an insert refused for a deadlock.
const aloneAttempts = 20

// notMade reports whether err says the insert was not made and can simply
// be tried again: a deadlock or lock wait timeout, a busy database
// (store.IsRetryable), or MariaDB's 1467, an auto-increment value it could
// not read (the deadlock's victim, in an INSERT ... SELECT).
func notMade(err error) bool {
	var me *mysql.MySQLError
	return store.IsRetryable(err) || errors.As(err, &me) && me.Number == 1467
}

// exec runs the dialect's insert (the barrier form where there is one)
// with args, in tx or, when tx is nil, in autocommit, and returns the id.
// Errors are returned as the driver gave them, so that store.IsDuplicate
// sees them.
func (t *table) exec(ctx context.Context, tx *sql.Tx, args []any) (int64, error) {
	q := t.insertSQL()
	var res sql.Result
	var err error
	switch stmt := t.prepared(); {
	case stmt != nil && tx != nil:
		res, err = tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
	case stmt != nil:
		res, err = stmt.ExecContext(ctx, args...)
	case tx != nil:
		res, err = tx.ExecContext(ctx, q, args...)
	default:
		res, err = t.db.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, err
	}
	if t.sql.shareBarrier != "" {
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return 0, fmt.Errorf("the rankings barrier row is missing (%d rows, %v)", n, err)
		}
	}
	return res.LastInsertId()
}

// insertSQL is the dialect's insert: the barrier form where there is one.
func (t *table) insertSQL() string {
	if t.sql.shareBarrier != "" {
		return t.sql.shareBarrier
	}
	return t.sql.insert
}

// prepared returns the insert prepared once on the database (nil when it
// cannot be prepared, to run it unprepared). database/sql prepares it on
// each connection, once, and reuses it in a transaction on that
// connection. On MySQL too, although the driver could fill placeholders in
// itself: the prepare is one round trip per connection of the pool (kept
// 5 minutes), and each execution then spares the server parsing the
// statement (bench/insert with the statement prepared: MariaDB CPU per
// insert 186/178 -> 170/168 us, 6523/6762 -> 6845/6948 inserts/s).
func (t *table) prepared() *sql.Stmt {
	return t.stmt.get(t.db, t.insertSQL())
}

// lazyStmt is a statement prepared at first use.
type lazyStmt struct {
	once sync.Once
	s    *sql.Stmt
}

// get returns q prepared on db, at the first call (nil when it could not
// be prepared: the caller runs it unprepared). Every call passes the same q.
func (l *lazyStmt) get(db *store.DB, q string) *sql.Stmt {
	l.once.Do(func() {
		l.s, _ = db.PrepareContext(context.Background(), q)
	})
	return l.s
}
