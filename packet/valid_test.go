package packet

import (
	"encoding/json"
	"strings"
	"testing"
)

var validSeeds = []string{
	`{}`, `[]`, ` {"a" : [1, -2.5e+3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9"] } `, `{"a":{}}`, `[[],[{}]]`,
	`{"key":1,"errorcode":0,"errormessage":"success","goods":[{"id":1,"name":"é<&>"}]}`,
	``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `01`, `-`, `-0`, `1.`, `1.e1`, `1e`, `1e+`, `.5`,
	`"\x"`, `"\u12"`, `"\u12g4"`, "\"\x01\"", "\"\xff\"", `tru`, `nul`, `{"a":1}}`, `{"a":1} {}`, `[}`, `{]`, `{1:2}`,
	strings.Repeat("[", 70) + strings.Repeat("]", 70), strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
}

// validJSON answers as json.Valid.
func FuzzValidJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v; json.Valid says %v", b, got, want)
		}
	})
}

func TestValidJSONSeeds(t *testing.T) {
	for _, s := range validSeeds {
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("validJSON(%.40q) = %v; json.Valid says %v", s, got, want)
		}
	}
}

func BenchmarkValidJSON(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"key":7,"errorcode":0,"errormessage":"success","goods":[`)
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"id":12,"name":"good 12","category":"bench","price":1200,"description":"Good number 12 of the bench: a plain description, long enough to look like one, with \u003c\u0026\u003e in it."}`)
	}
	sb.WriteString(`],"next":"0"}`)
	p := []byte(sb.String())
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			json.Valid(p)
		}
	})
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			validJSON(p)
		}
	})
}
