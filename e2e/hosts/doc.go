// Package hosts holds microshop's end-to-end tests across several hosts: each
// part of the fleet runs in a Linux network namespace of its own, so that the
// tests can inject real network faults — a link cut without FIN or RST, a
// frozen host — and check the fleet's contract under faults (DESIGN §9):
// a silent peer is marked down and its requests fail over, several
// distributors make any one of them unimportant, losing Redis makes
// microshop slower but never wrong.
//
// The harness (in the _test files):
//
//   - A Network is one Linux bridge in the root namespace on a free /24 of
//     10.0.0.0/8; the root namespace holds its .1 address, so the test process
//     itself reaches every host: it drives HTTP at the gate and watches the
//     distributors from there.
//   - A Host is a network namespace with lo up and a veth pair: one end
//     inside (eth0, .N/24, default route via .1), the other attached to the
//     bridge. Host.CutLink sets the root-side end down, which drops every
//     packet both ways without a FIN or RST (TestCutLinkIsSilent checks it on
//     every run); Host.HealLink undoes it. Host.Freeze and Host.Thaw send
//     SIGSTOP and SIGCONT to every process started on the host.
//   - Host.Start runs a program inside the namespace with `ip netns exec`,
//     which execs it in place: the PID is the program's (TestFreezeHost checks
//     it), so proctest's Stop, Kill, Freeze and Thaw act on the program itself.
//   - StartRedis and StartMariaDB run a private redis-server and a private
//     MariaDB (installed once per run into a template data directory, copied
//     for each test) on a host of their own.
//
// Everything a test creates is removed when it ends, in reverse order:
// processes (thawed, links healed, then SIGTERM), namespaces and veths, the
// bridge. TestMain first removes what a killed earlier run left behind: the
// namespaces named msh-*, the links named mshb* and mshv*, any process
// still inside such a namespace, and MariaDB's template directory.
//
// The tests log the figures they measure (latencies before, during and
// after a fault, when each process logged the fault, how long recovery
// took). On failure every process's output is logged; with
// `go test ./e2e/hosts/ -args -hosts.logs` it is logged on success too.
//
// The tests need root, iproute2 (ip), redis-server and MariaDB (mariadbd,
// mariadb-install-db). Without root or ip, or when a namespace cannot be
// created, they skip; with MICROSHOP_TEST_REQUIRE_NETNS=1 they fail instead.
// go test -short skips them. When they are built with -race, the microshop
// binary is too, and a data race reported by any process fails its test.
package hosts
