package chat_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// Clients on both gates in one room each see every message from both
// sides, each publisher's in order; a client in another room sees none.
func TestTwoGatesOneRoom(t *testing.T) {
	f := startFleet(t, newRedis(t, false), "--chat-rate", "1000", "--chat-burst", "1000")
	a1 := dial(t, f.gate1, "lobby", "a1")
	a2 := dial(t, f.gate1, "lobby", "a2")
	b1 := dial(t, f.gate2, "lobby", "b1")
	b2 := dial(t, f.gate2, "lobby", "b2")
	other := dial(t, f.gate2, "elsewhere", "o")
	const n = 50
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			b1.send(fmt.Sprint("b1-", i))
		}
	}()
	for i := range n {
		a1.send(fmt.Sprint("a1-", i))
	}
	<-done
	// The last message of each publisher is known only once both are done:
	// end with a marker sent after both.
	waitAll := func(c *client) []msg {
		var got []msg
		seen := map[string]int{}
		for seen["a1"] < n || seen["b1"] < n {
			m := c.next(15 * time.Second)
			if m.Error != "" {
				t.Fatalf("%s: error frame %q", c.name, m.Error)
			}
			got = append(got, m)
			seen[m.User]++
		}
		return got
	}
	for _, c := range []*client{a1, a2, b1, b2} {
		got := waitAll(c)
		next := map[string]int{}
		ids := map[int64]bool{}
		for _, m := range got {
			if m.Room != "lobby" || ids[m.ID] {
				t.Fatalf("%s: frame %+v: wrong room or duplicate", c.name, m)
			}
			ids[m.ID] = true
			if want := fmt.Sprint(m.User, "-", next[m.User]); m.Text != want {
				t.Fatalf("%s: got %q from %s; want %q (each publisher's messages in order)", c.name, m.Text, m.User, want)
			}
			next[m.User]++
		}
	}
	f.mustPost(f.gate1, "elsewhere", "only for elsewhere")
	if m := other.next(10 * time.Second); m.Text != "only for elsewhere" {
		t.Fatalf("the client in another room got %+v first; want only its room's message", m)
	}
}

// History is the same from both gates, and correct after FLUSHALL.
func TestHistoryAfterFlush(t *testing.T) {
	r := newRedis(t, false)
	f := startFleet(t, r)
	for i := range 60 {
		f.mustPost(f.gate1, "hist", fmt.Sprint("m", i))
	}
	before := f.history(f.gate2, "hist", 500)
	if len(before) != 60 || before[0].Text != "m0" || before[59].Text != "m59" {
		t.Fatalf("history = %d messages (%+v…); want m0..m59 oldest first", len(before), before[0])
	}
	def := f.history(f.gate1, "hist", 0)
	if len(def) != 50 || def[0].Text != "m10" {
		t.Fatalf("default history = %d messages from %q; want the last 50", len(def), def[0].Text)
	}
	r.flush()
	for _, g := range []string{f.gate1, f.gate2} {
		if after := f.history(g, "hist", 500); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("history after FLUSHALL:\n%v\nwant\n%v", after, before)
		}
	}
	// A client joining gets the last 50, oldest first, then live ones.
	c := dial(t, f.gate2, "hist", "late")
	for i := 10; i < 60; i++ {
		if m := c.next(10 * time.Second); m.Text != fmt.Sprint("m", i) {
			t.Fatalf("joining client's frame %d = %q; want m%d", i-10, m.Text, i)
		}
	}
	f.mustPost(f.gate1, "hist", "live")
	if m := c.next(10 * time.Second); m.Text != "live" {
		t.Fatalf("after the history: %q; want live", m.Text)
	}
}

// A client that joins during a burst gets no gap and no duplicate between
// the history and the live messages.
func TestJoinDuringBurst(t *testing.T) {
	f := startFleet(t, newRedis(t, false), "--chat-rate", "10000", "--chat-burst", "10000")
	pub := dial(t, f.gate1, "burst", "pub")
	const n = 400
	go func() {
		for i := range n {
			pub.send(fmt.Sprint("m", i))
			time.Sleep(time.Millisecond)
		}
		pub.send("end")
	}()
	var joiners []*client
	for i := range 4 {
		time.Sleep(60 * time.Millisecond)
		gate := f.gate1
		if i%2 == 1 {
			gate = f.gate2
		}
		joiners = append(joiners, dial(t, gate, "burst", fmt.Sprint("j", i)))
	}
	pub.until("end")
	all := f.history(f.gate1, "burst", 500)
	pos := map[int64]int{}
	for i, m := range all {
		pos[m.ID] = i
	}
	for _, j := range joiners {
		got := j.until("end")
		seen := map[int64]bool{}
		first := len(all)
		for _, m := range got {
			if seen[m.ID] {
				t.Fatalf("%s: message %d (%q) twice", j.name, m.ID, m.Text)
			}
			seen[m.ID] = true
			if p, ok := pos[m.ID]; !ok {
				t.Fatalf("%s: message %d not in the history", j.name, m.ID)
			} else if p < first {
				first = p
			}
		}
		// Every message from the first one received to the end came.
		for _, m := range all[first:] {
			if !seen[m.ID] {
				t.Fatalf("%s: gap: message %d (%q) missing; got %d messages from %q", j.name, m.ID, m.Text, len(got), all[first].Text)
			}
		}
		if len(got) != len(all)-first {
			t.Fatalf("%s: got %d messages; want %d", j.name, len(got), len(all)-first)
		}
		t.Logf("%s joined at %q: %d messages, no gap, no duplicate", j.name, got[0].Text, len(got))
	}
}

// A client that never reads is disconnected when its queue overflows,
// while the others in the room keep receiving everything.
func TestSlowClient(t *testing.T) {
	f := startFleet(t, newRedis(t, false), "--chat-queue", "16")
	slow := dialRaw(t, f.gate2, "slowroom", "slow") // never reads
	fast := dial(t, f.gate2, "slowroom", "fast")
	pad := strings.Repeat("p", 1990)
	ops := f.second.WaitReady(t, startTimeout).OpsAddr()
	const slowDrops = `microshop_gate_chat_disconnects_total{reason="slow"}`
	dropped := func() float64 {
		t.Helper()
		n, err := proctest.Metric(ops, slowDrops)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := dropped()
	sent := 0
	deadline := time.Now().Add(90 * time.Second)
	for dropped() == before {
		for range 20 {
			sent++
			f.mustPost(f.gate1, "slowroom", fmt.Sprint(sent, pad))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow client was not disconnected after %d messages", sent)
		}
	}
	// The operator is told.
	if len(f.second.LoggedAfter(1, "chat: disconnected a slow client")) == 0 {
		t.Errorf("gate2 did not log \"chat: disconnected a slow client\":\n%s", f.second.LogTail(4<<10))
	}
	f.mustPost(f.gate1, "slowroom", "end")
	got := fast.until("end")
	if len(got) != sent+1 {
		t.Fatalf("fast client got %d messages; want %d", len(got), sent+1)
	}
	for i, m := range got[:sent] {
		if !strings.HasPrefix(m.Text, fmt.Sprint(i+1, "p")) {
			t.Fatalf("fast client's message %d = %.12s…; want message %d, in order", i+1, m.Text, i+1)
		}
	}
	// The slow client, reading at last, finds what was buffered and then
	// the end of its connection, not more messages.
	var err error
	for err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err = slow.Read(ctx)
		cancel()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the slow client's connection is still open")
	}
	t.Logf("slow client disconnected after %d messages of 2 kB (%v); the fast one got them all", sent, err)
}

// With Redis down, sending answers a clear error and live sockets stay
// open; when Redis is back, delivery resumes by itself (the gates
// subscribe again) and the history is rebuilt from the database.
func TestRedisRestart(t *testing.T) {
	r := newRedis(t, true)
	f := startFleet(t, r)
	a := dial(t, f.gate1, "outage", "a")
	b := dial(t, f.gate2, "outage", "b")
	f.mustPost(f.gate1, "outage", "before")
	for _, c := range []*client{a, b} {
		if m := c.next(10 * time.Second); m.Text != "before" {
			t.Fatalf("%s: %+v; want before", c.name, m)
		}
	}
	r.kill()
	status, body := f.post(f.gate2, "outage", "during")
	if status != 503 || !strings.Contains(string(body), "not sent") {
		t.Fatalf("POST /chat with Redis down = %d %s; want 503 saying the message was not sent", status, body)
	}
	a.send("during, by socket")
	if m := a.next(10 * time.Second); !strings.Contains(m.Error, "Redis is down") {
		t.Fatalf("socket send with Redis down: %+v; want an error frame", m)
	}
	if h := f.history(f.gate1, "outage", 0); len(h) != 1 || h[0].Text != "before" {
		t.Fatalf("history with Redis down = %+v; want [before] from the database", h)
	}

	r.start()
	deadline := time.Now().Add(45 * time.Second)
	got := map[string]bool{}
	for i := 0; !got["a"] || !got["b"]; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("delivery did not resume after Redis came back (received: %v)", got)
		}
		if status, _ := f.post(f.gate1, "outage", fmt.Sprint("after-", i)); status != 200 {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for _, c := range []*client{a, b} {
			select {
			case m := <-c.frames:
				if !strings.HasPrefix(m.Text, "after-") {
					t.Fatalf("%s: %+v; want an after- message", c.name, m)
				}
				got[c.name] = true
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	h := f.history(f.gate2, "outage", 0)
	if len(h) < 2 || h[0].Text != "before" || !strings.HasPrefix(h[1].Text, "after-") {
		t.Fatalf("history after the restart = %+v; want before, then the after- messages", h)
	}
}
