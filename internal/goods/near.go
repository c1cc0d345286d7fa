package goods

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/service"
)

// The near cache: goods kept in this process's memory, already encoded,
// and the goods list kept as a view, its pages encoded once. Both are kept
// exact across every goods instance by invalidations on one Redis pub/sub
// channel (Entries.Redis.Key("goods:invalidations")): every write to a good
// (create, edit, delete, a repaired tombstone) publishes the good's id after the
// database and the Redis entry changed, and every instance, on hearing it,
// drops that good and the list view. Whatever this instance cannot be sure
// to have heard empties everything: the listening connection lost, silent
// for silentAfter, or reconnected (invalidations published meanwhile were
// missed), and a FLUSHALL, seen as the epoch marker key gone. While the
// listener is not subscribed the service reads Redis and the database
// every time, as it did before the near cache.
//
// Pub/sub rather than CLIENT TRACKING: the embedded Redis of `microshop all`
// (miniredis) has no CLIENT TRACKING; a Redis Cluster would need a tracking
// connection per master, where PUBLISH reaches every node's subscribers; and
// the list view needs to hear of goods created, which no cached key tracks.
// The price is the epoch marker for FLUSHALL, which tracking reports itself.
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
	// checkEvery is how often the listener pings its connection and reads
	// the epoch marker.
	checkEvery = 250 * time.Millisecond
	// silentAfter is how long the listening connection may bring nothing,
	// not even the answer to a ping, before it is deemed lost.
	silentAfter = time.Second
	// echoWait bounds how long a writer waits to hear its own invalidation
	// before it answers (see near.changed).
	echoWait = 500 * time.Millisecond
)

// nearEntry is one good in the near cache.
type nearEntry struct {
	good catalog.Good
	body []byte // {"results":[good]}, the answer to GET /goods?id=N
	at   time.Time
}

// near is a goods service's near cache and list view.
type near struct {
	rdb     *cache.Cache
	channel string // where invalidations are published
	marker  string // the epoch marker key; a FLUSHALL removes it
	name    string // CLIENT SETNAME of the listening connection
	origin  string // this instance, in the invalidations it publishes
	log     *slog.Logger

	mu      sync.RWMutex
	live    bool   // subscribed: the caches may be used
	gen     uint64 // bumped by every invalidation and every clear
	entries map[int64]*nearEntry
	bytes   int
	view    *listView
	epoch   string // the marker's value when last read

	building sync.Mutex // one view rebuild at a time

	echoMu sync.Mutex
	seq    uint64
	echoes map[uint64]chan struct{}

	stop chan struct{} // closed by close
	done chan struct{} // closed when the listener returned
	once sync.Once

	resets atomic.Uint64 // times the near cache was emptied wholesale (tests)
	heardN atomic.Uint64 // invalidations heard and applied (tests)
}

// newNear starts the listener of a near cache over the entries' Redis.
func newNear(rdb *cache.Cache, log *slog.Logger) *near {
	b := make([]byte, 8)
	rand.Read(b)
	origin := hex.EncodeToString(b)
	n := &near{
		rdb:     rdb,
		channel: rdb.Key("goods:invalidations"),
		marker:  rdb.Key("goods:near-epoch"),
		name:    "microshop-goods-near-" + origin,
		origin:  origin,
		log:     log,
		entries: map[int64]*nearEntry{},
		echoes:  map[uint64]chan struct{}{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go n.listen()
	return n
}

// close stops the listener and empties the caches.
func (n *near) close() {
	n.once.Do(func() { close(n.stop) })
	<-n.done
}

// token returns the generation to hand to put and setView, and whether the
// caches are in use at all.
func (n *near) token() (uint64, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.gen, n.live
}

// get returns good id's entry, or nil.
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
	e := &nearEntry{good: g, body: slices.Concat([]byte(`{"results":[`), enc, []byte(`]}`)), at: time.Now()}
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
// from now on, epoch is the marker's value live goes with.
func (n *near) reset(live bool, epoch string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	n.entries = map[int64]*nearEntry{}
	n.bytes = 0
	n.view = nil
	n.live = live
	n.epoch = epoch
	n.resets.Add(1)
}

// len returns how many goods the near cache holds (tests).
func (n *near) len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.entries)
}

// changed tells every goods instance, this one first, that good id changed
// (was created, edited or deleted): it is called after the database and the Redis
// entry changed. It then waits, at most echoWait, to hear its own message
// back: Redis writes a message to every subscriber at once, so by then
// the other instances have it too, and a client that reads after this
// answer through another instance is not served what it just changed
// (unless that instance is slower to read its connection than this one).
func (n *near) changed(ctx context.Context, id int64) error {
	n.invalidate(id)
	n.echoMu.Lock()
	n.seq++
	seq, ch := n.seq, make(chan struct{})
	n.echoes[seq] = ch
	n.echoMu.Unlock()
	defer func() {
		n.echoMu.Lock()
		delete(n.echoes, seq)
		n.echoMu.Unlock()
	}()
	msg := strconv.FormatInt(id, 10) + " " + n.origin + " " + strconv.FormatUint(seq, 10)
	if err := n.rdb.Publish(ctx, n.channel, msg).Err(); err != nil {
		return err
	}
	if _, live := n.token(); !live {
		return nil
	}
	t := time.NewTimer(echoWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// heard applies an invalidation: "ID ORIGIN SEQ". One that cannot be read
// empties everything, to be safe.
func (n *near) heard(payload string) {
	f := strings.Fields(payload)
	var id int64
	var err error
	if len(f) > 0 {
		id, err = strconv.ParseInt(f[0], 10, 64)
	}
	if len(f) == 0 || err != nil {
		n.log.Warn("unreadable goods invalidation; emptying the near cache", "payload", payload)
		n.mu.RLock()
		epoch := n.epoch
		n.mu.RUnlock()
		n.reset(true, epoch)
		n.heardN.Add(1)
		return
	}
	n.invalidate(id)
	n.heardN.Add(1)
	if len(f) == 3 && f[1] == n.origin {
		if seq, err := strconv.ParseUint(f[2], 10, 64); err == nil {
			n.echoMu.Lock()
			if ch := n.echoes[seq]; ch != nil {
				close(ch)
				delete(n.echoes, seq)
			}
			n.echoMu.Unlock()
		}
	}
}

// listenClient returns a client of its own for the listening connection,
// named so that it can be told apart in CLIENT LIST (and killed by tests),
// and whether it is that (else it is the service's).
func (n *near) listenClient() (redis.UniversalClient, bool) {
	if c, err := n.rdb.Named(n.name); err == nil {
		return c, true
	}
	return n.rdb.UniversalClient, false
}

// listen follows the invalidations until close, or until the service's
// Redis client is closed.
func (n *near) listen() {
	defer close(n.done)
	defer n.reset(false, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-n.done:
		}
	}()
	lc, own := n.listenClient()
	if own {
		defer lc.Close()
	}
	ps := lc.Subscribe(ctx, n.channel)
	defer func() { ps.Close() }()

	subscribed := false
	lost := func(why string, err error) {
		if subscribed {
			n.log.Warn("goods invalidations: "+why+"; the near cache is emptied and unused until they are heard again", "err", err)
		}
		subscribed = false
		n.reset(false, "")
	}
	backoff := 50 * time.Millisecond
	var lastHeard, lastCheck time.Time
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, checkEvery)
		now := time.Now()
		switch {
		case err == nil:
			lastHeard = now
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					break
				}
				// (Re)subscribed: what was published before is unknown.
				epoch, err := n.readEpoch(ctx)
				if err != nil {
					lost("cannot read the epoch marker", err)
					break
				}
				if subscribed {
					n.log.Info("goods invalidations: resubscribed; the near cache is emptied")
				}
				n.reset(true, epoch)
				subscribed, backoff = true, 50*time.Millisecond
				lastCheck = now
			case *redis.Message:
				n.heard(m.Payload)
			}
		case ctx.Err() != nil:
			return
		case isTimeout(err):
			// Nothing came for checkEvery: the checks below.
		default:
			lost("connection lost", err)
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		if !subscribed || now.Sub(lastCheck) < checkEvery {
			continue
		}
		lastCheck = now
		if now.Sub(lastHeard) > silentAfter {
			lost("connection silent", nil)
			ps.Close()
			ps = lc.Subscribe(ctx, n.channel)
			continue
		}
		ps.Ping(ctx) // its answer, or its error, comes through ReceiveTimeout
		epoch, err := n.readEpoch(ctx)
		if errors.Is(err, redis.ErrClosed) {
			return // the service's client is closed: so is the service
		}
		n.mu.RLock()
		same := err == nil && epoch == n.epoch
		n.mu.RUnlock()
		if err == nil && !same {
			n.log.Info("goods invalidations: the epoch marker changed (a FLUSHALL); the near cache is emptied")
			n.reset(true, epoch)
		}
	}
}

// readEpoch returns the epoch marker's value, first writing a new one when
// it is missing (after a FLUSHALL, or at the first start).
func (n *near) readEpoch(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	v, err := n.rdb.Get(ctx, n.marker).Result()
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, redis.Nil) {
		return "", err
	}
	b := make([]byte, 8)
	rand.Read(b)
	if err := n.rdb.SetNX(ctx, n.marker, hex.EncodeToString(b), 0).Err(); err != nil {
		return "", err
	}
	return n.rdb.Get(ctx, n.marker).Result()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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
	pages map[[2]int64][]byte // {after, limit} → body
}

// newListView builds a view of rows, the first goods by id (one more than
// viewMaxGoods when the table has more).
func newListView(rows []catalog.Good) (*listView, error) {
	v := &listView{complete: len(rows) <= viewMaxGoods, at: time.Now(), pages: map[[2]int64][]byte{}}
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
// reports that the view does not reach that far.
func (v *listView) page(after int64, limit int) (service.Result, bool) {
	i := sort.Search(len(v.goods), func(i int) bool { return v.goods[i].ID > after })
	end := i + limit + 1 // one row more tells whether another page follows
	if end > len(v.goods) {
		if !v.complete {
			return nil, false
		}
		end = len(v.goods)
	}
	// A copy: the caller may change what it is given.
	rows := make([]catalog.Good, end-i)
	copy(rows, v.goods[i:end])
	res := service.PageResult(rows, limit, func(g catalog.Good) int64 { return g.ID })
	key := [2]int64{after, int64(limit)}
	v.mu.Lock()
	body := v.pages[key]
	v.mu.Unlock()
	if body == nil {
		body = v.encode(i, end, limit)
		v.mu.Lock()
		if len(v.pages) >= viewMaxPages {
			clear(v.pages)
		}
		v.pages[key] = body
		v.mu.Unlock()
	}
	return res.Encoded(body), true
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
