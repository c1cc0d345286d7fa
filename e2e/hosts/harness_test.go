package hosts

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// The harness's own tests: what the fault tests rely on, checked on the
// machine they run on.

// TestCutLinkIsSilent checks that Host.CutLink is a silent partition of an
// established TCP connection, both ways: nothing crosses while the link is
// cut, neither side sees an error, FIN or RST, and everything queued on
// either side is delivered, in order, after HealLink.
func TestCutLinkIsSilent(t *testing.T) {
	n := NewNetwork(t)
	h := n.AddHost("a")
	helper, c := startHelper(t, h)
	c.waitTicks(t, 3, 5*time.Second)
	c.echo(t, "before", 5*time.Second)

	h.CutLink()
	cutAt := time.Now()
	c.send(t, "during") // queued on our side: must not arrive before the heal
	// What was on the wire at the cut may still land; nothing sent later.
	const settle = 100 * time.Millisecond
	for {
		line, err := c.next(cutAt.Add(1500 * time.Millisecond))
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatalf("the connection failed while the link was cut (want a silent partition, no FIN or RST): %v", err)
		}
		if time.Since(cutAt) > settle {
			t.Fatalf("%q arrived %v after CutLink: packets from the host cross a cut link", line, time.Since(cutAt).Round(time.Millisecond))
		}
	}
	if got := helper.LogLines("got during"); len(got) > 0 {
		t.Fatalf("the host received %q while its link was cut: packets to the host cross a cut link", got[0])
	}
	if errs := helper.LogLines("conn error"); len(errs) > 0 {
		t.Fatalf("the host's side of the connection failed while the link was cut: %v", errs)
	}
	lastTick := c.lastTick

	h.HealLink()
	healAt := time.Now()
	c.waitEcho(t, "during", 10*time.Second)
	delivered := time.Since(healAt)
	c.waitTicks(t, lastTick+3, 5*time.Second)
	if errs := helper.LogLines("conn error"); len(errs) > 0 {
		t.Fatalf("the host's side of the connection failed: %v", errs)
	}
	t.Logf("link cut for %v: nothing crossed either way, no error on either side; after HealLink the queued data arrived within %v and the ticks went on from %d without a gap",
		healAt.Sub(cutAt).Round(time.Millisecond), delivered.Round(time.Millisecond), lastTick+1)
}

// TestFreezeHost checks that a process started on a host is the program
// itself (ip netns exec execs in place), so that Host.Freeze stops the
// program, and Host.Thaw resumes it, its connection intact.
func TestFreezeHost(t *testing.T) {
	n := NewNetwork(t)
	h := n.AddHost("a")
	helper, c := startHelper(t, h)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", helper.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Clean(exe) != filepath.Clean(self) {
		t.Fatalf("process %d started by Host.Start runs %s, not the program (%s): ip netns exec did not exec in place", helper.PID(), exe, self)
	}
	c.waitTicks(t, 3, 5*time.Second)

	h.Freeze()
	frozenAt := time.Now()
	waitState(t, helper.PID(), 'T')
	c.send(t, "frozen")
	for {
		line, err := c.next(frozenAt.Add(time.Second))
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatalf("the connection failed while the host was frozen: %v", err)
		}
		if time.Since(frozenAt) > 100*time.Millisecond {
			t.Fatalf("the frozen program still writes: %q arrived %v after Freeze", line, time.Since(frozenAt).Round(time.Millisecond))
		}
	}
	h.Thaw()
	thawAt := time.Now()
	c.waitEcho(t, "frozen", 5*time.Second)
	t.Logf("SIGSTOP on pid %d (%s) stopped the program (state T, silent for 1 s); after SIGCONT it answered within %v",
		helper.PID(), filepath.Base(exe), time.Since(thawAt).Round(10*time.Microsecond))
}

// waitState waits until process pid's state (/proc/PID/stat) is state.
func waitState(t *testing.T, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// "PID (comm) S ...": the state follows the last ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && s[i+2] == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d: state never became %c: %s", pid, state, s)
		}
		time.Sleep(pollEvery)
	}
}

// startHelper runs this test binary's tcp helper on h, port 7000, and
// connects to it from the root namespace.
func startHelper(t *testing.T, h *Host) (*proctest.Proc, *lineConn) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := h.Addr(7000)
	p := h.Start("helper", self, helperArg, "tcp", addr)
	proctest.WaitDial(t, addr, p, startTimeout)
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return p, &lineConn{c: nc, tmp: make([]byte, 4096)}
}

// lineConn reads the helper's lines with deadlines, losing nothing on a
// timeout.
type lineConn struct {
	c        net.Conn
	buf, tmp []byte
	lastTick int // the last tick seen
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// next returns the next line, or an error (a timeout at deadline). Ticks
// are checked to come in order, without a gap.
func (l *lineConn) next(deadline time.Time) (string, error) {
	for {
		if i := bytes.IndexByte(l.buf, '\n'); i >= 0 {
			line := string(l.buf[:i])
			l.buf = l.buf[i+1:]
			if s, ok := strings.CutPrefix(line, "tick "); ok {
				n, err := strconv.Atoi(s)
				if err != nil || n != l.lastTick+1 {
					return line, fmt.Errorf("tick %q after tick %d: data lost or reordered", s, l.lastTick)
				}
				l.lastTick = n
			}
			return line, nil
		}
		l.c.SetReadDeadline(deadline)
		n, err := l.c.Read(l.tmp)
		l.buf = append(l.buf, l.tmp[:n]...)
		if err != nil && n == 0 {
			return "", err
		}
	}
}

func (l *lineConn) send(t *testing.T, s string) {
	t.Helper()
	l.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := l.c.Write([]byte(s + "\n")); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// waitTicks reads until tick n has arrived.
func (l *lineConn) waitTicks(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for l.lastTick < n {
		if _, err := l.next(deadline); err != nil {
			t.Fatalf("waiting for tick %d (last %d): %v", n, l.lastTick, err)
		}
	}
}

// waitEcho reads until the helper's "echo s" has arrived.
func (l *lineConn) waitEcho(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		line, err := l.next(deadline)
		if err != nil {
			t.Fatalf("waiting for the echo of %q: %v", s, err)
		}
		if line == "echo "+s {
			return
		}
	}
}

// echo sends s and waits for its echo.
func (l *lineConn) echo(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	l.send(t, s)
	l.waitEcho(t, s, timeout)
}
