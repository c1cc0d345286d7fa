package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/internal/cache"
)

// chatFlags adds the gate's chat flags, filling c. The returned check
// validates the values after parsing.
func chatFlags(f *envFlags, c *gate.ChatConfig) (check func() error) {
	f.Int(gGate, &c.Queue, "chat-queue", "MICROSHOP_CHAT_QUEUE", 256, "gate: messages queued per chat socket before a slow reader is disconnected")
	f.Float(gGate, &c.Rate, "chat-rate", "MICROSHOP_CHAT_RATE", 10, "gate: messages a second each member may send, on average, across all their chat sockets and every gate (a socket of --auth=off: each socket)")
	f.Int(gGate, &c.Burst, "chat-burst", "MICROSHOP_CHAT_BURST", 20, "gate: messages each member (a socket of --auth=off: each socket) may send at once")
	f.Int(gGate, &c.MaxPerMember, "chat-max-per-member", "MICROSHOP_CHAT_MAX_PER_MEMBER", 20, "gate: chat sockets one member may hold open on this gate; one more gets 429")
	f.Int(gGate, &c.MaxPerAddress, "chat-max-per-address", "MICROSHOP_CHAT_MAX_PER_ADDRESS", 100, "gate: chat sockets one client address may hold open on this gate; one more gets 429")
	f.Duration(gGate, &c.PingInterval, "chat-ping", "MICROSHOP_CHAT_PING", 30*time.Second, "gate: how often chat sockets are pinged; a client that does not answer a ping within that time is disconnected")
	var origins string
	f.String(gGate, &origins, "chat-origins", "MICROSHOP_CHAT_ORIGINS", "", "gate: comma-separated host patterns of other web origins allowed to open chat sockets")
	return func() error {
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
