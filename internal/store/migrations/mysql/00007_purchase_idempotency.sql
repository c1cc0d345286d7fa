-- +goose Up
-- A purchase made with an Idempotency-Key remembers it (internal/purchases):
-- the same key from the same member makes no second purchase, and gets the
-- first one's answer. NULL (no key) is never a duplicate.
ALTER TABLE purchases ADD COLUMN idem_key VARCHAR(255) NULL, ADD UNIQUE KEY purchases_idem (userid, idem_key);

-- +goose Down
ALTER TABLE purchases DROP KEY purchases_idem, DROP COLUMN idem_key;
