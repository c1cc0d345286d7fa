package stores

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/microshop/microshop/internal/store"
)

// The SQL is the same on both engines.
const (
	insertSQL   = `INSERT INTO stores (name, longitude, latitude) VALUES (?, ?, ?)`
	deleteSQL   = `UPDATE stores SET deleted = 1, version = version + 1 WHERE id = ? AND deleted = 0`
	snapshotSQL = `SELECT id, name, longitude, latitude, deleted, version FROM stores`
	rowSQL      = snapshotSQL + ` WHERE id = ?`
	// updateSQL sets the fields given (a NULL keeps the column) of a live
	// store and raises its version. Args: name, longitude, latitude, id.
	updateSQL = `UPDATE stores SET name = COALESCE(?, name), longitude = COALESCE(?, longitude), ` +
		`latitude = COALESCE(?, latitude), version = version + 1 WHERE id = ? AND deleted = 0`
	// bandSQL lists the live stores within a band of latitudes.
	bandSQL = `SELECT id, name, longitude, latitude FROM stores
WHERE deleted = 0 AND latitude BETWEEN ? AND ?`
)

// entry is one store as stored and as merged into Redis.
type entry struct {
	id       int64
	name     string
	lon, lat float64
	deleted  bool
	// version goes up with every write of the row: 1 when added.
	version int64
}

func (s *Service) insert(ctx context.Context, name string, lon, lat float64) (int64, error) {
	res, err := s.db.ExecContext(ctx, insertSQL, name, lon, lat)
	if err != nil {
		return 0, store.Failure("stores", fmt.Errorf("add store: %w", err))
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, store.Failure("stores", fmt.Errorf("add store: %w", err))
	}
	return id, nil
}

// markDeleted deletes store id, reporting whether it was there.
func (s *Service) markDeleted(ctx context.Context, id int64) (bool, error) {
	res, err := s.db.ExecContext(ctx, deleteSQL, id)
	if err != nil {
		return false, store.Failure("stores", fmt.Errorf("delete store %d: %w", id, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, store.Failure("stores", fmt.Errorf("delete store %d: %w", id, err))
	}
	return n == 1, nil
}

// snapshot reads every store, deleted ones included.
func (s *Service) snapshot(ctx context.Context) ([]entry, error) {
	rows, err := s.db.QueryContext(ctx, snapshotSQL)
	if err != nil {
		return nil, store.Failure("stores", fmt.Errorf("read stores: %w", err))
	}
	defer rows.Close()
	var es []entry
	for rows.Next() {
		var e entry
		var deleted int64
		if err := rows.Scan(&e.id, &e.name, &e.lon, &e.lat, &deleted, &e.version); err != nil {
			return nil, store.Failure("stores", fmt.Errorf("read stores: %w", err))
		}
		e.deleted = deleted != 0
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, store.Failure("stores", fmt.Errorf("read stores: %w", err))
	}
	return es, nil
}

// dbNear searches the database: the stores in the band of latitudes the
// circle spans, filtered and sorted by distance.
func (s *Service) dbNear(ctx context.Context, lon, lat, radius float64, limit int) ([]Store, error) {
	// One degree of latitude is earthRadius·π/180 km everywhere; the margin
	// covers rounding.
	span := radius/(earthRadius*math.Pi/180) + 1e-6
	rows, err := s.db.QueryContext(ctx, bandSQL, lat-span, lat+span)
	if err != nil {
		return nil, store.Failure("stores", fmt.Errorf("search stores: %w", err))
	}
	defer rows.Close()
	found := []Store{}
	for rows.Next() {
		var st Store
		if err := rows.Scan(&st.ID, &st.Name, &st.Longitude, &st.Latitude); err != nil {
			return nil, store.Failure("stores", fmt.Errorf("search stores: %w", err))
		}
		if d := distance(lon, lat, st.Longitude, st.Latitude); d <= radius {
			st.Distance = d
			found = append(found, st)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, store.Failure("stores", fmt.Errorf("search stores: %w", err))
	}
	sort.Slice(found, func(i, j int) bool {
		if found[i].Distance != found[j].Distance {
			return found[i].Distance < found[j].Distance
		}
		return found[i].ID < found[j].ID
	})
	if len(found) > limit {
		found = found[:limit]
	}
	for i := range found {
		found[i].Distance = roundKM(found[i].Distance)
	}
	return found, nil
}

// row reads store id; ok is false when there is none.
func (s *Service) row(ctx context.Context, id int64) (e entry, ok bool, err error) {
	var deleted int64
	err = s.db.QueryRowContext(ctx, rowSQL, id).Scan(&e.id, &e.name, &e.lon, &e.lat, &deleted, &e.version)
	if errors.Is(err, sql.ErrNoRows) {
		return e, false, nil
	}
	if err != nil {
		return e, false, store.Failure("stores", fmt.Errorf("read store %d: %w", id, err))
	}
	e.deleted = deleted != 0
	return e, true, nil
}

// update applies c to live store id, reporting whether there was one.
func (s *Service) update(ctx context.Context, id int64, c change) (bool, error) {
	res, err := s.db.ExecContext(ctx, updateSQL, c.name, c.lon, c.lat, id)
	if err != nil {
		return false, store.Failure("stores", fmt.Errorf("edit store %d: %w", id, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, store.Failure("stores", fmt.Errorf("edit store %d: %w", id, err))
	}
	// The version always changes, so a row found is a row changed, on
	// MySQL too.
	return n == 1, nil
}
