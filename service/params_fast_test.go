package service

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// decodeParamsSlow is DecodeParams with json.Decoder alone.
func decodeParamsSlow(raw []byte) (Params, error) {
	p := Params{}
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	return p, nil
}

// What flatParams accepts it decodes exactly as json.Decoder does, and it
// accepts the parameters a microshop gate sends.
func FuzzFlatParams(f *testing.F) {
	for _, s := range []string{
		`{"id":"7","key":12}`, `{"key":3}`, ` { "a" : -1.5e3 , "b":true,"c":false,"d":null, "a":"x"} `,
		`{"a":"\u00e9"}`, `{"é":1}`, `{"a\"":1}`, `{"a":[1]}`, `{"a":{"b":1}}`, `{"a":1} x`, `[1]`, `"s"`,
		`{"limit":"20","after":"0","key":99}`, `{}`, `{"a":01}`, `{"a":tru}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p := Params{}
		if !flatParams(raw, p) {
			return
		}
		want, err := decodeParamsSlow(raw)
		if err != nil {
			t.Fatalf("flatParams accepted %q, which json.Decoder refuses: %v", raw, err)
		}
		if !reflect.DeepEqual(p, want) {
			t.Fatalf("flatParams(%q) = %#v; want %#v", raw, p, want)
		}
	})
}

func TestFlatParamsTakesGateParams(t *testing.T) {
	for _, s := range []string{`{"id":"7","key":12}`, `{"key":3}`, `{"limit":"20","after":"0","key":99}`} {
		if !flatParams([]byte(s), Params{}) {
			t.Errorf("flatParams refused %s", s)
		}
	}
}
