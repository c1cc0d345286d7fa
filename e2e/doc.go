// Package e2e holds microshop's end-to-end tests. TestMain builds the
// microshop binary once; each test then starts the distributor, the gate and
// the services as separate OS processes on free loopback ports, and drives
// them as their clients do: over HTTP through the gate, and over raw TCP
// with the book's packet protocol, byte for byte as its Node.js peers speak
// it.
//
// By default the processes share an embedded Redis (miniredis, started by
// the test and reached over TCP) and a SQLite file. With MICROSHOP_TEST_REDIS
// and MICROSHOP_TEST_MYSQL set they use those real servers instead, each test
// with its own Redis key prefix and a fresh MySQL database (see
// internal/testenv). When the tests are built with -race, the binary is too,
// and a data race reported by any process fails its test.
//
// go test -short skips them.
package e2e
