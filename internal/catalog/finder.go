package catalog

import (
	"context"
	"sync"
	"time"
)

// Finder is Lookup.Find with the Redis reads of concurrent calls shared:
// a call queues its id and, while no batch is being read, starts a leader,
// a goroutine that reads what is queued (up to maxFindBatch ids) in one
// pipeline of GETs, hands each call what Get would have returned, and
// reads the next batch until the queue is empty. Nothing waits for a batch
// to fill: a batch is what queued while the previous one was read. Each
// call then answers exactly as Find: the cached good, a 404 for a deleted
// one, or else (a miss, a corrupt entry, Redis failing) it asks the goods
// service itself.
type Finder struct {
	l *Lookup

	mu      sync.Mutex
	queue   []*finding
	running bool
}

// maxFindBatch bounds the GETs of one pipeline.
const maxFindBatch = 256

// finding is one queued call.
type finding struct {
	ctx  context.Context
	id   int64
	good Good
	err  error
	done chan struct{} // closed once good and err are set
}

// NewFinder returns a Finder over l.
func NewFinder(l *Lookup) *Finder { return &Finder{l: l} }

// Find returns good id as Lookup.Find does.
func (f *Finder) Find(ctx context.Context, id int64) (Good, error) {
	if f.l.Cache.Redis == nil {
		return f.l.ask(ctx, id)
	}
	q := &finding{ctx: ctx, id: id, done: make(chan struct{})}
	f.mu.Lock()
	f.queue = append(f.queue, q)
	if !f.running {
		f.running = true
		go f.lead()
	}
	f.mu.Unlock()
	select {
	case <-q.done:
		if g, ok, err := cached(id, q.good, q.err); ok {
			return g, err
		}
	case <-ctx.Done(): // as a Redis read cut short
	}
	return f.l.ask(ctx, id)
}

// lead reads batches until the queue is empty.
func (f *Finder) lead() {
	for {
		f.mu.Lock()
		n := min(len(f.queue), maxFindBatch)
		if n == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		batch := make([]*finding, n)
		copy(batch, f.queue)
		rest := copy(f.queue, f.queue[n:])
		clear(f.queue[rest:])
		f.queue = f.queue[:rest]
		f.mu.Unlock()
		f.read(batch)
	}
}

// read reads batch from Redis, within the latest deadline of its calls
// (none if one has none): a call that gives up sooner stops waiting.
func (f *Finder) read(batch []*finding) {
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
	ids := make([]int64, len(batch))
	for i, q := range batch {
		ids[i] = q.id
	}
	goods, errs := f.l.Cache.getEach(ctx, ids)
	for i, q := range batch {
		q.good, q.err = goods[i], errs[i]
		close(q.done)
	}
}
