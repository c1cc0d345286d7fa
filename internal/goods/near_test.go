package goods

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

// pair is two goods instances with near caches over one database and one
// Redis (one key prefix), as two processes of a fleet.
type pair struct {
	a, b  *Service
	db    *store.DB
	cache *cache.Cache // a's
	url   string
	real  bool // a real Redis server, shared with other tests
}

// newPair starts two instances on url (a fresh Redis from testenv when
// empty) and waits until both follow the invalidations.
func newPair(t *testing.T, url string, real bool) *pair {
	t.Helper()
	if url == "" {
		url, real = testenv.RedisURL(t)
	}
	prefix := testenv.RandomName("mstest:") + ":"
	p := &pair{db: testenv.DB(t), url: url, real: real}
	open := func() *Service {
		c, err := cache.Open(url, prefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := New(p.db, catalog.OwnEntries(c), nil, NearCache())
		t.Cleanup(func() {
			s.Close()
			c.Close()
		})
		if p.cache == nil {
			p.cache = c
		}
		return s
	}
	p.a, p.b = open(), open()
	t.Cleanup(func() { testenv.FlushPrefix(t, p.cache) })
	for _, s := range []*Service{p.a, p.b} {
		waitFor(t, "the near cache to follow the invalidations", func() bool { _, live := s.near.token(); return live })
	}
	return p
}

// waitFor polls cond every millisecond for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// call runs route on s with params as JSON.
func call(t testing.TB, s *Service, route, params string) (service.Result, error) {
	t.Helper()
	p, err := service.DecodeParams([]byte(params))
	if err != nil {
		t.Fatal(err)
	}
	method, uri, _ := strings.Cut(route, "/")
	return s.Routes()[route](context.Background(), &service.Request{Method: method, URI: "/" + uri, Params: p})
}

// created creates a good on a and waits until b heard of it: b's reads
// begun before that may not keep what they read (they cannot know whether
// it came before or after the change).
func (p *pair) created(t testing.TB, name string) int64 {
	t.Helper()
	heard := p.b.near.heardN.Load()
	id := create(t, p.a, name)
	waitFor(t, "b to hear the create", func() bool { return p.b.near.heardN.Load() > heard })
	return id
}

func create(t testing.TB, s *Service, name string) int64 {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"name": name, "category": "c", "price": 7, "description": "d <&> ¶"})
	res, err := call(t, s, "POST/goods", string(b))
	if err != nil {
		t.Fatal(err)
	}
	return res["id"].(int64)
}

// body returns what the server sends for the answer of route with params.
func body(t testing.TB, s *Service, route, params string) (string, int) {
	t.Helper()
	res, err := call(t, s, route, params)
	if err != nil {
		code, _ := service.ErrorCode(err)
		return err.Error(), code
	}
	b, err := res.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return string(b), 0
}

// While readers hammer instance b, instance a deletes goods one by one: a
// good whose invalidation b has heard is never served by b again, by a
// request that started after it heard it, whatever reads were in flight
// (and filling b's near cache) when it came. Then b's list is the
// database's.
func TestNearDeleteOnOtherInstance(t *testing.T) {
	p := newPair(t, "", false)
	const n = 40
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = create(t, p.a, fmt.Sprint("g", i))
	}
	// Every create is heard by b before the deletes start.
	waitFor(t, "b to hear the creates", func() bool { return p.b.near.heardN.Load() >= uint64(n) })
	base := p.b.near.heardN.Load()
	// b's reads dawdle between reading a good and keeping it, so that
	// deletions fall in between; they read the goods about to be deleted
	// and those just deleted.
	p.b.beforeKeep = func() { time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) }

	var stop atomic.Bool
	var wg sync.WaitGroup
	var served, stale atomic.Int64
	var firstStale atomic.Value
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				heard := p.b.near.heardN.Load() - base // deletes b has heard: ids[:heard]
				i := int(heard) - 3 + rand.IntN(6)
				if i < 0 || i >= n {
					continue
				}
				_, code := body(t, p.b, "GET/goods", `{"id":`+strconv.FormatInt(ids[i], 10)+`}`)
				served.Add(1)
				if uint64(i) < heard && code != http.StatusNotFound {
					stale.Add(1)
					firstStale.CompareAndSwap(nil, fmt.Sprintf("good %d (delete %d) served after b heard %d deletes", ids[i], i, heard))
				}
			}
		})
	}
	for _, id := range ids {
		if _, err := call(t, p.a, "DELETE/goods", `{"id":`+strconv.FormatInt(id, 10)+`}`); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "b to hear the deletes", func() bool { return p.b.near.heardN.Load()-base >= n })
	time.Sleep(20 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads on b during %d deletes on a", served.Load(), n)
	if stale.Load() > 0 {
		t.Fatalf("%d reads served a deleted good after its invalidation; first: %v", stale.Load(), firstStale.Load())
	}
	for _, id := range ids {
		if _, code := body(t, p.b, "GET/goods", `{"id":`+strconv.FormatInt(id, 10)+`}`); code != http.StatusNotFound {
			t.Fatalf("GET %d on b after its deletion: %d; want 404", id, code)
		}
	}
	if got, _ := body(t, p.b, "GET/goods", `{}`); got != `{"results":[]}` {
		t.Fatalf("b's list after every delete = %s; want none", got)
	}
}

// A good created on a is listed by b once b heard of it, and b's list
// pages are byte for byte what the database gives, before and after.
func TestNearListAcrossInstances(t *testing.T) {
	p := newPair(t, "", false)
	plain := New(p.db, catalog.OwnEntries(p.cache), nil) // no near cache: the database's pages
	for i := range 30 {
		create(t, p.a, fmt.Sprint("g", i))
	}
	check := func(when string) {
		t.Helper()
		for _, params := range []string{`{}`, `{"limit":7}`, `{"limit":50}`, `{"after":5,"limit":3}`, `{"after":29}`, `{"after":1000}`, `{"limit":1,"after":"28"}`} {
			want, wcode := body(t, plain, "GET/goods", params)
			got, gcode := body(t, p.b, "GET/goods", params)
			if got != want || gcode != wcode {
				t.Fatalf("%s: GET /goods %s on b = %d %s; want %d %s", when, params, gcode, got, wcode, want)
			}
		}
		if p.b.near.currentView() == nil {
			t.Fatalf("%s: b has no list view after listing", when)
		}
	}
	waitFor(t, "b to hear the creates", func() bool { return p.b.near.heardN.Load() >= 30 })
	check("after 30 creates")
	heard := p.b.near.heardN.Load()
	id := create(t, p.a, "late")
	waitFor(t, "b to hear the create", func() bool { return p.b.near.heardN.Load() > heard })
	if got, _ := body(t, p.b, "GET/goods", `{"after":`+strconv.FormatInt(id-1, 10)+`}`); !strings.Contains(got, `"name":"late"`) {
		t.Fatalf("b's list after a created good %d = %s; want it", id, got)
	}
	check("after a create on a")
	heard = p.b.near.heardN.Load()
	if _, err := call(t, p.a, "DELETE/goods", `{"id":3}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to hear the delete", func() bool { return p.b.near.heardN.Load() > heard })
	check("after a delete on a")
}

// One good's answer from the near cache is byte for byte the answer
// without it.
func TestNearAnswerBytes(t *testing.T) {
	p := newPair(t, "", false)
	plain := New(p.db, catalog.OwnEntries(p.cache), nil)
	id := p.created(t, `quote " and \\ and ¶ and <b>`)
	params := `{"id":` + strconv.FormatInt(id, 10) + `}`
	want, _ := body(t, plain, "GET/goods", params)
	body(t, p.b, "GET/goods", params) // fills the near cache
	if p.b.near.get(id) == nil {
		t.Fatal("good not in b's near cache after a read")
	}
	if got, _ := body(t, p.b, "GET/goods", params); got != want {
		t.Fatalf("near answer %s; want %s", got, want)
	}
	res, _ := call(t, p.b, "GET/goods", params)
	if list, _ := res["results"].([]catalog.Good); len(list) != 1 || list[0].ID != id {
		t.Fatalf("near answer's results = %#v", res["results"])
	}
	if b, _ := json.Marshal(res); string(b) != want {
		t.Fatalf("json.Marshal of the near answer = %s; want %s", b, want)
	}
}

// A FLUSHALL (on a shared real Redis, the deletion of the test's keys,
// the epoch marker among them) empties the near caches of both instances.
func TestNearFlushEmptiesBoth(t *testing.T) {
	p := newPair(t, "", false)
	id := p.created(t, "g")
	params := `{"id":` + strconv.FormatInt(id, 10) + `}`
	for _, s := range []*Service{p.a, p.b} {
		body(t, s, "GET/goods", params)
		body(t, s, "GET/goods", `{}`)
		if s.near.len() != 1 || s.near.currentView() == nil {
			t.Fatalf("near cache holds %d goods, view %v; want 1 and a view", s.near.len(), s.near.currentView() != nil)
		}
	}
	ra, rb := p.a.near.resets.Load(), p.b.near.resets.Load()
	if p.real {
		testenv.FlushPrefix(t, p.cache)
	} else if err := p.cache.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Service{p.a, p.b} {
		waitFor(t, "the near cache to be emptied", func() bool { return s.near.len() == 0 && s.near.currentView() == nil })
	}
	if p.a.near.resets.Load() == ra || p.b.near.resets.Load() == rb {
		t.Fatal("near caches emptied without a reset")
	}
	// And they work again.
	if _, code := body(t, p.b, "GET/goods", params); code != 0 || p.b.near.len() != 1 {
		t.Fatalf("GET after the flush: %d, near cache %d goods", code, p.b.near.len())
	}
}

// A lost invalidation connection (killed by Redis: CLIENT KILL; or the
// embedded server restarted) empties the near cache, which fills again
// once the connection is back.
func TestNearLostConnectionEmpties(t *testing.T) {
	url, real := testenv.RedisURL(t)
	var e *cache.Embedded
	if !real {
		var err error
		if e, err = cache.StartEmbedded(""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		url = e.URL()
	}
	p := newPair(t, url, real)
	id := p.created(t, "g")
	params := `{"id":` + strconv.FormatInt(id, 10) + `}`
	body(t, p.b, "GET/goods", params)
	if p.b.near.len() != 1 {
		t.Fatalf("b's near cache holds %d goods; want 1", p.b.near.len())
	}
	resets := p.b.near.resets.Load()
	if real {
		killClient(t, p.cache, p.b.near.follow.Name())
	} else {
		e.Miniredis.Close()
		waitFor(t, "the near cache to be emptied", func() bool { return p.b.near.len() == 0 })
		if err := e.Miniredis.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the near cache to be emptied", func() bool { return p.b.near.resets.Load() > resets && p.b.near.len() == 0 })
	waitFor(t, "the near cache to follow the invalidations again", func() bool { _, live := p.b.near.token(); return live })
	if _, code := body(t, p.b, "GET/goods", params); code != 0 {
		t.Fatalf("GET after reconnecting: %d", code)
	}
	if p.b.near.len() != 1 {
		t.Fatalf("b's near cache holds %d goods after reconnecting and a read; want 1", p.b.near.len())
	}
}

// killClient kills the connection named name with CLIENT KILL ID, on
// whichever node of a Redis Cluster holds it.
func killClient(t *testing.T, c *cache.Cache, name string) {
	t.Helper()
	ctx := context.Background()
	var lists []string
	kill := func(ctx context.Context, node redis.Cmdable) (bool, error) {
		list, err := node.ClientList(ctx).Result()
		if err != nil {
			return false, err
		}
		lists = append(lists, list)
		// Every connection of that name: a cluster client keeps more than
		// its subscription on a node, and only killing that one counts.
		killed := false
		for line := range strings.SplitSeq(list, "\n") {
			if !strings.Contains(line, " name="+name+" ") {
				continue
			}
			for f := range strings.FieldsSeq(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					if err := node.ClientKillByFilter(ctx, "ID", id).Err(); err != nil {
						return killed, err
					}
					killed = true
				}
			}
		}
		return killed, nil
	}
	var mu sync.Mutex
	killed := false
	var err error
	if cc, ok := c.UniversalClient.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			k, err := kill(ctx, node)
			killed = killed || k
			return err
		})
	} else {
		killed, err = kill(ctx, c.UniversalClient)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !killed {
		t.Fatalf("no connection named %s in CLIENT LIST:\n%s", name, strings.Join(lists, "\n"))
	}
}

// While readers hammer instance b, instance a edits one good's price over
// and over: once b has heard the invalidation of edit k, no request b
// starts serves a price from before edit k, from its near cache or from
// its list view, whatever reads were in flight when it came.
func TestNearEditOnOtherInstance(t *testing.T) {
	p := newPair(t, "", false)
	id := p.created(t, "pen")
	idp := strconv.FormatInt(id, 10)
	base := p.b.near.heardN.Load()
	p.b.beforeKeep = func() { time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) }
	price := func(s string) int64 {
		_, rest, ok := strings.Cut(s, `"price":`)
		if !ok {
			t.Errorf("no price in %s", s)
			return -1
		}
		n, _ := strconv.ParseInt(rest[:strings.IndexAny(rest, ",}")], 10, 64)
		return n
	}
	const n = 40
	var stop atomic.Bool
	var wg sync.WaitGroup
	var served, stale atomic.Int64
	var firstStale atomic.Value
	for i := range 4 {
		wg.Go(func() {
			params := `{"id":` + idp + `}`
			if i%2 == 1 {
				params = `{"after":` + strconv.FormatInt(id-1, 10) + `,"limit":1}` // the list view
			}
			for !stop.Load() {
				heard := int64(p.b.near.heardN.Load() - base) // edits b has heard: prices 1..heard
				got, code := body(t, p.b, "GET/goods", params)
				served.Add(1)
				if code != 0 {
					t.Errorf("GET %s on b: %d %s", params, code, got)
					return
				}
				if pr := price(got); pr < heard {
					stale.Add(1)
					firstStale.CompareAndSwap(nil, fmt.Sprintf("GET %s served price %d after b heard edit %d", params, pr, heard))
				}
			}
		})
	}
	for k := 1; k <= n; k++ {
		if _, err := call(t, p.a, "PATCH/goods", `{"id":`+idp+`,"price":`+strconv.Itoa(k)+`}`); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "b to hear the edits", func() bool { return p.b.near.heardN.Load()-base >= n })
	time.Sleep(20 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads on b during %d edits on a", served.Load(), n)
	if stale.Load() > 0 {
		t.Fatalf("%d reads served an edited good's old price after its invalidation; first: %v", stale.Load(), firstStale.Load())
	}
	plain := New(p.db, catalog.OwnEntries(p.cache), nil) // the database's answers
	for _, params := range []string{`{"id":` + idp + `}`, `{}`} {
		want, _ := body(t, plain, "GET/goods", params)
		if got, _ := body(t, p.b, "GET/goods", params); got != want || !strings.Contains(got, `"price":40`) {
			t.Fatalf("GET %s on b after the edits = %s; want %s with price 40", params, got, want)
		}
	}
}
