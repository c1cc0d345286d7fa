package app

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sync"
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
	components map[string]map[string]string // component → listener → bound address
}

// readyState is the JSON of the ready file and of /readyz.
type readyState struct {
	Pid        int                          `json:"pid"`
	Ready      bool                         `json:"ready"`
	Components map[string]map[string]string `json:"components"`
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

func (r *readiness) state() ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := json.Marshal(readyState{Pid: os.Getpid(), Ready: r.ready, Components: r.components})
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
	b, _ := r.state()
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

// ServeHTTP answers GET /readyz: 200 and the state once ready, 503 before.
func (r *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	b, ok := r.state()
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
