// Package service is the runtime that hosts microshop services: it listens
// for packet connections, dispatches each request by "METHOD/path" to its
// handler (many at once per connection), registers with the distributor and
// drains in-flight requests on shutdown. Its Client lets any process call
// the routes of other processes, as the gate does.
package service

import "context"

// Request is one request to a handler.
type Request struct {
	Method string
	URI    string
	Params Params
	// Auth is the identity the gate vouches for, nil when the request
	// carried none (book behaviour; see Auth and Request.Member).
	Auth *Auth
}

// Handler serves one route. It returns the answer's fields, or an error:
// an *Error for the client, anything else an internal error (logged once by
// the runtime, shown to the client as a bare 500).
type Handler func(ctx context.Context, r *Request) (Result, error)
