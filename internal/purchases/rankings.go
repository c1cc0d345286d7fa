package purchases

import (
	"context"
	"errors"

	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// Period is the span a ranking counts sales over.
type Period string

// The periods of GET /rankings.
const (
	PeriodDay  Period = "day"  // the current UTC day
	PeriodWeek Period = "week" // the current ISO week, from Monday 00:00 UTC
	PeriodAll  Period = "all"  // all time
)

// Limits of GET /rankings?top=N.
const (
	DefaultTop = 10
	MaxTop     = 100
)

// Ranked is one line of a ranking.
type Ranked struct {
	Rank    int    `json:"rank"`
	GoodsID int64  `json:"goodsid"`
	Name    string `json:"name"`
	Sales   int64  `json:"sales"`
}

// rankings answers GET /rankings?top=N&period=day|week|all.
func (s *Service) rankings(ctx context.Context, r *service.Request) (service.Result, error) {
	top, err := r.Params.IntDefault("top", DefaultTop)
	if err != nil {
		return nil, err
	}
	if top < 1 || top > MaxTop {
		return nil, service.BadRequest("top must be an integer from 1 to %d", MaxTop)
	}
	period, err := r.Params.String("period")
	if err != nil {
		return nil, err
	}
	p := Period(period)
	switch p {
	case "":
		p = PeriodAll
	case PeriodDay, PeriodWeek, PeriodAll:
	default:
		return nil, service.BadRequest("period must be day, week or all")
	}
	list, err := s.Rankings(ctx, p, int(top))
	if err != nil {
		return nil, err
	}
	return service.Results(list), nil
}

// Rankings returns the top goods by sales in the current window of period
// (never nil): highest sales first, ties by goodsid ascending, deleted goods
// left out. It reads the Redis view of the window, rebuilding it when it is
// missing, and computes the ranking in the database when Redis cannot
// answer.
func (s *Service) Rankings(ctx context.Context, p Period, top int) ([]Ranked, error) {
	w := windowOf(p, s.now())
	list, err := s.rank(ctx, top, func(off, n int) ([]sales, error) {
		return s.viewPage(ctx, w, off, n)
	}, s.forget)
	if err == nil {
		return list, nil
	}
	var se *service.Error
	if errors.As(err, &se) || store.IsFailure(err) || ctx.Err() != nil {
		return nil, err
	}
	if !errors.Is(err, errRebuildBusy) && !errors.Is(err, errNoCache) {
		s.log.Warn("rankings: Redis unavailable, ranking in the database", "view", w.name, "err", err)
	}
	return s.rank(ctx, top, func(off, n int) ([]sales, error) {
		return s.store.top(ctx, w, off, n)
	}, nil)
}

// rank takes pages of (good, sales) from page, best first, names the goods
// (Redis first, then the goods service) and keeps the first top that still
// exist. Deleted goods are handed to forget, if not nil.
func (s *Service) rank(ctx context.Context, top int, page func(off, n int) ([]sales, error), forget func(context.Context, []int64)) ([]Ranked, error) {
	out := make([]Ranked, 0, top)
	var gone []int64
	for off := 0; len(out) < top; off += top {
		list, err := page(off, top)
		if err != nil {
			return nil, err
		}
		ids := make([]int64, len(list))
		for i, e := range list {
			ids[i] = e.good
		}
		goods, err := s.goods.FindMany(ctx, ids)
		if err != nil {
			return nil, err
		}
		for i, e := range list {
			switch {
			case goods[i].ID == 0:
				gone = append(gone, e.good)
			case len(out) < top:
				out = append(out, Ranked{Rank: len(out) + 1, GoodsID: e.good, Name: goods[i].Name, Sales: e.sales})
			}
		}
		if len(list) < top {
			break
		}
	}
	if len(gone) > 0 && forget != nil {
		forget(ctx, gone)
	}
	return out, nil
}
