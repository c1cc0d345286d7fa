package sessioncache

import (
	"strings"
	"testing"
	"time"
)

func TestOpen(t *testing.T) {
	s := NewSigner([]byte("a fleet key of some length"))
	other := NewSigner([]byte("another deployment's fleet key"))
	now := time.UnixMilli(1_000_000_000)
	h, h2 := HashToken("token"), HashToken("other token")
	hour, minute := now.Add(time.Hour), now.Add(time.Minute)
	live := s.Live(h, 7, hour, minute)
	tomb := s.Revoked(h, minute)
	tests := []struct {
		name   string
		signer *Signer
		hash   string
		v      string
		want   Session
	}{
		{"live", s, h, live, Session{State: Live, Member: 7, Expires: hour, Until: minute}},
		{"tombstone", s, h, tomb, Session{State: Ended}},
		{"expired session", s, h, s.Live(h, 7, now, minute), Session{State: Ended}},
		{"past its validity (a replayed value)", s, h, s.Live(h, 7, hour, now), Session{}},
		{"tombstone past its validity", s, h, s.Revoked(h, now), Session{}},
		{"moved to another token's key", s, h2, live, Session{}},
		{"tombstone moved", s, h2, tomb, Session{}},
		{"made with another key", s, h, other.Live(h, 7, hour, minute), Session{}},
		{"member changed", s, h, strings.Replace(live, "v1:7:", "v1:8:", 1), Session{}},
		{"MAC cut", s, h, live[:len(live)-1], Session{}},
		{"no MAC", s, h, "v1:7:" + ms(hour) + ":" + ms(minute), Session{}},
		{"the old unsigned format", s, h, "7:" + ms(hour), Session{}},
		{"the old tombstone", s, h, "revoked", Session{}},
		{"empty", s, h, "", Session{}},
		{"member 0", s, h, s.Live(h, 0, hour, minute), Session{}},
		{"no fleet key believes nothing", nil, h, live, Session{}},
	}
	for _, tt := range tests {
		if got := tt.signer.Open(tt.hash, tt.v, now); got != tt.want {
			t.Errorf("%s: Open(%q) = %+v; want %+v", tt.name, tt.v, got, tt.want)
		}
	}
	var none *Signer
	if none.Live(h, 7, hour, minute) != "" || none.Revoked(h, minute) != "" || NewSigner(nil) != nil {
		t.Error("a nil Signer made a value")
	}
}

func TestValidHash(t *testing.T) {
	for _, tt := range []struct {
		h  string
		ok bool
	}{{HashToken("x"), true}, {strings.Repeat("A", 64), false}, {"abc", false}, {strings.Repeat("g", 64), false}} {
		if ValidHash(tt.h) != tt.ok {
			t.Errorf("ValidHash(%q) = %v; want %v", tt.h, !tt.ok, tt.ok)
		}
	}
}
