#!/usr/bin/env bash
# Lead import throughput: builds the gateway in release mode (output in /tmp, never in
# the repository), generates a CSV of ROWS leads (default 100000: names, email, phone,
# two secondary numbers, stage, source, a custom field, external_id), and imports it
# twice with `utc-gateway import-leads` into a throw-away SQLite database: first every
# row creates a lead, then every row matches its lead by external_id and updates it.
# Prints the command's summary (rows/min) for each pass.
#
# Usage: scripts/bench-import.sh [ROWS]
# Environment: BENCH_GATEWAY_TARGET_DIR (default /tmp/bench-target) chooses the cargo
# target dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${1:-100000}"
TARGET="${BENCH_GATEWAY_TARGET_DIR:-/tmp/bench-target}"
GATEWAY="$TARGET/release/utc-gateway"

echo "== building (release)"
CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"

WORK="$(mktemp -d /tmp/bench-import.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
FILE="$WORK/leads.csv"

echo "== generating $ROWS rows"
python3 - "$ROWS" "$FILE" <<'PY'
import sys

rows, path = int(sys.argv[1]), sys.argv[2]
stages = ["New", "Contacted", "Qualified", "Won", "Lost"]
with open(path, "w", newline="") as f:
    f.write("external_id,first_name,last_name,email,phone,secondary_numbers,stage,source,fields.City\n")
    for i in range(rows):
        # 10-digit Indian mobiles (+91 9xxxxxxxxx), all valid and distinct
        phone = 9_000_000_000 + i
        f.write(
            f"crm-{i},Lead,\"Number {i}\",lead{i}@example.com,{phone},"
            f"{9_300_000_000 + i};+91 {9_600_000_000 + i},{stages[i % 5]},import,Pune\n"
        )
PY
echo "   $(wc -c <"$FILE") bytes"

cd "$WORK"
export UTC__STORE__URL="sqlite://$WORK/utc.db"
echo "== machine: $(nproc) cores, $(uname -sr)"
echo "== pass 1 (creates)"
"$GATEWAY" import-leads "$FILE" | head -1
echo "== pass 2 (updates by external_id)"
sed -i 's/,import,Pune$/,import,Mumbai/' "$FILE"
"$GATEWAY" import-leads "$FILE" | head -1
