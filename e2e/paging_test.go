package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paging constants of GET /goods, as the README documents them.
const (
	goodsDefaultLimit = 20
	goodsMaxLimit     = 50
)

// TestGoodsPaging seeds 2,000 goods with 2,000-character descriptions (the
// first 200 and one in four of the others of characters JSON writes in 6
// bytes, <>&…, the heaviest a good can be) and walks GET /goods through the gate, over two goods instances,
// with the default limit and with the largest: every page is a 200 and
// every good is listed exactly once, in id order, as it was added. (Before
// paging, such a list was over the 1 MiB packet limit from about 520 goods
// on, and the gate answered 504 after its timeout.) It runs alone, not in
// parallel: the seeding is heavy, and the fault tests time their faults.
func TestGoodsPaging(t *testing.T) {
	start := time.Now()
	f := newFleet(t, "")
	f.startDistributor()
	f.startGate()
	f.startService("goods")
	f.startService("goods")
	f.waitNodes(map[string]int{"gate": 1, "goods": 2})
	f.pollStatus("/goods", http.StatusOK, startTimeout)

	const n, workers = 2000, 16
	heavy := runes("<>&\u2028\u2029¶", 2000)
	light := runes("description of a good, ", 2000)
	type added struct {
		name, description string
	}
	want := make(map[int64]added, n)
	var mu sync.Mutex
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				g := added{name: fmt.Sprint("good ", i), description: light}
				if i < 200 || i%4 == 0 {
					g.description = heavy
				}
				body, _ := json.Marshal(map[string]any{"name": g.name, "category": "paging", "price": i, "description": g.description})
				a, err := f.request("POST", "/goods", "application/json", body)
				if err != nil || a.Status != http.StatusOK || a.ID == nil {
					t.Errorf("POST /goods %d: %v %v", i, a, err)
					continue
				}
				mu.Lock()
				want[*a.ID] = g
				mu.Unlock()
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seeded := time.Since(start)

	for _, limit := range []int{0, goodsMaxLimit} {
		walkStart := time.Now()
		path := "/goods"
		if limit > 0 {
			path += "?limit=" + strconv.Itoa(limit)
		}
		pageSize := max(limit, goodsDefaultLimit)
		seen := make(map[int64]bool, n)
		var last int64
		pages, largest := 0, 0
		for {
			a := f.get(t, path)
			expect(t, "GET "+path, a, http.StatusOK)
			pages++
			largest = max(largest, len(a.Body))
			gs := results[good](t, "GET "+path, a)
			var page struct {
				Next *string `json:"next"`
			}
			if err := json.Unmarshal(a.Body, &page); err != nil {
				t.Fatal(err)
			}
			if len(gs) > pageSize || (page.Next != nil && len(gs) != pageSize) {
				t.Fatalf("GET %s: %d goods, next %v; want %d a page until the last", path, len(gs), deref(page.Next), pageSize)
			}
			for _, g := range gs {
				w, ok := want[g.ID]
				switch {
				case !ok:
					t.Fatalf("GET %s: good %d was never added", path, g.ID)
				case seen[g.ID]:
					t.Fatalf("GET %s: good %d listed twice", path, g.ID)
				case g.ID <= last:
					t.Fatalf("GET %s: good %d after %d; want id order", path, g.ID, last)
				case g.Name != w.name || g.Description != w.description:
					t.Fatalf("GET %s: good %d is %q with a %d-character description; want %q and its description", path, g.ID, g.Name, len([]rune(g.Description)), w.name)
				}
				seen[g.ID], last = true, g.ID
			}
			if page.Next == nil {
				break
			}
			if *page.Next != strconv.FormatInt(last, 10) {
				t.Fatalf("GET %s: next %q; want the page's last id, %d", path, *page.Next, last)
			}
			path = "/goods?after=" + *page.Next
			if limit > 0 {
				path += "&limit=" + strconv.Itoa(limit)
			}
			if pages > n {
				t.Fatal("the walk does not end")
			}
		}
		if len(seen) != n {
			t.Fatalf("limit %d: %d goods listed in %d pages; want all %d", limit, len(seen), pages, n)
		}
		if wantPages := (n + pageSize - 1) / pageSize; pages != wantPages {
			t.Errorf("limit %d: %d pages; want %d", limit, pages, wantPages)
		}
		if largest > 1<<20 {
			t.Errorf("limit %d: the largest page is %d bytes; want at most the packet limit, %d", limit, largest, 1<<20)
		}
		t.Logf("limit %d (page of %d): %d goods in %d pages, all 200, in %v; largest page %d bytes",
			limit, pageSize, len(seen), pages, time.Since(walkStart).Round(time.Millisecond), largest)
	}

	for _, path := range []string{"/goods?limit=0", "/goods?limit=51", "/goods?limit=x", "/goods?after=-1", "/goods?after=abc"} {
		expect(t, "GET "+path, f.get(t, path), http.StatusBadRequest)
	}
	t.Logf("seeded %d goods in %v; whole test %v", n, seeded.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// runes returns n characters cycling through those of s.
func runes(s string, n int) string {
	rs := []rune(s)
	var b strings.Builder
	for i := range n {
		b.WriteRune(rs[i%len(rs)])
	}
	return b.String()
}
