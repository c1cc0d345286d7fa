package distributor

import "github.com/prometheus/client_golang/prometheus"

// The distributor's metrics. This package registers them nowhere: a
// program exposes them by registering Collectors() with its registry.
var (
	registered = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "microshop_distributor_processes",
		Help: "Processes registered with the distributor now.",
	})
	broadcasts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "microshop_distributor_broadcasts_total",
		Help: "Times the distributor pushed the list after a change (to every connection that had not had it; changes made meanwhile are pushed together).",
	})
	silentDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "microshop_distributor_silent_dropped_total",
		Help: "Processes the distributor dropped from the list because they sent nothing for longer than the heartbeat timeout (frozen, or their link cut).",
	})
	sessions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_distributor_client_sessions_total",
		Help: "Sessions of a process with its distributors, by event: up (a distributor answered a new connection), lost (the connection closed), silent (the distributor sent nothing past the heartbeat timeout).",
	}, []string{"event"})
	refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microshop_distributor_registrations_refused_total",
		Help: "Registrations the distributor refused, by reason: malformed (not a registration), invalid (a bad name, port or route), unsigned (not signed with the fleet's key), replay (not made for its connection).",
	}, []string{"reason"})
)

// refusedBy are refused's children, by reason.
var refusedBy = map[string]prometheus.Counter{}

func init() {
	for _, r := range []string{"malformed", "invalid", "unsigned", "replay"} {
		refusedBy[r] = refused.WithLabelValues(r)
	}
}

// Collectors returns the distributor's metrics, for a Prometheus registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{registered, broadcasts, silentDropped, sessions, refused}
}
