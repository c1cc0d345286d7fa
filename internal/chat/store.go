package chat

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/microshop/microshop/internal/store"
)

// table is the chat_messages table. Its SQL is the same on both engines.
type table struct{ db *store.DB }

// insert stores m and returns its id.
func (t table) insert(ctx context.Context, m Message) (int64, error) {
	res, err := t.db.ExecContext(ctx,
		"INSERT INTO chat_messages (room, sender, sender_name, body, created) VALUES (?, ?, ?, ?, ?)",
		m.Room, m.User, sql.NullString{String: m.Name, Valid: m.Name != ""}, m.Text, m.Time.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("chat: insert message: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("chat: insert message: %w", err)
	}
	return id, nil
}

// latest is the before of table.before for the latest messages.
const latest = math.MaxInt64

// before returns the last limit messages of room whose id is below before
// (latest for the last ones), oldest first, read from the index
// chat_messages_room (room, id).
func (t table) before(ctx context.Context, room string, before int64, limit int) ([]Message, error) {
	rows, err := t.db.QueryContext(ctx,
		"SELECT id, sender, COALESCE(sender_name, ''), body, created FROM chat_messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?",
		room, before, limit)
	if err != nil {
		return nil, fmt.Errorf("chat: read history: %w", err)
	}
	defer rows.Close()
	var msgs []Message
	for rows.Next() {
		m := Message{Room: room}
		var ms int64
		if err := rows.Scan(&m.ID, &m.User, &m.Name, &m.Text, &ms); err != nil {
			return nil, fmt.Errorf("chat: read history: %w", err)
		}
		m.Time = time.UnixMilli(ms).UTC()
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chat: read history: %w", err)
	}
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	if msgs == nil {
		msgs = []Message{}
	}
	return msgs, nil
}
