package stores

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/microshop/microshop/internal/store"
)

// The SQL is the same on both engines.
const (
	insertSQL   = `INSERT INTO stores (name, longitude, latitude) VALUES (?, ?, ?)`
	deleteSQL   = `UPDATE stores SET deleted = 1 WHERE id = ? AND deleted = 0`
	snapshotSQL = `SELECT id, name, longitude, latitude, deleted FROM stores`
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
		if err := rows.Scan(&e.id, &e.name, &e.lon, &e.lat, &deleted); err != nil {
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
