// Package cache opens microshop's Redis: an embedded one (miniredis, for
// `microshop all` and fast tests), a single server (redis://...), or a Redis
// Cluster (several comma-separated host:port addresses). Redis holds only
// what can be rebuilt from the database (DESIGN §2).
package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// DefaultPrefix starts every key microshop writes, so that several
// deployments (or tests) can share one Redis.
const DefaultPrefix = "microshop:"

// Cache is a Redis client with the key prefix of this deployment.
type Cache struct {
	redis.UniversalClient
	// Prefix starts every key; use Key to build keys.
	Prefix string

	spec string // what Open was given, for Named
}

// Key returns the full key for name, e.g. Key("goods:{7}").
func (c *Cache) Key(name string) string { return c.Prefix + name }

// Options bound every Redis wait: with Redis down, a call fails within about
// a second instead of hanging.
func options() (dial, rw, pool time.Duration) {
	return time.Second, time.Second, time.Second
}

// Open connects to the Redis named by spec: "redis://[:pass@]host:port/db"
// (or rediss://) for one server, or "host:port,host:port,..." (optionally
// "redis-cluster://" in front) for a Redis Cluster. It does not fail when
// Redis is down: microshop keeps working without it, only slower. While
// Redis does not answer, commands fail at once after the first failure
// (see breaker); log (nil: discarded) hears of it.
func Open(spec, prefix string, log *slog.Logger) (*Cache, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := client(spec, "")
	if err != nil {
		return nil, err
	}
	c.AddHook(&breaker{log: log})
	return &Cache{UniversalClient: c, Prefix: prefix, spec: spec}, nil
}

// Named opens another client of the same Redis whose connections are
// named name (CLIENT SETNAME), without the breaker: for a connection of its
// own, such as a subscription that must be told apart in CLIENT LIST. The
// caller closes it.
func (c *Cache) Named(name string) (redis.UniversalClient, error) {
	return client(c.spec, name)
}

// client returns a client of the Redis named by spec (see Open) whose
// connections are named name ("": unnamed).
func client(spec, name string) (redis.UniversalClient, error) {
	dial, rw, pool := options()
	var c redis.UniversalClient
	switch {
	case strings.HasPrefix(spec, "redis://") || strings.HasPrefix(spec, "rediss://") || strings.HasPrefix(spec, "unix://"):
		opt, err := redis.ParseURL(spec)
		if err != nil {
			return nil, badURL(spec, err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = dial, rw, rw, pool
		opt.MaxRetries = 1
		opt.DialerRetries = 1 // fail fast when Redis is down: one dial per command
		opt.ClientName = name
		c = redis.NewClient(opt)
	case spec != "":
		addrs := strings.Split(strings.TrimPrefix(spec, "redis-cluster://"), ",")
		for i := range addrs {
			addrs[i] = strings.TrimSpace(addrs[i])
			if addrs[i] == "" {
				return nil, fmt.Errorf("cache: empty address in %q", Redact(spec))
			}
		}
		c = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:       addrs,
			DialTimeout: dial, ReadTimeout: rw, WriteTimeout: rw, PoolTimeout: pool,
			MaxRetries: 1, DialerRetries: 1, ClientName: name,
		})
	default:
		return nil, fmt.Errorf("cache: no Redis given: want redis://host:port/db or host:port,host:port for a cluster")
	}
	return c, nil
}

// badURL is the error for a Redis URL spec that does not parse, without
// its password: the parser's message quotes the URL, or a piece of it, so
// it is given only when spec has no user information (no '@') to leak.
func badURL(spec string, err error) error {
	if strings.Contains(spec, "@") {
		return fmt.Errorf("cache: bad Redis URL %q: want redis://[[user]:password@]host:port[/db], with special characters in the password %%-encoded", Redact(spec))
	}
	return fmt.Errorf("cache: bad Redis URL: %w", err)
}

// Redact returns spec with what stands between "://" and the last '@'
// (the user and password) replaced by ***, for errors and logs.
func Redact(spec string) string {
	at := strings.LastIndex(spec, "@")
	if at < 0 {
		return spec
	}
	start := 0
	if i := strings.Index(spec[:at], "://"); i >= 0 {
		start = i + 3
	}
	return spec[:start] + "***" + spec[at:]
}

// Ping reports whether Redis answers within timeout.
func (c *Cache) Ping(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.UniversalClient.Ping(ctx).Err()
}

// Embedded is an in-process Redis (miniredis) listening on a loopback port.
// A ticker moves its clock forward so that keys with a TTL expire.
type Embedded struct {
	*miniredis.Miniredis
	stop chan struct{}
	once sync.Once
}

// Close stops the embedded server and its clock.
func (e *Embedded) Close() {
	e.once.Do(func() { close(e.stop) })
	e.Miniredis.Close()
}

func (e *Embedded) tick() {
	const step = 250 * time.Millisecond
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			e.FastForward(step)
		case <-e.stop:
			return
		}
	}
}

// StartEmbedded starts an embedded Redis on a free loopback port, or on addr
// when it is not empty.
func StartEmbedded(addr string) (*Embedded, error) {
	m := miniredis.NewMiniRedis()
	var err error
	if addr == "" {
		err = m.Start()
	} else {
		err = m.StartAddr(addr)
	}
	if err != nil {
		return nil, fmt.Errorf("cache: start embedded Redis: %w", err)
	}
	e := &Embedded{Miniredis: m, stop: make(chan struct{})}
	go e.tick()
	return e, nil
}

// URL returns the redis:// URL of the embedded server.
func (e *Embedded) URL() string { return "redis://" + e.Addr() + "/0" }
