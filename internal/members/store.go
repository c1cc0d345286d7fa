package members

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// The members SQL is the same on SQLite and MySQL.
const (
	sqlInsert = `INSERT INTO members (username, password) VALUES (?, ?)`
	sqlLookup = `SELECT id, password FROM members WHERE username = ?`
	sqlDelete = `DELETE FROM members WHERE username = ?`
)

// table is the members table.
type table struct {
	db *store.DB
}

// insert adds a member and returns its id; a taken username is a 409.
func (t table) insert(ctx context.Context, username, hash string) (int64, error) {
	res, err := t.db.ExecContext(ctx, sqlInsert, username, hash)
	if store.IsDuplicate(err) {
		return 0, service.Conflict("username already taken")
	}
	if err != nil {
		return 0, fmt.Errorf("members: insert: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("members: insert: id: %w", err)
	}
	return id, nil
}

// lookup returns the id and password hash of username; an unknown username
// gives id 0, hash "" and no error.
func (t table) lookup(ctx context.Context, username string) (int64, string, error) {
	var id int64
	var hash string
	err := t.db.QueryRowContext(ctx, sqlLookup, username).Scan(&id, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("members: lookup: %w", err)
	}
	return id, hash, nil
}

// delete removes username, or answers a 404 *service.Error.
func (t table) delete(ctx context.Context, username string) error {
	res, err := t.db.ExecContext(ctx, sqlDelete, username)
	if err != nil {
		return fmt.Errorf("members: delete: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("members: delete: %w", err)
	}
	if n == 0 {
		return service.NotFound("member %q not found", username)
	}
	return nil
}
