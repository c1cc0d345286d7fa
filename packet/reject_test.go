package packet

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// An answer over the size limit fails its call at once, with a 502 answer
// that says why, instead of leaving it to its deadline.
func TestOversizeAnswerFailsItsCallAtOnce(t *testing.T) {
	a, b := tcpPair(t)
	c := NewConn(a, Options{MaxSize: 1024})
	defer c.Abort()
	peer := NewDecoder(b, 0)
	done := make(chan *Message, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m, err := c.Call(ctx, "GET", "/goods", nil)
		if err != nil {
			t.Errorf("Call = %v; want an error answer", err)
		}
		done <- m
	}()
	req, err := peer.Next()
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := KeyOf(req)
	big := AppendResponse(nil, key, 0, "success", []byte(`{"results":["`+strings.Repeat("x", 5000)+`"]}`))
	start := time.Now()
	if _, err := b.Write(big); err != nil {
		t.Fatal(err)
	}
	m := <-done
	if m == nil || m.ErrorCode == nil || *m.ErrorCode != 502 || !strings.Contains(m.ErrorMessage, "packet limit of 1024 bytes") {
		t.Fatalf("answer = %+v; want errorcode 502 naming the limit", m)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the call failed %v after the oversize answer arrived", took)
	}
	// The connection goes on.
	if c.Err() != nil {
		t.Fatalf("the connection closed: %v", c.Err())
	}
}

// A request over the size limit, or not JSON, is answered with an error
// when its key can be read: the caller does not wait for its deadline.
func TestRejectedRequestsAreAnswered(t *testing.T) {
	a, b := tcpPair(t)
	served := make(chan *Message, 4)
	c := NewConn(b, Options{MaxSize: 1024, OnMessage: func(_ *Conn, m *Message) { served <- m }})
	defer c.Abort()
	peer := NewDecoder(a, 0)
	for _, tc := range []struct {
		packet string
		code   string
	}{
		{string(AppendRequest(nil, "/goods", "POST", 7, []byte(`{"description":"`+strings.Repeat("d", 3000)+`"}`))), `"errorcode":413`},
		{`{"uri":"/goods","method":"GET","key":8,"params":{"id":1}` + Separator, `"errorcode":400`}, // cut short: not JSON
	} {
		if _, err := a.Write([]byte(tc.packet)); err != nil {
			t.Fatal(err)
		}
		a.SetReadDeadline(time.Now().Add(5 * time.Second))
		ans, err := peer.Next()
		if err != nil {
			t.Fatalf("no answer to a rejected request: %v", err)
		}
		if !bytes.Contains(ans, []byte(tc.code)) {
			t.Fatalf("answer %s; want %s", ans, tc.code)
		}
	}
	select {
	case m := <-served:
		t.Fatalf("a rejected request reached OnMessage: %+v", m)
	default:
	}
}
