package service

import (
	"errors"
	"fmt"
	"net/http"
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
