package cache

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/faultnet"
)

// frozenRedis is a miniredis behind a proxy whose connections the test can
// freeze, as a Redis host cut off or a frozen server would be.
func frozenRedis(t *testing.T) (*Cache, *faultnet.Listener) {
	t.Helper()
	m := miniredis.RunT(t)
	ln, err := faultnet.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Thaw(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", m.Addr())
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(r, c); r.Close() }()
			go func() { io.Copy(c, r); c.Close() }()
		}
	}()
	c, err := Open("redis://"+ln.Addr().String()+"/0", "t:", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, ln
}

// While Redis does not answer, only the first command waits for the
// client's timeout; the others fail at once with ErrUnavailable, and once
// Redis answers again a probe closes the breaker.
func TestBreaker(t *testing.T) {
	c, ln := frozenRedis(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ln.Freeze()
	start := time.Now()
	if err := c.Get(ctx, "k").Err(); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("first GET with Redis frozen = %v; want the client's own timeout error", err)
	}
	t.Logf("first GET failed after %v", time.Since(start).Round(time.Millisecond))
	for range 100 {
		if err := c.Get(ctx, "k").Err(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("GET right after a failure = %v; want ErrUnavailable, at once", err)
		}
	}
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "k"); return nil })
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pipeline right after a failure = %v; want ErrUnavailable", err)
	}
	ln.Thaw()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := c.Get(ctx, "k").Result()
		if err == nil && v == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET 10s after Redis came back = %q, %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A reply error (Redis answering) and a missing key never open it.
	c.Set(ctx, "s", "x", 0)
	for range 5 {
		c.HGet(ctx, "s", "f") // WRONGTYPE
		c.Get(ctx, "missing")
	}
	if err := c.Get(ctx, "k").Err(); err != nil {
		t.Fatalf("GET after reply errors = %v; want an answer", err)
	}
}
