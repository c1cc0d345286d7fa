-- +goose Up
CREATE TABLE goods (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    category    TEXT    NOT NULL DEFAULT '',
    price       INTEGER NOT NULL,
    description TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE members (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT    NOT NULL UNIQUE,
    password   TEXT    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE purchases (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    userid  INTEGER NOT NULL,
    goodsid INTEGER NOT NULL,
    date    TEXT    NOT NULL
);
CREATE INDEX purchases_userid ON purchases (userid, id);

-- +goose Down
DROP TABLE purchases;
DROP TABLE members;
DROP TABLE goods;
