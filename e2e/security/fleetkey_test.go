package security_test

import (
	"bufio"
	"encoding/json"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fleetKey is the --fleet-key of every service and gate the harness starts.
const fleetKey = "e2e-fleet-key-0123456789"

var listeningRE = regexp.MustCompile(`msg="service listening".* addr=([0-9.]+:[0-9]+)`)

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

	var addr string
	deadline := time.Now().Add(startTimeout)
	for addr == "" {
		if m := listeningRE.FindStringSubmatch(purchases.Logs()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("purchases never logged its address:\n%s", purchases.Logs())
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
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
