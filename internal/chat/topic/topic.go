// Package topic is the contract between the chat service, which publishes
// chat messages on Redis, and the gates, which subscribe to them and fan
// them out to their WebSocket clients: the names of the pub/sub channels
// and the rules for room and user names. It is a leaf package, so that the
// gate can follow the contract without depending on the chat service.
package topic

import (
	"errors"
	"strings"
)

// Limits on names, in characters.
const (
	MaxRoomLen = 64
	MaxUserLen = 64
)

// base is what follows the deployment's key prefix in every chat channel.
const base = "chat:"

// Channel returns the pub/sub channel of room for a deployment whose Redis
// key prefix is prefix. Channels carry the prefix like keys do, so that
// deployments (and tests) sharing one Redis never hear each other.
func Channel(prefix, room string) string { return prefix + base + room }

// Pattern returns the PSUBSCRIBE pattern that matches every room's channel
// of the deployment, with the glob characters of prefix escaped.
func Pattern(prefix string) string {
	var b strings.Builder
	for _, r := range prefix + base {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('*')
	return b.String()
}

// Room returns the room whose channel is channel, and false when channel
// is not a chat channel of the deployment.
func Room(prefix, channel string) (string, bool) {
	room, ok := strings.CutPrefix(channel, prefix+base)
	return room, ok && CheckRoom(room) == nil
}

// CheckRoom validates a room name: 1 to 64 letters, digits, '-' or '_'.
func CheckRoom(room string) error {
	if room == "" {
		return errors.New("room is required")
	}
	if len(room) > MaxRoomLen || !plain(room, "-_") {
		return errors.New("room must be 1 to 64 characters of letters, digits, '-' and '_'")
	}
	return nil
}

// CheckUser validates a user name: 1 to 64 letters, digits, '-', '_', '.'
// or '@'.
func CheckUser(user string) error {
	if user == "" || len(user) > MaxUserLen || !plain(user, "-_.@") {
		return errors.New("userid must be 1 to 64 characters of letters, digits, '-', '_', '.' and '@'")
	}
	return nil
}

// plain reports whether s holds only ASCII letters, digits and the bytes
// of extra.
func plain(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0 {
			continue
		}
		return false
	}
	return true
}
