package store

import "errors"

// Error marks a failure of the database, to tell it from a failure of
// Redis: a service whose Redis view fails answers from the database, but
// one whose database fails has nothing to fall back on. Its text names the
// package and never reaches a client (the runtime answers 500 and logs it).
type Error struct {
	// Pkg is the package that met the failure ("stores").
	Pkg string
	Err error
}

// Failure returns err marked as a database failure of package pkg.
func Failure(pkg string, err error) *Error { return &Error{Pkg: pkg, Err: err} }

func (e *Error) Error() string { return e.Pkg + ": database: " + e.Err.Error() }

// Unwrap returns the driver's error.
func (e *Error) Unwrap() error { return e.Err }

// IsFailure reports whether err is, or wraps, a database failure.
func IsFailure(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
