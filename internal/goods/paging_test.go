package goods_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/goods"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// page runs GET /goods with params and returns the goods and the next
// cursor ("" when absent).
func (f *fixture) page(t testing.TB, params string) ([]catalog.Good, string) {
	t.Helper()
	res, err := f.call(t, "GET/goods", params)
	if err != nil {
		t.Fatalf("GET /goods %s: %v", params, err)
	}
	list, ok := res["results"].([]catalog.Good)
	if !ok {
		t.Fatalf("GET /goods %s = %#v; want results", params, res)
	}
	next, _ := res["next"].(string)
	if _, present := res["next"]; present && next == "" {
		t.Fatalf("GET /goods %s: next = %#v; want a non-empty string or no next", params, res["next"])
	}
	return list, next
}

func goodsIDs(list []catalog.Good) []int64 {
	out := make([]int64, len(list))
	for i, g := range list {
		out[i] = g.ID
	}
	return out
}

// Walking the pages while goods are added and deleted between them lists
// every good that exists throughout exactly once, in id order; a good
// deleted before the walk reaches it is not listed, one added meanwhile is.
func TestPagingWalk(t *testing.T) {
	f := newFixture(t)
	add := func(name string) int64 {
		return f.create(t, catalog.Good{Name: name, Price: 1})
	}
	live := map[int64]bool{}
	for i := range 45 {
		live[add(fmt.Sprint("g", i))] = true
	}
	// want is every id the walk must list: the goods that exist at its
	// end, plus those deleted after the walk had listed them.
	listed := map[int64]bool{}
	var walked []int64
	after, pages := "0", 0
	for {
		list, next := f.page(t, `{"limit":7,"after":"`+after+`"}`)
		pages++
		if len(list) > 7 {
			t.Fatalf("page %d: %d goods; want at most 7", pages, len(list))
		}
		for _, g := range list {
			listed[g.ID] = true
		}
		walked = append(walked, goodsIDs(list)...)
		if next == "" {
			break
		}
		if want := strconv.FormatInt(list[len(list)-1].ID, 10); next != want {
			t.Fatalf("page %d: next = %q; want the last id, %s", pages, next, want)
		}
		after = next
		cursor, _ := strconv.ParseInt(next, 10, 64)
		// Between pages: delete the first good after the cursor (the next
		// page's first), the first good (OFFSET paging would then skip
		// one) and now and then the good the cursor names; add one (it
		// gets an id above every other).
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
			if !live[id] {
				continue
			}
			if _, err := f.call(t, "DELETE/goods", `{"id":`+jsonInt(id)+`}`); err != nil {
				t.Fatalf("DELETE /goods?id=%d: %v", id, err)
			}
			delete(live, id)
		}
		if pages <= 5 {
			live[add(fmt.Sprint("new", pages))] = true
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
			want = append(want, id) // deleted after it was listed
		}
	}
	slices.Sort(want)
	if !slices.Equal(walked, want) {
		t.Fatalf("walk in %d pages listed %v;\nwant %v (each once, in id order; none deleted before it was reached)", pages, walked, want)
	}
	t.Logf("%d goods listed in %d pages", len(walked), pages)
}

func TestPagingDefaultsAndLimits(t *testing.T) {
	f := newFixture(t)
	var all []int64
	for i := range goods.MaxLimit + 10 {
		all = append(all, f.create(t, catalog.Good{Name: fmt.Sprint("g", i), Price: 1}))
	}
	// No paging parameter, as a book client sends (its key included): the
	// first DefaultLimit goods, and where to go on.
	list, next := f.page(t, `{"key":8}`)
	if !slices.Equal(goodsIDs(list), all[:goods.DefaultLimit]) || next != strconv.FormatInt(all[goods.DefaultLimit-1], 10) {
		t.Fatalf("GET /goods = %v next %q; want the first %d, next %d", goodsIDs(list), next, goods.DefaultLimit, all[goods.DefaultLimit-1])
	}
	// The largest page.
	list, next = f.page(t, `{"limit":`+strconv.Itoa(goods.MaxLimit)+`}`)
	if !slices.Equal(goodsIDs(list), all[:goods.MaxLimit]) || next == "" {
		t.Fatalf("GET /goods?limit=%d = %d goods next %q; want the first %d and a next", goods.MaxLimit, len(list), next, goods.MaxLimit)
	}
	// The rest: exactly 10, and no next (the end is known, not guessed).
	list, next = f.page(t, `{"limit":"`+strconv.Itoa(goods.MaxLimit)+`","after":"`+next+`"}`)
	if !slices.Equal(goodsIDs(list), all[goods.MaxLimit:]) || next != "" {
		t.Fatalf("last page = %v next %q; want %v and no next", goodsIDs(list), next, all[goods.MaxLimit:])
	}
	// A page that ends exactly at the last good has no next either.
	list, next = f.page(t, `{"limit":10,"after":`+jsonInt(all[goods.MaxLimit-1])+`}`)
	if len(list) != 10 || next != "" {
		t.Fatalf("exact last page = %d goods next %q; want 10 and no next", len(list), next)
	}
	// Past the end, and an empty after (a client that pasted an absent next).
	if list, next = f.page(t, `{"after":`+jsonInt(all[len(all)-1])+`}`); len(list) != 0 || next != "" {
		t.Fatalf("page after the last good = %v next %q; want none", list, next)
	}
	if list, _ = f.page(t, `{"after":""}`); len(list) != goods.DefaultLimit || list[0].ID != all[0] {
		t.Fatalf("after= (empty) = %v; want the first page", goodsIDs(list))
	}
	for _, tt := range []struct{ params, msg string }{
		{`{"limit":0}`, "limit must be from 1 to 50"},
		{`{"limit":-1}`, "limit must be from 1 to 50"},
		{`{"limit":51}`, "limit must be from 1 to 50"},
		{`{"limit":"many"}`, "limit must be an integer"},
		{`{"limit":2.5}`, "limit must be an integer"},
		{`{"after":-1}`, "after must not be negative: the next of the previous page, or 0 for the first page"},
		{`{"after":"x1"}`, "after must be an integer: the next of the previous page, or 0 for the first page"},
		{`{"after":[1]}`, "after must be an integer: the next of the previous page, or 0 for the first page"},
		{`{"after":99999999999999999999}`, "after must be an integer: the next of the previous page, or 0 for the first page"},
	} {
		_, err := f.call(t, "GET/goods", tt.params)
		wantCode(t, "GET /goods "+tt.params, err, 400, tt.msg)
	}
}

// worstText returns n characters that encoding/json and the framing write
// in 6 bytes each.
func worstText(n int) string {
	worst := []rune{'<', '>', '&', '\u2028', '\u2029', '¶'}
	var b strings.Builder
	for i := range n {
		b.WriteRune(worst[i%len(worst)])
	}
	return b.String()
}

// encodedAnswer is the answer packet the runtime writes for res, with the
// longest key a microshop gate sends.
func encodedAnswer(t testing.TB, res service.Result) []byte {
	t.Helper()
	body, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	return packet.AppendResponse(nil, json.RawMessage(strconv.FormatUint(math.MaxUint64, 10)), 0, "success", body)
}

// The largest page of the largest goods fits in the default packet, and
// MaxGoodBytes is an honest bound: goods built to be the worst take exactly
// it, but for the digits of their ids.
func TestWorstCasePage(t *testing.T) {
	f := newFixture(t)
	worst := catalog.Good{
		Name:        worstText(goods.MaxNameLen),
		Category:    worstText(goods.MaxCategoryLen),
		Description: worstText(goods.MaxDescriptionLen),
		Price:       goods.MaxPrice,
	}
	for range goods.MaxLimit + 1 {
		f.create(t, worst)
	}
	res, err := f.call(t, "GET/goods", `{"limit":`+strconv.Itoa(goods.MaxLimit)+`}`)
	if err != nil {
		t.Fatalf("GET /goods?limit=%d: %v", goods.MaxLimit, err)
	}
	list := res["results"].([]catalog.Good)
	if len(list) != goods.MaxLimit || res["next"] == nil {
		t.Fatalf("GET /goods?limit=%d = %d goods, next %v; want %d and a next", goods.MaxLimit, len(list), res["next"], goods.MaxLimit)
	}
	for _, g := range list {
		if g.Name != worst.Name || g.Description != worst.Description || g.Category != worst.Category {
			t.Fatalf("good %d did not round-trip through the database", g.ID)
		}
		b, _ := json.Marshal(g)
		got := len(packet.Escape(b)) + 1 // and its comma
		if want := goods.MaxGoodBytes - (19 - len(strconv.FormatInt(g.ID, 10))); got != want {
			t.Fatalf("good %d takes %d bytes; want MaxGoodBytes (%d) less the id's missing digits, %d", g.ID, got, goods.MaxGoodBytes, want)
		}
	}
	answer := encodedAnswer(t, res)
	if len(answer) > packet.DefaultMaxSize {
		t.Fatalf("the largest page of the largest goods is %d bytes; want at most %d", len(answer), packet.DefaultMaxSize)
	}
	// The same page with the largest ids and cursor there can be.
	for i := range list {
		list[i].ID = math.MaxInt64
	}
	res["next"] = strconv.FormatInt(math.MaxInt64, 10)
	worstAnswer := encodedAnswer(t, res)
	if len(worstAnswer) > packet.DefaultMaxSize || len(worstAnswer) < goods.MaxLimit*goods.MaxGoodBytes {
		t.Fatalf("the worst page is %d bytes; want from %d (MaxLimit × MaxGoodBytes) to %d", len(worstAnswer), goods.MaxLimit*goods.MaxGoodBytes, packet.DefaultMaxSize)
	}
	t.Logf("largest page: %d bytes as served, %d with 19-digit ids (packet limit %d)", len(answer), len(worstAnswer), packet.DefaultMaxSize)
}
