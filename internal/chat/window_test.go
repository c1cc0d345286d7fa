package chat

import (
	"context"
	"errors"
	"testing"

	"github.com/microshop/microshop/internal/testenv"
)

// A rebuild under which the window vanishes (FLUSHALL) does not mark it
// built: what it read from the database may miss messages published
// meanwhile.
func TestRebuildRaced(t *testing.T) {
	c := testenv.Cache(t)
	w := window{c: c}
	ctx := context.Background()
	token, err := w.begin(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	testenv.FlushPrefix(t, c)
	if err := w.finish(ctx, "r", token, nil); !errors.Is(err, errRebuildRaced) {
		t.Fatalf("finish after the window vanished = %v; want errRebuildRaced", err)
	}
	if _, err := w.read(ctx, "r", 10); !errors.Is(err, errNotBuilt) {
		t.Fatalf("read = %v; want errNotBuilt", err)
	}
	token, _ = w.begin(ctx, "r")
	if err := w.finish(ctx, "r", token, nil); err != nil {
		t.Fatal(err)
	}
	if msgs, err := w.read(ctx, "r", 10); err != nil || len(msgs) != 0 {
		t.Fatalf("read of a built empty window = %v, %v", msgs, err)
	}
}
