package gate

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
