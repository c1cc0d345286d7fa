-- +goose Up
-- The client addresses members logged in from (internal/members,
-- session_lockout.go): an address that logged in successfully is exempt
-- from the lock a distributed guessing attack puts on the username, so that
-- no attacker can keep a member from logging in from their own address.
-- addr is what the gate reports (an IPv4 address, or an IPv6 /64). Times
-- are Unix milliseconds; rows older than 90 days are swept.
CREATE TABLE login_addresses (
    member_id     INTEGER NOT NULL,
    addr          TEXT    NOT NULL,
    last_login_at INTEGER NOT NULL,
    PRIMARY KEY (member_id, addr)
);
CREATE INDEX login_addresses_last ON login_addresses (last_login_at);

-- +goose Down
DROP TABLE login_addresses;
