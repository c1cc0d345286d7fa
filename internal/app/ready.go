package app

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sync"

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
}

// readyState is the JSON of the ready file and of /readyz.
type readyState struct {
	Pid        int                          `json:"pid"`
	Ready      bool                         `json:"ready"`
	Components map[string]map[string]string `json:"components"`
	// Peers are the instances the gate keeps a connection to, and whether
	// each is up now: on /readyz only (the file is written once).
	Peers *[]service.InstanceState `json:"peers,omitempty"`
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

// gatePeers makes /readyz report the instances of the gate's client.
func (r *readiness) gatePeers(c *service.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = c.Instances
}

// state is the JSON of the ready file (withPeers false) or of /readyz.
func (r *readiness) state(withPeers bool) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := readyState{Pid: os.Getpid(), Ready: r.ready, Components: r.components}
	if withPeers && r.peers != nil {
		p := r.peers()
		st.Peers = &p
	}
	b, _ := json.Marshal(st)
	return b, r.ready
}

// done marks the process ready and writes the ready file.
func (r *readiness) done() error {
	r.mu.Lock()
	r.ready = true
	r.mu.Unlock()
	if r.path == "" {
		return nil
	}
	b, _ := r.state(false)
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

// ServeHTTP answers GET /readyz: 200 and the state once ready, 503 before;
// a gate's adds its peers.
func (r *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	b, ok := r.state(true)
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(b)
}

// listenerName names a component's main listener in the ready file.
func listenerName(c component) string {
	if c.kind == kindGate {
		return "http"
	}
	return "packet"
}
