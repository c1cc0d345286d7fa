package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/microshop/microshop/packet"
	"github.com/microshop/microshop/service"
)

// Handler returns the gate's HTTP handler: every request goes through the
// Admitter, then to a handler of Config.Handlers, or to the service whose
// route "METHOD/path" the distributor lists.
func (g *Gate) Handler() http.Handler {
	return http.HandlerFunc(g.serveHTTP)
}

func (g *Gate) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	label, known := "unmatched", false // the metric label; whether the route is listed
	own := g.cfg.Handlers[r.Method+" "+r.URL.Path]
	switch {
	case own != nil:
		label = r.Method + " " + r.URL.Path
	case g.client.Known(r.Method, r.URL.Path):
		label, known = r.Method+" "+r.URL.Path, true
	}
	status := g.route(w, r, own, known)
	observe(label, status, time.Since(start))
	if status >= 500 {
		g.log.Warn("request", "method", r.Method, "path", r.URL.Path, "status", status, "took", time.Since(start))
	} else {
		g.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", status, "took", time.Since(start))
	}
}

// route serves one request and returns the status written; own is its
// handler of Config.Handlers, if any; known tells whether the distributor
// lists its route or did.
func (g *Gate) route(w http.ResponseWriter, r *http.Request, own http.Handler, known bool) int {
	var auth *service.Auth
	if g.cfg.Admit != nil {
		var status int
		if auth, status = g.cfg.Admit.Admit(w, r); status != 0 {
			return status
		}
	}
	if own != nil {
		return serveOwn(own, w, r.WithContext(WithAuth(r.Context(), auth)))
	}
	if !known {
		if allow := g.allowed(r.URL.Path); allow != "" {
			w.Header().Set("Allow", allow)
			return WriteError(w, http.StatusMethodNotAllowed, r.Method+" is not a method of "+r.URL.Path+": it takes "+allow)
		}
		return WriteError(w, http.StatusNotFound, "unknown route "+r.Method+" "+r.URL.Path)
	}
	var body []byte
	if r.Body == nil || r.Body == http.NoBody {
		// The common case, a GET: the query straight to JSON, no map.
		body = queryJSON(r.URL.RawQuery)
	}
	if body == nil || (r.Method == http.MethodPost && r.Header.Get("Idempotency-Key") != "") {
		var err error
		if body, err = g.paramsJSON(w, r); err != nil {
			return err.(*paramError).status
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
	defer cancel()
	m, err := g.client.CallAuth(ctx, auth, r.Method, r.URL.Path, body)
	if err != nil {
		if r.Context().Err() != nil {
			return StatusClientGone // nothing to write
		}
		status, msg := service.CallStatus(r.Method, err)
		return WriteError(w, status, msg)
	}
	status, msg := m.Status()
	if m.ErrorObject != "" {
		// A book service's database error object: its SQL text stays here.
		return WriteError(w, status, msg)
	}
	if status == http.StatusTooManyRequests {
		setRetryAfter(w.Header(), m)
	}
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(len(m.Raw))} // not chunked: the body is whole
	w.WriteHeader(status)
	w.Write(m.Raw)
	return status
}

// contentTypeJSON is the Content-Type of every answer, shared: net/http
// only reads it.
var contentTypeJSON = []string{"application/json; charset=utf-8"}

// paramsJSON collects r's parameters (see Params), with a POST's
// Idempotency-Key, as the JSON object sent to the service; a bad request is
// written to w and returned as a *paramError.
func (g *Gate) paramsJSON(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	params, err := Params(r, g.cfg.MaxBody)
	if err != nil {
		var pe *paramError
		if !errors.As(err, &pe) {
			pe = &paramError{http.StatusBadRequest, "unreadable request"}
		}
		WriteError(w, pe.status, pe.msg)
		return nil, pe
	}
	if k := r.Header.Get("Idempotency-Key"); k != "" && r.Method == http.MethodPost {
		// The draft's form is a quoted string: "KEY". A bare KEY is taken too.
		if len(k) >= 2 && k[0] == '"' && k[len(k)-1] == '"' {
			k = k[1 : len(k)-1]
		}
		if !validIdempotencyKey(k) {
			return nil, &paramError{WriteError(w, http.StatusBadRequest, "Idempotency-Key must be 1 to 255 printable ASCII characters"), ""}
		}
		params[IdempotencyParam] = k // the header wins over a parameter of the name
	}
	body, err := json.Marshal(params)
	if err != nil {
		return nil, &paramError{WriteError(w, http.StatusBadRequest, "unencodable parameters"), ""}
	}
	return body, nil
}

// queryJSON encodes a query string as the JSON object Params makes of it
// (the first value of each name), without building a map; nil when the
// query is not plain (a malformed escape, a ';', text that is not UTF-8):
// Params then decides.
func queryJSON(raw string) []byte {
	b := make([]byte, 1, len(raw)+16)
	b[0] = '{'
	var seen []string
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		if strings.IndexByte(kv, ';') >= 0 {
			return nil
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil
		}
		if slices.Contains(seen, k) {
			continue
		}
		seen = append(seen, k)
		if len(seen) > 1 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, v)
	}
	return append(b, '}')
}

// appendJSONString appends s, valid UTF-8, as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// methods are those the gate looks for when a path is known with another
// method than a request's.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// allowed returns the methods path is served with, for the Allow header of
// a 405 ("GET, POST"); "" for a path nobody serves.
func (g *Gate) allowed(path string) string {
	var allow []string
	for _, m := range methods {
		if g.cfg.Handlers[m+" "+path] != nil || g.client.Known(m, path) {
			allow = append(allow, m)
		}
	}
	return strings.Join(allow, ", ")
}

// StatusClientGone is the status recorded (never sent) for a request whose
// client went away before its answer: nginx's 499.
const StatusClientGone = 499

// IdempotencyParam is the parameter in which the gate passes a POST's
// Idempotency-Key header (the IETF httpapi draft) to the service: a service
// that honours it answers a repeated request with the same key, from the
// same member, with the first answer, and applies it once.
const IdempotencyParam = "idempotency_key"

// validIdempotencyKey reports whether k is 1 to 255 printable ASCII
// characters.
func validIdempotencyKey(k string) bool {
	if len(k) < 1 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// setRetryAfter gives a service's 429 (the login lockout) its Retry-After
// header, from the answer's retryafter field (seconds).
func setRetryAfter(h http.Header, m *packet.Message) {
	var res struct {
		RetryAfter int64 `json:"retryafter"`
	}
	json.Unmarshal(m.Raw, &res)
	h.Set("Retry-After", strconv.FormatInt(max(res.RetryAfter, 1), 10))
}

// WriteError writes the book's error body, {"errorcode": status,
// "errormessage": msg}, with the HTTP status, and returns the status.
func WriteError(w http.ResponseWriter, status int, msg string) int {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	b, _ := json.Marshal(struct {
		ErrorCode    int    `json:"errorcode"`
		ErrorMessage string `json:"errormessage"`
	}{status, msg})
	w.Write(b)
	return status
}

type paramError struct {
	status int
	msg    string
}

func (e *paramError) Error() string { return e.msg }

// Params collects a request's parameters as the book's gate does: the query
// string, then the body (JSON when the Content-Type says so or, without a
// Content-Type, when it starts with '{'; a form otherwise), body values
// winning. A body over max bytes is a 413, malformed JSON a 400.
func Params(r *http.Request, max int64) (map[string]any, error) {
	params := map[string]any{}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			params[k] = v[0]
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		return params, nil
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, &paramError{http.StatusBadRequest, "could not read the request body"}
	}
	if int64(len(data)) > max {
		return nil, &paramError{http.StatusRequestEntityTooLarge, "request body larger than " + strconv.FormatInt(max, 10) + " bytes"}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return params, nil
	}
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	isJSON := mt == "application/json" || (mt == "" || mt == "text/plain") && bytes.HasPrefix(bytes.TrimSpace(data), []byte("{"))
	if isJSON {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var body map[string]any
		if err := dec.Decode(&body); err != nil || body == nil {
			return nil, &paramError{http.StatusBadRequest, "malformed JSON body: want a JSON object"}
		}
		if dec.More() {
			return nil, &paramError{http.StatusBadRequest, "malformed JSON body: trailing data after the object"}
		}
		for k, v := range body {
			params[k] = v
		}
		return params, nil
	}
	form, err := url.ParseQuery(string(data))
	if err != nil {
		return nil, &paramError{http.StatusBadRequest, "malformed form body"}
	}
	for k, v := range form {
		if len(v) > 0 {
			params[k] = v[0]
		}
	}
	return params, nil
}
