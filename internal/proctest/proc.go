package proctest

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/testenv"
)

// killTimeout bounds how long a process may take to exit after SIGKILL.
const killTimeout = 5 * time.Second

// FreePort returns a loopback port that is free now, and never one it
// returned before in this test binary: two processes of one test told the
// same port collide (CI: a distributor and a gate).
//
// Where the kernel says which ports it hands out to outgoing connections
// (Linux's ip_local_port_range), the port is picked below that range: a
// port from it, once its listener is closed, can be taken by any
// connection that the tests of other packages open meanwhile, and a
// process told to listen on it, or a server restarted on it, fails with
// "address already in use" (CI: a distributor restarted on its port).
func FreePort(t testing.TB) int {
	t.Helper()
	if lo, ok := ephemeralLow(); ok && lo > 12000 {
		for range 200 {
			port := 10000 + rand.IntN(lo-10000)
			if claim(port) {
				return port
			}
		}
	}
	for range 100 {
		if port := kernelPort(t); claim(port) {
			return port
		}
	}
	t.Fatal("FreePort: found no free port that was not handed out before")
	return 0
}

// claim reports whether port is free on loopback and was not handed out
// before, and marks it handed out.
func claim(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	ln.Close()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	return true
}

// kernelPort is a port the kernel picks for a listener on loopback.
func kernelPort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ephemeralLow is the lowest port the kernel gives outgoing connections.
func ephemeralLow() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	lo, err := strconv.Atoi(f[0])
	return lo, err == nil
}

// handedOut are the ports FreePort returned.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// childEnv is the environment of every process started: ours without any
// MICROSHOP_* variable, so that only the flags the test passes apply.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MICROSHOP_") {
			env = append(env, kv)
		}
	}
	return env
}

// Proc is a process started by a test, its output captured.
type Proc struct {
	// Name names the process in messages; Args are its arguments.
	Name string
	Args []string

	cmd     *exec.Cmd
	log     *testenv.SyncBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid once done is closed
	killed  atomic.Bool   // the test killed the process on purpose
	frozen  atomic.Bool   // stopped by Freeze and not thawed since

	readyFile string // --ready-file, set by StartReady
}

// Start starts path with args, its environment that of the test without any
// MICROSHOP_* variable and its output (stdout and stderr) captured. It does
// not stop the process: the caller does, with Stop, Kill or StopAll.
func Start(t testing.TB, name, path string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Args: args, log: &testenv.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = childEnv()
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error (nil for status 0), once it has exited.
func (p *Proc) Err() error {
	<-p.done
	return p.waitErr
}

// Killed reports whether the test killed the process with Kill.
func (p *Proc) Killed() bool { return p.killed.Load() }

// Kill ends the process at once (SIGKILL), as a crash would, and waits for
// it to exit; it fails t if the process is still running after 5 s. It may
// be called more than once.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	p.killed.Store(true)
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Process.Signal(syscall.SIGCONT) // the kill lands once a stopped process runs
	select {
	case <-p.done:
	case <-time.After(killTimeout):
		t.Fatalf("%s: still running %v after SIGKILL", p.Name, killTimeout)
	}
}

// Freeze stops the process with SIGSTOP, as a hung process, a long pause or
// a host whose scheduler stopped would: its sockets stay open and its kernel
// still accepts connections and acknowledges data, but it answers nothing.
// Stop and Kill thaw it first.
func (p *Proc) Freeze(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("%s: SIGSTOP: %v", p.Name, err)
	}
	p.frozen.Store(true)
}

// Thaw resumes a frozen process with SIGCONT.
func (p *Proc) Thaw(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil && !p.Exited() {
		t.Fatalf("%s: SIGCONT: %v", p.Name, err)
	}
	p.frozen.Store(false)
}

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Stop asks the process to stop (SIGTERM) and kills it if it has not exited
// after timeout. It returns an error unless the process exited cleanly
// (status 0) on SIGTERM, or had been killed by Kill.
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		if p.Killed() {
			return nil
		}
		return fmt.Errorf("exited before the end of the test: %v", p.waitErr)
	}
	if p.frozen.Load() {
		p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.waitErr != nil {
			return fmt.Errorf("unclean exit after SIGTERM: %v", p.waitErr)
		}
		return nil
	case <-time.After(timeout):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("still running %v after SIGTERM; killed", timeout)
	}
}

// StopAll stops procs concurrently (Stop with timeout) and fails t for each
// one that did not stop cleanly, whose output reports a data race, or that
// logged a panic. When t has failed it logs every process's output (see
// LogDump).
func StopAll(t testing.TB, timeout time.Duration, procs ...*Proc) {
	t.Helper()
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.Stop(timeout) })
	}
	wg.Wait()
	for i, p := range procs {
		if errs[i] != nil {
			t.Errorf("%s: %v", p.Name, errs[i])
		}
		log := p.Logs()
		if strings.Contains(log, "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector reported a data race", p.Name)
		}
		if strings.Contains(log, "panic:") {
			t.Errorf("%s: a panic was logged", p.Name)
		}
	}
	if t.Failed() {
		for _, p := range procs {
			t.Logf("──── output of %s (%s) ────\n%s", p.Name, strings.Join(p.Args, " "), p.LogDump(32<<10))
		}
	}
}

// Logs returns the process's output so far.
func (p *Proc) Logs() string { return p.log.String() }

// LogTail returns at most the last n bytes of the output, from a line start.
func (p *Proc) LogTail(n int) string {
	s := p.Logs()
	if len(s) <= n {
		return s
	}
	return "…\n" + fromLine(s[len(s)-n:])
}

// LogDump returns the output for a failure report: without the per-request
// debug lines (counted instead), at most the last n bytes.
func (p *Proc) LogDump(n int) string {
	var b strings.Builder
	requests := 0
	for _, line := range strings.SplitAfter(p.Logs(), "\n") {
		if strings.Contains(line, "level=DEBUG msg=request ") {
			requests++
			continue
		}
		b.WriteString(line)
	}
	if requests > 0 {
		fmt.Fprintf(&b, "(%d per-request debug lines left out)\n", requests)
	}
	s := b.String()
	if len(s) > n {
		s = "…\n" + fromLine(s[len(s)-n:])
	}
	return s
}

// fromLine cuts s to start after its first newline, if any.
func fromLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// LogLines returns the output lines that contain every one of subs.
func (p *Proc) LogLines(subs ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(p.Logs(), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// WaitDial polls addr until it accepts a TCP connection, failing t after
// timeout or as soon as p (when not nil) has exited.
func WaitDial(t testing.TB, addr string, p *Proc, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if p != nil && p.Exited() {
			t.Fatalf("%s exited before listening on %s (%v); output:\n%s", p.Name, addr, p.waitErr, p.LogTail(16<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s after %v: %v", addr, timeout, err)
		}
		time.Sleep(pollEvery)
	}
}

// pollEvery is how often the helpers poll.
const pollEvery = 20 * time.Millisecond

// Ready is what a microshop process writes to its --ready-file once it is
// ready: its pid and, per component, the address each listener bound. Its
// GET /readyz adds, on a gate, Peers.
type Ready struct {
	Pid        int                          `json:"pid"`
	Ready      bool                         `json:"ready"`
	Components map[string]map[string]string `json:"components"`
	Peers      []Peer                       `json:"peers"`
}

// Peer is one instance a gate keeps a connection to (GET /readyz).
type Peer struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Up      bool   `json:"up"`
	Ejected bool   `json:"ejected"`
}

// StartReady is Start for a microshop command: it adds --ready-file, a new
// file in a temporary directory, for WaitReady to read.
func StartReady(t testing.TB, name, path string, args ...string) *Proc {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ready.json")
	p := Start(t, name, path, append(args, "--ready-file", f)...)
	p.readyFile = f
	return p
}

// WaitReady waits up to timeout until p (started by StartReady) has written
// its ready file and returns it; it fails the test if p exits first.
func (p *Proc) WaitReady(t testing.TB, timeout time.Duration) Ready {
	t.Helper()
	if p.readyFile == "" {
		t.Fatalf("%s: WaitReady needs a process started by StartReady", p.Name)
	}
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(p.readyFile); err == nil {
			var r Ready
			if err := json.Unmarshal(b, &r); err != nil || !r.Ready {
				t.Fatalf("%s: ready file %q: %v", p.Name, b, err)
			}
			return r
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready: %v\n%s", p.Name, p.waitErr, p.Logs())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v:\n%s", p.Name, timeout, p.Logs())
		}
	}
}

// OpsAddr returns the address of the ops listener (--metrics-addr, else
// --debug-addr) in r; "" when the process runs none.
func (r Ready) OpsAddr() string {
	ops := r.Components["ops"]
	if a := ops["metrics"]; a != "" {
		return a
	}
	return ops["debug"]
}

// Metric reads GET /metrics on ops (host:port) and returns the value of
// series, a metric's name with its labels as Prometheus writes them, e.g.
// `microshop_gate_chat_disconnects_total{reason="slow"}`; 0 when the
// series is not there yet.
func Metric(ops, series string) (float64, error) {
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}

// LoggedAfter returns the output lines that contain every one of subs, for
// a one-shot assertion on the n lines the process wrote before a state the
// test has already observed (an answer, a metric): it gives the output
// pipe up to a second to deliver them, and does not wait for the state.
func (p *Proc) LoggedAfter(n int, subs ...string) []string {
	deadline := time.Now().Add(time.Second)
	for {
		lines := p.LogLines(subs...)
		if len(lines) >= n || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(pollEvery)
	}
}
