package console

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/microshop/microshop/gate"
)

// The gate's metrics the fleet view reads.
const (
	metricRequests = "microshop_gate_requests_total"
	metricSeconds  = "microshop_gate_request_seconds"
)

// maxSnapshots bounds the samples of the gate's metrics kept for the rates:
// one every snapshotEvery at most, none older than keepSnapshots.
const (
	snapshotEvery = 250 * time.Millisecond
	keepSnapshots = 30 * time.Second
	maxSnapshots  = int(keepSnapshots / snapshotEvery)
)

// Fleet is the JSON of GET /console/fleet.
type Fleet struct {
	Time time.Time `json:"time"`
	// Auth tells whether the gate checks tokens (--auth=on).
	Auth bool `json:"auth"`
	// Registry tells whether a distributor is connected now (the list is
	// the last one heard otherwise).
	Registry bool `json:"registry"`
	// Window is the span, in seconds, of the rates and p99 below; 0 before
	// there are two samples.
	Window    float64        `json:"window"`
	Processes []Process      `json:"processes"`
	Services  []ServiceStats `json:"services"`
	Routes    []RouteStats   `json:"routes"`
}

// Process is one process the distributor lists, or one instance the gate
// keeps a connection to.
type Process struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// Listed: in the distributor's list now.
	Listed bool `json:"listed"`
	// State is "up" (the gate's connection answers), "ejected" (its calls
	// timed out: skipped for a while), "down" (not connected, or silent
	// past the heartbeat timeout) or "listed" (a process the gate does not
	// call: another gate).
	State  string   `json:"state"`
	Routes []string `json:"routes"`
}

// Stats are the gate's figures over the window.
type Stats struct {
	// RPS is answers a second; Errors answers with a status of 500 or more
	// a second; Client answers with a 4xx status a second.
	RPS    float64 `json:"rps"`
	Errors float64 `json:"errors"`
	Client float64 `json:"client"`
	// P99 is the 99th percentile time to answer, in seconds, interpolated
	// within the histogram's buckets as Prometheus's histogram_quantile
	// does; null when nothing was answered in the window.
	P99 *float64 `json:"p99"`
	// Total is the answers since the gate started.
	Total float64 `json:"total"`
}

// ServiceStats are the figures of the routes one service serves (the gate's
// own: "gate").
type ServiceStats struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"`
	Up        int    `json:"up"`
	Stats
}

// RouteStats are one route's figures.
type RouteStats struct {
	Route   string `json:"route"` // "GET /goods", as the metric's label
	Service string `json:"service"`
	Stats
}

// routeSample is one route's cumulative counts at one time.
type routeSample struct {
	total, errors, client float64
	buckets               []float64 // cumulative counts by bound (bounds in sample.bounds)
	count                 float64   // the histogram's sample count
}

type sample struct {
	at     time.Time
	routes map[string]*routeSample
	bounds []float64 // the histogram's upper bounds (the same for every route)
}

type fleet struct {
	cfg Config

	mu      sync.Mutex
	samples []sample // oldest first
}

func newFleet(cfg Config) *fleet {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &fleet{cfg: cfg}
}

func (f *fleet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if !f.cfg.AuthOff {
		a := gate.AuthFrom(r.Context())
		switch {
		case a == nil || (!a.Admin && a.Member == 0):
			w.Header().Set("WWW-Authenticate", "Bearer")
			gate.WriteError(w, http.StatusUnauthorized, "the fleet view needs the admin key: Authorization: Bearer ADMIN_KEY")
			return
		case !a.Admin:
			gate.WriteError(w, http.StatusForbidden, "the fleet view needs the admin key, not a member's token")
			return
		}
	}
	st, err := f.state()
	if err != nil {
		gate.WriteError(w, http.StatusInternalServerError, "cannot read the gate's metrics")
		return
	}
	b, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// state builds the fleet's figures now.
func (f *fleet) state() (*Fleet, error) {
	now := f.cfg.Now()
	cur, err := f.gather(now)
	if err != nil {
		return nil, err
	}
	base := f.record(cur)

	st := &Fleet{Time: now.UTC(), Auth: !f.cfg.AuthOff, Registry: f.cfg.Connected == nil || f.cfg.Connected()}
	st.Processes = f.processes()

	routeService := map[string]string{} // "GET /goods" → "goods"
	services := map[string]*ServiceStats{}
	order := []string{}
	for _, p := range st.Processes {
		s := services[p.Name]
		if s == nil {
			s = &ServiceStats{Name: p.Name}
			services[p.Name] = s
			order = append(order, p.Name)
		}
		s.Instances++
		if p.State == "up" || p.State == "listed" {
			s.Up++
		}
		for _, u := range p.Routes {
			routeService[routeLabel(u)] = p.Name
		}
	}
	var window float64
	if base != nil {
		window = cur.at.Sub(base.at).Seconds()
	}
	st.Window = window
	st.Routes = []RouteStats{}
	perService := map[string][]string{}
	for route := range cur.routes {
		svc, ok := routeService[route]
		if !ok {
			svc = "gate" // the gate's own routes, and "unmatched"
			if route == "unmatched" {
				svc = ""
			}
		}
		st.Routes = append(st.Routes, RouteStats{Route: route, Service: svc, Stats: stats(cur, base, window, route)})
		if svc != "" {
			perService[svc] = append(perService[svc], route)
		}
	}
	slices.SortFunc(st.Routes, func(a, b RouteStats) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Route, b.Route))
	})
	if _, ok := services["gate"]; !ok && len(perService["gate"]) > 0 {
		services["gate"] = &ServiceStats{Name: "gate"}
		order = append(order, "gate")
	}
	st.Services = []ServiceStats{}
	for _, name := range order {
		s := services[name]
		s.Stats = stats(cur, base, window, perService[name]...)
		st.Services = append(st.Services, *s)
	}
	slices.SortFunc(st.Services, func(a, b ServiceStats) int { return cmp.Compare(a.Name, b.Name) })
	return st, nil
}

// processes merges the distributor's list with the gate's instances.
func (f *fleet) processes() []Process {
	byAddr := map[string]*Process{}
	var out []*Process
	if f.cfg.Nodes != nil {
		for _, n := range f.cfg.Nodes() {
			addr := n.Addr()
			key := n.Name + " " + addr
			if byAddr[key] != nil { // listed by two distributors
				continue
			}
			p := &Process{Name: n.Name, Addr: addr, Listed: true, State: "listed", Routes: slices.Sorted(slices.Values(n.URLs))}
			if n.Name != "gate" {
				p.State = "down" // until the gate's client says otherwise
			}
			byAddr[key] = p
			out = append(out, p)
		}
	}
	if f.cfg.Instances != nil {
		for _, in := range f.cfg.Instances() {
			key := in.Name + " " + in.Addr
			p := byAddr[key]
			if p == nil {
				p = &Process{Name: in.Name, Addr: in.Addr, Routes: []string{}}
				byAddr[key] = p
				out = append(out, p)
			}
			switch {
			case !in.Up:
				p.State = "down"
			case in.Ejected:
				p.State = "ejected"
			default:
				p.State = "up"
			}
		}
	}
	res := make([]Process, 0, len(out))
	for _, p := range out {
		if p.Routes == nil {
			p.Routes = []string{}
		}
		res = append(res, *p)
	}
	slices.SortFunc(res, func(a, b Process) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Addr, b.Addr)) })
	return res
}

// routeLabel turns a listed route "GET/goods" into the metric's label
// "GET /goods".
func routeLabel(u string) string {
	if i := strings.IndexByte(u, '/'); i > 0 {
		return u[:i] + " " + u[i:]
	}
	return u
}

// gather reads the gate's cumulative counts now.
func (f *fleet) gather(now time.Time) (*sample, error) {
	s := &sample{at: now, routes: map[string]*routeSample{}}
	if f.cfg.Metrics == nil {
		return s, nil
	}
	fams, err := f.cfg.Metrics.Gather()
	if err != nil {
		return nil, err
	}
	get := func(route string) *routeSample {
		rs := s.routes[route]
		if rs == nil {
			rs = &routeSample{}
			s.routes[route] = rs
		}
		return rs
	}
	for _, fam := range fams {
		switch fam.GetName() {
		case metricRequests:
			for _, m := range fam.GetMetric() {
				route, status := label(m, "route"), label(m, "status")
				rs := get(route)
				v := m.GetCounter().GetValue()
				rs.total += v
				if code, err := strconv.Atoi(status); err == nil {
					switch {
					case code >= 500 && code != gate.StatusClientGone:
						rs.errors += v
					case code >= 400 && code < 500:
						rs.client += v
					}
				}
			}
		case metricSeconds:
			for _, m := range fam.GetMetric() {
				h := m.GetHistogram()
				rs := get(label(m, "route"))
				rs.count = float64(h.GetSampleCount())
				rs.buckets = rs.buckets[:0]
				bounds := make([]float64, 0, len(h.GetBucket()))
				for _, b := range h.GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
					rs.buckets = append(rs.buckets, float64(b.GetCumulativeCount()))
				}
				s.bounds = bounds
			}
		}
	}
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// record keeps cur among the samples and returns the one to compute rates
// from (nil when there is none older than cur).
func (f *fleet) record(cur *sample) *sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := f.samples[:0]
	for _, s := range f.samples {
		if cur.at.Sub(s.at) <= keepSnapshots && !s.at.After(cur.at) {
			keep = append(keep, s)
		}
	}
	f.samples = keep
	// Prefer a sample from one to two windows ago, else the oldest younger
	// than that (the view just opened: a shorter span, but a current one),
	// else the newest of the stale ones (nobody asked for a while).
	var base, recent, stale *sample
	for i := range f.samples {
		s := &f.samples[i]
		switch age := cur.at.Sub(s.at); {
		case age > 2*f.cfg.Window:
			stale = s
		case age >= f.cfg.Window:
			base = s
		case recent == nil:
			recent = s
		}
	}
	if base == nil {
		base = recent
	}
	if base == nil {
		base = stale
	}
	if base != nil {
		b := *base // a copy: the slice below may move
		base = &b
	}
	if n := len(f.samples); n == 0 || cur.at.Sub(f.samples[n-1].at) >= snapshotEvery {
		if n >= maxSnapshots {
			f.samples = slices.Delete(f.samples, 0, n-maxSnapshots+1)
		}
		f.samples = append(f.samples, *cur)
	}
	if base != nil && !cur.at.After(base.at) {
		return nil
	}
	return base
}

// stats sums the routes' figures between base and cur.
func stats(cur, base *sample, window float64, routes ...string) Stats {
	var st Stats
	var count float64
	var buckets []float64
	for _, route := range routes {
		c := cur.routes[route]
		if c == nil {
			continue
		}
		st.Total += c.total
		if base == nil || window <= 0 {
			continue
		}
		b := base.routes[route]
		if b == nil {
			b = &routeSample{}
		}
		st.RPS += max(c.total-b.total, 0)
		st.Errors += max(c.errors-b.errors, 0)
		st.Client += max(c.client-b.client, 0)
		count += max(c.count-b.count, 0)
		if buckets == nil {
			buckets = make([]float64, len(cur.bounds))
		}
		for i := range buckets {
			var cv, bv float64
			if i < len(c.buckets) {
				cv = c.buckets[i]
			}
			if i < len(b.buckets) {
				bv = b.buckets[i]
			}
			buckets[i] += max(cv-bv, 0)
		}
	}
	if window > 0 {
		st.RPS, st.Errors, st.Client = st.RPS/window, st.Errors/window, st.Client/window
	}
	if count > 0 && len(cur.bounds) > 0 {
		q := quantile(0.99, cur.bounds, buckets, count)
		st.P99 = &q
	}
	return st
}

// quantile estimates the q-quantile from cumulative bucket counts (bounds
// ascending, the +Inf bucket implicit in count), interpolating linearly
// within the bucket as Prometheus's histogram_quantile does; past the last
// finite bound it answers that bound.
func quantile(q float64, bounds, cumulative []float64, count float64) float64 {
	rank := q * count
	lower, below := 0.0, 0.0
	for i, ub := range bounds {
		c := cumulative[i]
		if c >= rank {
			if c == below {
				return ub
			}
			return lower + (ub-lower)*(rank-below)/(c-below)
		}
		lower, below = ub, c
	}
	if len(bounds) == 0 {
		return 0
	}
	return bounds[len(bounds)-1]
}
