-- +goose Up
-- Login sessions (internal/members): the system of record of every token.
-- Only the SHA-256 of a token (hex) is stored; Redis caches the rows
-- (session:{hash}). Times are Unix milliseconds.
CREATE TABLE sessions (
    hash       TEXT    NOT NULL PRIMARY KEY,
    member_id  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX sessions_member ON sessions (member_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- +goose Down
DROP TABLE sessions;
