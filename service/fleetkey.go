package service

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// FleetKey is a secret shared by the gates and services of one fleet. With
// it, a gate signs the auth object of every request, and a service refuses
// an auth object it cannot verify and treats a request without one as
// anonymous rather than with the book's open behaviour. So nobody who
// merely reaches a service's port can act as a member or as the admin. An
// empty key turns signing off (the book's trust-the-network behaviour).
//
// The signature (HMAC-SHA256) covers the identity, the route, a digest of
// the request's parameters and a short expiry, and, towards a service that
// heartbeats (a microshop one), the connection's nonce — which the service
// gives each connection that asks (see connNonce) — and a sequence number
// it accepts once. So a captured auth object is worth nothing elsewhere: not
// with other parameters, not on another connection, not twice.
type FleetKey []byte

// signedFor is how long a signed auth object stays valid.
const signedFor = 2 * time.Minute

// binding is what ties a signature to one request on one connection: the
// parameters as sent (packet.SignedParams), the connection's nonce and the
// request's sequence number on it. A zero binding (no nonce) ties it to the
// route and parameters only, for a service that does not heartbeat.
type binding struct {
	params []byte
	nonce  string
	seq    uint64
}

// sign returns a copy of a with Exp, Seq and Sig set for the request.
func (k FleetKey) sign(a *Auth, method, uri string, b binding, now time.Time) *Auth {
	s, sig := k.signed(a, method, uri, b, now)
	s.Sig = string(sig[:])
	return &s
}

// appendSigned appends the JSON of a signed for the request (what
// appendAuth writes of sign's copy), without the signature's string: the
// gate signs every request it forwards.
func (k FleetKey) appendSigned(dst []byte, a *Auth, method, uri string, b binding, now time.Time) []byte {
	s, sig := k.signed(a, method, uri, b, now)
	dst = appendAuthFields(dst, &s)
	dst = append(dst, `,"sig":"`...)
	dst = append(dst, sig[:]...)
	return append(dst, '"', '}')
}

// signed returns a copy of a with Exp and Seq set for the request (Sig
// empty), and its signature.
func (k FleetKey) signed(a *Auth, method, uri string, b binding, now time.Time) (s Auth, sig [macHexLen]byte) {
	s = *a
	s.Exp = now.Add(signedFor).Unix()
	s.Seq = b.seq
	s.Sig = ""
	k.mac(&sig, &s, method, uri, b)
	return s, sig
}

// verify reports whether a carries a valid, unexpired signature for the
// request.
func (k FleetKey) verify(a *Auth, method, uri string, b binding, now time.Time) bool {
	if len(a.Sig) != macHexLen || now.Unix() > a.Exp {
		return false
	}
	b.seq = a.Seq
	var want [macHexLen]byte
	k.mac(&want, a, method, uri, b)
	return hmac.Equal(want[:], []byte(a.Sig))
}

// macHexLen is the length of a signature: HMAC-SHA256 in hex.
const macHexLen = 2 * sha256.Size

// mac writes into sig the signature, in hex, of a (its Sig aside) for the
// request.
func (k FleetKey) mac(sig *[macHexLen]byte, a *Auth, method, uri string, bd binding) {
	pool := k.macs()
	m := pool.Get().(*macState)
	defer pool.Put(m)
	b := m.buf[:0]
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
	b = append(b, '|')
	d := sha256.Sum256(bd.params)
	b = hex.AppendEncode(b, d[:])
	if bd.nonce != "" {
		b = append(b, '|')
		b = append(b, bd.nonce...)
		b = append(b, '|')
		b = strconv.AppendUint(b, bd.seq, 10)
	}
	m.buf = b
	m.h.Reset()
	m.h.Write(b)
	m.sum = m.h.Sum(m.sum[:0])
	hex.Encode(sig[:], m.sum)
}

// macState is one HMAC of a key, reused: crypto/hmac keeps the key's
// padded states, so a Reset costs nothing like a New.
type macState struct {
	h        hash.Hash
	buf, sum []byte
}

// macPool is the reusable HMACs of one key.
type macPool struct {
	key  string
	pool sync.Pool
}

// lastMACs holds the pool of the last key used: a process has one fleet
// key, so this is a pointer load and a comparison.
var lastMACs atomic.Pointer[macPool]

// macs returns the pool of reusable HMACs for k.
func (k FleetKey) macs() *sync.Pool {
	if p := lastMACs.Load(); p != nil && p.key == string(k) {
		return &p.pool
	}
	p := &macPool{key: string(k)}
	p.pool.New = func() any {
		return &macState{h: hmac.New(sha256.New, []byte(p.key)), buf: make([]byte, 0, 256), sum: make([]byte, 0, sha256.Size)}
	}
	lastMACs.Store(p)
	return &p.pool
}

// newNonce returns 16 random bytes in hex.
func newNonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// replayWindow accepts each sequence number of a connection once: numbers
// above the highest seen, and those up to windowSize below it that have not
// been seen (requests signed concurrently may arrive a little out of
// order), as IPsec's anti-replay window does.
type replayWindow struct {
	mu   sync.Mutex
	top  uint64                  // the highest number accepted
	seen [windowSize / 64]uint64 // bit i: top-i was accepted
}

const windowSize = 1024

// accept reports whether seq is new, and records it.
func (w *replayWindow) accept(seq uint64) bool {
	if seq == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq > w.top {
		shift := seq - w.top
		w.shift(shift)
		w.top = seq
		w.seen[0] |= 1
		return true
	}
	back := w.top - seq
	if back >= windowSize {
		return false
	}
	word, bit := back/64, back%64
	if w.seen[word]&(1<<bit) != 0 {
		return false
	}
	w.seen[word] |= 1 << bit
	return true
}

// shift moves the window up by n numbers.
func (w *replayWindow) shift(n uint64) {
	if n >= windowSize {
		w.seen = [windowSize / 64]uint64{}
		return
	}
	words, bits := n/64, n%64
	for i := len(w.seen) - 1; i >= 0; i-- {
		var v uint64
		if j := i - int(words); j >= 0 {
			v = w.seen[j] << bits
			if bits > 0 && j-1 >= 0 {
				v |= w.seen[j-1] >> (64 - bits)
			}
		}
		w.seen[i] = v
	}
}
