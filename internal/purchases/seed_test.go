//go:build seed

package purchases_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSeedRankings seeds a running fleet through its gate, for load tests
// of GET /rankings: MICROSHOP_SEED_GOODS goods (default 100000), each
// bought once, every fifth twice, and good i×1000 another i times, so that
// every good is ranked and the top ten are distinct. It only uses the HTTP
// API: run the fleet with rate limits off (and --auth off, or give
// MICROSHOP_SEED_TOKEN, sent as a bearer token). MICROSHOP_SEED_GATE is the
// gate's URL (default http://127.0.0.1:8000).
//
//	go test -tags seed -run TestSeedRankings -timeout 30m -v ./internal/purchases
func TestSeedRankings(t *testing.T) {
	gate := envOr("MICROSHOP_SEED_GATE", "http://127.0.0.1:8000")
	n, err := strconv.Atoi(envOr("MICROSHOP_SEED_GOODS", "100000"))
	if err != nil || n < 1 {
		t.Fatalf("MICROSHOP_SEED_GOODS: %v", err)
	}
	token := os.Getenv("MICROSHOP_SEED_TOKEN")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(path string, body map[string]any) map[string]any {
		b, _ := json.Marshal(body)
		for {
			req, _ := http.NewRequest("POST", gate+path, bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("POST %s: %v", path, err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests {
				time.Sleep(time.Second)
				continue
			}
			var out map[string]any
			if resp.StatusCode >= 300 || json.Unmarshal(raw, &out) != nil {
				t.Fatalf("POST %s %s = %d %s", path, b, resp.StatusCode, raw)
			}
			return out
		}
	}
	start := time.Now()
	var next, purchases atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) || t.Failed() {
					return
				}
				res := post("/goods", map[string]any{"name": fmt.Sprintf("good %d", i), "category": "seed", "price": 100 + i%900, "description": "seeded for load tests"})
				id, _ := res["id"].(float64)
				if id < 1 {
					t.Errorf("POST /goods = %v; want an id", res)
					return
				}
				sales := 1 + i%5/4
				if i%1000 == 0 {
					sales += i / 1000
				}
				for range sales {
					post("/purchases", map[string]any{"userid": 1 + i%1000, "goodsid": int64(id)})
					purchases.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("seeded %d goods and %d purchases through %s in %v", n, purchases.Load(), gate, time.Since(start))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
