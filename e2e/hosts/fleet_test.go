package hosts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/microshop/microshop/internal/proctest"
)

// The fleet of the fault tests, one part per host:
//
//	d1, d2   a distributor each (port 9000)
//	gate     the gate (8000; metrics on 9100)
//	g1, g2   a goods instance each (9010; metrics on 9100)
//	svc      members (9020) and purchases (9030)
//	redis    a private redis-server (6379)
//	db       a private MariaDB (3306)
//
// Every microshop process is given both distributors (--distributor
// D1:9000,D2:9000) and --fleet-key none; the gate runs --auth=off without
// rate limits, as the book's open API.
var fleetHosts = []string{"d1", "d2", "gate", "g1", "g2", "svc", "redis", "db"}

const (
	distributorPort = 9000
	gatePort        = 8000
	goodsPort       = 9010
	membersPort     = 9020
	purchasesPort   = 9030
	metricsPort     = 9100
)

type fleet struct {
	t     *testing.T
	net   *Network
	hosts map[string]*Host

	distributors string // the --distributor value: D1:9000,D2:9000
	db, redis    string // DSN and URL of the private servers

	gate        *proctest.Proc
	dists       []*proctest.Proc // on d1, d2
	purchases   *proctest.Proc   // a caller of goods, on svc
	gateURL     string           // http://GATE:8000
	gateMetrics string           // GATE:9100
	goods       []*goodsInstance

	client    *http.Client // to the gate, from the root namespace
	transport *http.Transport
	scraper   *http.Client // to metrics listeners: short timeout, no reuse
}

// goodsInstance is one goods process, alone on its host.
type goodsInstance struct {
	host    *Host
	proc    *proctest.Proc
	addr    string // host:9010, as listed by the distributors
	metrics string // host:9100
}

// newFleet builds the fleet's hosts (plus extraHosts, left empty), starts
// Redis, MariaDB, both distributors, goods on g1 and g2, members and
// purchases on svc and the gate, and waits until both distributors list
// every process and the gate has served a GET through each goods instance.
func newFleet(t *testing.T, extraHosts ...string) *fleet {
	t.Helper()
	start := time.Now()
	n := NewNetwork(t)
	f := &fleet{t: t, net: n, hosts: map[string]*Host{}}
	f.transport = &http.Transport{
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}
	f.client = &http.Client{Timeout: 15 * time.Second, Transport: f.transport}
	f.scraper = &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	// A polite client: an idle keep-alive connection holds up the gate's
	// graceful shutdown.
	n.BeforeStop(f.transport.CloseIdleConnections)
	for _, name := range append(slices.Clone(fleetHosts), extraHosts...) {
		f.hosts[name] = n.AddHost(name)
	}
	f.redis = StartRedis(f.hosts["redis"])
	f.db = StartMariaDB(f.hosts["db"])
	servers := time.Now()
	f.distributors = f.hosts["d1"].Addr(distributorPort) + "," + f.hosts["d2"].Addr(distributorPort)
	for _, d := range []string{"d1", "d2"} {
		h := f.hosts[d]
		p := f.microshop(h, "distributor", "--addr", h.Addr(distributorPort), "--log-level", "debug")
		proctest.WaitDial(t, h.Addr(distributorPort), p, startTimeout)
		f.dists = append(f.dists, p)
	}
	f.startGoods(f.hosts["g1"])
	f.startGoods(f.hosts["g2"])
	svc := f.hosts["svc"]
	members := f.service(svc, "members", membersPort)
	f.purchases = f.service(svc, "purchases", purchasesPort)
	gh := f.hosts["gate"]
	f.gateURL = "http://" + gh.Addr(gatePort)
	f.gateMetrics = gh.Addr(metricsPort)
	f.gate = f.microshop(gh, "gate", "--addr", gh.Addr(gatePort), "--redis", f.redis,
		"--auth=off", "--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0",
		"--log-level", "debug", "--metrics-addr", f.gateMetrics)
	for _, g := range f.goods {
		proctest.WaitDial(t, g.addr, g.proc, startTimeout)
	}
	proctest.WaitDial(t, svc.Addr(membersPort), members, startTimeout)
	proctest.WaitDial(t, svc.Addr(purchasesPort), f.purchases, startTimeout)
	proctest.WaitDial(t, gh.Addr(gatePort), f.gate, startTimeout)
	listening := time.Now()
	for _, d := range []string{"d1", "d2"} {
		f.waitList(d, f.fullList(), startTimeout)
	}
	listed := time.Now()
	f.waitServing(f.goods...)
	t.Logf("fleet up on %d hosts of %s in %v (hosts, Redis and MariaDB %v; microshop listening %v; both lists full %v; serving through both goods %v)",
		len(f.hosts), n.prefix, time.Since(start).Round(time.Millisecond), servers.Sub(start).Round(time.Millisecond),
		listening.Sub(servers).Round(time.Millisecond), listed.Sub(listening).Round(time.Millisecond), time.Since(listed).Round(time.Millisecond))
	return f
}

// microshop starts `microshop cmd args...` on h with the flags every process
// of the fleet gets.
func (f *fleet) microshop(h *Host, cmd string, args ...string) *proctest.Proc {
	f.t.Helper()
	common := []string{cmd, "--fleet-key", "none"}
	if cmd != "distributor" { // it registers nowhere: no --distributor
		common = append(common, "--distributor", f.distributors)
	}
	return h.Start(cmd, binary, append(common, args...)...)
}

// service starts service cmd on h at port, on the fleet's database and Redis.
func (f *fleet) service(h *Host, cmd string, port int, extra ...string) *proctest.Proc {
	f.t.Helper()
	return f.microshop(h, cmd, append([]string{"--addr", h.Addr(port), "--db", f.db, "--redis", f.redis, "--log-level", "info"}, extra...)...)
}

// startGoods starts a goods instance on h, with its metrics on h:9100. It
// does not wait for it.
func (f *fleet) startGoods(h *Host) *goodsInstance {
	f.t.Helper()
	g := &goodsInstance{host: h, addr: h.Addr(goodsPort), metrics: h.Addr(metricsPort)}
	g.proc = f.service(h, "goods", goodsPort, "--metrics-addr", g.metrics)
	f.goods = append(f.goods, g)
	return g
}

// instance returns the goods instance on host name.
func (f *fleet) instance(name string) *goodsInstance {
	for _, g := range f.goods {
		if g.host.Name == name {
			return g
		}
	}
	f.t.Fatalf("no goods instance on host %s", name)
	return nil
}

// fullList is what every distributor must list: the gate, every goods
// instance, members and purchases (other names are not counted).
func (f *fleet) fullList() map[string]int {
	return map[string]int{"gate": 1, "goods": len(f.goods), "members": 1, "purchases": 1}
}

// waitList watches distributor d's list until it holds want; it fails the
// test after timeout.
func (f *fleet) waitList(d string, want map[string]int, timeout time.Duration) {
	f.t.Helper()
	nodes, err := watchList(f.hosts[d].Addr(distributorPort), timeout, f.net.CheckAlive, func(nodes []node) bool { return holds(nodes, want) })
	if err != nil {
		f.net.CheckAlive()
		f.t.Fatalf("the list of distributor %s never held %v within %v: %v (last list: %v)%s", d, want, timeout, err, nodes, f.warnings())
	}
}

// holds reports whether nodes holds exactly want[name] processes of every
// name in want.
func holds(nodes []node, want map[string]int) bool {
	got := map[string]int{}
	for _, n := range nodes {
		got[n.Name]++
	}
	for name, k := range want {
		if got[name] != k {
			return false
		}
	}
	return true
}

// waitServing polls GET /goods through the gate until every instance in gs
// has answered one (its counter moved), and fails the test after
// startTimeout.
func (f *fleet) waitServing(gs ...*goodsInstance) {
	f.t.Helper()
	deadline := time.Now().Add(startTimeout)
	var last string
	for {
		status, body, err := f.do("GET", "/goods", nil)
		switch {
		case err != nil:
			last = err.Error()
		case status != http.StatusOK:
			last = fmt.Sprintf("HTTP %d %s", status, body)
		default:
			last = "GET /goods answers 200, but not every instance has served one"
			all := true
			for _, g := range gs {
				if v, err := f.served(g, "0"); err != nil || v == 0 {
					all = false
				}
			}
			if all {
				return
			}
		}
		f.net.CheckAlive()
		if time.Now().After(deadline) {
			f.t.Fatalf("the gate does not serve GET /goods through %v within %v; last: %s%s", instanceNames(gs), startTimeout, last, f.warnings())
		}
		time.Sleep(pollEvery)
	}
}

// warnings returns, for a failure message, the last warning or error each
// process logged (slog's level=WARN or level=ERROR), if any.
func (f *fleet) warnings() string {
	var b strings.Builder
	for _, p := range f.net.Procs() {
		var last string
		for _, line := range p.LogLines("level=") {
			if strings.Contains(line, "level=WARN") && !strings.Contains(line, "--fleet-key=none") && !strings.Contains(line, "--auth=off") ||
				strings.Contains(line, "level=ERROR") {
				last = line
			}
		}
		if last != "" {
			fmt.Fprintf(&b, "\n  %s, last warning: %s", p.Name, strings.TrimSpace(last))
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "; the processes' last warnings:" + b.String()
}

func instanceNames(gs []*goodsInstance) []string {
	var s []string
	for _, g := range gs {
		s = append(s, g.host.Name)
	}
	return s
}

// ─── HTTP ────────────────────────────────────────────────────────────────

// do sends one request to the gate; it is safe from any goroutine.
func (f *fleet) do(method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.gateURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// good is a good as the API answers it.
type good struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Category    string `json:"category"`
	Price       int64  `json:"price"`
	Description string `json:"description"`
}

// seedGoods creates n goods through the gate and returns them.
func (f *fleet) seedGoods(n int) []good {
	f.t.Helper()
	var gs []good
	for i := range n {
		g := good{Name: fmt.Sprintf("good %d of %s", i+1, f.net.id), Category: "hosts", Price: int64(100 + i), Description: "seeded by e2e/hosts"}
		body, _ := json.Marshal(map[string]any{"name": g.Name, "category": g.Category, "price": g.Price, "description": g.Description})
		status, b, err := f.do("POST", "/goods", body)
		if err != nil || status != http.StatusOK {
			f.net.CheckAlive()
			f.t.Fatalf("POST /goods: HTTP %d %s %v", status, b, err)
		}
		var a struct {
			ErrorCode *int   `json:"errorcode"`
			ID        *int64 `json:"id"`
		}
		if err := json.Unmarshal(b, &a); err != nil || a.ErrorCode == nil || *a.ErrorCode != 0 || a.ID == nil || *a.ID <= 0 {
			f.t.Fatalf("POST /goods: want errorcode 0 and a positive id, got %s", b)
		}
		g.ID = *a.ID
		gs = append(gs, g)
	}
	return gs
}

// checkGood returns what is wrong with an answer to GET /goods?id=want.ID,
// or "".
func checkGood(status int, body []byte, want good) string {
	if status != http.StatusOK {
		return fmt.Sprintf("HTTP %d %.200s", status, body)
	}
	var a struct {
		ErrorCode *int   `json:"errorcode"`
		Results   []good `json:"results"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Sprintf("HTTP 200, not the expected JSON (%v): %.200s", err, body)
	}
	if a.ErrorCode == nil || *a.ErrorCode != 0 || len(a.Results) != 1 || a.Results[0] != want {
		return fmt.Sprintf("HTTP 200 but not exactly good %d (%q): %.200s", want.ID, want.Name, body)
	}
	return ""
}

// ─── load ────────────────────────────────────────────────────────────────

// load is a set of clients each doing GET /goods?id=N, one after the other,
// for random N of the seeded goods, recording every request.
type load struct {
	f     *fleet
	goods []good
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once

	mu      sync.Mutex
	samples []sample
}

// sample is one GET: when it started, how long it took, what went wrong.
type sample struct {
	start time.Time
	took  time.Duration
	err   string // "" for a good answer
}

// startLoad starts clients clients; Stop (or the test's end) stops them.
func (f *fleet) startLoad(goods []good, clients int) *load {
	l := &load{f: f, goods: goods, stop: make(chan struct{})}
	for range clients {
		l.wg.Go(l.client)
	}
	f.t.Cleanup(func() { l.Stop() })
	return l
}

func (l *load) client() {
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		g := l.goods[mrand.IntN(len(l.goods))]
		start := time.Now()
		status, body, err := l.f.do("GET", "/goods?id="+strconv.FormatInt(g.ID, 10), nil)
		s := sample{start: start, took: time.Since(start)}
		if err != nil {
			s.err = err.Error()
		} else {
			s.err = checkGood(status, body, g)
		}
		l.mu.Lock()
		l.samples = append(l.samples, s)
		l.mu.Unlock()
	}
}

// Stop stops the clients, waits for their requests in flight, and returns
// every sample.
func (l *load) Stop() []sample {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.samples)
}

// stats summarises the samples that started in [from, to).
type stats struct {
	n, failed     int
	max, p50, p99 time.Duration
	slowest       time.Time       // when the slowest started
	durations     []time.Duration // sorted
	firstFailures []string
}

func summarize(samples []sample, from, to time.Time) stats {
	var s stats
	for _, x := range samples {
		if x.start.Before(from) || !x.start.Before(to) {
			continue
		}
		s.n++
		s.durations = append(s.durations, x.took)
		if x.took > s.max {
			s.max, s.slowest = x.took, x.start
		}
		if x.err != "" {
			s.failed++
			if len(s.firstFailures) < 5 {
				s.firstFailures = append(s.firstFailures, fmt.Sprintf("%s after %v: %s", x.start.Format("15:04:05.000"), x.took.Round(time.Millisecond), x.err))
			}
		}
	}
	slices.Sort(s.durations)
	if k := len(s.durations); k > 0 {
		s.p50 = s.durations[k/2]
		s.p99 = s.durations[min(k-1, k*99/100)]
	}
	return s
}

// over returns how many of the GETs took longer than d.
func (s stats) over(d time.Duration) int {
	i, _ := slices.BinarySearch(s.durations, d+1)
	return len(s.durations) - i
}

func (s stats) String() string {
	return fmt.Sprintf("%d GETs, %d failed, p50 %v, p99 %v, max %v", s.n, s.failed,
		s.p50.Round(100*time.Microsecond), s.p99.Round(100*time.Microsecond), s.max.Round(time.Millisecond))
}

// ─── metrics ─────────────────────────────────────────────────────────────

// scrape reads the metrics served at addr.
func (f *fleet) scrape(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := f.scraper.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", addr, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// served returns how many GET /goods instance g has answered with code
// ("0" for a success, "404" for an unknown good):
// microshop_service_requests_total{service="goods",route="GET /goods",code=code}.
func (f *fleet) served(g *goodsInstance, code string) (float64, error) {
	m, err := f.scrape(g.metrics)
	if err != nil {
		return 0, err
	}
	return metricValue(m, "microshop_service_requests_total", "service", "goods", "route", "GET /goods", "code", code), nil
}

// clientCounters returns the gate's counters of its calls to instances
// (every microshop_client_* and microshop_router_* counter), keyed by
// family and labels; nil when the gate cannot be scraped.
func (f *fleet) clientCounters() map[string]float64 {
	m, err := f.scrape(f.gateMetrics)
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for name, fam := range m {
		if !strings.HasPrefix(name, "microshop_client_") && !strings.HasPrefix(name, "microshop_router_") {
			continue
		}
		for _, mt := range fam.Metric {
			if mt.GetCounter() == nil {
				continue
			}
			var labels []string
			for _, lp := range mt.Label {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			out[strings.TrimPrefix(name, "microshop_")+"{"+strings.Join(labels, ",")+"}"] += mt.GetCounter().GetValue()
		}
	}
	return out
}

// diffCounters formats after - before, counter by counter (those that
// moved).
func diffCounters(before, after map[string]float64) string {
	if before == nil || after == nil {
		return "(gate metrics unavailable)"
	}
	var keys []string
	for k := range after {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		if d := after[k] - before[k]; d != 0 {
			parts = append(parts, fmt.Sprintf("%s +%v", k, d))
		}
	}
	if len(parts) == 0 {
		return "none moved"
	}
	return strings.Join(parts, ", ")
}

// metricValue returns the value of the counter or gauge of family name with
// the label pairs given (0 when absent).
func metricValue(m map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	fam := m[name]
	if fam == nil {
		return 0
	}
next:
	for _, mt := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(mt.Label, func(lp *dto.LabelPair) bool {
				return lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}) {
				continue next
			}
		}
		if c := mt.GetCounter(); c != nil {
			return c.GetValue()
		}
		return mt.GetGauge().GetValue()
	}
	return 0
}

// waitServed polls g's counter of answers with code until it reaches at
// least target, and returns how long it took from since; ok is false after
// timeout (from since).
func (f *fleet) waitServed(g *goodsInstance, code string, target float64, since time.Time, timeout time.Duration) (took time.Duration, last float64, ok bool) {
	for {
		if v, err := f.served(g, code); err == nil {
			last = v
			if v >= target {
				return time.Since(since), v, true
			}
		}
		f.net.CheckAlive()
		if time.Since(since) > timeout {
			return time.Since(since), last, false
		}
		time.Sleep(pollEvery)
	}
}

// missingGood is an id no test creates: GET /goods?id=missingGood is a 404.
const missingGood = 987654321

// startMarks sends GET /goods?id=missingGood through the gate every
// pollEvery until the returned function is called. Instances count those
// answers under code="404", apart from the load's: a 404 counted by an
// instance after startMarks proves that it answered a request sent after
// then, not one that had been waiting in a socket buffer.
func (f *fleet) startMarks() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			f.do("GET", "/goods?id="+strconv.Itoa(missingGood), nil)
			select {
			case <-done:
				return
			case <-time.After(pollEvery):
			}
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
	f.t.Cleanup(stop)
	return stop
}

// ─── logs ────────────────────────────────────────────────────────────────

// Words of the log lines that say a process was marked down or dropped
// from a list, and back.
var (
	downWords = []string{"marked down", "silent", "ejected", "unresponsive", "connection lost", "dropped", "left"}
	backWords = []string{"again", "re-admitted", "readmitted", "back in rotation", "registered"}
)

// logged looks in p's log for the first line after t0 that names addr
// (addr=ADDR) and contains one of words, and returns how long after t0 it
// was logged. It reads a figure only: nothing waits on a log line.
func logged(p *proctest.Proc, addr string, t0 time.Time, words []string) (time.Duration, string, bool) {
	for _, line := range p.LogLines("addr=" + addr) {
		lower := strings.ToLower(line)
		if strings.Contains(lower, "connected to instance") ||
			!slices.ContainsFunc(words, func(w string) bool { return strings.Contains(lower, w) }) {
			continue
		}
		at, ok := logTime(line)
		if !ok || at.Before(t0) {
			continue
		}
		return at.Sub(t0), line, true
	}
	return 0, "", false
}

// logDetection logs, for the gate, the distributors and purchases (which
// calls goods), when each logged that g went down after faultAt and came
// back after healAt, from their log lines' timestamps.
func (f *fleet) logDetection(g *goodsInstance, faultAt, healAt time.Time) {
	f.t.Helper()
	for _, p := range append([]*proctest.Proc{f.gate, f.purchases}, f.dists...) {
		if d, line, ok := logged(p, g.addr, faultAt, downWords); ok && d < healAt.Sub(faultAt) {
			f.t.Logf("detection: %s logged %s down %v after the fault: %s", p.Name, g.host.Name, d.Round(time.Millisecond), logMessage(line))
		} else {
			f.t.Logf("detection: %s logged nothing about %s (%s) during the fault", p.Name, g.host.Name, g.addr)
		}
		if d, line, ok := logged(p, g.addr, healAt, backWords); ok {
			f.t.Logf("recovery: %s logged %s back %v after the heal: %s", p.Name, g.host.Name, d.Round(time.Millisecond), logMessage(line))
		}
	}
}

// logMessage returns the msg= field of a slog text line (the line when it
// has none).
func logMessage(line string) string {
	_, rest, ok := strings.Cut(line, "msg=")
	if !ok {
		return strings.TrimSpace(line)
	}
	if strings.HasPrefix(rest, `"`) {
		if v, err := strconv.QuotedPrefix(rest); err == nil {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
		}
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}

// logTime parses the time= field of a slog text line.
func logTime(line string) (time.Time, bool) {
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		return time.Time{}, false
	}
	v, _, _ := strings.Cut(rest, " ")
	at, err := time.Parse(time.RFC3339Nano, strings.Trim(v, `"`))
	return at, err == nil
}

// ─── the distributor's list, watched over raw TCP ──────────────────────────

// node is one entry of a distributor's list.
type node struct {
	Name string   `json:"name"`
	Host string   `json:"host"`
	Port int      `json:"port"`
	URLs []string `json:"urls"`
}

func (n node) String() string {
	host := n.Host
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return n.Name + "@" + net.JoinHostPort(host, strconv.Itoa(n.Port))
}

// watchList connects to the distributor at addr without registering (it
// then pushes its list at once, and on every change) and reads lists until
// ok accepts one or timeout passes; a connection that fails (the
// distributor restarted, or drops quiet watchers) is dialled again. It
// returns the last list seen. It calls alive between reads.
func watchList(addr string, timeout time.Duration, alive func(), ok func([]node) bool) ([]node, error) {
	deadline := time.Now().Add(timeout)
	var last []node
	for {
		nodes, err := watchOnce(addr, deadline, alive, ok)
		if nodes != nil {
			last = nodes
		}
		if err == nil || !time.Now().Before(deadline) {
			return last, err
		}
		time.Sleep(pollEvery)
	}
}

// watchOnce is watchList on one connection.
func watchOnce(addr string, deadline time.Time, alive func(), ok func([]node) bool) ([]node, error) {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r := &packetReader{r: c, tmp: make([]byte, 32<<10)}
	var last []node
	for {
		rd := time.Now().Add(200 * time.Millisecond)
		if rd.After(deadline) {
			rd = deadline
		}
		c.SetReadDeadline(rd)
		p, err := r.next()
		if isTimeout(err) && time.Now().Before(deadline) {
			alive()
			continue
		}
		if err != nil {
			return last, err
		}
		if nodes, isList := decodeList(p); isList {
			last = nodes
			if ok(nodes) {
				return nodes, nil
			}
		}
	}
}

// decodeList parses a list push: any packet whose params is an array.
func decodeList(p []byte) ([]node, bool) {
	var m struct {
		Params json.RawMessage `json:"params"`
	}
	if json.Unmarshal(p, &m) != nil || len(m.Params) == 0 || m.Params[0] != '[' {
		return nil, false
	}
	var nodes []node
	if json.Unmarshal(m.Params, &nodes) != nil {
		return nil, false
	}
	return nodes, true
}

// sep is the packet separator ¶ (C2 B6).
var sep = []byte("\xc2\xb6")

// packetReader splits a stream into packets (the tests' own reader, so that
// they check the code under test rather than trust it).
type packetReader struct {
	r        io.Reader
	buf, tmp []byte
}

func (p *packetReader) next() ([]byte, error) {
	for {
		if i := bytes.Index(p.buf, sep); i >= 0 {
			pkt := bytes.Clone(p.buf[:i])
			p.buf = p.buf[i+len(sep):]
			return pkt, nil
		}
		n, err := p.r.Read(p.tmp)
		p.buf = append(p.buf, p.tmp[:n]...)
		if err != nil {
			if n > 0 {
				continue
			}
			if len(p.buf) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}
