#!/usr/bin/env bash
# scripts/bench.sh: microshop beside its yardsticks, measured side by side
# in one run (issue 12). It builds microshop, bench/floor and bench/insert,
# starts fleets of `microshop all` (real Redis, a fleet key, auth on) and
# learns their addresses from their --ready-file: a (SQLite in a temporary
# directory, limits off), b (SQLite, every limit on and set so high that
# none is hit) and, when MariaDB/MySQL answers on 127.0.0.1:3306, c (a
# throwaway database, limits off, dropped at the end); it seeds 100 goods
# with the admin key and signs up and logs in a member on each, starts the
# floor (net/http and one go-redis GET per request) serving byte for byte
# the bodies the gate answers, then runs each workload in turn, alternating
# (ABBA) microshop and its yardstick, and prints one table: req/s, p50, p99,
# errors and the ratio to the yardstick:
#
#   GET /goods?id=N, GET /goods            fleet a, anonymous / the floor
#   GET /goods?id=N with a member's token  fleet b / fleet a anonymous
#   POST /purchases (token, Idempotency-Key) fleet a, fleet c / bench/insert:
#                                          the same INSERT, same driver and
#                                          settings, CONNS workers
#
#   scripts/bench.sh                      # 8 s a run
#   BENCH_DURATION=1s scripts/bench.sh    # what CI runs: proves it works
#
# Environment:
#   BENCH_DURATION  each measured run (wrk -d), default 8s
#   BENCH_WARMUP    an unrecorded run of each target before each workload, default 1s
#   BENCH_CONNS     wrk -c, default 32;  BENCH_THREADS: wrk -t, default 1
#   BENCH_ROUNDS    runs of each target per workload (alternating, ABBA), averaged; default 1
#   BENCH_ONLY      an extended regular expression: only the workloads whose name
#                   matches it (e.g. BENCH_ONLY=MariaDB), default all
#   BENCH_REDIS     a redis://127.0.0.1:PORT/DB URL to use; default: a private
#                   redis-server on a free loopback port, stopped at the end
#   BENCH_MYSQL     the MariaDB/MySQL server, a DSN without a database,
#                   default mysql://root@tcp(127.0.0.1:3306)/; BENCH_NO_MYSQL=1
#                   skips it (skipped too, with a message, when none answers)
#   BENCH_GOMAXPROCS  GOMAXPROCS of every Go program measured alike (the
#                   fleets, the floor, bench/insert); default unset, Go's own
#                   (the number of cores). On a 2-core machine, 1 leaves wrk a
#                   core of its own: the p99 then shows the servers' tails
#                   rather than their threads and wrk's competing for cores
#   BENCH_PPROF     set to 1 to keep the fleets up after the table until Enter
#                   (their --debug-addr, for go tool pprof, is printed)
#
# With BENCH_DURATION=1s (CI) it takes under a minute (48 s measured with
# BENCH_DURATION=2s: three fleets, seeding, ten runs and their warm-ups).
#
# Everything listens on and is sent to 127.0.0.1 only; the script stops
# only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-8s}
WARMUP=${BENCH_WARMUP:-1s}
CONNS=${BENCH_CONNS:-32}
THREADS=${BENCH_THREADS:-1}
ROUNDS=${BENCH_ROUNDS:-1}
GOODS=100
ADMIN=bench-admin-key-$RANDOM$RANDOM-0123456789

say() { printf '%s\n' "$*" >&2; }
die() { printf '\nbench: %s\n' "$*" >&2; exit 1; }

if ! command -v wrk >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		say "wrk is not installed: installing it (apt-get install -y wrk)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } ||
			die "could not install wrk; install it (apt-get install wrk) and run again"
	else
		die "wrk is not installed: install it (apt-get install wrk, brew install wrk) and run again"
	fi
fi
command -v curl >/dev/null || die "curl is not installed"

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ -n "${have_mysql:-}" ]; then # the throwaway databases
		"$work/insert" --db "$mysql_db" --drop || say "bench: could not drop $mysql_db"
		"$work/insert" --db "$mysql_raw" --drop || say "bench: could not drop $mysql_raw"
	fi
	rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # wait_for WHAT SECONDS PID COMMAND...: poll COMMAND while PID lives
	local what=$1 secs=$2 pid=$3; shift 3
	for _ in $(seq 1 "$((secs * 10))"); do
		"$@" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready"
		sleep 0.1
	done
	die "$what was not ready within ${secs}s"
}

free_port() { # a loopback port nobody answers on
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

redis_ping() { # redis_ping PORT
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'PING\r\n' >&3
	local line
	read -r -t 1 line <&3 || { exec 3>&-; return 1; }
	exec 3>&-
	[[ $line == +PONG* ]]
}

say "bench: building microshop and the floor"
go build -o "$work/microshop" ./cmd/microshop
go build -o "$work/floor" ./bench/floor
go build -o "$work/insert" ./bench/insert
if [ -n "${BENCH_GOMAXPROCS:-}" ]; then
	[[ $BENCH_GOMAXPROCS =~ ^[1-9][0-9]*$ ]] || die "BENCH_GOMAXPROCS=$BENCH_GOMAXPROCS: want a whole number of 1 or more"
	export GOMAXPROCS=$BENCH_GOMAXPROCS # after the builds: every program measured from here
fi

# --- Redis: shared by microshop and the floor -----------------------------
if [ -n "${BENCH_REDIS:-}" ]; then
	REDIS=$BENCH_REDIS
	case $REDIS in redis://127.0.0.1:*) ;; *) die "BENCH_REDIS must be redis://127.0.0.1:PORT/DB (the bench targets this machine only)" ;; esac
else
	command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server), or set BENCH_REDIS=redis://127.0.0.1:6379/0"
	rport=$(free_port)
	redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
	pids+=($!)
	wait_for "redis-server" 10 "$!" redis_ping "$rport"
	REDIS=redis://127.0.0.1:$rport/0
fi

# --- microshop all ----------------------------------------------------------
FLEET_KEY=bench-fleet-key-$RANDOM$RANDOM-0123456789
HIGH=1000000/s # limits on, set so high that none is hit
fleet_pids=()
start_fleet() { # start_fleet NAME DB LIMIT: a microshop all; sets fleet_gate, fleet_debug
	local name=$1 db=$2 lim=$3 dir=$work/$1
	mkdir -p "$dir"
	say "bench: starting microshop all ($name: $db, limits $lim)"
	"$work/microshop" all --addr 127.0.0.1:0 --random-ports --ready-file "$dir/ready.json" \
		--db "$db" --redis "$REDIS" --redis-prefix "bench$$$name:" --fleet-key "$FLEET_KEY" \
		--admin-key "$ADMIN" --rate-limit "$lim" --rate-limit-strict "$lim" --rate-limit-member "$lim" \
		--debug-addr 127.0.0.1:0 --log-level warn >"$dir/microshop.out" 2>"$dir/microshop.err" &
	local pid=$!
	pids+=("$pid")
	fleet_pids+=("$pid")
	wait_for "microshop all $name (see its log: $dir/microshop.err)" 60 "$pid" test -s "$dir/ready.json" ||
		{ cat "$dir/microshop.err" >&2; exit 1; }
	local ready
	ready=$(cat "$dir/ready.json")
	fleet_gate=$(printf '%s' "$ready" | sed -nE 's/.*"gate":\{"http":"([^"]+)".*/\1/p')
	fleet_debug=$(printf '%s' "$ready" | sed -nE 's/.*"ops":\{[^}]*"debug":"([^"]+)".*/\1/p')
	[ -n "$fleet_gate" ] || die "the ready file names no gate address: $ready"
	case $fleet_gate in 127.0.0.1:*) ;; *) die "the gate listens on $fleet_gate, not on 127.0.0.1" ;; esac
}

seed() { # seed GATE: the goods, and a member; sets token
	local gate=$1 i body ans
	say "bench: seeding $GOODS goods and a member on $gate"
	for i in $(seq 1 "$GOODS"); do
		body=$(printf '{"name":"good %d","category":"bench","price":%d,"description":"Good number %d of the bench: a plain description, long enough to look like one, with <&> in it."}' "$i" "$((i * 100))" "$i")
		ans=$(curl -sS -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$body" "http://$gate/goods")
		[[ $ans == *"\"id\":$i}"* ]] || die "POST /goods $i answered $ans; want id $i (a fresh database)"
	done
	ans=$(curl -sS -X POST -d 'username=bench&password=bench-password-1' "http://$gate/members")
	[[ $ans == *'"userid":'* ]] || die "POST /members answered $ans"
	ans=$(curl -sS -X POST -d 'username=bench&password=bench-password-1' "http://$gate/sessions")
	token=$(printf '%s' "$ans" | sed -nE 's/.*"token":"([^"]+)".*/\1/p')
	[ -n "$token" ] || die "POST /sessions answered $ans"
}

# Fleet a: SQLite, limits off (the anonymous workloads, and POST /purchases
# on SQLite); fleet b: limits on, set high (the member's token).
start_fleet a "sqlite:$work/a/bench.db" 0
gate=$fleet_gate debug=$fleet_debug
seed "$gate"
token_a=$token
start_fleet b "sqlite:$work/b/bench.db" "$HIGH"
gate_b=$fleet_gate debug_b=$fleet_debug
seed "$gate_b"
token_b=$token
curl -sSf -H "Authorization: Bearer $token_b" "http://$gate_b/goods?id=7" >/dev/null || die "a member's GET /goods?id=7 on fleet b failed"

# Fleet c: MariaDB/MySQL, limits off, when one answers on 127.0.0.1:3306
# (BENCH_MYSQL: its DSN without a database, default root with no password).
MYSQL=${BENCH_MYSQL:-mysql://root@tcp(127.0.0.1:3306)/}
case $MYSQL in "mysql://"*"@tcp(127.0.0.1:"*")/") ;; *) die "BENCH_MYSQL must be mysql://user[:pass]@tcp(127.0.0.1:PORT)/ (the bench targets this machine only)" ;; esac
mysql_db=${MYSQL}microshop_bench_$$
mysql_raw=${MYSQL}microshop_bench_raw_$$
have_mysql=
mport=$(printf '%s' "$MYSQL" | sed -nE 's/.*tcp\(127\.0\.0\.1:([0-9]+)\).*/\1/p')
if [ "${BENCH_NO_MYSQL:-}" != 1 ] && (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null &&
	"$work/insert" --db "$mysql_raw" --duration 0s >/dev/null 2>"$work/mysql-check.err"; then
	have_mysql=1
	start_fleet c "$mysql_db" 0
	gate_c=$fleet_gate debug_c=$fleet_debug
	seed "$gate_c"
	token_c=$token
else
	say "bench: no MariaDB/MySQL answers on 127.0.0.1:$mport ($(head -c 200 "$work/mysql-check.err" 2>/dev/null)): skipping the MariaDB workloads"
fi

# --- the floor --------------------------------------------------------------
"$work/floor" --addr 127.0.0.1:0 --redis "$REDIS" --prefix "bench$$-floor:" \
	--copy-from "http://$gate" --copy-goods "$GOODS" --ready-file "$work/floor.addr" >"$work/floor.log" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")
wait_for "the floor (see $work/floor.log)" 30 "$floor_pid" test -s "$work/floor.addr"
floor=$(cat "$work/floor.addr")

# The floor serves what the gate answers, but for the key the gate numbers
# each answer with.
for path in "/goods?id=7" "/goods"; do
	a=$(curl -sS "http://$gate$path" | sed -E 's/^\{"key":[0-9]+,/{/')
	b=$(curl -sS "http://$floor$path" | sed -E 's/^\{"key":[0-9]+,/{/')
	[ "$a" = "$b" ] || die "the floor's GET $path differs from the gate's:
gate:  $a
floor: $b"
done

# --- wrk --------------------------------------------------------------------
cat >"$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.1f %.2f %.2f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status + e.connect + e.read + e.write + e.timeout))
end
EOF
cat >"$work/ids.lua" <<EOF
local n, i = $GOODS, 0
request = function()
  i = i % n + 1
  return wrk.format("GET", "/goods?id=" .. i)
end
dofile("$work/report.lua")
EOF
cat >"$work/list.lua" <<EOF
dofile("$work/report.lua")
EOF

cat >"$work/member.lua" <<EOF
local n, i = $GOODS, 0
local headers = { ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN") }
request = function()
  i = i % n + 1
  return wrk.format("GET", "/goods?id=" .. i, headers)
end
dofile("$work/report.lua")
EOF
# POST /purchases: the member's token, and a new Idempotency-Key each
# request (BENCH_TAG is new each run; the thread's number is in it too).
cat >"$work/buy.lua" <<EOF
local n, i, threads = $GOODS, 0, 0
setup = function(thread) threads = threads + 1; thread:set("tid", threads) end
local token, tag = os.getenv("BENCH_TOKEN"), os.getenv("BENCH_TAG")
request = function()
  i = i + 1
  return wrk.format("POST", "/purchases", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Idempotency-Key"] = tag .. "-" .. tostring(tid) .. "-" .. i,
  }, "goodsid=" .. (i % n + 1))
end
dofile("$work/report.lua")
EOF

# A workload compares target A with its baseline B: "name|A|B". Targets
# are measured by measure (below).
workloads=(
	"GET /goods?id=N|ms_ids|floor_ids"
	"GET /goods|ms_list|floor_list"
	"GET /goods?id=N, member token, limits on|member_ids|anon_ids"
	"POST /purchases, SQLite|buy_sqlite|raw_sqlite"
)
[ -n "$have_mysql" ] && workloads+=("POST /purchases, MariaDB|buy_mysql|raw_mysql")
if [ -n "${BENCH_ONLY:-}" ]; then
	kept=()
	for w in "${workloads[@]}"; do
		[[ ${w%%|*} =~ $BENCH_ONLY ]] && kept+=("$w")
	done
	[ ${#kept[@]} -gt 0 ] || die "BENCH_ONLY=$BENCH_ONLY matches no workload"
	workloads=("${kept[@]}")
fi
label() { # what the table calls a target
	case $1 in
	ms_*) echo microshop ;;
	floor_*) echo floor ;;
	member_ids) echo "microshop, member, limits on" ;;
	anon_ids) echo "microshop, anonymous, limits off" ;;
	buy_*) echo microshop ;;
	raw_*) echo "raw INSERT (bench/insert, $CONNS workers)" ;;
	esac
}
total=$((${#workloads[@]} * ROUNDS * 2))
n=0

wrk_run() { # wrk_run ADDR PATH SCRIPT DURATION [ENV...]: prints "req/s p50 p99 errors"
	local addr=$1 path=$2 script=$3 dur=$4 out pid
	shift 4
	out=$(env "$@" wrk -t"$THREADS" -c"$CONNS" -d"$dur" -s "$script" "http://$addr$path" 2>&1) || die "wrk failed: $out"
	for pid in "${fleet_pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || die "a microshop all exited during the run: $(tail -5 "$work"/*/microshop.err)"
	done
	printf '%s\n' "$out" | sed -n 's/^BENCH //p'
}

runs=0
measure() { # measure TARGET DURATION: prints "req/s p50 p99 errors"
	runs=$((runs + 1))
	local tag=run$runs-$$-$RANDOM
	case $1 in
	ms_ids | anon_ids) wrk_run "$gate" /goods "$work/ids.lua" "$2" ;;
	floor_ids) wrk_run "$floor" /goods "$work/ids.lua" "$2" ;;
	ms_list) wrk_run "$gate" /goods "$work/list.lua" "$2" ;;
	floor_list) wrk_run "$floor" /goods "$work/list.lua" "$2" ;;
	member_ids) wrk_run "$gate_b" /goods "$work/member.lua" "$2" BENCH_TOKEN="$token_b" ;;
	buy_sqlite) wrk_run "$gate" /purchases "$work/buy.lua" "$2" BENCH_TOKEN="$token_a" BENCH_TAG="$tag" ;;
	buy_mysql) wrk_run "$gate_c" /purchases "$work/buy.lua" "$2" BENCH_TOKEN="$token_c" BENCH_TAG="$tag" ;;
	raw_sqlite) "$work/insert" --db "sqlite:$work/raw.db" --workers "$CONNS" --duration "$2" | sed -n 's/^INSERT //p' ;;
	raw_mysql) "$work/insert" --db "$mysql_raw" --workers "$CONNS" --duration "$2" | sed -n 's/^INSERT //p' ;;
	*) die "unknown target $1" ;;
	esac
}

declare -A sum
for w in "${!workloads[@]}"; do
	IFS='|' read -r wname ta tb <<<"${workloads[$w]}"
	for target in "$ta" "$tb"; do
		printf '\r\033[K  warming up: %s on %s' "$wname" "$(label "$target")" >&2
		res=$(measure "$target" "$WARMUP")
	done
	for r in $(seq 1 "$ROUNDS"); do
		order="$ta $tb"; [ $((r % 2)) = 0 ] && order="$tb $ta"
		for target in $order; do
			n=$((n + 1))
			printf '\r\033[K  [%d/%d] %s on %s, %s, %d connections' "$n" "$total" "$wname" "$(label "$target")" "$DURATION" "$CONNS" >&2
			res=$(measure "$target" "$DURATION")
			[ -n "$res" ] || die "$wname on $(label "$target") measured nothing"
			read -r rps p50 p99 errs <<<"$res"
			k="$w,$target"
			sum[$k]=$(awk -v a="${sum[$k]:-0 0 0 0}" -v b="$rps $p50 $p99 $errs" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%s %s %s %s", x[1]+y[1], x[2]+y[2], x[3]+y[3], x[4]+y[4] }')
		done
	done
done
printf '\r\033[K' >&2

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
echo "microshop bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores${cpu:+ ($cpu)}, $(go env GOVERSION)"
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS run(s) of each, alternating; $GOODS goods; Redis $(redis-server --version 2>/dev/null | sed -nE 's/.*v=([0-9.]+).*/\1/p'); microshop all, fleet key, auth on; GOMAXPROCS ${GOMAXPROCS:-default ($(nproc))}:"
echo "fleet a SQLite, limits off; fleet b SQLite, limits $HIGH (address, strict, member); fleet c: $([ -n "$have_mysql" ] && echo "MariaDB/MySQL, limits off" || echo "skipped (no MariaDB/MySQL)")"
echo "ratio: to the workload's second line (the floor; the anonymous request, limits off; the raw insert rate)"
echo
echo "| workload | server | req/s | p50 ms | p99 ms | errors | ratio |"
echo "|---|---|---:|---:|---:|---:|---:|"
for w in "${!workloads[@]}"; do
	IFS='|' read -r wname ta tb <<<"${workloads[$w]}"
	read -r brps _ <<<"${sum[$w,$tb]}"
	for target in "$ta" "$tb"; do
		awk -v s="${sum[$w,$target]}" -v f="$brps" -v r="$ROUNDS" -v wl="$wname" -v t="$(label "$target")" 'BEGIN {
			split(s, x, " ")
			printf "| `%s` | %s | %.0f | %.2f | %.2f | %d | %.2f |\n", wl, t, x[1]/r, x[2]/r, x[3]/r, x[4], (f > 0 ? x[1]/f : 0)
		}'
	done
done

if [ "${BENCH_PPROF:-}" = 1 ]; then
	say ""
	say "the fleets are still up: floor http://$floor"
	say "  a (limits off):  gate http://$gate, pprof http://$debug/debug/pprof/, a member's token: $token_a"
	say "  b (limits on):   gate http://$gate_b, pprof http://$debug_b/debug/pprof/, a member's token: $token_b"
	[ -n "$have_mysql" ] && say "  c (MariaDB):     gate http://$gate_c, pprof http://$debug_c/debug/pprof/, a member's token: $token_c"
	say "e.g. go tool pprof -top 'http://$debug/debug/pprof/profile?seconds=5' while wrk runs; Enter stops everything"
	read -r _
fi
