package packet

import "encoding/json"

// validJSON reports what json.Valid(b) reports, several times faster: a
// packet's answer is mostly strings, which it skips a byte at a time
// through a table rather than through encoding/json's per-byte state
// functions. FuzzValidJSON holds it to json.Valid.
func validJSON(b []byte) bool { return walkJSON(b, nil) }

// walkJSON is validJSON that, when member is not nil and b is an object,
// also hands member each of its members, in order, as it validates them:
// the name as it is written (quotes and escapes included) and the value
// (a slice of b without the space around it). It returns false as soon as
// member does, and, with a member, for values nested deeper than it
// follows itself (which json.Valid then checks). So b is walked once, not
// validated and then scanned again.
func walkJSON(b []byte, member func(name, value []byte) bool) bool {
	var stack [64]byte // the open containers, '{' or '['; deeper: json.Valid
	depth := 0
	var kStart, vStart int // the top-level member being read
	i := skipSpace(b, 0)
	for {
		// One value at b[i]; an opened container continues with its first
		// member's value.
		if i >= len(b) {
			return false
		}
		ok := true
		switch c := b[i]; {
		case c == '{' || c == '[':
			if depth == len(stack) {
				return member == nil && json.Valid(b)
			}
			stack[depth] = c
			depth++
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == c+2 { // '}' is '{'+2, ']' is '['+2
				depth--
				i++
				break
			}
			if c == '{' {
				k := i
				if i, ok = validKey(b, i); !ok {
					return false
				}
				if depth == 1 {
					kStart, vStart = k, i
				}
			}
			continue
		case c == '"':
			i, ok = validString(b, i)
		case c == 't':
			i, ok = validLiteral(b, i, "true")
		case c == 'f':
			i, ok = validLiteral(b, i, "false")
		case c == 'n':
			i, ok = validLiteral(b, i, "null")
		default:
			i, ok = validNumber(b, i)
		}
		if !ok {
			return false
		}
		// After a value: close containers, or go on to the next member.
		for {
			if depth == 1 && member != nil && stack[0] == '{' {
				if !member(b[kStart:scanString(b, kStart)], b[vStart:i]) {
					return false
				}
			}
			i = skipSpace(b, i)
			if depth == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			c, top := b[i], stack[depth-1]
			if c == ',' {
				i = skipSpace(b, i+1)
				if top == '{' {
					k := i
					if i, ok = validKey(b, i); !ok {
						return false
					}
					if depth == 1 {
						kStart, vStart = k, i
					}
				}
				break
			}
			if c != top+2 {
				return false
			}
			depth--
			i++
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// validKey reads `"name" :` and the space after it.
func validKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := validString(b, i)
	if !ok {
		return i, false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipSpace(b, i+1), true
}

// plainByte is false for the bytes a JSON string cannot hold as they are:
// controls, '"' and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// validString reads the string at b[i] (a '"').
func validString(b []byte, i int) (int, bool) {
	i++
	for {
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case '"':
			return i + 1, true
		case '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return i, false
				}
				for _, h := range b[i+2 : i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return i, false
					}
				}
				i += 6
			default:
				return i, false
			}
		default:
			return i, false // a control byte
		}
	}
}

func validLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// validNumber reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func validNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return i, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}
