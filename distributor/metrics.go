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
		Help: "Times the distributor pushed the full list to every connection after a change.",
	})
)

// Collectors returns the distributor's metrics, for a Prometheus registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{registered, broadcasts}
}
