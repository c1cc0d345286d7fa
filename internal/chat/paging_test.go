package chat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/chat"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// page runs GET /chat/history with params and returns the answer, its
// messages and its next cursor ("" when absent).
func (f *fixture) page(t testing.TB, params map[string]any) (service.Result, []chat.Message, string) {
	t.Helper()
	res, err := f.call("GET/chat/history", params)
	if err != nil {
		t.Fatalf("GET /chat/history %v: %v", params, err)
	}
	msgs, ok := res["results"].([]chat.Message)
	if !ok {
		t.Fatalf("GET /chat/history %v = %#v; want results", params, res)
	}
	next, _ := res["next"].(string)
	if _, present := res["next"]; present && next == "" {
		t.Fatalf("GET /chat/history %v: next = %#v; want a non-empty string or no next", params, res["next"])
	}
	if !slices.IsSortedFunc(msgs, func(a, b chat.Message) int { return int(a.ID - b.ID) }) {
		t.Fatalf("GET /chat/history %v: %v not oldest first", params, ids(msgs))
	}
	return res, msgs, next
}

// walkBack reads room's history from its latest page back to its first,
// limit at a time, calling between (when set) after each page with the
// cursor of the next one. It returns every message read, oldest first, and
// the number of pages.
func (f *fixture) walkBack(t testing.TB, room string, limit int, between func(before int64)) ([]chat.Message, int) {
	t.Helper()
	var pages [][]chat.Message
	params := map[string]any{"room": room, "limit": limit}
	for {
		_, msgs, next := f.page(t, params)
		if len(msgs) > limit {
			t.Fatalf("page %d: %d messages; want at most %d", len(pages)+1, len(msgs), limit)
		}
		pages = append(pages, msgs)
		if next == "" {
			break
		}
		if want := strconv.FormatInt(msgs[0].ID, 10); next != want {
			t.Fatalf("page %d: next = %q; want its oldest id, %s", len(pages), next, want)
		}
		if len(pages) > 200 {
			t.Fatal("the walk does not end")
		}
		before, _ := strconv.ParseInt(next, 10, 64)
		if between != nil {
			between(before)
		}
		params = map[string]any{"room": room, "limit": strconv.Itoa(limit), "before": next}
	}
	var all []chat.Message
	for i := len(pages) - 1; i >= 0; i-- {
		all = append(all, pages[i]...)
	}
	return all, len(pages)
}

// Walking back through a room's history while messages are posted (to it
// and to others) and removed between pages lists every message older than
// the first page's newest exactly once, oldest first, whether the first
// page comes from the window, a rebuild or the database (Redis down).
func TestHistoryWalkBack(t *testing.T) {
	db := testenv.DB(t)
	f := withCache(t, db, testenv.Cache(t))
	down, err := cache.Open("redis://127.0.0.1:1/0", "x:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	live := map[int64]bool{}
	for i := range 130 {
		live[f.post(t, "walk", "u", fmt.Sprint("m", i))] = true
		if i%4 == 0 {
			f.post(t, "other", "u", "elsewhere")
		}
	}
	for _, tc := range []struct {
		name   string
		reader *fixture
		before func()
	}{
		{"window", f, nil},
		{"rebuild", f, func() { f.flush(t) }},
		{"redis down", withCache(t, db, down), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			newest := int64(0)
			for id := range live {
				newest = max(newest, id)
			}
			listed := map[int64]bool{}
			all, pages := tc.reader.walkBack(t, "walk", 17, func(before int64) {
				// Between pages: post newer messages (after the walk's
				// start, so not in it), and remove the next page's newest
				// and now and then the message the cursor names.
				live[f.post(t, "walk", "u", "late")] = true
				f.post(t, "other", "u", "late elsewhere")
				ahead := int64(0)
				for id := range live {
					if id < before {
						ahead = max(ahead, id)
					}
				}
				doomed := []int64{ahead}
				if before%2 == 0 { // and now and then the cursor's own
					doomed = append(doomed, before)
				}
				for _, id := range doomed {
					if _, err := db.ExecContext(context.Background(), "DELETE FROM chat_messages WHERE id = ?", id); err != nil {
						t.Fatal(err)
					}
					delete(live, id)
				}
			})
			for _, m := range all {
				listed[m.ID] = true
				if m.Room != "walk" {
					t.Fatalf("message %d of room %q in the walk of room walk", m.ID, m.Room)
				}
			}
			var want []int64
			for id := range live {
				if id <= newest {
					want = append(want, id)
				}
			}
			for id := range listed {
				if !live[id] {
					want = append(want, id) // removed after it was listed
				}
			}
			slices.Sort(want)
			if got := ids(all); !slices.Equal(got, want) {
				t.Fatalf("walk in %d pages listed %v;\nwant %v (each once, oldest first; none removed before it was reached)", pages, got, want)
			}
			t.Logf("%d messages in %d pages", len(all), pages)
		})
	}
}

func TestHistoryPageLimits(t *testing.T) {
	f := setup(t)
	var all []int64
	for i := range chat.WindowSize + 20 {
		all = append(all, f.post(t, "r", "u", fmt.Sprint("m", i)))
	}
	f.history(t, "r", 0) // a room's first read builds its window
	// No paging parameter: the latest DefaultHistory, and where to go on.
	res, msgs, next := f.page(t, map[string]any{"room": "r"})
	if !slices.Equal(ids(msgs), all[len(all)-chat.DefaultHistory:]) || next != strconv.FormatInt(msgs[0].ID, 10) || res["source"] != "window" {
		t.Fatalf("default history = %d messages next %q source %v; want the last %d, a next, the window", len(msgs), next, res["source"], chat.DefaultHistory)
	}
	// The largest page from the window: it may not know what is older, so
	// it says there may be more; the database says what there is.
	_, msgs, next = f.page(t, map[string]any{"room": "r", "limit": chat.MaxHistory})
	if !slices.Equal(ids(msgs), all[len(all)-chat.MaxHistory:]) || next == "" {
		t.Fatalf("history of %d = %d messages next %q; want the last %d and a next", chat.MaxHistory, len(msgs), next, chat.MaxHistory)
	}
	res, msgs, next = f.page(t, map[string]any{"room": "r", "limit": chat.MaxHistory, "before": next})
	if !slices.Equal(ids(msgs), all[:len(all)-chat.MaxHistory]) || next != "" || res["source"] != "database" {
		t.Fatalf("older page = %v next %q source %v; want the first 20, no next, the database", ids(msgs), next, res["source"])
	}
	// A page that ends exactly at the first message has no next.
	if _, msgs, next = f.page(t, map[string]any{"room": "r", "limit": 10, "before": fmt.Sprint(all[10])}); len(msgs) != 10 || next != "" {
		t.Fatalf("exact first page = %v next %q; want 10 and no next", ids(msgs), next)
	}
	if _, msgs, next = f.page(t, map[string]any{"room": "r", "before": fmt.Sprint(all[0])}); len(msgs) != 0 || next != "" {
		t.Fatalf("before the first message = %v next %q; want none", ids(msgs), next)
	}
	// A small room: everything, and no next.
	a, b := f.post(t, "small", "u", "a"), f.post(t, "small", "u", "b")
	for _, limit := range []int{2, 3, chat.MaxHistory} {
		if _, msgs, next = f.page(t, map[string]any{"room": "small", "limit": limit}); !slices.Equal(ids(msgs), []int64{a, b}) || next != "" {
			t.Fatalf("small room, limit %d = %v next %q; want [%d %d] and no next", limit, ids(msgs), next, a, b)
		}
	}
	for _, tc := range []struct {
		params map[string]any
		msg    string
	}{
		{map[string]any{"room": "r", "limit": 0}, "limit must be from 1 to 500"},
		{map[string]any{"room": "r", "limit": 501}, "limit must be from 1 to 500"},
		{map[string]any{"room": "r", "before": -1}, "before must not be negative: the next of the previous page, or 0 for the latest messages"},
		{map[string]any{"room": "r", "before": "yesterday"}, "before must be an integer: the next of the previous page, or 0 for the latest messages"},
		{map[string]any{"room": "r", "before": 1.5}, "before must be an integer: the next of the previous page, or 0 for the latest messages"},
	} {
		_, err := f.call("GET/chat/history", tc.params)
		if _, msg := service.ErrorCode(err); code(err) != 400 || msg != tc.msg {
			t.Fatalf("GET /chat/history %v = %v; want 400 %q", tc.params, err, tc.msg)
		}
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

// A history page of the largest messages, at the largest limit, fits in
// the default packet (it holds fewer messages, and says where to go on),
// from the window and from the database; MaxMessageBytes is an honest
// bound: such messages take exactly it, but for the digits of their id and
// time.
func TestHistoryWorstCasePage(t *testing.T) {
	f := setup(t)
	// The longest message is a member's: the largest id as user, and a
	// username of 64 four-byte letters as name.
	const member = 1<<53 - 1
	room, user, name := strings.Repeat("R", 64), strconv.FormatInt(member, 10), strings.Repeat("𐐀", chat.MaxNameLen)
	f.members.set(member, name)
	text := worstText(chat.MaxTextLen)
	const n = chat.WindowSize + 30
	for range n {
		f.postAs(t, member, room, text)
	}
	check := func(what string, params map[string]any) []chat.Message {
		t.Helper()
		res, msgs, next := f.page(t, params)
		if len(msgs) != chat.HistoryBytes/chat.MaxMessageBytes || next == "" {
			t.Fatalf("%s: %d messages next %q; want %d (HistoryBytes / MaxMessageBytes) and a next", what, len(msgs), next, chat.HistoryBytes/chat.MaxMessageBytes)
		}
		for _, m := range msgs {
			if m.Text != text || m.User != user || m.Name != name || m.Room != room {
				t.Fatalf("%s: message %d did not round-trip", what, m.ID)
			}
			b, _ := json.Marshal(m)
			got := len(packet.Escape(b)) + 1 // and its comma
			missing := 19 - len(strconv.FormatInt(m.ID, 10)) + 30 - len(m.Time.Format(time.RFC3339Nano))
			if want := chat.MaxMessageBytes - missing; got != want {
				t.Fatalf("%s: message %d takes %d bytes; want MaxMessageBytes (%d) less the missing digits of its id and time, %d", what, m.ID, got, chat.MaxMessageBytes, want)
			}
		}
		if answer := encodedAnswer(t, res); len(answer) > packet.DefaultMaxSize {
			t.Fatalf("%s: the page is %d bytes; want at most %d", what, len(answer), packet.DefaultMaxSize)
		} else {
			t.Logf("%s: %d messages, %d bytes (packet limit %d)", what, len(msgs), len(answer), packet.DefaultMaxSize)
		}
		// The same page with the largest ids and times there can be.
		for i := range msgs {
			msgs[i].ID = math.MaxInt64
			msgs[i].Time = time.Date(2026, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
		}
		res["next"] = strconv.FormatInt(math.MaxInt64, 10)
		if worst := encodedAnswer(t, res); len(worst) > packet.DefaultMaxSize || len(worst) < len(msgs)*chat.MaxMessageBytes {
			t.Fatalf("%s: the worst page is %d bytes; want from %d to %d", what, len(worst), len(msgs)*chat.MaxMessageBytes, packet.DefaultMaxSize)
		}
		return msgs
	}
	check("window", map[string]any{"room": room, "limit": chat.MaxHistory})
	f.flush(t)
	check("rebuild", map[string]any{"room": room, "limit": chat.MaxHistory})
	check("database", map[string]any{"room": room, "limit": chat.MaxHistory, "before": math.MaxInt64})
	// Every message, in pages cut by size.
	all, pages := f.walkBack(t, room, chat.MaxHistory, nil)
	per := chat.HistoryBytes / chat.MaxMessageBytes
	if len(all) != n || pages != (n+per-1)/per {
		t.Fatalf("walk = %d messages in %d pages; want %d in %d", len(all), pages, n, (n+per-1)/per)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatalf("walk: message %d after %d", all[i].ID, all[i-1].ID)
		}
	}
}
