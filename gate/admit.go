package gate

import (
	"bufio"
	"context"
	"net"
	"net/http"

	"github.com/microshop/microshop/service"
)

// An Admitter decides, for each request, who makes it and whether it may
// pass: rate limits, tokens, anything that refuses a request before it
// costs a call.
type Admitter interface {
	// Admit returns the identity to send with r (nil: none, the book's open
	// mode), or writes the refusal to w (a 401, a 429, ...) and returns
	// its status, which is then not 0.
	Admit(w http.ResponseWriter, r *http.Request) (auth *service.Auth, status int)
}

type authKey struct{}

// WithAuth returns ctx carrying the identity the gate established.
func WithAuth(ctx context.Context, a *service.Auth) context.Context {
	return context.WithValue(ctx, authKey{}, a)
}

// AuthFrom returns the identity the gate established for the request whose
// context is ctx (for the handlers the gate serves itself): nil when the
// Admitter gave none (authentication off); Member 0 for an anonymous
// client.
func AuthFrom(ctx context.Context) *service.Auth {
	a, _ := ctx.Value(authKey{}).(*service.Auth)
	return a
}

// serveOwn serves r with one of the gate's own handlers and returns the
// status it wrote: 101 for a connection it took over, StatusClientGone
// when it wrote nothing because the client went away.
func serveOwn(h http.Handler, w http.ResponseWriter, r *http.Request) int {
	rec := &recorder{ResponseWriter: w}
	h.ServeHTTP(rec, r)
	switch {
	case rec.status != 0:
		return rec.status
	case r.Context().Err() != nil:
		return StatusClientGone
	}
	return http.StatusOK
}

// recorder notes the status a handler writes. It passes Hijack and Flush
// through, so that a WebSocket library can take the connection over.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Hijack hands the connection over (see http.Hijacker).
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// Flush sends what is buffered (see http.Flusher).
func (r *recorder) Flush() { http.NewResponseController(r.ResponseWriter).Flush() }

// Unwrap returns the ResponseWriter underneath, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
