#!/usr/bin/env bash
# Benchmark of a backfill: `impact-drop run` over one large export (default: the 1,000,000-row
# file of bench/check.sh, about 250,000 orders) against the sandbox on 127.0.0.1 (pacing off,
# IN_FLIGHT in flight, default 64). Reports wall time, peak RSS, how long after the start the
# first POST arrived at the sandbox, and the ledger's bytes per conversion (lines included).
# Targets (issue "Intake in bounded memory"): peak RSS ≤ 128 MB, first POST within 3 s,
# ≤ 400 bytes per conversion.
#
# Usage: bench/backfill.sh                 # bench/out/impact-1m.csv (made by bench/check.sh)
#        bench/backfill.sh FILE CONFIG_DEFAULTS_TOML
# Needs: cargo, python3, GNU time at /usr/bin/time. Work files go to bench/out/backfill/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out/backfill"
FILE="${1:-$ROOT/bench/out/impact-1m.csv}"
BIN="${BIN:-$ROOT/target/release/impact-drop}"  # BIN=other/binary compares builds in one sitting

cd "$ROOT"
[[ -f "$FILE" ]] || { echo "no $FILE: run bench/check.sh first (it generates it)"; exit 1; }
echo "== build (cargo build --release)"
cargo build --release --quiet
rm -rf "$OUT" && mkdir -p "$OUT/drop"
cp "$FILE" "$OUT/drop/"

. "$ROOT/bench/lib.sh"
start_sandbox "$OUT/sandbox.log"
write_config "$OUT/bench.toml" "${IN_FLIGHT:-64}" 'format = "impact"'

# The first POST: polled from the sandbox's counters while the run goes.
python3 - "$URL" > "$OUT/first-post.txt" <<'PY' &
import json, sys, time, urllib.request
start = time.time()
while time.time() - start < 600:
    try:
        s = json.load(urllib.request.urlopen(sys.argv[1] + "/_sandbox/stats", timeout=5))
        if s["arrived"] > 0:
            print(f"{time.time() - start:.2f}")
            break
    except OSError:
        pass
    time.sleep(0.02)
PY
PROBE=$!
IMPACT_AUTH_TOKEN=bench-token /usr/bin/time -f '%e %M' -o "$OUT/time.txt" \
    "$BIN" --config "$OUT/bench.toml" run > "$OUT/out.txt" 2> "$OUT/err.txt" || true
wait "$PROBE" || true
read -r wall rss < "$OUT/time.txt"
convs=$(python3 -c "import sqlite3; print(sqlite3.connect('$OUT/ledger.sqlite').execute('SELECT COUNT(*) FROM conversions').fetchone()[0])")
bytes=$(python3 -c "import os; print(sum(os.path.getsize('$OUT/ledger.sqlite' + s) for s in ('', '-wal') if os.path.exists('$OUT/ledger.sqlite' + s)))")
tail -2 "$OUT/out.txt"
echo "backfill: $(basename "$FILE"): wall ${wall} s, peak RSS $((rss / 1024)) MB, first POST after $(cat "$OUT/first-post.txt") s, ledger $bytes bytes for $convs conversions ($((bytes / (convs > 0 ? convs : 1))) B each)"
