#!/usr/bin/env bash
# Runs the README's examples, in the order written, against a freshly
# started fleet, then the error cases, and checks each status.
#   BASE=http://127.0.0.1:8000 ADMIN=<admin key> [METRICS=127.0.0.1:9100] scripts/smoke.sh
# Part 2 creates a member with a random name, two goods and a store, and
# removes what it can afterwards. Exit status 0 means every example answered
# as the README says.
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8000}
: "${ADMIN:?set ADMIN to the admin key (microshop all prints it)}"
user="smoke$RANDOM$RANDOM"
fail=0

hdr=$(mktemp)
trap 'rm -f "$hdr"' EXIT

# check WANT_STATUS curl-args... : runs curl, prints the body, compares status.
# A 429 that is not wanted is waited out (Retry-After) and tried again, as a
# polite client would: the gate's default limits allow 10 writes a second.
check() {
	local want=$1; shift
	local out status
	for _ in 1 2 3; do
		out=$(curl -sS -D "$hdr" -w '\n%{http_code}' "$@")
		status=${out##*$'\n'}
		body=${out%$'\n'*}
		if [ "$status" != 429 ] || [ "$want" = 429 ]; then break; fi
		wait=$(sed -nE 's/^[Rr]etry-[Aa]fter: *([0-9]+).*/\1/p' "$hdr" | head -1)
		sleep "${wait:-1}"
	done
	if [ "$status" != "$want" ]; then
		printf 'FAIL %s (want %s): curl %s\n  %s\n' "$status" "$want" "$*" "$body"
		fail=1
	else
		printf 'ok   %s %s\n' "$status" "$body"
	fi
}
field() { sed -nE "s/.*\"$1\":\"?([^\",}]*).*/\1/p" <<<"$body"; }

# Part 1: the README's examples, in the order written, from "## HTTP API" to
# "## Wire protocol": every curl command (continuation lines joined), with
# http://127.0.0.1:8000 replaced by $BASE; and the "TOKEN=$(curl …)" lines,
# which log in. Each must answer 200, or the status its line ends with
# ("# → 401"). This part needs a freshly started fleet: the examples name
# the ids a fresh one hands out.
readme=${README:-$(dirname "$0")/../README.md}
examples=$(awk '
	/^## HTTP API/ { on = 1 }
	/^## Wire protocol/ { on = 0 }
	on && /^```sh/ { code = 1; next }
	on && /^```/ { code = 0; next }
	code {
		line = $0
		if (cont != "") { line = cont " " line; cont = "" }
		if (line ~ /\\$/) { sub(/\\$/, "", line); cont = line; next }
		if (line ~ /^curl / || line ~ /^TOKEN=/) print line
	}' "$readme")
n=0
while IFS= read -r line; do
	if [[ $line == TOKEN=* ]]; then
		# A login is a write: under the gate's strict limit (10 a second) it
		# may be refused with a 429, which a polite client waits out.
		for _ in 1 2 3; do
			TOKEN=
			eval "$(sed "s|http://127\.0\.0\.1:8000|$BASE|g" <<<"$line")"
			if [[ $TOKEN != *'"errorcode":429'* ]]; then break; fi
			sleep 1
		done
		if [[ ! $TOKEN =~ ^[A-Za-z0-9_-]{20,}$ ]]; then echo "FAIL README: $line gave no token: $TOKEN"; fail=1; else echo "ok   TOKEN=…"; fi
		continue
	fi
	want=200
	if [[ $line =~ \#\ →\ ([0-9]{3})([^0-9]|$) ]]; then want=${BASH_REMATCH[1]}; fi
	cmd=$(sed -E "s/[[:space:]]+#[[:space:]].*\$//; s|http://127\\.0\\.0\\.1:8000|$BASE|g; s/^curl //" <<<"$line")
	eval "args=($cmd)"
	check "$want" "${args[@]}"
	n=$((n + 1))
done <<<"$examples"
if [ "$n" -lt 30 ]; then echo "FAIL README: found only $n curl examples in $readme"; fail=1; fi
echo "smoke: the README's $n examples, in order, done"

# Part 2: the error cases, with a member and goods of its own.
check 200 "$BASE/healthz"
check 200 "$BASE/readyz"
check 200 "$BASE/openapi.json"
check 405 -X PUT "$BASE/goods"
if ! grep -qi '^allow: GET, POST, PATCH, DELETE' "$hdr"; then echo "FAIL PUT /goods: no Allow: GET, POST, PATCH, DELETE"; fail=1; fi

check 200 -X POST "$BASE/members" -d "username=$user&password=correct horse"
check 200 -X POST "$BASE/sessions" -H 'Content-Type: application/json' -d "{\"username\":\"$user\",\"password\":\"correct horse\"}"
TOKEN=$(field token)
check 200 "$BASE/sessions" -H "Authorization: Bearer $TOKEN"
check 200 "$BASE/members?username=$user&password=correct%20horse"

check 200 -X POST "$BASE/goods" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
	-d '{"name":"green tea","category":"drink","price":3000,"description":"from Jeju"}'
good=$(field id)
check 200 -X POST "$BASE/goods" -H "Authorization: Bearer $ADMIN" -d 'name=green tea&category=drink&price=3000&description=from Jeju'
good2=$(field id)
check 401 -X POST "$BASE/goods" -d 'name=x&price=1'
check 403 -X POST "$BASE/goods" -H "Authorization: Bearer $TOKEN" -d 'name=x&price=1'
check 200 "$BASE/goods"
check 200 "$BASE/goods?limit=50"
check 200 "$BASE/goods?limit=1&after=0"
next=$(field next)
if [ -z "$next" ]; then echo "FAIL GET /goods?limit=1 with two goods has no next: $body"; fail=1; fi
check 200 "$BASE/goods?limit=50&after=$next"
check 400 "$BASE/goods?limit=51"
check 400 "$BASE/goods?after=abc"
check 200 "$BASE/goods?id=$good"
check 200 -X PATCH "$BASE/goods" -H "Authorization: Bearer $ADMIN" -d "id=$good&price=2900"
check 200 "$BASE/goods?id=$good"
if ! grep -q '"price":2900' <<<"$body"; then echo "FAIL GET after PATCH /goods: not the new price: $body"; fail=1; fi
check 400 -X PATCH "$BASE/goods" -H "Authorization: Bearer $ADMIN" -d "id=$good&colour=red"
check 400 -X PATCH "$BASE/goods" -H "Authorization: Bearer $ADMIN" -d "id=$good&price=-1"
check 403 -X PATCH "$BASE/goods" -H "Authorization: Bearer $TOKEN" -d "id=$good&price=1"
check 200 -X DELETE "$BASE/goods?id=$good2" -H "Authorization: Bearer $ADMIN"
check 404 "$BASE/goods?id=$good2"
check 404 -X PATCH "$BASE/goods" -H "Authorization: Bearer $ADMIN" -d "id=$good2&price=1"

check 401 -X POST "$BASE/purchases" -d "goodsid=$good"
check 200 -X POST "$BASE/purchases" -H "Authorization: Bearer $TOKEN" -d "goodsid=$good"
idem="\"order-$user\""
check 200 -X POST "$BASE/purchases" -H "Authorization: Bearer $TOKEN" -H "Idempotency-Key: $idem" -d "goodsid=$good"
first=$(field id)
check 200 -X POST "$BASE/purchases" -H "Authorization: Bearer $TOKEN" -H "Idempotency-Key: $idem" -d "goodsid=$good"
if [ "$(field id)" != "$first" ]; then echo "FAIL the same Idempotency-Key made a second purchase ($first, then $(field id))"; fail=1; fi
check 404 -X POST "$BASE/purchases" -H "Authorization: Bearer $TOKEN" -d "goodsid=$good2"
check 200 "$BASE/purchases" -H "Authorization: Bearer $TOKEN"
check 200 "$BASE/purchases?limit=10&after=0" -H "Authorization: Bearer $TOKEN"
check 400 "$BASE/purchases?limit=1001" -H "Authorization: Bearer $TOKEN"
check 200 -X DELETE "$BASE/purchases?id=$first" -H "Authorization: Bearer $TOKEN"
check 200 -X DELETE "$BASE/purchases?id=$first" -H "Authorization: Bearer $TOKEN"
check 404 -X DELETE "$BASE/purchases?id=1" -H "Authorization: Bearer $TOKEN"
check 401 -X DELETE "$BASE/purchases?id=$first"
check 200 "$BASE/rankings?top=10&period=all"
check 200 "$BASE/rankings?top=5&period=day"
check 200 "$BASE/rankings?period=week"
check 400 "$BASE/rankings?period=year"

check 200 -X POST "$BASE/reactions" -H "Authorization: Bearer $TOKEN" -d "goodsid=$good&reaction=like"
check 200 "$BASE/reactions?goodsid=$good" -H "Authorization: Bearer $TOKEN"
check 200 -X DELETE "$BASE/reactions?goodsid=$good" -H "Authorization: Bearer $TOKEN"
check 200 -X POST "$BASE/ratings" -H "Authorization: Bearer $TOKEN" -d "goodsid=$good&stars=4"
check 400 -X POST "$BASE/ratings" -H "Authorization: Bearer $TOKEN" -d "goodsid=$good&stars=9"
check 200 "$BASE/ratings?goodsid=$good"

check 200 -X POST "$BASE/stores" -H "Authorization: Bearer $ADMIN" -d 'name=Myeongdong&longitude=126.9850&latitude=37.5636'
store=$(field id)
check 200 "$BASE/stores?longitude=126.9780&latitude=37.5665&radius=5&limit=20"
check 400 "$BASE/stores?longitude=181&latitude=0"
check 200 -X PATCH "$BASE/stores" -H "Authorization: Bearer $ADMIN" -d "id=$store&name=Myeongdong 2"
check 200 "$BASE/stores?longitude=126.9780&latitude=37.5665&radius=5&limit=20"
if ! grep -q '"name":"Myeongdong 2"' <<<"$body"; then echo "FAIL GET /stores after PATCH: not renamed: $body"; fail=1; fi
check 400 -X PATCH "$BASE/stores" -H "Authorization: Bearer $ADMIN" -d "id=$store&latitude=90"
check 200 -X DELETE "$BASE/stores?id=$store" -H "Authorization: Bearer $ADMIN"
check 404 -X PATCH "$BASE/stores" -H "Authorization: Bearer $ADMIN" -d "id=$store&name=back"

check 200 -X POST "$BASE/chat" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"room":"lobby","text":"hi"}'
msg=$(field id)
check 200 "$BASE/chat/history?room=lobby&limit=100"
check 200 "$BASE/chat/history?room=lobby&limit=100&before=$msg"
check 400 "$BASE/chat/history?room=lobby&limit=501"
check 400 "$BASE/chat/history?room=lobby&before=-1"
check 400 "$BASE/chat/history?room=no%20spaces"

check 200 -X DELETE "$BASE/goods?id=$good" -H "Authorization: Bearer $ADMIN"
check 200 -X DELETE "$BASE/sessions" -H "Authorization: Bearer $TOKEN"
check 401 "$BASE/purchases" -H "Authorization: Bearer $TOKEN"
check 200 -X POST "$BASE/sessions" -d "username=$user&password=correct horse"
TOKEN=$(field token)
check 200 -X DELETE "$BASE/members?username=$user" -H "Authorization: Bearer $TOKEN"
check 404 "$BASE/nowhere"

# the web console: the page, and its fleet view (the admin key's only)
check 200 -o /dev/null "$BASE/"
check 200 "$BASE/console/fleet" -H "Authorization: Bearer $ADMIN"
grep -q '"name":"goods".*"state":"up"' <<<"$body" || { echo "FAIL /console/fleet lists no goods instance up"; fail=1; }
check 401 "$BASE/console/fleet"

# With METRICS=host:port (the fleet's --metrics-addr), the README's metrics example.
if [ -n "${METRICS:-}" ]; then
	scraped=$(curl -fsS "http://$METRICS/metrics" || true)
	if grep -q '^microshop_gate_requests_total{route="GET /goods",status="200"} [1-9]' <<<"$scraped"; then
		echo "ok   metrics: microshop_gate_requests_total counts GET /goods"
	else
		echo "FAIL metrics: no microshop_gate_requests_total for GET /goods at http://$METRICS/metrics"
		fail=1
	fi
fi

if [ "$fail" != 0 ]; then
	echo "smoke: FAILED"
	exit 1
fi
echo "smoke: every example answered as documented"
