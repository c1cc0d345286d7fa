package catalog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// goodsService answers GET /goods for ids 1..9 (named "g<id>"); others are
// unknown. With down set it cannot be reached.
type goodsService struct {
	calls atomic.Int32
	down  bool
}

func (g *goodsService) Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error) {
	g.calls.Add(1)
	if g.down {
		return nil, packet.ErrClosed
	}
	var p struct{ ID int64 }
	json.Unmarshal(params, &p)
	var framed []byte
	if p.ID >= 1 && p.ID <= 9 {
		body, _ := json.Marshal(map[string]any{"results": []catalog.Good{{ID: p.ID, Name: fmt.Sprintf("g%d", p.ID)}}})
		framed = packet.AppendResponse(nil, json.RawMessage("1"), 0, "success", body)
	} else {
		framed = packet.AppendResponse(nil, json.RawMessage("1"), 404, "not found", nil)
	}
	return packet.Decode(framed[:len(framed)-len(packet.Separator)])
}

func TestFindMany(t *testing.T) {
	ctx := context.Background()
	c := testenv.Cache(t)
	catalog.OwnEntries(c).Put(ctx, catalog.Good{ID: 2, Name: "cached2"})
	catalog.OwnEntries(c).Put(ctx, catalog.Good{ID: 5, Name: "cached5"})
	c.Set(ctx, catalog.OwnEntries(c).Key(3), "not json", 0) // a corrupt entry is a miss

	goods, found, err := catalog.OwnEntries(c).GetMany(ctx, []int64{5, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(found) != "[true false true false]" || goods[0].Name != "cached5" || goods[2].Name != "cached2" {
		t.Fatalf("GetMany = %+v, %v; want 5 and 2 from the cache", goods, found)
	}

	svc := &goodsService{}
	l := catalog.Lookup{Cache: catalog.OwnEntries(c), Caller: svc}
	got, err := l.FindMany(ctx, []int64{5, 1, 42, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, fmt.Sprintf("%d:%s", g.ID, g.Name))
	}
	if fmt.Sprint(names) != "[5:cached5 1:g1 0: 2:cached2 3:g3]" || svc.calls.Load() != 3 {
		t.Fatalf("FindMany = %v after %d calls; want [5:cached5 1:g1 0: 2:cached2 3:g3] after 3", names, svc.calls.Load())
	}
	// The misses refilled the cache.
	if g, err := catalog.OwnEntries(c).Get(ctx, 1); err != nil || g.Name != "g1" {
		t.Fatalf("Get(1) after FindMany = %+v, %v; want g1", g, err)
	}

	// A goods service that cannot answer is a 503 for a miss only.
	svc.down = true
	if _, err := l.FindMany(ctx, []int64{5, 1}); err != nil {
		t.Fatalf("FindMany of cached goods with goods down: %v", err)
	}
	_, err = l.FindMany(ctx, []int64{5, 7})
	if code, _ := service.ErrorCode(err); code != 503 {
		t.Fatalf("FindMany with goods down and a miss: %v; want 503", err)
	}
	if got, err := l.FindMany(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("FindMany(nil) = %v, %v", got, err)
	}
}
