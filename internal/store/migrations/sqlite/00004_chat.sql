-- +goose Up
-- Chat messages, the system of record of every room's history; Redis keeps
-- each room's recent window (internal/chat). created is in Unix
-- milliseconds.
CREATE TABLE chat_messages (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    room    TEXT    NOT NULL,
    sender  TEXT    NOT NULL,
    body    TEXT    NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX chat_messages_room ON chat_messages (room, id);

-- +goose Down
DROP TABLE chat_messages;
