package gate

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microshop/microshop/service"
)

// The gate's metrics. This package registers them nowhere: a program
// exposes them by registering Collectors() with its Prometheus registry.
var (
	httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_gate_requests_total",
		Help: "HTTP requests the gate answered, by route (\"METHOD /path\" of a listed route or of one the gate serves itself, \"unmatched\" otherwise) and status (499: the client went away).",
	}, []string{"route", "status"})
	httpSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "microshop_gate_request_seconds",
		Help:    "Time the gate took to answer an HTTP request, admission (limits, token) included, by route (connections taken over, such as WebSockets, are not timed).",
		Buckets: service.LatencyBuckets,
	}, []string{"route"})
	connsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "microshop_gate_conns_refused_total",
		Help: "HTTP connections the gate closed at once because it had too many, in all or from their address (see --max-conns).",
	})
)

// Collectors returns the gate's metrics, for a Prometheus registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{httpRequests, httpSeconds, connsRefused}
}

// observe records one answered HTTP request; route is its metric label.
func observe(route string, status int, took time.Duration) {
	httpRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	if status != http.StatusSwitchingProtocols { // a socket's life is not a latency
		httpSeconds.WithLabelValues(route).Observe(took.Seconds())
	}
}
