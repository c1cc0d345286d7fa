package service

import (
	"context"
	"encoding/json"
	"net/http"
)

// Auth is the identity of a request as the gate vouches for it. A microshop
// gate with authentication on sends it with every request, as the packet's
// top-level "auth" object: {"member":N,"admin":bool,"session":"HASH",
// "addr":"CLIENT"}. It is
// not a parameter, so a client cannot forge it; the gate builds the packet.
//
// A request without one (Request.Auth nil) came from a book gate, a gate
// running --auth=off, or another service: it gets the book's behaviour, where
// the userid parameter names the acting member.
type Auth struct {
	// Member is the member the bearer token belongs to; 0 is anonymous.
	Member int64 `json:"member"`
	// Admin is set when the bearer token was the admin key.
	Admin bool `json:"admin,omitempty"`
	// Session is the SHA-256 (hex) of the bearer token, when one was
	// presented, so that the members service can end that session.
	Session string `json:"session,omitempty"`
	// Addr is the client's address as the gate saw it (after its trusted
	// proxies; an IPv6 client's /64), for the members service's per-address
	// login lockout.
	Addr string `json:"addr,omitempty"`
	// Exp, Seq and Sig sign the object when the fleet has a FleetKey: Exp
	// is a Unix time after which it is refused, Seq its number on the
	// connection (accepted once), Sig the HMAC (see FleetKey).
	Exp int64  `json:"exp,omitempty"`
	Seq uint64 `json:"seq,omitempty"`
	Sig string `json:"sig,omitempty"`
}

// Messages of the authorization errors.
const (
	msgLogIn  = "log in first (Authorization: Bearer TOKEN)"
	msgAdmin  = "this needs the admin key (Authorization: Bearer ADMIN_KEY)"
	msgNotYou = "you may act only as yourself"
)

// Member returns the member acting in r, the one place where a service
// decides who that is:
//
//   - with no Auth (book behaviour): the userid parameter; when required is
//     false and there is none, 0;
//   - with Auth from a member's token: that member; a userid parameter naming
//     someone else is a 403; no token is a 401 (required, or a userid given);
//   - with the admin key: the member named by userid (the admin may act for
//     anyone); 0 when there is none and required is false.
func (r *Request) Member(required bool) (int64, error) {
	a := r.Auth
	if a == nil || a.Admin {
		if !required && !r.Params.Has("userid") {
			return 0, nil
		}
		return r.Params.ID("userid")
	}
	if a.Member == 0 {
		if !required && !r.Params.Has("userid") {
			return 0, nil
		}
		return 0, Unauthorized(msgLogIn)
	}
	if r.Params.Has("userid") {
		id, err := r.Params.ID("userid")
		if err != nil {
			return 0, err
		}
		if id != a.Member {
			return 0, Forbidden("%s (userid %d)", msgNotYou, a.Member)
		}
	}
	return a.Member, nil
}

// CheckMember allows r to act on member id's own things (deleting that
// member, for example): always without Auth (book behaviour) or with the
// admin key; with a member's token only when id is that member (403
// otherwise, also for an id that does not exist, so existence is not
// revealed); without a token, a 401.
func (r *Request) CheckMember(id int64) error {
	a := r.Auth
	switch {
	case a == nil || a.Admin:
		return nil
	case a.Member == 0:
		return Unauthorized(msgLogIn)
	case a.Member != id:
		return Forbidden(msgNotYou)
	}
	return nil
}

// RequireAdmin allows r to manage the shop (goods, stores): always without
// Auth (book behaviour), with the admin key; a member's token is a 403, no
// token a 401.
func (r *Request) RequireAdmin() error {
	a := r.Auth
	switch {
	case a == nil || a.Admin:
		return nil
	case a.Member == 0:
		return Unauthorized(msgAdmin)
	}
	return Forbidden(msgAdmin)
}

// Admin wraps h so that only a caller who may manage the shop reaches it
// (Request.RequireAdmin): a route table declares its admin routes with it,
// as "POST/goods": service.Admin(s.create).
func Admin(h Handler) Handler {
	return func(ctx context.Context, r *Request) (Result, error) {
		if err := r.RequireAdmin(); err != nil {
			return nil, err
		}
		return h(ctx, r)
	}
}

// decodeAuth reads a packet's auth object; absent or null is nil.
func decodeAuth(raw json.RawMessage) (*Auth, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	a, ok := decodeAuthFast(raw)
	if !ok {
		a = Auth{}
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, Errorf(http.StatusBadRequest, "malformed auth object")
		}
	}
	if a.Member < 0 {
		return nil, Errorf(http.StatusBadRequest, "malformed auth object")
	}
	return &a, nil
}
