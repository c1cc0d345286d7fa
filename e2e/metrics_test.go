package e2e

import (
	"io"
	"net/http"
	"strconv"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/microshop/microshop/internal/proctest"
)

// TestMetrics scrapes --metrics-addr of a gate, a goods service and the
// distributor (separate processes) and checks that the counters moved by
// exactly the requests the test made.
func TestMetrics(t *testing.T) {
	f := newFleet(t, "")
	metricsAddr := func() string { return "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)) }
	distMetrics, gateMetrics, goodsMetrics := metricsAddr(), metricsAddr(), metricsAddr()
	f.distAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	dist := f.start("distributor", "distributor", "--addr", f.distAddr, "--fleet-key", "none", "--metrics-addr", distMetrics)
	f.waitDial(f.distAddr, dist)
	f.startGate("--metrics-addr", gateMetrics)
	f.startService("goods", "--metrics-addr", goodsMetrics)
	f.waitNodes(map[string]int{"gate": 1, "goods": 1})
	f.pollStatus("/goods", http.StatusOK, startTimeout)

	gateOK := func(m map[string]*dto.MetricFamily) float64 {
		return value(m, "microshop_gate_requests_total", "route", "GET /goods", "status", "200")
	}
	gateBad := func(m map[string]*dto.MetricFamily) float64 {
		return value(m, "microshop_gate_requests_total", "route", "GET /goods", "status", "400")
	}
	unmatched := func(m map[string]*dto.MetricFamily) float64 {
		return value(m, "microshop_gate_requests_total", "route", "unmatched", "status", "404")
	}
	svcOK := func(m map[string]*dto.MetricFamily) float64 {
		return value(m, "microshop_service_requests_total", "service", "goods", "route", "GET /goods", "code", "0")
	}
	svcBad := func(m map[string]*dto.MetricFamily) float64 {
		return value(m, "microshop_service_requests_total", "service", "goods", "route", "GET /goods", "code", "400")
	}
	g0, s0 := scrape(t, gateMetrics), scrape(t, goodsMetrics)
	for range 3 {
		expect(t, "GET /goods", f.get(t, "/goods"), http.StatusOK)
	}
	expect(t, "GET /goods?id=x", f.get(t, "/goods?id=x"), http.StatusBadRequest)
	expect(t, "GET /nowhere", f.get(t, "/nowhere"), http.StatusNotFound)
	g1, s1 := scrape(t, gateMetrics), scrape(t, goodsMetrics)

	for _, c := range []struct {
		what   string
		metric func(map[string]*dto.MetricFamily) float64
		before map[string]*dto.MetricFamily
		after  map[string]*dto.MetricFamily
		want   float64
	}{
		{"gate GET /goods 200", gateOK, g0, g1, 3},
		{"gate GET /goods 400", gateBad, g0, g1, 1},
		{"gate unmatched 404", unmatched, g0, g1, 1},
		{"goods GET/goods 0", svcOK, s0, s1, 3},
		{"goods GET/goods 400", svcBad, s0, s1, 1},
	} {
		if got := c.metric(c.after) - c.metric(c.before); got != c.want {
			t.Errorf("%s: went up by %v; want %v", c.what, got, c.want)
		}
	}
	if n := histogramCount(g1, "microshop_gate_request_seconds", "route", "GET /goods") - histogramCount(g0, "microshop_gate_request_seconds", "route", "GET /goods"); n != 4 {
		t.Errorf("gate latency histogram of GET /goods counted %d requests; want 4", n)
	}
	if n := value(scrape(t, distMetrics), "microshop_distributor_processes"); n != 2 {
		t.Errorf("distributor reports %v processes; want 2 (gate, goods)", n)
	}
	if _, ok := g1["go_goroutines"]; !ok {
		t.Error("the Go runtime's metrics are missing")
	}
}

// scrape fetches and parses the metrics at addr.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: HTTP %d %s", addr, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	m, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return m
}

// find returns the metric of family name with the label pairs given.
func find(m map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	fam := m[name]
	if fam == nil {
		return nil
	}
next:
	for _, mt := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range mt.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return mt
	}
	return nil
}

// value returns a counter's or gauge's value, 0 when it is absent.
func value(m map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mt := find(m, name, labels...)
	switch {
	case mt == nil:
		return 0
	case mt.Counter != nil:
		return mt.Counter.GetValue()
	case mt.Gauge != nil:
		return mt.Gauge.GetValue()
	}
	return 0
}

func histogramCount(m map[string]*dto.MetricFamily, name string, labels ...string) uint64 {
	if mt := find(m, name, labels...); mt != nil && mt.Histogram != nil {
		return mt.Histogram.GetSampleCount()
	}
	return 0
}
