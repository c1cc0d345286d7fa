#!/usr/bin/env bash
# scripts/bench.sh: microshop beside its floor, measured side by side in one
# run (issue 12). It builds microshop and bench/floor, starts `microshop all`
# (real Redis, SQLite in a temporary directory, auth on, limits off) and
# learns its addresses from its --ready-file, seeds 100 goods with the admin
# key, starts the floor (net/http and one go-redis GET per request) serving
# byte for byte the bodies the gate answers, then runs wrk for each
# workload in turn, alternating microshop and the floor, and prints one
# table: req/s, p50, p99, errors and the ratio to the floor.
#
#   scripts/bench.sh                      # 8 s a run
#   BENCH_DURATION=1s scripts/bench.sh    # what CI runs: proves it works
#
# Environment:
#   BENCH_DURATION  each measured run (wrk -d), default 8s
#   BENCH_WARMUP    an unrecorded run of each target before each workload, default 1s
#   BENCH_CONNS     wrk -c, default 32;  BENCH_THREADS: wrk -t, default 1
#   BENCH_ROUNDS    runs of each target per workload (alternating, ABBA), averaged; default 1
#   BENCH_REDIS     a redis://127.0.0.1:PORT/DB URL to use; default: a private
#                   redis-server on a free loopback port, stopped at the end
#   BENCH_PPROF     set to 1 to keep the fleet up after the table until Enter
#                   (its --debug-addr, for go tool pprof, is printed)
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
say "bench: starting microshop all"
"$work/microshop" all --addr 127.0.0.1:0 --random-ports --ready-file "$work/ready.json" \
	--db "sqlite:$work/bench.db" --redis "$REDIS" --redis-prefix "bench$$:" \
	--admin-key "$ADMIN" --rate-limit 0 --rate-limit-strict 0 --rate-limit-member 0 \
	--debug-addr 127.0.0.1:0 --log-level warn >"$work/microshop.out" 2>"$work/microshop.err" &
ms_pid=$!
pids+=("$ms_pid")
wait_for "microshop all (see its log: $work/microshop.err)" 30 "$ms_pid" test -s "$work/ready.json" ||
	{ cat "$work/microshop.err" >&2; exit 1; }
ready=$(cat "$work/ready.json")
gate=$(printf '%s' "$ready" | sed -nE 's/.*"gate":\{"http":"([^"]+)".*/\1/p')
debug=$(printf '%s' "$ready" | sed -nE 's/.*"ops":\{[^}]*"debug":"([^"]+)".*/\1/p')
[ -n "$gate" ] || die "the ready file names no gate address: $ready"
case $gate in 127.0.0.1:*) ;; *) die "the gate listens on $gate, not on 127.0.0.1" ;; esac

say "bench: seeding $GOODS goods"
for i in $(seq 1 "$GOODS"); do
	body=$(printf '{"name":"good %d","category":"bench","price":%d,"description":"Good number %d of the bench: a plain description, long enough to look like one, with <&> in it."}' "$i" "$((i * 100))" "$i")
	ans=$(curl -sS -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$body" "http://$gate/goods")
	[[ $ans == *"\"id\":$i}"* ]] || die "POST /goods $i answered $ans; want id $i (a fresh database)"
done

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

workloads=("GET /goods?id=N" "GET /goods")
scripts=("$work/ids.lua" "$work/list.lua")
paths=("/goods" "/goods")
total=$((${#workloads[@]} * ROUNDS * 2))
n=0

run() { # run TARGET ADDR PATH SCRIPT DURATION: prints "req/s p50 p99 errors"
	local out
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$5" -s "$4" "http://$2$3" 2>&1) || die "wrk failed: $out"
	kill -0 "$ms_pid" 2>/dev/null || die "microshop all exited during the run: $(tail -5 "$work/microshop.err")"
	printf '%s\n' "$out" | sed -n 's/^BENCH //p'
}

declare -A sum
for w in "${!workloads[@]}"; do
	for target in microshop floor; do
		addr=$gate; [ "$target" = floor ] && addr=$floor
		printf '\r\033[K  warming up: %s on %s' "${workloads[$w]}" "$target" >&2
		res=$(run "$target" "$addr" "${paths[$w]}" "${scripts[$w]}" "$WARMUP")
	done
	for r in $(seq 1 "$ROUNDS"); do
		order="microshop floor"; [ $((r % 2)) = 0 ] && order="floor microshop"
		for target in $order; do
			n=$((n + 1))
			addr=$gate; [ "$target" = floor ] && addr=$floor
			printf '\r\033[K  [%d/%d] %s on %s, %s, %d connections' "$n" "$total" "${workloads[$w]}" "$target" "$DURATION" "$CONNS" >&2
			res=$(run "$target" "$addr" "${paths[$w]}" "${scripts[$w]}" "$DURATION")
			read -r rps p50 p99 errs <<<"$res"
			k="$w,$target"
			sum[$k]=$(awk -v a="${sum[$k]:-0 0 0 0}" -v b="$rps $p50 $p99 $errs" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%s %s %s %s", x[1]+y[1], x[2]+y[2], x[3]+y[3], x[4]+y[4] }')
		done
	done
done
printf '\r\033[K' >&2

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
echo "microshop bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores${cpu:+ ($cpu)}, $(go env GOVERSION)"
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS run(s) of each, alternating; $GOODS goods; microshop all: SQLite, Redis $(redis-server --version 2>/dev/null | sed -nE 's/.*v=([0-9.]+).*/\1/p'), auth on, anonymous, limits off"
echo
echo "| workload | server | req/s | p50 ms | p99 ms | errors | ratio to the floor |"
echo "|---|---|---:|---:|---:|---:|---:|"
for w in "${!workloads[@]}"; do
	read -r frps _ <<<"${sum[$w,floor]}"
	for target in microshop floor; do
		awk -v s="${sum[$w,$target]}" -v f="$frps" -v r="$ROUNDS" -v wl="${workloads[$w]}" -v t="$target" 'BEGIN {
			split(s, x, " ")
			printf "| `%s` | %s | %.0f | %.2f | %.2f | %d | %.2f |\n", wl, t, x[1]/r, x[2]/r, x[3]/r, x[4], (f > 0 ? x[1]/f : 0)
		}'
	done
done

if [ "${BENCH_PPROF:-}" = 1 ]; then
	say ""
	say "the fleet is still up: gate http://$gate, floor http://$floor, pprof http://$debug/debug/pprof/"
	say "e.g. go tool pprof -top 'http://$debug/debug/pprof/profile?seconds=5' while wrk runs; Enter stops everything"
	read -r _
fi
