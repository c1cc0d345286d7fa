package purchases

import (
	"context"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/testenv"
)

// TestDateRoundTrip stores dates through the engine's SQL and reads them
// back: in UTC, truncated (never rounded) to the millisecond.
func TestDateRoundTrip(t *testing.T) {
	tbl := newTable(testenv.DB(t), nil)
	ctx := context.Background()
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, time.UTC), "2024-02-29T23:59:59.999Z"},
		{time.Date(2024, 3, 1, 0, 30, 0, 0, paris), "2024-02-29T23:30:00.000Z"},
		{time.Date(2025, 1, 2, 3, 4, 5, 60_000_000, time.UTC), "2025-01-02T03:04:05.060Z"},
		{time.Date(1999, 12, 31, 23, 59, 59, 1_000_000, time.UTC), "1999-12-31T23:59:59.001Z"},
	}
	for _, tt := range tests {
		if _, err := tbl.insert(ctx, 1, 2, tt.in); err != nil {
			t.Fatalf("insert(%v): %v", tt.in, err)
		}
	}
	list, err := tbl.list(ctx, 1, 0, MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(tests) {
		t.Fatalf("list = %+v; want %d purchases", list, len(tests))
	}
	for i, tt := range tests {
		if list[i].Date != tt.want {
			t.Errorf("date of %v = %q; want %q", tt.in, list[i].Date, tt.want)
		}
	}
}
