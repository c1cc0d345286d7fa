package chatws

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchConn lets a chat writer send many WebSocket frames in one write to
// the socket. github.com/coder/websocket flushes every message to its
// connection at once; while the writer holds (between hold and flush),
// batchConn keeps those bytes and flush writes them together. A client
// that keeps up still gets each message as soon as it is queued (the writer
// flushes whenever its queue is empty); one that falls behind gets its
// backlog in few large writes, so that a busy gate spends its time on
// messages rather than on system calls. Writes made while the writer does
// not hold (control frames from other goroutines) go straight through.
type batchConn struct {
	net.Conn
	timeout time.Duration // bounds each flush

	mu      sync.Mutex
	holding bool
	buf     []byte
}

// maxBatch is the size past which a held write is flushed anyway.
const maxBatch = 64 << 10

// Write sends p, or keeps it while the writer holds.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.holding {
		b.buf = append(b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.Conn.Write(p)
}

// hold starts keeping writes.
func (b *batchConn) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// full reports whether the kept bytes should be flushed now.
func (b *batchConn) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf) >= maxBatch
}

// flush writes what was kept, within the timeout, and stops keeping.
func (b *batchConn) flush() error {
	b.mu.Lock()
	buf := b.buf
	b.buf = nil
	b.holding = false
	b.mu.Unlock()
	if len(buf) == 0 {
		return nil
	}
	b.Conn.SetWriteDeadline(time.Now().Add(b.timeout))
	_, err := b.Conn.Write(buf)
	b.Conn.SetWriteDeadline(time.Time{})
	if cap(buf) <= maxBatch*2 {
		b.mu.Lock()
		if b.buf == nil {
			b.buf = buf[:0] // reuse the buffer
		}
		b.mu.Unlock()
	}
	return err
}

// batchWriter is an http.ResponseWriter whose Hijack hands out a
// batchConn, so that the WebSocket library writes through it.
type batchWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *batchConn // set by Hijack
}

// Hijack takes over the connection, wrapped in a batchConn.
func (w *batchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("chat: the connection cannot be taken over")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Writer.Buffered() > 0 {
		if err := brw.Writer.Flush(); err != nil {
			nc.Close()
			return nil, nil, err
		}
	}
	w.conn = &batchConn{Conn: nc, timeout: w.timeout}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 4096)), nil
}
