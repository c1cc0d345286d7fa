-- +goose Up
CREATE TABLE goods (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name        VARCHAR(128) NOT NULL,
    category    VARCHAR(64)  NOT NULL DEFAULT '',
    price       BIGINT       NOT NULL,
    description TEXT         NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE members (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username   VARCHAR(64)  NOT NULL,
    password   VARCHAR(255) NOT NULL,
    created_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY members_username (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE purchases (
    id      BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    userid  BIGINT      NOT NULL,
    goodsid BIGINT      NOT NULL,
    date    DATETIME(3) NOT NULL,
    KEY purchases_userid (userid, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE purchases;
DROP TABLE members;
DROP TABLE goods;
