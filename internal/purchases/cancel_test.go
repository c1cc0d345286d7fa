package purchases_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/purchases"
	"github.com/microshop/microshop/service"
)

// cancel runs DELETE /purchases as member userID.
func (f *fixture) cancel(t testing.TB, userID, id int64) (service.Result, error) {
	t.Helper()
	return call(t, f.routes, "DELETE/purchases", `{"userid":`+jsonInt(userID)+`,"id":`+jsonInt(id)+`}`)
}

// A member cancels their own purchase: it leaves their list and the
// rankings; cancelling it again answers the same; another member's
// purchase, or none, is the same 404.
func TestCancel(t *testing.T) {
	f := newFixture(t, nil)
	f.clock(wednesday)
	pen, ink := f.newGood(t, "pen"), f.newGood(t, "ink")
	f.wantSameAsDB(t, "before", 10) // builds the views
	p1 := f.buy(t, 7, pen)
	p2 := f.buy(t, 7, pen)
	f.buy(t, 7, ink)
	other := f.buy(t, 8, ink)
	wantRanks(t, "before the cancel", f.rankings(t, purchases.PeriodAll, 10), []rank{{pen, 2}, {ink, 2}})

	for _, tc := range []struct{ params, msg string }{
		{`{"userid":7}`, "id is required"},
		{`{"userid":7,"id":"x"}`, "id must be an integer"},
		{`{"userid":7,"id":0}`, "id must be a positive integer"},
		{`{"id":1}`, "userid is required"},
	} {
		_, err := call(t, f.routes, "DELETE/purchases", tc.params)
		wantCode(t, "DELETE "+tc.params, err, 400, tc.msg)
	}
	_, err := f.cancel(t, 7, other)
	wantCode(t, "cancel another member's purchase", err, 404, "purchase "+jsonInt(other)+" not found")
	_, err = f.cancel(t, 7, other+100)
	wantCode(t, "cancel no purchase", err, 404, "purchase "+jsonInt(other+100)+" not found")

	first, err := f.cancel(t, 7, p1)
	if err != nil {
		t.Fatalf("cancel %d: %v", p1, err)
	}
	if first["id"] != p1 || first["goodsid"] != pen || first["cancelled"] != wednesday.Format(purchases.DateLayout) {
		t.Fatalf("cancel answer = %v; want id %d, goodsid %d, cancelled %s", first, p1, pen, wednesday.Format(purchases.DateLayout))
	}
	f.clock(wednesday.Add(time.Minute))
	again, err := f.cancel(t, 7, p1)
	if err != nil || again["cancelled"] != first["cancelled"] {
		t.Fatalf("cancel again = %v, %v; want the first answer %v", again, err, first)
	}
	f.clock(wednesday)
	wantRanks(t, "after the cancel", f.rankings(t, purchases.PeriodAll, 10), []rank{{ink, 2}, {pen, 1}})
	f.wantSameAsDB(t, "after the cancel", 10)
	if list := f.list(t, 7); len(list) != 2 || list[0].ID != p2 {
		t.Fatalf("GET /purchases after the cancel = %+v; want the 2 not cancelled, from %d", list, p2)
	}
	if list := f.list(t, 8); len(list) != 1 || list[0].ID != other {
		t.Fatalf("the other member's purchases = %+v; want %d kept", list, other)
	}
}

// Cancels retried concurrently (the same purchase from several goroutines)
// and cancels of other purchases, racing purchases, readers of the
// rankings and views vanishing: each cancel takes off exactly one sale, and
// the views end as the database ranks.
func TestCancelConcurrent(t *testing.T) {
	f := newFixture(t, nil)
	f.clock(wednesday)
	goods := make([]int64, 5)
	for i := range goods {
		goods[i] = f.newGood(t, "good"+strconv.Itoa(i))
	}
	ctx := context.Background()
	var bought []int64
	for j := range 60 {
		bought = append(bought, f.buy(t, 1, goods[j%len(goods)]))
	}
	f.wantSameAsDB(t, "before", 10)
	stop := make(chan struct{})
	var workers, readers sync.WaitGroup
	var answers atomic.Int64
	for _, id := range bought[:30] { // half are cancelled, each by 4 at once
		for range 4 {
			workers.Go(func() {
				if _, err := f.cancel(t, 1, id); err != nil {
					t.Errorf("cancel %d: %v", id, err)
				}
				answers.Add(1)
			})
		}
	}
	for j := range 20 {
		workers.Go(func() { f.buy(t, 2, goods[j%len(goods)]) })
	}
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range []purchases.Period{purchases.PeriodDay, purchases.PeriodWeek, purchases.PeriodAll} {
					if _, err := f.svc.Rankings(ctx, p, 10); err != nil {
						t.Errorf("Rankings during the race: %v", err)
						return
					}
				}
			}
		})
	}
	readers.Go(func() { // views vanish at any moment, as on a FLUSHALL
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			keys := purchases.ViewKeys(f.svc, purchases.PeriodAll)
			f.cache.Del(ctx, keys...)
		}
	})
	workers.Wait()
	close(stop)
	readers.Wait()
	f.wantSameAsDB(t, "after concurrent cancels", 10)
	total := int64(0)
	for _, r := range f.rankings(t, purchases.PeriodAll, 10) {
		total += r.Sales
	}
	if want := int64(60 - 30 + 20); total != want || answers.Load() != 120 {
		t.Fatalf("total sales after %d cancel answers = %d; want %d (60 bought, 30 cancelled, 20 more bought)", answers.Load(), total, want)
	}
}

// A cancel whose drop of the views Redis lost (the process stopped before
// its repair ran) is found by the next compaction: the view counted fewer
// cancelled purchases before its snapshot than the database has, so it is
// rebuilt.
func TestCancelLostDrop(t *testing.T) {
	f := newFixture(t, nil)
	c := f.clock(wednesday)
	pen := f.newGood(t, "pen")
	p1 := f.buy(t, 1, pen)
	f.buy(t, 1, pen)
	wantRanks(t, "before", f.rankings(t, purchases.PeriodAll, 10), []rank{{pen, 2}})
	// The cancel commits, its drop is lost: the view still counts 2.
	if _, err := f.db.ExecContext(context.Background(), `UPDATE purchases SET cancelled_at = purchases.date WHERE id = ?`, p1); err != nil {
		t.Fatal(err)
	}
	wantRanks(t, "with the drop lost", f.rankings(t, purchases.PeriodAll, 10), []rank{{pen, 2}})
	c.set(wednesday.Add(purchases.CompactEvery))
	wantRanks(t, "after the compaction", f.rankings(t, purchases.PeriodAll, 10), []rank{{pen, 1}})
}
