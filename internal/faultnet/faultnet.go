// Package faultnet makes in-process network faults for tests: a listener
// whose connections can be frozen, as the sockets of a process stopped with
// SIGSTOP are — the kernel keeps accepting connections and buffering bytes,
// but nothing is read or written — without stopping the test process.
package faultnet

import (
	"net"
	"sync"
)

// Listener wraps a net.Listener. While frozen, the connections it accepted
// (and those it accepts meanwhile) neither read nor write: a Read or Write
// waits until Thaw (or the connection closes), the bytes staying in the
// kernel's buffers.
type Listener struct {
	net.Listener

	mu     sync.Mutex
	frozen bool
	thawed chan struct{} // closed by Thaw; replaced by Freeze
}

// Listen returns a Listener on addr (TCP).
func Listen(addr string) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return Wrap(ln), nil
}

// Wrap returns ln as a Listener, not frozen.
func Wrap(ln net.Listener) *Listener {
	t := make(chan struct{})
	close(t)
	return &Listener{Listener: ln, thawed: t}
}

// Freeze stops every connection's reads and writes until Thaw.
func (l *Listener) Freeze() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.frozen {
		l.frozen = true
		l.thawed = make(chan struct{})
	}
}

// Thaw lets the connections read and write again.
func (l *Listener) Thaw() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.frozen {
		l.frozen = false
		close(l.thawed)
	}
}

// gate returns a channel closed once the listener is not frozen.
func (l *Listener) gate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.thawed
}

// Accept accepts a connection that obeys Freeze.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, l: l, closed: make(chan struct{})}, nil
}

type conn struct {
	net.Conn
	l      *Listener
	once   sync.Once
	closed chan struct{}
}

// wait blocks while the listener is frozen; it reports false once the
// connection is closed.
func (c *conn) wait() bool {
	select {
	case <-c.l.gate():
		return true
	case <-c.closed:
		return false
	}
}

func (c *conn) Read(b []byte) (int, error) {
	if !c.wait() {
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(b)
	// Bytes read just as the freeze began are held back until the thaw.
	if n > 0 && !c.wait() {
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	if !c.wait() {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func (c *conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
