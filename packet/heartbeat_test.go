package packet

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection: unlike
// net.Pipe, a write completes while the reader sleeps, as with a frozen
// peer whose kernel still acknowledges data.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A heartbeating pair stays open while idle far longer than the timeout,
// and the passive side starts heartbeating because the other did.
func TestHeartbeatKeepsIdlePairOpen(t *testing.T) {
	a, b := tcpPair(t)
	const timeout = 150 * time.Millisecond
	caller := NewConn(a, Options{Heartbeat: timeout, HeartbeatNow: true})
	callee := NewConn(b, Options{Heartbeat: timeout, OnMessage: func(c *Conn, m *Message) {
		c.Write(context.Background(), AppendResponse(nil, m.Key, 0, "success", nil))
	}})
	defer caller.Abort()
	defer callee.Abort()
	select {
	case <-caller.Heard():
	case <-time.After(5 * time.Second):
		t.Fatal("the caller never heard the callee's answering heartbeat")
	}
	if !callee.Heartbeating() {
		t.Fatal("the callee got a heartbeat and did not start heartbeating")
	}
	time.Sleep(6 * timeout) // idle: only heartbeats cross
	for _, c := range []*Conn{caller, callee} {
		if err := c.Err(); err != nil {
			t.Fatalf("an idle heartbeating connection closed: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := caller.Call(ctx, "GET", "/x", nil); err != nil {
		t.Fatalf("Call after an idle spell: %v", err)
	}
}

// A peer that accepts bytes but sends nothing (a frozen process: its kernel
// still acknowledges) is noticed within the timeout, and a call pending on
// it fails with ErrSilent, which is also an ErrClosed.
func TestHeartbeatSilentPeerFailsPendingCalls(t *testing.T) {
	a, b := tcpPair(t)
	_ = b // never read, never written: frozen
	const timeout = 200 * time.Millisecond
	c := NewConn(a, Options{Heartbeat: timeout, HeartbeatNow: true})
	defer c.Abort()
	start := time.Now()
	_, err := c.Call(context.Background(), "GET", "/x", nil)
	took := time.Since(start)
	if !errors.Is(err, ErrSilent) || !errors.Is(err, ErrClosed) {
		t.Fatalf("Call to a silent peer = %v; want ErrSilent (an ErrClosed)", err)
	}
	if !errors.Is(c.Err(), ErrSilent) {
		t.Fatalf("Err() = %v; want ErrSilent", c.Err())
	}
	if took < timeout {
		t.Fatalf("closed after %v, before the %v timeout", took, timeout)
	}
	if _, err := c.Call(context.Background(), "GET", "/x", nil); !errors.Is(err, ErrSilent) {
		t.Fatalf("Call on the closed connection = %v; want ErrSilent", err)
	}
}

// A passive side (a service that cannot tell a book gate from a microshop
// one) never sends a heartbeat to a peer that sent none: the book's peers
// must never receive one.
func TestHeartbeatNeverSentToAPeerThatSendsNone(t *testing.T) {
	a, b := tcpPair(t)
	const timeout = 100 * time.Millisecond
	c := NewConn(b, Options{Heartbeat: timeout, OnMessage: func(c *Conn, m *Message) {
		c.Write(context.Background(), AppendResponse(nil, m.Key, 0, "success", nil))
	}})
	defer c.Abort()
	if _, err := a.Write([]byte(`{"uri":"/goods","method":"GET","params":{"key":7}}` + Separator)); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(8 * timeout))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := a.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if bytes.Contains(got, []byte("heartbeat")) {
		t.Fatalf("a peer that never heartbeat was sent %q", got)
	}
	if !bytes.Contains(got, []byte(`"key":7`)) {
		t.Fatalf("the request was not answered: got %q", got)
	}
	if c.Err() != nil || c.Heartbeating() {
		t.Fatalf("passive side: Err() = %v, Heartbeating() = %v; want open and not heartbeating", c.Err(), c.Heartbeating())
	}
}

// With heartbeats off, a heartbeat received is dropped: not answered, not
// handed to OnMessage.
func TestHeartbeatIgnoredWhenOff(t *testing.T) {
	a, b := tcpPair(t)
	got := make(chan *Message, 1)
	c := NewConn(b, Options{OnMessage: func(_ *Conn, m *Message) { got <- m }})
	defer c.Abort()
	a.Write(heartbeatFrame)
	a.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := a.Read(make([]byte, 64)); n > 0 {
		t.Fatal("a Conn without heartbeats answered a heartbeat")
	}
	select {
	case m := <-got:
		t.Fatalf("OnMessage got the heartbeat: %+v", m)
	default:
	}
	if c.Heartbeating() {
		t.Fatal("Heartbeating() with heartbeats off")
	}
}

// Go returns at once; the answer arrives on Done, and Cancel drops a late one.
func TestGoAndCancel(t *testing.T) {
	client, _ := pipe(t)
	ctx := context.Background()
	slow, err := client.Go(ctx, "GET", "/echo", []byte(`{"delay":300,"echo":"slow"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := client.Go(ctx, "GET", "/echo", []byte(`{"echo":"fast"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-fast.Done():
		if !bytes.Contains(m.Raw, []byte(`"fast"`)) {
			t.Fatalf("fast call answered %s", m.Raw)
		}
	case <-slow.Done():
		t.Fatal("the slow call answered first")
	case <-time.After(5 * time.Second):
		t.Fatal("no answer in 5s")
	}
	slow.Cancel()
	if n := client.Pending(); n != 0 {
		t.Fatalf("Pending() = %d after Cancel; want 0", n)
	}
}
