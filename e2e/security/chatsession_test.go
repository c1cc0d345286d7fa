package security_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// chatSocket opens a chat socket on gate g with token and returns it, and
// a channel that gets the close status once the gate closes it.
func chatSocket(t *testing.T, g, token string) (*websocket.Conn, <-chan websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(g, "http://", "ws://", 1)+"/chat?room=lobby",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatalf("chat socket on %s: %v", g, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	closed := make(chan websocket.StatusCode, 1)
	go func() {
		for {
			if _, _, err := conn.Read(context.Background()); err != nil {
				closed <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	return conn, closed
}

// TestChatSocketsFollowTheSession: a member's chat sockets on two gates are
// closed with code 4001 within 5 s of their logout, and a socket over the
// per-member cap is refused with 429.
func TestChatSocketsFollowTheSession(t *testing.T) {
	f := newFleet(t, "")
	f.service("members")
	f.service("chat")
	g1 := f.gate("--chat-max-per-member", "2")
	g2 := f.gate()
	f.waitRoutes("POST /sessions", "GET /chat/history")
	_, token := logIn(t, f, g1, "chatter")
	_, closed1 := chatSocket(t, g1, token)
	_, closed2 := chatSocket(t, g2, token)
	_, other := logIn(t, f, g1, "bystander")
	_, closedOther := chatSocket(t, g1, other)

	// The cap: a second socket on g1 is allowed, a third refused.
	chatSocket(t, g1, token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, strings.Replace(g1, "http://", "ws://", 1)+"/chat?room=lobby",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("a third chat socket for one member with --chat-max-per-member 2: %v (HTTP %d); want 429", err, status)
	}

	want(t, "DELETE /sessions", f.do(g1, "DELETE", "/sessions", token, "", nil), 200)
	out := time.Now()
	for i, closed := range []<-chan websocket.StatusCode{closed1, closed2} {
		select {
		case code := <-closed:
			if code != 4001 {
				t.Errorf("socket %d closed with %d after the logout; want 4001 (session ended)", i+1, code)
			}
			t.Logf("socket %d closed %v after the logout", i+1, time.Since(out).Round(time.Millisecond))
		case <-time.After(5*time.Second - time.Since(out)):
			t.Fatalf("socket %d still open 5 s after the member logged out", i+1)
		}
	}
	select {
	case code := <-closedOther:
		t.Fatalf("another member's socket was closed (%d) by this logout", code)
	default:
	}
}
