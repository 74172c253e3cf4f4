#!/usr/bin/env bash
# Whole-system benchmark of utc-gateway (see tools/loadgen/README.md).
#
# Builds the gateway and tools/loadgen in release mode (build output goes to /tmp, never
# into the repository), starts a fresh gateway on a free port with a throw-away SQLite
# database and a random admin token, runs:
#   popup-rtt --count 1000
#   popup-rtt --count 2000 --concurrency 4
#   call-log --count 5000 --concurrency 1
#   call-log --duration-secs 20 --concurrency C for C in BENCH_CALL_LOG_SENDERS
#                                                (sustained; default "4 32")
#   popup-rate --sockets 1000 --rate 1000 --secs 10       (the latency goal)
#   popup-rate --sockets 1000 --rate R for R in BENCH_RATES (the throughput sweep)
#   idle-sockets --sockets BENCH_IDLE_SOCKETS (default 15000)
# prints the machine and the results, then stops the gateway with SIGTERM.
#
# Environment: BENCH_RATES (default "2000 5000 10000"), BENCH_CALL_LOG_SENDERS (default
# "4 32"), BENCH_IDLE_SOCKETS (default
# 15000), BENCH_ONLY (modes to run, e.g. "popup-rate idle-sockets"; default all),
# BENCH_GATEWAY_TARGET_DIR (default /tmp/bench-target) and
# BENCH_LOADGEN_TARGET_DIR (default /tmp/loadgen-target) choose the cargo target dirs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GATEWAY_TARGET="${BENCH_GATEWAY_TARGET_DIR:-/tmp/bench-target}"
LOADGEN_TARGET="${BENCH_LOADGEN_TARGET_DIR:-/tmp/loadgen-target}"
GATEWAY="$GATEWAY_TARGET/release/utc-gateway"
LOADGEN="$LOADGEN_TARGET/release/loadgen"

echo "== building (release)"
CARGO_TARGET_DIR="$GATEWAY_TARGET" cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
CARGO_TARGET_DIR="$LOADGEN_TARGET" cargo build --release --quiet --manifest-path "$ROOT/tools/loadgen/Cargo.toml"

# Both the gateway and loadgen hold one descriptor per socket.
if ! ulimit -n 65536 2>/dev/null && ! ulimit -n 20000 2>/dev/null; then
    hard="$(ulimit -Hn)"
    echo "note: cannot raise the open-file limit to 65536 (hard limit $hard); using $hard"
    ulimit -n "$hard"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/utc-bench.XXXXXX")"
TOKEN="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
GW_PID=""

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

echo "== starting a fresh gateway in $WORK"
# Port 0: the kernel picks a free port, which the gateway prints. The provider rate
# limit is lifted so the throughput figure measures the gateway, not the limiter.
(
    cd "$WORK"
    exec env \
        UTC__SERVER__LISTEN=127.0.0.1:0 \
        UTC__STORE__URL="sqlite://$WORK/utc.db" \
        UTC__AUTH__ADMIN_TOKEN="$TOKEN" \
        UTC__LOG__LEVEL=warn \
        UTC__LIMITS__PROVIDER_RATE_PER_SEC=1000000 \
        UTC__LIMITS__PROVIDER_BURST=1000000 \
        "$GATEWAY" serve
) >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
GW_PID=$!

URL=""
for _ in $(seq 1 300); do
    URL="$(sed -n 's/^utc-gateway listening on \(http:\/\/[^ ]*\).*/\1/p' "$WORK/gateway.out" | head -n 1)"
    [[ -n "$URL" ]] && break
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        echo "the gateway exited during start-up:" >&2
        cat "$WORK/gateway.out" "$WORK/gateway.err" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$URL" ]]; then
    echo "the gateway did not report its address within 30 s" >&2
    cat "$WORK/gateway.out" "$WORK/gateway.err" >&2
    exit 1
fi
echo "gateway pid $GW_PID at $URL"

echo
echo "== machine"
echo "uname: $(uname -a)"
echo "nproc: $(nproc)"
cpu="$(grep -m1 -E '^(model name|Hardware|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
echo "cpu:   ${cpu:-unknown}"
echo "open-file limit: $(ulimit -n)"

failed=0
run() {
    if [[ -n "${BENCH_ONLY:-}" && " $BENCH_ONLY " != *" $1 "* ]]; then
        return
    fi
    echo
    echo "== loadgen $*"
    if ! "$LOADGEN" "$@" --url "$URL" --admin-token "$TOKEN"; then
        echo "!! loadgen $1 failed"
        failed=1
    fi
}

run popup-rtt --count 1000 --warmup 50 --leads 100
run popup-rtt --count 2000 --concurrency 4 --warmup 50 --leads 100
run call-log --count 5000 --concurrency 1 --leads 100
for senders in ${BENCH_CALL_LOG_SENDERS:-4 32}; do
    run call-log --duration-secs 20 --concurrency "$senders" --leads 100
done
run popup-rate --sockets 1000 --rate 1000 --secs 10 --gateway-pid "$GW_PID"
for rate in ${BENCH_RATES:-2000 5000 10000}; do
    run popup-rate --sockets 1000 --rate "$rate" --secs 5 --gateway-pid "$GW_PID"
done
run idle-sockets --sockets "${BENCH_IDLE_SOCKETS:-15000}" --pid "$GW_PID"

echo
echo "== gateway stderr (warn and above)"
if [[ -s "$WORK/gateway.err" ]]; then
    tail -n 50 "$WORK/gateway.err"
else
    echo "(empty)"
fi
stop_gateway
exit "$failed"
