package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// An answer over the packet limit is an error at once, never a wait for
// the request timeout and a 504: the service's own limit (it answers 500
// instead) and the gate's (it drops the packet and fails the call with a
// 502, reading its key from the packet's first bytes).
func TestOversizeAnswerFailsFast(t *testing.T) {
	const limit = "4096"
	for _, tc := range []struct {
		name         string
		gate, goods  []string
		status       int
		wantInReason string
	}{
		{"the service's limit", nil, []string{"--max-packet", limit}, http.StatusInternalServerError, "over the packet limit of " + limit},
		{"the gate's limit", []string{"--max-packet", limit}, nil, http.StatusBadGateway, "over the packet limit of " + limit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, "")
			f.startDistributor()
			f.startGate(tc.gate...)
			f.startService("goods", tc.goods...)
			f.waitNodes(map[string]int{"gate": 1, "goods": 1})
			f.pollStatus("/goods", http.StatusOK, startTimeout)
			for range 3 {
				f.addGood(t, good{Name: "long", Category: "c", Price: 1, Description: strings.Repeat("d", 2000)})
			}
			start := time.Now()
			a := f.get(t, "/goods")
			took := time.Since(start)
			expect(t, "GET /goods over the limit", a, tc.status)
			if !strings.Contains(*a.ErrorMessage, tc.wantInReason) {
				t.Errorf("GET /goods over the limit: %s; want a message saying %q", a, tc.wantInReason)
			}
			if took > time.Second {
				t.Errorf("GET /goods over the limit took %v; want an answer at once (the gate's request timeout is 5s)", took)
			}
			t.Logf("%s: %s in %v", tc.name, a, took.Round(time.Millisecond))
			// One good fits, and is served.
			expect(t, "GET /goods?id=1", f.get(t, "/goods?id=1"), http.StatusOK)
		})
	}
}
