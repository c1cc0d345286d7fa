package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
)

func TestOpenMigratesAndDetectsDuplicates(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "INSERT INTO members (username, password) VALUES (?, ?)", "kim", "x"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	_, err := db.ExecContext(ctx, "INSERT INTO members (username, password) VALUES (?, ?)", "kim", "y")
	if !store.IsDuplicate(err) {
		t.Fatalf("second insert err = %v; want a duplicate-key error", err)
	}
	// Opening again (as a second process would) must find nothing to do.
	if _, err := db.ExecContext(ctx, "SELECT 1 FROM goods"); err != nil {
		t.Fatalf("goods table missing: %v", err)
	}
}

func TestOpenRejectsUnknownScheme(t *testing.T) {
	_, err := store.Open(context.Background(), "postgres://u:secret@h/db")
	if err == nil {
		t.Fatal("Open(postgres://...) = nil error; want an error")
	}
	if got := err.Error(); strings.Contains(got, "secret") {
		t.Fatalf("error leaks the password: %q", got)
	}
}

func TestRedact(t *testing.T) {
	if got, want := store.Redact("mysql://root:pw@tcp(h:3306)/db"), "mysql://root:***@tcp(h:3306)/db"; got != want {
		t.Fatalf("Redact = %q; want %q", got, want)
	}
}

// The book's processes write the shared tables with their own statements:
// goods with its four columns, members with two, and purchases with userid
// and goodsid only, the date taken from its default.
func TestTheBooksInsertsWork(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	for _, q := range []string{
		"insert into goods(name, category, price, description) values('tea', 'drinks', 300, 'green')",
		"insert into members(username, password) values('u1', '*0123456789ABCDEF0123456789ABCDEF01234567')",
		"insert into purchases(userid, goodsid) values(1, 1)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var date string
	if err := db.QueryRowContext(ctx, "SELECT date FROM purchases WHERE userid = 1").Scan(&date); err != nil || len(date) < 19 || !strings.HasPrefix(date, "20") {
		t.Fatalf("the defaulted date = %q, %v; want the time of the insert", date, err)
	}
}
