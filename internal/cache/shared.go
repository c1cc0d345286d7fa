package cache

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedGets reads keys with GET, the reads of concurrent callers sharing
// one pipeline: a caller queues its key and wakes the leader (starting it
// when none runs), a goroutine that reads what is queued (up to
// maxSharedGets keys) in one pipeline and hands each caller what its own
// GET would have returned, then the next batch, until the queue has been
// empty for leaderIdle, when it ends. Nothing waits for a batch to fill: a
// batch is what queued while the previous one was read. On a Redis Cluster
// the client splits the pipeline by node, as for any pipeline.
//
// It is for hot reads on the path of every request (a session, a good):
// N concurrent GETs cost one round trip and one pooled connection instead
// of N.
type SharedGets struct {
	c    *Cache
	wake chan struct{} // a token: the queue may hold keys

	mu      sync.Mutex
	queue   []*sharedGet
	running bool
}

// maxSharedGets bounds the GETs of one pipeline.
const maxSharedGets = 256

// leaderIdle is how long a leader waits for more keys before it ends (so
// that under load it lives on, its stack grown, instead of starting again
// for every batch).
const leaderIdle = 100 * time.Millisecond

// sharedGet is one queued GET.
type sharedGet struct {
	ctx  context.Context
	key  string
	val  []byte
	err  error
	done chan struct{} // closed once val and err are set
}

// NewSharedGets returns a SharedGets reading from c.
func NewSharedGets(c *Cache) *SharedGets {
	return &SharedGets{c: c, wake: make(chan struct{}, 1)}
}

// Get returns the value of key as c.Get(ctx, key).Bytes() would: redis.Nil
// when the key does not exist, the failure of Redis, or ctx's error when
// ctx ends first.
func (g *SharedGets) Get(ctx context.Context, key string) ([]byte, error) {
	q := &sharedGet{ctx: ctx, key: key, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, q)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go g.lead()
	} else {
		select {
		case g.wake <- struct{}{}:
		default: // a token is there already
		}
	}
	select {
	case <-q.done:
		return q.val, q.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lead reads batches until the queue has been empty for leaderIdle.
func (g *SharedGets) lead() {
	idle := time.NewTimer(leaderIdle)
	defer idle.Stop()
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxSharedGets)
		if n == 0 {
			g.mu.Unlock()
			idle.Reset(leaderIdle)
			select {
			case <-g.wake:
				continue
			case <-idle.C:
			}
			g.mu.Lock()
			if len(g.queue) == 0 {
				g.running = false
				g.mu.Unlock()
				return
			}
			n = min(len(g.queue), maxSharedGets)
		}
		batch := make([]*sharedGet, n)
		copy(batch, g.queue)
		rest := copy(g.queue, g.queue[n:])
		clear(g.queue[rest:])
		g.queue = g.queue[:rest]
		g.mu.Unlock()
		g.read(batch)
	}
}

// read reads batch in one pipeline, within the latest deadline of its
// callers (none if one has none): a caller that gives up sooner stops
// waiting on its own.
func (g *SharedGets) read(batch []*sharedGet) {
	ctx := context.WithoutCancel(batch[0].ctx)
	var last time.Time
	for _, q := range batch {
		d, ok := q.ctx.Deadline()
		if !ok {
			last = time.Time{}
			break
		}
		if d.After(last) {
			last = d
		}
	}
	if !last.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, last)
		defer cancel()
	}
	cmds := make([]*redis.StringCmd, len(batch))
	g.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range batch {
			cmds[i] = p.Get(ctx, q.key)
		}
		return nil
	})
	for i, q := range batch {
		q.val, q.err = cmds[i].Bytes()
		close(q.done)
	}
}
