package service

import (
	"encoding/json"
	"strconv"
)

// The auth object travels with every request of a keyed fleet, so it is
// encoded and decoded without reflection when it has the shape a microshop
// gate gives it: the fields in order, no spaces, plain ASCII strings.
// Anything else takes encoding/json, which stays the authority: the
// differential fuzz tests hold both paths to it.

// appendAuth appends a's JSON encoding, byte for byte what json.Marshal
// gives.
func appendAuth(b []byte, a *Auth) []byte {
	b = appendAuthFields(b, a)
	b = appendAuthString(b, `,"sig":`, a.Sig)
	return append(b, '}')
}

// appendAuthFields appends the start of a's JSON encoding: the opening
// brace and every field but sig.
func appendAuthFields(b []byte, a *Auth) []byte {
	if n := authJSONMax + len(a.Session) + len(a.Addr) + len(a.Sig); cap(b)-len(b) < n {
		b = append(make([]byte, 0, len(b)+n), b...)
	}
	b = append(b, `{"member":`...)
	b = strconv.AppendInt(b, a.Member, 10)
	if a.Admin {
		b = append(b, `,"admin":true`...)
	}
	b = appendAuthString(b, `,"session":`, a.Session)
	b = appendAuthString(b, `,"addr":`, a.Addr)
	if a.Exp != 0 {
		b = append(b, `,"exp":`...)
		b = strconv.AppendInt(b, a.Exp, 10)
	}
	if a.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, a.Seq, 10)
	}
	return b
}

// authJSONMax bounds the encoding of an auth object besides its strings'
// contents (a signature's included): the keys, quotes and numbers.
const authJSONMax = 192

// appendAuthString appends an omitempty string field.
func appendAuthString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	if !plainASCII(s) {
		q, _ := json.Marshal(s) // a string always encodes
		return append(b, q...)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainASCII reports whether s encodes in JSON as itself between quotes:
// printable ASCII without '"', '\\' and the characters json.Marshal
// escapes for HTML ('<', '>', '&').
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// decodeAuthFast reads an auth object of the gate's shape; ok is false for
// anything else (other spacing, keys, escapes, numbers out of range),
// which the caller then gives to json.Unmarshal.
func decodeAuthFast(raw []byte) (a Auth, ok bool) {
	if len(raw) < 2 || raw[0] != '{' || raw[len(raw)-1] != '}' {
		return a, false
	}
	p := raw[1 : len(raw)-1]
	for len(p) > 0 {
		// "key":
		if p[0] != '"' {
			return a, false
		}
		end := 1
		for end < len(p) && p[end] >= 'a' && p[end] <= 'z' {
			end++
		}
		if end+1 >= len(p) || p[end] != '"' || p[end+1] != ':' {
			return a, false
		}
		key := p[1:end]
		p = p[end+2:]
		var n int
		switch string(key) { // compared, not allocated
		case "member":
			a.Member, n, ok = scanInt(p)
		case "exp":
			a.Exp, n, ok = scanInt(p)
		case "seq":
			a.Seq, n, ok = scanUint(p)
		case "admin":
			a.Admin, n, ok = scanBool(p)
		case "session":
			a.Session, n, ok = scanString(p)
		case "addr":
			a.Addr, n, ok = scanString(p)
		case "sig":
			a.Sig, n, ok = scanString(p)
		default:
			return a, false
		}
		if !ok {
			return a, false
		}
		p = p[n:]
		if len(p) > 0 {
			if p[0] != ',' || len(p) == 1 {
				return a, false
			}
			p = p[1:]
		}
	}
	return a, true
}

// scanUint reads a JSON number that is a non-negative integer without a
// leading zero, up to 18 digits (so it cannot overflow).
func scanUint(p []byte) (v uint64, n int, ok bool) {
	for n < len(p) && p[n] >= '0' && p[n] <= '9' {
		v = v*10 + uint64(p[n]-'0')
		n++
	}
	if n == 0 || n > 18 || (p[0] == '0' && n > 1) {
		return 0, 0, false
	}
	return v, n, true
}

// scanInt reads an integer as scanUint does, with an optional minus sign.
func scanInt(p []byte) (int64, int, bool) {
	neg := len(p) > 0 && p[0] == '-'
	if neg {
		p = p[1:]
	}
	u, n, ok := scanUint(p)
	if !ok {
		return 0, 0, false
	}
	if neg {
		return -int64(u), n + 1, true
	}
	return int64(u), n, true
}

func scanBool(p []byte) (bool, int, bool) {
	switch {
	case len(p) >= 4 && string(p[:4]) == "true":
		return true, 4, true
	case len(p) >= 5 && string(p[:5]) == "false":
		return false, 5, true
	}
	return false, 0, false
}

// scanString reads a JSON string of printable ASCII without escapes.
func scanString(p []byte) (string, int, bool) {
	if len(p) == 0 || p[0] != '"' {
		return "", 0, false
	}
	for i := 1; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return string(p[1:i]), i + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", 0, false
		}
	}
	return "", 0, false
}
