package purchases_test

import (
	"context"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/purchases"
	"github.com/microshop/microshop/service"
)

// The same POST /purchases with one Idempotency-Key makes one purchase and
// gets the same answer, however many times and however concurrently it is
// sent; the key is the member's own, and reusing it for another good is a
// 422.
func TestIdempotentPurchase(t *testing.T) {
	f := newFixture(t, nil)
	tea, cake := f.newGood(t, "tea"), f.newGood(t, "cake")
	buy := func(user, good int64, key string) (int64, error) {
		res, err := call(t, f.routes, "POST/purchases", `{"userid":`+jsonInt(user)+`,"goodsid":`+jsonInt(good)+`,"idempotency_key":"`+key+`"}`)
		if err != nil {
			return 0, err
		}
		return res["id"].(int64), nil
	}
	ids := make([]int64, 12)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, err := buy(1, tea, "k-1")
			if err != nil {
				t.Errorf("POST /purchases #%d with key k-1: %v", i, err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	for i, id := range ids {
		if id != ids[0] {
			t.Fatalf("answers %v: #%d differs; want the same purchase id every time", ids, i)
		}
	}
	if list := f.list(t, 1); len(list) != 1 {
		t.Fatalf("member 1 has %d purchases after 12 with one key; want 1", len(list))
	}
	// Another member may use the same key; a new key is a new purchase.
	if _, err := buy(2, tea, "k-1"); err != nil {
		t.Fatal(err)
	}
	if id, err := buy(1, tea, "k-2"); err != nil || id == ids[0] {
		t.Fatalf("a new key = %d, %v; want a new purchase", id, err)
	}
	if _, err := buy(1, cake, "k-1"); err == nil {
		t.Fatal("key k-1 reused for another good: no error")
	} else if code, _ := service.ErrorCode(err); code != 422 {
		t.Fatalf("key k-1 reused for another good = %v; want 422", err)
	}
	var n int
	for _, u := range []int64{1, 2} {
		n += len(f.list(t, u))
	}
	if n != 3 {
		t.Fatalf("%d purchases in all; want 3", n)
	}
	// Without a key, as the book's clients buy, each is a purchase.
	f.buy(t, 3, tea)
	f.buy(t, 3, tea)
	if list := f.list(t, 3); len(list) != 2 {
		t.Fatalf("two purchases without a key gave %d; want 2", len(list))
	}
}

// TestConcurrentPurchasesExact: many purchases at once (batched by the
// group commit), with keys sent once or several times, make exactly one
// purchase per key, each answered with its own id, and the rankings count
// exactly those.
func TestConcurrentPurchasesExact(t *testing.T) {
	f := newFixture(t, nil)
	goods := []int64{f.newGood(t, "tea"), f.newGood(t, "cake"), f.newGood(t, "jam")}
	const members, keys, copies = 4, 30, 3
	type buy struct {
		user int64
		key  int
	}
	ids := make(map[buy][]int64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for u := range int64(members) {
		for k := range keys {
			for range copies {
				wg.Go(func() {
					good := goods[k%len(goods)]
					res, err := call(t, f.routes, "POST/purchases", `{"userid":`+jsonInt(u+1)+`,"goodsid":`+jsonInt(good)+`,"idempotency_key":"k-`+jsonInt(int64(k))+`"}`)
					if err != nil {
						t.Errorf("member %d key %d: %v", u+1, k, err)
						return
					}
					mu.Lock()
					ids[buy{u + 1, k}] = append(ids[buy{u + 1, k}], res["id"].(int64))
					mu.Unlock()
				})
			}
		}
	}
	wg.Wait()
	seen := map[int64]bool{}
	for b, list := range ids {
		for _, id := range list {
			if id != list[0] {
				t.Errorf("member %d key %d: ids %v; want one purchase", b.user, b.key, list)
			}
		}
		if seen[list[0]] {
			t.Errorf("purchase %d answered for two keys", list[0])
		}
		seen[list[0]] = true
	}
	var n int
	for u := range int64(members) {
		n += len(f.list(t, u+1))
	}
	if n != members*keys {
		t.Fatalf("%d purchases; want %d (one per member and key)", n, members*keys)
	}
	list, err := f.svc.Rankings(context.Background(), purchases.PeriodAll, 10)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, r := range list {
		if r.Sales != members*keys/int64(len(goods)) {
			t.Errorf("ranking %+v; want %d sales each", r, members*keys/len(goods))
		}
		total += r.Sales
	}
	if total != members*keys {
		t.Errorf("rankings count %d sales; want %d", total, members*keys)
	}
}

// TestConcurrentPurchasesSomeFail: purchases made at once, batched by the
// group commit and by the recording of their sales, some of which fail
// (an Idempotency-Key reused for another good, a good that does not exist,
// a repeated key), count in the rankings exactly the purchases made.
func TestConcurrentPurchasesSomeFail(t *testing.T) {
	f := newFixture(t, nil)
	tea, cake := f.newGood(t, "tea"), f.newGood(t, "cake")
	f.wantSameAsDB(t, "before", 10) // the views built, so that updates count
	buy := func(user, good int64, key string) error {
		_, err := call(t, f.routes, "POST/purchases", `{"userid":`+jsonInt(user)+`,"goodsid":`+jsonInt(good)+`,"idempotency_key":"`+key+`"}`)
		return err
	}
	if err := buy(1, tea, "used"); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k := "k-" + jsonInt(int64(i))
			var err error
			want := 0
			switch i % 4 {
			case 0: // made
				err = buy(2, cake, k)
			case 1: // the key of another good: 422
				err, want = buy(1, cake, "used"), 422
			case 2: // no such good: 404
				err, want = buy(2, cake+1000, k), 404
			case 3: // made, and made once more with the same key
				if err = buy(3, tea, k); err == nil {
					err = buy(3, tea, k)
				}
			}
			if code, _ := service.ErrorCode(err); (err == nil) != (want == 0) || err != nil && code != want {
				t.Errorf("purchase %d = %v; want status %d", i, err, want)
			}
		})
	}
	wg.Wait()
	f.wantSameAsDB(t, "after purchases some of which failed", 10)
	got := f.rankings(t, purchases.PeriodAll, 10)
	if len(got) != 2 || got[0].GoodsID != tea || got[0].Sales != 1+n/4 || got[1].Sales != n/4 {
		t.Fatalf("ranking = %+v; want tea %d, cake %d", got, 1+n/4, n/4)
	}
}
