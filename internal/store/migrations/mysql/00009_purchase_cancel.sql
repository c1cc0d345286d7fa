-- +goose Up
-- A member may cancel a purchase (internal/purchases): the row stays, with
-- the time of the cancel, so that its Idempotency-Key stays taken and a
-- retried cancel can tell "already cancelled" from "no such purchase".
-- NULL: not cancelled. The rankings count the purchases whose cancelled_at
-- is NULL; the index finds the cancelled ones, which are few.
ALTER TABLE purchases ADD COLUMN cancelled_at DATETIME(3) NULL, ADD KEY purchases_cancelled (cancelled_at);

-- +goose Down
ALTER TABLE purchases DROP KEY purchases_cancelled, DROP COLUMN cancelled_at;
