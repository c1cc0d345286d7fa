-- +goose Up
-- Chat messages, the system of record of every room's history; Redis keeps
-- each room's recent window (internal/chat). created is in Unix
-- milliseconds.
CREATE TABLE chat_messages (
    id      BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    room    VARCHAR(64) NOT NULL,
    sender  VARCHAR(64) NOT NULL,
    body    TEXT        NOT NULL,
    created BIGINT      NOT NULL,
    KEY chat_messages_room (room, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE chat_messages;
