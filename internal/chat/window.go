package chat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/chat/topic"
)

// WindowTTL is how long a room's window lives in Redis after its last
// message or rebuild; an idle room's window is then rebuilt on demand.
const WindowTTL = 7 * 24 * time.Hour

// Errors of the window.
var (
	// errNotBuilt means the window is missing or not fully built: the
	// database must be read to rebuild it.
	errNotBuilt = errors.New("chat: the room's window is not built")
	// errRebuildRaced means the window vanished during its rebuild.
	errRebuildRaced = errors.New("chat: the room's window vanished during its rebuild")
)

// The window of a room is one sorted set, chat:{ROOM}:recent, whose members
// are the last WindowSize messages as published (JSON), scored by id.
// Members with negative scores are not messages: builtMember (score -1)
// marks a window that holds every recent message, and a rebuild's token
// (score -2) tells the rebuild whether the set survived until it finished.
// Being one key, the window and its marker vanish together.
const builtMember = "~built"

// trimLua keeps the last ARGV[cap] messages of KEYS[1] and refreshes its TTL.
const trimLua = `
local function trim(key, cap, ttl)
  local neg = redis.call('ZCOUNT', key, '-inf', '(0')
  local n = redis.call('ZCARD', key) - neg
  if n > cap then redis.call('ZREMRANGEBYRANK', key, neg, neg + n - cap - 1) end
  redis.call('EXPIRE', key, ttl)
end
`

// publishScript adds a message to the window (whether built or not: a
// rebuild in progress then keeps it) and publishes it. KEYS[1] the window;
// ARGV: id, message JSON, channel, window size, TTL in seconds. It returns
// the number of subscribers (gates) that received it.
var publishScript = redis.NewScript(trimLua + `
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
trim(KEYS[1], tonumber(ARGV[4]), ARGV[5])
return redis.call('PUBLISH', ARGV[3], ARGV[2])
`)

// readScript returns the last ARGV[1] messages of the window KEYS[1],
// newest first, or nil when the window is not built; it stops after the
// message that takes them past ARGV[2] bytes (no older one can be in a
// page, see fit), so a room of long messages does not cross the wire whole.
var readScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], '` + builtMember + `') then return false end
local all = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '0', 'LIMIT', 0, ARGV[1])
local budget, size, out = tonumber(ARGV[2]), 0, {}
for i, m in ipairs(all) do
  out[i] = m
  size = size + #m + 1
  if size > budget then break end
end
return out
`)

// beginScript places a rebuild's token ARGV[1] in the window KEYS[1].
var beginScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], -2, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
`)

// finishScript ends a rebuild: unless its token ARGV[1] is gone (the window
// vanished meanwhile; it returns 0), it adds the messages (pairs of id and
// JSON from ARGV[4]), removes the token, marks the window built and trims
// it to ARGV[2] messages with ARGV[3] seconds to live.
var finishScript = redis.NewScript(trimLua + `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
for i = 4, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], -1, '` + builtMember + `')
trim(KEYS[1], tonumber(ARGV[2]), ARGV[3])
return 1
`)

// window keeps the recent messages of every room in Redis.
type window struct{ c *cache.Cache }

// key returns the window's key of room (hash-tagged by room).
func (w window) key(room string) string { return w.c.Key("chat:{" + room + "}:recent") }

func ttl() int64 { return int64(WindowTTL / time.Second) }

// publish adds m (encoded as payload) to its room's window and publishes
// payload on the room's channel.
func (w window) publish(ctx context.Context, m Message, payload []byte) error {
	return publishScript.Run(ctx, w.c, []string{w.key(m.Room)},
		m.ID, payload, topic.Channel(w.c.Prefix, m.Room), WindowSize, ttl()).Err()
}

// read returns the last limit messages of room, oldest first, or
// errNotBuilt.
func (w window) read(ctx context.Context, room string, limit int) ([]Message, error) {
	raw, err := readScript.Run(ctx, w.c, []string{w.key(room)}, limit, HistoryBytes).StringSlice()
	if isNil(err) {
		return nil, errNotBuilt
	}
	if err != nil {
		return nil, err
	}
	msgs := make([]Message, 0, len(raw))
	size := 0
	for _, r := range raw { // newest first
		var m Message
		if err := json.Unmarshal([]byte(r), &m); err != nil {
			return nil, fmt.Errorf("chat: undecodable message in the window of %s: %w", room, err)
		}
		msgs = append(msgs, m)
		// Past a page's bytes, older messages cannot be in the page (fit
		// cuts there): do not decode them.
		if size += len(r) + 1; size > HistoryBytes {
			break
		}
	}
	return sortByID(msgs), nil
}

// begin starts a rebuild of room's window and returns its token.
func (w window) begin(ctx context.Context, room string) (string, error) {
	b := make([]byte, 8)
	rand.Read(b)
	token := "~rebuild:" + hex.EncodeToString(b)
	return token, beginScript.Run(ctx, w.c, []string{w.key(room)}, token, ttl()).Err()
}

// finish ends the rebuild begun with token, filling the window with msgs
// (read from the database after begin).
func (w window) finish(ctx context.Context, room, token string, msgs []Message) error {
	args := make([]any, 0, 3+2*len(msgs))
	args = append(args, token, WindowSize, ttl())
	for _, m := range msgs {
		payload, err := json.Marshal(m)
		if err != nil {
			return err
		}
		args = append(args, m.ID, payload)
	}
	n, err := finishScript.Run(ctx, w.c, []string{w.key(room)}, args...).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return errRebuildRaced
	}
	return nil
}
