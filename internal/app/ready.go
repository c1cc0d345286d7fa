package app

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/microshop/microshop/service"
)

// readiness records the address each listener of this process bound and
// reports, once the process is ready, the lot: in the file named by
// --ready-file (written atomically: a temporary file, then a rename) and on
// GET /readyz of the ops listener (503 before, 200 after). Tests wait on it
// instead of parsing log lines or guessing free ports.
type readiness struct {
	path string // --ready-file; empty = no file

	mu         sync.Mutex
	ready      bool
	components map[string]map[string]string   // component → listener → bound address
	peers      func() []service.InstanceState // the gate's instances; nil = not a gate
	checks     []check                        // what /readyz looks at
}

// check is one dependency /readyz looks at: the database, Redis, the
// distributor's list. A critical one failing makes the process not ready
// (503); another makes it degraded (200, named in "degraded").
type check struct {
	name     string
	critical bool
	run      func(context.Context) error
}

// checkTimeout bounds each check of /readyz.
const checkTimeout = time.Second

// readyState is the JSON of the ready file and of /readyz.
type readyState struct {
	Pid        int                          `json:"pid"`
	Ready      bool                         `json:"ready"`
	Components map[string]map[string]string `json:"components"`
	// Peers are the instances the gate keeps a connection to, and whether
	// each is up now: on /readyz only (the file is written once).
	Peers *[]service.InstanceState `json:"peers,omitempty"`
	// Checks tell, on /readyz only, each dependency "ok" or what is wrong;
	// Degraded names those that fail without making the process unready
	// (Redis: microshop is slower without it, not wrong).
	Checks   map[string]string `json:"checks,omitempty"`
	Degraded []string          `json:"degraded,omitempty"`
}

func newReadiness(path string) *readiness {
	return &readiness{path: path, components: map[string]map[string]string{}}
}

// listening records that component's listener is bound to addr.
func (r *readiness) listening(component, listener, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.components[component] == nil {
		r.components[component] = map[string]string{}
	}
	r.components[component][listener] = addr
}

// check adds a dependency for /readyz to look at.
func (r *readiness) check(name string, critical bool, run func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, check{name, critical, run})
}

// watch adds the checks of res: the database (critical) and Redis.
func (r *readiness) watch(res *resources) {
	if res == nil {
		return
	}
	if res.db != nil {
		r.check("database", true, func(ctx context.Context) error { return res.db.PingContext(ctx) })
	}
	if res.cache != nil {
		r.check("redis", false, func(ctx context.Context) error { return res.cache.Ping(ctx, checkTimeout) })
	}
}

// gatePeers makes /readyz report the instances of the gate's client.
func (r *readiness) gatePeers(c *service.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = c.Instances
}

// state is the JSON of the ready file (live false) or of /readyz (live:
// with the peers and the checks, run now), and whether the process is
// ready.
func (r *readiness) state(ctx context.Context, live bool) ([]byte, bool) {
	r.mu.Lock()
	st := readyState{Pid: os.Getpid(), Ready: r.ready, Components: r.components}
	peers, checks := r.peers, r.checks
	if !live {
		b, _ := json.Marshal(st)
		r.mu.Unlock()
		return b, st.Ready
	}
	b, _ := json.Marshal(st.Components) // a copy: the map may change once unlocked
	r.mu.Unlock()
	st.Components = nil
	json.Unmarshal(b, &st.Components)
	if peers != nil {
		p := peers()
		st.Peers = &p
	}
	if len(checks) > 0 {
		errs := make([]error, len(checks))
		var wg sync.WaitGroup
		for i, c := range checks {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(ctx, checkTimeout)
				defer cancel()
				errs[i] = c.run(ctx)
			})
		}
		wg.Wait()
		st.Checks = map[string]string{}
		for i, c := range checks {
			switch {
			case errs[i] == nil:
				st.Checks[c.name] = "ok"
			case c.critical:
				st.Checks[c.name] = "failing: " + brief(errs[i])
				st.Ready = false
			default:
				st.Checks[c.name] = "failing: " + brief(errs[i])
				st.Degraded = append(st.Degraded, c.name)
			}
		}
	}
	b, _ = json.Marshal(st)
	return b, st.Ready
}

// brief says what a failed check found without its details (addresses,
// names): /readyz is served on the gate's public port too.
func brief(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer within " + checkTimeout.String()
	}
	var nl *notListed
	if errors.As(err, &nl) {
		return nl.Error()
	}
	return "unreachable"
}

// notListed is the gate's "list" check failing: no list from the
// distributor yet.
type notListed struct{}

func (*notListed) Error() string { return "no list from the distributor yet" }

// done marks the process ready and writes the ready file.
func (r *readiness) done() error {
	r.mu.Lock()
	r.ready = true
	r.mu.Unlock()
	if r.path == "" {
		return nil
	}
	b, _ := r.state(context.Background(), false)
	tmp, err := os.CreateTemp(filepath.Dir(r.path), ".ready-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), r.path)
}

// ServeHTTP answers GET /readyz: 200 and the state once ready and every
// critical check passes, 503 otherwise; a gate's adds its peers.
func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, ok := r.state(req.Context(), true)
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(b)
}

// public answers GET /readyz on the gate's public port: whether the
// process is ready, and its checks, without its pid, its listeners or its
// peers' addresses (the fleet's layout is the operator's, on the ops
// listener).
func (r *readiness) public() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, ok := r.state(req.Context(), true)
		var st readyState
		json.Unmarshal(b, &st)
		b, _ = json.Marshal(struct {
			Ready    bool              `json:"ready"`
			Checks   map[string]string `json:"checks,omitempty"`
			Degraded []string          `json:"degraded,omitempty"`
		}{st.Ready, st.Checks, st.Degraded})
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write(b)
	})
}

// healthz answers GET /healthz: 200 while the process runs (liveness; see
// /readyz for readiness).
var healthz = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"status":"ok"}`))
})

// listenerName names a component's main listener in the ready file.
func listenerName(c component) string {
	if c.kind == kindGate {
		return "http"
	}
	return "packet"
}
