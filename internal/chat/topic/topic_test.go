package topic

import (
	"path"
	"strings"
	"testing"
)

func TestChannelPatternRoom(t *testing.T) {
	for _, prefix := range []string{"microshop:", "t[1]*?:", ""} {
		ch := Channel(prefix, "lobby")
		// Redis globs match like path.Match for names without '/'.
		if ok, err := path.Match(Pattern(prefix), ch); err != nil || !ok {
			t.Errorf("Pattern(%q) = %q does not match %q (%v)", prefix, Pattern(prefix), ch, err)
		}
		if room, ok := Room(prefix, ch); !ok || room != "lobby" {
			t.Errorf("Room(%q, %q) = %q, %v; want lobby", prefix, ch, room, ok)
		}
	}
	if ok, _ := path.Match(Pattern("a:"), Channel("b:", "lobby")); ok {
		t.Error("a deployment's pattern matches another's channel")
	}
	if _, ok := Room("p:", "p:chat:bad room"); ok {
		t.Error("Room accepted an invalid room name")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		room string
		ok   bool
	}{{"a", true}, {"A-z_09", true}, {strings.Repeat("r", 64), true}, {"", false}, {strings.Repeat("r", 65), false}, {"a.b", false}, {"a/b", false}, {"é", false}} {
		if err := CheckRoom(tc.room); (err == nil) != tc.ok {
			t.Errorf("CheckRoom(%q) = %v; want ok %v", tc.room, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		user string
		ok   bool
	}{{"7", true}, {"ann@shop.example", true}, {"guest-0a1b2c", true}, {"", false}, {"a b", false}, {strings.Repeat("u", 65), false}, {"<script>", false}} {
		if err := CheckUser(tc.user); (err == nil) != tc.ok {
			t.Errorf("CheckUser(%q) = %v; want ok %v", tc.user, err, tc.ok)
		}
	}
}
