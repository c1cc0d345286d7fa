package goods

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// The goods SQL is the same on SQLite and MySQL.
const (
	sqlInsert = `INSERT INTO goods (name, category, price, description) VALUES (?, ?, ?, ?)`
	// sqlPage reads a page by the primary key: args after, limit.
	sqlPage   = `SELECT id, name, category, price, description FROM goods WHERE id > ? ORDER BY id LIMIT ?`
	sqlGet    = `SELECT id, name, category, price, description FROM goods WHERE id = ?`
	sqlDelete = `DELETE FROM goods WHERE id = ?`
	// sqlUpdate sets the fields given and keeps the others (a NULL
	// argument keeps the column): args name, category, price, description,
	// id.
	sqlUpdate = `UPDATE goods SET name = COALESCE(?, name), category = COALESCE(?, category), ` +
		`price = COALESCE(?, price), description = COALESCE(?, description) WHERE id = ?`
)

// table is the goods table.
type table struct {
	db *store.DB
}

// insert adds g and returns its new id.
func (s table) insert(ctx context.Context, g catalog.Good) (int64, error) {
	res, err := s.db.ExecContext(ctx, sqlInsert, g.Name, g.Category, g.Price, g.Description)
	if err != nil {
		return 0, fmt.Errorf("goods: insert: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("goods: insert: id: %w", err)
	}
	return id, nil
}

// page returns up to limit goods whose id is above after, ordered by id
// (never nil).
func (s table) page(ctx context.Context, after int64, limit int) ([]catalog.Good, error) {
	rows, err := s.db.QueryContext(ctx, sqlPage, after, limit)
	if err != nil {
		return nil, fmt.Errorf("goods: list: %w", err)
	}
	defer rows.Close()
	list := []catalog.Good{}
	for rows.Next() {
		var g catalog.Good
		if err := rows.Scan(&g.ID, &g.Name, &g.Category, &g.Price, &g.Description); err != nil {
			return nil, fmt.Errorf("goods: list: %w", err)
		}
		list = append(list, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("goods: list: %w", err)
	}
	return list, nil
}

// get returns good id, or a 404 *service.Error.
func (s table) get(ctx context.Context, id int64) (catalog.Good, error) {
	var g catalog.Good
	err := s.db.QueryRowContext(ctx, sqlGet, id).Scan(&g.ID, &g.Name, &g.Category, &g.Price, &g.Description)
	if errors.Is(err, sql.ErrNoRows) {
		return g, service.NotFound("good %d not found", id)
	}
	if err != nil {
		return g, fmt.Errorf("goods: get %d: %w", id, err)
	}
	return g, nil
}

// delete removes good id, or answers a 404 *service.Error.
func (s table) delete(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, sqlDelete, id)
	if err != nil {
		return fmt.Errorf("goods: delete %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("goods: delete %d: %w", id, err)
	}
	if n == 0 {
		return service.NotFound("good %d not found", id)
	}
	return nil
}

// change is a partial update of a good: nil fields are kept.
type change struct {
	Name, Category, Description *string
	Price                       *int64
}

// update applies c to good id, or answers a 404 *service.Error.
func (s table) update(ctx context.Context, id int64, c change) error {
	res, err := s.db.ExecContext(ctx, sqlUpdate, c.Name, c.Category, c.Price, c.Description, id)
	if err != nil {
		return fmt.Errorf("goods: update %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("goods: update %d: %w", id, err)
	}
	if n == 0 {
		// MySQL counts the rows changed, not the rows found: an update to
		// the same values is 0 too. The good may still be there.
		if _, err := s.get(ctx, id); err != nil {
			return err
		}
	}
	return nil
}
