package goods

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/service"
)

// editFields are the fields PATCH /goods may change.
var editFields = []string{"name", "category", "price", "description"}

// editIgnored are parameters PATCH /goods takes besides id and editFields:
// the correlation key the book's gate puts among the parameters.
var editIgnored = []string{"id", "key"}

// settleRounds bounds how many times settle writes a good's entry while
// concurrent edits keep changing the row (each round is one read of the
// database and one SET); the last edit's own settle writes its value.
const settleRounds = 5

// edit applies a partial update to a good (PATCH /goods), then makes its
// cache entry the row's (settle) and tells every goods instance. It
// answers the good as it now is.
func (s *Service) edit(ctx context.Context, r *service.Request) (service.Result, error) {
	id, err := r.Params.ID("id")
	if err != nil {
		return nil, err
	}
	c, err := parseChange(r.Params)
	if err != nil {
		return nil, err
	}
	if err := s.store.update(ctx, id, c); err != nil {
		return nil, err
	}
	g, err := s.settleOrRepair(ctx, id)
	if err != nil {
		return nil, err
	}
	return service.Results([]catalog.Good{g}), nil
}

// parseChange reads the fields PATCH /goods changes, checked as POST
// checks them; an unknown parameter, or none to change, is a 400.
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
		return c, service.BadRequest("unknown field %s: a good has %s", strings.Join(unknown, ", "), strings.Join(editFields, ", "))
	}
	if p.Has("name") {
		name, err := text(p, "name", 1, MaxNameLen, false)
		if err != nil {
			return c, err
		}
		if strings.TrimSpace(name) == "" {
			return c, service.BadRequest("name must not be blank")
		}
		c.Name = &name
	}
	if p.Has("category") {
		v, err := text(p, "category", 0, MaxCategoryLen, false)
		if err != nil {
			return c, err
		}
		c.Category = &v
	}
	if p.Has("description") {
		v, err := text(p, "description", 0, MaxDescriptionLen, true)
		if err != nil {
			return c, err
		}
		c.Description = &v
	}
	if p.Has("price") {
		v, err := p.Int("price")
		if err != nil {
			return c, err
		}
		if v < 0 {
			return c, service.BadRequest("price must not be negative")
		}
		if v > MaxPrice {
			return c, service.BadRequest("price must be at most %d", MaxPrice)
		}
		c.Price = &v
	}
	if c == (change{}) {
		return c, service.BadRequest("nothing to change: give one of %s", strings.Join(editFields, ", "))
	}
	return c, nil
}

// settle makes good id's cache entry what the database holds: it reads
// the row and writes it (SET, or the tombstone when the row is gone), then
// reads the row again and writes again while it changed meanwhile, at most
// settleRounds times. Whatever order concurrent edits commit and write in,
// the last one to commit writes after its commit and reads its own value
// back, and any write a reader or an earlier edit makes after that is
// followed by a read that sees the last value and writes it again; so the
// entry ends as the row. It returns the row (ok false when the good is
// gone) and, when Redis failed, that error; the invalidation of the near
// caches is the caller's.
func (s *Service) settle(ctx context.Context, id int64) (g catalog.Good, ok bool, err error) {
	var written *catalog.Good
	for range settleRounds {
		g, err := s.store.get(ctx, id)
		if code, _ := service.ErrorCode(err); code == http.StatusNotFound {
			return catalog.Good{}, false, s.cache.Forget(ctx, id)
		}
		if err != nil {
			return catalog.Good{}, false, err
		}
		if written != nil && *written == g {
			return g, true, nil
		}
		if err := s.cache.Put(ctx, g); err != nil {
			return g, true, err
		}
		written = &g
	}
	return *written, true, nil
}

// settleOrRepair settles good id after a write to its row and tells every
// goods instance; when Redis fails it keeps the good out of this
// instance's near cache and queues the settling for when Redis answers.
// A failure of the database is returned: the caller's write committed,
// but what it answers cannot be read.
func (s *Service) settleOrRepair(ctx context.Context, id int64) (catalog.Good, error) {
	g, found, err := s.settle(ctx, id)
	if err == nil {
		s.redisDone(nil, "", id)
		s.changed(ctx, id)
		if !found {
			return g, service.NotFound("good %d not found", id)
		}
		return g, nil
	}
	if s.near != nil {
		s.near.invalidate(id)
	}
	s.queueSettle(id)
	g, dberr := s.store.get(ctx, id)
	if dberr != nil {
		return catalog.Good{}, dberr // the database failed (or the good is gone)
	}
	s.redisDone(err, "cache the edit", id)
	return g, nil
}

// queueSettle settles good id in the background once Redis answers, then
// tells the goods instances (they may have read the old entry meanwhile).
// It shares its key with the deletion's repair: a later fix replaces an
// earlier one, and a settle also writes a deletion's tombstone.
func (s *Service) queueSettle(id int64) {
	s.repairs.Add(fmt.Sprintf("goods:%d", id), func(ctx context.Context) error {
		if _, _, err := s.settle(ctx, id); err != nil {
			return err
		}
		if s.near != nil {
			return s.near.changed(ctx, id)
		}
		return nil
	})
}
