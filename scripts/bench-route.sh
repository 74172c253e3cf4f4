#!/usr/bin/env bash
# Call-route latency of utc-gateway over many leads (see tools/loadgen/README.md).
# Not part of bench.sh: seeding a million leads takes a while.
#
# Builds the gateway and tools/loadgen in release mode (build output goes to /tmp, never
# into the repository), then in a fresh temporary directory with a random admin token:
#   1. starts the gateway (it creates and migrates the SQLite database) and runs
#      `loadgen route-setup` (a connector and the agent who will own the leads);
#   2. stops the gateway with SIGTERM and seeds $LEADS leads owned by that agent straight
#      into the database with scripts/seed_leads.py (Python 3 standard library);
#   3. starts the gateway again on the same database and settings and runs
#      call-route --count 10000 --concurrency 1
#      call-route --count 20000 --concurrency 4
#   4. prints the gateway's stderr and stops it with SIGTERM.
# It prints the machine, the seeding time and the database size on the way, and exits
# non-zero if any step or benchmark failed.
#
# Environment:
#   LEADS                     leads to seed (default 1000000)
#   BENCH_GATEWAY_SRC         the gateway source tree to build (default: this repository)
#   BENCH_GATEWAY_TARGET_DIR  cargo target dir of the gateway (default /tmp/bench-target)
#   BENCH_LOADGEN_TARGET_DIR  cargo target dir of loadgen (default /tmp/loadgen-target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GATEWAY_SRC="${BENCH_GATEWAY_SRC:-$ROOT}"
GATEWAY_TARGET="${BENCH_GATEWAY_TARGET_DIR:-/tmp/bench-target}"
LOADGEN_TARGET="${BENCH_LOADGEN_TARGET_DIR:-/tmp/loadgen-target}"
GATEWAY="$GATEWAY_TARGET/release/utc-gateway"
LOADGEN="$LOADGEN_TARGET/release/loadgen"
LEADS="${LEADS:-1000000}"
NUMBER_BASE=9000000000

if ! [[ "$LEADS" =~ ^[1-9][0-9]*$ ]]; then
    echo "LEADS must be a positive integer (got '$LEADS')" >&2
    exit 2
fi

echo "== building (release)"
echo "gateway from $GATEWAY_SRC"
CARGO_TARGET_DIR="$GATEWAY_TARGET" cargo build --release --quiet --manifest-path "$GATEWAY_SRC/Cargo.toml"
CARGO_TARGET_DIR="$LOADGEN_TARGET" cargo build --release --quiet --manifest-path "$ROOT/tools/loadgen/Cargo.toml"

# The same open-file limit as bench.sh (the gateway keeps one descriptor per socket).
if ! ulimit -n 65536 2>/dev/null; then
    hard="$(ulimit -Hn)"
    echo "note: cannot raise the open-file limit to 65536 (hard limit $hard); using $hard"
    ulimit -n "$hard"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/utc-bench-route.XXXXXX")"
TOKEN="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
DB="$WORK/utc.db"
GW_PID=""
URL=""
STARTS=0

stop_gateway() {
    if [[ -n "$GW_PID" ]] && kill -0 "$GW_PID" 2>/dev/null; then
        kill -TERM "$GW_PID" 2>/dev/null || true
        local status=0
        wait "$GW_PID" || status=$?
        echo "gateway stopped with SIGTERM (exit status $status)"
    fi
    GW_PID=""
}
cleanup() {
    stop_gateway
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts the gateway on $DB (port chosen by the kernel) and sets GW_PID and URL. Every
# start has its own output files ($WORK/gateway.<n>.out/.err).
start_gateway() {
    STARTS=$((STARTS + 1))
    local out="$WORK/gateway.$STARTS.out" err="$WORK/gateway.$STARTS.err"
    # The provider rate limit is lifted so the figures measure the gateway, not the limiter.
    (
        cd "$WORK"
        exec env \
            UTC__SERVER__LISTEN=127.0.0.1:0 \
            UTC__STORE__URL="sqlite://$DB" \
            UTC__AUTH__ADMIN_TOKEN="$TOKEN" \
            UTC__LOG__LEVEL=warn \
            UTC__LIMITS__PROVIDER_RATE_PER_SEC=1000000 \
            UTC__LIMITS__PROVIDER_BURST=1000000 \
            "$GATEWAY" serve
    ) >"$out" 2>"$err" &
    GW_PID=$!
    URL=""
    for _ in $(seq 1 300); do
        URL="$(sed -n 's/^utc-gateway listening on \(http:\/\/[^ ]*\).*/\1/p' "$out" | head -n 1)"
        [[ -n "$URL" ]] && break
        if ! kill -0 "$GW_PID" 2>/dev/null; then
            echo "the gateway exited during start-up:" >&2
            cat "$out" "$err" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z "$URL" ]]; then
        echo "the gateway did not report its address within 30 s" >&2
        cat "$out" "$err" >&2
        exit 1
    fi
    echo "gateway pid $GW_PID at $URL"
}

db_size() {
    local f total=0
    for f in "$DB" "$DB-wal" "$DB-shm"; do
        [[ -f "$f" ]] && total=$((total + $(stat -c %s "$f")))
    done
    local files
    files="$(for f in "$DB" "$DB-wal" "$DB-shm"; do [[ -f "$f" ]] && echo "${f##*/}=$(stat -c %s "$f")"; done | paste -sd ' ')"
    echo "$total bytes ($(awk -v t="$total" 'BEGIN {printf "%.1f", t / 1048576}') MiB: $files)"
}

echo
echo "== machine"
echo "uname: $(uname -a)"
echo "nproc: $(nproc)"
cpu="$(grep -m1 -E '^(model name|Hardware|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
echo "cpu:   ${cpu:-unknown}"
echo "memory: $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "open-file limit: $(ulimit -n)"
echo "python: $(python3 --version 2>&1), sqlite $(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)')"

echo
echo "== setup: a fresh gateway in $WORK"
start_gateway
setup_out="$("$LOADGEN" route-setup --url "$URL" --admin-token "$TOKEN")"
echo "$setup_out" | grep -v '^{'
SETUP_JSON="$(echo "$setup_out" | grep '^{' | head -n 1)"
read -r CONNECTOR_ID ACCESS_KEY SECRET_KEY OWNER_ID < <(
    python3 -c 'import json, sys
v = json.loads(sys.argv[1])
print(v["connector_id"], v["access_key"], v["secret_key"], v["owner_id"])' "$SETUP_JSON"
)
echo "connector $CONNECTOR_ID, owner $OWNER_ID"
stop_gateway
echo "database after setup: $(db_size)"

echo
echo "== seeding $LEADS leads (gateway stopped)"
seed_start=$(date +%s.%N)
python3 "$ROOT/scripts/seed_leads.py" "$DB" --count "$LEADS" --owner-id "$OWNER_ID" --number-base "$NUMBER_BASE"
seed_end=$(date +%s.%N)
echo "seeding took $(awk -v a="$seed_start" -v b="$seed_end" 'BEGIN {printf "%.1f", b - a}') s (wall, including Python start-up)"
echo "database after seeding: $(db_size)"
# The plan SQLite picks for the gateway's lookup by number (the query of
# select_by_number in src/store/sqlite.rs, copied here): it should search
# lead_numbers by its primary key and leads by id, never scan.
python3 - "$DB" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
sql = ("SELECT l.* FROM lead_numbers n JOIN leads l ON l.id = n.lead_id "
       "WHERE n.number = ? ORDER BY l.updated_at DESC, l.id LIMIT ?")
print("query plan of the lookup by number:")
for row in db.execute("EXPLAIN QUERY PLAN " + sql, ("+919000000000", 1)):
    print("  ", row[-1])
db.close()
EOF

echo
echo "== restarting the gateway on the seeded database"
start_gateway

failed=0
run() {
    echo
    echo "== loadgen call-route $*"
    if ! "$LOADGEN" call-route --url "$URL" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
        --owner-id "$OWNER_ID" --numbers "$LEADS" --number-base "$NUMBER_BASE" "$@"; then
        echo "!! loadgen call-route $* failed"
        failed=1
    fi
}

run --count 10000 --concurrency 1
run --count 20000 --concurrency 4

echo
echo "database at the end: $(db_size)"
echo
echo "== gateway stderr (warn and above)"
for n in $(seq 1 "$STARTS"); do
    echo "-- start $n"
    if [[ -s "$WORK/gateway.$n.err" ]]; then
        tail -n 50 "$WORK/gateway.$n.err"
    else
        echo "(empty)"
    fi
done
stop_gateway
exit "$failed"
