package gate

import (
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
		Help: "HTTP requests the gate answered, by route (\"METHOD /path\" of a listed route, \"GET /chat\" for chat sockets, \"unmatched\" otherwise) and status (499: the client went away).",
	}, []string{"route", "status"})
	httpSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "microshop_gate_request_seconds",
		Help:    "Time the gate took to answer an HTTP request, limits and token check included, by route (chat sockets are not timed).",
		Buckets: service.LatencyBuckets,
	}, []string{"route"})
	rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_gate_rate_limited_total",
		Help: "Requests refused with 429, by the limit that refused them: address, strict (logins and writes per address) or member.",
	}, []string{"limit"})
	chatClients = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "microshop_gate_chat_clients",
		Help: "Chat sockets open on the gate.",
	})
	chatReceived = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "microshop_gate_chat_messages_total",
		Help: "Chat messages the gate received from its Redis subscription (each is fanned out to the room's local clients).",
	})
	chatDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_gate_chat_disconnects_total",
		Help: "Chat sockets the gate closed, by reason: slow (send queue overflowed), shutdown, session (their session ended).",
	}, []string{"reason"})
	connsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "microshop_gate_conns_refused_total",
		Help: "HTTP connections the gate closed at once because it had too many, in all or from their address (see --max-conns).",
	})
)

// Collectors returns the gate's metrics, for a Prometheus registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{httpRequests, httpSeconds, rateLimited, chatClients, chatReceived, chatDropped, connsRefused}
}

// observe records one answered HTTP request; route is its metric label
// (see routeLabel).
func observe(route string, status int, took time.Duration) {
	httpRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	if route != chatRoute { // a socket's life is not a latency
		httpSeconds.WithLabelValues(route).Observe(took.Seconds())
	}
}

// chatRoute is the label of chat sockets.
const chatRoute = "GET /chat"
