// Package members is the members service of microshop: sign-up, sign-in
// and removal of members, whose passwords are stored only as argon2id hashes
// (see ArgonMemory), and their login sessions (see session.go). Routes:
//
//	POST   /members   {username, password}  → {"userid": N}
//	GET    /members   {username, password}  → {"userid": N, "token": T, "expires": TIME}, or 401
//	DELETE /members   {username}            → success, or 404
//	GET /members/name {id}                  → {"id": N, "username": U}, or 404 (chat names its senders by it)
//	POST   /sessions  {username, password}  → {"token": T, "userid": N, "expires": TIME}, or 401
//	GET    /sessions                        → {"userid": N, "expires": TIME} of the presented token
//	DELETE /sessions                        → success: the presented token is revoked
//
// With authentication on (the request carries the gate's auth object),
// DELETE /members needs the member's own token (or the admin key), and the
// sessions routes act on the token the client presented (auth.session).
// Logins are limited per username and client address (session_lockout.go)
// and, with a fleet key, taken only from gates (requireGate).
//
// Passwords and tokens are never logged, stored or answered in clear (a
// token is answered once, when the session starts; only its hash is kept).
package members

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/members/sessioncache"
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
	// SessionTTL is how long a session lasts (DefaultSessionTTL when 0).
	SessionTTL time.Duration
	// LockoutThreshold, LockoutUsernameThreshold and LockoutWindow
	// configure the login lockout (session_lockout.go; the Default values
	// when 0).
	LockoutThreshold         int
	LockoutUsernameThreshold int
	LockoutWindow            time.Duration
	// FleetKey is the fleet's key (service.FleetKey; empty with
	// --fleet-key=none). With it, cached sessions are authenticated
	// (package sessioncache) and logins are taken only from gates
	// (requireGate); without it, no session is cached. Read when first
	// needed.
	FleetKey []byte

	store    table
	cache    *cache.Cache
	log      *slog.Logger
	hasher   *hasher
	sessions *sessions
	now      func() time.Time
	// repairs retries the tombstones of revoked sessions that Redis
	// failed to take.
	repairs *cache.Repairs
	lock    *lockout

	signerOnce  sync.Once
	cacheSigner *sessioncache.Signer
}

// signer returns the Signer of the cached sessions (nil without a fleet
// key).
func (s *Service) signer() *sessioncache.Signer {
	s.signerOnce.Do(func() { s.cacheSigner = sessioncache.NewSigner(s.FleetKey) })
	return s.cacheSigner
}

// New returns the members service over db, caching sessions and counting
// failed logins in c (nil: no cache, and failed logins counted in this
// process). Set the exported fields before serving. log
// receives nothing secret (nil discards). New computes one argon2id hash
// (the dummy used for unknown users), which takes a few tens of
// milliseconds.
func New(db *store.DB, c *cache.Cache, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store:  table{db: db},
		cache:  c,
		log:    log.With("service", "members"),
		hasher: newHasher(runtime.GOMAXPROCS(0)),
		now:    time.Now,
		lock:   newLockout(),
	}
	s.sessions = &sessions{svc: s}
	s.repairs = cache.NewRepairs(s.log)
	return s
}

// Routes returns the handlers of the members service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/members":     s.signUp,
		"GET/members":      s.signIn,
		"DELETE/members":   s.remove,
		"GET/members/name": s.name,
		"POST/sessions":    s.logIn,
		"GET/sessions":     s.session,
		"DELETE/sessions":  s.logOut,
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

// signIn checks a username and password (the book's login) and answers the
// member's id and, as POST /sessions does, a new session's token.
func (s *Service) signIn(ctx context.Context, r *service.Request) (service.Result, error) {
	return s.logIn(ctx, r)
}

// logIn checks a username and password and starts a session.
func (s *Service) logIn(ctx context.Context, r *service.Request) (service.Result, error) {
	if err := s.requireGate(r); err != nil {
		return nil, err
	}
	id, a, err := s.checkPassword(ctx, r)
	if err != nil {
		return nil, err
	}
	s.loginSucceeded(ctx, a)
	token, expires, err := s.sessions.start(ctx, id)
	if err != nil {
		return nil, err
	}
	return service.Result{"userid": id, "token": token, "expires": expires.UTC().Format(time.RFC3339)}, nil
}

// requireGate refuses, when the fleet has a key, a login that no gate
// signed, so that nobody who reaches the members port can guess passwords
// there (past the gates' rate limits), count failures against a member, or
// choose the address they are counted under. With a key, a gate signs the
// auth object of every request it sends, and the service runtime has
// verified that signature before a handler runs (a bad one is refused
// there with a 401); a request with no auth object reaches the handler as
// the anonymous &service.Auth{}, without a signature. Without a key (the
// book's trust model) every login is taken.
func (s *Service) requireGate(r *service.Request) error {
	if len(s.FleetKey) == 0 || (r.Auth != nil && r.Auth.Sig != "") {
		return nil
	}
	return service.Forbidden("logins are taken only through a gate: this fleet has a key (--fleet-key), and the request carries no auth object signed with it")
}

// session answers the member and expiry of the presented token (the gate
// also asks it when Redis does not know the token).
func (s *Service) session(ctx context.Context, r *service.Request) (service.Result, error) {
	if r.Auth == nil || r.Auth.Session == "" {
		return nil, service.Unauthorized("log in first (Authorization: Bearer TOKEN)")
	}
	id, expires, err := s.sessions.lookup(ctx, r.Auth.Session)
	if err != nil {
		return nil, err
	}
	return service.Result{"userid": id, "expires": expires.UTC().Format(time.RFC3339)}, nil
}

// logOut revokes the presented token.
func (s *Service) logOut(ctx context.Context, r *service.Request) (service.Result, error) {
	if r.Auth == nil || r.Auth.Session == "" {
		return nil, service.Unauthorized("log in first (Authorization: Bearer TOKEN)")
	}
	if err := s.sessions.revoke(ctx, r.Auth.Session); err != nil {
		return nil, err
	}
	return service.Result{}, nil
}

// clientAddr returns the client's address the gate vouches for, "" when
// it sent none; one no gate would send is a 400.
func clientAddr(r *service.Request) (string, error) {
	if r.Auth == nil {
		return "", nil
	}
	a := r.Auth.Addr
	if len(a) > maxAddrLen {
		return "", service.BadRequest("malformed client address in the auth object")
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c > '~' {
			return "", service.BadRequest("malformed client address in the auth object")
		}
	}
	return a, nil
}

// checkPassword checks r's username and password and returns the member's
// id and the attempt, counting a wrong password for the lockout
// (session_lockout.go).
func (s *Service) checkPassword(ctx context.Context, r *service.Request) (int64, *loginAttempt, error) {
	username, err := r.Params.String("username")
	if err != nil {
		return 0, nil, err
	}
	password, err := r.Params.String("password")
	if err != nil {
		return 0, nil, err
	}
	if username == "" || password == "" {
		return 0, nil, service.BadRequest("username and password are required")
	}
	addr, err := clientAddr(r)
	if err != nil {
		return 0, nil, err
	}
	var a *loginAttempt
	var hash string
	// A username that sign-up would refuse cannot exist; not asking the
	// database also keeps MySQL's PAD SPACE comparison ("kim " = "kim") out.
	if utf8.RuneCountInString(username) <= MaxUsernameLen && validUsername(username) {
		a = &loginAttempt{username: username, addr: addr, at: s.now()}
		if a.member, hash, err = s.store.lookup(ctx, username); err != nil {
			return 0, nil, err
		}
		// A locked-out attempt is refused before it waits for a hashing
		// slot: it costs no password check, and queues ahead of nobody.
		if err := s.checkLock(ctx, a); err != nil {
			return 0, nil, err
		}
	}
	// An unknown user (or an impossible password) still costs one full
	// verification, against the dummy hash, so timing does not tell.
	if utf8.RuneCountInString(password) > MaxPasswordLen {
		hash = ""
	}
	if err := s.hasher.acquire(ctx); err != nil {
		return 0, nil, err
	}
	defer s.hasher.release()
	if a != nil {
		// Checked again holding the slot, and a failure counted before
		// the slot is released: concurrent guesses overrun a threshold by
		// at most the number of slots in the fleet.
		if err := s.checkLock(ctx, a); err != nil {
			return 0, nil, err
		}
	}
	ok, err := s.hasher.compare(password, hash)
	if err != nil {
		return 0, nil, err
	}
	if a != nil && !ok {
		s.loginFailed(ctx, a)
	}
	if a == nil || !ok {
		return 0, nil, errLogin()
	}
	return a.member, a, nil
}

// remove deletes a member by username, and ends the member's sessions.
// With authentication on, only the member itself (or the admin) may: any
// other username is a 403, whether it exists or not.
func (s *Service) remove(ctx context.Context, r *service.Request) (service.Result, error) {
	username, err := r.Params.Text("username", 1, MaxUsernameLen)
	if err != nil {
		return nil, err
	}
	var id int64
	if validUsername(username) {
		if id, _, err = s.store.lookup(ctx, username); err != nil {
			return nil, err
		}
	}
	if err := r.CheckMember(id); err != nil {
		return nil, err
	}
	if id == 0 {
		return nil, service.NotFound("member %q not found", username)
	}
	if err := s.store.delete(ctx, username); err != nil {
		return nil, err
	}
	if err := s.store.forgetAddrs(ctx, id); err != nil {
		return nil, err
	}
	if err := s.sessions.revokeMember(ctx, id); err != nil {
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

// name answers a member's username by id: chat asks it to name the
// sender of a message (a username is shown next to everything its member
// posts, so it is no secret). A member's username never changes and ids
// are never reused, so the answer may be kept for good.
func (s *Service) name(ctx context.Context, r *service.Request) (service.Result, error) {
	id, err := r.Params.ID("id")
	if err != nil {
		return nil, err
	}
	username, err := s.store.username(ctx, id)
	if err != nil {
		return nil, err
	}
	return service.Result{"id": id, "username": username}, nil
}
