#!/usr/bin/env bash
# Cross-node popup latency (docs/benchmarks.md): two gateway nodes on one PostgreSQL
# database and one Redis, both started here. In the same run it measures the popup
# round trip (provider POST -> agent socket frame) three ways with loadgen popup-rtt:
#   single node, SQLite      (a separate plain node: the embedded default)
#   same node,   cluster     (posted to node A, socket on node A)
#   cross node,  cluster     (posted to node A, socket on node B: delivered over Redis)
#
# Needs PostgreSQL (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432, a user that
# may create databases) and redis-server on PATH (a private one is started on a free
# port). Environment: BENCH_COUNT (default 2000), BENCH_GATEWAY_TARGET_DIR,
# BENCH_LOADGEN_TARGET_DIR as in scripts/bench.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GATEWAY_TARGET="${BENCH_GATEWAY_TARGET_DIR:-/tmp/bench-target}"
LOADGEN_TARGET="${BENCH_LOADGEN_TARGET_DIR:-/tmp/loadgen-target}"
GATEWAY="$GATEWAY_TARGET/release/utc-gateway"
LOADGEN="$LOADGEN_TARGET/release/loadgen"
PG="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
COUNT="${BENCH_COUNT:-2000}"

echo "== building (release)"
CARGO_TARGET_DIR="$GATEWAY_TARGET" cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
CARGO_TARGET_DIR="$LOADGEN_TARGET" cargo build --release --quiet --manifest-path "$ROOT/tools/loadgen/Cargo.toml"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/utc-bench-cluster.XXXXXX")"
TOKEN="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
DB="utc_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
REDIS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

psql "$PG/postgres" -qc "CREATE DATABASE $DB"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)

# start_node NAME STORE_URL [cluster]: starts a gateway, sets URL_<NAME>
start_node() {
    local name="$1" store="$2" cluster="${3:-}"
    local env=(
        UTC__SERVER__LISTEN=127.0.0.1:0
        UTC__STORE__URL="$store"
        UTC__AUTH__ADMIN_TOKEN="$TOKEN"
        UTC__LOG__LEVEL=warn
        UTC__LIMITS__PROVIDER_RATE_PER_SEC=1000000
        UTC__LIMITS__PROVIDER_BURST=1000000
    )
    if [[ -n "$cluster" ]]; then
        env+=(UTC__CLUSTER__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" UTC__CLUSTER__NODE_ID="$name")
    fi
    (cd "$WORK" && exec env "${env[@]}" "$GATEWAY" serve) >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    local url=""
    for _ in $(seq 1 300); do
        url="$(sed -n 's/^utc-gateway listening on \(http:\/\/[^ ]*\).*/\1/p' "$WORK/$name.out" | head -n 1)"
        [[ -n "$url" ]] && break
        sleep 0.1
    done
    [[ -n "$url" ]] || { cat "$WORK/$name.out" "$WORK/$name.err" >&2; exit 1; }
    printf -v "URL_$name" '%s' "$url"
    echo "node $name at $url"
}

start_node single "sqlite://$WORK/single.db"
start_node a "$PG/$DB" cluster
start_node b "$PG/$DB" cluster
sleep 2 # presence refresh: each node learns of the other

echo
echo "== machine"
echo "uname: $(uname -a)"
echo "nproc: $(nproc)"
echo "cpu:   $(grep -m1 -E '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"

bench() {
    echo
    echo "== $1"
    shift
    "$LOADGEN" popup-rtt --count "$COUNT" --warmup 100 --leads 100 --admin-token "$TOKEN" "$@"
}
bench "single node, embedded SQLite" --url "$URL_single"
bench "cluster, same node (posted to a, socket on a)" --url "$URL_a"
bench "cluster, cross node (posted to a, socket on b)" --url "$URL_a" --socket-url "$URL_b"
bench "cluster, cross node, 4 senders" --url "$URL_a" --socket-url "$URL_b" --concurrency 4
