package service

import (
	"encoding/json"

	"math"
	"strconv"
	"strings"
)

// Params are the parameters of a request, decoded from the packet's params
// object. Values are strings (from query strings and forms), json.Number,
// bool, nil, or nested []any / map[string]any (from JSON bodies).
type Params map[string]any

// DecodeParams decodes a JSON object into Params, keeping numbers exact.
// Empty input gives empty Params.
func DecodeParams(raw []byte) (Params, error) {
	p := Params{}
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	if flatParams(raw, p) {
		return p, nil
	}
	clear(p)
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		return nil, BadRequest("params must be a JSON object")
	}
	return p, nil
}

// flatParams decodes raw into p as DecodeParams's json.Decoder does, for
// the common case of one object whose members are named without escapes
// and are plain strings (no escape, ASCII), numbers, booleans or null,
// without reflection; it reports false for anything else (p then holds
// some of the members). FuzzFlatParams holds it to json.Decoder.
func flatParams(raw []byte, p Params) bool {
	if !json.Valid(raw) {
		return false
	}
	i := space(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = space(raw, i+1)
	for i < len(raw) && raw[i] == '"' {
		name, end, ok := plainJSONString(raw, i)
		if !ok {
			return false
		}
		i = space(raw, end)
		i = space(raw, i+1) // the colon
		if i >= len(raw) {
			return false
		}
		switch c := raw[i]; {
		case c == '"':
			v, end, ok := plainJSONString(raw, i)
			if !ok {
				return false
			}
			p[name], i = v, end
		case c == '-' || c >= '0' && c <= '9':
			j := i
			for j < len(raw) && strings.IndexByte("+-.eE0123456789", raw[j]) >= 0 {
				j++
			}
			p[name], i = json.Number(raw[i:j]), j
		case c == 't':
			p[name], i = true, i+4
		case c == 'f':
			p[name], i = false, i+5
		case c == 'n':
			p[name], i = nil, i+4
		default:
			return false // an object or an array
		}
		i = space(raw, i)
		if i < len(raw) && raw[i] == ',' {
			i = space(raw, i+1)
		}
	}
	return true
}

// plainJSONString returns the string that starts at b[i] (valid JSON)
// and the index after it; ok is false when it holds an escape or a byte
// that is not ASCII.
func plainJSONString(b []byte, i int) (s string, end int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c >= 0x80:
			return "", 0, false
		}
	}
	return "", 0, false
}

func space(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// Has reports whether name is present and not null.
func (p Params) Has(name string) bool {
	v, ok := p[name]
	return ok && v != nil
}

// String returns the parameter as a string: strings as they are, numbers and
// booleans in their JSON form, "" when absent or null. Arrays and objects
// are an error.
func (p Params) String(name string) (string, error) {
	switch v := p[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	default:
		return "", BadRequest("%s must be a string", name)
	}
}

// Int returns a required integer parameter, given as a JSON number or a
// decimal string. A missing, fractional or out-of-range value is a 400.
func (p Params) Int(name string) (int64, error) {
	v, ok := p[name]
	if !ok || v == nil || v == "" {
		return 0, BadRequest("%s is required", name)
	}
	var s string
	switch v := v.(type) {
	case string:
		s = strings.TrimSpace(v)
	case json.Number:
		s = v.String()
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return 0, BadRequest("%s must be an integer", name)
		}
		return int64(v), nil
	default:
		return 0, BadRequest("%s must be an integer", name)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, BadRequest("%s must be an integer", name)
	}
	return n, nil
}

// ID returns a required positive integer identifier (1 ≤ id < 2^53, so it
// survives JavaScript peers).
func (p Params) ID(name string) (int64, error) {
	n, err := p.Int(name)
	if err != nil {
		return 0, err
	}
	if n < 1 || n > 1<<53 {
		return 0, BadRequest("%s must be a positive integer", name)
	}
	return n, nil
}

// IntDefault returns an optional integer parameter, def when absent.
func (p Params) IntDefault(name string, def int64) (int64, error) {
	if v, ok := p[name]; !ok || v == nil || v == "" {
		return def, nil
	}
	return p.Int(name)
}

// Page reads the parameters of a page of a list ordered by id (keyset
// paging): after, the id the page starts after (0, the first page, when
// absent), and limit, from 1 to max (def when absent).
func (p Params) Page(def, max int) (after int64, limit int, err error) {
	n, err := p.IntDefault("limit", int64(def))
	if err != nil {
		return 0, 0, err
	}
	if n < 1 || n > int64(max) {
		return 0, 0, BadRequest("limit must be from 1 to %d", max)
	}
	after, err = p.IntDefault("after", 0)
	if err != nil {
		return 0, 0, BadRequest("after must be an integer: the next of the previous page, or 0 for the first page")
	}
	if after < 0 {
		return 0, 0, BadRequest("after must not be negative: the next of the previous page, or 0 for the first page")
	}
	return after, int(n), nil
}

// Float returns a required finite number, given as a JSON number or a string.
func (p Params) Float(name string) (float64, error) {
	v, ok := p[name]
	if !ok || v == nil || v == "" {
		return 0, BadRequest("%s is required", name)
	}
	var s string
	switch v := v.(type) {
	case string:
		s = strings.TrimSpace(v)
	case json.Number:
		s = v.String()
	case float64:
		s = strconv.FormatFloat(v, 'g', -1, 64)
	default:
		return 0, BadRequest("%s must be a number", name)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, BadRequest("%s must be a number", name)
	}
	return f, nil
}

// Text returns a string parameter checked for length in characters:
// required (min ≥ 1) or optional (min 0), at most max characters.
func (p Params) Text(name string, min, max int) (string, error) {
	s, err := p.String(name)
	if err != nil {
		return "", err
	}
	n := len([]rune(s))
	if n < min {
		if n == 0 {
			return "", BadRequest("%s is required", name)
		}
		return "", BadRequest("%s must be at least %d characters", name, min)
	}
	if n > max {
		return "", BadRequest("%s must be at most %d characters", name, max)
	}
	return s, nil
}

// Result is the body of a successful answer: its fields are sent next to
// key, errorcode and errormessage, as the book's services do
// (for example {"results": [...]} or {"id": 7}).
// The server only reads the Result a handler returns, so a handler may give
// the same one to many requests (a near cache does): whoever is given a
// Result must not change it unless it made it.
type Result map[string]any

// encodedField is the key under which Encoded keeps a Result's encoding:
// no field of an answer is named so (a NUL byte), and MarshalJSON leaves it
// out.
const encodedField = "\x00encoded"

// encodedBody is the value stored under encodedField.
type encodedBody []byte

// Encoded attaches to r its encoding and returns r. body must be exactly
// what json.Marshal(r) writes without it (r's fields as one JSON object):
// the server then sends body as it is instead of encoding r again, so that a
// handler that keeps its answers encoded (a near cache, a view rebuilt on
// change) encodes nothing per request. r keeps its fields, for in-process
// callers and tests; json.Marshal(r) still encodes them (see MarshalJSON),
// and the attached encoding counts as one more entry of the map.
func (r Result) Encoded(body []byte) Result {
	r[encodedField] = encodedBody(body)
	return r
}

// Encode returns the JSON the server sends for r's fields: the encoding
// attached by Encoded, if any, else r encoded now (nil for no fields).
func (r Result) Encode() ([]byte, error) {
	if b, ok := r[encodedField].(encodedBody); ok {
		return b, nil
	}
	if len(r) == 0 {
		return nil, nil
	}
	// As a plain map: MarshalJSON would cost a second pass.
	return json.Marshal(map[string]any(r))
}

// MarshalJSON encodes r's fields as a JSON object, leaving out the
// encoding attached by Encoded, if any: encoding a Result always reflects
// its fields as they are now.
func (r Result) MarshalJSON() ([]byte, error) {
	if _, ok := r[encodedField]; !ok {
		return json.Marshal(map[string]any(r))
	}
	m := make(map[string]any, len(r)-1)
	for k, v := range r {
		if k != encodedField {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// Results is a shorthand for Result{"results": v}.
func Results(v any) Result { return Result{"results": v} }

// PageResult answers a keyset page read with one row more than limit (see
// Params.Page): "results" holds at most limit rows and, when the extra row
// shows that another page follows, "next" is the id of the page's last row,
// the after of the next page.
func PageResult[T any](rows []T, limit int, id func(T) int64) Result {
	res := Result{}
	if len(rows) > limit {
		rows = rows[:limit]
		res["next"] = strconv.FormatInt(id(rows[limit-1]), 10)
	}
	res["results"] = rows
	return res
}
