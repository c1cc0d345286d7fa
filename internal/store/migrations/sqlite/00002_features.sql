-- +goose Up
-- Likes and dislikes: one row per member and good. A withdrawn reaction
-- keeps its row with reaction = '' so that its version keeps growing; the
-- version orders the updates sent to the Redis view (internal/reactions).
CREATE TABLE reactions (
    userid   INTEGER NOT NULL,
    goodsid  INTEGER NOT NULL,
    reaction TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (userid, goodsid)
);
CREATE INDEX reactions_goodsid ON reactions (goodsid, reaction);
-- Star ratings: one row per member and good; version as for reactions.
CREATE TABLE ratings (
    userid  INTEGER NOT NULL,
    goodsid INTEGER NOT NULL,
    stars   INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (userid, goodsid)
);
CREATE INDEX ratings_goodsid ON ratings (goodsid, stars);
-- Stores: a deleted store keeps its row (deleted = 1), so ids are never
-- reused and the Redis view can hold a tombstone for it.
CREATE TABLE stores (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT    NOT NULL,
    longitude REAL    NOT NULL,
    latitude  REAL    NOT NULL,
    deleted   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX stores_latitude ON stores (deleted, latitude);

-- +goose Down
DROP TABLE stores;
DROP TABLE ratings;
DROP TABLE reactions;
