package security_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// capture is a TCP proxy to target that records what clients send.
type capture struct {
	addr string
	mu   sync.Mutex
	sent bytes.Buffer
}

func newCapture(t *testing.T, target string) *capture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c := &capture{addr: ln.Addr().String()}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			t.Cleanup(func() { in.Close(); out.Close() })
			go io.Copy(in, out)
			go io.Copy(out, io.TeeReader(in, writerFunc(func(p []byte) (int, error) {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.sent.Write(p)
			})))
		}
	}()
	return c
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// packets returns the captured packets that contain sub.
func (c *capture) packets(sub string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range strings.Split(c.sent.String(), "¶") {
		if strings.Contains(p, sub) {
			out = append(out, p)
		}
	}
	return out
}

// exchange sends packets on a new connection to addr from local (nil: any)
// and returns the answers, by key.
func exchange(t *testing.T, addr string, local net.Addr, packets ...string) map[string]map[string]any {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: local}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	out := map[string]map[string]any{}
	for _, p := range packets {
		if _, err := io.WriteString(nc, p+"¶"); err != nil {
			t.Fatal(err)
		}
		raw, err := r.ReadString('\xb6')
		if err != nil {
			t.Fatalf("no answer to %.80q…: %v", p, err)
		}
		var m map[string]any
		json.Unmarshal([]byte(strings.TrimSuffix(raw, "¶")), &m)
		out[strconv.Itoa(int(m["key"].(float64)))] = m
	}
	return out
}

var goodsidRE = regexp.MustCompile(`"goodsid":"?[0-9]+"?`)

// TestReplayedAuthObject: a purchase's packet captured between the gate
// and the purchases service, replayed straight to the service's port —
// as it was, or with another good — is refused; only the purchase made
// through the gate exists.
func TestReplayedAuthObject(t *testing.T) {
	f := newFleet(t, "")
	f.service("goods")
	f.service("members")
	port := proctest.FreePort(t)
	real := "127.0.0.1:" + strconv.Itoa(port)
	spy := newCapture(t, real)
	_, spyPort, _ := net.SplitHostPort(spy.addr)
	f.service("purchases", "--addr", real, "--advertise", "127.0.0.1:"+spyPort)
	g := f.gate("--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0")
	f.waitRoutes("GET /goods", "GET /sessions", "GET /purchases")
	tea := int64(want(t, "POST /goods", f.do(g, "POST", "/goods", adminKey, "", map[string]any{"name": "tea", "price": 3}), 200).Body["id"].(float64))
	cake := int64(want(t, "POST /goods", f.do(g, "POST", "/goods", adminKey, "", map[string]any{"name": "cake", "price": 5}), 200).Body["id"].(float64))
	_, token := logIn(t, f, g, "mallory-victim")
	want(t, "POST /purchases through the gate", f.do(g, "POST", "/purchases", token, "", map[string]any{"goodsid": tea}), 200)

	captured := spy.packets(`"uri":"/purchases","method":"POST"`)
	if len(captured) != 1 || !strings.Contains(captured[0], `"sig":`) {
		t.Fatalf("captured %d purchase packets (%q); want one, signed", len(captured), captured)
	}
	same := captured[0]
	other := goodsidRE.ReplaceAllString(same, `"goodsid":`+strconv.FormatInt(cake, 10))
	if other == same {
		t.Fatalf("could not change the good in %q", same)
	}
	keyRE := regexp.MustCompile(`"key":[0-9]+`)
	withKey := func(p string, k int) string { return keyRE.ReplaceAllString(p, `"key":`+strconv.Itoa(k)) }
	// On a connection of its own, with and without asking a nonce first.
	answers := exchange(t, real, nil, withKey(same, 1), withKey(other, 2))
	answers2 := exchange(t, real, nil, `{"uri":"/connection","method":"NONCE","key":3}`, withKey(same, 4), withKey(other, 5))
	for what, a := range map[string]map[string]any{
		"the captured purchase replayed":                      answers["1"],
		"the captured purchase with another good":             answers["2"],
		"the captured purchase replayed after asking a nonce": answers2["4"],
		"the captured purchase, another good, after a nonce":  answers2["5"],
	} {
		if a == nil || a["errorcode"] != float64(401) {
			t.Errorf("%s straight to purchases: %v; want errorcode 401", what, a)
		}
	}
	ps := f.do(g, "GET", "/purchases", token, "", nil)
	if results, _ := ps.Body["results"].([]any); ps.Status != 200 || len(results) != 1 {
		t.Fatalf("GET /purchases = %v; want exactly the one purchase made through the gate", ps)
	}
}

// TestReplayedRegistration: a members registration captured between the
// service and the distributor, replayed from another address, is refused:
// the list shows members only where it runs.
func TestReplayedRegistration(t *testing.T) {
	f := newFleet(t, "")
	spy := newCapture(t, f.distAddr)
	members := f.start("members", "members", "--addr", "127.0.0.1:0", "--distributor", spy.addr,
		"--db", f.db, "--redis", f.redis, "--redis-prefix", f.prefix, "--fleet-key", fleetKey)
	real := listeningAddr(t, members)
	deadline := time.Now().Add(startTimeout)
	var regs []string
	for regs = spy.packets(`"method":"POST"`); len(regs) == 0; regs = spy.packets(`"method":"POST"`) {
		if time.Now().After(deadline) {
			t.Fatal("no registration went through the proxy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	nc, err := (&net.Dialer{Timeout: 5 * time.Second, LocalAddr: from}).Dial("tcp", f.distAddr)
	if err != nil {
		t.Skipf("cannot dial from 127.0.0.2: %v", err)
	}
	defer nc.Close()
	// As it was, and after asking a challenge of its own. A packet is
	// handled after those sent before it on its connection: once the second
	// challenge is answered, both registrations have been.
	io.WriteString(nc, regs[0]+"¶")
	io.WriteString(nc, `{"uri":"/distributes","method":"CHALLENGE","key":1}¶`)
	io.WriteString(nc, regs[0]+"¶")
	io.WriteString(nc, `{"uri":"/distributes","method":"CHALLENGE","key":2}¶`)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	for {
		raw, err := r.ReadString('\xb6')
		if err != nil {
			t.Fatalf("no answer to the second challenge: %v", err)
		}
		if strings.HasPrefix(raw, `{"key":2,`) {
			break
		}
	}
	var at []string
	for _, n := range readList(t, f.distAddr) {
		if n.Name == "members" {
			at = append(at, net.JoinHostPort(n.Host, strconv.Itoa(n.Port)))
		}
	}
	if len(at) != 1 || at[0] != real {
		t.Fatalf("the distributor lists members at %v; want only %s", at, real)
	}
}
