package packet

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestAppendRequestAuth(t *testing.T) {
	auth := []byte(`{"member":7,"admin":false,"session":"ab¶"}`)
	b := AppendRequestAuth(nil, "/purchases", "POST", 3, []byte(`{"goodsid":1,"auth":"forged"}`), auth)
	if bytes.Count(b, sep) != 1 {
		t.Fatalf("AppendRequestAuth = %s; want exactly one separator, at the end", b)
	}
	m, err := Decode(b[:len(b)-len(sep)])
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Member  int64  `json:"member"`
		Session string `json:"session"`
	}
	if err := json.Unmarshal(m.Auth, &got); err != nil || got.Member != 7 || got.Session != "ab¶" {
		t.Errorf("Auth = %s (%v); want member 7, session ab¶", m.Auth, err)
	}
	var params map[string]any
	json.Unmarshal(m.Params, &params)
	if params["auth"] != "forged" {
		t.Errorf("params = %v; a parameter named auth stays a parameter", params)
	}

	for _, a := range [][]byte{nil, []byte(""), []byte("null")} {
		b := AppendRequestAuth(nil, "/goods", "GET", 1, nil, a)
		if want := AppendRequest(nil, "/goods", "GET", 1, nil); !bytes.Equal(b, want) {
			t.Errorf("AppendRequestAuth(auth %q) = %s; want %s", a, b, want)
		}
		m, _ := Decode(b[:len(b)-len(sep)])
		if m.Auth != nil {
			t.Errorf("Auth = %s; want none", m.Auth)
		}
	}
}
