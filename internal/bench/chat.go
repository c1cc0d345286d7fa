// Package bench holds microshop's load generators, run as
// `microshop bench KIND`: chat, subscribers and publishers on chat sockets
// across gates, which counts every delivery and reports latencies.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// benchChatOptions are the flags of `microshop bench chat`.
type benchChatOptions struct {
	gates       []string // ws:// base URLs
	subscribers int
	publishers  int
	rate        float64 // messages a second per publisher
	duration    time.Duration
	room        string
	size        int // bytes of padding per message text
	drain       time.Duration
	token       string // bearer token for every socket ("" = none)
}

// Run runs `microshop bench KIND` with args after "bench"; chat is the
// only kind. getenv reads the environment twins of the flags.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "chat" {
		fmt.Fprintln(stderr, "Usage: microshop bench chat [flags]   (microshop bench chat --help)")
		return errors.New("bench: want a kind of load: chat")
	}
	o, err := parseBenchChat(args[1:], getenv, stdout, stderr)
	if err != nil {
		return err
	}
	r, err := benchChat(ctx, o, stderr)
	if err != nil {
		return err
	}
	r.print(stdout, o)
	return nil
}

func parseBenchChat(args []string, getenv func(string) string, stdout, stderr io.Writer) (*benchChatOptions, error) {
	fs := flag.NewFlagSet("microshop bench chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &benchChatOptions{}
	gates := fs.String("gates", "http://127.0.0.1:8000", "comma-separated base URLs of the gates; subscribers and publishers are spread over them")
	fs.IntVar(&o.subscribers, "subscribers", 100, "WebSocket clients that only listen")
	fs.IntVar(&o.publishers, "publishers", 10, "WebSocket clients that send (and listen)")
	fs.Float64Var(&o.rate, "rate", 5, "messages a second each publisher sends (keep it within the gates' --chat-rate)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long the publishers send")
	fs.StringVar(&o.room, "room", "bench", "the room")
	fs.IntVar(&o.size, "size", 64, "bytes of padding in each message text")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "how long to wait for the last deliveries after the publishers stop")
	fs.StringVar(&o.token, "token", getenv("MICROSHOP_BENCH_TOKEN"), "a member's token for every socket, for gates that check tokens (raise their --rate-limit-member: every socket opens as that member); empty = none, for gates with --auth=off [MICROSHOP_BENCH_TOKEN]")
	fs.Usage = func() {
		fmt.Fprintln(stdout, "microshop bench chat: a load generator for chat. It connects the subscribers and")
		fmt.Fprintln(stdout, "publishers to one room across the gates, has each publisher send --rate messages a")
		fmt.Fprintln(stdout, "second for --duration (each message carries its send time), and reports deliveries")
		fmt.Fprintln(stdout, "per second, lost and out-of-order deliveries and publish-to-delivery latency.")
		fmt.Fprintln(stdout, "\nFlags:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, g := range strings.Split(*gates, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		u, err := url.Parse(g)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--gates: bad URL %q", g)
		}
		switch u.Scheme {
		case "http", "ws":
			u.Scheme = "ws"
		case "https", "wss":
			u.Scheme = "wss"
		default:
			return nil, fmt.Errorf("--gates: want http:// or ws:// URLs, got %q", g)
		}
		o.gates = append(o.gates, strings.TrimSuffix(u.String(), "/"))
	}
	switch {
	case len(o.gates) == 0:
		return nil, errors.New("--gates: give at least one gate URL")
	case o.subscribers < 0 || o.publishers < 1:
		return nil, errors.New("--subscribers must be ≥ 0 and --publishers ≥ 1")
	case o.rate <= 0 || o.duration <= 0:
		return nil, errors.New("--rate and --duration must be positive")
	case o.size < 0 || o.size > 1800:
		return nil, errors.New("--size must be from 0 to 1800")
	}
	return o, nil
}

// benchSub is one listening client's tally.
type benchSub struct {
	received   int
	outOfOrder int
	latencies  []time.Duration
	lastSeq    []int // by publisher
	closed     string
}

// benchResult is what a run measured.
type benchResult struct {
	subs          []*benchSub
	connectTime   time.Duration
	published     int64
	sendErrors    int64
	firstError    string
	start, stop   time.Time
	lastDelivery  time.Time
	perGate       []int
	disconnected  int
	deliveryCount int
}

// benchMarker starts every message text of a run, so that history and
// other traffic in the room are told apart.
func benchMarker() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "bench:" + hex.EncodeToString(b) + ":"
}

func benchChat(ctx context.Context, o *benchChatOptions, log io.Writer) (*benchResult, error) {
	marker := benchMarker()
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: -1,
	}
	client := &http.Client{Transport: transport}
	dial := func(ctx context.Context, i int, user string) (*websocket.Conn, error) {
		u := o.gates[i%len(o.gates)] + "/chat?room=" + url.QueryEscape(o.room)
		if o.token == "" {
			u += "&userid=" + url.QueryEscape(user) // the book's open mode names the user
		}
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		opts := &websocket.DialOptions{HTTPClient: client}
		if o.token != "" {
			opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + o.token}}
		}
		c, resp, err := websocket.Dial(dctx, u, opts)
		if err != nil {
			if resp != nil && resp.StatusCode == http.StatusUnauthorized {
				return nil, fmt.Errorf("connect %s: 401: the gate checks tokens; give --token (a member's token) or run the gates with --auth=off", u)
			}
			return nil, fmt.Errorf("connect %s: %w", u, err)
		}
		c.SetReadLimit(64 << 10)
		return c, nil
	}

	r := &benchResult{perGate: make([]int, len(o.gates))}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var live atomic.Int64 // deliveries so far, for the drain
	var lastNano atomic.Int64

	// Subscribers: connect them all (64 at a time), then listen.
	fmt.Fprintf(log, "bench: connecting %d subscribers and %d publishers to room %q on %d gate(s)\n", o.subscribers, o.publishers, o.room, len(o.gates))
	t0 := time.Now()
	r.subs = make([]*benchSub, o.subscribers)
	conns := make([]*websocket.Conn, o.subscribers)
	sem := make(chan struct{}, 64)
	var cwg sync.WaitGroup
	var cerr atomic.Value
	for i := range o.subscribers {
		r.subs[i] = &benchSub{lastSeq: make([]int, o.publishers)}
		r.perGate[i%len(o.gates)]++
		cwg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := dial(rctx, i, "bench-sub-"+strconv.Itoa(i))
			if err != nil {
				cerr.CompareAndSwap(nil, err)
				return
			}
			conns[i] = c
		})
	}
	cwg.Wait()
	if err, _ := cerr.Load().(error); err != nil {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
		return nil, err
	}
	r.connectTime = time.Since(t0)
	var swg sync.WaitGroup
	for i, c := range conns {
		s := r.subs[i]
		swg.Go(func() {
			// Reads use no context (the connection is closed to stop
			// them) and one buffer: the tool must cost less than the
			// gates it measures.
			stop := context.AfterFunc(rctx, func() { c.CloseNow() })
			defer stop()
			defer c.CloseNow()
			buf := make([]byte, 0, 4096)
			for {
				var err error
				buf, err = readMessage(c, buf)
				if err != nil {
					if rctx.Err() == nil {
						s.closed = err.Error()
					}
					return
				}
				data := buf
				now := time.Now()
				pub, seq, sent, ok := parseBenchText(data, marker)
				if !ok || pub >= len(s.lastSeq) {
					continue
				}
				s.received++
				if seq <= s.lastSeq[pub] {
					s.outOfOrder++
				}
				s.lastSeq[pub] = seq
				s.latencies = append(s.latencies, now.Sub(time.Unix(0, sent)))
				live.Add(1)
				lastNano.Store(now.UnixNano())
			}
		})
	}

	// Publishers: connect, then send at the rate for the duration; they
	// read (and drop) what the room sends them, counting error frames.
	pubs := make([]*websocket.Conn, o.publishers)
	for i := range pubs {
		c, err := dial(rctx, i, "bench-pub-"+strconv.Itoa(i))
		if err != nil {
			cancel()
			swg.Wait()
			for _, p := range pubs {
				if p != nil {
					p.CloseNow()
				}
			}
			return nil, err
		}
		pubs[i] = c
	}
	var perr sync.Once
	var refused atomic.Int64
	var pwg sync.WaitGroup
	for _, c := range pubs {
		pwg.Go(func() {
			for {
				_, data, err := c.Read(rctx)
				if err != nil {
					return
				}
				if bytes.HasPrefix(data, []byte(`{"error"`)) {
					refused.Add(1)
					perr.Do(func() { r.firstError = string(data) })
				}
			}
		})
	}
	padding := strings.Repeat("x", o.size)
	interval := time.Duration(float64(time.Second) / o.rate)
	r.start = time.Now()
	deadline := r.start.Add(o.duration)
	var published atomic.Int64
	var sendWG sync.WaitGroup
	for p, c := range pubs {
		sendWG.Go(func() {
			// Spread the publishers' ticks over the interval.
			next := r.start.Add(interval * time.Duration(p) / time.Duration(len(pubs)))
			for seq := 1; ; seq++ {
				if next.After(deadline) {
					return
				}
				select {
				case <-time.After(time.Until(next)):
				case <-rctx.Done():
					return
				}
				text := fmt.Sprintf("%s%d:%d:%d:%s", marker, p, seq, time.Now().UnixNano(), padding)
				b, _ := json.Marshal(map[string]string{"text": text})
				wctx, wcancel := context.WithTimeout(rctx, 10*time.Second)
				err := c.Write(wctx, websocket.MessageText, b)
				wcancel()
				if err != nil {
					return
				}
				published.Add(1)
				next = next.Add(interval)
			}
		})
	}
	sendWG.Wait()
	r.stop = time.Now()
	r.published = published.Load()
	fmt.Fprintf(log, "bench: published %d messages in %v; waiting for the last deliveries\n", r.published, r.stop.Sub(r.start).Round(time.Millisecond))

	// Drain: until every subscriber has every message, or --drain passes.
	want := r.published * int64(o.subscribers)
	drainEnd := time.Now().Add(o.drain)
	for live.Load() < want-refused.Load()*int64(o.subscribers) && time.Now().Before(drainEnd) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	swg.Wait()
	for _, c := range pubs {
		c.CloseNow()
	}
	pwg.Wait()
	r.sendErrors = refused.Load()
	if n := lastNano.Load(); n > 0 {
		r.lastDelivery = time.Unix(0, n)
	}
	for _, s := range r.subs {
		if s.closed != "" {
			r.disconnected++
		}
		r.deliveryCount += s.received
	}
	return r, nil
}

// readMessage reads the next message into buf, reusing its storage.
func readMessage(c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.Reader(context.Background())
	if err != nil {
		return buf, err
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// parseBenchText finds marker in a message frame and reads the publisher,
// sequence number and send time (Unix nanoseconds) that follow it.
func parseBenchText(data []byte, marker string) (pub, seq int, sent int64, ok bool) {
	i := bytes.Index(data, []byte(marker))
	if i < 0 {
		return 0, 0, 0, false
	}
	fields := bytes.SplitN(data[i+len(marker):], []byte(":"), 4)
	if len(fields) < 4 {
		return 0, 0, 0, false
	}
	p, err1 := strconv.Atoi(string(fields[0]))
	q, err2 := strconv.Atoi(string(fields[1]))
	t, err3 := strconv.ParseInt(string(fields[2]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, false
	}
	return p, q, t, true
}

func (r *benchResult) print(w io.Writer, o *benchChatOptions) {
	var lat []time.Duration
	outOfOrder := 0
	for _, s := range r.subs {
		lat = append(lat, s.latencies...)
		outOfOrder += s.outOfOrder
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		i := int(p * float64(len(lat)-1))
		return lat[i]
	}
	span := r.stop.Sub(r.start)
	if r.lastDelivery.After(r.stop) {
		span = r.lastDelivery.Sub(r.start)
	}
	want := r.published * int64(len(r.subs))
	fmt.Fprintf(w, "room %q, gates %s\n", o.room, strings.Join(o.gates, ","))
	fmt.Fprintf(w, "subscribers      %d (per gate %v), connected in %v\n", len(r.subs), r.perGate, r.connectTime.Round(time.Millisecond))
	fmt.Fprintf(w, "publishers       %d at %g msg/s each for %v\n", o.publishers, o.rate, o.duration)
	fmt.Fprintf(w, "published        %d messages (%.1f/s), %d refused", r.published, float64(r.published)/r.stop.Sub(r.start).Seconds(), r.sendErrors)
	if r.firstError != "" {
		fmt.Fprintf(w, " (first: %s)", r.firstError)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "deliveries       %d of %d expected (%d missing), %d out of order, %d subscribers disconnected\n",
		r.deliveryCount, want, want-int64(r.deliveryCount), outOfOrder, r.disconnected)
	fmt.Fprintf(w, "throughput       %.0f deliveries/s (over %v, first publish to last delivery)\n", float64(r.deliveryCount)/span.Seconds(), span.Round(time.Millisecond))
	fmt.Fprintf(w, "latency          p50 %v  p90 %v  p99 %v  max %v (publish to delivery)\n",
		pct(0.50).Round(10*time.Microsecond), pct(0.90).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond))
}
