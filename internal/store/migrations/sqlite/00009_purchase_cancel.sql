-- +goose Up
-- A member may cancel a purchase (internal/purchases): the row stays, with
-- the time of the cancel (UTC, to the millisecond, as purchases.date), so
-- that its Idempotency-Key stays taken and a retried cancel can tell
-- "already cancelled" from "no such purchase". NULL: not cancelled. The
-- rankings count the purchases whose cancelled_at is NULL; the index finds
-- the cancelled ones, which are few.
ALTER TABLE purchases ADD COLUMN cancelled_at TEXT;
CREATE INDEX purchases_cancelled ON purchases (cancelled_at);

-- +goose Down
DROP INDEX purchases_cancelled;
ALTER TABLE purchases DROP COLUMN cancelled_at;
