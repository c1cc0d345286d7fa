// Package store opens microshop's SQL database, the system of record:
// embedded SQLite (sqlite:PATH) or MySQL/MariaDB (mysql://user:pass@tcp(host:3306)/db),
// with pooled connections and embedded migrations for both engines.
//
// Business packages own their SQL; this package only opens the database,
// migrates it and classifies driver errors.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names a SQL engine.
type Dialect string

// The supported engines.
const (
	SQLite Dialect = "sqlite"
	MySQL  Dialect = "mysql"
)

// DB is an open, migrated database.
type DB struct {
	*sql.DB
	Dialect Dialect
}

//go:embed migrations
var migrations embed.FS

// Open opens the database named by dsn ("sqlite:PATH" or "mysql://...") and
// applies pending migrations. A MySQL database that does not exist yet is
// created.
func Open(ctx context.Context, dsn string) (*DB, error) {
	var db *DB
	var err error
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		// Processes sharing a fresh file would race to switch it to WAL
		// and to migrate it: serialise opening and migrating.
		path := strings.TrimPrefix(dsn, "sqlite:")
		unlock, lerr := sqliteLock(ctx, path+".migrate-lock")
		if lerr != nil {
			return nil, fmt.Errorf("store: sqlite: %w", lerr)
		}
		defer unlock()
		db, err = openSQLite(path)
	case strings.HasPrefix(dsn, "mysql://"):
		db, err = openMySQL(ctx, strings.TrimPrefix(dsn, "mysql://"))
	default:
		return nil, fmt.Errorf("store: unsupported database %q: want sqlite:PATH or mysql://user:pass@tcp(host:port)/db", Redact(dsn))
	}
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func openSQLite(path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("store: sqlite: empty path")
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	sdb.SetMaxOpenConns(8)
	sdb.SetMaxIdleConns(8)
	if err := sdb.Ping(); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("store: sqlite %s: %w", path, err)
	}
	return &DB{DB: sdb, Dialect: SQLite}, nil
}

func openMySQL(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: mysql: bad DSN: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	// Placeholders are filled in by the driver (escaped for utf8mb4), so a
	// query is one round trip instead of prepare, execute and close.
	cfg.InterpolateParams = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	if err := createDatabase(ctx, cfg); err != nil {
		return nil, err
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: mysql: %w", err)
	}
	sdb := sql.OpenDB(conn)
	sdb.SetMaxOpenConns(32)
	sdb.SetMaxIdleConns(32)
	sdb.SetConnMaxLifetime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sdb.PingContext(pctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("store: mysql %s: %w", cfg.Addr, err)
	}
	return &DB{DB: sdb, Dialect: MySQL}, nil
}

// createDatabase creates cfg's database when it does not exist.
func createDatabase(ctx context.Context, cfg *mysql.Config) error {
	if cfg.DBName == "" {
		return errors.New("store: mysql: the DSN names no database (…/dbname)")
	}
	server := cfg.Clone()
	server.DBName = ""
	conn, err := mysql.NewConnector(server)
	if err != nil {
		return fmt.Errorf("store: mysql: %w", err)
	}
	sdb := sql.OpenDB(conn)
	defer sdb.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name := strings.ReplaceAll(cfg.DBName, "`", "``")
	if _, err := sdb.ExecContext(cctx, "CREATE DATABASE IF NOT EXISTS `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		return fmt.Errorf("store: mysql %s: create database: %w", cfg.Addr, err)
	}
	return nil
}

// migrate applies the embedded migrations of db's engine. On MySQL a named
// lock serialises processes that start at the same moment.
func (db *DB) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrations, "migrations/"+string(db.Dialect))
	if err != nil {
		return err
	}
	dialect := goose.DialectSQLite3
	if db.Dialect == MySQL {
		dialect = goose.DialectMySQL
		conn, err := db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("store: migrate: %w", err)
		}
		defer conn.Close()
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('microshop_migrate', 60)").Scan(&got); err != nil || got.Int64 != 1 {
			return fmt.Errorf("store: migrate: could not take the migration lock: %v", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK('microshop_migrate')")
	}
	// Out of order: a migration numbered below one already applied (branches
	// landing in another order) is applied rather than refused.
	p, err := goose.NewProvider(dialect, db.DB, sub, goose.WithAllowOutofOrder(true))
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
}

// sqliteLock takes an exclusive lock that serialises the migrations of
// processes sharing one SQLite file: an exclusive transaction on a small
// SQLite file of its own beside the database (portable, no flock), held
// until unlock is called.
func sqliteLock(ctx context.Context, path string) (unlock func(), err error) {
	ldb, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(60000)")
	if err != nil {
		return nil, err
	}
	ldb.SetMaxOpenConns(1)
	conn, err := ldb.Conn(ctx)
	if err != nil {
		ldb.Close()
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		conn.Close()
		ldb.Close()
		return nil, fmt.Errorf("take the migration lock %s: %w", path, err)
	}
	return func() {
		conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		conn.Close()
		ldb.Close()
	}, nil
}

// IsDuplicate reports whether err is a unique-key violation.
func IsDuplicate(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// Redact returns dsn with any password replaced by ***, for logs and errors.
func Redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return dsn
	}
	head := dsn[:at]
	if c := strings.Index(head, "://"); c >= 0 {
		if p := strings.Index(head[c+3:], ":"); p >= 0 {
			return head[:c+3+p] + ":***" + dsn[at:]
		}
	}
	return dsn
}
