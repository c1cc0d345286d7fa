-- +goose Up
-- The client addresses members logged in from (internal/members,
-- session_lockout.go): an address that logged in successfully is exempt
-- from the lock a distributed guessing attack puts on the username, so that
-- no attacker can keep a member from logging in from their own address.
-- addr is what the gate reports (an IPv4 address, or an IPv6 /64). Times
-- are Unix milliseconds; rows older than 90 days are swept.
CREATE TABLE login_addresses (
    member_id     BIGINT      NOT NULL,
    addr          VARCHAR(64) CHARACTER SET ascii NOT NULL,
    last_login_at BIGINT      NOT NULL,
    PRIMARY KEY (member_id, addr),
    KEY login_addresses_last (last_login_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE login_addresses;
