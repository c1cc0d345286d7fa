package members

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Password hashing parameters: argon2id with the minimum configuration that
// OWASP's Password Storage Cheat Sheet recommends (19 MiB of memory, two
// passes, one lane), a random 16-byte salt and a 32-byte hash. Hashes are
// stored in the PHC string format
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with salt and hash in unpadded standard base64. Verification reads the
// parameters from the stored string, so raising these constants later keeps
// existing passwords valid.
const (
	ArgonMemory  = 19 * 1024 // KiB
	ArgonTime    = 2
	ArgonThreads = 1
	ArgonSaltLen = 16
	ArgonKeyLen  = 32
)

// Limits that keep verification of a stored hash bounded, whatever it says.
const (
	maxMemory  = 1 << 20 // KiB (1 GiB)
	maxTime    = 16
	maxThreads = 16
	maxKeyLen  = 128
)

var b64 = base64.RawStdEncoding

// errBadHash is returned for a stored string that is not an argon2id hash.
var errBadHash = errors.New("members: stored password is not a valid argon2id hash")

// hasher computes argon2id hashes, at most cap(slots) at a time, so that a
// burst of logins uses bounded memory (ArgonMemory each).
type hasher struct {
	slots chan struct{}
	dummy string // hash of a random password, verified for unknown users
}

func newHasher(concurrency int) *hasher {
	if concurrency < 1 {
		concurrency = 1
	}
	h := &hasher{slots: make(chan struct{}, concurrency)}
	pw := make([]byte, 32)
	rand.Read(pw)
	salt := make([]byte, ArgonSaltLen)
	rand.Read(salt)
	h.dummy = encode(salt, argon2.IDKey(pw, salt, ArgonTime, ArgonMemory, ArgonThreads, ArgonKeyLen), ArgonMemory, ArgonTime, ArgonThreads)
	return h
}

// acquire waits for a hashing slot, or for ctx to end.
func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("members: waiting to hash: %w", ctx.Err())
	}
}

func (h *hasher) release() { <-h.slots }

// hash returns the PHC-encoded argon2id hash of password with a new salt.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, ArgonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("members: salt: %w", err)
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	key := argon2.IDKey([]byte(password), salt, ArgonTime, ArgonMemory, ArgonThreads, ArgonKeyLen)
	return encode(salt, key, ArgonMemory, ArgonTime, ArgonThreads), nil
}

// verify reports whether password matches the PHC-encoded hash, comparing
// in constant time. An empty encoded hash verifies against a dummy hash, so
// that an unknown user costs as much time as a known one, and never matches.
func (h *hasher) verify(ctx context.Context, password, encoded string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	return h.compare(password, encoded)
}

// compare is verify for a caller that holds a slot (acquire).
func (h *hasher) compare(password, encoded string) (bool, error) {
	if isBookHash(encoded) {
		return bookHashMatches(password, encoded), nil
	}
	dummy := encoded == ""
	if dummy {
		encoded = h.dummy
	}
	p, err := decode(encoded)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1 && !dummy, nil
}

func encode(salt, key []byte, memory, time uint32, threads uint8) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, memory, time, threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// phc is a decoded argon2id hash.
type phc struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

// decode parses a PHC-encoded argon2id hash, rejecting parameters outside
// sane bounds.
func decode(s string) (phc, error) {
	var p phc
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" || f[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return p, errBadHash
	}
	var threads uint32
	if n, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &threads); err != nil || n != 3 ||
		fmt.Sprintf("m=%d,t=%d,p=%d", p.memory, p.time, threads) != f[3] {
		return p, errBadHash
	}
	if p.time < 1 || p.time > maxTime || threads < 1 || threads > maxThreads || p.memory < 8*threads || p.memory > maxMemory {
		return p, errBadHash
	}
	p.threads = uint8(threads)
	var err error
	if p.salt, err = b64.DecodeString(f[4]); err != nil || len(p.salt) < 8 {
		return p, errBadHash
	}
	if p.key, err = b64.DecodeString(f[5]); err != nil || len(p.key) < 16 || len(p.key) > maxKeyLen {
		return p, errBadHash
	}
	return p, nil
}

// isBookHash reports whether encoded is a password as the book's members
// stores it, with MySQL's PASSWORD(): "*" and the upper-case hex of
// SHA1(SHA1(password)), 41 characters. Such a member, signed up before
// members moved to microshop, can still log in (checkPassword then stores
// an argon2id hash in its place).
func isBookHash(encoded string) bool {
	if len(encoded) != 41 || encoded[0] != '*' {
		return false
	}
	for _, c := range encoded[1:] {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// bookHashMatches checks password against a book hash (isBookHash).
func bookHashMatches(password, encoded string) bool {
	first := sha1.Sum([]byte(password))
	second := sha1.Sum(first[:])
	want := "*" + strings.ToUpper(hex.EncodeToString(second[:]))
	return subtle.ConstantTimeCompare([]byte(want), []byte(encoded)) == 1
}
