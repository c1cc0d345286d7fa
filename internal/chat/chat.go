// Package chat is the chat service of microshop: it owns the chat_messages
// table (the system of record of every room) and each room's recent window
// in Redis, and it publishes every new message on the room's Redis channel
// (see package topic), from which every gate fans it out to its WebSocket
// clients. Routes:
//
//	POST /chat          {room, text, userid}           → {"id", "room", "user", ["username",] "text", "time"}
//	GET  /chat/history  {room, [limit, before]}        → {"results": [messages, oldest first], "source", "next": "N"}
//
// A message is stored in the database first, then added to the room's
// window and published, in one Redis script. With Redis down a message
// cannot be delivered live, so sending answers 503 (the message is not
// stored); history is then read from the database. The window rebuilds
// itself from the database when it is missing (FLUSHALL, restart,
// eviction).
//
// # History pages
//
// GET /chat/history answers the room's latest messages (from the window),
// or with before=N the latest ones older than message N (from the
// database, exact whatever the window holds): at most limit of them, and
// never more than HistoryBytes of JSON, so that a page always fits in a
// packet (a page of long messages holds fewer than limit). "next" is the
// before of the page of older messages, present when there may be some.
// Messages are paged by id (keyset pagination), so a walk back through a
// room lists every message older than its first page exactly once, newest
// page last to oldest, however many are posted meanwhile.
package chat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/chat/topic"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// Limits of the chat service.
const (
	// MaxTextLen is the longest message text, in characters.
	MaxTextLen = 2000
	// MaxNameLen is the longest sender's name (a member's username), in
	// characters (names.go).
	MaxNameLen = 64
	// DefaultHistory is how many messages GET /chat/history answers
	// without a limit.
	DefaultHistory = 50
	// MaxHistory is the largest limit of GET /chat/history. A page of that
	// many long messages would not fit in a packet; HistoryBytes cuts it.
	MaxHistory = 500
	// WindowSize is how many of each room's latest messages Redis keeps.
	WindowSize = 500
	// MaxMessageBytes is the most bytes one message takes in a history
	// answer, its comma in the results array included. encoding/json
	// writes each character of the text in at most 6 bytes (\u00XX for
	// <, >, &; \u2028 and \u2029; 2 to 4 bytes for other multi-byte
	// characters; ¶ becomes \u00b6 when the packet is framed; control
	// characters but tab, CR and LF are refused); rooms and users are
	// plain ASCII (package topic); time is RFC 3339 in UTC, at most 30
	// characters with nanoseconds (messages keep milliseconds: 24):
	//
	// A message from a member with a token has its member's username
	// (names.go) (letters of any script, digits, '_', '.', '-': at most 4
	// bytes a character, none escaped), and then its user is the member's
	// id, at most 16 digits (ids are below 2^53); one without a name has a
	// user of at most 64 characters, fewer bytes than the id and the name
	// together. So the longest message is a member's:
	//
	//	{"id":  6 + 19 (int64)  ,"room":"  9 + 64  "  1  ,"user":"  9 + 16  "  1
	//	,"username":"  13 + 4×64  "  1  ,"text":"  9 + 6×2000  "  1  ,"time":"  9 + 30  "}  2  ,  1
	//	= 6+19+9+64+1+9+16+1+13+256+1+9+12000+1+9+30+2+1 = 12,447 bytes.
	MaxMessageBytes = 6 + 19 + 9 + topic.MaxRoomLen + 1 + 9 + 16 + 1 + 13 + 4*MaxNameLen + 1 + 9 + 6*MaxTextLen + 1 + 9 + 30 + 2 + 1
	// HistoryBytes bounds the encoded messages of one history page: 256
	// KiB, well within packet.DefaultMaxSize (1 MiB) with the envelope
	// (key, errorcode, errormessage, source, next: under 200 bytes). A page
	// holds at least HistoryBytes / MaxMessageBytes = 21 messages of the
	// longest kind, and MaxHistory short ones. Not the whole megabyte: 200
	// clients reading a room of the longest messages at once would make the
	// fleet hold 200 such pages, several times over (README, "Bounds").
	HistoryBytes = 256 << 10
)

// Message is one chat message, as stored, published and sent to clients.
type Message struct {
	ID   int64  `json:"id"`
	Room string `json:"room"`
	// User is who posted it: a member's id with a token, else the name it
	// was posted under.
	User string `json:"user"`
	// Name is the posting member's username, when known (names.go); sent
	// as "username", which the web console shows.
	Name string    `json:"username,omitempty"`
	Text string    `json:"text"`
	Time time.Time `json:"time"`
}

// Service serves the chat routes.
type Service struct {
	store table
	win   window
	log   *slog.Logger
	now   func() time.Time

	// degraded is set while Redis fails, so that an outage is logged once
	// when it starts and once when it ends.
	degraded atomic.Bool

	// reading holds a token per history page being read: a page can mean
	// reading MaxHistory messages of up to 12 KB, so that many at once
	// would hold hundreds of megabytes (README, "Bounds").
	reading chan struct{}

	// names finds members' usernames; nil: messages carry none.
	names *names
}

// HistoryReaders is how many history pages a chat process reads at once;
// more wait their turn (posting does not), at most historyWait, then get a
// 503 that says to retry: no caller waits longer than a gate would.
const (
	HistoryReaders = 8
	historyWait    = 2 * time.Second
)

// New returns the chat service over db (the system of record) and c (the
// windows and the channels); neither may be nil. log receives Redis
// warnings; nil discards them.
func New(db *store.DB, c *cache.Cache, log *slog.Logger, opts ...Option) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{store: table{db: db}, win: window{c: c}, log: log.With("service", "chat"), now: time.Now,
		reading: make(chan struct{}, HistoryReaders)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Routes returns the handlers of the chat service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/chat":        s.post,
		"GET/chat/history": s.history,
	}
}

// post stores a message, then adds it to the room's window and publishes it.
func (s *Service) post(ctx context.Context, r *service.Request) (service.Result, error) {
	m, err := parseMessage(r)
	if err != nil {
		return nil, err
	}
	// Without Redis the message cannot reach anyone live: say so before
	// storing it, so that the sender can simply try again later.
	if err := s.win.c.Ping(ctx, time.Second); err != nil {
		s.redisDone(err, "ping", m.Room)
		return nil, service.Unavailable("chat delivery is unavailable (Redis is down); the message was not sent, try again later")
	}
	m.Name = s.nameOf(ctx, r)
	m.Time = s.now().UTC().Truncate(time.Millisecond)
	if m.ID, err = s.store.insert(ctx, m); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := s.win.publish(ctx, m, payload); err != nil {
		s.redisDone(err, "publish", m.Room)
		return nil, service.Unavailable("message %d was stored and will show in the history, but live delivery failed (Redis is down)", m.ID)
	}
	s.redisDone(nil, "", "")
	res := service.Result{"id": m.ID, "room": m.Room, "user": m.User, "text": m.Text, "time": m.Time}
	if m.Name != "" {
		res["username"] = m.Name
	}
	return res, nil
}

// history answers a page of the room's messages, oldest first (see the
// package comment): the latest from the Redis window, rebuilt from the
// database when it is missing, or from the database when Redis fails; older
// ones, with before, from the database.
func (s *Service) history(ctx context.Context, r *service.Request) (service.Result, error) {
	room, err := parseRoom(r.Params)
	if err != nil {
		return nil, err
	}
	before, limit, err := parseHistoryPage(r.Params)
	if err != nil {
		return nil, err
	}
	wait := time.NewTimer(historyWait)
	defer wait.Stop()
	select {
	case s.reading <- struct{}{}:
		defer func() { <-s.reading }()
	case <-wait.C:
		return nil, service.Unavailable("too many history pages are being read now; retry in a moment")
	case <-ctx.Done():
		return nil, service.Unavailable("too many history pages are being read now; retry in a moment")
	}
	var msgs []Message
	var fromWindow, more bool
	if before > 0 {
		msgs, more, err = s.older(ctx, room, before, limit)
	} else {
		msgs, fromWindow, more, err = s.recent(ctx, room, limit)
	}
	if err != nil {
		return nil, err
	}
	msgs, cut := fit(msgs)
	res := service.Results(msgs)
	// The window holds exactly the published messages; the database may
	// also hold one stored a moment ago and not published yet. The gate
	// joining a client to the room needs to know which (see goLive in internal/edge/chatws).
	res["source"] = "database"
	if fromWindow {
		res["source"] = "window"
	}
	if (more || cut) && len(msgs) > 0 {
		res["next"] = strconv.FormatInt(msgs[0].ID, 10)
	}
	return res, nil
}

// parseHistoryPage reads the paging parameters of GET /chat/history:
// before, the id the page ends before (0, the latest messages, when
// absent), and limit.
func parseHistoryPage(p service.Params) (before int64, limit int, err error) {
	n, err := p.IntDefault("limit", DefaultHistory)
	if err != nil {
		return 0, 0, err
	}
	if n < 1 || n > MaxHistory {
		return 0, 0, service.BadRequest("limit must be from 1 to %d", MaxHistory)
	}
	before, err = p.IntDefault("before", 0)
	if err != nil {
		return 0, 0, service.BadRequest("before must be an integer: the next of the previous page, or 0 for the latest messages")
	}
	if before < 0 {
		return 0, 0, service.BadRequest("before must not be negative: the next of the previous page, or 0 for the latest messages")
	}
	return before, int(n), nil
}

// fit returns the newest of msgs (oldest first) whose encoding takes at
// most HistoryBytes, and whether it had to leave older ones out.
func fit(msgs []Message) ([]Message, bool) {
	if len(msgs) <= HistoryBytes/MaxMessageBytes {
		return msgs, false // they fit whatever they hold
	}
	total := 0
	for i := len(msgs) - 1; i >= 0; i-- {
		total += encodedLen(msgs[i])
		if total > HistoryBytes {
			return msgs[i+1:], true
		}
	}
	return msgs, false
}

// encodedLen is the bytes m takes in an answer packet: its JSON, each ¶
// escaped as \u00b6 by the framing, and a comma.
func encodedLen(m Message) int {
	b, err := json.Marshal(m)
	if err != nil {
		return MaxMessageBytes
	}
	return len(b) + 4*bytes.Count(b, []byte(packet.Separator)) + 1
}

// older returns the last limit messages of room before message before,
// oldest first, from the database, and whether older ones remain.
func (s *Service) older(ctx context.Context, room string, before int64, limit int) ([]Message, bool, error) {
	msgs, err := s.store.before(ctx, room, before, limit+1)
	if err != nil {
		return nil, false, err
	}
	if len(msgs) > limit {
		return msgs[1:], true, nil
	}
	return msgs, false, nil
}

// recent returns the last limit messages of room, oldest first, whether
// they come from the Redis window (rather than the database), and whether
// older ones may remain.
func (s *Service) recent(ctx context.Context, room string, limit int) (msgs []Message, fromWindow, more bool, err error) {
	// One message more than the page tells whether older ones remain (the
	// window cannot tell beyond its WindowSize messages).
	n := limit + 1
	page := func(msgs []Message) ([]Message, bool) {
		if len(msgs) > limit {
			return msgs[len(msgs)-limit:], true
		}
		return msgs, false
	}
	msgs, err = s.win.read(ctx, room, n)
	if err == nil {
		s.redisDone(nil, "", "")
		full := len(msgs) >= WindowSize
		msgs, more = page(msgs)
		return msgs, true, more || full, nil
	}
	if !errors.Is(err, errNotBuilt) {
		s.redisDone(err, "read window", room)
		if msgs, err = s.store.before(ctx, room, latest, n); err != nil {
			return nil, false, false, err
		}
		msgs, more = page(msgs)
		return msgs, false, more, nil
	}
	// The window is missing: rebuild it from the database. The token
	// placed first tells whether the window vanished during the rebuild.
	token, err := s.win.begin(ctx, room)
	if err != nil {
		s.redisDone(err, "begin rebuild", room)
		if msgs, err = s.store.before(ctx, room, latest, n); err != nil {
			return nil, false, false, err
		}
		msgs, more = page(msgs)
		return msgs, false, more, nil
	}
	all, err := s.store.before(ctx, room, latest, max(WindowSize, n))
	if err != nil {
		return nil, false, false, err
	}
	if err := s.win.finish(ctx, room, token, all[max(0, len(all)-WindowSize):]); err != nil {
		if errors.Is(err, errRebuildRaced) {
			s.log.Debug("window vanished during its rebuild; answering from the database", "room", room)
		} else {
			s.redisDone(err, "rebuild window", room)
		}
	} else {
		s.log.Debug("window rebuilt", "room", room, "messages", len(all))
	}
	msgs, more = page(all)
	return msgs, false, more, nil
}

// redisDone records the outcome of a Redis operation: the first failure
// of an outage is logged at warn, later ones at debug, the recovery at info.
func (s *Service) redisDone(err error, op, room string) {
	if err == nil {
		if s.degraded.CompareAndSwap(true, false) {
			s.log.Info("redis is answering again")
		}
		return
	}
	if s.degraded.CompareAndSwap(false, true) {
		s.log.Warn("redis failed; chat delivery is down, history comes from the database", "op", op, "room", room, "err", err)
		return
	}
	s.log.Debug("redis failed", "op", op, "room", room, "err", err)
}

// parseRoom reads and validates the room parameter.
func parseRoom(p service.Params) (string, error) {
	room, err := p.String("room")
	if err != nil {
		return "", err
	}
	if err := topic.CheckRoom(room); err != nil {
		return "", service.BadRequest("%s", err.Error())
	}
	return room, nil
}

// parseMessage validates the parameters of a new message (all but its id
// and time).
func parseMessage(r *service.Request) (Message, error) {
	p := r.Params
	var m Message
	var err error
	if m.Room, err = parseRoom(p); err != nil {
		return m, err
	}
	if m.User, err = User(r); err != nil {
		return m, err
	}
	if m.Text, err = p.Text("text", 1, MaxTextLen); err != nil {
		return m, err
	}
	if err := CheckText(m.Text); err != nil {
		return m, err
	}
	return m, nil
}

// CheckText validates a message text beyond its length: valid UTF-8, not
// only white space, and no control characters but tab and line breaks.
func CheckText(text string) error {
	if !utf8.ValidString(text) {
		return service.BadRequest("text must be valid UTF-8")
	}
	blank := true
	for _, c := range text {
		if unicode.IsControl(c) && c != '\n' && c != '\r' && c != '\t' {
			return service.BadRequest("text must not contain control characters")
		}
		if !unicode.IsSpace(c) {
			blank = false
		}
	}
	if blank {
		return service.BadRequest("text is required")
	}
	return nil
}

// User is the one place that says who sends a message: with a member's
// token, that member (r.Member decides: a userid naming someone else is a
// 403, no token a 401); with the admin key or authentication off (the
// book's behaviour), the userid parameter when given, else a generated
// guest name.
func User(r *service.Request) (string, error) {
	if a := r.Auth; a != nil && !a.Admin {
		id, err := r.Member(true)
		if err != nil {
			return "", err
		}
		return strconv.FormatInt(id, 10), nil
	}
	u, err := r.Params.String("userid")
	if err != nil {
		return "", err
	}
	if u == "" {
		return GuestName(), nil
	}
	if err := topic.CheckUser(u); err != nil {
		return "", service.BadRequest("%s", err.Error())
	}
	return u, nil
}

// GuestName returns a new random guest name, "guest-" and 6 hex digits.
func GuestName() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "guest-" + hex.EncodeToString(b)
}

// sortByID orders msgs by id and drops repeated ids.
func sortByID(msgs []Message) []Message {
	slices.SortFunc(msgs, func(a, b Message) int { return int(a.ID - b.ID) })
	return slices.CompactFunc(msgs, func(a, b Message) bool { return a.ID == b.ID })
}

// isNil reports whether err is Redis's "no value".
func isNil(err error) bool { return errors.Is(err, redis.Nil) }
