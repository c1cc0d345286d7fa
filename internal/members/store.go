package members

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// The members SQL is the same on SQLite and MySQL.
const (
	sqlInsert = `INSERT INTO members (username, password) VALUES (?, ?)`
	sqlLookup = `SELECT id, password FROM members WHERE username = ?`
	sqlDelete = `DELETE FROM members WHERE username = ?`
	sqlName   = `SELECT username FROM members WHERE id = ?`

	// The addresses members logged in from (session_lockout.go). Times are
	// Unix milliseconds.
	sqlAddrTouch  = `UPDATE login_addresses SET last_login_at = ? WHERE member_id = ? AND addr = ?`
	sqlAddrInsert = `INSERT INTO login_addresses (member_id, addr, last_login_at) VALUES (?, ?, ?)`
	sqlAddrKnown  = `SELECT COUNT(*) FROM login_addresses WHERE member_id = ? AND addr = ? AND last_login_at > ?`
	sqlAddrsOf    = `DELETE FROM login_addresses WHERE member_id = ?`
	sqlAddrsSweep = `DELETE FROM login_addresses WHERE last_login_at <= ?`
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

// rememberAddr records that member logged in from addr at now: an UPDATE,
// else an INSERT, a duplicate of which (a concurrent login) is as good.
func (t table) rememberAddr(ctx context.Context, member int64, addr string, now time.Time) error {
	res, err := t.db.ExecContext(ctx, sqlAddrTouch, now.UnixMilli(), member, addr)
	if err != nil {
		return fmt.Errorf("members: remember address: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		return nil
	}
	if _, err := t.db.ExecContext(ctx, sqlAddrInsert, member, addr, now.UnixMilli()); err != nil && !store.IsDuplicate(err) {
		return fmt.Errorf("members: remember address: %w", err)
	}
	return nil
}

// knownAddr reports whether member logged in from addr after since.
func (t table) knownAddr(ctx context.Context, member int64, addr string, since time.Time) (bool, error) {
	var n int
	if err := t.db.QueryRowContext(ctx, sqlAddrKnown, member, addr, since.UnixMilli()).Scan(&n); err != nil {
		return false, fmt.Errorf("members: known address: %w", err)
	}
	return n > 0, nil
}

// forgetAddrs deletes the addresses member logged in from.
func (t table) forgetAddrs(ctx context.Context, member int64) error {
	if _, err := t.db.ExecContext(ctx, sqlAddrsOf, member); err != nil {
		return fmt.Errorf("members: forget addresses: %w", err)
	}
	return nil
}

// sweepAddrs deletes the addresses of logins at or before before.
func (t table) sweepAddrs(ctx context.Context, before time.Time) error {
	if _, err := t.db.ExecContext(ctx, sqlAddrsSweep, before.UnixMilli()); err != nil {
		return fmt.Errorf("members: sweep addresses: %w", err)
	}
	return nil
}

// username returns member id's username, or a 404 *service.Error.
func (t table) username(ctx context.Context, id int64) (string, error) {
	var name string
	err := t.db.QueryRowContext(ctx, sqlName, id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", service.NotFound("member %d not found", id)
	}
	if err != nil {
		return "", fmt.Errorf("members: username %d: %w", id, err)
	}
	return name, nil
}
