package hosts

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// binary is the microshop binary built by TestMain ("" with -short).
var binary string

// helperArg, as the first argument of this test binary, runs a helper
// program instead of the tests (see runHelper).
const helperArg = "-hosts.helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(runHelper(os.Args[2:]))
	}
	removeLeftovers()
	code := proctest.Run(m, &binary)
	removeMariaDBTemplate()
	os.Exit(code)
}

// removeLeftovers deletes what an earlier run of this package left behind
// when it was killed before its cleanups ran: every namespace named with
// nsPrefix (after killing the processes still inside it, which that run
// started), every link named with bridgePrefix or vethPrefix, and MariaDB
// template directories. Only one run of this package happens at a time on a
// machine, so all of them are debris. It does nothing without root or ip.
func removeLeftovers() {
	if os.Geteuid() != 0 {
		return
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return
	}
	var removed []string
	if out, err := exec.Command(ip, "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
				continue
			}
			ns := f[0]
			killNamespacePids(ip, ns)
			exec.Command(ip, "netns", "del", ns).Run()
			removed = append(removed, "namespace "+ns)
		}
	}
	if out, err := exec.Command(ip, "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			// "12: mshv1a2b3c00@if2: <BROADCAST,..." or "11: mshb1a2b3c: <...".
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, bridgePrefix) || strings.HasPrefix(name, vethPrefix) {
				exec.Command(ip, "link", "del", name).Run()
				removed = append(removed, "link "+name)
			}
		}
	}
	if dirs, err := filepath.Glob(filepath.Join(os.TempDir(), mariadbTemplatePattern)); err == nil {
		for _, d := range dirs {
			if os.RemoveAll(d) == nil {
				removed = append(removed, "directory "+d)
			}
		}
	}
	if len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "e2e/hosts: removed the leftovers of an earlier run: %s\n", strings.Join(removed, ", "))
	}
}

// killNamespacePids kills (SIGKILL) every process inside namespace ns and
// returns their pids.
func killNamespacePids(ip, ns string) []int {
	out, err := exec.Command(ip, "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
			pids = append(pids, pid)
		}
	}
	return pids
}

// runHelper runs the helper program named by args[0], for the harness's own
// tests, inside a namespace:
//
//	tcp ADDR   listen on ADDR; on every connection write "tick N\n" every
//	           tickEvery (N = 1, 2, …) and answer every line X with
//	           "echo X\n", logging "got X" on stdout; any read or write error
//	           is logged as "conn error: …". SIGTERM exits with status 0.
func runHelper(args []string) int {
	if len(args) != 2 || args[0] != "tcp" {
		fmt.Fprintf(os.Stderr, "usage: %s tcp ADDR\n", helperArg)
		return 2
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()
	ln, err := net.Listen("tcp", args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var out sync.Mutex
	logf := func(format string, a ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", a...)
	}
	logf("helper listening addr=%s", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			logf("accept error: %v", err)
			return 1
		}
		go helperConn(c, logf)
	}
}

// tickEvery is how often the tcp helper writes a tick.
const tickEvery = 50 * time.Millisecond

func helperConn(c net.Conn, logf func(string, ...any)) {
	defer c.Close()
	var wmu sync.Mutex
	write := func(s string) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := c.Write([]byte(s))
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			logf("got %s", sc.Text())
			if err := write("echo " + sc.Text() + "\n"); err != nil {
				logf("conn error: write: %v", err)
				return
			}
		}
		if err := sc.Err(); err != nil {
			logf("conn error: read: %v", err)
		}
	}()
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if err := write("tick " + strconv.Itoa(n) + "\n"); err != nil {
			logf("conn error: write: %v", err)
			return
		}
	}
}
