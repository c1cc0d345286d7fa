-- +goose Up
-- Login sessions (internal/members): the system of record of every token.
-- Only the SHA-256 of a token (hex) is stored; Redis caches the rows
-- (session:{hash}). Times are Unix milliseconds.
CREATE TABLE sessions (
    hash       CHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    member_id  BIGINT   NOT NULL,
    expires_at BIGINT   NOT NULL,
    created_at BIGINT   NOT NULL,
    KEY sessions_member (member_id),
    KEY sessions_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE sessions;
