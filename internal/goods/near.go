package goods

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/service"
)

// The near cache: goods kept in this process's memory, already encoded,
// and the goods list kept as a view, its pages encoded once. Both are kept
// exact across every goods instance by the "goods" topic's invalidations
// (a cache.Follower: pub/sub on Entries.Redis.Key("goods:invalidations")):
// every write to a good (create, edit, delete, a repaired tombstone)
// publishes the good's id after the database and the Redis entry changed,
// and every instance, on hearing it, drops that good and the list view.
// Whatever the follower cannot be sure to have heard (a lost, silent or
// renewed connection, a FLUSHALL) empties everything; while it is not
// subscribed the service reads Redis and the database every time, as it
// did before the near cache.
const (
	// nearMaxBytes bounds the near cache by the bytes of its encoded goods;
	// past it, entries picked at random are dropped to make room.
	nearMaxBytes = 32 << 20
	// viewMaxGoods bounds the list view: it holds the first viewMaxGoods
	// goods by id (50 pages of DefaultLimit; at most about 26 MB with the
	// largest goods, encoded and decoded). A page that reaches past them is
	// read from the database, as before.
	viewMaxGoods = 1000
	// viewMaxPages bounds the pages a view keeps encoded; past it they are
	// all forgotten and encoded again on demand.
	viewMaxPages = 256
	// maxAge is a backstop, not the mechanism: an entry or a view older
	// than this is read again even if no invalidation came, so that a writer
	// that does not publish (a goods process of an older version during an
	// upgrade) cannot make a good outlive its deletion here for longer.
	maxAge = 10 * time.Second
)

// nearEntry is one good in the near cache.
type nearEntry struct {
	body []byte         // {"results":[good]}, the answer to GET /goods?id=N
	res  service.Result // that answer, the good in it and body attached: shared, read only
	at   time.Time
}

// near is a goods service's near cache and list view.
type near struct {
	follow *cache.Follower
	log    *slog.Logger

	mu      sync.RWMutex
	live    bool   // subscribed: the caches may be used
	gen     uint64 // bumped by every invalidation and every clear
	entries map[int64]*nearEntry
	bytes   int
	view    *listView

	building sync.Mutex // one view rebuild at a time

	resets atomic.Uint64 // times the near cache was emptied wholesale (tests)
	heardN atomic.Uint64 // invalidations heard and applied (tests)
}

// newNear starts the listener of a near cache over the entries' Redis.
func newNear(rdb *cache.Cache, log *slog.Logger) *near {
	n := &near{log: log, entries: map[int64]*nearEntry{}}
	n.follow = cache.Follow(rdb, "goods", log, n.heard, n.reset)
	return n
}

// close stops the listener and empties the caches.
func (n *near) close() { n.follow.Close() }

// token returns the generation to hand to put and setView, and whether the
// caches are in use at all.
func (n *near) token() (uint64, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.gen, n.live
}

// get returns good id's entry, or nil. The entry, its Result too, is
// shared by every request for the good: read only.
func (n *near) get(id int64) *nearEntry {
	n.mu.RLock()
	e := n.entries[id]
	live := n.live
	n.mu.RUnlock()
	if e == nil || !live || time.Since(e.at) > maxAge {
		return nil
	}
	return e
}

// put keeps g, read after token returned gen, unless an invalidation (or a
// clear) came since: then g may be older than what it announced.
func (n *near) put(gen uint64, g catalog.Good) {
	enc, err := json.Marshal(g)
	if err != nil {
		return
	}
	body := slices.Concat([]byte(`{"results":[`), enc, []byte(`]}`))
	e := &nearEntry{body: body, res: service.Results([]catalog.Good{g}).Encoded(body), at: time.Now()}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.live || n.gen != gen {
		return
	}
	if old := n.entries[g.ID]; old != nil {
		n.bytes -= len(old.body)
	}
	n.entries[g.ID] = e
	n.bytes += len(e.body)
	for id, old := range n.entries { // random order: random victims
		if n.bytes <= nearMaxBytes {
			break
		}
		if id != g.ID {
			delete(n.entries, id)
			n.bytes -= len(old.body)
		}
	}
}

// invalidate drops good id and the list view.
func (n *near) invalidate(id int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	if e := n.entries[id]; e != nil {
		n.bytes -= len(e.body)
		delete(n.entries, id)
	}
	n.view = nil
}

// reset empties everything; live says whether the caches may be used
// from now on.
func (n *near) reset(live bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	n.entries = map[int64]*nearEntry{}
	n.bytes = 0
	n.view = nil
	n.live = live
	n.resets.Add(1)
}

// len returns how many goods the near cache holds (tests).
func (n *near) len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.entries)
}

// changed tells every goods instance, this one first, that good id changed
// (was created, edited or deleted): it is called after the database and the
// Redis entry changed, and waits to hear its own message back (see
// cache.Follower.Publish).
func (n *near) changed(ctx context.Context, id int64) error {
	n.invalidate(id)
	return n.follow.Publish(ctx, strconv.FormatInt(id, 10))
}

// heard applies an invalidation of the good named id. One that cannot be
// read empties everything, to be safe.
func (n *near) heard(id string) {
	defer n.heardN.Add(1)
	v, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		n.log.Warn("unreadable goods invalidation; emptying the near cache", "payload", id)
		n.mu.RLock()
		live := n.live
		n.mu.RUnlock()
		n.reset(live)
		return
	}
	n.invalidate(v)
}

// listView is the goods list as it was at one moment: the first goods by
// id (all of them when complete), each encoded once, and the pages asked
// for, encoded once each.
type listView struct {
	goods    []catalog.Good
	enc      [][]byte // json.Marshal(goods[i])
	complete bool     // goods is the whole table
	at       time.Time

	mu    sync.Mutex
	pages map[[2]int64]service.Result // {after, limit} → the page, its body attached: shared, read only
}

// newListView builds a view of rows, the first goods by id (one more than
// viewMaxGoods when the table has more).
func newListView(rows []catalog.Good) (*listView, error) {
	v := &listView{complete: len(rows) <= viewMaxGoods, at: time.Now(), pages: map[[2]int64]service.Result{}}
	if !v.complete {
		rows = rows[:viewMaxGoods]
	}
	v.goods = rows
	v.enc = make([][]byte, len(rows))
	for i, g := range rows {
		b, err := json.Marshal(g)
		if err != nil {
			return nil, err
		}
		v.enc[i] = b
	}
	return v, nil
}

// page answers the page after, limit as list does from the database, or
// reports that the view does not reach that far. Every request for the
// page is given the same Result: it is read, never changed.
func (v *listView) page(after int64, limit int) (service.Result, bool) {
	i := sort.Search(len(v.goods), func(i int) bool { return v.goods[i].ID > after })
	end := i + limit + 1 // one row more tells whether another page follows
	if end > len(v.goods) {
		if !v.complete {
			return nil, false
		}
		end = len(v.goods)
	}
	key := [2]int64{after, int64(limit)}
	v.mu.Lock()
	res := v.pages[key]
	v.mu.Unlock()
	if res == nil {
		// The page's own rows (a copy: the view's stay as they are) and its
		// body, made once for every request for it.
		rows := slices.Clone(v.goods[i:end])
		res = service.PageResult(rows, limit, func(g catalog.Good) int64 { return g.ID }).Encoded(v.encode(i, end, limit))
		v.mu.Lock()
		if len(v.pages) >= viewMaxPages {
			clear(v.pages)
		}
		v.pages[key] = res
		v.mu.Unlock()
	}
	return res, true
}

// encode writes the body of the page of goods[i:end] as json.Marshal
// writes the Result of service.PageResult: {"next":"N","results":[...]}.
func (v *listView) encode(i, end, limit int) []byte {
	n := len(`{"next":"","results":[]}`) + 20
	for _, b := range v.enc[i:end] {
		n += len(b) + 1
	}
	body := make([]byte, 0, n)
	body = append(body, '{')
	if end-i > limit {
		end = i + limit
		body = append(body, `"next":"`...)
		body = strconv.AppendInt(body, v.goods[end-1].ID, 10)
		body = append(body, `",`...)
	}
	body = append(body, `"results":[`...)
	for j, b := range v.enc[i:end] {
		if j > 0 {
			body = append(body, ',')
		}
		body = append(body, b...)
	}
	return append(body, "]}"...)
}

// currentView returns the list view, or nil when there is none to use.
func (n *near) currentView() *listView {
	n.mu.RLock()
	v, live := n.view, n.live
	n.mu.RUnlock()
	if v == nil || !live || time.Since(v.at) > maxAge {
		return nil
	}
	return v
}

// setView keeps v, read after token returned gen, unless an invalidation
// came since.
func (n *near) setView(gen uint64, v *listView) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.live && n.gen == gen {
		n.view = v
	}
}
