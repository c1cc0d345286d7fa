package security_test

import (
	"bufio"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// fleetKey is the --fleet-key of every service and gate the harness starts.
const fleetKey = "e2e-fleet-key-0123456789"

// TestFleetKey: with --fleet-key (which the harness gives every process),
// the fleet works through the gate, while a
// peer that reaches a service's port directly cannot act as a member: an
// unsigned or forged auth object is refused and a request without one is
// anonymous, not the book's open mode.
func TestFleetKey(t *testing.T) {
	f := newFleet(t, "")
	f.service("goods")
	f.service("members")
	purchases := f.service("purchases")
	g := f.gate("--rate-limit", "0", "--rate-limit-strict", "0", "--rate-limit-member", "0")
	f.waitRoutes("GET /goods", "GET /sessions", "GET /purchases")

	a := want(t, "POST /goods as admin", f.do(g, "POST", "/goods", adminKey, "", map[string]any{"name": "tea", "price": 3}), 200)
	goodsID := int64(a.Body["id"].(float64))
	memberID, token := logIn(t, f, g, "dora")
	want(t, "POST /purchases with a token through the gate", f.do(g, "POST", "/purchases", token, "", map[string]any{"goodsid": goodsID}), 200)

	addr := listeningAddr(t, purchases)
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	m := strconv.FormatInt(memberID, 10)
	gid := strconv.FormatInt(goodsID, 10)
	for i, tc := range []struct{ what, auth, params string }{
		{"an unsigned auth object", `,"auth":{"member":` + m + `}`, `{"goodsid":` + gid + `}`},
		{"a forged signature", `,"auth":{"member":` + m + `,"exp":9999999999,"sig":"00ff"}`, `{"goodsid":` + gid + `}`},
		{"no auth object, userid given (the book's open mode)", ``, `{"userid":` + m + `,"goodsid":` + gid + `}`},
	} {
		key := strconv.Itoa(i + 1)
		pkt := `{"uri":"/purchases","method":"POST","key":` + key + tc.auth + `,"params":` + tc.params + `}¶`
		if _, err := nc.Write([]byte(pkt)); err != nil {
			t.Fatal(err)
		}
		raw, err := r.ReadString('\xb6')
		if err != nil {
			t.Fatalf("%s: no answer: %v", tc.what, err)
		}
		var ans struct {
			Key       int    `json:"key"`
			ErrorCode int    `json:"errorcode"`
			Message   string `json:"errormessage"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSuffix(raw, "¶")), &ans); err != nil {
			t.Fatalf("%s: answer %q: %v", tc.what, raw, err)
		}
		if ans.ErrorCode != 401 || strconv.Itoa(ans.Key) != key {
			t.Errorf("%s straight to purchases = %+v; want errorcode 401", tc.what, ans)
		}
	}
	if ps := f.do(g, "GET", "/purchases", token, "", nil); ps.Status != 200 || len(ps.Body["results"].([]any)) != 1 {
		t.Errorf("GET /purchases = %v; want exactly the one purchase made through the gate", ps)
	}
}

// TestFleetKeyRegistration: a distributor with --fleet-key lists only
// registrations signed with it, so a process without the key cannot pose
// as the members service and receive logins.
func TestFleetKeyRegistration(t *testing.T) {
	f := newFleet(t, "")
	members := f.service("members")
	g := f.gate()
	f.waitRoutes("POST /sessions")
	real := listeningAddr(t, members)

	impostor, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Close()
	port := impostor.Addr().(*net.TCPAddr).Port
	ops := f.dist.WaitReady(t, startTimeout).OpsAddr()
	refused := func() float64 {
		t.Helper()
		n, err := proctest.Metric(ops, `microshop_distributor_registrations_refused_total{reason="unsigned"}`)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := refused()
	nc, err := net.DialTimeout("tcp", f.distAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, reg := range []string{
		`{"name":"members","port":` + strconv.Itoa(port) + `,"urls":["POST/sessions","GET/members"]}`,
		`{"name":"members","port":` + strconv.Itoa(port) + `,"urls":["POST/sessions","GET/members"],"exp":9999999999,"sig":"00ff"}`,
	} {
		if _, err := nc.Write([]byte(`{"uri":"/distributes","method":"POST","key":0,"params":` + reg + `}¶`)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(startTimeout)
	for refused() < before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("the distributor never refused the unsigned and the forged registration:\n%s", f.dist.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(f.dist.LoggedAfter(2, "registration refused: not signed")); n < 2 {
		t.Errorf("the distributor logged %d \"registration refused: not signed\" lines; want 2:\n%s", n, f.dist.LogTail(4<<10))
	}
	// A new connection gets the list at once: members only at its real
	// address.
	list := readList(t, f.distAddr)
	var at []string
	for _, n := range list {
		if n.Name == "members" {
			at = append(at, net.JoinHostPort(n.Host, strconv.Itoa(n.Port)))
		}
	}
	if len(at) != 1 || at[0] != real {
		t.Fatalf("the distributor lists members at %v; want only %s", at, real)
	}
	_, token := logIn(t, f, g, "erin")
	if token == "" {
		t.Fatal("no token from the real members service")
	}
}

// listeningAddr waits for service p's ready file and returns the address
// its packet listener bound.
func listeningAddr(t *testing.T, p *proc) string {
	t.Helper()
	addr := p.WaitReady(t, startTimeout).Components[p.Args[0]]["packet"]
	if addr == "" {
		t.Fatalf("%s: no packet listener in its ready file", p.Name)
	}
	return addr
}

// readList connects to the distributor at addr and returns the first list
// it pushes.
func readList(t *testing.T, addr string) []struct {
	Name string `json:"name"`
	Host string `json:"host"`
	Port int    `json:"port"`
} {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	raw, err := bufio.NewReader(nc).ReadString('\xb6')
	if err != nil {
		t.Fatalf("no list from the distributor: %v", err)
	}
	var m struct {
		Params []struct {
			Name string `json:"name"`
			Host string `json:"host"`
			Port int    `json:"port"`
		} `json:"params"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSuffix(raw, "¶")), &m); err != nil {
		t.Fatalf("list %q: %v", raw, err)
	}
	return m.Params
}
