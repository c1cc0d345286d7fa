// Package packet implements the wire protocol of a microshop fleet, which is
// the protocol of the Node.js microservices book: each packet is one JSON
// object followed by the separator ¶ (U+00B6, bytes C2 B6).
//
// The package offers the framing (Decoder, Append), the decoded form of a
// packet (Message) and a connection (Conn) that carries many requests at
// once, matched by key, with a deadline per request.
package packet

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
)

// Separator ends every packet on the wire.
const Separator = "¶"

// DefaultMaxSize is the largest packet accepted unless configured otherwise.
const DefaultMaxSize = 1 << 20

var (
	sep        = []byte(Separator)
	escapedSep = []byte(`\u00b6`)
)

// ErrTooLarge is returned by Decoder.Next for a packet over the size limit.
// The decoder has skipped that packet; the next call reads the one after it.
var ErrTooLarge = errors.New("packet: packet exceeds size limit")

// Escape returns b with every raw ¶ replaced by the JSON escape \u00b6. In
// valid JSON the bytes C2 B6 can only occur inside strings, where the escape
// decodes back to the same character, so the result is equivalent JSON that
// never contains the separator. b is returned unchanged when it has no ¶.
func Escape(b []byte) []byte {
	if !bytes.Contains(b, sep) {
		return b
	}
	return bytes.ReplaceAll(b, sep, escapedSep)
}

// Append appends the framed form of the JSON document js (escaped, then
// followed by the separator) to dst.
func Append(dst, js []byte) []byte {
	dst = append(dst, Escape(js)...)
	return append(dst, sep...)
}

// Marshal encodes v as JSON and frames it as one packet.
func Marshal(v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return Append(make([]byte, 0, len(js)+2), js), nil
}

// Decoder splits a byte stream into packets. It copes with packets split
// across reads and with many packets in one read.
type Decoder struct {
	r          io.Reader
	max        int
	buf        []byte
	start, end int    // unread data is buf[start:end]
	scan       int    // buf[start:scan] holds no separator
	discarding bool   // skipping the rest of an oversize packet
	head       []byte // the first bytes of the last oversize packet
	err        error  // sticky read error
}

// headSize is how much of an oversize packet the decoder keeps (Head): enough
// to read the key of a request or an answer that puts it first, as
// microshop's and the book's do.
const headSize = 512

// Head returns the first bytes (at most 512) of the packet that the last
// ErrTooLarge was about, so that its key can be read and its call answered
// (see KeyOf). It is valid until the next call of Next.
func (d *Decoder) Head() []byte { return d.head }

func (d *Decoder) keepHead(p []byte) {
	d.head = append(d.head[:0], p[:min(len(p), headSize)]...)
}

// NewDecoder returns a decoder reading from r that rejects packets larger
// than max bytes (DefaultMaxSize when max <= 0).
func NewDecoder(r io.Reader, max int) *Decoder {
	if max <= 0 {
		max = DefaultMaxSize
	}
	return &Decoder{r: r, max: max, buf: make([]byte, 16<<10)} // a busy connection's batch of answers in one read
}

// Next returns the next packet without its separator. The returned slice is
// only valid until the next call. It returns ErrTooLarge for a packet over the
// limit (and skips it), io.EOF at a clean end of stream, and
// io.ErrUnexpectedEOF when the stream ends inside a packet.
func (d *Decoder) Next() ([]byte, error) {
	for {
		if i := bytes.Index(d.buf[d.scan:d.end], sep); i >= 0 {
			stop := d.scan + i
			p := d.buf[d.start:stop]
			d.start = stop + len(sep)
			d.scan = d.start
			if d.discarding {
				d.discarding = false
				return nil, ErrTooLarge
			}
			if len(p) > d.max {
				d.keepHead(p)
				return nil, ErrTooLarge
			}
			return p, nil
		}
		// No separator yet; keep the last byte in case it starts one.
		if d.end > d.scan {
			d.scan = d.end - 1
		}
		if d.end-d.start > d.max {
			// Oversize: drop what we have except a possible half separator.
			if !d.discarding {
				d.keepHead(d.buf[d.start:d.end])
			}
			d.discarding = true
			d.start = d.scan
		}
		if d.err != nil {
			if d.end > d.start || d.discarding {
				d.start, d.end, d.scan = 0, 0, 0
				if d.err == io.EOF {
					return nil, io.ErrUnexpectedEOF
				}
			}
			return nil, d.err
		}
		d.fill()
	}
}

// fill reads more data into the buffer, compacting or growing it first.
func (d *Decoder) fill() {
	if d.start > 0 {
		n := copy(d.buf, d.buf[d.start:d.end])
		d.scan -= d.start
		d.end = n
		d.start = 0
	}
	if d.end == len(d.buf) {
		size := 2 * len(d.buf)
		if limit := d.max + 2*len(sep) + 4096; size > limit {
			size = limit
		}
		if size <= len(d.buf) {
			size = len(d.buf) + 4096
		}
		nb := make([]byte, size)
		copy(nb, d.buf[:d.end])
		d.buf = nb
	}
	n, err := d.r.Read(d.buf[d.end:])
	d.end += n
	if err != nil {
		d.err = err
	}
}

// Message is one decoded packet: a request (it has a URI), a push from the
// distributor (a URI and array params) or a response (no URI).
type Message struct {
	URI       string          `json:"uri"`
	Method    string          `json:"method"`
	Key       json.RawMessage `json:"key"`
	Params    json.RawMessage `json:"params"`
	ErrorCode *int            `json:"errorcode"`
	// ErrorMessage is the answer's errormessage when it is a string. The
	// book's services answer a database error with the driver's error
	// object there, SQL text and all: then ErrorMessage is empty and
	// ErrorObject holds the object's code (such as "ER_DUP_ENTRY"), or
	// "object" when it has none; the object itself is never kept.
	ErrorMessage string `json:"errormessage"`
	ErrorObject  string `json:"-"`
	// Auth is a request's identity as a microshop gate vouches for it (a
	// JSON object, see service.Auth); absent from a book gate's requests.
	Auth json.RawMessage `json:"auth"`

	// Raw is the whole packet as received, without the separator.
	Raw []byte `json:"-"`
}

// message is Message without its methods, for Decode.
type message Message

// errorText reads an errormessage: a string is itself; an object is its
// "code" member (or "object" without one) as the second result; null or
// absent is empty; any other value (a number, an array) is "value".
func errorText(raw json.RawMessage) (text, object string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", ""
	}
	switch raw[0] {
	case '"':
		if s, ok := plainString(raw); ok {
			return s, ""
		}
		json.Unmarshal(raw, &text)
		return text, ""
	case '{':
		var o struct {
			Code any `json:"code"`
		}
		json.Unmarshal(raw, &o)
		if c, ok := o.Code.(string); ok && isCode(c) {
			return "", c
		}
		return "", "object"
	}
	return "", "value"
}

// isCode reports whether c looks like a driver's error code: 1 to 64 of
// A-Z, 0-9 and _, starting with a letter.
func isCode(c string) bool {
	if len(c) < 1 || len(c) > 64 || c[0] < 'A' || c[0] > 'Z' {
		return false
	}
	for i := 0; i < len(c); i++ {
		if !(c[i] >= 'A' && c[i] <= 'Z' || c[i] >= '0' && c[i] <= '9' || c[i] == '_') {
			return false
		}
	}
	return true
}

// IsRequest reports whether m is a request or push rather than a response.
func (m *Message) IsRequest() bool { return m.URI != "" }

// Decode parses one packet. The returned Message owns a copy of p. When the
// top-level key is missing it is taken from params.key, as the book's gate
// sends it.
func Decode(p []byte) (*Message, error) {
	raw := bytes.Clone(p)
	m, errMsg, ok := decodeFast(raw)
	if !ok {
		m = &Message{Raw: raw}
		// errormessage may be any JSON (see ErrorObject): decoded raw here,
		// the outer field hiding Message's.
		w := struct {
			*message
			ErrorMessage json.RawMessage `json:"errormessage"`
		}{message: (*message)(m)}
		if err := json.Unmarshal(raw, &w); err != nil {
			return nil, err
		}
		errMsg = w.ErrorMessage
	}
	m.ErrorMessage, m.ErrorObject = errorText(errMsg)
	if isNull(m.Key) && len(m.Params) > 0 && m.Params[0] == '{' {
		var pk struct {
			Key json.RawMessage `json:"key"`
		}
		if json.Unmarshal(m.Params, &pk) == nil {
			m.Key = pk.Key
		}
	}
	if isNull(m.Key) {
		m.Key = nil
	}
	return m, nil
}

// decodeFast decodes raw as json.Unmarshal does in Decode, in one
// validating pass and one scan of the top-level members, without
// reflection, for packets whose members are plain: it reports false,
// leaving the packet to json.Unmarshal, for anything it would have to
// think about (invalid JSON, a member of Message named with an escape, in
// another case or twice, a value of the wrong type, an escape or a
// non-ASCII byte in uri or method). Raw values (key, params, auth,
// errormessage) are slices of raw. FuzzDecodeFast holds it to
// json.Unmarshal's results.
func decodeFast(raw []byte) (m *Message, errMsg json.RawMessage, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, nil, false
	}
	m = &Message{Raw: raw}
	var seen uint8
	member := func(quoted, v []byte) bool {
		name := quoted[1 : len(quoted)-1]
		v = v[:len(v):len(v)]
		field := -1
		for f, known := range decodedFields {
			if string(name) == known {
				field = f
				break
			}
			if bytes.EqualFold(name, []byte(known)) || bytes.IndexByte(name, '\\') >= 0 {
				return false // json.Unmarshal matches names without case, and unescapes them
			}
		}
		if field < 0 {
			return true
		}
		if seen&(1<<field) != 0 {
			return false
		}
		seen |= 1 << field
		switch decodedFields[field] {
		case "uri", "method":
			str, ok := plainString(v)
			if !ok {
				return false
			}
			if field == 0 {
				m.URI = str
			} else {
				m.Method = str
			}
		case "key":
			m.Key = json.RawMessage(v)
		case "params":
			m.Params = json.RawMessage(v)
		case "auth":
			m.Auth = json.RawMessage(v)
		case "errormessage":
			errMsg = json.RawMessage(v)
		case "errorcode":
			if string(v) != "null" {
				n, err := strconv.Atoi(string(v))
				if err != nil {
					return false
				}
				m.ErrorCode = &n
			}
		}
		return true
	}
	if !walkJSON(raw, member) {
		return nil, nil, false
	}
	return m, errMsg, true
}

// decodedFields are the members decodeFast reads, in the order of their
// bits in its seen set; uri and method come first.
var decodedFields = [...]string{"uri", "method", "key", "params", "auth", "errormessage", "errorcode"}

// plainString returns the JSON string v when it holds no escape and only
// ASCII, which json.Unmarshal would return as it is.
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	for _, c := range v[1 : len(v)-1] {
		if c == '\\' || c >= 0x80 {
			return "", false
		}
	}
	return string(v[1 : len(v)-1]), true
}

// The scanners below walk JSON already known to be valid.

// scanString returns the index after the string that starts at b[i].
func scanString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// KeyOf reads the key of a packet from its first bytes (the whole packet or
// Decoder.Head of an oversize one): the top-level "key", or, in a request
// without one, "key" inside "params" (as the book's gate sends it) when it
// comes within those bytes. request tells whether the packet is a request
// (it has a "uri" before its key). ok is false when no key could be read.
func KeyOf(head []byte) (key json.RawMessage, request, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(head))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false, false
	}
	return keyIn(dec, 0, &request)
}

// keyIn walks the members of the object dec is in, looking for "key".
func keyIn(dec *json.Decoder, depth int, request *bool) (json.RawMessage, bool, bool) {
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, *request, false
		}
		name, _ := t.(string)
		switch {
		case name == "key":
			v, err := dec.Token()
			if err != nil {
				return nil, *request, false
			}
			switch v := v.(type) {
			case json.Number:
				return json.RawMessage(v), *request, true
			case string:
				b, _ := json.Marshal(v)
				return b, *request, true
			}
			return nil, *request, false
		case name == "uri" && depth == 0:
			*request = true
			if skipValue(dec) != nil {
				return nil, *request, false
			}
		case name == "params" && depth == 0:
			t, err := dec.Token()
			if err != nil {
				return nil, *request, false
			}
			if t == json.Delim('{') {
				if k, _, ok := keyIn(dec, 1, request); ok {
					return k, *request, true
				}
				return nil, *request, false
			}
			if d, ok := t.(json.Delim); ok && d == '[' {
				if skipRest(dec, 1) != nil {
					return nil, *request, false
				}
			}
		default:
			if skipValue(dec) != nil {
				return nil, *request, false
			}
		}
	}
	return nil, *request, false
}

// skipValue reads past one value.
func skipValue(dec *json.Decoder) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); ok && (d == '{' || d == '[') {
		return skipRest(dec, 1)
	}
	return nil
}

// skipRest reads past the end of depth open objects or arrays.
func skipRest(dec *json.Decoder, depth int) error {
	for depth > 0 {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

func isNull(b json.RawMessage) bool {
	return len(b) == 0 || string(b) == "null"
}

// KeyUint returns the message key as an unsigned integer, accepting a JSON
// number or a string holding one.
func (m *Message) KeyUint() (uint64, bool) {
	k := m.Key
	if len(k) >= 2 && k[0] == '"' {
		k = k[1 : len(k)-1]
	}
	v, err := strconv.ParseUint(string(k), 10, 64)
	return v, err == nil
}

// AppendRequest appends a framed request packet to dst. The key is written
// both at the top level and as params.key (last, so it wins over a caller's
// own "key" parameter, as in the book's gate). params must be a JSON object
// or empty.
func AppendRequest(dst []byte, uri, method string, key uint64, params json.RawMessage) []byte {
	return AppendRequestAuth(dst, uri, method, key, params, nil)
}

// AppendRequestAuth is AppendRequest with a top-level "auth" field holding
// auth (a JSON object), left out when auth is empty. Book peers ignore the
// field; it is not a parameter, so a client's parameters cannot forge it.
func AppendRequestAuth(dst []byte, uri, method string, key uint64, params, auth json.RawMessage) []byte {
	dst = grow(dst, len(uri)+len(method)+len(params)+len(auth)+96)
	start := len(dst)
	dst = append(dst, `{"uri":`...)
	dst = appendString(dst, uri)
	dst = append(dst, `,"method":`...)
	dst = appendString(dst, method)
	dst = append(dst, `,"key":`...)
	dst = strconv.AppendUint(dst, key, 10)
	dst = append(dst, `,"params":`...)
	dst = appendParams(dst, params, key)
	if a := bytes.TrimSpace(auth); len(a) >= 2 && a[0] == '{' {
		dst = append(dst, `,"auth":`...)
		dst = append(dst, a...)
	}
	dst = append(dst, '}')
	if bytes.Contains(dst[start:], sep) {
		esc := Escape(dst[start:])
		dst = append(dst[:start], esc...)
	}
	return append(dst, sep...)
}

func appendParams(dst []byte, params json.RawMessage, key uint64) []byte {
	body := paramsBody(params)
	dst = append(dst, '{')
	if len(body) > 0 {
		dst = append(dst, body...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"key":`...)
	dst = strconv.AppendUint(dst, key, 10)
	return append(dst, '}')
}

// paramsBody returns the members of the params object a request carries,
// before its key: params trimmed, without its braces and without a caller's
// own "key" (so the packet has exactly one). Not an object: none.
func paramsBody(params json.RawMessage) []byte {
	p := bytes.TrimSpace(params)
	if len(p) < 2 || p[0] != '{' {
		return nil
	}
	if bytes.Contains(p, []byte(`"key"`)) {
		var m map[string]json.RawMessage
		if json.Unmarshal(p, &m) == nil {
			delete(m, "key")
			if b, err := json.Marshal(m); err == nil {
				p = b
			}
		}
	}
	return bytes.TrimSpace(p[1 : len(p)-1])
}

// SignedParams returns the bytes of params that a request sent with
// AppendRequestAuth carries, its key left out (and escaped as on the wire):
// what a signature over a request's parameters covers. ReceivedParams
// returns the same bytes from the params of the request as received.
func SignedParams(params json.RawMessage) []byte {
	body := paramsBody(params)
	b := make([]byte, 0, len(body)+2)
	b = append(b, '{')
	b = append(b, body...)
	return Escape(append(b, '}'))
}

// ReceivedParams returns a received request's params without the key that
// AppendRequestAuth appends last: SignedParams of what the sender passed.
// It returns nil when params do not end with such a key (a request not
// written by AppendRequestAuth).
func ReceivedParams(params json.RawMessage) []byte {
	p := bytes.TrimSpace(params)
	if len(p) < 2 || p[len(p)-1] != '}' {
		return nil
	}
	i := bytes.LastIndex(p, []byte(`"key":`))
	if i < 1 {
		return nil
	}
	for _, c := range p[i+len(`"key":`) : len(p)-1] {
		if c < '0' || c > '9' {
			return nil // not our trailing key
		}
	}
	head := bytes.TrimSpace(p[:i])
	if head[len(head)-1] == ',' {
		head = head[:len(head)-1]
	}
	b := make([]byte, 0, len(head)+1)
	b = append(b, head...)
	return Escape(append(b, '}'))
}

func appendString(dst []byte, s string) []byte {
	if encodesAsIs(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // cannot fail for a string
	return append(dst, b...)
}

// encodesAsIs reports whether s encodes in JSON as itself between quotes,
// as json.Marshal gives it: printable ASCII without '"', '\\' and the
// characters it escapes for HTML ('<', '>', '&').
func encodesAsIs(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// grow makes room for n more bytes in dst, so that a packet built by
// appending is allocated once.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		dst = append(make([]byte, 0, len(dst)+n), dst...)
	}
	return dst
}

// AppendResponse appends a framed response packet to dst: the key, the error
// code and message, then the fields of the JSON object body (which may be
// empty or "{}").
func AppendResponse(dst []byte, key json.RawMessage, code int, message string, body []byte) []byte {
	dst = grow(dst, len(key)+len(message)+len(body)+64)
	start := len(dst)
	dst = append(dst, `{"key":`...)
	if isNull(key) {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, key...)
	}
	dst = append(dst, `,"errorcode":`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, `,"errormessage":`...)
	dst = appendString(dst, message)
	b := bytes.TrimSpace(body)
	if len(b) >= 2 && b[0] == '{' {
		inner := bytes.TrimSpace(b[1 : len(b)-1])
		if len(inner) > 0 {
			dst = append(dst, ',')
			dst = append(dst, inner...)
		}
	}
	dst = append(dst, '}')
	if bytes.Contains(dst[start:], sep) {
		esc := Escape(dst[start:])
		dst = append(dst[:start], esc...)
	}
	return append(dst, sep...)
}
