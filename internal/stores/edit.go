package stores

import (
	"context"
	"slices"
	"sort"
	"strings"

	"github.com/microshop/microshop/service"
)

// editFields are the fields PATCH /stores may change; editIgnored the
// parameters it takes besides them (the book gate's correlation key).
var (
	editFields  = []string{"name", "longitude", "latitude"}
	editIgnored = []string{"id", "key"}
)

// change is a partial update of a store: nil fields are kept.
type change struct {
	name     *string
	lon, lat *float64
}

// handlePatch serves PATCH /stores: it changes the fields given of a live
// store and answers the store as it now is.
func (s *Service) handlePatch(ctx context.Context, r *service.Request) (service.Result, error) {
	id, err := r.Params.ID("id")
	if err != nil {
		return nil, err
	}
	c, err := parseChange(r.Params)
	if err != nil {
		return nil, err
	}
	e, err := s.edit(ctx, id, c)
	if err != nil {
		return nil, err
	}
	return service.Result{"id": e.id, "name": e.name, "longitude": e.lon, "latitude": e.lat}, nil
}

// edit applies c to live store id (a 404 for an unknown or deleted one):
// the database first, which raises the row's version; then the row read
// back is merged into the Redis view, where it replaces any lower version.
func (s *Service) edit(ctx context.Context, id int64, c change) (entry, error) {
	found, err := s.update(ctx, id, c)
	if err != nil {
		return entry{}, err
	}
	if !found {
		return entry{}, service.NotFound("store %d not found", id)
	}
	e, ok, err := s.publishRow(ctx, id)
	if err != nil {
		return entry{}, err
	}
	if !ok || e.deleted {
		return entry{}, service.NotFound("store %d not found", id) // deleted meanwhile
	}
	return e, nil
}

// parseChange reads the fields of PATCH /stores, checked as POST checks
// them; an unknown parameter, or none to change, is a 400.
func parseChange(p service.Params) (change, error) {
	var c change
	var unknown []string
	for name := range p {
		if !slices.Contains(editFields, name) && !slices.Contains(editIgnored, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return c, service.BadRequest("unknown field %s: a store has %s", strings.Join(unknown, ", "), strings.Join(editFields, ", "))
	}
	if p.Has("name") {
		name, err := p.Text("name", 1, MaxNameLength)
		if err != nil {
			return c, err
		}
		if strings.TrimSpace(name) == "" {
			return c, service.BadRequest("name must not be blank")
		}
		c.name = &name
	}
	if p.Has("longitude") {
		lon, err := p.Float("longitude")
		if err != nil {
			return c, err
		}
		if lon < -180 || lon > 180 {
			return c, service.BadRequest("longitude must be between -180 and 180")
		}
		c.lon = &lon
	}
	if p.Has("latitude") {
		lat, err := p.Float("latitude")
		if err != nil {
			return c, err
		}
		if lat < -MaxLatitude || lat > MaxLatitude {
			return c, service.BadRequest("latitude must be between -%v and %v", MaxLatitude, MaxLatitude)
		}
		c.lat = &lat
	}
	if c == (change{}) {
		return c, service.BadRequest("nothing to change: give one of %s", strings.Join(editFields, ", "))
	}
	return c, nil
}
