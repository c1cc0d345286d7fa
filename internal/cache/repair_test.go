package cache

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Fixes wait while Redis is down, run once it answers, and a later fix for
// a key replaces an earlier one.
func TestRepairs(t *testing.T) {
	m := miniredis.RunT(t)
	c, err := Open("redis://"+m.Addr()+"/0", "t:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m.Close() // Redis goes away

	r := NewRepairs(nil)
	r.Interval = 20 * time.Millisecond
	set := func(key, val string) func(context.Context) error {
		return func(ctx context.Context) error { return c.Set(ctx, c.Key(key), val, 0).Err() }
	}
	r.Add("a", set("a", "old"))
	r.Add("a", set("a", "new"))
	r.Add("b", set("b", "1"))
	time.Sleep(100 * time.Millisecond) // a few failing rounds
	if n := r.Pending(); n != 2 {
		t.Fatalf("%d fixes pending while Redis is down; want 2", n)
	}
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a hang guard only
		t.Fatalf("fixes still pending after Redis came back: %d", r.Pending())
	}
	if v, _ := m.Get("t:a"); v != "new" {
		t.Fatalf("t:a = %q; want the later fix's value, new", v)
	}
	if v, _ := m.Get("t:b"); v != "1" {
		t.Fatalf("t:b = %q; want 1", v)
	}
	// The worker ended; a new fix starts another.
	r.Add("c", set("c", "2"))
	r.Wait()
	if v, _ := m.Get("t:c"); v != "2" {
		t.Fatalf("t:c = %q; want 2", v)
	}
}
