package purchases_test

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/purchases"
	"github.com/microshop/microshop/packet"
)

// page runs GET /purchases with params and returns the purchases and the
// next cursor ("" when absent).
func (f *fixture) page(t testing.TB, params string) ([]purchases.Purchase, string) {
	t.Helper()
	res, err := call(t, f.routes, "GET/purchases", params)
	if err != nil {
		t.Fatalf("GET /purchases %s: %v", params, err)
	}
	list, ok := res["results"].([]purchases.Purchase)
	if !ok {
		t.Fatalf("GET /purchases %s = %#v; want results", params, res)
	}
	next, _ := res["next"].(string)
	if _, present := res["next"]; present && next == "" {
		t.Fatalf("GET /purchases %s: next = %#v; want a non-empty string or no next", params, res["next"])
	}
	return list, next
}

func purchaseIDs(list []purchases.Purchase) []int64 {
	out := make([]int64, len(list))
	for i, p := range list {
		out[i] = p.ID
	}
	return out
}

// Walking a member's pages while purchases are added (theirs and others')
// and removed between them lists every purchase of theirs that exists
// throughout exactly once, in id order, and nobody else's.
func TestPagingWalk(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	pen := f.newGood(t, "pen")
	live := map[int64]bool{}
	for i := range 40 {
		live[f.buy(t, 1, pen)] = true
		if i%3 == 0 {
			f.buy(t, 2, pen) // another member's, in between
		}
	}
	remove := func(id int64) {
		// No route deletes a purchase; the database may still lose rows.
		if _, err := f.db.ExecContext(ctx, "DELETE FROM purchases WHERE id = ?", id); err != nil {
			t.Fatal(err)
		}
		delete(live, id)
	}
	listed := map[int64]bool{}
	var walked []int64
	after, pages := "", 0
	for {
		list, next := f.page(t, `{"userid":1,"limit":"6","after":"`+after+`"}`)
		pages++
		if len(list) > 6 {
			t.Fatalf("page %d: %d purchases; want at most 6", pages, len(list))
		}
		for _, p := range list {
			listed[p.ID] = true
		}
		walked = append(walked, purchaseIDs(list)...)
		if next == "" {
			break
		}
		if want := strconv.FormatInt(list[len(list)-1].ID, 10); next != want {
			t.Fatalf("page %d: next = %q; want the last id, %s", pages, next, want)
		}
		after = next
		cursor, _ := strconv.ParseInt(next, 10, 64)
		// Between pages: remove the next page's first, the very first and
		// now and then the one the cursor names; add one of theirs and one
		// of someone else's.
		ahead, first := int64(0), int64(0)
		for id := range live {
			if id > cursor && (ahead == 0 || id < ahead) {
				ahead = id
			}
			if first == 0 || id < first {
				first = id
			}
		}
		doomed := []int64{ahead, first}
		if pages%2 == 0 { // and now and then the cursor's own
			doomed = append(doomed, cursor)
		}
		for _, id := range doomed {
			if live[id] {
				remove(id)
			}
		}
		if pages <= 4 {
			live[f.buy(t, 1, pen)] = true
			f.buy(t, 3, pen)
		}
		if pages > 100 {
			t.Fatal("the walk does not end")
		}
	}
	var want []int64
	for id := range live {
		want = append(want, id)
	}
	for id := range listed {
		if !live[id] {
			want = append(want, id) // removed after it was listed
		}
	}
	slices.Sort(want)
	if !slices.Equal(walked, want) {
		t.Fatalf("walk in %d pages listed %v;\nwant %v (each once, in id order; none removed before it was reached, nobody else's)", pages, walked, want)
	}
	t.Logf("%d purchases listed in %d pages", len(walked), pages)
}

func TestPagingDefaultsAndLimits(t *testing.T) {
	f := newFixture(t, nil)
	pen := f.newGood(t, "pen")
	goods := make([]int64, purchases.DefaultLimit+5)
	for i := range goods {
		goods[i] = pen
	}
	if err := purchases.BulkInsert(context.Background(), f.svc, 7, goods, time.Now()); err != nil {
		t.Fatal(err)
	}
	all := purchaseIDs(f.allPages(t, 7))
	if len(all) != len(goods) {
		t.Fatalf("member 7 has %d purchases; want %d", len(all), len(goods))
	}
	// No paging parameter, as a book client sends: the first DefaultLimit.
	list, next := f.page(t, `{"userid":7,"key":3}`)
	if !slices.Equal(purchaseIDs(list), all[:purchases.DefaultLimit]) || next != strconv.FormatInt(all[purchases.DefaultLimit-1], 10) {
		t.Fatalf("GET /purchases = %d purchases next %q; want the first %d, next %d", len(list), next, purchases.DefaultLimit, all[purchases.DefaultLimit-1])
	}
	list, next = f.page(t, `{"userid":7,"after":`+next+`}`)
	if !slices.Equal(purchaseIDs(list), all[purchases.DefaultLimit:]) || next != "" {
		t.Fatalf("second page = %v next %q; want the last 5 and no next", purchaseIDs(list), next)
	}
	if list, next = f.page(t, `{"userid":7,"limit":5,"after":`+jsonInt(all[len(all)-6])+`}`); len(list) != 5 || next != "" {
		t.Fatalf("exact last page = %d purchases next %q; want 5 and no next", len(list), next)
	}
	for _, tt := range []struct{ params, msg string }{
		{`{"userid":7,"limit":0}`, "limit must be from 1 to 1000"},
		{`{"userid":7,"limit":1001}`, "limit must be from 1 to 1000"},
		{`{"userid":7,"limit":"ten"}`, "limit must be an integer"},
		{`{"userid":7,"after":-5}`, "after must not be negative: the next of the previous page, or 0 for the first page"},
		{`{"userid":7,"after":"abc"}`, "after must be an integer: the next of the previous page, or 0 for the first page"},
		{`{"userid":7,"after":{"id":1}}`, "after must be an integer: the next of the previous page, or 0 for the first page"},
	} {
		_, err := call(t, f.routes, "GET/purchases", tt.params)
		wantCode(t, "GET /purchases "+tt.params, err, 400, tt.msg)
	}
	// A bad page of nobody: who is asking is checked first.
	_, err := call(t, f.routes, "GET/purchases", `{"limit":0}`)
	wantCode(t, "GET /purchases without userid", err, 400, "userid is required")
}

// allPages walks every page of userID's purchases at the largest limit.
func (f *fixture) allPages(t testing.TB, userID int64) []purchases.Purchase {
	t.Helper()
	var out []purchases.Purchase
	after := "0"
	for {
		list, next := f.page(t, `{"userid":`+jsonInt(userID)+`,"limit":`+strconv.Itoa(purchases.MaxLimit)+`,"after":`+after+`}`)
		out = append(out, list...)
		if next == "" {
			return out
		}
		after = next
	}
}

// The largest page fits in the default packet, and MaxPurchaseBytes is an
// honest bound: every purchase takes exactly it, but for the digits of its
// ids.
func TestWorstCasePage(t *testing.T) {
	f := newFixture(t, nil)
	good := f.newGood(t, "pen")
	goods := make([]int64, purchases.MaxLimit+1)
	for i := range goods {
		goods[i] = good
	}
	if err := purchases.BulkInsert(context.Background(), f.svc, 1, goods, time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := call(t, f.routes, "GET/purchases", `{"userid":1,"limit":`+strconv.Itoa(purchases.MaxLimit)+`}`)
	if err != nil {
		t.Fatal(err)
	}
	list := res["results"].([]purchases.Purchase)
	if len(list) != purchases.MaxLimit || res["next"] == nil {
		t.Fatalf("GET /purchases?limit=%d = %d purchases, next %v; want %d and a next", purchases.MaxLimit, len(list), res["next"], purchases.MaxLimit)
	}
	digits := func(n int64) int { return len(strconv.FormatInt(n, 10)) }
	for _, p := range list {
		b, _ := json.Marshal(p)
		got := len(packet.Escape(b)) + 1 // and its comma
		if want := purchases.MaxPurchaseBytes - (19 - digits(p.ID)) - (19 - digits(p.GoodsID)); got != want {
			t.Fatalf("purchase %s takes %d bytes; want MaxPurchaseBytes (%d) less the ids' missing digits, %d", b, got, purchases.MaxPurchaseBytes, want)
		}
	}
	// The same page with the largest ids and cursor there can be.
	for i := range list {
		list[i].ID, list[i].GoodsID = math.MaxInt64, math.MaxInt64
	}
	res["next"] = strconv.FormatInt(math.MaxInt64, 10)
	body, _ := json.Marshal(res)
	answer := packet.AppendResponse(nil, json.RawMessage(strconv.FormatUint(math.MaxUint64, 10)), 0, "success", body)
	if len(answer) > packet.DefaultMaxSize || len(answer) < purchases.MaxLimit*purchases.MaxPurchaseBytes {
		t.Fatalf("the worst page is %d bytes; want from %d (MaxLimit × MaxPurchaseBytes) to %d", len(answer), purchases.MaxLimit*purchases.MaxPurchaseBytes, packet.DefaultMaxSize)
	}
	t.Logf("largest page with 19-digit ids: %d bytes (packet limit %d)", len(answer), packet.DefaultMaxSize)
}
