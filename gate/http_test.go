package gate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

func TestParams(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body, query string
		want                  map[string]any
		status                int
	}{
		{name: "query", query: "id=7&name=a%C2%B6b", want: map[string]any{"id": "7", "name": "a¶b"}},
		{name: "json", ct: "application/json", body: `{"name":"x","price":100}`, want: map[string]any{"name": "x", "price": json.Number("100")}},
		{name: "json charset", ct: "application/json; charset=utf-8", body: `{"a":"b"}`, want: map[string]any{"a": "b"}},
		{name: "json without content type", body: ` {"a":"b"}`, want: map[string]any{"a": "b"}},
		{name: "form", ct: "application/x-www-form-urlencoded", body: "name=x&price=100", want: map[string]any{"name": "x", "price": "100"}},
		{name: "body wins over query", ct: "application/json", body: `{"id":"2"}`, query: "id=1", want: map[string]any{"id": "2"}},
		{name: "malformed json", ct: "application/json", body: `{"name":`, status: 400},
		{name: "json array", ct: "application/json", body: `[1,2]`, status: 400},
		{name: "json trailing", ct: "application/json", body: `{"a":1}{"b":2}`, status: 400},
		{name: "too large", ct: "application/json", body: `{"a":"` + strings.Repeat("x", 200) + `"}`, status: 413},
		{name: "empty body", ct: "application/json", body: "", want: map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/goods?"+tc.query, strings.NewReader(tc.body))
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			got, err := Params(r, 100)
			if tc.status != 0 {
				var pe *paramError
				if !errors.As(err, &pe) || pe.status != tc.status {
					t.Fatalf("Params() error = %v; want status %d", err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("Params() = %v", err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(tc.want)
			if string(gb) != string(wb) {
				t.Fatalf("Params() = %s; want %s", gb, wb)
			}
		})
	}
}

func TestUnknownRouteIs404(t *testing.T) {
	g := New(Config{Distributors: []string{"127.0.0.1:1"}})
	defer g.Client().Close()
	w := httptest.NewRecorder()
	g.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/nowhere", nil))
	var body struct {
		ErrorCode int `json:"errorcode"`
	}
	if w.Code != http.StatusNotFound || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.ErrorCode != 404 {
		t.Fatalf("GET /nowhere = %d %s; want 404 with errorcode 404", w.Code, w.Body)
	}
}

func TestServiceRetryAfter(t *testing.T) {
	h := http.Header{}
	setRetryAfter(h, mustDecode(t, `{"key":1,"errorcode":429,"errormessage":"locked","retryafter":42}`))
	if got := h.Get("Retry-After"); got != "42" {
		t.Errorf("Retry-After = %q; want 42", got)
	}
	setRetryAfter(h, mustDecode(t, `{"key":1,"errorcode":429,"errormessage":"busy"}`))
	if got := h.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After without retryafter = %q; want 1", got)
	}
}

func mustDecode(t *testing.T, s string) *packet.Message {
	t.Helper()
	m, err := packet.Decode([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// denyAll refuses every request with 429, naming what it saw.
type denyAll struct{ seen []string }

func (d *denyAll) Admit(w http.ResponseWriter, r *http.Request) (*service.Auth, int) {
	d.seen = append(d.seen, r.Method+" "+r.URL.Path)
	return nil, WriteError(w, http.StatusTooManyRequests, "no")
}

// admitAs admits every request as member 7.
type admitAs struct{}

func (admitAs) Admit(http.ResponseWriter, *http.Request) (*service.Auth, int) {
	return &service.Auth{Member: 7}, 0
}

// The Admitter sees every request first, own routes and unknown ones
// included; an own handler learns the identity from AuthFrom, and the
// status it writes is the one recorded.
func TestAdmitterAndOwnHandlers(t *testing.T) {
	own := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := AuthFrom(r.Context())
		if a == nil {
			WriteError(w, http.StatusTeapot, "no identity")
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"member":%d}`, a.Member)
	})
	deny := &denyAll{}
	g := New(Config{Distributors: []string{"127.0.0.1:1"}, Admit: deny, Handlers: map[string]http.Handler{"GET /mine": own}})
	defer g.Client().Close()
	for _, path := range []string{"/mine", "/nowhere"} {
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != 429 {
			t.Errorf("GET %s with an Admitter that refuses: %d; want 429", path, w.Code)
		}
	}
	if len(deny.seen) != 2 {
		t.Errorf("the Admitter saw %v; want both requests", deny.seen)
	}

	g = New(Config{Distributors: []string{"127.0.0.1:1"}, Admit: admitAs{}, Handlers: map[string]http.Handler{"GET /mine": own}})
	defer g.Client().Close()
	before := testutil.ToFloat64(httpRequests.WithLabelValues("GET /mine", "202"))
	w := httptest.NewRecorder()
	g.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/mine", nil))
	if w.Code != 202 || w.Body.String() != `{"member":7}` {
		t.Errorf("GET /mine admitted as member 7: %d %s; want 202 {\"member\":7}", w.Code, w.Body)
	}
	if n := testutil.ToFloat64(httpRequests.WithLabelValues("GET /mine", "202")) - before; n != 1 {
		t.Errorf("microshop_gate_requests_total{route=\"GET /mine\",status=\"202\"} went up by %v; want 1", n)
	}
	w = httptest.NewRecorder()
	g.Handler().ServeHTTP(w, httptest.NewRequest("POST", "/mine", nil))
	if w.Code != 405 || w.Header().Get("Allow") != "GET" {
		t.Errorf("POST /mine (only GET is the gate's): %d, Allow %q; want 405, Allow GET", w.Code, w.Header().Get("Allow"))
	}

	open := New(Config{Distributors: []string{"127.0.0.1:1"}, Handlers: map[string]http.Handler{"GET /mine": own}})
	defer open.Client().Close()
	w = httptest.NewRecorder()
	open.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/mine", nil))
	if w.Code != http.StatusTeapot {
		t.Errorf("GET /mine without an Admitter: %d; want the handler to see no identity", w.Code)
	}
}

func FuzzParams(f *testing.F) {
	f.Add("application/json", `{"a":1}`, "x=1")
	f.Add("application/x-www-form-urlencoded", "a=%zz&b", "")
	f.Add("", "{\"a\":\"\xff\"}", "%")
	f.Fuzz(func(t *testing.T, ct, body, query string) {
		r := httptest.NewRequest("POST", "/goods", strings.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", ct)
		p, err := Params(r, 1<<10)
		if err != nil {
			var pe *paramError
			if !errors.As(err, &pe) || pe.status < 400 || pe.status > 499 {
				t.Fatalf("Params error %v is not a client error", err)
			}
			return
		}
		if _, err := json.Marshal(p); err != nil {
			t.Fatalf("params %v cannot be encoded: %v", p, err)
		}
	})
}

// A known path with a method it is not served with is a 405 that says
// which methods it takes; an unknown path is still a 404.
func TestWrongMethodIs405(t *testing.T) {
	own := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	g := New(Config{Distributors: []string{"127.0.0.1:1"}, Handlers: map[string]http.Handler{"GET /mine": own, "DELETE /mine": own}})
	defer g.Client().Close()
	w := httptest.NewRecorder()
	g.Handler().ServeHTTP(w, httptest.NewRequest("PUT", "/mine", nil))
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, DELETE" || !strings.Contains(w.Body.String(), `"errorcode":405`) {
		t.Errorf("PUT /mine: %d Allow %q %s; want 405, Allow \"GET, DELETE\", errorcode 405", w.Code, w.Header().Get("Allow"), w.Body)
	}
	w = httptest.NewRecorder()
	g.Handler().ServeHTTP(w, httptest.NewRequest("PUT", "/elsewhere", nil))
	if w.Code != http.StatusNotFound || w.Header().Get("Allow") != "" {
		t.Errorf("PUT /elsewhere: %d Allow %q; want 404 without Allow", w.Code, w.Header().Get("Allow"))
	}
}

// queryJSON says what Params and json.Marshal say, without a map: the
// same object once decoded, or nil to leave the query to them.
func checkQueryJSON(t *testing.T, raw string) {
	t.Helper()
	got := queryJSON(raw)
	if got == nil {
		return
	}
	r := httptest.NewRequest("GET", "/goods", nil)
	r.URL.RawQuery = raw
	params, err := Params(r, 1<<10)
	if err != nil {
		t.Fatalf("Params(%q): %v", raw, err)
	}
	var a, b map[string]any
	want, _ := json.Marshal(params)
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("queryJSON(%q) = %s: not JSON: %v", raw, got, err)
	}
	json.Unmarshal(want, &b)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("queryJSON(%q) = %s; Params gives %s", raw, got, want)
	}
}

func TestQueryJSON(t *testing.T) {
	for _, raw := range []string{"", "id=7", "id=7&id=8", "a=1&b=x+y&c=%22q%22%5C", "name=a%C2%B6b&&x=", "k=%3Cb%3E%26", "k=%01%1f", "only"} {
		checkQueryJSON(t, raw)
		if queryJSON(raw) == nil {
			t.Errorf("queryJSON(%q) = nil; want it handled", raw)
		}
	}
	for _, raw := range []string{"a=%zz", "a=1;b=2", "a=%ff"} {
		if got := queryJSON(raw); got != nil {
			t.Errorf("queryJSON(%q) = %s; want nil (left to Params)", raw, got)
		}
	}
}

func FuzzQueryJSON(f *testing.F) {
	for _, s := range []string{"id=7", "a=1&a=2", "%22=%5C", "x=%e2%80%a8", "a=%3c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) { checkQueryJSON(t, raw) })
}

// BenchmarkQueryToJSON: a GET's parameters, the way the gate sends them
// now (queryJSON) and the way it did (Params, then json.Marshal).
func BenchmarkQueryToJSON(b *testing.B) {
	r := httptest.NewRequest("GET", "/goods?id=12345", nil)
	b.Run("queryJSON", func(b *testing.B) {
		for b.Loop() {
			queryJSON(r.URL.RawQuery)
		}
	})
	b.Run("Params+Marshal", func(b *testing.B) {
		for b.Loop() {
			p, _ := Params(r, 1<<20)
			json.Marshal(p)
		}
	})
}
