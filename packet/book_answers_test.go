package packet

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// bookDupEntry is the answer of the book's members to a taken username: the
// mysql driver's error object in errormessage, SQL text and all.
const bookDupEntry = `{"key":3,"errorcode":1,"errormessage":{"code":"ER_DUP_ENTRY","errno":1062,` +
	`"sqlMessage":"Duplicate entry 'u1' for key 'username_UNIQUE'","sqlState":"23000","index":0,` +
	`"sql":"insert into members(username, password) values('u1', password('secret'));"}}`

func TestDecodeErrorMessageOfAnyJSON(t *testing.T) {
	for _, tc := range []struct {
		packet       string
		text, object string
		status       int
		msg          string // a substring of the client's message
	}{
		{bookDupEntry, "", "ER_DUP_ENTRY", http.StatusConflict, "ER_DUP_ENTRY"},
		{`{"key":1,"errorcode":1,"errormessage":{"code":"ER_TRUNCATED_WRONG_VALUE_FOR_FIELD","sql":"insert …"}}`, "", "ER_TRUNCATED_WRONG_VALUE_FOR_FIELD", http.StatusBadRequest, "refused"},
		{`{"key":1,"errorcode":1,"errormessage":{"code":"ECONNREFUSED","errno":"ECONNREFUSED","fatal":true}}`, "", "ECONNREFUSED", http.StatusBadGateway, "ECONNREFUSED"},
		{`{"key":1,"errorcode":1,"errormessage":{"sql":"select secret from t"}}`, "", "object", http.StatusBadGateway, "did not describe"},
		{`{"key":1,"errorcode":1,"errormessage":{"code":"drop table x; --"}}`, "", "object", http.StatusBadGateway, "did not describe"},
		{`{"key":1,"errorcode":1,"errormessage":[1,2]}`, "", "value", http.StatusBadGateway, "did not describe"},
		{`{"key":1,"errorcode":1,"errormessage":"no data"}`, "no data", "", http.StatusNotFound, "no data"},
		{`{"key":1,"errorcode":1,"errormessage":"INVALID PASSWORD"}`, "INVALID PASSWORD", "", http.StatusUnauthorized, "INVALID PASSWORD"},
		{`{"key":1,"errorcode":1,"errormessage":"Invalid Parameters"}`, "Invalid Parameters", "", http.StatusBadRequest, "Invalid"},
		{`{"key":1,"errorcode":409,"errormessage":"username taken"}`, "username taken", "", http.StatusConflict, "taken"},
		{`{"key":1,"errorcode":0,"errormessage":"success","results":[]}`, "success", "", http.StatusOK, "success"},
		{`{"key":1,"errorcode":0,"errormessage":null}`, "", "", http.StatusOK, ""},
		{`{"key":1}`, "", "", http.StatusOK, ""},
	} {
		m, err := Decode([]byte(tc.packet))
		if err != nil {
			t.Errorf("Decode(%s): %v", tc.packet, err)
			continue
		}
		if m.ErrorMessage != tc.text || m.ErrorObject != tc.object {
			t.Errorf("Decode(%s): ErrorMessage %q, ErrorObject %q; want %q, %q", tc.packet, m.ErrorMessage, m.ErrorObject, tc.text, tc.object)
		}
		status, msg := m.Status()
		if status != tc.status || !strings.Contains(msg, tc.msg) {
			t.Errorf("Status of %s = %d %q; want %d and a message with %q", tc.packet, status, msg, tc.status, tc.msg)
		}
		for _, leak := range []string{"insert", "select", "sqlMessage", "Duplicate entry", "drop table"} {
			if strings.Contains(msg, leak) {
				t.Errorf("Status of %s: message %q shows %q", tc.packet, msg, leak)
			}
		}
	}
}

// An answer of the book's, whatever it carries (an object errormessage, a
// top-level uri), is the answer of the call in flight with its key, at once.
func TestBookAnswersReachTheirCall(t *testing.T) {
	a, b := net.Pipe()
	client := NewConn(a, Options{})
	t.Cleanup(func() { client.Abort(); b.Close() })
	answers := []string{
		bookDupEntry,
		`{"uri":"/members","method":"POST","key":%s,"errorcode":1,"errormessage":"Invalid Parameters"}`,
	}
	go func() {
		r := bufio.NewReader(b)
		for _, a := range answers {
			req, err := r.ReadString('\xb6')
			if err != nil {
				return
			}
			m, err := Decode([]byte(strings.TrimSuffix(req, Separator)))
			if err != nil {
				return
			}
			a = strings.Replace(a, `"key":3`, `"key":`+string(m.Key), 1)
			a = strings.Replace(a, `%s`, string(m.Key), 1)
			b.Write([]byte(a + Separator))
		}
	}()
	for i, want := range []struct {
		status int
		object string
	}{{http.StatusConflict, "ER_DUP_ENTRY"}, {http.StatusBadRequest, ""}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		m, err := client.Call(ctx, "POST", "/members", []byte(`{"username":"u1","password":"p"}`))
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v after %v; want the book's answer at once", i, err, time.Since(start))
		}
		if status, _ := m.Status(); status != want.status || m.ErrorObject != want.object {
			t.Errorf("call %d: status %d, object %q; want %d, %q", i, status, m.ErrorObject, want.status, want.object)
		}
	}
}
