-- +goose Up
-- A purchase made with an Idempotency-Key remembers it (internal/purchases):
-- the same key from the same member makes no second purchase, and gets the
-- first one's answer. NULL (no key) is never a duplicate.
ALTER TABLE purchases ADD COLUMN idem_key TEXT;
CREATE UNIQUE INDEX purchases_idem ON purchases (userid, idem_key);

-- +goose Down
DROP INDEX purchases_idem;
ALTER TABLE purchases DROP COLUMN idem_key;
