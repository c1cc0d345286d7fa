package e2e

import (
	"bytes"
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/microshop/microshop/internal/store"
)

// This file holds Go fakes of the book's Node.js processes: its goods,
// members and purchases services (built on its server.js) and its gate
// (gate.js). They behave as the book's code does, over real TCP sockets,
// against the test database and Redis, so that the book's JavaScript need
// not be part of the repository. (startFakeBookDistributor, in
// book_test.go, is the book's distributor.)

// bookURLs are the routes each of the book's services registers.
var bookURLs = map[string][]string{
	"goods":     {"POST/goods", "GET/goods", "DELETE/goods"},
	"members":   {"POST/members", "GET/members", "DELETE/members"},
	"purchases": {"POST/purchases", "GET/purchases"},
}

// bookCallTimeout bounds each database or Redis operation of a fake.
const bookCallTimeout = 5 * time.Second

// bookService is one of the book's services: a TCP server that registers
// with a distributor (never heartbeating, ignoring the lists it is pushed)
// and answers requests in any order, many per connection, by the key it
// finds in params.key (or at the top level).
type bookService struct {
	name string
	ln   net.Listener
	port int
	db   *store.DB
	rdb  redis.UniversalClient

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  []net.Conn
	served map[string]int                          // requests answered, by "METHOD/uri"
	params map[string][]map[string]json.RawMessage // the params of every request, by "METHOD/uri"
}

// startBookService starts the book's service name (goods, members or
// purchases) on a free loopback port, over db and rdb (a client without
// key prefix: the book's keys are bare). With distAddr it registers there as
// the book's server.js does; without, it only listens. It stops when the
// test ends.
func startBookService(t *testing.T, name string, db *store.DB, rdb redis.UniversalClient, distAddr string) *bookService {
	t.Helper()
	if bookURLs[name] == nil {
		t.Fatalf("the book has no service %q", name)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &bookService{name: name, ln: ln, port: ln.Addr().(*net.TCPAddr).Port, db: db, rdb: rdb,
		served: map[string]int{}, params: map[string][]map[string]json.RawMessage{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	t.Cleanup(s.close)
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !s.track(c) {
				return
			}
			s.wg.Go(func() { s.serve(c) })
		}
	})
	if distAddr != "" {
		s.register(t, distAddr)
	}
	return s
}

// addr is where the service listens.
func (s *bookService) addr() string { return s.ln.Addr().String() }

// track records c so that close closes it; false when already closed.
func (s *bookService) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns = append(s.conns, c)
	return true
}

// register connects to the distributor and sends the book's registration,
// then reads (and ignores) the lists the distributor pushes.
func (s *bookService) register(t *testing.T, distAddr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", distAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("the book's %s: connect to the distributor %s: %v", s.name, distAddr, err)
	}
	if !s.track(c) {
		t.Fatalf("the book's %s closed while registering", s.name)
	}
	urls, _ := json.Marshal(bookURLs[s.name])
	reg := `{"uri":"/distributes","method":"POST","key":0,"params":{"port":` + strconv.Itoa(s.port) + `,"name":"` + s.name + `","urls":` + string(urls) + `}}¶`
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, reg); err != nil {
		t.Fatalf("the book's %s: register: %v", s.name, err)
	}
	s.wg.Go(func() { io.Copy(io.Discard, c) }) // lists: the book's service ignores them
}

func (s *bookService) close() {
	s.cancel()
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// count returns how many requests of route ("GET/goods") it answered.
func (s *bookService) count(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[route]
}

// total returns how many requests it answered.
func (s *bookService) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.served {
		n += v
	}
	return n
}

// received reports whether a request of route came with parameter name
// equal to value (compared as text: "7" and 7 are alike).
func (s *bookService) received(route, name, value string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.params[route] {
		if v, ok := bookParam(p, name); ok && bookText(v) == value {
			return true
		}
	}
	return false
}

// serve reads requests from c and answers each as soon as it is done, in
// whatever order they finish.
func (s *bookService) serve(c net.Conn) {
	var wmu sync.Mutex
	r := newPacketReader(c)
	for {
		p, err := r.next()
		if err != nil {
			return
		}
		var req struct {
			URI    string          `json:"uri"`
			Method string          `json:"method"`
			Key    json.RawMessage `json:"key"`
			Params json.RawMessage `json:"params"`
		}
		if json.Unmarshal(p, &req) != nil {
			continue // the book's server.js would throw here
		}
		var params map[string]json.RawMessage
		if json.Unmarshal(req.Params, &params) != nil || params == nil {
			continue
		}
		key := params["key"]
		if key == nil {
			key = req.Key
		}
		if key == nil {
			continue // nothing to answer to
		}
		route := req.Method + req.URI
		s.mu.Lock()
		s.params[route] = append(s.params[route], params)
		s.mu.Unlock()
		s.wg.Go(func() {
			ctx, cancel := context.WithTimeout(s.ctx, bookCallTimeout)
			defer cancel()
			ans := bookAnswer{"key": key, "errorcode": 0, "errormessage": "success"}
			s.handle(ctx, route, params, req.Params, ans)
			b, err := json.Marshal(ans)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.served[route]++
			s.mu.Unlock()
			wmu.Lock()
			defer wmu.Unlock()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write(append(b, sep...))
		})
	}
}

// bookAnswer is an answer of the book's services: key, errorcode,
// errormessage and what the route adds.
type bookAnswer map[string]any

// fail sets the book's errorcode 1 with msg: a string, or the mysql
// driver's error object.
func (a bookAnswer) fail(msg any) {
	a["errorcode"] = 1
	a["errormessage"] = msg
}

const msgInvalidParameters = "Invalid Parameters"

// handle runs route as the book's service does and fills ans.
func (s *bookService) handle(ctx context.Context, route string, p map[string]json.RawMessage, rawParams []byte, ans bookAnswer) {
	switch s.name + " " + route {
	case "goods POST/goods":
		name, ok1 := bookParam(p, "name")
		category, ok2 := bookParam(p, "category")
		price, ok3 := bookParam(p, "price")
		description, ok4 := bookParam(p, "description")
		if !ok1 || !ok2 || !ok3 || !ok4 {
			ans.fail(msgInvalidParameters)
			return
		}
		const q = "insert into goods(name, category, price, description) values(?, ?, ?, ?)"
		args := []any{name, category, price, description}
		if s.db.Dialect == store.SQLite {
			// MySQL in strict mode refuses a price that is not an
			// integer; SQLite would keep the text in the INTEGER column.
			if e := strictInteger(price, "price"); e != nil {
				e.SQL = bookSQL(q, args...)
				ans.fail(e)
				return
			}
		}
		res, err := s.db.ExecContext(ctx, q, args...)
		if err != nil {
			ans.fail(bookDBErr(err, bookSQL(q, args...)))
			return
		}
		id, err := res.LastInsertId()
		if err != nil {
			ans.fail(bookDBErr(err, bookSQL(q, args...)))
			return
		}
		// The book sets the bare id to the JSON of the parameters as they
		// came, key included, without expiry, and answers without the id.
		s.rdb.Set(ctx, strconv.FormatInt(id, 10), string(rawParams), 0)
	case "goods GET/goods":
		// The book's goods ignores any id: it lists every good.
		s.selectInto(ctx, ans, "select * from goods")
	case "goods DELETE/goods":
		id, ok := bookParam(p, "id")
		if !ok {
			ans.fail(msgInvalidParameters)
			return
		}
		const q = "delete from goods where id=?"
		if _, err := s.db.ExecContext(ctx, q, id); err != nil {
			ans.fail(bookDBErr(err, bookSQL(q, id)))
			return
		}
		s.rdb.Del(ctx, bookText(id))
	case "members POST/members":
		username, ok1 := bookParam(p, "username")
		password, ok2 := bookParam(p, "password")
		if !ok1 || !ok2 {
			ans.fail(msgInvalidParameters)
			return
		}
		const q = "insert into members(username, password) values(?, ?)"
		if _, err := s.db.ExecContext(ctx, q, username, mysqlPassword(bookText(password))); err != nil {
			// The book's SQL calls password(?): its error carries the
			// password in clear.
			ans.fail(bookDBErr(err, "insert into members(username, password) values("+bookLiteral(username)+", password("+bookLiteral(password)+"))"))
		}
	case "members GET/members":
		username, ok1 := bookParam(p, "username")
		password, ok2 := bookParam(p, "password")
		if !ok1 || !ok2 {
			ans.fail(msgInvalidParameters)
			return
		}
		var id int64
		err := s.db.QueryRowContext(ctx, "select id from members where username=? and password=?", username, mysqlPassword(bookText(password))).Scan(&id)
		switch {
		case err == nil:
			ans["userid"] = id
		case errors.Is(err, sql.ErrNoRows):
			ans.fail("INVALID PASSWORD")
		default:
			ans.fail(bookDBErr(err, "select id from members where username="+bookLiteral(username)+" and password=password("+bookLiteral(password)+")"))
		}
	case "members DELETE/members":
		username, ok := bookParam(p, "username")
		if !ok {
			ans.fail(msgInvalidParameters)
			return
		}
		const q = "delete from members where username=?"
		if _, err := s.db.ExecContext(ctx, q, username); err != nil {
			ans.fail(bookDBErr(err, bookSQL(q, username)))
		}
	case "purchases POST/purchases":
		userid, ok1 := bookParam(p, "userid")
		goodsid, ok2 := bookParam(p, "goodsid")
		if !ok1 || !ok2 {
			ans.fail(msgInvalidParameters)
			return
		}
		// The book sells a good while its bare key exists.
		if _, err := s.rdb.Get(ctx, bookText(goodsid)).Result(); err != nil {
			ans.fail("Redis failure")
			return
		}
		const q = "insert into purchases(userid, goodsid) values(?, ?)"
		if _, err := s.db.ExecContext(ctx, q, userid, goodsid); err != nil {
			ans.fail(bookDBErr(err, bookSQL(q, userid, goodsid)))
		}
	case "purchases GET/purchases":
		userid, ok := bookParam(p, "userid")
		if !ok {
			ans.fail(msgInvalidParameters)
			return
		}
		s.selectInto(ctx, ans, "select id, goodsid, date from purchases where userid=?", userid)
	default:
		ans.fail(msgInvalidParameters)
	}
}

// selectInto runs a query and sets ans's results to its rows, as objects by
// column name, or fails with the book's "no data" when there is none.
func (s *bookService) selectInto(ctx context.Context, ans bookAnswer, q string, args ...any) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		ans.fail(bookDBErr(err, bookSQL(q, args...)))
		return
	}
	defer rows.Close()
	cols, err := rows.ColumnTypes()
	if err != nil {
		ans.fail(bookDBErr(err, bookSQL(q, args...)))
		return
	}
	var results []map[string]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			ans.fail(bookDBErr(err, bookSQL(q, args...)))
			return
		}
		row := map[string]any{}
		for i, c := range cols {
			row[c.Name()] = jsValue(vals[i], c.DatabaseTypeName())
		}
		results = append(results, row)
	}
	if err := rows.Err(); err != nil {
		ans.fail(bookDBErr(err, bookSQL(q, args...)))
		return
	}
	if len(results) == 0 {
		ans.fail("no data")
		return
	}
	ans["results"] = results
}

// jsValue is a column value as the book's mysql driver gives it to
// JSON.stringify: numbers for numeric columns, strings for text, ISO
// strings for dates.
func jsValue(v any, dbType string) any {
	switch v := v.(type) {
	case []byte:
		t := strings.ToUpper(dbType)
		if strings.Contains(t, "INT") {
			if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				return n
			}
		}
		if strings.Contains(t, "DECIMAL") || strings.Contains(t, "DOUBLE") || strings.Contains(t, "FLOAT") || t == "REAL" {
			if n, err := strconv.ParseFloat(string(v), 64); err == nil {
				return n
			}
		}
		return string(v)
	case time.Time:
		return v.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return v
}

// bookParam returns parameter name as a SQL argument (a string, a number or
// a boolean, as it came) and whether it is there: the book's services test
// params.X == null.
func bookParam(p map[string]json.RawMessage, name string) (any, bool) {
	raw, ok := p[name]
	if !ok {
		return nil, false
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil || v == nil {
		return nil, false
	}
	switch v := v.(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n, true
		}
		f, _ := v.Float64()
		return f, true
	case string, bool:
		return v, true
	}
	return string(raw), true // an object or array: Node would format it; no test sends one
}

// bookText is a parameter as Node turns it into a string (a Redis key).
func bookText(v any) string { return fmt.Sprint(v) }

// mysqlPassword is MySQL's PASSWORD(s): "*" and the upper-case hex of
// SHA1(SHA1(s)), as the book's members stores it.
func mysqlPassword(s string) string {
	inner := sha1.Sum([]byte(s))
	outer := sha1.Sum(inner[:])
	return "*" + strings.ToUpper(hex.EncodeToString(outer[:]))
}

// bookLiteral is v as the mysql driver of Node writes it into SQL.
func bookLiteral(v any) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case string:
		r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`, "\n", `\n`, "\r", `\r`, "\x1a", `\Z`)
		return "'" + r.Replace(v) + "'"
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}

// bookSQL is q with each ? replaced by its argument, as the error object
// of the book's mysql driver shows it.
func bookSQL(q string, args ...any) string {
	var b strings.Builder
	for _, r := range q {
		if r == '?' && len(args) > 0 {
			b.WriteString(bookLiteral(args[0]))
			args = args[1:]
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// bookDBError is the error object of the book's mysql driver, which the
// book's services answer as their errormessage.
type bookDBError struct {
	Code       string `json:"code"`
	Errno      int    `json:"errno"`
	SQLMessage string `json:"sqlMessage"`
	SQLState   string `json:"sqlState"`
	Index      int    `json:"index"`
	SQL        string `json:"sql"`
}

// mysqlCodes names MySQL error numbers as Node's mysql driver does.
var mysqlCodes = map[int]string{
	1062: "ER_DUP_ENTRY",
	1366: "ER_TRUNCATED_WRONG_VALUE_FOR_FIELD",
	1364: "ER_NO_DEFAULT_FOR_FIELD",
	1265: "WARN_DATA_TRUNCATED",
	1048: "ER_BAD_NULL_ERROR",
	1406: "ER_DATA_TOO_LONG",
}

// bookDBErr builds the driver's error object from a Go database error: a
// MySQL error by its number, a SQLite one by the MySQL error it stands for.
func bookDBErr(err error, sqlText string) *bookDBError {
	e := &bookDBError{Errno: 1105, SQLMessage: err.Error(), SQLState: "HY000", SQL: sqlText}
	var me *mysql.MySQLError
	var se *sqlite.Error
	switch {
	case errors.As(err, &me):
		e.Errno, e.SQLMessage = int(me.Number), me.Message
		if me.SQLState != [5]byte{} {
			e.SQLState = string(me.SQLState[:])
		}
	case store.IsDuplicate(err):
		e.Errno, e.SQLState = 1062, "23000"
	case errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_NOTNULL:
		e.Errno = 1364 // MySQL in strict mode: "Field 'x' doesn't have a default value"
	}
	e.Code = mysqlCodes[e.Errno]
	if e.Code == "" {
		e.Code = "ER_UNKNOWN"
	}
	return e
}

var (
	mysqlIntFull   = regexp.MustCompile(`^\s*[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?\s*$`)
	mysqlIntPrefix = regexp.MustCompile(`^\s*[+-]?([0-9]|\.[0-9])`)
)

// strictInteger is what MySQL in strict mode says of v written to the
// integer column col: nil when it takes it; 1366 for a string that is no
// number; 1265 for one with a number followed by junk.
func strictInteger(v any, col string) *bookDBError {
	s, ok := v.(string)
	if !ok || mysqlIntFull.MatchString(s) {
		return nil
	}
	if mysqlIntPrefix.MatchString(s) {
		return &bookDBError{Code: "WARN_DATA_TRUNCATED", Errno: 1265, SQLState: "01000",
			SQLMessage: fmt.Sprintf("Data truncated for column '%s' at row 1", col)}
	}
	return &bookDBError{Code: "ER_TRUNCATED_WRONG_VALUE_FOR_FIELD", Errno: 1366, SQLState: "HY000",
		SQLMessage: fmt.Sprintf("Incorrect integer value: '%s' for column `main`.`goods`.`%s` at row 1", s, col)}
}

// ─── the book's gate ─────────────────────────────────────────────────────

// fakeBookGate is the book's gate.js: an HTTP server that registers with
// the distributor as "gate", connects once to every listed process not
// named gate, and for each request looks "METHOD/path" up among the listed
// urls, picks an instance round robin, sends {"uri","method","params"} with
// the key (a counter from 0) only in params.key, and writes the answer
// packet with that key as HTTP 200 JSON. An unknown route is a 404 with no
// body. POST bodies are JSON when the Content-Type is exactly
// application/json, else a form; every other method's params are the query.
// Unlike the book's gate it gives up on an answer after bookGateWait, so
// that a broken test does not hang.
type fakeBookGate struct {
	url string
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	dist    net.Conn
	clients map[string]*bookGateClient // by the listed host:port
	routes  map[string][]*bookGateClient
	rr      map[string]int
	index   int
	waiting map[string]chan []byte // by key
}

// bookGateWait bounds how long the fake book gate waits for an answer.
const bookGateWait = 10 * time.Second

type bookGateClient struct {
	conn net.Conn
	wmu  sync.Mutex
}

// startFakeBookGate starts the book's gate on a free port, registered with
// the distributor at distAddr. It stops when the test ends.
func startFakeBookGate(t *testing.T, distAddr string) *fakeBookGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeBookGate{url: "http://" + ln.Addr().String(), ln: ln, clients: map[string]*bookGateClient{},
		routes: map[string][]*bookGateClient{}, rr: map[string]int{}, waiting: map[string]chan []byte{}}
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 5 * time.Second}
	t.Cleanup(g.close)
	g.wg.Go(func() { g.srv.Serve(ln) })
	c, err := net.DialTimeout("tcp", distAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("the book's gate: connect to the distributor %s: %v", distAddr, err)
	}
	g.mu.Lock()
	g.dist = c
	g.mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	port := ln.Addr().(*net.TCPAddr).Port
	if _, err := io.WriteString(c, `{"uri":"/distributes","method":"POST","key":0,"params":{"port":`+strconv.Itoa(port)+`,"name":"gate","urls":[]}}¶`); err != nil {
		t.Fatalf("the book's gate: register: %v", err)
	}
	g.wg.Go(func() {
		r := newPacketReader(c)
		for {
			p, err := r.next()
			if err != nil {
				return
			}
			if nodes, ok := decodeList(p); ok {
				g.onList(nodes)
			}
		}
	})
	return g
}

func (g *fakeBookGate) close() {
	g.srv.Close()
	g.mu.Lock()
	g.closed = true
	if g.dist != nil {
		g.dist.Close()
	}
	for _, c := range g.clients {
		c.conn.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// onList connects to every listed process it does not know yet.
func (g *fakeBookGate) onList(nodes []node) {
	for _, n := range nodes {
		key := n.Host + ":" + strconv.Itoa(n.Port)
		g.mu.Lock()
		known := g.clients[key] != nil || g.closed
		g.mu.Unlock()
		if n.Name == "gate" || known {
			continue
		}
		conn, err := net.DialTimeout("tcp", n.addr(), 2*time.Second)
		if err != nil {
			continue // the next list tries again
		}
		c := &bookGateClient{conn: conn}
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			conn.Close()
			return
		}
		g.clients[key] = c
		for _, u := range n.URLs {
			g.routes[u] = append(g.routes[u], c)
		}
		g.mu.Unlock()
		g.wg.Go(func() { g.read(conn) })
	}
}

// read hands each answer on conn to the request waiting for its key.
func (g *fakeBookGate) read(conn net.Conn) {
	r := newPacketReader(conn)
	for {
		p, err := r.next()
		if err != nil {
			return
		}
		var m struct {
			Key json.RawMessage `json:"key"`
		}
		if json.Unmarshal(p, &m) != nil || m.Key == nil {
			continue
		}
		g.mu.Lock()
		ch := g.waiting[string(m.Key)]
		delete(g.waiting, string(m.Key))
		g.mu.Unlock()
		if ch != nil {
			ch <- p
		}
	}
}

// hasRoutes reports whether every one of routes has a connected instance.
func (g *fakeBookGate) hasRoutes(routes ...string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range routes {
		if len(g.routes[r]) == 0 {
			return false
		}
	}
	return true
}

// waitRoutes waits until the gate has an instance for every route.
func (g *fakeBookGate) waitRoutes(t *testing.T, alive func(), routes ...string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for !g.hasRoutes(routes...) {
		alive()
		if time.Now().After(deadline) {
			t.Fatalf("the book's gate never had an instance of every one of %v", routes)
		}
		time.Sleep(pollEvery)
	}
}

func (g *fakeBookGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	params := map[string]any{}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		if r.Header.Get("Content-Type") == "application/json" {
			if json.Unmarshal(body, &params) != nil || params == nil {
				w.WriteHeader(http.StatusBadRequest) // JSON.parse would throw
				return
			}
		} else if q, err := url.ParseQuery(string(body)); err == nil {
			queryParams(params, q)
		}
	} else {
		queryParams(params, r.URL.Query())
	}
	route := r.Method + r.URL.Path
	g.mu.Lock()
	list := g.routes[route]
	if len(list) == 0 {
		g.mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
		return
	}
	key := g.index
	g.index++
	params["key"] = key
	g.rr[route]++
	c := list[g.rr[route]%len(list)]
	ch := make(chan []byte, 1)
	g.waiting[strconv.Itoa(key)] = ch
	g.mu.Unlock()

	pkt, _ := json.Marshal(struct {
		URI    string         `json:"uri"`
		Method string         `json:"method"`
		Params map[string]any `json:"params"`
	}{r.URL.Path, r.Method, params})
	c.wmu.Lock()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(append(pkt, sep...))
	c.wmu.Unlock()
	if err == nil {
		timer := time.NewTimer(bookGateWait)
		defer timer.Stop()
		select {
		case b := <-ch:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.Write(b)
			return
		case <-timer.C:
		case <-r.Context().Done():
		}
	}
	g.mu.Lock()
	delete(g.waiting, strconv.Itoa(key))
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusGatewayTimeout)
	io.WriteString(w, `{"errorcode":504,"errormessage":"the fake book gate got no answer"}`)
}

// queryParams sets params from q as Node's querystring.parse does: a
// string, or an array for a repeated name.
func queryParams(params map[string]any, q url.Values) {
	for k, v := range q {
		if len(v) == 1 {
			params[k] = v[0]
		} else {
			params[k] = v
		}
	}
}
