package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

func TestIsRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"deadlock", &mysql.MySQLError{Number: 1213}, true},
		{"lock wait timeout", &mysql.MySQLError{Number: 1205}, true},
		{"wrapped deadlock", fmt.Errorf("upsert: %w", &mysql.MySQLError{Number: 1213}), true},
		{"duplicate key", &mysql.MySQLError{Number: 1062}, false},
		{"other", errors.New("boom"), false},
		{"nil", nil, false},
	} {
		if got := store.IsRetryable(tc.err); got != tc.want {
			t.Errorf("IsRetryable(%s: %v) = %v; want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// InTx runs fn again after a retryable error and returns a final one as it is.
func TestInTxRetries(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	calls := 0
	err := store.InTx(ctx, db, func(tx *sql.Tx) error {
		calls++
		if calls < 3 {
			return &mysql.MySQLError{Number: 1213}
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("InTx = %v after %d calls; want nil after 3", err, calls)
	}
	calls = 0
	dup := &mysql.MySQLError{Number: 1062}
	err = store.InTx(ctx, db, func(tx *sql.Tx) error {
		calls++
		return dup
	})
	if !errors.Is(err, dup) || calls != 1 {
		t.Fatalf("InTx = %v after %d calls; want the duplicate error after 1", err, calls)
	}
}
