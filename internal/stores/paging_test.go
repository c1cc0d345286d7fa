package stores_test

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/microshop/microshop/internal/stores"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
)

// The search is bounded, not paged (see the package comment): at the
// largest limit, with the largest stores (names of characters written in 6
// bytes each, coordinates of 24 characters), an answer from the view or
// from the database holds MaxLimit stores, each within MaxStoreBytes, and
// fits in the default packet with room to spare.
func TestWorstCasePage(t *testing.T) {
	db := testenv.DB(t)
	f := withCache(t, db, testenv.Cache(t))
	worst := []rune{'<', '>', '&', '\u2028', '\u2029', '¶', '\x01'}
	var name strings.Builder
	for i := range stores.MaxNameLength {
		name.WriteRune(worst[i%len(worst)])
	}
	const tiny = -1.2345678901234567e-100 // 24 characters in JSON
	for range stores.MaxLimit + 5 {
		f.add(t, name.String(), tiny, tiny)
	}
	for _, tc := range []struct {
		what string
		f    *fixture
	}{{"view", f}, {"database", withCache(t, db, deadCache(t))}} {
		params := map[string]any{"longitude": 0, "latitude": 0, "radius": stores.MaxRadius, "limit": stores.MaxLimit}
		res := tc.f.must(t, "GET/stores", params)
		found := res["results"].([]stores.Store)
		if len(found) != stores.MaxLimit {
			t.Fatalf("%s: %d stores; want %d", tc.what, len(found), stores.MaxLimit)
		}
		for _, s := range found {
			if s.Name != name.String() || s.Longitude != tiny || s.Latitude != tiny {
				t.Fatalf("%s: store %d did not round-trip: %+v", tc.what, s.ID, s)
			}
			b, _ := json.Marshal(s)
			if got := len(packet.Escape(b)) + 1; got > stores.MaxStoreBytes {
				t.Fatalf("%s: store %s takes %d bytes; want at most MaxStoreBytes, %d", tc.what, b, got, stores.MaxStoreBytes)
			}
		}
		// The same answer with the largest ids and distances there can be.
		for i := range found {
			found[i].ID, found[i].Distance = math.MaxInt64, -1.2345678901234567e-100
		}
		body, _ := json.Marshal(res)
		answer := packet.AppendResponse(nil, json.RawMessage(strconv.FormatUint(math.MaxUint64, 10)), 0, "success", body)
		if len(answer) > packet.DefaultMaxSize/8 || len(answer) < stores.MaxLimit*(stores.MaxStoreBytes-30) {
			t.Fatalf("%s: the worst answer is %d bytes; want about MaxLimit × MaxStoreBytes (%d), far under the packet limit", tc.what, len(answer), stores.MaxLimit*stores.MaxStoreBytes)
		}
		t.Logf("%s: worst answer %d bytes (packet limit %d)", tc.what, len(answer), packet.DefaultMaxSize)
	}
}
