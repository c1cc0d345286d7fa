#!/usr/bin/env bash
# Runs the README's multi-process example ("### Each part as its own
# process", under "## Running") as written, against a freshly installed
# MariaDB, and checks the fleet it starts through both of its gates.
#
#   sudo scripts/readme-multiprocess.sh        (root: it makes namespaces)
#
# What it does:
#   1. Takes the section's ```sh blocks out of README.md by their position
#      under the heading (1: the `sudo mariadb -e …` user creation, 2: the
#      build, exports and the twelve `./microshop … &` lines, 3: the line
#      that stops them) and runs them verbatim, in the same shell, in order.
#   2. Runs them in a network namespace of its own (only `lo`, up), so the
#      README's addresses (127.0.0.1:3306, :6379, :9000…, :8000, :8001) are
#      free even though this machine's own MariaDB and Redis use them, and in
#      a private mount namespace where a temporary directory is bind-mounted
#      over /run/mysqld, so that the README's `sudo mariadb` (the default
#      socket, /run/mysqld/mysqld.sock) reaches the fresh server and not the
#      machine's.
#   3. Inside, before the README's steps: a fresh MariaDB data directory made
#      by mariadb-install-db (Debian's default: root authenticates by
#      unix_socket only) served by mariadbd on 127.0.0.1:3306, and a
#      redis-server on 127.0.0.1:6379 without persistence. It asserts that
#      root over TCP is refused ("Access denied"), which is what makes the
#      README's user-creation step necessary, and that the microshop user
#      does not exist yet.
#   4. Waits (polling, never a blind sleep) for /readyz on :8000 and :8001
#      and for every service to answer through both gates, then: the admin
#      key adds a good, a member signs up on one gate and logs in on the
#      other, buys the good, sees the purchase and the ranking through the
#      other gate; all twelve processes must still be alive. Then the
#      README's stop line must end all twelve.
#   5. Stops only what it started, by PID (the README's processes, mariadbd,
#      redis-server), deletes the namespace, the mounts (they die with the
#      mount namespace), the temporary directory and the built ./microshop,
#      also on failure (trap).
#
# The README's `go build -o microshop ./cmd/microshop` runs in the
# repository root (the build cache makes it quick), unless a ./microshop or
# a microshop.db* is already there: then in a copy of the tracked and
# untracked (not ignored) files, so nothing of the user's is overwritten.
# The namespace has no network: the modules are fetched before, outside.
#
# If sudo is not installed, a shim that runs its arguments directly (we are
# root already) stands in for it, and the script says so. .ci/run installs
# sudo, so CI runs the README's line exactly as written.
#
# It prints "skipped: …" and exits 0 when not root or when ip, unshare,
# mariadb-install-db, mariadbd, mariadb, redis-server, curl or go is
# missing, unless MICROSHOP_TEST_REQUIRE_NETNS=1, which makes that a failure.
# Exit status 0 otherwise means the example ran as written and every check
# passed. It takes about 10-40 s (the build is most of it).
set -euo pipefail

me='readme-multiprocess'
say() { printf '%s: %s\n' "$me" "$*"; }
fail() { printf '%s: FAIL: %s\n' "$me" "$*" >&2; exit 1; }

# wait_until DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_until() {
	local what=$1 secs=$2; shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || { printf '%s: FAIL: %s: not within %ss\n' "$me" "$what" "$secs" >&2; return 1; }
		sleep 0.1
	done
}

# alive PID: the process exists and is not a zombie.
alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $st != Z* ]]
}

outer() {
	skip() {
		if [ "${MICROSHOP_TEST_REQUIRE_NETNS:-}" = 1 ]; then fail "$* (MICROSHOP_TEST_REQUIRE_NETNS=1)"; fi
		say "skipped: $*"
		exit 0
	}
	[ "$(id -u)" = 0 ] || skip "needs root (network and mount namespaces)"
	export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"
	local c
	for c in ip ss unshare mount mariadb-install-db mariadbd mariadb mariadb-admin redis-server redis-cli curl go awk ps; do
		command -v "$c" >/dev/null || skip "$c is not installed"
	done

	repo=$(cd "$(dirname "$0")/.." && pwd)
	readme=${MICROSHOP_README:-$repo/README.md}   # another file only to test this script
	tmp=$(mktemp -d /tmp/microshop-readme.XXXXXX)
	chmod 755 "$tmp"   # mariadbd runs as mysql and must reach its data directory
	ns=microshop-readme-$$
	made_run_mysqld=
	built=
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	# --- the README's blocks, by position under the heading ----------------
	awk -v dir="$tmp" '
		$0 == "### Each part as its own process" { on = 1; next }
		on && /^##/ { exit }
		on && /^```/ {
			if (code) { code = 0; close(out); next }
			code = 1; n++; out = dir "/block" n ".sh"; printf "" > out; next
		}
		on && code { print > out }
	' "$readme"
	local n
	n=$(find "$tmp" -maxdepth 1 -name 'block*.sh' | wc -l)
	[ "$n" = 3 ] || fail "README.md's \"### Each part as its own process\" has $n code blocks, not 3 (create the user, build and start, stop)"
	grep -q '^sudo mariadb -e ' "$tmp/block1.sh" || fail "its first block is not the \`sudo mariadb -e …\` user creation"
	grep -q '^go build -o microshop ./cmd/microshop' "$tmp/block2.sh" || fail "its second block does not build ./microshop"
	procs=$(grep -c '^\./microshop .*&' "$tmp/block2.sh" || true)
	[ "$procs" = 12 ] || fail "its second block starts $procs processes, not 12"
	grep -q '^kill ' "$tmp/block3.sh" || fail "its third block does not stop the processes"
	say "README blocks: $(wc -l <"$tmp/block1.sh") + $(wc -l <"$tmp/block2.sh") + $(wc -l <"$tmp/block3.sh") lines, $procs processes"

	# --- where the README's go build runs ---------------------------------
	if [ -e "$repo/microshop" ] || compgen -G "$repo/microshop.db*" >/dev/null; then
		command -v git >/dev/null || fail "a ./microshop or microshop.db* is in $repo and git (to make a copy) is missing"
		say "a ./microshop or microshop.db* is already in $repo: running in a copy"
		rundir=$tmp/src
		mkdir "$rundir"
		(cd "$repo" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$rundir" -xf -
	else
		rundir=$repo
		built=$repo/microshop
	fi
	# the namespace has no network: fetch the toolchain and modules now
	(cd "$rundir" && go mod download) || fail "go mod download"

	# --- sudo ---------------------------------------------------------------
	if ! command -v sudo >/dev/null; then
		say "NOTE: sudo is not installed; the README's \`sudo mariadb …\` runs through a shim (exec \"\$@\": we are root already)"
		mkdir "$tmp/bin"
		printf '#!/bin/sh\nexec "$@"\n' >"$tmp/bin/sudo"
		chmod 755 "$tmp/bin/sudo"
		export PATH="$tmp/bin:$PATH"
	fi

	# --- the namespaces -------------------------------------------------------
	if [ ! -d /run/mysqld ]; then mkdir /run/mysqld && made_run_mysqld=1; fi   # the mount point
	ip netns add "$ns" || fail "ip netns add $ns"
	ip netns exec "$ns" ip link set lo up
	local start=$SECONDS
	# in the background, so that a signal to this script runs its trap at once
	MS_TMP=$tmp MS_RUNDIR=$rundir MS_PROCS=$procs \
		ip netns exec "$ns" unshare --mount --propagation private bash "$repo/scripts/readme-multiprocess.sh" __inner &
	inner_pid=$!   # ip netns exec and unshare exec in place: this is the inner bash
	wait "$inner_pid" || fail "the README's multi-process example (details above)"
	inner_pid=
	say "PASS: the README's multi-process example ran as written against a fresh MariaDB ($((SECONDS - start)) s in the namespace)"
}

cleanup() {
	local rc=$? pid pids=() left
	set +e
	# everything started inside (the README's processes, mariadbd, redis-server)
	if [ -n "${inner_pid:-}" ] && alive "$inner_pid"; then
		kill "$inner_pid" 2>/dev/null
		wait "$inner_pid" 2>/dev/null
	fi
	if [ -s "${tmp:-}/pids" ]; then mapfile -t pids <"$tmp/pids"; fi
	for pid in "${pids[@]}"; do alive "$pid" && kill "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do wait_until "pid $pid to exit" 20 eval "! alive $pid" || kill -9 "$pid" 2>/dev/null; done
	if [ -n "${ns:-}" ] && ip netns list | grep -qw "$ns"; then
		# anything still in the namespace was started by this script (the
		# namespace is its own): name it, and end it by PID
		left=$(ip netns pids "$ns" 2>/dev/null)
		if [ -n "$left" ]; then
			echo "$me: still in the namespace, killing: $left" >&2
			for pid in $left; do kill -9 "$pid" 2>/dev/null; done
		fi
		ip netns del "$ns"
	fi
	if [ -n "${built:-}" ]; then rm -f "$built"; fi
	[ -n "${made_run_mysqld:-}" ] && rmdir /run/mysqld 2>/dev/null
	[ -n "${tmp:-}" ] && rm -rf "$tmp"
	exit "$rc"
}

# Runs inside the network namespace and a private mount namespace.
inner() {
	tmp=$MS_TMP
	cd "$MS_RUNDIR"
	local t0=$SECONDS
	showlogs() {
		local f
		for f in "$tmp/fleet.log" "$tmp/mysql-log/mysqld.err" "$tmp/redis.log"; do
			[ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -n 30 "$f" >&2; }
		done
	}
	trap 'rc=$?; [ "$rc" = 0 ] || showlogs' EXIT

	# the fresh server's socket directory over the default one, here only
	mkdir "$tmp/run-mysqld" "$tmp/mysql" "$tmp/mysql-log" "$tmp/redis"
	if id mysql >/dev/null 2>&1; then dbuser=mysql; else dbuser=root; fi
	chown "$dbuser:" "$tmp/run-mysqld" "$tmp/mysql" "$tmp/mysql-log"
	mount --bind "$tmp/run-mysqld" /run/mysqld
	[ ! -e /run/mysqld/mysqld.sock ] || fail "/run/mysqld still shows a socket after the bind mount"
	if (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then fail "something listens on 127.0.0.1:3306 in a new namespace"; fi

	# --- a freshly installed MariaDB ---------------------------------------
	mariadb-install-db --no-defaults --user="$dbuser" --datadir="$tmp/mysql" >"$tmp/install-db.log" 2>&1 ||
		{ cat "$tmp/install-db.log" >&2; fail "mariadb-install-db"; }
	(exec mariadbd --no-defaults --user="$dbuser" --datadir="$tmp/mysql" --socket=/run/mysqld/mysqld.sock \
		--pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 --port=3306 --log-error="$tmp/mysql-log/mysqld.err" \
		--skip-log-bin --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
	echo $! >"$tmp/mariadbd.pid")
	cat "$tmp/mariadbd.pid" >>"$tmp/pids"
	(exec redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --dir "$tmp/redis" \
		--logfile "$tmp/redis.log" >/dev/null 2>&1 &
	echo $! >>"$tmp/pids")
	db_up() { # 0: up; 2: mariadbd exited
		alive "$(cat "$tmp/mariadbd.pid")" || return 2
		mariadb-admin --no-defaults -h127.0.0.1 -P3306 ping >/dev/null 2>&1
	}
	local deadline=$((SECONDS + 30)) r
	while true; do
		r=0; db_up || r=$?
		[ "$r" = 0 ] && break
		[ "$r" = 2 ] && fail "mariadbd exited"
		[ "$SECONDS" -lt "$deadline" ] || fail "MariaDB on 127.0.0.1:3306 not up within 30 s"
		sleep 0.1
	done
	wait_until "Redis on 127.0.0.1:6379" 10 sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
	say "fresh MariaDB $(mariadbd --version 2>/dev/null | awk '{print $3}') and Redis up in the namespace ($((SECONDS - t0)) s)"

	# fresh: root over TCP is refused, and there is no microshop user yet
	local out
	if out=$(mariadb -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' 2>&1); then fail "root logged in over TCP: not a fresh Debian install"; fi
	[[ $out == *"Access denied for user 'root'"* ]] || fail "root over TCP failed, but not with Access denied: $out"
	say "fresh install: root over TCP refused ($out)"
	if mariadb -h127.0.0.1 -P3306 -umicroshop -pchange-me-db-password -e 'SELECT 1' >/dev/null 2>&1; then fail "the microshop user exists before the README's step"; fi

	# --- README block 1: the user ------------------------------------------
	say "README block 1: $(head -c 60 "$tmp/block1.sh")…"
	eval "$(cat "$tmp/block1.sh")" || fail "README block 1 (sudo mariadb -e …)"
	local datadir
	datadir=$(mariadb -h127.0.0.1 -P3306 -umicroshop -pchange-me-db-password -N -e 'SELECT @@datadir') ||
		fail "the microshop user cannot log in over TCP after block 1"
	[ "${datadir%/}" = "$tmp/mysql" ] || fail "the README's step reached the server at $datadir, not the fresh one"
	mariadb --protocol=socket -umicroshop -pchange-me-db-password -N -e 'SELECT 1' >/dev/null ||
		fail "the microshop user cannot log in through the default socket"

	[ -z "$(mariadb -h127.0.0.1 -P3306 -umicroshop -pchange-me-db-password -N -e "SHOW DATABASES LIKE 'microshop'")" ] ||
		fail "the microshop database exists before the first start"

	# --- README block 2: build, exports, twelve processes ---------------------
	say "README block 2: build and start (in $PWD)"
	local tb=$SECONDS
	eval "$(cat "$tmp/block2.sh")" >"$tmp/fleet.log" 2>&1 || fail "README block 2"
	local fleet
	fleet=$(jobs -p)
	echo "$fleet" >>"$tmp/pids"
	mapfile -t fleet_pids <<<"$fleet"
	[ "${#fleet_pids[@]}" = "$MS_PROCS" ] || fail "block 2 left ${#fleet_pids[@]} background jobs, not $MS_PROCS"

	all_alive() { local p; for p in "${fleet_pids[@]}"; do alive "$p" || return 1; done; }
	ready() {
		all_alive || {
			local p dead=()
			for p in "${fleet_pids[@]}"; do alive "$p" || dead+=("$p"); done
			echo "$me: ${#dead[@]} of ${#fleet_pids[@]} processes exited (pids ${dead[*]}); still running:" >&2
			ps -o pid=,stat=,args= -p "${fleet_pids[*]// /,}" >&2
			return 2
		}
		curl -fsS http://127.0.0.1:8000/readyz | grep -q '"ready":true' &&
			curl -fsS http://127.0.0.1:8001/readyz | grep -q '"ready":true'
	}
	deadline=$((SECONDS + 60))
	while true; do
		r=0; ready >/dev/null 2>&1 || r=$?
		[ "$r" = 0 ] && break
		[ "$r" = 2 ] && { ready; fail "a README process exited before the fleet was ready"; }
		[ "$SECONDS" -lt "$deadline" ] || fail "the gates' /readyz on :8000 and :8001 not ready within 60 s"
		sleep 0.1
	done
	say "both gates ready $((SECONDS - tb)) s after block 2 began (build included)"

	# every service answers through both gates: a route the gate has not
	# been told of yet is a 404 "unknown route"; a 5xx is no instance up
	probes=(goods rankings 'reactions?goodsid=1' 'ratings?goodsid=1'
		'stores?longitude=126.978&latitude=37.5665' 'chat/history?room=lobby')
	probe() { # probe URL: prints the status, fails unless the service answered
		local out st
		out=$(curl -s -w '\n%{http_code}' "$1") || true
		st=${out##*$'\n'}
		echo "$st"
		[ "$st" != 000 ] && [ "$st" -lt 500 ] && [[ $out != *'unknown route'* ]]
	}
	routable() {
		local g u
		for g in 8000 8001; do
			for u in "${probes[@]}"; do probe "http://127.0.0.1:$g/$u" >/dev/null || return 1; done
		done
	}
	wait_until "every service to answer through both gates" 30 routable || {
		for u in "${probes[@]}"; do
			echo "  :8000/$u → $(probe "http://127.0.0.1:8000/$u"), :8001 → $(probe "http://127.0.0.1:8001/$u")" >&2
		done
		fail "not every service answers through both gates"
	}
	say "goods, purchases, reactions, ratings, stores and chat answer through both gates (members: the sign-up below)"

	# --- checks through both gates -------------------------------------------
	local A=http://127.0.0.1:8000 B=http://127.0.0.1:8001 body gid uid token pid
	json() { sed -nE "s/.*\"$1\":\"?([^\",}]*).*/\1/p" <<<"$2"; }
	body=$(curl -fsS -X POST "$A/goods" -H "Authorization: Bearer $MICROSHOP_ADMIN_KEY" -H 'Content-Type: application/json' \
		-d '{"name":"green tea","category":"drink","price":3000,"description":"from Jeju"}') || fail "POST /goods with the admin key on :8000"
	gid=$(json id "$body"); [[ $gid =~ ^[0-9]+$ ]] || fail "POST /goods answered $body"
	# the sign-up waits for members to be listed: an unknown route is not applied, so it is tried again
	signup() { body=$(curl -s -X POST "$A/members" -d 'username=kim&password=correct horse'); [[ $body != *'unknown route'* ]]; }
	wait_until "members to be listed on :8000" 10 signup || fail "POST /members on :8000: $body"
	uid=$(json userid "$body"); [[ $uid =~ ^[0-9]+$ ]] || fail "sign up answered $body"
	body=$(curl -fsS -X POST "$B/sessions" -d 'username=kim&password=correct horse') || fail "POST /sessions (log in) on :8001"
	token=$(json token "$body"); [[ $token =~ ^[A-Za-z0-9_-]{20,}$ ]] || fail "log in answered $body"
	body=$(curl -fsS "$A/sessions" -H "Authorization: Bearer $token") || fail "the token of :8001 is refused on :8000"
	[ "$(json userid "$body")" = "$uid" ] || fail "GET /sessions on :8000 answered $body"
	body=$(curl -fsS -X POST "$A/purchases" -H "Authorization: Bearer $token" -d "goodsid=$gid") || fail "POST /purchases on :8000"
	pid=$(json id "$body"); [[ $pid =~ ^[0-9]+$ ]] || fail "POST /purchases answered $body"
	body=$(curl -fsS "$B/purchases" -H "Authorization: Bearer $token") || fail "GET /purchases on :8001"
	[[ $body == *"\"id\":$pid,\"goodsid\":$gid"* ]] || fail "GET /purchases on :8001 lacks purchase $pid: $body"
	body=$(curl -fsS "$B/rankings?top=10&period=all") || fail "GET /rankings on :8001"
	[[ $body == *"\"rank\":1,\"goodsid\":$gid,\"name\":\"green tea\",\"sales\":1"* ]] || fail "the ranking on :8001 lacks good $gid: $body"
	say "good $gid added (admin key), member $uid signed up on :8000 and logged in on :8001, purchase $pid on :8000, seen with the ranking on :8001: $body"
	[ -n "$(mariadb -h127.0.0.1 -P3306 -umicroshop -pchange-me-db-password -N -e "SHOW DATABASES LIKE 'microshop'")" ] ||
		fail "the microshop database was not created on first start"
	# the listeners in the namespace are the README's and the two servers', no other
	local want got
	want='*:8000 *:8001 127.0.0.1:3306 127.0.0.1:6379 127.0.0.1:9000 127.0.0.1:9001 127.0.0.1:9010 127.0.0.1:9011 127.0.0.1:9020 127.0.0.1:9030 127.0.0.1:9040 127.0.0.1:9050 127.0.0.1:9060 127.0.0.1:9070'
	got=$(ss -Hltn | awk '{print $4}' | sed 's/^\[::\]:/*:/' | sort -u | tr '\n' ' ')
	[ "${got% }" = "$want" ] || fail "listening: $got; the README's addresses are: $want"
	say "listening on exactly the README's addresses: ${got% }"
	all_alive || fail "a README process exited during the checks"
	say "all ${#fleet_pids[@]} README processes alive: ${fleet_pids[*]}"

	# --- README block 3: stop them -----------------------------------------------
	say "README block 3: $(cat "$tmp/block3.sh")"
	local ts=$SECONDS
	eval "$(cat "$tmp/block3.sh")" || fail "README block 3"
	any_alive() { local p; for p in "${fleet_pids[@]}"; do alive "$p" && return 0; done; return 1; }
	wait_until "the README's processes to exit after block 3" 20 eval '! any_alive' || {
		ps -o pid=,stat=,args= -p "${fleet_pids[*]// /,}" >&2; fail "block 3 did not stop every process"; }
	local p rc bad=0
	for p in "${fleet_pids[@]}"; do
		rc=0; wait "$p" || rc=$?
		[ "$rc" = 0 ] || { echo "$me: process $p exited $rc after SIGTERM" >&2; bad=1; }
	done
	[ "$bad" = 0 ] || fail "not every process shut down cleanly"
	grep -E '"level":"(ERROR|error)"|level=ERROR|panic' "$tmp/fleet.log" >&2 && fail "the fleet logged errors (above)"
	say "block 3 stopped all ${#fleet_pids[@]} processes, each exiting 0, in $((SECONDS - ts)) s"
}

if [ "${1:-}" = __inner ]; then inner; else outer; fi
