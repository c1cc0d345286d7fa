package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Follower follows the invalidations of one topic, published on a Redis
// pub/sub channel, for a near cache: a process's copy in memory of what
// Redis or the database holds. Every writer publishes, after its change is
// in the database and in Redis, the name of what changed; every Follower
// hears it and its near cache drops that entry. Whatever a Follower cannot
// be sure to have heard resets the near cache: the listening connection
// lost, silent for too long, or subscribed again (what was published
// meanwhile was missed), and a FLUSHALL, seen as the topic's epoch marker
// key gone or changed. While it is not subscribed, the near cache must not
// be used (Reset(false)): its owner reads Redis every time, as without one.
//
// Pub/sub rather than CLIENT TRACKING: the embedded Redis of `microshop all`
// (miniredis) has no CLIENT TRACKING; a Redis Cluster would need a tracking
// connection per master, where PUBLISH reaches every node's subscribers; and
// a view (a list) needs to hear of entries created, which no cached key
// tracks. The price is the epoch marker for FLUSHALL, which tracking
// reports itself.
//
// On the channel a message is "NAME ORIGIN SEQ": NAME, without spaces, is
// what changed; ORIGIN and SEQ let a publisher hear its own message back
// (see Publish). A message that does not start with a NAME is heard as "".
type Follower struct {
	rdb     *Cache
	channel string // where invalidations are published
	marker  string // the epoch marker key; a FLUSHALL removes it
	name    string // CLIENT SETNAME of the listening connection
	origin  string // this follower, in what it publishes
	log     *slog.Logger
	topic   string
	heard   func(name string)
	reset   func(live bool)

	mu    sync.Mutex
	live  bool
	epoch string // the marker's value when last read

	echoMu sync.Mutex
	seq    uint64
	echoes map[uint64]chan struct{}

	stop chan struct{} // closed by Close
	done chan struct{} // closed when the listener returned
	once sync.Once
}

const (
	// followCheckEvery is how often a Follower pings its connection and
	// reads the epoch marker.
	followCheckEvery = 250 * time.Millisecond
	// followSilentAfter is how long the listening connection may bring
	// nothing, not even the answer to a ping, before it is deemed lost.
	followSilentAfter = time.Second
	// echoWait bounds how long Publish waits to hear its own message.
	echoWait = 500 * time.Millisecond
)

// Follow starts following topic's invalidations on the channel
// rdb.Key(topic+":invalidations"), with the epoch marker
// rdb.Key(topic+":near-epoch"). heard is called with the NAME of each
// invalidation; reset when everything must be forgotten, live saying
// whether the near cache may be used from now on. Both are called from the
// Follower's goroutine, one at a time; reset(false) is called last, after
// Close.
func Follow(rdb *Cache, topic string, log *slog.Logger, heard func(name string), reset func(live bool)) *Follower {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 8)
	rand.Read(b)
	origin := hex.EncodeToString(b)
	f := &Follower{
		rdb:     rdb,
		channel: rdb.Key(topic + ":invalidations"),
		marker:  rdb.Key(topic + ":near-epoch"),
		name:    "microshop-" + topic + "-near-" + origin,
		origin:  origin,
		log:     log,
		topic:   topic,
		heard:   heard,
		reset:   reset,
		echoes:  map[uint64]chan struct{}{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go f.listen()
	return f
}

// Name is the CLIENT SETNAME of the listening connection (tests kill it).
func (f *Follower) Name() string { return f.name }

// Live reports whether the Follower is subscribed: whether a near cache
// that it resets may be used.
func (f *Follower) Live() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live
}

// Close stops the listener; reset(false) has been called when it returns.
func (f *Follower) Close() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

// Publish tells every Follower of the topic, this one included, that name
// (no spaces) changed; call it after the change is in the database and in
// Redis. It then waits, at most echoWait, to hear its own message back:
// Redis writes a message to every subscriber at once, so by then the other
// followers have it too, and a client that reads after this answer through
// another process is not served what it just changed (unless that process
// is slower to read its connection than this one).
func (f *Follower) Publish(ctx context.Context, name string) error {
	f.echoMu.Lock()
	f.seq++
	seq, ch := f.seq, make(chan struct{})
	f.echoes[seq] = ch
	f.echoMu.Unlock()
	defer func() {
		f.echoMu.Lock()
		delete(f.echoes, seq)
		f.echoMu.Unlock()
	}()
	msg := name + " " + f.origin + " " + strconv.FormatUint(seq, 10)
	if err := f.rdb.Publish(ctx, f.channel, msg).Err(); err != nil {
		return err
	}
	if !f.Live() {
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

// Invalidate tells every Follower of topic that name (no spaces) changed,
// as Publish does but without waiting to hear it back: for a writer that
// follows nothing itself.
func Invalidate(ctx context.Context, rdb *Cache, topic, name string) error {
	return rdb.Publish(ctx, rdb.Key(topic+":invalidations"), name).Err()
}

// hear applies a message "NAME ORIGIN SEQ".
func (f *Follower) hear(payload string) {
	fs := strings.Fields(payload)
	name := ""
	if len(fs) > 0 {
		name = fs[0]
	}
	f.heard(name)
	if len(fs) == 3 && fs[1] == f.origin {
		if seq, err := strconv.ParseUint(fs[2], 10, 64); err == nil {
			f.echoMu.Lock()
			if ch := f.echoes[seq]; ch != nil {
				close(ch)
				delete(f.echoes, seq)
			}
			f.echoMu.Unlock()
		}
	}
}

// setLive records the state and resets the near cache.
func (f *Follower) setLive(live bool, epoch string) {
	f.mu.Lock()
	f.live, f.epoch = live, epoch
	f.mu.Unlock()
	f.reset(live)
}

// listenClient returns a client of its own for the listening connection,
// named so that it can be told apart in CLIENT LIST (and killed by tests),
// and whether it is that (else it is the owner's).
func (f *Follower) listenClient() (redis.UniversalClient, bool) {
	if c, err := f.rdb.Named(f.name); err == nil {
		return c, true
	}
	return f.rdb.UniversalClient, false
}

// listen follows the invalidations until Close, or until the owner's
// Redis client is closed.
func (f *Follower) listen() {
	defer close(f.done)
	defer f.setLive(false, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-f.stop:
			cancel()
		case <-f.done:
		}
	}()
	lc, own := f.listenClient()
	if own {
		defer lc.Close()
	}
	ps := lc.Subscribe(ctx, f.channel)
	defer func() { ps.Close() }()

	what := f.topic + " invalidations: "
	subscribed := false // and the epoch read: the near cache may be used
	pending := false    // subscribed, but the epoch marker not read yet
	lost := func(why string, err error) {
		if subscribed {
			f.log.Warn(what+why+"; the near cache is emptied and unused until they are heard again", "err", err)
		}
		subscribed = false
		f.setLive(false, "")
	}
	backoff := 50 * time.Millisecond
	var lastHeard, lastCheck time.Time
	start := func(now time.Time) {
		// (Re)subscribed: what was published before is unknown.
		epoch, err := f.readEpoch(ctx)
		if err != nil {
			lost("cannot read the epoch marker", err)
			pending = true // tried again at the next check
			return
		}
		if subscribed {
			f.log.Info(what + "resubscribed; the near cache is emptied")
		}
		f.setLive(true, epoch)
		subscribed, pending, backoff = true, false, 50*time.Millisecond
		lastCheck = now
	}
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, followCheckEvery)
		now := time.Now()
		switch {
		case err == nil:
			lastHeard = now
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					start(now)
				}
			case *redis.Message:
				f.hear(m.Payload)
			}
		case ctx.Err() != nil:
			return
		case isTimeout(err):
			// Nothing came for followCheckEvery: the checks below.
		default:
			pending = false
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
		if pending && now.Sub(lastCheck) >= followCheckEvery {
			lastCheck = now
			start(now)
			continue
		}
		if !subscribed || now.Sub(lastCheck) < followCheckEvery {
			continue
		}
		lastCheck = now
		if now.Sub(lastHeard) > followSilentAfter {
			lost("connection silent", nil)
			ps.Close()
			ps = lc.Subscribe(ctx, f.channel)
			continue
		}
		ps.Ping(ctx) // its answer, or its error, comes through ReceiveTimeout
		epoch, err := f.readEpoch(ctx)
		if errors.Is(err, redis.ErrClosed) {
			return // the owner's client is closed: so is the owner
		}
		f.mu.Lock()
		same := err == nil && epoch == f.epoch
		f.mu.Unlock()
		if err == nil && !same {
			f.log.Info(what + "the epoch marker changed (a FLUSHALL); the near cache is emptied")
			f.setLive(true, epoch)
		}
	}
}

// readEpoch returns the epoch marker's value, first writing a new one when
// it is missing (after a FLUSHALL, or at the first start).
func (f *Follower) readEpoch(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	v, err := f.rdb.Get(ctx, f.marker).Result()
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, redis.Nil) {
		return "", err
	}
	b := make([]byte, 8)
	rand.Read(b)
	if err := f.rdb.SetNX(ctx, f.marker, hex.EncodeToString(b), 0).Err(); err != nil {
		return "", err
	}
	return f.rdb.Get(ctx, f.marker).Result()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
