package app

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/edge/auth"
	"github.com/microshop/microshop/internal/edge/chatws"
	"github.com/microshop/microshop/service"
)

// serveOps serves Go's profiler (/debug/pprof/) on debugAddr and the
// Prometheus metrics (/metrics) on metricsAddr until ctx is done; an empty
// address turns its part off, and one address may serve both. Bind the
// profiler to loopback: profiles reveal internals. Both serve GET /readyz
// from rd and record their bound addresses in it.
func serveOps(ctx context.Context, debugAddr, metricsAddr string, rd *readiness, log *slog.Logger) error {
	muxes := map[string]*http.ServeMux{}
	mux := func(addr string) *http.ServeMux {
		if muxes[addr] == nil {
			muxes[addr] = http.NewServeMux()
		}
		return muxes[addr]
	}
	if debugAddr != "" {
		m := mux(debugAddr)
		m.HandleFunc("/debug/pprof/", pprof.Index)
		m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		m.HandleFunc("/debug/pprof/profile", pprof.Profile)
		m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if metricsAddr != "" {
		mux(metricsAddr).Handle("/metrics", promhttp.HandlerFor(newRegistry(), promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	}
	for addr, m := range muxes {
		m.Handle("GET /readyz", rd)
		m.Handle("GET /healthz", healthz)
		ln, err := listen(addr)
		if err != nil {
			return err
		}
		if addr == debugAddr {
			rd.listening("ops", "debug", ln.Addr().String())
		}
		if addr == metricsAddr {
			rd.listening("ops", "metrics", ln.Addr().String())
		}
		srv := &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		context.AfterFunc(ctx, func() { srv.Close() })
		log.Info("ops listening", "addr", ln.Addr().String(), "pprof", addr == debugAddr, "metrics", addr == metricsAddr)
	}
	return nil
}

// newRegistry returns a registry of the Go runtime's and the process's
// metrics and microshop's own (those of components this process does not
// run stay at zero).
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(service.Collectors()...)
	reg.MustRegister(gate.Collectors()...)
	reg.MustRegister(auth.Collectors()...)
	reg.MustRegister(chatws.Collectors()...)
	reg.MustRegister(distributor.Collectors()...)
	return reg
}
