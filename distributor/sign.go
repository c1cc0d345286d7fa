package distributor

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// signedFor is how long a signed registration is accepted after it was
// made (it is sent on every connection, so a fresh one each time).
const signedFor = 2 * time.Minute

// sign sets r's Exp and Sig for key: an HMAC-SHA256 over everything the
// registration claims, so that only a process holding the fleet's key can
// put a name on the list.
func sign(key []byte, r *Registration, now time.Time) {
	r.Exp = now.Add(signedFor).Unix()
	r.Sig = registrationMAC(key, r)
}

// verifySig reports whether r carries a valid, unexpired signature by key.
func verifySig(key []byte, r *Registration, now time.Time) bool {
	if r.Sig == "" || now.Unix() > r.Exp {
		return false
	}
	return hmac.Equal([]byte(registrationMAC(key, r)), []byte(r.Sig))
}

func registrationMAC(key []byte, r *Registration) string {
	var b strings.Builder
	b.WriteString("registration|")
	b.WriteString(r.Name)
	b.WriteByte('|')
	b.WriteString(r.Host)
	b.WriteByte('|')
	b.WriteString(strconv.Itoa(r.Port))
	b.WriteByte('|')
	b.WriteString(strconv.FormatInt(r.Exp, 10))
	if r.Nonce != "" {
		b.WriteString("|nonce=")
		b.WriteString(r.Nonce)
	}
	for _, u := range r.URLs {
		b.WriteByte('|')
		b.WriteString(u)
	}
	h := hmac.New(sha256.New, key)
	h.Write([]byte(b.String()))
	return hex.EncodeToString(h.Sum(nil))
}
