package service

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of every Server in the process, labelled by service name. They
// are not registered anywhere by this package: a program exposes them by
// registering Collectors() with its Prometheus registry.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_service_requests_total",
		Help: "Requests a service answered, by service, route (\"METHOD /path\", as the gate's metrics spell it; \"unknown\" for routes it does not serve) and errorcode (0 for success, otherwise the HTTP status).",
	}, []string{"service", "route", "code"})
	requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "microshop_service_request_seconds",
		Help:    "Time a service took to answer a request, from its arrival to the answer being written, by service and route.",
		Buckets: LatencyBuckets,
	}, []string{"service", "route"})
	connsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_service_conns_refused_total",
		Help: "Connections a service closed at once because it had too many, in all or from their host (see --max-conns).",
	}, []string{"service"})
	inFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "microshop_service_in_flight",
		Help: "Requests a service is handling now.",
	}, []string{"service"})
	clientCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_client_calls_total",
		Help: "Calls a Client (in a gate, or in a service calling another) made, by outcome: ok (an answer came), retried (a GET or DELETE sent again after its instance was lost), no_instance, lost (the instance was lost with the call in flight and it could not be sent again), timeout, canceled (the caller gave up first: its HTTP client went away), error.",
	}, []string{"outcome"})
	hedgeEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_client_hedges_total",
		Help: "Hedged GETs, by result: sent (a slow GET was also sent to another instance) and won (the hedge's answer came first).",
	}, []string{"result"})
	instanceEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_client_instance_events_total",
		Help: "What a Client saw of its instances, by event: silent (sent nothing past the heartbeat timeout: marked down), back (answering again after that), ejected (calls in a row timed out), readmitted (answered a probe after an ejection).",
	}, []string{"event"})
)

// clientCallsBy holds clientCalls' children by outcome, resolved once.
var clientCallsBy = func() map[string]prometheus.Counter {
	m := map[string]prometheus.Counter{}
	for _, o := range []string{"ok", "retried", "no_instance", "lost", "timeout", "canceled", "error"} {
		m[o] = clientCalls.WithLabelValues(o)
	}
	return m
}()

// LatencyBuckets are the bounds, in seconds, of microshop's latency
// histograms: from half a millisecond (a cached read) to 10 s (past any
// request timeout).
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}

// Collectors returns the package's metrics, for a Prometheus registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{requestsTotal, requestSeconds, inFlight, connsRefused, clientCalls, hedgeEvents, instanceEvents}
}

// serverMetrics holds a Server's metric children, resolved once per route
// so that a request costs no label lookup for its latency.
type serverMetrics struct {
	name     string
	seconds  map[string]prometheus.Observer // by route key "METHOD/path"
	labels   map[string]string              // route key → label "METHOD /path"
	inFlight prometheus.Gauge
}

// routeLabel spells a route key "METHOD/path" as the metrics do, "METHOD
// /path": one spelling for the gate's and the services' metrics.
func routeLabel(route string) string {
	if i := strings.IndexByte(route, '/'); i > 0 {
		return route[:i] + " " + route[i:]
	}
	return route
}

func newServerMetrics(name string, routes map[string]Handler) *serverMetrics {
	m := &serverMetrics{name: name, seconds: make(map[string]prometheus.Observer, len(routes)+1), labels: make(map[string]string, len(routes)+1),
		inFlight: inFlight.WithLabelValues(name)}
	for r := range routes {
		m.labels[r] = routeLabel(r)
		m.seconds[r] = requestSeconds.WithLabelValues(name, m.labels[r])
	}
	m.labels["unknown"] = "unknown"
	m.seconds["unknown"] = requestSeconds.WithLabelValues(name, "unknown")
	return m
}

// done records one answered request.
func (m *serverMetrics) done(route string, code int, took time.Duration) {
	obs, ok := m.seconds[route]
	if !ok {
		route, obs = "unknown", m.seconds["unknown"]
	}
	obs.Observe(took.Seconds())
	requestsTotal.WithLabelValues(m.name, m.labels[route], strconv.Itoa(code)).Inc()
}
