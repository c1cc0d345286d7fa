-- +goose Up
-- Best-seller rankings (internal/purchases) count purchases by good, by
-- date window (day, ISO week) and of all time.
CREATE INDEX purchases_date ON purchases (date, goodsid);
CREATE INDEX purchases_goodsid ON purchases (goodsid);
-- One row that every purchase insert locks in share mode until it commits,
-- and that the rankings lock exclusively while they read MAX(id): InnoDB
-- may commit id 8 before id 7, and the lock makes sure no smaller id is
-- still in flight when the rankings take MAX(id) as their watermark.
CREATE TABLE rankings_barrier (
    id INT NOT NULL PRIMARY KEY
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO rankings_barrier (id) VALUES (1);

-- +goose Down
DROP TABLE rankings_barrier;
DROP INDEX purchases_goodsid ON purchases;
DROP INDEX purchases_date ON purchases;
