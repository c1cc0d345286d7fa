-- +goose Up
-- The book's purchases inserts (userid, goodsid) only: the date defaults to
-- the time of the insert, so that its purchases land in a table it shares
-- with microshop's while a fleet migrates (microshop's always sets it, in
-- UTC; the default is in the session's time zone, UTC on a server set so).
ALTER TABLE purchases MODIFY date DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3);

-- +goose Down
ALTER TABLE purchases MODIFY date DATETIME(3) NOT NULL;
