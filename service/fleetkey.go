package service

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// FleetKey is a secret shared by the gates and services of one fleet. With
// it, a gate signs the auth object of every request (HMAC-SHA256 over the
// identity, the route and a short expiry), and a service refuses an auth
// object it cannot verify and treats a request without one as anonymous
// rather than with the book's open behaviour. So nobody who merely reaches a
// service's port can act as a member or as the admin. An empty key turns
// signing off (the book's trust-the-network behaviour).
type FleetKey []byte

// signedFor is how long a signed auth object stays valid: a captured one
// cannot be replayed for long.
const signedFor = 2 * time.Minute

// sign returns a copy of a with Exp and Sig set for method and uri.
func (k FleetKey) sign(a *Auth, method, uri string, now time.Time) *Auth {
	s := *a
	s.Exp = now.Add(signedFor).Unix()
	s.Sig = k.mac(&s, method, uri)
	return &s
}

// verify reports whether a carries a valid, unexpired signature for method
// and uri.
func (k FleetKey) verify(a *Auth, method, uri string, now time.Time) bool {
	if a.Sig == "" || now.Unix() > a.Exp {
		return false
	}
	want := k.mac(a, method, uri)
	return hmac.Equal([]byte(want), []byte(a.Sig))
}

func (k FleetKey) mac(a *Auth, method, uri string) string {
	h := hmac.New(sha256.New, k)
	b := make([]byte, 0, 128)
	b = strconv.AppendInt(b, a.Member, 10)
	b = append(b, '|')
	b = strconv.AppendBool(b, a.Admin)
	b = append(b, '|')
	b = append(b, a.Session...)
	b = append(b, '|')
	b = append(b, a.Addr...)
	b = append(b, '|')
	b = strconv.AppendInt(b, a.Exp, 10)
	b = append(b, '|')
	b = append(b, method...)
	b = append(b, '|')
	b = append(b, uri...)
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
