package hosts

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// Names of what this package creates. They are unique to this package, so
// that TestMain may delete leftovers (see removeLeftovers); interface names
// stay within Linux's 15 characters.
const (
	nsPrefix     = "msh-" // namespaces: msh-<id>-<host>
	bridgePrefix = "mshb" // bridges: mshb<id> (10 characters)
	vethPrefix   = "mshv" // root-side veth ends: mshv<id><NN> (12 characters)
	hostIfName   = "eth0" // the veth end inside every namespace
)

// EnvRequireNetns, set to 1, turns "cannot run here" (not root, no ip, no
// namespaces) from a skip into a failure. CI sets it.
const EnvRequireNetns = "MICROSHOP_TEST_REQUIRE_NETNS"

// Timeouts of the harness. None is a performance assertion: they only bound
// how long a broken system can make a test hang.
const (
	startTimeout = 20 * time.Second // a process or the fleet becoming ready
	stopTimeout  = 10 * time.Second // SIGTERM → exit, before SIGKILL
	pollEvery    = 20 * time.Millisecond
)

// dumpLogs, with -hosts.logs, logs every process's output when a test ends
// even when it passed (on failure proctest.StopAll always does).
var dumpLogs = flag.Bool("hosts.logs", false, "log every process's output at the end of each test, even when it passed")

// skipOrFail skips t, or fails it when EnvRequireNetns is 1.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(EnvRequireNetns) == "1" {
		t.Fatalf("%s (%s=1: failing instead of skipping)", msg, EnvRequireNetns)
	}
	t.Skip(msg)
}

var (
	ipPath     string
	probeOnce  sync.Once
	probeError error
)

// requireNetns skips (or fails, see EnvRequireNetns) t unless this process
// can build networks: -short is off, it runs as root, ip exists and a
// namespace can be created (checked once).
func requireNetns(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test across network namespaces; skipped with -short")
	}
	if binary == "" {
		t.Fatal("no microshop binary: TestMain did not build it")
	}
	const needs = "e2e/hosts: needs root and ip netns"
	if uid := os.Geteuid(); uid != 0 {
		skipOrFail(t, "%s (running as uid %d)", needs, uid)
	}
	probeOnce.Do(func() {
		p, err := exec.LookPath("ip")
		if err != nil {
			probeError = fmt.Errorf("no ip command (install iproute2): %v", err)
			return
		}
		ipPath = p
		ns := nsPrefix + randomID() + "-probe"
		if _, err := ipCmd("netns", "add", ns); err != nil {
			probeError = err
			return
		}
		if _, err := ipCmd("-n", ns, "link", "set", "lo", "up"); err != nil {
			probeError = err
		}
		if _, err := ipCmd("netns", "del", ns); err != nil && probeError == nil {
			probeError = err
		}
	})
	if probeError != nil {
		skipOrFail(t, "%s (%v)", needs, probeError)
	}
}

// ipCmd runs ip with args and returns its output; the error holds the
// command and its output.
func ipCmd(args ...string) (string, error) {
	out, err := exec.Command(ipPath, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// randomID returns 6 random hex digits.
func randomID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Network is one Linux bridge in the root namespace, on a /24 of 10.0.0.0/8
// that no address or route of this machine uses; the root namespace has its
// .1 address. Hosts attach to it. Everything is removed when the test ends.
type Network struct {
	t      *testing.T
	id     string       // random, in every name
	prefix netip.Prefix // 10.X.Y.0/24
	bridge string
	dir    string // removed after everything else
	// forwardRule is the iptables rule that lets bridged packets through
	// when the kernel filters them (see allowBridged); nil when none.
	forwardRule []string

	mu         sync.Mutex
	hosts      []*Host
	procs      []*proctest.Proc
	beforeStop []func()
}

// NewNetwork creates a network for t (skipping t when this machine cannot,
// see requireNetns).
func NewNetwork(t *testing.T) *Network {
	t.Helper()
	requireNetns(t)
	n := &Network{t: t, id: randomID()}
	n.dir = t.TempDir() // its cleanup is registered first, so it runs last
	prefix, err := freeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	n.prefix = prefix
	n.bridge = bridgePrefix + n.id
	// Bridged packets should not go through iptables (a host firewall's
	// FORWARD policy must not matter); older kernels lack the option.
	if _, err := ipCmd("link", "add", n.bridge, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"); err != nil {
		if _, err2 := ipCmd("link", "add", n.bridge, "type", "bridge"); err2 != nil {
			skipOrFail(t, "e2e/hosts: needs root and ip netns (cannot create a bridge: %v)", err2)
		}
	}
	t.Cleanup(n.cleanup)
	n.must("addr", "add", n.Gateway().String()+"/24", "dev", n.bridge)
	n.must("link", "set", n.bridge, "up")
	n.allowBridged()
	return n
}

// allowBridged makes sure a host firewall does not drop the packets the
// bridge forwards between hosts. With br_netfilter loaded and
// net.bridge.bridge-nf-call-iptables = 1 (as Docker sets it, with a FORWARD
// policy of DROP), bridged packets traverse iptables' FORWARD chain whatever
// the bridge's own nf_call_iptables says; then an ACCEPT rule for this
// bridge is inserted (and deleted at cleanup).
func (n *Network) allowBridged() {
	b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		return
	}
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return // no iptables, no rules
	}
	rule := []string{"FORWARD", "-i", n.bridge, "-o", n.bridge, "-j", "ACCEPT"}
	if out, err := exec.Command(ipt, append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		n.t.Logf("iptables -I %s: %v: %s (hosts may not reach each other if the FORWARD policy drops)", strings.Join(rule, " "), err, out)
		return
	}
	n.forwardRule = append([]string{ipt, "-D"}, rule...)
}

// Gateway is the root namespace's address on the network (.1).
func (n *Network) Gateway() netip.Addr {
	a := n.prefix.Addr().As4()
	a[3] = 1
	return netip.AddrFrom4(a)
}

// TempDir returns a new directory that is removed after every process of
// the network has stopped.
func (n *Network) TempDir() string {
	n.t.Helper()
	d, err := os.MkdirTemp(n.dir, "")
	if err != nil {
		n.t.Fatal(err)
	}
	return d
}

// BeforeStop registers f to run when the test ends, before the network's
// processes are stopped.
func (n *Network) BeforeStop(f func()) {
	n.mu.Lock()
	n.beforeStop = append(n.beforeStop, f)
	n.mu.Unlock()
}

func (n *Network) must(args ...string) {
	n.t.Helper()
	if _, err := ipCmd(args...); err != nil {
		n.t.Fatal(err)
	}
}

// Procs returns every process started on the network's hosts.
func (n *Network) Procs() []*proctest.Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*proctest.Proc(nil), n.procs...)
}

// CheckAlive fails the test at once, with the process's output, when a
// process has exited without the test killing it.
func (n *Network) CheckAlive() {
	n.t.Helper()
	for _, p := range n.Procs() {
		if !p.Killed() && p.Exited() {
			n.t.Fatalf("%s exited unexpectedly (%v); output:\n%s", p.Name, p.Err(), p.LogTail(16<<10))
		}
	}
}

// cleanup removes everything, in reverse order of creation: every link
// healed and every process thawed and stopped (their output dumped when the
// test failed), then the hosts' namespaces and veths, then the bridge.
func (n *Network) cleanup() {
	t := n.t
	n.mu.Lock()
	hooks := append([]func(){}, n.beforeStop...)
	hosts := append([]*Host(nil), n.hosts...)
	n.mu.Unlock()
	for i := len(hooks) - 1; i >= 0; i-- {
		hooks[i]()
	}
	for _, h := range hosts {
		if h.isCut() {
			if _, err := ipCmd("link", "set", h.Veth, "up"); err != nil {
				t.Log(err) // the processes will be killed instead
			}
		}
	}
	procs := n.Procs()
	proctest.StopAll(t, stopTimeout, procs...)
	if *dumpLogs && !t.Failed() {
		for _, p := range procs {
			t.Logf("──── output of %s (%s) ────\n%s", p.Name, strings.Join(p.Args, " "), p.LogDump(64<<10))
		}
	}
	for i := len(hosts) - 1; i >= 0; i-- {
		hosts[i].remove()
	}
	if _, err := ipCmd("link", "del", n.bridge); err != nil {
		t.Errorf("remove the bridge: %v", err)
	}
	if n.forwardRule != nil {
		if out, err := exec.Command(n.forwardRule[0], n.forwardRule[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v: %s", strings.Join(n.forwardRule, " "), err, out)
		}
	}
}

// freeSubnet picks a random /24 of 10.0.0.0/8 that overlaps no address or
// route of the root namespace.
func freeSubnet() (netip.Prefix, error) {
	used, err := usedPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	for range 1000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(mrand.IntN(256)), byte(mrand.IntN(256)), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("no free /24 in 10.0.0.0/8")
}

// usedPrefixes lists the IPv4 prefixes of the root namespace's addresses and
// routes (every table; the default route left out).
func usedPrefixes() ([]netip.Prefix, error) {
	var used []netip.Prefix
	addrs, err := ipCmd("-4", "-o", "addr", "show")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(addrs, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					used = append(used, p.Masked())
				}
			}
		}
	}
	routes, err := ipCmd("-4", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(routes, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		switch dst {
		case "local", "broadcast", "unicast", "anycast", "multicast", "blackhole", "unreachable", "prohibit", "throw", "nat":
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if dst == "default" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil && p.Addr().Is4() {
			used = append(used, p.Masked())
		}
	}
	return used, nil
}

// Host is a network namespace attached to a Network: lo up, and a veth pair
// whose inside end (eth0) has the host's address and a default route via
// the network's gateway, and whose root-side end is a port of the bridge.
type Host struct {
	Name string     // as given to AddHost
	NS   string     // the namespace's name
	Veth string     // the root-side veth end
	IP   netip.Addr // the address inside

	net *Network

	mu    sync.Mutex
	procs []*proctest.Proc
	cut   bool
}

// AddHost creates a host named name (a short word: it is part of the
// namespace's name) with the network's next address.
func (n *Network) AddHost(name string) *Host {
	n.t.Helper()
	n.mu.Lock()
	idx := len(n.hosts)
	if idx > 99 {
		n.mu.Unlock()
		n.t.Fatal("at most 100 hosts per network")
	}
	a := n.prefix.Addr().As4()
	a[3] = byte(idx + 2)
	h := &Host{
		Name: name,
		NS:   nsPrefix + n.id + "-" + name,
		Veth: fmt.Sprintf("%s%s%02d", vethPrefix, n.id, idx),
		IP:   netip.AddrFrom4(a),
		net:  n,
	}
	n.hosts = append(n.hosts, h) // before creating it: cleanup removes a half-made host too
	n.mu.Unlock()

	n.must("netns", "add", h.NS)
	n.must("-n", h.NS, "link", "set", "lo", "up")
	n.must("link", "add", h.Veth, "type", "veth", "peer", "name", hostIfName, "netns", h.NS)
	n.must("link", "set", h.Veth, "master", n.bridge, "up")
	n.must("-n", h.NS, "addr", "add", h.IP.String()+"/24", "dev", hostIfName)
	n.must("-n", h.NS, "link", "set", hostIfName, "up")
	n.must("-n", h.NS, "route", "add", "default", "via", n.Gateway().String())
	return h
}

// Addr returns "IP:port" of the host.
func (h *Host) Addr(port int) string {
	return net.JoinHostPort(h.IP.String(), strconv.Itoa(port))
}

// Start runs path with args inside the host's namespace (`ip netns exec NS
// path args...`, which execs path in place: the process's PID is the
// program's) with its output captured; name names it in messages, prefixed
// with the host's name. It is stopped when the test ends.
func (h *Host) Start(name, path string, args ...string) *proctest.Proc {
	h.net.t.Helper()
	p := proctest.Start(h.net.t, h.Name+"/"+name, ipPath, append([]string{"netns", "exec", h.NS, path}, args...)...)
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	h.net.mu.Lock()
	h.net.procs = append(h.net.procs, p)
	h.net.mu.Unlock()
	return p
}

// Procs returns the processes started on the host.
func (h *Host) Procs() []*proctest.Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*proctest.Proc(nil), h.procs...)
}

// CutLink partitions the host from the rest of the network, silently: no
// FIN, no RST, no error on either side's established connections; packets
// simply stop crossing, both ways, as when a cable or a switch port dies.
// Connections stay ESTABLISHED, TCP retransmits, and what was queued is
// delivered once HealLink runs (TestCutLinkIsSilent checks all of this).
//
// How: the root-side veth end is set down. The bridge then forwards nothing
// to that port, and the inside end loses its carrier, so what the host
// sends is dropped at its own interface (TCP sees a local drop and retries
// later, like a lost packet; routes and addresses stay). A new connection
// attempt to or from the host gets no answer, or EHOSTUNREACH once ARP has
// given up (about 3 s), as across a real network.
//
// Why not `tc qdisc add dev VETH root netem loss 100%`: a root qdisc acts on
// a device's egress only, so on the root-side end it drops what goes to the
// host and lets everything the host sends through (a one-way cut: TCP data
// keeps flowing out of the host until its congestion window is full of
// unacknowledged segments); a two-way cut needs it on both ends, or an
// ingress redirect to an ifb device. Checked on this package's kernel with
// an equivalent egress-only qdisc (pfifo limit 0) on the root-side end: data
// to the host stopped, data from it kept arriving. Besides, sch_netem is a
// module many CI kernels (Firecracker's among them) do not have:
// "Specified qdisc kind is unknown". Link down needs nothing but iproute2.
func (h *Host) CutLink() {
	h.net.t.Helper()
	h.net.must("link", "set", h.Veth, "down")
	h.mu.Lock()
	h.cut = true
	h.mu.Unlock()
}

// HealLink undoes CutLink. The bridge forwards to the port again at once
// (STP is off); queued segments go out at each side's next retransmission.
func (h *Host) HealLink() {
	h.net.t.Helper()
	h.net.must("link", "set", h.Veth, "up")
	h.mu.Lock()
	h.cut = false
	h.mu.Unlock()
}

func (h *Host) isCut() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cut
}

// Freeze stops (SIGSTOP) every process started on the host that is still
// running: the host's kernel keeps accepting connections and acknowledging
// data, but nothing answers, as with a hung machine or a long pause.
func (h *Host) Freeze() {
	h.net.t.Helper()
	for _, p := range h.Procs() {
		if !p.Exited() {
			p.Freeze(h.net.t)
		}
	}
}

// Thaw resumes (SIGCONT) every process started on the host.
func (h *Host) Thaw() {
	h.net.t.Helper()
	for _, p := range h.Procs() {
		p.Thaw(h.net.t)
	}
}

// remove deletes the host: any process still inside its namespace is killed
// (all were started by this test), then the veth pair and the namespace.
func (h *Host) remove() {
	t := h.net.t
	if pids := killNamespacePids(ipPath, h.NS); len(pids) > 0 {
		t.Logf("host %s: killed processes still inside its namespace: %v", h.Name, pids)
	}
	if _, err := ipCmd("link", "del", h.Veth); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		t.Errorf("remove host %s: %v", h.Name, err)
	}
	if _, err := ipCmd("netns", "del", h.NS); err != nil && !strings.Contains(err.Error(), "No such file") {
		t.Errorf("remove host %s: %v", h.Name, err)
	}
}

// lookProgram returns the path of program name: on the PATH, or in an sbin
// directory (mariadbd lives in /usr/sbin, which a non-root PATH lacks). It
// skips (or fails, see EnvRequireNetns) t when there is none.
func lookProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	skipOrFail(t, "e2e/hosts: needs %s (package %s)", name, pkg)
	return ""
}
