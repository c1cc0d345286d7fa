package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/go-sql-driver/mysql"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// txAttempts is how many times InTx runs a transaction at the most.
const txAttempts = 20

// InTx runs fn in a transaction and commits it, and retries a transaction
// the engine aborted for a deadlock or busy database (concurrent upserts of
// one new row can deadlock on InnoDB; the loser is simply run again). It
// waits a little longer before each attempt, gives up after 20 attempts or
// when ctx is done, and returns any other error of fn, BeginTx or Commit as
// it is, after rolling the transaction back.
func InTx(ctx context.Context, db *DB, fn func(*sql.Tx) error) error {
	var err error
	for i := 0; i < txAttempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(i) * 2 * time.Millisecond):
			}
		}
		err = tryTx(ctx, db, fn)
		if err == nil || !IsRetryable(err) {
			return err
		}
	}
	return err
}

// tryTx runs fn in one transaction: committed if fn succeeds, rolled back
// otherwise.
func tryTx(ctx context.Context, db *DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// IsRetryable reports whether err is a deadlock or lock wait timeout
// (MySQL 1213, 1205) or a busy or locked database (SQLITE_BUSY,
// SQLITE_LOCKED), after which the transaction can simply run again.
func IsRetryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	return false
}
