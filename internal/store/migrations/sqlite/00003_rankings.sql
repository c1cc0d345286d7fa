-- +goose Up
-- Best-seller rankings (internal/purchases) count purchases by good, by
-- date window (day, ISO week) and of all time. SQLite needs no
-- rankings_barrier table (see the MySQL migration): it runs one writer at a
-- time, so ids are committed in order.
CREATE INDEX purchases_date ON purchases (date, goodsid);
CREATE INDEX purchases_goodsid ON purchases (goodsid);

-- +goose Down
DROP INDEX purchases_goodsid;
DROP INDEX purchases_date;
