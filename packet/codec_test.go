package packet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t *testing.T, r io.Reader, max int) (packets []string, tooLarge int) {
	t.Helper()
	d := NewDecoder(r, max)
	for {
		p, err := d.Next()
		switch {
		case err == nil:
			packets = append(packets, string(p))
		case errors.Is(err, ErrTooLarge):
			tooLarge++
		case err == io.EOF:
			return packets, tooLarge
		default:
			t.Fatalf("Next() error = %v", err)
		}
	}
}

func TestDecoderSplitsAndMerges(t *testing.T) {
	stream := `{"a":1}¶{"b":"ж"}¶{"c":[1,2]}¶`
	want := []string{`{"a":1}`, `{"b":"ж"}`, `{"c":[1,2]}`}
	for name, r := range map[string]io.Reader{
		"one read":      strings.NewReader(stream),
		"byte by byte":  iotest.OneByteReader(strings.NewReader(stream)),
		"half reads":    iotest.HalfReader(strings.NewReader(stream)),
		"data with err": iotest.DataErrReader(strings.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			got, tl := readAll(t, r, 0)
			if tl != 0 || strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("packets = %q (too large %d); want %q", got, tl, want)
			}
		})
	}
}

func TestDecoderSkipsOversizePackets(t *testing.T) {
	big := `{"x":"` + strings.Repeat("a", 5000) + `"}`
	stream := `{"a":1}¶` + big + `¶{"b":2}¶` + big + big + `¶{"c":3}¶`
	for _, r := range []io.Reader{strings.NewReader(stream), iotest.OneByteReader(strings.NewReader(stream))} {
		got, tl := readAll(t, r, 1000)
		if want := []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}; strings.Join(got, "|") != strings.Join(want, "|") || tl != 2 {
			t.Fatalf("packets = %q, too large = %d; want %q and 2", got, tl, want)
		}
	}
}

func TestDecoderTruncatedStream(t *testing.T) {
	d := NewDecoder(strings.NewReader(`{"a":1}¶{"b":`), 0)
	if _, err := d.Next(); err != nil {
		t.Fatalf("first Next() = %v", err)
	}
	if _, err := d.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("second Next() = %v; want io.ErrUnexpectedEOF", err)
	}
}

func TestSeparatorInsideDataRoundTrips(t *testing.T) {
	text := "price ¶ 100 ¶¶ end¶"
	framed, err := Marshal(map[string]string{"uri": "/goods", "name": text})
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(framed, sep); n != 1 {
		t.Fatalf("framed packet holds %d separators; want exactly the final one", n)
	}
	got, _ := readAll(t, bytes.NewReader(framed), 0)
	var m map[string]string
	if len(got) != 1 || json.Unmarshal([]byte(got[0]), &m) != nil || m["name"] != text {
		t.Fatalf("decoded %q; want name %q", got, text)
	}
}

func TestDecodeKeyFromParams(t *testing.T) {
	m, err := Decode([]byte(`{"uri":"/goods","method":"GET","params":{"key":8}}`))
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := m.KeyUint(); !ok || k != 8 || !m.IsRequest() {
		t.Fatalf("key = %d, %v, request = %v; want 8, true, true", k, ok, m.IsRequest())
	}
	if _, err := Decode([]byte(`{"uri":`)); err == nil {
		t.Fatal("Decode(malformed) = nil error")
	}
}

func TestAppendRequestKeyWins(t *testing.T) {
	b := AppendRequest(nil, "/goods", "POST", 42, json.RawMessage(`{"name":"a¶b","key":"spoof"}`))
	if !bytes.HasSuffix(b, sep) || bytes.Count(b, sep) != 1 {
		t.Fatalf("bad framing: %q", b)
	}
	m, err := Decode(b[:len(b)-len(sep)])
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Name string `json:"name"`
		Key  uint64 `json:"key"`
	}
	if err := json.Unmarshal(m.Params, &p); err != nil || p.Key != 42 || p.Name != "a¶b" {
		t.Fatalf("params = %s (%v); want key 42 and name a¶b", m.Params, err)
	}
	for _, params := range []string{"", "{}", " { } "} {
		b := AppendRequest(nil, "/x", "GET", 1, json.RawMessage(params))
		if _, err := Decode(b[:len(b)-len(sep)]); err != nil {
			t.Fatalf("AppendRequest with params %q gave invalid JSON %q", params, b)
		}
	}
}

func TestAppendResponse(t *testing.T) {
	b := AppendResponse(nil, json.RawMessage(`7`), 0, "success", []byte(`{"results":[{"name":"¶"}]}`))
	m, err := Decode(b[:len(b)-len(sep)])
	if err != nil {
		t.Fatalf("Decode(%q) = %v", b, err)
	}
	if k, _ := m.KeyUint(); k != 7 || m.ErrorCode == nil || *m.ErrorCode != 0 || m.IsRequest() {
		t.Fatalf("decoded %+v; want key 7, errorcode 0, a response", m)
	}
	if !bytes.Contains(m.Raw, []byte(`\u00b6`)) {
		t.Fatalf("raw response %q should carry ¶ escaped", m.Raw)
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add([]byte(`{"uri":"/goods","method":"GET","params":{"key":8}}¶`), 64)
	f.Add([]byte(`{"key":1,"errorcode":0}¶{"a":¶¶{`), 16)
	f.Add([]byte("\xc2\xc2\xb6\xb6"), 1)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max < 1 || max > 1<<16 {
			max = 64
		}
		d := NewDecoder(iotest.HalfReader(bytes.NewReader(data)), max)
		for i := 0; ; i++ {
			if i > len(data)+1 {
				t.Fatal("decoder does not make progress")
			}
			p, err := d.Next()
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if errors.Is(err, ErrTooLarge) {
				continue
			}
			if err != nil {
				t.Fatalf("Next() = %v", err)
			}
			if len(p) > max || bytes.Contains(p, sep) {
				t.Fatalf("packet %q breaks the limit %d or holds a separator", p, max)
			}
			Decode(p) // must not panic
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("plain", 5)
	f.Add("¶", 0)
	f.Add("a¶b\u00b6\"\\\x00", 99)
	f.Fuzz(func(t *testing.T, s string, key int) {
		if key < 0 {
			key = -key
		}
		params, _ := json.Marshal(map[string]string{"s": s})
		b := AppendRequest(nil, "/x", "POST", uint64(key), params)
		d := NewDecoder(bytes.NewReader(b), len(b))
		p, err := d.Next()
		if err != nil {
			t.Fatalf("Next() = %v for %q", err, b)
		}
		m, err := Decode(p)
		if err != nil {
			t.Fatalf("Decode = %v", err)
		}
		var got struct{ S string }
		json.Unmarshal(m.Params, &got)
		var plain struct{ S string }
		json.Unmarshal(params, &plain) // what JSON alone does to invalid UTF-8
		want := plain.S
		if got.S != want {
			t.Fatalf("round trip of %q gave %q", want, got.S)
		}
		if k, _ := m.KeyUint(); k != uint64(key) {
			t.Fatalf("key = %d; want %d", k, key)
		}
	})
}

func BenchmarkAppendRequest(b *testing.B) {
	params := json.RawMessage(`{"userid":"12","goodsid":"7","name":"a good with a long name"}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = AppendRequest(buf[:0], "/purchases", "POST", uint64(i), params)
	}
}

func BenchmarkDecode(b *testing.B) {
	var stream []byte
	for i := range 1000 {
		stream = AppendResponse(stream, json.RawMessage(`1`), 0, "success", []byte(`{"results":[{"id":`+string(rune('0'+i%10))+`,"name":"goods1","category":"c","price":100,"description":"d"}]}`))
	}
	b.SetBytes(int64(len(stream))) // one op decodes 1000 packets
	b.ReportAllocs()
	for b.Loop() {
		d := NewDecoder(bytes.NewReader(stream), 0)
		for {
			p, err := d.Next()
			if err != nil {
				break
			}
			if _, err := Decode(p); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestKeyOf(t *testing.T) {
	for _, tc := range []struct {
		head    string
		key     string
		request bool
		ok      bool
	}{
		{`{"key":8,"errorcode":0,"results":[{"id":1,"name":"`, "8", false, true},
		{`{"uri":"/goods","method":"POST","key":12,"params":{"name":"` + strings.Repeat("x", 600), "12", true, true},
		{`{"uri":"/goods","method":"GET","params":{"id":"1","key":9}}`, "9", true, true},
		{`{"uri":"/goods","method":"GET","params":{"id":"1","description":"` + strings.Repeat("y", 600), "", true, false},
		{`{"key":"31","errorcode":0}`, `"31"`, false, true},
		{`{"results":[{"key":5}],"key":6}`, "6", false, true},
		{`{"uri":"/x","method":"GET","params":[{"key":1}],"key":2}`, "2", true, true},
		{`not json`, "", false, false},
		{`[1,2]`, "", false, false},
	} {
		head := tc.head
		if len(head) > headSize {
			head = head[:headSize]
		}
		key, request, ok := KeyOf([]byte(head))
		if string(key) != tc.key || request != tc.request || ok != tc.ok {
			t.Errorf("KeyOf(%.60q…) = %s, %v, %v; want %s, %v, %v", tc.head, key, request, ok, tc.key, tc.request, tc.ok)
		}
	}
}

// What a request's signature covers is the same on both sides, whatever
// the parameters: no key, a caller's own key, a ¶ (escaped on the wire),
// spaces, none at all.
func TestSignedParamsMatchReceived(t *testing.T) {
	for _, params := range []string{
		``, `{}`, ` { } `, `{"goodsid":7}`, `{"key":99,"goodsid":7}`, `{"text":"a¶b","n":[1,{"key":2}]}`,
		`{ "a" : 1 , "b":"key" }`, `[1,2]`, `{"keys":"x"}`,
	} {
		wire := AppendRequestAuth(nil, "/purchases", "POST", 42, []byte(params), []byte(`{"member":1}`))
		m, err := Decode(wire[:len(wire)-len(sep)])
		if err != nil {
			t.Fatalf("params %q: %v", params, err)
		}
		if got, want := ReceivedParams(m.Params), SignedParams([]byte(params)); !bytes.Equal(got, want) {
			t.Errorf("params %q: received %q, signed %q", params, got, want)
		}
	}
	if ReceivedParams([]byte(`{"goodsid":7}`)) != nil {
		t.Error("ReceivedParams of params without a trailing key is not nil")
	}
}

// decodeSlow is Decode with json.Unmarshal alone, as it was before
// decodeFast.
func decodeSlow(p []byte) (*Message, error) {
	m := &Message{Raw: bytes.Clone(p)}
	w := struct {
		*message
		ErrorMessage json.RawMessage `json:"errormessage"`
	}{message: (*message)(m)}
	if err := json.Unmarshal(m.Raw, &w); err != nil {
		return nil, err
	}
	m.ErrorMessage, m.ErrorObject = errorText(w.ErrorMessage)
	return m, nil
}

// decodeFast decodes what it accepts exactly as json.Unmarshal does, and
// accepts the packets microshop peers write.
func FuzzDecodeFast(f *testing.F) {
	for _, s := range []string{
		`{"uri":"/goods","method":"GET","params":{"key":8}}`,
		`{"key":3,"errorcode":0,"errormessage":"success","results":[{"id":1,"name":"a \"b\" ¶","price":1}]}`,
		`{"key":"x","errorcode":null,"errormessage":{"code":"ER_DUP_ENTRY","sql":"INSERT"}}`,
		` { "uri" : "/a" , "URI":"/b", "key":1 } `,
		`{"uri":"/\u0067oods","key":[1,{"a":"}"}],"auth":{"seq":1}}`,
		`{"errorcode":1.5}`, `{"errorcode":"1"}`, `{"uri":1}`, `{"key":1,"key":2}`, `{"k\u0065y":1}`,
		`{"method":"GÉT"}`, `null`, `[1]`, `{"a":tru}`, `{"errorcode":99999999999999999999}`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Add(AppendResponse(nil, json.RawMessage("7"), 0, "success", []byte(`{"next":"3","results":[{"id":1}]}`)))
	f.Add(AppendRequest(nil, "/goods", "GET", 9, []byte(`{"id":"1"}`)))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, errMsg, ok := decodeFast(bytes.Clone(p))
		want, werr := decodeSlow(p)
		if !ok {
			return
		}
		if werr != nil {
			t.Fatalf("decodeFast accepted %q, which json.Unmarshal refuses: %v", p, werr)
		}
		m.ErrorMessage, m.ErrorObject = errorText(errMsg)
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("decodeFast(%q) =\n%#v\nwant\n%#v", p, m, want)
		}
	})
}

// The packets microshop writes take the fast path.
func TestDecodeFastTakesOwnPackets(t *testing.T) {
	for _, p := range [][]byte{
		AppendResponse(nil, json.RawMessage("7"), 0, "success", []byte(`{"next":"3","results":[{"id":1,"description":"\u003c¶\n"}]}`)),
		AppendResponse(nil, json.RawMessage("8"), 404, "good 3 not found", nil),
		AppendRequest(nil, "/goods", "GET", 9, []byte(`{"id":"1","key":9}`)),
	} {
		p = bytes.TrimSuffix(p, []byte(Separator))
		if _, _, ok := decodeFast(bytes.Clone(p)); !ok {
			t.Errorf("decodeFast refused %s", p)
		}
	}
}

// appendString encodes byte for byte as json.Marshal.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"success", "", "a\"b", "<&>", "é", "\x00", "\xff", "\u2028", "¶"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("appendString(%q) = %s; want x%s", s, got, want)
		}
	})
}

// BenchmarkDecodeList decodes the answer to GET /goods: a page of 20 goods
// (3.7 KB), the packet the gate reads most bytes of.
func BenchmarkDecodeList(b *testing.B) {
	var goods []string
	for i := range 20 {
		goods = append(goods, fmt.Sprintf(`{"id":%d,"name":"good %d","category":"bench","price":%d,"description":"Good number %d of the bench: a plain description, long enough to look like one, with \u003c\u0026\u003e in it."}`, i+1, i+1, (i+1)*100, i+1))
	}
	p := AppendResponse(nil, json.RawMessage(`1405`), 0, "success", []byte(`{"next":"20","results":[`+strings.Join(goods, ",")+`]}`))
	p = p[:len(p)-len(sep)]
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(p); err != nil {
			b.Fatal(err)
		}
	}
}
