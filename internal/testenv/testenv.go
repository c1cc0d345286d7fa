// Package testenv gives tests the shared resources of a microshop fleet:
// a database and a Redis. By default they are embedded (a SQLite file in the
// test's temporary directory, miniredis); with MICROSHOP_TEST_MYSQL and
// MICROSHOP_TEST_REDIS set they are real servers, each test getting a fresh
// MySQL database and its own Redis key prefix. With
// MICROSHOP_TEST_REQUIRE_SERVERS=1 an unreachable server fails the test
// instead of skipping it.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/store"
)

// Environment variables read by this package.
const (
	EnvMySQL          = "MICROSHOP_TEST_MYSQL"           // e.g. mysql://root@tcp(127.0.0.1:3306)/
	EnvRedis          = "MICROSHOP_TEST_REDIS"           // e.g. redis://127.0.0.1:6379/0
	EnvRequireServers = "MICROSHOP_TEST_REQUIRE_SERVERS" // "1": unreachable servers fail tests
)

// RandomName returns a short random lowercase hex name with the given prefix.
func RandomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func unreachable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv(EnvRequireServers) == "1" {
		t.Fatalf("%s not reachable (and %s=1): %v", what, EnvRequireServers, err)
	}
	t.Skipf("%s not reachable: %v", what, err)
}

// DSN returns a database DSN for one test: a fresh MySQL database (dropped
// when the test ends) when MICROSHOP_TEST_MYSQL is set, otherwise a SQLite
// file in t.TempDir(). The database is created but not migrated.
func DSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvMySQL)
	if base == "" {
		return "sqlite:" + filepath.Join(t.TempDir(), "microshop.db")
	}
	cfg, err := mysql.ParseDSN(strings.TrimPrefix(base, "mysql://"))
	if err != nil {
		t.Fatalf("%s: %v", EnvMySQL, err)
	}
	cfg.DBName = ""
	cfg.Timeout = 5 * time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatalf("%s: %v", EnvMySQL, err)
	}
	admin := sql.OpenDB(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		unreachable(t, "MySQL", err)
	}
	name := RandomName("mstest_")
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		admin.Close()
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name)
		admin.Close()
	})
	cfg.DBName = name
	return "mysql://" + cfg.FormatDSN()
}

// DB opens and migrates a fresh database for one test (see DSN).
func DB(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), DSN(t))
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// RedisURL returns the Redis for one test: the real one named by
// MICROSHOP_TEST_REDIS, or a fresh embedded one. real tells which.
// The embedded server is stopped when the test ends.
func RedisURL(t testing.TB) (url string, real bool) {
	t.Helper()
	if u := os.Getenv(EnvRedis); u != "" {
		c, err := cache.Open(u, "", nil)
		if err != nil {
			t.Fatalf("%s: %v", EnvRedis, err)
		}
		defer c.Close()
		if err := c.Ping(context.Background(), 3*time.Second); err != nil {
			unreachable(t, "Redis", err)
		}
		return u, true
	}
	e, err := cache.StartEmbedded("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.URL(), false
}

// Cache returns a Redis client for one test with a key prefix of its own,
// so tests sharing a real Redis never see each other's keys.
func Cache(t testing.TB) *cache.Cache {
	t.Helper()
	url, _ := RedisURL(t)
	c, err := cache.Open(url, RandomName("mstest:")+":", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// FlushPrefix deletes every key of c's prefix: the test-safe FLUSHALL.
func FlushPrefix(t testing.TB, c *cache.Cache) {
	t.Helper()
	if _, err := DeleteKeys(context.Background(), c.UniversalClient, c.Prefix); err != nil {
		t.Fatalf("flush %s*: %v", c.Prefix, err)
	}
}

// DeleteKeys deletes every key that starts with prefix (a prefix without
// glob characters) and returns how many it deleted. On a Redis Cluster it
// scans every master: a SCAN sees one node's keys only.
func DeleteKeys(ctx context.Context, c redis.UniversalClient, prefix string) (int, error) {
	var n atomic.Int64
	del := func(ctx context.Context, node redis.Cmdable) error {
		iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := node.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
			n.Add(1)
		}
		return iter.Err()
	}
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return del(ctx, node) })
	} else {
		err = del(ctx, c)
	}
	return int(n.Load()), err
}

// SyncBuffer is a bytes.Buffer that a logger (or a process's output) and a
// test may use at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// SpreadGoodsIDs makes the next goods of db take ids from a random start
// above a billion, and returns the start. Tests of the book's cache format,
// whose keys are bare ids without a prefix, call it so that tests sharing
// one Redis (or one Redis Cluster, which has no database numbers) do not
// read each other's goods.
func SpreadGoodsIDs(t testing.TB, db *store.DB) int64 {
	t.Helper()
	start := 1_000_000_000 + mrand.Int64N(1_000_000)*1000
	var q string
	switch db.Dialect {
	case store.MySQL:
		q = fmt.Sprintf("ALTER TABLE goods AUTO_INCREMENT = %d", start)
	default:
		q = fmt.Sprintf("INSERT INTO sqlite_sequence(name, seq) VALUES('goods', %d)", start-1)
	}
	if _, err := db.ExecContext(context.Background(), q); err != nil {
		t.Fatalf("spread goods ids: %v", err)
	}
	return start
}
