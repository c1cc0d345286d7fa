package proctest

import (
	"context"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/microshop/microshop/internal/cache"
)

// redisStartTimeout bounds how long a Redis may take to answer PING.
const redisStartTimeout = 30 * time.Second

// Redis is a Redis server one test alone uses, so that it may stop it: a
// redis-server child process or an embedded one.
type Redis struct {
	// URL is redis://127.0.0.1:PORT/0.
	URL string

	child *Proc           // a redis-server started by the test
	mini  *cache.Embedded // or an embedded one
	once  sync.Once
}

// StartRedis starts a Redis on loopback port (any free port when 0) and
// waits until it answers PING. With child true and a redis-server on the
// PATH it is a redis-server child process, otherwise an embedded one. It is
// killed when the test ends, if Kill has not been called before.
func StartRedis(t *testing.T, port int, child bool) *Redis {
	t.Helper()
	r := &Redis{}
	path, err := exec.LookPath("redis-server")
	if child && err != nil {
		t.Log("redis-server not found; using an embedded Redis instead")
	}
	if child && err == nil {
		if port == 0 {
			port = FreePort(t)
		}
		r.child = Start(t, "redis-server", path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--protected-mode", "no")
		r.URL = "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
		t.Cleanup(func() {
			r.Kill(t)
			StopAll(t, killTimeout, r.child)
		})
	} else {
		addr := ""
		if port != 0 {
			addr = "127.0.0.1:" + strconv.Itoa(port)
		}
		e, err := cache.StartEmbedded(addr)
		if err != nil {
			t.Fatal(err)
		}
		r.mini = e
		r.URL = e.URL()
		t.Cleanup(func() { r.Kill(t) })
	}
	c, err := cache.Open(r.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(redisStartTimeout)
	for c.Ping(context.Background(), time.Second) != nil {
		if r.child != nil && r.child.Exited() {
			t.Fatalf("redis-server exited (%v); output:\n%s", r.child.waitErr, r.child.Logs())
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis at %s did not start in %v", r.URL, redisStartTimeout)
		}
		time.Sleep(pollEvery)
	}
	return r
}

// Kill stops the Redis at once, as a crash would. It may be called more
// than once.
func (r *Redis) Kill(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		if r.child != nil {
			r.child.Kill(t)
		}
		if r.mini != nil {
			r.mini.Close()
		}
	})
}
