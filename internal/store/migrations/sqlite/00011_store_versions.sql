-- +goose Up
-- Stores can be edited (PATCH /stores, internal/stores): every write of a
-- store row raises its version, and the Redis view applies a write only
-- when its version is higher than the one it holds. Existing rows get the
-- versions they had implicitly: 1 live, 2 deleted.
ALTER TABLE stores ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
UPDATE stores SET version = 2 WHERE deleted = 1;

-- +goose Down
ALTER TABLE stores DROP COLUMN version;
