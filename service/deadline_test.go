package service

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLazyDeadlineExpires(t *testing.T) {
	c := newLazyDeadline(20 * time.Millisecond)
	defer c.end()
	if d, ok := c.Deadline(); !ok || time.Until(d) > 20*time.Millisecond {
		t.Fatalf("Deadline() = %v, %v; want within 20ms, true", d, ok)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err() before the deadline = %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed 5s after a 20ms deadline")
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() after the deadline = %v; want DeadlineExceeded", c.Err())
	}
}

// A context derived from it is canceled with it, at its deadline or when it
// ends, and Done is already closed when it ended before anyone asked.
func TestLazyDeadlineCancelsDerived(t *testing.T) {
	c := newLazyDeadline(time.Hour)
	child, cancel := context.WithCancel(c)
	defer cancel()
	c.end()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a derived context was not canceled when the lazy one ended")
	}
	if !errors.Is(child.Err(), context.Canceled) {
		t.Fatalf("derived Err() = %v; want Canceled", child.Err())
	}

	unused := newLazyDeadline(time.Hour)
	unused.end()
	select {
	case <-unused.Done():
	default:
		t.Fatal("Done of a lazy context ended before use is not closed")
	}
	if !errors.Is(unused.Err(), context.Canceled) {
		t.Fatalf("Err() of a lazy context ended before use = %v; want Canceled", unused.Err())
	}
}

func BenchmarkHandlerContext(b *testing.B) {
	b.Run("WithTimeout", func(b *testing.B) {
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = ctx
			cancel()
		}
	})
	b.Run("lazy", func(b *testing.B) {
		for b.Loop() {
			c := newLazyDeadline(10 * time.Second)
			c.end()
		}
	})
}
