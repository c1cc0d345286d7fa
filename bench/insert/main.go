// Command insert is the yardstick of POST /purchases in scripts/bench.sh:
// the raw insert rate of the database microshop records purchases in. It
// opens the database with internal/store (the same driver, the same
// connection settings and the same migrated schema as microshop), then
// runs --workers concurrent workers for --duration, each doing, in a loop,
// the very INSERT a purchase makes (internal/purchases, sql_sqlite.go and
// sql_mysql.go: on MySQL/MariaDB the INSERT ... SELECT that holds the
// rankings barrier shared), with a unique idempotency key each, as a
// purchase sent with an Idempotency-Key stores. It prints one line:
//
//	INSERT <inserts/s> <p50 ms> <p99 ms> <errors>
//
//	insert --db sqlite:/tmp/raw.db --workers 32 --duration 8s
//	insert --db 'mysql://root@tcp(127.0.0.1:3306)/raw' --duration 8s
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/microshop/microshop/internal/store"
)

// The statements of internal/purchases (dialect.insert on SQLite,
// dialect.shareBarrier on MySQL), and how each stores a date.
const (
	sqliteInsert = `INSERT INTO purchases (userid, goodsid, date, idem_key) VALUES (?, ?, ?, ?)`
	mysqlInsert  = `INSERT INTO purchases (userid, goodsid, date, idem_key) SELECT ?, ?, ?, ? FROM rankings_barrier WHERE id = 1 LOCK IN SHARE MODE`
	sqliteDate   = "2006-01-02T15:04:05.000Z"
)

func main() {
	dsn := flag.String("db", "", "the database: sqlite:PATH or mysql://user:pass@tcp(host:port)/db (created and migrated if new)")
	workers := flag.Int("workers", 32, "concurrent workers")
	duration := flag.Duration("duration", 8*time.Second, "how long to insert")
	warmup := flag.Duration("warmup", 0, "an unrecorded run first")
	drop := flag.Bool("drop", false, "instead, drop the MySQL/MariaDB database --db names (the bench's throwaway ones), and exit")
	flag.Parse()
	if *dsn == "" {
		log.Fatal("insert: --db is required")
	}
	if *drop {
		if err := dropDatabase(*dsn); err != nil {
			log.Fatalf("insert: --drop: %v", err)
		}
		return
	}
	if err := run(*dsn, *workers, *duration, *warmup); err != nil {
		log.Fatalf("insert: %v", err)
	}
}

func run(dsn string, workers int, duration, warmup time.Duration) error {
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	query := sqliteInsert
	dateArg := func(t time.Time) any { return t.UTC().Format(sqliteDate) }
	if db.Dialect == store.MySQL {
		query = mysqlInsert
		dateArg = func(t time.Time) any { return t.UTC() }
	}
	run := func(d time.Duration, round int) (n int, lat []time.Duration, errs int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		deadline := time.Now().Add(d)
		pid := strconv.Itoa(os.Getpid())
		for w := range workers {
			wg.Go(func() {
				var mine []time.Duration
				var bad int
				prefix := "raw-" + pid + "-" + strconv.Itoa(round) + "-" + strconv.Itoa(w) + "-"
				for i := 0; time.Now().Before(deadline); i++ {
					start := time.Now()
					at := dateArg(start.Truncate(time.Millisecond))
					_, err := db.ExecContext(ctx, query, int64(w+1), int64(i%100+1), at, prefix+strconv.Itoa(i))
					if err != nil {
						bad++
						continue
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				errs += bad
				mu.Unlock()
			})
		}
		wg.Wait()
		return len(lat), lat, errs
	}
	if warmup > 0 {
		run(warmup, 0)
	}
	start := time.Now()
	n, lat, errs := run(duration, 1)
	secs := time.Since(start).Seconds()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	fmt.Printf("INSERT %.1f %.2f %.2f %d\n", float64(n)/secs, pct(0.50), pct(0.99), errs)
	return nil
}

// dropDatabase drops the database of a mysql:// DSN, if it exists.
func dropDatabase(dsn string) error {
	cfg, err := mysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil || !strings.HasPrefix(dsn, "mysql://") || cfg.DBName == "" {
		return fmt.Errorf("want mysql://user:pass@tcp(host:port)/db, got %q", dsn)
	}
	name := cfg.DBName
	cfg.DBName = ""
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	_, err = db.Exec("DROP DATABASE IF EXISTS `" + strings.ReplaceAll(name, "`", "``") + "`")
	return err
}
