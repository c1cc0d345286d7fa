package chatws

import "github.com/prometheus/client_golang/prometheus"

// The chat sockets' metrics. This package registers them nowhere: a
// program registers Collectors() with its Prometheus registry.
var (
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
)

// Collectors returns the package's metrics, for a Prometheus registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{chatClients, chatReceived, chatDropped}
}
