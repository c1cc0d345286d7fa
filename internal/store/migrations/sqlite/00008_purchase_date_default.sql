-- +goose Up
-- The book's purchases inserts (userid, goodsid) only: the date defaults to
-- the time of the insert, in the format microshop's purchases writes
-- (UTC, to the millisecond). SQLite cannot change a column's default: the
-- table is rebuilt, ids and indexes kept.
CREATE TABLE purchases_new (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    userid   INTEGER NOT NULL,
    goodsid  INTEGER NOT NULL,
    date     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    idem_key TEXT
);
INSERT INTO purchases_new (id, userid, goodsid, date, idem_key) SELECT id, userid, goodsid, date, idem_key FROM purchases;
DROP TABLE purchases;
ALTER TABLE purchases_new RENAME TO purchases;
CREATE INDEX purchases_userid ON purchases (userid, id);
CREATE INDEX purchases_date ON purchases (date, goodsid);
CREATE INDEX purchases_goodsid ON purchases (goodsid);
CREATE UNIQUE INDEX purchases_idem ON purchases (userid, idem_key);

-- +goose Down
CREATE TABLE purchases_old (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    userid   INTEGER NOT NULL,
    goodsid  INTEGER NOT NULL,
    date     TEXT    NOT NULL,
    idem_key TEXT
);
INSERT INTO purchases_old (id, userid, goodsid, date, idem_key) SELECT id, userid, goodsid, date, idem_key FROM purchases;
DROP TABLE purchases;
ALTER TABLE purchases_old RENAME TO purchases;
CREATE INDEX purchases_userid ON purchases (userid, id);
CREATE INDEX purchases_date ON purchases (date, goodsid);
CREATE INDEX purchases_goodsid ON purchases (goodsid);
CREATE UNIQUE INDEX purchases_idem ON purchases (userid, idem_key);
