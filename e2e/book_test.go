package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// The tests in this file speak the wire protocol byte for byte as the book's
// Node.js peers do (DESIGN §4): raw TCP, JSON objects ended by ¶, requests
// carrying their key only in params.key, lists whose uri lacks its slash.

// goodsMaxPacket is the --max-packet of the goods service in these tests.
const goodsMaxPacket = 4096

// gateTimeout is the gate's --request-timeout in TestBookPeerCompat.
const gateTimeout = 2 * time.Second

// TestBookPeerCompat: a fake Node.js service registers with our distributor
// and serves requests routed by our gate; a fake book gate calls our goods
// service; our goods service and gate run under a fake book distributor; and
// our goods service survives malformed and oversize packets.
func TestBookPeerCompat(t *testing.T) {
	t.Parallel()
	f := newFleet(t, "")
	f.startDistributor()
	gate := f.startGate("--request-timeout", gateTimeout.String())
	goods := f.startService("goods", "--max-packet", strconv.Itoa(goodsMaxPacket))
	nodes := f.waitNodes(map[string]int{"gate": 1, "goods": 1})
	goodsAddr := nodesNamed(nodes, "goods")[0].addr()
	f.waitGateConnected(gate, goodsAddr)
	f.pollStatus("/goods", http.StatusOK, startTimeout)

	t.Run("NodeServiceBehindOurGate", func(t *testing.T) { testNodeService(t, f) })
	t.Run("BookGateCallsOurGoods", func(t *testing.T) { testBookGate(t, f) })
	t.Run("BadPackets", func(t *testing.T) { testBadPackets(t, f, goods, goodsAddr) })
	t.Run("OurFleetUnderBookDistributor", func(t *testing.T) {
		t.Parallel()
		testBookDistributor(t)
	})
}

// readList reads the next packet from the distributor, failing with a
// message that names what the test was waiting for.
func (p *rawPeer) readList(t *testing.T, waitingFor string) []byte {
	t.Helper()
	p.SetReadDeadline(time.Now().Add(startTimeout))
	b, err := p.r.next()
	if err != nil {
		t.Fatalf("the distributor's list never showed %s: %v", waitingFor, err)
	}
	return b
}

// fakeNodeService is a service written against the book's server.js: it
// answers every request with the key it found in params.key.
type fakeNodeService struct {
	ln   net.Listener
	port int

	mu       sync.Mutex
	conns    []net.Conn
	requests [][]byte
}

func startFakeNodeService(t *testing.T) *fakeNodeService {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeNodeService{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	t.Cleanup(s.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *fakeNodeService) close() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}

func (s *fakeNodeService) serve(c net.Conn) {
	r := newPacketReader(c)
	for {
		p, err := r.next()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.requests = append(s.requests, p)
		s.mu.Unlock()
		var req struct {
			Params map[string]json.RawMessage `json:"params"`
		}
		var out string
		if err := json.Unmarshal(p, &req); err != nil || req.Params["key"] == nil {
			continue // the book's service would crash here; ours just ignores it
		}
		key := string(req.Params["key"])
		if string(req.Params["silent"]) == `"1"` {
			continue // never answers
		}
		if string(req.Params["fail"]) == `"1"` {
			out = `{"key":` + key + `,"errorcode":1,"errormessage":"invalid parameters"}¶`
		} else {
			out = `{"key":` + key + `,"errorcode":0,"errormessage":"success","results":[{"id":1,"name":"from node"}]}¶`
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
	}
}

// requestWithQ returns the last request received whose params.q is q.
func (s *fakeNodeService) requestWithQ(q string) (raw []byte, req map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range slices.Backward(s.requests) {
		var m map[string]any
		if json.Unmarshal(p, &m) != nil {
			continue
		}
		if params, ok := m["params"].(map[string]any); ok && params["q"] == q {
			return p, m
		}
	}
	return nil, nil
}

// testNodeService: a fake Node.js service registers with our distributor
// exactly as the book's server.js does, sees itself in the pushed list, and
// is then reachable through our gate; its errorcode 1 is a 400.
func testNodeService(t *testing.T, f *fleet) {
	svc := startFakeNodeService(t)
	reg := dialRaw(t, f.distAddr)
	reg.write(t, `{"uri":"/distributes","method":"POST","key":0,"params":{"port":`+strconv.Itoa(svc.port)+`,"name":"nodesvc","urls":["GET/nodesvc"]}}¶`)
	for found := false; !found; {
		p := reg.readList(t, "the fake Node service's registration")
		var m struct {
			URI    string `json:"uri"`
			Method string `json:"method"`
			Key    *int   `json:"key"`
		}
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("distributor sent a packet that is not JSON (%v): %q", err, p)
		}
		nodes, ok := decodeList(p)
		if !ok {
			t.Fatalf("distributor sent something other than a list: %q", p)
		}
		if m.URI != "/distributes" || m.Method != "GET" || m.Key == nil || *m.Key != 0 {
			t.Errorf("list packet: uri %q method %q key %v, want /distributes GET 0: %q", m.URI, m.Method, deref(m.Key), p)
		}
		for _, n := range nodes {
			if n.Name == "nodesvc" && n.Port == svc.port {
				if n.Host != "127.0.0.1" && n.Host != "::ffff:127.0.0.1" {
					t.Errorf("our fake service listed with host %q, want the loopback address it came from", n.Host)
				}
				if !slices.Equal(n.URLs, []string{"GET/nodesvc"}) {
					t.Errorf("our fake service listed with urls %q", n.URLs)
				}
				found = true
			}
		}
	}

	a := f.pollStatus("/nodesvc", http.StatusOK, startTimeout)
	var body struct {
		ErrorCode    *int              `json:"errorcode"`
		ErrorMessage string            `json:"errormessage"`
		Results      []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(a.Body, &body); err != nil || body.ErrorCode == nil || *body.ErrorCode != 0 ||
		body.ErrorMessage != "success" || len(body.Results) != 1 || string(body.Results[0]) != `{"id":1,"name":"from node"}` {
		t.Errorf("GET /nodesvc through our gate: got %s, want the Node service's answer", a)
	}

	// The request the Node service got carries its key in params.key, and
	// a ¶ in a parameter arrives escaped (a raw one would end the packet).
	a = f.get(t, "/nodesvc?"+url.Values{"q": {"x¶y"}}.Encode())
	if a.Status != http.StatusOK {
		t.Errorf("GET /nodesvc?q=x¶y: %s", a)
	}
	raw, req := svc.requestWithQ("x¶y")
	if req == nil {
		t.Fatal("the Node service never received params.q = \"x¶y\"")
	}
	params := req["params"].(map[string]any)
	if req["uri"] != "/nodesvc" || req["method"] != "GET" {
		t.Errorf("request to the Node service: uri %v method %v, want /nodesvc GET: %s", req["uri"], req["method"], raw)
	}
	if _, ok := params["key"].(float64); !ok {
		t.Errorf("request to the Node service has no numeric params.key: %s", raw)
	} else if k, ok := req["key"]; ok && k != params["key"] {
		t.Errorf("request to the Node service: top-level key %v differs from params.key %v: %s", k, params["key"], raw)
	}

	// errorcode 1 (the book's "bad input") is a 400 carrying the body.
	a = f.get(t, "/nodesvc?fail=1")
	if err := json.Unmarshal(a.Body, &body); a.Status != http.StatusBadRequest || err != nil || body.ErrorCode == nil ||
		*body.ErrorCode != 1 || body.ErrorMessage != "invalid parameters" {
		t.Errorf("GET /nodesvc?fail=1: got %s, want HTTP 400 with the service's errorcode 1", a)
	}
	expect(t, "POST /nodesvc (only GET registered)", f.sendJSON(t, "POST", "/nodesvc", map[string]any{}), http.StatusMethodNotAllowed)

	// A request the service never answers fails with 504 after the gate's
	// request timeout; it does not hang.
	start := time.Now()
	expect(t, "GET /nodesvc never answered", f.get(t, "/nodesvc?silent=1"), http.StatusGatewayTimeout)
	if took := time.Since(start); took < gateTimeout {
		t.Errorf("504 after %v, before the gate's request timeout %v", took, gateTimeout)
	}

	// A listed route whose only instance cannot be reached is a 503.
	dead := dialRaw(t, f.distAddr)
	dead.write(t, `{"uri":"/distributes","method":"POST","key":0,"params":{"port":`+strconv.Itoa(proctest.FreePort(t))+`,"name":"deadsvc","urls":["GET/deadsvc"]}}¶`)
	f.pollStatus("/deadsvc", http.StatusServiceUnavailable, startTimeout)
	dead.Close()

	// When the Node service leaves the distributor, its route has no
	// instance: a 503, not the 404 of a route that was never listed.
	reg.Close()
	f.pollStatus("/nodesvc", http.StatusServiceUnavailable, startTimeout)
	expect(t, "GET /nevernodesvc", f.get(t, "/nevernodesvc"), http.StatusNotFound)
}

// testBookGate: a fake book gate registers with our distributor, finds our
// goods service in the list and calls it over raw TCP, the key only in
// params.key: single requests, two in one write, one split across writes,
// and a ¶ encoded as \u00b6.
func testBookGate(t *testing.T, f *fleet) {
	gw := dialRaw(t, f.distAddr)
	myPort := proctest.FreePort(t)
	gw.write(t, `{"uri":"/distributes","method":"POST","key":0,"params":{"port":`+strconv.Itoa(myPort)+`,"name":"gate","urls":[]}}¶`)
	var goodsNode node
	for {
		nodes, ok := decodeList(gw.readList(t, "the fake book gate's registration (or goods)"))
		if !ok {
			continue
		}
		self := false
		for _, n := range nodes {
			if n.Name == "gate" && n.Port == myPort {
				self = true
			}
		}
		if gs := nodesNamed(nodes, "goods"); self && len(gs) > 0 {
			goodsNode = gs[0]
			break
		}
	}
	for _, u := range []string{"GET/goods", "POST/goods", "DELETE/goods"} {
		if !slices.Contains(goodsNode.URLs, u) {
			t.Errorf("goods listed without %s: %+v", u, goodsNode)
		}
	}
	svc := dialRaw(t, goodsNode.addr())

	ok := func(what string, r response, key string) {
		t.Helper()
		if string(r.Key) != key {
			t.Fatalf("%s: no answer with key %s (got %q)", what, key, r.raw)
		}
		if r.ErrorCode == nil || *r.ErrorCode != 0 || r.ErrorMessage == nil {
			t.Errorf("%s: want errorcode 0 and an errormessage, got %s", what, r.raw)
		}
	}

	// The book's gate sends exactly this.
	svc.write(t, `{"uri":"/goods","method":"GET","params":{"key":8}}¶`)
	r := svc.readResponses(t, 1)["8"]
	ok("GET /goods", r, "8")
	if len(r.Results) == 0 || r.Results[0] != '[' {
		t.Errorf("GET /goods: results is not an array: %s", r.raw)
	}

	// A name with ¶, encoded as \u00b6 (a raw one would end the packet).
	svc.write(t, `{"uri":"/goods","method":"POST","params":{"name":"x\u00b6y","category":"node","price":5,"description":"\u00b6","key":12}}¶`)
	r = svc.readResponses(t, 1)["12"]
	ok("POST /goods with \\u00b6", r, "12")
	if r.ID == nil {
		t.Fatalf("POST /goods: no id: %s", r.raw)
	}
	goodID := *r.ID
	id := strconv.FormatInt(goodID, 10)
	svc.write(t, `{"uri":"/goods","method":"GET","params":{"id":`+id+`,"key":13}}¶`)
	r = svc.readResponses(t, 1)["13"]
	ok("GET /goods?id of the \\u00b6 good", r, "13")
	var gs []good
	if err := json.Unmarshal(r.Results, &gs); err != nil || len(gs) != 1 || gs[0].Name != "x¶y" || gs[0].Description != "¶" {
		t.Errorf("GET /goods?id: want name x¶y and description ¶, got %s", r.raw)
	}
	// The HTTP side sees the same good.
	if g := f.getGood(t, goodID); g.Name != "x¶y" {
		t.Errorf("GET /goods?id through our gate: %+v", g)
	}

	// Two requests in one write; answers come back matched by key.
	svc.write(t, `{"uri":"/goods","method":"GET","params":{"key":9}}¶{"uri":"/goods","method":"GET","params":{"id":`+id+`,"key":10}}¶`)
	rs := svc.readResponses(t, 2)
	ok("first of two in one write", rs["9"], "9")
	ok("second of two in one write", rs["10"], "10")
	if !strings.Contains(string(rs["10"].Results), `"x\u00b6y"`) && !strings.Contains(string(rs["10"].Results), `"x¶y"`) {
		t.Errorf("second of two in one write: not the good %s: %s", id, rs["10"].raw)
	}

	// One request split across three writes, the last between the two bytes
	// of the separator. The pauses let the pieces arrive as separate reads.
	pkt := `{"uri":"/goods","method":"GET","params":{"id":` + id + `,"key":11}}¶`
	cut := len(pkt) - 1 // inside ¶
	for _, piece := range []string{pkt[:17], pkt[17:cut], pkt[cut:]} {
		svc.write(t, piece)
		time.Sleep(30 * time.Millisecond)
	}
	ok("request split across writes", svc.readResponses(t, 1)["11"], "11")

	// A route the service does not serve is answered with an error, not
	// left hanging.
	svc.write(t, `{"uri":"/nosuch","method":"GET","params":{"key":14}}¶`)
	r = svc.readResponses(t, 1)["14"]
	if string(r.Key) != "14" || r.ErrorCode == nil || *r.ErrorCode == 0 {
		t.Errorf("unknown route: want an error answer with key 14, got %q", r.raw)
	}
}

// testBadPackets: a malformed packet and an oversize packet sent raw to the
// goods service are logged; the connection is then either still served or
// closed (never left hanging); the process lives on and a new connection is
// served.
func testBadPackets(t *testing.T, f *fleet, goods *proc, addr string) {
	// The service logs a dropped packet before it answers the next one (or
	// the dropped one): wantWarn checks, once the answer is in, that the
	// line was written.
	warns := func() int { return len(goods.LogLines("level=WARN")) }
	wantWarn := func(n int, what string) {
		t.Helper()
		if len(goods.LoggedAfter(n, "level=WARN")) < n {
			t.Errorf("goods logged no warning about the %s", what)
		}
	}
	// servedOrClosed sends a good request after a bad one on the same
	// connection: it must be answered, or the connection closed.
	servedOrClosed := func(c *rawPeer, key, what string) {
		t.Helper()
		c.write(t, `{"uri":"/goods","method":"GET","params":{"key":`+key+`}}¶`)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		p, err := c.r.next()
		var ne net.Error
		switch {
		case err == nil:
			var r response
			if json.Unmarshal(p, &r) != nil || string(r.Key) != key || r.ErrorCode == nil || *r.ErrorCode != 0 {
				t.Errorf("after the %s: got %q, want the answer to key %s", what, p, key)
			}
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("after the %s: connection neither served nor closed in 5s", what)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
			t.Logf("after the %s: the service closed the connection", what)
		default:
			t.Errorf("after the %s: %v", what, err)
		}
	}

	// answered reads the error answer to a rejected request whose key could
	// be read: the caller is told at once rather than left to its timeout.
	answered := func(c *rawPeer, key string, code int, what string) {
		t.Helper()
		var r response
		if p := c.read(t, 5*time.Second); json.Unmarshal(p, &r) != nil || string(r.Key) != key || r.ErrorCode == nil || *r.ErrorCode != code {
			t.Errorf("the %s with key %s: got %q; want an answer with errorcode %d", what, key, p, code)
		}
	}

	n := warns()
	c1 := dialRaw(t, addr)
	c1.write(t, `{"uri":"/goods","method":"GET","params":{"key":1}¶`)
	answered(c1, "1", http.StatusBadRequest, "malformed packet")
	wantWarn(n+1, "malformed packet")
	servedOrClosed(c1, "2", "malformed packet")

	// An oversize packet whose key comes after the limit's first bytes
	// cannot be answered (the book's gate puts it last): it is dropped.
	n = warns()
	c2 := dialRaw(t, addr)
	c2.write(t, `{"uri":"/goods","method":"GET","params":{"pad":"`+strings.Repeat("x", 2*goodsMaxPacket)+`","key":3}}¶`)
	servedOrClosed(c2, "4", "oversize packet")
	wantWarn(n+1, "oversize packet")
	// One with its key first (as microshop's gate sends it) gets a 413.
	c2.write(t, `{"uri":"/goods","method":"GET","key":5,"params":{"pad":"`+strings.Repeat("x", 2*goodsMaxPacket)+`","key":5}}¶`)
	answered(c2, "5", http.StatusRequestEntityTooLarge, "oversize packet")
	servedOrClosed(c2, "6", "oversize packet")

	// Not JSON at all, and JSON that is no request object.
	c3 := dialRaw(t, addr)
	c3.write(t, "hello¶\x00\xff\xfe¶[1,2]¶\"str\"¶null¶¶")
	// A request whose key is readable but whose params are not an object
	// is answered with an error.
	c3.write(t, `{"uri":"/goods","method":"GET","key":5,"params":[1,2]}¶`)
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if p, err := c3.r.next(); err != nil {
		t.Errorf("request with array params: no answer: %v", err)
	} else {
		var r response
		if json.Unmarshal(p, &r) != nil || string(r.Key) != "5" || r.ErrorCode == nil || *r.ErrorCode == 0 {
			t.Errorf("request with array params: want an error answer with key 5, got %q", p)
		}
	}

	if goods.Exited() {
		t.Fatalf("goods exited after bad packets: %v", goods.Err())
	}
	c4 := dialRaw(t, addr)
	c4.write(t, `{"uri":"/goods","method":"GET","params":{"key":7}}¶`)
	r := c4.readResponses(t, 1)["7"]
	if string(r.Key) != "7" || r.ErrorCode == nil || *r.ErrorCode != 0 {
		t.Errorf("new connection after bad packets: got %q", r.raw)
	}
	expect(t, "GET /goods through the gate after bad packets", f.get(t, "/goods"), http.StatusOK)
}

// fakeBookDistributor behaves like the book's distributor.js: it says nothing
// until a process registers, then pushes the list to everyone, with
// "uri":"distributes" (no slash), hosts as ::ffff:127.0.0.1, the gate
// included, and (as observed) the same list twice in a row.
type fakeBookDistributor struct {
	ln net.Listener

	mu    sync.Mutex
	conns []net.Conn
	regs  []bookReg
	ch    chan bookReg
}

type bookReg struct {
	conn net.Conn
	raw  []byte
	Name string   `json:"name"`
	Port int      `json:"port"`
	URLs []string `json:"urls"`
}

func startFakeBookDistributor(t *testing.T) *fakeBookDistributor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeBookDistributor{ln: ln, ch: make(chan bookReg, 16)}
	t.Cleanup(func() {
		ln.Close()
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, c := range d.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
			go d.serve(c)
		}
	}()
	return d
}

func (d *fakeBookDistributor) serve(c net.Conn) {
	r := newPacketReader(c)
	for {
		p, err := r.next()
		if err != nil {
			d.mu.Lock()
			d.regs = slices.DeleteFunc(d.regs, func(g bookReg) bool { return g.conn == c })
			d.mu.Unlock()
			return
		}
		var m struct {
			URI    string  `json:"uri"`
			Method string  `json:"method"`
			Params bookReg `json:"params"`
		}
		if json.Unmarshal(p, &m) != nil || m.URI != "/distributes" || m.Method != "POST" {
			continue
		}
		g := m.Params
		g.conn, g.raw = c, p
		d.mu.Lock()
		d.regs = slices.DeleteFunc(d.regs, func(o bookReg) bool { return o.conn == c })
		d.regs = append(d.regs, g)
		d.broadcastLocked()
		d.mu.Unlock()
		select {
		case d.ch <- g:
		default:
		}
	}
}

// broadcastLocked writes the list, in the book's field order, twice to
// every connection.
func (d *fakeBookDistributor) broadcastLocked() {
	var items []string
	for _, g := range d.regs {
		urls, _ := json.Marshal(g.URLs)
		if g.URLs == nil {
			urls = []byte("[]")
		}
		items = append(items, fmt.Sprintf(`{"port":%d,"name":%q,"urls":%s,"host":"::ffff:127.0.0.1"}`, g.Port, g.Name, urls))
	}
	pkt := `{"uri":"distributes","method":"GET","key":0,"params":[` + strings.Join(items, ",") + `]}¶`
	for _, c := range d.conns {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, pkt)
		io.WriteString(c, pkt)
	}
}

// testBookDistributor: our goods service and our gate register with a fake
// book distributor, follow its lists, and the gate serves /goods.
func testBookDistributor(t *testing.T) {
	f := newFleet(t, "")
	d := startFakeBookDistributor(t)
	f.distAddr = d.ln.Addr().String()
	goods := f.startService("goods")
	gate := f.startGate()
	gatePort, _ := strconv.Atoi(f.gateURL[strings.LastIndexByte(f.gateURL, ':')+1:])

	got := map[string]bookReg{}
	deadline := time.After(startTimeout)
	for got["goods"].Name == "" || got["gate"].Name == "" {
		select {
		case g := <-d.ch:
			got[g.Name] = g
		case <-deadline:
			f.checkAlive()
			t.Fatalf("registrations received: %v; want goods and gate", got)
		}
	}
	var regPkt struct {
		URI    string          `json:"uri"`
		Method string          `json:"method"`
		Key    *int            `json:"key"`
		Params json.RawMessage `json:"params"`
	}
	for name, g := range got {
		if err := json.Unmarshal(g.raw, &regPkt); err != nil || regPkt.URI != "/distributes" || regPkt.Method != "POST" ||
			regPkt.Key == nil || *regPkt.Key != 0 || g.Port <= 0 {
			t.Errorf("%s's registration is not the book's: %s", name, g.raw)
		}
	}
	for _, u := range []string{"POST/goods", "GET/goods", "DELETE/goods"} {
		if !slices.Contains(got["goods"].URLs, u) {
			t.Errorf("goods registered without %s: %s", u, got["goods"].raw)
		}
	}
	if g := got["gate"]; g.Port != gatePort || len(g.URLs) != 0 || !strings.Contains(string(g.raw), `"urls":[]`) {
		t.Errorf("gate registration: want port %d and \"urls\":[], got %s", gatePort, g.raw)
	}

	f.waitGateConnected(gate, "127.0.0.1:"+strconv.Itoa(got["goods"].Port))
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	id := f.addGood(t, good{Name: "under the book's distributor", Category: "c", Price: 1})
	if g := f.getGood(t, id); g.Name != "under the book's distributor" {
		t.Errorf("GET /goods?id: %+v", g)
	}
	if goods.Exited() {
		t.Fatalf("goods exited: %v", goods.Err())
	}
}

// TestDistributorEveryRegistration: a peer that sends its registration in
// the same breath as it connects (as the book's server.js and every
// microshop process do) is always listed: 100 peers in a row, each of which
// must see itself in the list pushed to it.
func TestDistributorEveryRegistration(t *testing.T) {
	t.Parallel()
	f := newFleet(t, "")
	f.startDistributor()
	var lost []int
	for i := range 100 {
		port := 20000 + i // only listed, never dialled
		c, err := net.DialTimeout("tcp", f.distAddr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.WriteString(c, `{"uri":"/distributes","method":"POST","key":0,"params":{"port":`+strconv.Itoa(port)+`,"name":"eager","urls":["GET/eager"]}}¶`)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		r := newPacketReader(c)
		for {
			p, err := r.next()
			if err != nil {
				lost = append(lost, i)
				break
			}
			nodes, _ := decodeList(p)
			if slices.ContainsFunc(nodes, func(n node) bool { return n.Name == "eager" && n.Port == port }) {
				break
			}
		}
		c.Close()
	}
	if len(lost) > 0 {
		t.Errorf("%d of 100 registrations sent right after connecting never appeared in the list (peers %v)", len(lost), lost)
	}
}
