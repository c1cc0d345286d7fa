package hosts

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
)

// StartRedis runs a private redis-server on h, port 6379, without
// persistence, and waits until it answers PING. It returns its URL. The
// server is the test's alone: FLUSHALL on it is fine.
func StartRedis(h *Host) string {
	t := h.net.t
	t.Helper()
	path := lookProgram(t, "redis-server", "redis-server")
	p := h.Start("redis-server", path, "--bind", h.IP.String(), "--port", "6379",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	addr := h.Addr(6379)
	deadline := time.Now().Add(startTimeout)
	for {
		err := pingRedis(addr)
		if err == nil {
			break
		}
		if p.Exited() {
			t.Fatalf("redis-server on %s exited (%v); output:\n%s", h.Name, p.Err(), p.LogTail(8<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s does not answer PING at %s after %v: %v", h.Name, addr, startTimeout, err)
		}
		time.Sleep(pollEvery)
	}
	return "redis://" + addr + "/0"
}

// pingRedis sends PING to the Redis at addr and expects +PONG.
func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// mariadbOptions are given to both mariadb-install-db and mariadbd: a small
// redo log (the template is copied for every test) and no durability to
// speak of (the data lives as long as the test).
var mariadbOptions = []string{
	"--innodb-log-file-size=16M",
	"--innodb-buffer-pool-size=64M",
	"--innodb-flush-log-at-trx-commit=0",
	"--skip-log-bin",
	"--skip-name-resolve", // no reverse DNS for clients (none answers inside a namespace)
}

// mariadbTemplatePattern names the template's directory in os.TempDir.
const mariadbTemplatePattern = "microshop-hosts-mariadb-*"

var (
	mariadbTemplateOnce sync.Once
	mariadbTemplateDir  string
	mariadbTemplateErr  error
)

// mariadbTemplate returns a data directory made by mariadb-install-db, once
// per run of the package (it takes about 2 s; a copy takes a fraction of
// that). TestMain removes it.
func mariadbTemplate(t testing.TB) string {
	t.Helper()
	install := lookProgram(t, "mariadb-install-db", "mariadb-server")
	mariadbTemplateOnce.Do(func() {
		dir, err := os.MkdirTemp("", mariadbTemplatePattern)
		if err != nil {
			mariadbTemplateErr = err
			return
		}
		mariadbTemplateDir = dir
		data := filepath.Join(dir, "data")
		// --no-defaults must come first; --auth-root-authentication-method=normal
		// makes root@localhost without a password (unused: mariadbd runs
		// with --skip-grant-tables, as the clients come from other hosts).
		args := append([]string{"--no-defaults", "--datadir=" + data, "--user=root",
			"--auth-root-authentication-method=normal", "--skip-test-db"}, mariadbOptions...)
		start := time.Now()
		out, err := exec.Command(install, args...).CombinedOutput()
		if err != nil {
			mariadbTemplateErr = fmt.Errorf("%s %s: %v\n%s", install, strings.Join(args, " "), err, out)
			return
		}
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "e2e/hosts: mariadb-install-db made the template data directory in %v\n", time.Since(start).Round(time.Millisecond))
		}
	})
	if mariadbTemplateErr != nil {
		t.Fatalf("install MariaDB's data directory: %v", mariadbTemplateErr)
	}
	return filepath.Join(mariadbTemplateDir, "data")
}

func removeMariaDBTemplate() {
	if mariadbTemplateDir != "" {
		os.RemoveAll(mariadbTemplateDir)
	}
}

// StartMariaDB runs a private MariaDB on h, port 3306 (a copy of the
// template data directory, no grant tables: anyone who reaches it is root),
// waits until it answers a query and returns microshop's DSN for it. The
// database microshop is created by the first microshop process that starts.
func StartMariaDB(h *Host) string {
	t := h.net.t
	t.Helper()
	mariadbd := lookProgram(t, "mariadbd", "mariadb-server")
	tmpl := mariadbTemplate(t)
	data := filepath.Join(h.net.TempDir(), "data")
	if err := os.CopyFS(data, os.DirFS(tmpl)); err != nil {
		t.Fatalf("copy MariaDB's template data directory: %v", err)
	}
	args := append([]string{"--no-defaults", "--datadir=" + data,
		"--socket=" + filepath.Join(data, "mysqld.sock"), "--pid-file=" + filepath.Join(data, "mysqld.pid"),
		"--port=3306", "--bind-address=" + h.IP.String(), "--user=root",
		"--skip-grant-tables", "--max-connections=1000"}, mariadbOptions...)
	p := h.Start("mariadbd", mariadbd, args...)
	addr := h.Addr(3306)
	db, err := sql.Open("mysql", "root@tcp("+addr+")/?timeout=1s&readTimeout=2s&writeTimeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		err := pingSQL(db)
		if err == nil {
			break
		}
		if p.Exited() {
			t.Fatalf("mariadbd on %s exited (%v); output:\n%s", h.Name, p.Err(), p.LogTail(8<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("MariaDB on %s does not answer at %s after %v: %v; output:\n%s", h.Name, addr, startTimeout, err, p.LogTail(8<<10))
		}
		time.Sleep(pollEvery)
	}
	return "mysql://root@tcp(" + addr + ")/microshop"
}

func pingSQL(db *sql.DB) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var one int
	return db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}
