// Package purchases is the purchases service of microshop: it records who
// bought which good and when. Routes:
//
//	POST /purchases  {userid, goodsid}  → {"id": N}
//	GET  /purchases  {userid}           → {"results": [{"id", "goodsid", "date"}, ...]}
//
// Before recording a purchase it checks that the good exists the way
// DESIGN §1 prescribes (catalog.Lookup): in Redis first, else by asking the
// goods service over the protocol. As in the book, the member is not checked.
package purchases

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// DateLayout is the form of a purchase date in answers: RFC 3339 in UTC with
// milliseconds, e.g. "2024-05-01T09:30:00.250Z".
const DateLayout = "2006-01-02T15:04:05.000Z07:00"

// Purchase is one purchase as answered by GET /purchases.
type Purchase struct {
	ID      int64  `json:"id"`
	GoodsID int64  `json:"goodsid"`
	Date    string `json:"date"`
}

// Service serves the purchases routes.
type Service struct {
	store table
	goods catalog.Lookup
	log   *slog.Logger
	now   func() time.Time
}

// New returns the purchases service over db. It finds goods in c, or asks
// the goods service through goods (for example a service.Router). log may be
// nil.
func New(db *store.DB, c *cache.Cache, goods catalog.Caller, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		store: newTable(db),
		goods: catalog.Lookup{Cache: c, Caller: goods},
		log:   log.With("service", "purchases"),
		now:   time.Now,
	}
}

// Routes returns the handlers of the purchases service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/purchases": s.buy,
		"GET/purchases":  s.list,
	}
}

// buy records a purchase of an existing good.
func (s *Service) buy(ctx context.Context, r *service.Request) (service.Result, error) {
	userID, err := r.Params.ID("userid")
	if err != nil {
		return nil, err
	}
	goodsID, err := r.Params.ID("goodsid")
	if err != nil {
		return nil, err
	}
	if _, err := s.goods.Find(ctx, goodsID); err != nil {
		if code, _ := service.ErrorCode(err); code == http.StatusServiceUnavailable {
			s.log.Warn("cannot check a good: goods service unavailable", "good", goodsID, "err", err)
		}
		return nil, err
	}
	id, err := s.store.insert(ctx, userID, goodsID, s.now())
	if err != nil {
		return nil, err
	}
	return service.Result{"id": id}, nil
}

// list answers a member's purchases, oldest first.
func (s *Service) list(ctx context.Context, r *service.Request) (service.Result, error) {
	userID, err := r.Params.ID("userid")
	if err != nil {
		return nil, err
	}
	list, err := s.store.list(ctx, userID)
	if err != nil {
		return nil, err
	}
	return service.Results(list), nil
}
