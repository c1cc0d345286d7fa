package e2e

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
)

var keyRE = regexp.MustCompile(`"key":[0-9]+`)

// TestIdempotentPurchaseAfterTimeout: a POST /purchases that timed out at
// the gate (504) was still committed; the client retries it three times with
// the same Idempotency-Key and gets three identical answers, naming the one
// purchase, which is all there is.
func TestIdempotentPurchaseAfterTimeout(t *testing.T) {
	f := newFleet(t, "")
	f.startDistributor()
	f.startGate("--request-timeout", "300ms")
	hasty := f.gateURL
	f.startGate() // the harness's 5 s
	f.startService("goods")
	f.startService("members")
	f.startService("purchases", "--answer-delay", "1s")
	f.waitNodes(map[string]int{"gate": 2, "goods": 1, "members": 1, "purchases": 1})
	f.pollStatus("/goods", http.StatusOK, startTimeout)
	user := f.addMember(t, "idem", "password-idem")
	good := f.addGood(t, good{Name: "tea", Category: "drink", Price: 3})
	body := []byte(`{"userid":` + strconv.FormatInt(user, 10) + `,"goodsid":` + strconv.FormatInt(good, 10) + `}`)
	post := func(base string) (int, string) {
		req, _ := http.NewRequest("POST", base+"/purchases", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", `"order-7f3a"`)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatalf("POST /purchases: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, b := post(hasty); status != http.StatusGatewayTimeout {
		t.Fatalf("the first POST through a gate with a 300 ms timeout: %d %s; want 504", status, b)
	}
	var answers []string
	for range 3 {
		status, b := post(f.gateURL)
		if status != http.StatusOK {
			t.Fatalf("retry with the same Idempotency-Key: %d %s; want 200", status, b)
		}
		// The answers differ only in the packet key the gate chose.
		answers = append(answers, keyRE.ReplaceAllString(b, `"key":K`))
	}
	if answers[0] != answers[1] || answers[1] != answers[2] {
		t.Fatalf("three retries answered %q; want the same answer", answers)
	}
	if ps := f.purchases(t, user); len(ps) != 1 {
		t.Fatalf("%d purchases after a timed-out POST and three retries with one key: %+v; want 1", len(ps), ps)
	}
	t.Logf("after a 504 and three retries: %s, one purchase", answers[0])
}
