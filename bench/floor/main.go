// Command floor is the yardstick of scripts/bench.sh: the least a Go
// server on this machine can do to answer GET /goods?id=N from Redis — one
// process, net/http, and one go-redis GET per request — serving the very
// JSON that microshop's gate answers for the same request.
//
//	GET /goods?id=N   the bytes stored under PREFIX goods:N
//	GET /goods        the bytes stored under PREFIX goods:list
//
// Both answer 200 with the gate's Content-Type, or 404 when the key is
// missing. With --copy-from it first fills those keys with what a running
// gate answers (GET /goods?id=1..N and GET /goods), byte for byte, so the
// two are compared on the same bodies.
//
//	floor --addr 127.0.0.1:8100 --redis redis://127.0.0.1:6379/0 \
//	      --copy-from http://127.0.0.1:8000 --copy-goods 100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8100", "listen address")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379/0", "the Redis to read bodies from (redis:// URL)")
	prefix := flag.String("prefix", "microshop-floor:", "prefix of the keys of the bodies")
	copyFrom := flag.String("copy-from", "", "before serving, copy the answers of this gate (http://host:port) into Redis")
	copyGoods := flag.Int("copy-goods", 100, "with --copy-from: copy GET /goods?id=1..N")
	readyFile := flag.String("ready-file", "", "once listening (and copied), write the bound address here")
	flag.Parse()
	if err := run(*addr, *redisURL, *prefix, *copyFrom, *copyGoods, *readyFile); err != nil {
		log.Fatalf("floor: %v", err)
	}
}

func run(addr, redisURL, prefix, copyFrom string, copyGoods int, readyFile string) error {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("--redis: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", opt.Addr, err)
	}
	if copyFrom != "" {
		if err := copyAnswers(ctx, rdb, prefix, copyFrom, copyGoods); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(rdb, prefix), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if readyFile != "" {
		tmp := readyFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, readyFile); err != nil {
			return err
		}
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// handler answers GET /goods[?id=N] with one Redis GET.
func handler(rdb *redis.Client, prefix string) http.Handler {
	list := prefix + "goods:list"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/goods" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		key := list
		if id := r.URL.Query().Get("id"); id != "" {
			key = prefix + "goods:" + id
		}
		b, err := rdb.Get(r.Context(), key).Bytes()
		if errors.Is(err, redis.Nil) {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(b)
	})
}

// copyAnswers stores what the gate at base answers to GET /goods?id=1..n
// and GET /goods under the keys the handler reads.
func copyAnswers(ctx context.Context, rdb *redis.Client, prefix, base string, n int) error {
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) ([]byte, error) {
		resp, err := c.Get(base + path)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
		}
		return b, err
	}
	for id := 1; id <= n; id++ {
		b, err := get("/goods?id=" + strconv.Itoa(id))
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if err := rdb.Set(ctx, prefix+"goods:"+strconv.Itoa(id), b, 0).Err(); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
	}
	b, err := get("/goods")
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return rdb.Set(ctx, prefix+"goods:list", b, 0).Err()
}
