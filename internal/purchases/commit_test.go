package purchases

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

// TestBatchOutcomes runs one batch of the group commit: each insert gets
// its own outcome: an id, a duplicate key (another row of the batch, or an
// earlier one), and an insert that fails otherwise makes the batch fall
// back to inserting each on its own, the others still made once.
func TestBatchOutcomes(t *testing.T) {
	tbl := newTable(testenv.DB(t), nil)
	ctx := context.Background()
	first, _, err := tbl.insertOnce(ctx, 1, 5, time.Now(), "old")
	if err != nil {
		t.Fatal(err)
	}
	args := func(user, good int64, key string) []any {
		k := sql.NullString{String: key, Valid: key != ""}
		return []any{user, good, tbl.sql.dateArg(time.Now().UTC().Truncate(time.Millisecond)), k}
	}
	run := func(list ...[]any) []inserted {
		batch := make([]*pending, len(list))
		for i, a := range list {
			batch[i] = &pending{ctx: ctx, args: a, done: make(chan inserted, 1)}
		}
		tbl.batch.run(batch)
		out := make([]inserted, len(batch))
		for i, p := range batch {
			select {
			case out[i] = <-p.done:
			default:
				t.Fatalf("insert %d of the batch got no outcome", i)
			}
		}
		return out
	}
	out := run(args(1, 5, "a"), args(1, 5, "old"), args(1, 6, "a"), args(2, 5, "a"), args(1, 7, ""))
	for i, want := range []bool{false, true, true, false, false} {
		if dup := store.IsDuplicate(out[i].err); dup != want || (!dup && (out[i].err != nil || out[i].id <= first)) {
			t.Errorf("insert %d: %+v; want duplicate %v, else a new id", i, out[i], want)
		}
	}
	// A batch without duplicates (on MySQL one multi-row INSERT): each id
	// is its own row's.
	batch := [][]any{args(5, 1, "m1"), args(5, 2, ""), args(6, 3, "m1"), args(5, 4, "m2")}
	out = run(batch...)
	for i, r := range out {
		var user, good int64
		var key sql.NullString
		if r.err != nil {
			t.Fatalf("insert %d of a batch without duplicates: %v", i, r.err)
		}
		if err := tbl.db.QueryRowContext(ctx, `SELECT userid, goodsid, idem_key FROM purchases WHERE id = ?`, r.id).Scan(&user, &good, &key); err != nil {
			t.Fatalf("insert %d: id %d: %v", i, r.id, err)
		}
		if user != batch[i][0] || good != batch[i][1] || key != batch[i][3] {
			t.Errorf("insert %d: id %d holds member %d, good %d, key %v; want %v", i, r.id, user, good, key, batch[i])
		}
	}
	if tbl.db.Dialect == store.MySQL {
		var mode, step int64
		if err := tbl.db.QueryRowContext(ctx, `SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment`).Scan(&mode, &step); err != nil {
			t.Fatal(err)
		}
		if want := mode <= 1 && step == 1; (tbl.multi != nil) != want {
			t.Errorf("multi-row inserts %v with innodb_autoinc_lock_mode %d, auto_increment_increment %d; want %v", !want, mode, step, want)
		}
	}
	// One insert that fails (a NULL userid): the rest still go in, once.
	out = run(args(3, 5, "b"), []any{nil, 5, tbl.sql.dateArg(time.Now().UTC()), sql.NullString{}}, args(3, 6, "c"))
	if out[0].err != nil || out[1].err == nil || store.IsDuplicate(out[1].err) || out[2].err != nil {
		t.Errorf("a batch with a bad insert: %+v; want ids, an error, an id", out)
	}
	var n int
	if err := tbl.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM purchases`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 10 { // old, a (member 1), a (member 2), no key, four without duplicates, b, c
		t.Errorf("%d purchases; want 10", n)
	}
	// A cancelled caller's insert is not made.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p := &pending{ctx: cctx, args: args(4, 5, ""), done: make(chan inserted, 1)}
	tbl.batch.run([]*pending{p, {ctx: ctx, args: args(4, 6, ""), done: make(chan inserted, 1)}})
	if r := <-p.done; r.err == nil {
		t.Errorf("a cancelled insert: %+v; want its context's error", r)
	}
}
