// Package console is the web console the gate serves at /: plain HTML, CSS
// and JavaScript embedded in the binary, with nothing to build and nothing
// fetched from elsewhere. Its storefront (goods with paging, logging in and
// out, buying and cancelling one's purchases, likes and dislikes, star
// ratings and withdrawing one's own, best sellers, stores near a point on a
// plot, chat rooms) and its admin tab (adding, editing and deleting goods
// and stores) call the gate's own HTTP API from the browser, and its
// operator view polls GET /console/fleet, which this
// package serves too: every process the distributor lists, whether the
// gate's connection to each instance is up or ejected, and requests a
// second, errors and p99 per service and route from the gate's own metrics.
//
// The page keeps a member's token and the admin key in JavaScript memory
// only (no cookie, no localStorage): a reload logs out. They travel in
// Authorization headers, never in a URL, except the token of a chat socket
// (?token=), since a browser cannot set headers on a WebSocket.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"net/http"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/service"
)

//go:embed assets
var assets embed.FS

// Config says where the operator view's figures come from.
type Config struct {
	// Instances reports the instances the gate keeps a connection to
	// (service.Client.Instances).
	Instances func() []service.InstanceState
	// Nodes reports the distributors' list of processes, gates included
	// (distributor.Client.Nodes of a client that watches them); nil lists
	// only what Instances reports.
	Nodes func() []distributor.Node
	// Connected reports whether some distributor is connected now; nil
	// counts as connected.
	Connected func() bool
	// Metrics gathers the gate's metrics (microshop_gate_requests_total and
	// microshop_gate_request_seconds, see gate.Collectors).
	Metrics prometheus.Gatherer
	// AuthOff tells that the gate checks no tokens (--auth=off): the fleet
	// view is then open to anyone, as every route is. Otherwise it answers
	// only requests made with the admin key: it names the fleet's internal
	// addresses.
	AuthOff bool
	// Window is the span over which rates and p99 are computed (default
	// DefaultWindow).
	Window time.Duration
	// Now returns the time (time.Now when nil), for tests.
	Now func() time.Time
}

// DefaultWindow is the default span of the operator view's rates and p99.
const DefaultWindow = 5 * time.Second

// Paths of the console's assets and of the fleet's figures.
const (
	PathIndex = "/"
	PathJS    = "/console/app.js"
	PathCSS   = "/console/style.css"
	PathFleet = "/console/fleet"
)

// Handlers returns the console's routes, keyed "METHOD /path" as
// gate.Config.Handlers takes them: the page, its script and style sheet,
// and the fleet's figures (JSON).
func Handlers(cfg Config) (map[string]http.Handler, error) {
	h := map[string]http.Handler{}
	for p, file := range map[string]string{PathIndex: "index.html", PathJS: "app.js", PathCSS: "style.css"} {
		a, err := newAsset(file)
		if err != nil {
			return nil, err
		}
		h["GET "+p] = a
	}
	h["GET "+PathFleet] = newFleet(cfg)
	return h, nil
}

// asset is one embedded file, served with an ETag so that a browser
// revalidates it with one cheap request.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

func newAsset(file string) (*asset, error) {
	b, err := assets.ReadFile(path.Join("assets", file))
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	sum := sha256.Sum256(b)
	a := &asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	switch path.Ext(file) {
	case ".html":
		a.ctype = "text/html; charset=utf-8"
	case ".js":
		a.ctype = "text/javascript; charset=utf-8"
	case ".css":
		a.ctype = "text/css; charset=utf-8"
	default:
		return nil, fmt.Errorf("console: no content type for %s", file)
	}
	return a, nil
}

// securityHeaders are sent with every answer of the console: the page runs
// only its own script and style and talks only to its own origin (and its
// chat socket), cannot be framed, and sends no Referer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

func (a *asset) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	securityHeaders(h)
	h.Set("Cache-Control", "no-cache") // revalidate: a new binary serves new files
	h.Set("ETag", a.etag)
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", a.ctype)
	w.Write(a.body)
}
