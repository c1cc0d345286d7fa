package chat_test

import (
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/proctest"
)

// historyLoadMaxRSS bounds microshop all's memory while 200 clients read a
// full room's history at the maximum limit (README, "Bounds").
const historyLoadMaxRSS = 300 << 20

// rss reads a process's resident memory from /proc.
func rss(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024, err
		}
	}
	return 0, io.EOF
}

// TestFullRoomHistoryUnderLoad: a room full of the longest messages; 200
// clients at once ask GET /chat/history at the maximum limit. microshop
// all's memory stays bounded, every answer is a 200 page that fits, and
// other requests (posts) keep being answered meanwhile.
func TestFullRoomHistoryUnderLoad(t *testing.T) {
	f := startFleet(t, newRedis(t, false))
	pid := f.all.PID()
	long := strings.Repeat("é", 2000) // 2 bytes each, 2,000 characters: the longest message
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 500; i += 8 {
				f.mustPost(f.gate1, "full", long)
			}
		})
	}
	wg.Wait()
	before, err := rss(pid)
	if err != nil {
		t.Fatal(err)
	}

	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if v, err := rss(pid); err == nil && int64(v) > peak.Load() {
				peak.Store(int64(v))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var other atomic.Int64
	var otherMax atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			if status, _ := f.post(f.gate1, "ready", "still here"); status == 200 {
				other.Add(1)
			}
			if d := int64(time.Since(start)); d > otherMax.Load() {
				otherMax.Store(d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var ok, busy, bad atomic.Int64
	var bytes atomic.Int64
	start := time.Now()
	var clients sync.WaitGroup
	for range 200 {
		clients.Go(func() {
			status, body := f.get(f.gate1 + "/chat/history?room=full&limit=500")
			switch status {
			case 200:
				ok.Add(1)
				bytes.Store(int64(len(body)))
			case 503, 504: // waited its turn past a deadline (a slow machine, -race)
				busy.Add(1)
			default:
				bad.Add(1)
			}
		})
	}
	clients.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	t.Logf("200 history reads of a full room in %v: %d × 200 (a page: %d bytes), %d × 503/504; microshop all: %.0f MiB before, %.0f MiB at the peak; %d posts meanwhile, the slowest %v",
		took.Round(time.Millisecond), ok.Load(), bytes.Load(), busy.Load(), before/(1<<20), float64(peak.Load())/(1<<20), other.Load(), time.Duration(otherMax.Load()).Round(time.Millisecond))
	if bad.Load() > 0 || ok.Load() == 0 {
		t.Errorf("history reads: %d answered 200, %d another status than 503/504; want pages, and nothing else", ok.Load(), bad.Load())
	}
	bound := int64(historyLoadMaxRSS)
	if proctest.Race {
		bound *= 4
	}
	if peak.Load() > bound {
		t.Errorf("microshop all peaked at %.0f MiB; want at most %d MiB", float64(peak.Load())/(1<<20), bound>>20)
	}
	if other.Load() == 0 {
		t.Error("no other request was answered while the history was read")
	}
}
