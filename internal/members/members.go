// Package members is the members service of microshop: sign-up, sign-in
// and removal of members, whose passwords are stored only as argon2id hashes
// (see ArgonMemory). Routes:
//
//	POST   /members  {username, password}  → {"userid": N}
//	GET    /members  {username, password}  → {"userid": N}, or 401
//	DELETE /members  {username}            → success, or 404
//
// Passwords are never logged, stored or answered in clear.
package members

import (
	"context"
	"log/slog"
	"runtime"
	"unicode"
	"unicode/utf8"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// Limits on member credentials, in characters.
const (
	MaxUsernameLen = 64
	MinPasswordLen = 8
	MaxPasswordLen = 256
)

// errLogin returns the one answer to every failed sign-in, which does not
// tell whether the username exists.
func errLogin() error { return service.Errorf(401, "invalid username or password") }

// Service serves the members routes.
type Service struct {
	store  table
	log    *slog.Logger
	hasher *hasher
}

// New returns the members service over db. c is not used yet (sessions will
// live there); log receives nothing secret (nil discards). New computes one argon2id hash (the
// dummy used for unknown users), which takes a few tens of milliseconds.
func New(db *store.DB, c *cache.Cache, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		store:  table{db: db},
		log:    log.With("service", "members"),
		hasher: newHasher(runtime.GOMAXPROCS(0)),
	}
}

// Routes returns the handlers of the members service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/members":   s.signUp,
		"GET/members":    s.signIn,
		"DELETE/members": s.remove,
	}
}

// signUp creates a member and answers its id.
func (s *Service) signUp(ctx context.Context, r *service.Request) (service.Result, error) {
	username, err := parseUsername(r.Params)
	if err != nil {
		return nil, err
	}
	password, err := r.Params.Text("password", MinPasswordLen, MaxPasswordLen)
	if err != nil {
		return nil, err
	}
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return nil, err
	}
	id, err := s.store.insert(ctx, username, hash)
	if err != nil {
		return nil, err
	}
	return service.Result{"userid": id}, nil
}

// signIn checks a username and password and answers the member's id.
func (s *Service) signIn(ctx context.Context, r *service.Request) (service.Result, error) {
	username, err := r.Params.String("username")
	if err != nil {
		return nil, err
	}
	password, err := r.Params.String("password")
	if err != nil {
		return nil, err
	}
	if username == "" || password == "" {
		return nil, service.BadRequest("username and password are required")
	}
	var id int64
	var hash string
	// A username that sign-up would refuse cannot exist; not asking the
	// database also keeps MySQL's PAD SPACE comparison ("kim " = "kim") out.
	if utf8.RuneCountInString(username) <= MaxUsernameLen && validUsername(username) {
		if id, hash, err = s.store.lookup(ctx, username); err != nil {
			return nil, err
		}
	}
	// An unknown user (or an impossible password) still costs one full
	// verification, against the dummy hash, so timing does not tell.
	if utf8.RuneCountInString(password) > MaxPasswordLen {
		hash = ""
	}
	ok, err := s.hasher.verify(ctx, password, hash)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errLogin()
	}
	return service.Result{"userid": id}, nil
}

// remove deletes a member by username.
func (s *Service) remove(ctx context.Context, r *service.Request) (service.Result, error) {
	username, err := r.Params.Text("username", 1, MaxUsernameLen)
	if err != nil {
		return nil, err
	}
	if !validUsername(username) {
		return nil, service.NotFound("member %q not found", username)
	}
	if err := s.store.delete(ctx, username); err != nil {
		return nil, err
	}
	return service.Result{}, nil
}

// parseUsername reads a username for sign-up: 1 to MaxUsernameLen
// characters, each a letter (any script), a digit, '_', '.' or '-'; a
// combining mark may follow a letter.
func parseUsername(p service.Params) (string, error) {
	u, err := p.Text("username", 1, MaxUsernameLen)
	if err != nil {
		return "", err
	}
	if !validUsername(u) {
		return "", service.BadRequest("username may contain only letters, digits, '_', '.' and '-'")
	}
	return u, nil
}

func validUsername(u string) bool {
	if !utf8.ValidString(u) {
		return false
	}
	prevLetter := false
	for _, c := range u {
		switch {
		case unicode.IsLetter(c):
			prevLetter = true
		case unicode.IsMark(c) && prevLetter:
			// stays after a letter
		case unicode.IsDigit(c), c == '_', c == '.', c == '-':
			prevLetter = false
		default:
			return false
		}
	}
	return true
}
