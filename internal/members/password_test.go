package members

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func argonKey(password string, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	return argon2.IDKey([]byte(password), salt, time, memory, threads, keyLen)
}

func TestHashVerify(t *testing.T) {
	ctx := context.Background()
	h := newHasher(2)
	enc, err := h.hash(ctx, "pässwörd¶")
	if err != nil {
		t.Fatal(err)
	}
	p, err := decode(enc)
	if err != nil {
		t.Fatalf("decode(%q): %v", enc, err)
	}
	if p.memory != ArgonMemory || p.time != ArgonTime || p.threads != ArgonThreads || len(p.salt) != ArgonSaltLen || len(p.key) != ArgonKeyLen {
		t.Fatalf("decode(%q) = %+v; want the Argon* parameters", enc, p)
	}
	for _, tt := range []struct {
		password string
		want     bool
	}{
		{"pässwörd¶", true},
		{"pässwörd", false},
		{"Pässwörd¶", false},
		{"", false},
	} {
		got, err := h.verify(ctx, tt.password, enc)
		if err != nil || got != tt.want {
			t.Errorf("verify(%q) = %v, %v; want %v", tt.password, got, err, tt.want)
		}
	}
	// The dummy hash (unknown users) never matches, whatever the password.
	if ok, err := h.verify(ctx, "pässwörd¶", ""); ok || err != nil {
		t.Fatalf("verify against the dummy = %v, %v; want false, nil", ok, err)
	}
}

func TestVerifyReadsStoredParameters(t *testing.T) {
	// A hash made with other (weaker) parameters still verifies.
	ctx := context.Background()
	salt := []byte("0123456789abcdef")
	enc := encode(salt, argonKey("old password", salt, 1, 64, 1, 16), 64, 1, 1)
	h := newHasher(1)
	if ok, err := h.verify(ctx, "old password", enc); !ok || err != nil {
		t.Fatalf("verify(%q) = %v, %v; want true", enc, ok, err)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	good := encode([]byte("0123456789abcdef"), make([]byte, 32), ArgonMemory, ArgonTime, ArgonThreads)
	if _, err := decode(good); err != nil {
		t.Fatalf("decode(%q): %v", good, err)
	}
	parts := strings.Split(good, "$")
	bad := []string{
		"",
		"plain",
		"5f4dcc3b5aa765d61d8327deb882cf99",
		strings.Replace(good, "argon2id", "argon2i", 1),
		strings.Replace(good, "v=19", "v=16", 1),
		strings.Replace(good, "m=19456", "m=abc", 1),
		strings.Replace(good, "m=19456", "m=99999999", 1),
		strings.Replace(good, "t=2", "t=0", 1),
		strings.Replace(good, "t=2", "t=1000", 1),
		strings.Replace(good, "p=1", "p=0", 1),
		strings.Replace(good, "p=1", "p=300", 1),
		strings.Replace(good, "m=19456,t=2,p=1", "m=19456,t=2,p=1,x=1", 1),
		strings.Join(append(parts[:4:4], "!!!", parts[5]), "$"),
		strings.Join(append(parts[:4:4], "c2FsdA", parts[5]), "$"),
		strings.Join(append(parts[:4:4], parts[4], "aGFzaA"), "$"),
		strings.Join(append(parts[:4:4], parts[4], strings.Repeat("A", 400)), "$"),
		good + "$extra",
	}
	for _, s := range bad {
		if p, err := decode(s); err == nil {
			t.Errorf("decode(%q) = %+v; want an error", s, p)
		}
	}
	h := newHasher(1)
	if ok, err := h.verify(context.Background(), "x", "not a hash"); ok || err == nil {
		t.Fatalf("verify against garbage = %v, %v; want false and an error", ok, err)
	}
}

func TestHashHonoursContext(t *testing.T) {
	h := newHasher(1)
	h.slots <- struct{}{} // the only slot is busy
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.hash(ctx, "password"); err == nil {
		t.Fatal("hash with a cancelled context and no free slot: nil error")
	}
}

func TestBookHash(t *testing.T) {
	const stored = "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7" // MySQL's PASSWORD('secret')
	if !isBookHash(stored) || !bookHashMatches("secret", stored) || bookHashMatches("secret ", stored) {
		t.Fatal("the book's hash of secret is not recognised, or matches another password")
	}
	for _, s := range []string{stored[:40], strings.ToLower(stored), "x" + stored[1:], "$argon2id$v=19$m=19456,t=2,p=1$"} {
		if isBookHash(s) {
			t.Errorf("isBookHash(%q) = true; PASSWORD() never gives it", s)
		}
	}
}
