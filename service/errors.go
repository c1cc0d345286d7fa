package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/microshop/microshop/packet"
)

// Error is an error meant for the client. Code is the HTTP status that tells
// the outcome (400, 401, 403, 404, 409, 413, 429, 503, ...); it travels as the
// packet's errorcode, and Message as its errormessage.
type Error struct {
	Code    int
	Message string
	// Fields, when set, are sent in the answer next to errorcode and
	// errormessage (for example {"retryafter": 60} with a 429).
	Fields Result
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

// Errorf returns an *Error with the given status code and formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Convenience constructors for the common statuses.
var (
	// BadRequest is 400: the input is invalid.
	BadRequest = func(format string, args ...any) *Error { return Errorf(http.StatusBadRequest, format, args...) }
	// NotFound is 404: the item does not exist.
	NotFound = func(format string, args ...any) *Error { return Errorf(http.StatusNotFound, format, args...) }
	// Unauthorized is 401: no valid credentials were presented.
	Unauthorized = func(format string, args ...any) *Error { return Errorf(http.StatusUnauthorized, format, args...) }
	// Forbidden is 403: the credentials do not allow this.
	Forbidden = func(format string, args ...any) *Error { return Errorf(http.StatusForbidden, format, args...) }
	// TooManyRequests is 429: try again later.
	TooManyRequests = func(format string, args ...any) *Error {
		return Errorf(http.StatusTooManyRequests, format, args...)
	}
	// Conflict is 409: the write conflicts with existing data.
	Conflict = func(format string, args ...any) *Error { return Errorf(http.StatusConflict, format, args...) }
	// Unavailable is 503: a shared resource cannot serve.
	Unavailable = func(format string, args ...any) *Error { return Errorf(http.StatusServiceUnavailable, format, args...) }
)

// ErrorCode maps err to the errorcode and errormessage sent to the client:
// an *Error anywhere in the chain keeps its code and message; anything else
// is an internal error whose details are not shown.
func ErrorCode(err error) (int, string) {
	if err == nil {
		return 0, "success"
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code, e.Message
	}
	return http.StatusInternalServerError, "internal error"
}

// CallStatus maps an error of Client.Call to the HTTP status and message
// the fleet's client gets: the one table of the edge, used by the gate and
// by the handlers it serves itself. method tells whether a request lost in
// flight may have been applied (a POST). ErrNoRoute is a 404 here: at the
// edge it means nobody serves the path; a caller for whom a missing route
// is a missing dependency answers 503 instead.
func CallStatus(method string, err error) (int, string) {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code, e.Message
	case errors.Is(err, ErrNoRoute):
		return http.StatusNotFound, "unknown route"
	case errors.Is(err, ErrNotEnforcing):
		return http.StatusServiceUnavailable, "this route is served only by processes that cannot enforce identities (the book's services ignore who is asking): a gate with --auth=on does not route to them; run a fleet with the book's services with --auth=off"
	case errors.Is(err, ErrNoInstance):
		return http.StatusServiceUnavailable, "no instance of this route is available now; retry later"
	case errors.Is(err, ErrInstanceLost) && method == http.MethodPost:
		return http.StatusServiceUnavailable, "the instance serving this request stopped answering while it was in flight; it may or may not have been applied"
	case errors.Is(err, ErrInstanceLost):
		return http.StatusServiceUnavailable, "the instances serving this request went away; retry"
	case errors.Is(err, packet.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "the service did not answer in time"
	}
	return http.StatusBadGateway, "the service could not be reached"
}
