package app

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/cache"
)

// chatFlags adds the gate's chat flags to fs, each with its environment
// twin, filling c. The returned check validates the values after parsing.
func chatFlags(fs *flag.FlagSet, c *gate.ChatConfig, getenv func(string) string) (check func() error) {
	var envErr error
	env := func(key string) string { return getenv(key) }
	envInt := func(key string, def int) int {
		if v := env(key); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: want an integer, got %q", key, v)
			}
			return n
		}
		return def
	}
	envFloat := func(key string, def float64) float64 {
		if v := env(key); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: want a number, got %q", key, v)
			}
			return f
		}
		return def
	}
	envDuration := func(key string, def time.Duration) time.Duration {
		if v := env(key); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: want a duration like 30s, got %q", key, v)
			}
			return d
		}
		return def
	}
	fs.IntVar(&c.Queue, "chat-queue", envInt("MICROSHOP_CHAT_QUEUE", 256), "gate: messages queued per chat socket before a slow reader is disconnected [MICROSHOP_CHAT_QUEUE]")
	fs.Float64Var(&c.Rate, "chat-rate", envFloat("MICROSHOP_CHAT_RATE", 10), "gate: messages a second each member may send, on average, across all their chat sockets and every gate (a socket of --auth=off: each socket) [MICROSHOP_CHAT_RATE]")
	fs.IntVar(&c.Burst, "chat-burst", envInt("MICROSHOP_CHAT_BURST", 20), "gate: messages each member (a socket of --auth=off: each socket) may send at once [MICROSHOP_CHAT_BURST]")
	fs.IntVar(&c.MaxPerMember, "chat-max-per-member", envInt("MICROSHOP_CHAT_MAX_PER_MEMBER", 20), "gate: chat sockets one member may hold open on this gate; one more gets 429 [MICROSHOP_CHAT_MAX_PER_MEMBER]")
	fs.IntVar(&c.MaxPerAddress, "chat-max-per-address", envInt("MICROSHOP_CHAT_MAX_PER_ADDRESS", 100), "gate: chat sockets one client address may hold open on this gate; one more gets 429 [MICROSHOP_CHAT_MAX_PER_ADDRESS]")
	fs.DurationVar(&c.PingInterval, "chat-ping", envDuration("MICROSHOP_CHAT_PING", 30*time.Second), "gate: how often chat sockets are pinged; a client that does not answer a ping within that time is disconnected [MICROSHOP_CHAT_PING]")
	origins := env("MICROSHOP_CHAT_ORIGINS")
	fs.StringVar(&origins, "chat-origins", origins, "gate: comma-separated host patterns of other web origins allowed to open chat sockets [MICROSHOP_CHAT_ORIGINS]")
	return func() error {
		if envErr != nil {
			return envErr
		}
		if c.Queue < 1 {
			return fmt.Errorf("--chat-queue: want a positive count, got %d", c.Queue)
		}
		if c.Rate <= 0 || c.Burst < 1 {
			return fmt.Errorf("--chat-rate and --chat-burst: want positive values, got %g and %d", c.Rate, c.Burst)
		}
		if c.MaxPerMember < 1 || c.MaxPerAddress < 1 {
			return fmt.Errorf("--chat-max-per-member and --chat-max-per-address: want positive counts, got %d and %d", c.MaxPerMember, c.MaxPerAddress)
		}
		if c.PingInterval < time.Second {
			return fmt.Errorf("--chat-ping: want at least 1s, got %v", c.PingInterval)
		}
		c.OriginPatterns = nil
		for _, o := range strings.Split(origins, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.OriginPatterns = append(c.OriginPatterns, o)
			}
		}
		return nil
	}
}

// openGateCache opens the Redis a separate gate process uses for chat;
// without --redis chat is disabled on that gate.
func openGateCache(ctx context.Context, o *options, log *slog.Logger) (*resources, error) {
	if o.redis == "" {
		log.Info("no --redis: chat sockets are disabled on this gate")
		return &resources{}, nil
	}
	c, err := cache.Open(o.redis, o.redisPrefix, log)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(ctx, 2*time.Second); err != nil {
		log.Warn("Redis not reachable; chat delivery starts when it answers", "err", err)
	}
	return &resources{cache: c}, nil
}
