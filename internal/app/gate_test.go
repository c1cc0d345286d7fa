package app

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/edge/apidoc"
	"github.com/microshop/microshop/internal/testenv"
)

// The gate's conventions, through a whole fleet: CORS for the origins of
// --cors-origins only, 405 with Allow for a known path and another method,
// /healthz and /readyz on the gate's own port.
func TestGateConventions(t *testing.T) {
	base := fleet(t, "--cors-origins", "https://shop.example, https://*.shop.example")
	do := func(method, path string, header map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	preflight := func(origin string) *http.Response {
		return do("OPTIONS", "/goods", map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"})
	}
	for _, origin := range []string{"https://shop.example", "https://m.shop.example"} {
		resp := preflight(origin)
		h := resp.Header
		if resp.StatusCode/100 != 2 || h.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "authorization") || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("preflight from %s: %d %v; want 2xx allowing it, POST and Authorization, no credentials", origin, resp.StatusCode, h)
		}
	}
	if resp := preflight("https://evil.example"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %v; want no Access-Control-Allow-Origin", resp.Header)
	}
	resp := do("GET", "/goods", map[string]string{"Origin": "https://shop.example"})
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example" || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Errorf("GET /goods from the shop: %d %v; want 200 with CORS headers", resp.StatusCode, resp.Header)
	}

	if resp := do("PUT", "/goods", nil); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, POST, PATCH, DELETE" {
		t.Errorf("PUT /goods: %d, Allow %q; want 405, Allow \"GET, POST, PATCH, DELETE\"", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if resp := do("PUT", "/nowhere", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("PUT /nowhere: %d; want 404", resp.StatusCode)
	}

	if resp, err := http.Get(base + "/openapi.json"); err != nil {
		t.Fatal(err)
	} else {
		var doc struct {
			OpenAPI string         `json:"openapi"`
			Paths   map[string]any `json:"paths"`
		}
		err := json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || doc.OpenAPI != "3.1.0" || doc.Paths["/goods"] == nil {
			t.Errorf("GET /openapi.json: %d %v %+v; want the OpenAPI 3.1 document", resp.StatusCode, err, doc.OpenAPI)
		}
	}
	if resp := do("GET", "/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("GET /healthz on the gate: %d; want 200", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var st readyState
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		json.Unmarshal(b, &st)
		if strings.Contains(string(b), "127.0.0.1") || st.Pid != 0 {
			t.Fatalf("GET /readyz on the gate's public port shows the fleet's layout: %s", b)
		}
		if resp.StatusCode == 200 && st.Checks["list"] == "ok" && st.Checks["database"] == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz on the gate: %d %+v; want 200 with the list and the database ok", resp.StatusCode, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCORSOriginsFlag(t *testing.T) {
	parse := func(name string, env map[string]string, args ...string) (*options, error) {
		return parseFlags(name, args, func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	for _, bad := range []string{"ftp://shop.example", "shop.example", "https://shop.example/path", "https://*.*.example"} {
		if _, err := parse("gate", nil, "--cors-origins", bad); err == nil || !strings.Contains(err.Error(), "--cors-origins") {
			t.Errorf("--cors-origins %q: %v; want an error naming the flag", bad, err)
		}
	}
	o, err := parse("gate", nil, "--cors-origins", "https://shop.example, http://localhost:3000,*")
	if err != nil || len(o.corsOrigins) != 3 {
		t.Errorf("good origins: %v, %v; want three", o, err)
	}
}

// The OpenAPI document names every route the fleet serves, and no other:
// every service's route table, and the gate's own API routes.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	served := map[string]bool{"GET /chat": true, "GET /healthz": true, "GET /readyz": true, "GET /openapi.json": true, "GET /console/fleet": true}
	d := deps{db: testenv.DB(t), cache: testenv.Cache(t), log: slog.New(slog.DiscardHandler), sec: &securityOptions{}}
	for _, c := range components() {
		if c.kind != kindService {
			continue
		}
		for k := range c.routes(d) {
			method, path, _ := strings.Cut(k, "/")
			served[method+" /"+path] = true
		}
	}
	documented := map[string]bool{}
	for _, k := range apidoc.Keys() {
		documented[k] = true
		if !served[k] {
			t.Errorf("the OpenAPI document has %s, which nothing serves", k)
		}
	}
	for k := range served {
		if !documented[k] {
			t.Errorf("%s is served but missing from the OpenAPI document (internal/edge/apidoc)", k)
		}
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(apidoc.Document(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("the document: %v, openapi %q; want JSON of OpenAPI 3.1.0", err, doc.OpenAPI)
	}
	n := 0
	for _, ops := range doc.Paths {
		n += len(ops)
	}
	if n != len(documented) {
		t.Errorf("the document has %d operations; want %d", n, len(documented))
	}
}
