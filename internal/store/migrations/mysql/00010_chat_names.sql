-- +goose Up
-- A chat message posted with a member's token keeps the member's username
-- (internal/chat, names.go), at most 64 characters as members allows.
-- NULL: none known (messages from before, or posted while the members
-- service could not answer).
ALTER TABLE chat_messages ADD COLUMN sender_name VARCHAR(64) NULL;

-- +goose Down
ALTER TABLE chat_messages DROP COLUMN sender_name;
