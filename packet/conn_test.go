package packet

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoPeer answers every request after the delay named in its params.
func echoPeer(t *testing.T, nc net.Conn) *Conn {
	return NewConn(nc, Options{OnMessage: func(c *Conn, m *Message) {
		go func() {
			var p struct {
				Delay int    `json:"delay"`
				Echo  string `json:"echo"`
			}
			json.Unmarshal(m.Params, &p)
			time.Sleep(time.Duration(p.Delay) * time.Millisecond)
			body, _ := json.Marshal(map[string]string{"echo": p.Echo})
			c.Write(context.Background(), AppendResponse(nil, m.Key, 0, "success", body))
		}()
	}})
}

func pipe(t *testing.T) (client, server *Conn) {
	a, b := net.Pipe()
	client = NewConn(a, Options{})
	server = echoPeer(t, b)
	t.Cleanup(func() { client.Abort(); server.Abort() })
	return client, server
}

func TestCallsAreMatchedByKeyOutOfOrder(t *testing.T) {
	client, _ := pipe(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := string(rune('A' + i%26))
			params, _ := json.Marshal(map[string]any{"delay": (50 - i) % 7 * 5, "echo": want})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m, err := client.Call(ctx, "GET", "/echo", params)
			if err != nil {
				t.Errorf("Call %d: %v", i, err)
				return
			}
			var got struct{ Echo string }
			json.Unmarshal(m.Raw, &got)
			if got.Echo != want {
				t.Errorf("Call %d answered %q; want %q", i, got.Echo, want)
			}
		}()
	}
	wg.Wait()
}

func TestCallTimesOut(t *testing.T) {
	client, _ := pipe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := client.Call(ctx, "GET", "/echo", []byte(`{"delay":2000}`))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Call = %v; want ErrTimeout", err)
	}
	if n := client.Pending(); n != 0 {
		t.Fatalf("Pending() = %d after timeout; want 0", n)
	}
}

func TestPendingCallsFailWhenPeerCloses(t *testing.T) {
	client, server := pipe(t)
	errc := make(chan error, 1)
	go func() {
		_, err := client.Call(context.Background(), "GET", "/echo", []byte(`{"delay":10000}`))
		errc <- err
	}()
	for client.Pending() == 0 {
		time.Sleep(time.Millisecond)
	}
	server.Abort()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Call = %v; want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending call still waiting 5s after the peer closed")
	}
	if _, err := client.Call(context.Background(), "GET", "/echo", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call on closed conn = %v; want ErrClosed", err)
	}
}

func TestCloseFlushesQueuedPackets(t *testing.T) {
	a, b := net.Pipe()
	c := NewConn(a, Options{})
	got := make(chan int, 1)
	go func() {
		d := NewDecoder(b, 0)
		n := 0
		for {
			if _, err := d.Next(); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	for range 100 {
		if err := c.Send(context.Background(), map[string]int{"x": 1}); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	<-c.Done()
	if n := <-got; n != 100 {
		t.Fatalf("peer read %d packets; want 100", n)
	}
}

func BenchmarkCall(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			NewConn(nc, Options{OnMessage: func(c *Conn, m *Message) {
				c.Write(context.Background(), AppendResponse(nil, m.Key, 0, "success", []byte(`{"id":1}`)))
			}})
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c := NewConn(nc, Options{})
	defer c.Abort()
	params := []byte(`{"userid":1,"goodsid":2}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := c.Call(ctx, "POST", "/purchases", params); err != nil {
				b.Error(err)
			}
			cancel()
		}
	})
}

// WriteWithin queues without a wait while there is room, and gives up
// after its timeout when the peer reads nothing and the queue is full.
func TestWriteWithinTimesOutOnAFullQueue(t *testing.T) {
	a, b := net.Pipe() // b never reads: the first write blocks in the socket
	defer b.Close()
	c := NewConn(a, Options{MaxQueuedBytes: 64})
	defer c.Abort()
	pkt := AppendResponse(nil, json.RawMessage("1"), 0, "success", []byte(`{"x":"0123456789012345678901234567"}`))
	queued := 0
	for ; queued < 10; queued++ {
		start := time.Now()
		err := c.WriteWithin(pkt, 50*time.Millisecond)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("WriteWithin on a full queue = %v; want context.DeadlineExceeded", err)
			}
			if took := time.Since(start); took < 40*time.Millisecond {
				t.Fatalf("WriteWithin gave up after %v; want its 50ms", took)
			}
			break
		}
	}
	if queued == 0 || queued == 10 {
		t.Fatalf("WriteWithin queued %d packets of %d bytes with 64 bytes of room; want some, then a timeout", queued, len(pkt))
	}
}

// WriteWithinFree gives each packet's buffer back once it is written, and
// the peer reads every packet whole even when the buffers are reused at
// once; a packet that is not written is not given back.
func TestWriteWithinFreeReusesOnlyWrittenBuffers(t *testing.T) {
	a, b := net.Pipe()
	c := NewConn(a, Options{})
	var mu sync.Mutex
	var free [][]byte
	gives, takes := 0, 0
	give := func(buf []byte) {
		mu.Lock()
		free = append(free, buf)
		gives++
		mu.Unlock()
	}
	take := func() []byte {
		mu.Lock()
		defer mu.Unlock()
		if len(free) == 0 {
			return nil
		}
		buf := free[len(free)-1]
		free = free[:len(free)-1]
		takes++
		return buf[:0]
	}
	const n = 500
	read := make(chan []string, 1)
	go func() {
		d := NewDecoder(b, 0)
		var got []string
		for len(got) < n {
			p, err := d.Next()
			if err != nil {
				break
			}
			m, err := Decode(p)
			if err != nil {
				break
			}
			got = append(got, string(m.Raw))
		}
		read <- got
	}()
	want := make([]string, n)
	for i := range n {
		buf := AppendResponse(take(), json.RawMessage(strconv.Itoa(i)), 0, "success", []byte(`{"n":"`+strings.Repeat(strconv.Itoa(i), i%50)+`"}`))
		want[i] = string(buf[:len(buf)-len(Separator)])
		if err := c.WriteWithinFree(buf, 5*time.Second, give); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			// Now and then wait for every buffer so far to come back, so
			// that the next ones are certainly reused ones; the others
			// reuse whatever has come back by then.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				mu.Lock()
				back := gives
				mu.Unlock()
				if back == i+1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after 5 s, %d of %d written buffers given back", back, i+1)
				}
			}
		}
	}
	got := <-read
	if len(got) != n {
		t.Fatalf("peer read %d packets; want %d", len(got), n)
	}
	for i := range n {
		if got[i] != want[i] {
			t.Fatalf("packet %d = %s; want %s", i, got[i], want[i])
		}
	}
	mu.Lock()
	if gives != n || takes == 0 {
		t.Errorf("%d buffers given back, %d reused; want %d given back (each once), some reused", gives, takes, n)
	}
	mu.Unlock()
	// On a closed connection the packet is not written, nor given back.
	c.Abort()
	<-c.Done()
	if err := c.WriteWithinFree([]byte("x"+string(Separator)), time.Second, give); err == nil {
		t.Fatal("WriteWithinFree on a closed connection succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if gives != n {
		t.Fatal("a packet that was not written was given back")
	}
}

// Buffers keeps no buffer over its Max, and gives back empty ones.
func TestBuffersBound(t *testing.T) {
	p := Buffers{Max: 64}
	p.Put(make([]byte, 10, 65))
	if b := p.Get(); b != nil {
		t.Fatalf("Get after a Put over Max = a buffer of cap %d; want none kept", cap(b))
	}
	p.Put([]byte("some bytes"))
	if b := p.Get(); len(b) != 0 {
		t.Fatalf("Get = %q; want an empty buffer", b)
	}
}
