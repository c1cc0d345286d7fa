package members_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/members"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

type fixture struct {
	db     *store.DB
	routes map[string]service.Handler
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db := testenv.DB(t)
	return &fixture{db: db, routes: members.New(db, testenv.Cache(t), nil).Routes()}
}

// call runs route with params built from kv pairs, sent as JSON.
func (f *fixture) call(t testing.TB, route string, params map[string]any) (service.Result, error) {
	t.Helper()
	b, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	p, err := service.DecodeParams(b)
	if err != nil {
		t.Fatalf("bad test params %s: %v", b, err)
	}
	method, uri, _ := strings.Cut(route, "/")
	return f.routes[route](context.Background(), &service.Request{Method: method, URI: "/" + uri, Params: p})
}

func (f *fixture) signUp(t testing.TB, username, password string) int64 {
	t.Helper()
	res, err := f.call(t, "POST/members", map[string]any{"username": username, "password": password})
	if err != nil {
		t.Fatalf("POST /members %q: %v", username, err)
	}
	id, ok := res["userid"].(int64)
	if !ok || id < 1 {
		t.Fatalf("POST /members %q = %v; want a positive userid", username, res)
	}
	return id
}

func wantCode(t testing.TB, what string, err error, code int, msg string) {
	t.Helper()
	gotCode, gotMsg := service.ErrorCode(err)
	if gotCode != code || (msg != "" && gotMsg != msg) {
		t.Fatalf("%s: error = %d %q (%v); want %d %q", what, gotCode, gotMsg, err, code, msg)
	}
}

func TestSignUpValidation(t *testing.T) {
	f := newFixture(t)
	const good = "correct horse"
	const badName = "username may contain only letters, digits, '_', '.' and '-'"
	tests := []struct {
		name     string
		username any
		password any
		msg      string // "" for success
	}{
		{"ascii", "kim", good, ""},
		{"one char", "k", good, ""},
		{"punctuation allowed", "a.b-c_d9", good, ""},
		{"accented", "élodie", good, ""},
		{"cjk", "用户", good, ""},
		{"combining mark after letter", "e\u0301mile", good, ""},
		{"devanagari", "नमस्ते", good, ""},
		{"64 chars", strings.Repeat("ü", 64), good, ""},
		{"numeric username", 12345, good, ""},
		{"password 8 chars", "eight", "12345678", ""},
		{"password 256 chars", "longpw", strings.Repeat("p", 256), ""},
		{"password with pilcrow", "pilcrow", "pass¶word¶", ""},
		{"username missing", nil, good, "username is required"},
		{"username empty", "", good, "username is required"},
		{"username 65 chars", strings.Repeat("u", 65), good, "username must be at most 64 characters"},
		{"username space", "kim lee", good, badName},
		{"username NUL", "kim\x00", good, badName},
		{"username newline", "kim\n", good, badName},
		{"username tab", "\tkim", good, badName},
		{"username DEL", "kim\x7f", good, badName},
		{"username slash", "a/b", good, badName},
		{"username at", "a@b", good, badName},
		{"username emoji", "kim😀", good, badName},
		{"username leading mark", "\u0301kim", good, badName},
		{"username pilcrow", "kim¶", good, badName},
		{"username array", []string{"kim"}, good, "username must be a string"},
		{"password missing", "nopw", nil, "password is required"},
		{"password 7 chars", "short", "1234567", "password must be at least 8 characters"},
		{"password 257 chars", "toolong", strings.Repeat("p", 257), "password must be at most 256 characters"},
		{"password object", "objpw", map[string]any{"a": 1}, "password must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := map[string]any{}
			if tt.username != nil {
				params["username"] = tt.username
			}
			if tt.password != nil {
				params["password"] = tt.password
			}
			res, err := f.call(t, "POST/members", params)
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("POST /members %v: %v; want success", params, err)
				}
				if id, _ := res["userid"].(int64); id < 1 {
					t.Fatalf("POST /members = %v; want a userid", res)
				}
				return
			}
			wantCode(t, "POST /members", err, 400, tt.msg)
		})
	}
}

func TestSignUpSignInDelete(t *testing.T) {
	f := newFixture(t)
	id := f.signUp(t, "kim", "s3cret pass¶")
	other := f.signUp(t, "lee", "another password")
	if other == id {
		t.Fatalf("two members got userid %d", id)
	}

	res, err := f.call(t, "GET/members", map[string]any{"username": "kim", "password": "s3cret pass¶", "key": 3})
	if err != nil || res["userid"] != id {
		t.Fatalf("GET /members kim = %v, %v; want userid %d", res, err, id)
	}

	const denied = "invalid username or password"
	fails := []struct {
		name   string
		params map[string]any
		code   int
		msg    string
	}{
		{"wrong password", map[string]any{"username": "kim", "password": "s3cret pass"}, 401, denied},
		{"other member's password", map[string]any{"username": "kim", "password": "another password"}, 401, denied},
		{"unknown user", map[string]any{"username": "nobody", "password": "s3cret pass¶"}, 401, denied},
		{"trailing space", map[string]any{"username": "kim ", "password": "s3cret pass¶"}, 401, denied},
		{"case differs", map[string]any{"username": "KIM", "password": "s3cret pass¶"}, 401, denied},
		{"overlong username", map[string]any{"username": strings.Repeat("k", 300), "password": "s3cret pass¶"}, 401, denied},
		{"overlong password", map[string]any{"username": "kim", "password": strings.Repeat("p", 10000)}, 401, denied},
		{"missing password", map[string]any{"username": "kim"}, 400, "username and password are required"},
		{"missing username", map[string]any{"password": "x"}, 400, "username and password are required"},
		{"username object", map[string]any{"username": map[string]any{}, "password": "x"}, 400, "username must be a string"},
	}
	for _, tt := range fails {
		_, err := f.call(t, "GET/members", tt.params)
		wantCode(t, "GET /members ("+tt.name+")", err, tt.code, tt.msg)
	}

	res, err = f.call(t, "DELETE/members", map[string]any{"username": "kim"})
	if err != nil || len(res) != 0 {
		t.Fatalf("DELETE /members kim = %v, %v; want an empty success", res, err)
	}
	_, err = f.call(t, "GET/members", map[string]any{"username": "kim", "password": "s3cret pass¶"})
	wantCode(t, "GET /members after delete", err, 401, denied)
	_, err = f.call(t, "DELETE/members", map[string]any{"username": "kim"})
	wantCode(t, "DELETE /members twice", err, 404, `member "kim" not found`)
	_, err = f.call(t, "DELETE/members", map[string]any{"username": "lee "})
	wantCode(t, "DELETE /members with a trailing space", err, 404, `member "lee " not found`)
	_, err = f.call(t, "DELETE/members", map[string]any{})
	wantCode(t, "DELETE /members without username", err, 400, "username is required")

	// The other member is untouched, and the name is free again.
	if res, err := f.call(t, "GET/members", map[string]any{"username": "lee", "password": "another password"}); err != nil || res["userid"] != other {
		t.Fatalf("GET /members lee = %v, %v; want userid %d", res, err, other)
	}
	f.signUp(t, "kim", "a new password")
}

func TestDuplicateUsername(t *testing.T) {
	f := newFixture(t)
	f.signUp(t, "kim", "password one")
	_, err := f.call(t, "POST/members", map[string]any{"username": "kim", "password": "password two"})
	wantCode(t, "POST /members duplicate", err, 409, "username already taken")
	// The first password still works; the second was not stored.
	if _, err := f.call(t, "GET/members", map[string]any{"username": "kim", "password": "password one"}); err != nil {
		t.Fatalf("sign in with the first password: %v", err)
	}
}

// TestConcurrentSignUp races sign-ups of one username: exactly one wins.
func TestConcurrentSignUp(t *testing.T) {
	f := newFixture(t)
	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = f.call(t, "POST/members", map[string]any{"username": "racer", "password": "fast password"})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		wantCode(t, "concurrent sign-up", err, 409, "username already taken")
	}
	if ok != 1 {
		t.Fatalf("%d concurrent sign-ups succeeded; want 1", ok)
	}
}

func TestPasswordStoredAsArgon2id(t *testing.T) {
	f := newFixture(t)
	const pw = "plain text password"
	f.signUp(t, "kim", pw)
	f.signUp(t, "lee", pw)
	stored := map[string]string{}
	for _, u := range []string{"kim", "lee"} {
		var got string
		if err := f.db.QueryRowContext(context.Background(), "SELECT password FROM members WHERE username = ?", u).Scan(&got); err != nil {
			t.Fatal(err)
		}
		sum := md5.Sum([]byte(pw))
		if got == pw || strings.Contains(got, pw) || strings.EqualFold(got, hex.EncodeToString(sum[:])) {
			t.Fatalf("stored password of %s = %q; want a hash, not the password or its md5", u, got)
		}
		if !strings.HasPrefix(got, "$argon2id$v=19$m=19456,t=2,p=1$") {
			t.Fatalf("stored password of %s = %q; want $argon2id$v=19$m=19456,t=2,p=1$...", u, got)
		}
		stored[u] = got
	}
	if stored["kim"] == stored["lee"] {
		t.Fatalf("same password gave the same hash twice (%q): salt missing", stored["kim"])
	}
}

// A member the book's members signed up (its password stored with MySQL's
// PASSWORD(): "*" and hex SHA1(SHA1(pw))) logs in with microshop's members
// once members has moved; a wrong password is still refused.
func TestBookMemberLogsIn(t *testing.T) {
	f := newFixture(t)
	// MySQL's PASSWORD('secret'), as the book's members stores it.
	const stored = "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
	res, err := f.db.ExecContext(context.Background(), "INSERT INTO members (username, password) VALUES (?, ?)", "u1", stored)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := res.LastInsertId()
	got, err := f.call(t, "GET/members", map[string]any{"username": "u1", "password": "secret"})
	if err != nil || got["userid"] != id {
		t.Fatalf("the book's member logs in: %v, %v; want userid %d", got, err, id)
	}
	if _, err := f.call(t, "GET/members", map[string]any{"username": "u1", "password": "Secret"}); err == nil {
		t.Fatal("the book's member logged in with a wrong password")
	}
}

// GET /members/name answers a member's username by id, for chat.
func TestName(t *testing.T) {
	f := newFixture(t)
	kim := f.signUp(t, "kim", "correct horse")
	lee := f.signUp(t, "이순신", "another horse")
	for id, want := range map[int64]string{kim: "kim", lee: "이순신"} {
		res, err := f.call(t, "GET/members/name", map[string]any{"id": id})
		if err != nil || res["username"] != want || res["id"] != id {
			t.Fatalf("GET /members/name?id=%d = %v, %v; want %q", id, res, err, want)
		}
	}
	_, err := f.call(t, "GET/members/name", map[string]any{"id": lee + 10})
	wantCode(t, "unknown member", err, 404, "")
	_, err = f.call(t, "GET/members/name", map[string]any{})
	wantCode(t, "no id", err, 400, "id is required")
}
