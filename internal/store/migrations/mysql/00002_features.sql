-- +goose Up
-- Likes and dislikes: one row per member and good. A withdrawn reaction
-- keeps its row with reaction = '' so that its version keeps growing; the
-- version orders the updates sent to the Redis view (internal/reactions).
CREATE TABLE reactions (
    userid   BIGINT     NOT NULL,
    goodsid  BIGINT     NOT NULL,
    reaction VARCHAR(7) NOT NULL,
    version  BIGINT     NOT NULL,
    PRIMARY KEY (userid, goodsid),
    KEY reactions_goodsid (goodsid, reaction)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- Star ratings: one row per member and good; version as for reactions.
CREATE TABLE ratings (
    userid  BIGINT  NOT NULL,
    goodsid BIGINT  NOT NULL,
    stars   TINYINT NOT NULL,
    version BIGINT  NOT NULL,
    PRIMARY KEY (userid, goodsid),
    KEY ratings_goodsid (goodsid, stars)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- Stores: a deleted store keeps its row (deleted = 1), so ids are never
-- reused and the Redis view can hold a tombstone for it.
CREATE TABLE stores (
    id        BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name      VARCHAR(128) NOT NULL,
    longitude DOUBLE       NOT NULL,
    latitude  DOUBLE       NOT NULL,
    deleted   TINYINT      NOT NULL DEFAULT 0,
    KEY stores_latitude (deleted, latitude)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE stores;
DROP TABLE ratings;
DROP TABLE reactions;
