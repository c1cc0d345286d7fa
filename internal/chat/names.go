package chat

import (
	"context"
	"strconv"
	"sync"

	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// Names: a message posted with a member's token carries the member's id as
// "user" (as before: clients and the book's peers read it) and the
// member's username as "username". The chat service asks the members service
// for it (GET /members/name, over the protocol, like any peer) and keeps
// the answers: a username never changes and ids are never reused, so a
// kept answer is never stale. The name is stored with the message, so
// history shows the name it was posted under; messages stored before
// names existed, or posted while the members service could not answer,
// have no "username" (it is left out of their JSON, which decodes as before).
// With the admin key or authentication off, "user" is already the name
// the message was posted under, and there is no "username".

// Caller calls a route of another service over the protocol;
// service.Client implements it.
type Caller interface {
	Call(ctx context.Context, method, path string, params []byte) (*packet.Message, error)
}

// Option changes what New returns.
type Option func(*Service)

// Names makes the service name the members who post with their username,
// asked of the members service through c.
func Names(c Caller) Option {
	return func(s *Service) { s.names = &names{caller: c, kept: map[int64]string{}} }
}

// maxNames bounds the usernames a chat process keeps (about 10 MB at the
// longest); past it they are all forgotten and asked again.
const maxNames = 100_000

// names finds and keeps members' usernames.
type names struct {
	caller Caller
	mu     sync.Mutex
	kept   map[int64]string
}

// of returns member id's username; "" when the members service cannot
// tell now (the message is then posted without a name: chat does not
// stop because members is away).
func (n *names) of(ctx context.Context, id int64) string {
	n.mu.Lock()
	name, ok := n.kept[id]
	n.mu.Unlock()
	if ok {
		return name
	}
	m, err := n.caller.Call(ctx, "GET", "/members/name", []byte(`{"id":`+strconv.FormatInt(id, 10)+`}`))
	if err != nil {
		return ""
	}
	var body struct {
		ID       int64  `json:"id"`
		Username string `json:"username"`
	}
	if service.Decode(m, &body) != nil || body.ID != id || body.Username == "" || len([]rune(body.Username)) > MaxNameLen {
		return ""
	}
	n.mu.Lock()
	if len(n.kept) >= maxNames {
		clear(n.kept)
	}
	n.kept[id] = body.Username
	n.mu.Unlock()
	return body.Username
}

// nameOf returns the name of the member who posts r, "" when none.
func (s *Service) nameOf(ctx context.Context, r *service.Request) string {
	a := r.Auth
	if s.names == nil || a == nil || a.Admin || a.Member == 0 {
		return ""
	}
	return s.names.of(ctx, a.Member)
}
