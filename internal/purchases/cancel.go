package purchases

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/microshop/microshop/service"
)

// Cancelling a purchase: DELETE /purchases {id}.
//
// A member cancels their own purchase; another member's, or one that does
// not exist, is the same 404, so that ids reveal nothing. The row stays,
// with cancelled_at set (a soft delete): its Idempotency-Key stays taken
// (a POST retried with it after the cancel makes no new purchase), the
// history keeps it, and a cancel retried after its answer was lost can
// tell "already cancelled" from "no such purchase". A cancel of a
// cancelled purchase is a success with the same answer as the first one
// (the time of the first cancel): the database's conditional UPDATE lets
// exactly one of concurrent cancels change the row.
//
// The rankings count the purchases not cancelled. A cancel commits, then
// drops the views its purchase was counted in (its day, its week, all
// time: the four keys of each, the rebuild lease among them), and the next
// reader rebuilds them from the database. This is exact whatever runs
// meanwhile: every write to a view made from reads before the cancel's
// commit happens either before the drop (and is dropped with it) or after
// it, where it is refused: a rebuild in flight lost its lease, a
// catch-up's generation is gone, and a purchase's own update finds no view
// or a watermark above its id. The drop is idempotent, so a retried cancel
// drops again; a drop Redis fails to take is retried in the background
// (cache.Repairs), and as a backstop every view records, before its
// snapshot, how many purchases were ever cancelled (cx): a compaction that
// counts more drops the view. Dropping costs a rebuild per cancel, a
// GROUP BY over the window; cancels are rare next to purchases.

// cancelled is a purchase's row as a cancel sees it.
type cancelled struct {
	Purchase
	date time.Time // of the purchase
	at   time.Time // of its (first) cancel
}

// cancel answers DELETE /purchases.
func (s *Service) cancel(ctx context.Context, r *service.Request) (service.Result, error) {
	userID, err := r.Member(true)
	if err != nil {
		return nil, err
	}
	id, err := r.Params.ID("id")
	if err != nil {
		return nil, err
	}
	c, err := s.store.cancel(ctx, userID, id, s.now())
	if err != nil {
		return nil, err
	}
	// Also on a cancel already made: a retry repairs a drop lost before.
	s.dropViews(ctx, salesWindows(c.date))
	return service.Result{
		"id": c.ID, "goodsid": c.GoodsID, "date": c.Date,
		"cancelled": c.at.UTC().Format(DateLayout),
	}, nil
}

// salesWindows returns the windows a sale made at date is counted in.
func salesWindows(date time.Time) []window {
	return []window{windowOf(PeriodDay, date), windowOf(PeriodWeek, date), windowOf(PeriodAll, date)}
}

// dropViews deletes the views of ws, to be rebuilt by their next reader;
// what Redis fails to delete is retried in the background.
func (s *Service) dropViews(ctx context.Context, ws []window) {
	if s.cache == nil {
		return
	}
	drop := func(ctx context.Context, w window) error {
		return s.cache.Del(ctx, s.viewKeys(w)...).Err()
	}
	for _, w := range ws {
		// One DEL per view: its keys share a hash tag (one cluster slot).
		if err := drop(ctx, w); err != nil {
			s.log.Warn("rankings: dropping a view after a cancel failed; retrying in the background", "view", w.name, "err", err)
			s.repairs.Add("rankings-drop:"+w.name, func(ctx context.Context) error { return drop(ctx, w) })
		}
	}
}

// missedCancel reports whether purchases were cancelled that a view's
// snapshot did not see, by the meta field cx it recorded (nil: a view
// built before cx existed, which is deemed stale).
func (s *Service) missedCancel(ctx context.Context, cx any) (bool, error) {
	n, err := s.store.cancelled(ctx)
	if err != nil {
		return false, err
	}
	str, _ := cx.(string)
	seen, perr := strconv.ParseInt(str, 10, 64)
	return perr != nil || n > seen, nil
}

// cancel marks purchase id of userID cancelled at now, unless it was
// already, and returns it: a 404 *service.Error when userID has no such
// purchase.
func (t table) cancel(ctx context.Context, userID, id int64, now time.Time) (cancelled, error) {
	at := now.UTC().Truncate(time.Millisecond)
	if _, err := t.db.ExecContext(ctx, sqlCancel, t.sql.dateArg(at), id, userID); err != nil {
		return cancelled{}, fmt.Errorf("purchases: cancel %d: %w", id, err)
	}
	var c cancelled
	var date, when any
	err := t.db.QueryRowContext(ctx, sqlCancelled, id, userID).Scan(&c.ID, &c.GoodsID, &date, &when)
	if errors.Is(err, sql.ErrNoRows) {
		return c, service.NotFound("purchase %d not found", id)
	}
	if err != nil {
		return c, fmt.Errorf("purchases: cancel %d: %w", id, err)
	}
	if c.date, err = t.sql.scanDate(date); err != nil {
		return c, fmt.Errorf("purchases: cancel %d: %w", id, err)
	}
	if c.at, err = t.sql.scanDate(when); err != nil {
		return c, fmt.Errorf("purchases: cancel %d: cancelled_at: %w", id, err)
	}
	c.Date = c.date.UTC().Format(DateLayout)
	return c, nil
}

// The SQL of a cancel, the same on both engines.
const (
	// sqlCancel changes the row only if it is not cancelled yet: of
	// concurrent cancels, one does. Args: cancelled_at, id, userid.
	sqlCancel = `UPDATE purchases SET cancelled_at = ? WHERE id = ? AND userid = ? AND cancelled_at IS NULL`
	// sqlCancelled reads the purchase back. Args: id, userid.
	sqlCancelled = `SELECT id, goodsid, date, cancelled_at FROM purchases WHERE id = ? AND userid = ?`
)
