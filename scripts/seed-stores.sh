#!/usr/bin/env bash
# Adds N stores (default 10,000) at random points around Seoul, 8 at a time.
#   BASE=http://127.0.0.1:8000 ADMIN=<admin key> N=10000 scripts/seed-stores.sh
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8000}
N=${N:-10000}
auth=()
[ -n "${ADMIN:-}" ] && auth=(-H "Authorization: Bearer $ADMIN")
seq 1 "$N" | awk 'BEGIN{srand()} {printf "name=store%d&longitude=%.6f&latitude=%.6f\n", $1, 126.7+rand()*0.6, 37.35+rand()*0.4}' |
	xargs -P 8 -I{} curl -sS -o /dev/null -w '%{http_code}\n' -X POST "$BASE/stores" "${auth[@]}" -d '{}' |
	sort | uniq -c
