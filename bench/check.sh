#!/usr/bin/env bash
# Benchmark of `impact-drop check`: wall time, peak RSS and CPU time for reading, grouping
# and validating one large export (acceptance target: 1,000,000 impact-column rows, about
# 250,000 orders, in under 3 s with peak RSS under 256 MB on a 2-core machine).
#
# What it does:
#   1. cargo build --release (in the project root, found from this script's location);
#   2. generates bench/out/impact-1m.csv with bench/gen_impact_csv.py if it is missing
#      (ROWS overrides the row count; a non-default count uses bench/out/impact-<ROWS>rows.csv);
#   3. writes bench/out/bench.toml (format "impact" + CampaignId/ActionTrackerId/MediaPartnerId);
#   4. runs `check` once as a warm-up (page cache), failing with the last 20 lines of the
#      tool's output if it does not exit 0 (= some generated row is invalid);
#   5. runs `check` RUNS times under /usr/bin/time, printing wall s, peak RSS MB,
#      user+sys CPU s and rows/s per run, then best/median wall and max peak RSS, and a
#      one-line summary for the README.
#
# Usage (from anywhere):
#   bench/check.sh                    # generated impact-columns CSV, default config
#   ROWS=200000 RUNS=5 bench/check.sh
#   bench/check.sh FILE CONFIG        # any other export + config; no generation
#
# Needs: cargo, python3, GNU time at /usr/bin/time. Generated data goes to bench/out/
# (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
RUNS="${RUNS:-3}"
ROWS="${ROWS:-1000000}"
TIME=/usr/bin/time

die() { echo "check.sh: $*" >&2; exit 1; }
abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
[[ "$ROWS" =~ ^[1-9][0-9]*$ ]] || die "ROWS must be a positive integer (got '$ROWS')"
[[ -x "$TIME" ]] || die "$TIME (GNU time) not found: apt-get install time"

if [[ $# -gt 0 ]]; then
    [[ $# -eq 2 ]] || die "usage: $0 [FILE CONFIG]"
    [[ -r "$1" ]] || die "cannot read export file $1"
    [[ -r "$2" ]] || die "cannot read config file $2"
    INPUT="$(abspath "$1")"
    CONFIG="$(abspath "$2")"
    GENERATE=0
else
    if [[ "$ROWS" == 1000000 ]]; then
        INPUT="$OUT/impact-1m.csv"
    else
        INPUT="$OUT/impact-${ROWS}rows.csv"
    fi
    CONFIG="$OUT/bench.toml"
    GENERATE=1
fi

cd "$ROOT"
mkdir -p "$OUT"

echo "== build (cargo build --release)"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/impact-drop"
[[ -x "$BIN" ]] || die "no binary at $BIN after the build"

if [[ $GENERATE -eq 1 ]]; then
    if [[ ! -s "$INPUT" ]]; then
        echo "== generate $ROWS rows -> ${INPUT#"$ROOT"/}"
        # Write to a temporary name first, so an interrupted run leaves no truncated file.
        python3 "$ROOT/bench/gen_impact_csv.py" --rows "$ROWS" --seed 1 --out "$INPUT.tmp"
        mv "$INPUT.tmp" "$INPUT"
    fi
    cat >"$CONFIG" <<'EOF'
[source]
format = "impact"
[defaults]
CampaignId = 1000
ActionTrackerId = 2000
MediaPartnerId = 3000
EOF
fi

CMD=("$BIN" --config "$CONFIG" check "$INPUT")
rel() { local p="$1"; printf '%s' "${p#"$ROOT"/}"; }
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || echo unknown)"
echo "== input: $(rel "$INPUT") ($(du -h "$INPUT" | cut -f1)), config: $(rel "$CONFIG")"
echo "== command: $(rel "$BIN") --config $(rel "$CONFIG") check $(rel "$INPUT")"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Warm-up: fills the page cache and checks that every row is valid.
echo "== warm-up"
status=0
"${CMD[@]}" >"$TMP/warmup.out" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
    echo "impact-drop exited with status $status (expected 0: every row valid); last 20 lines:" >&2
    tail -n 20 "$TMP/warmup.out" >&2
    exit 1
fi
# Row count as the tool reports it ("checked 1 file: N rows, ..."); else count lines.
ROWCOUNT="$(sed -n 's/^checked [0-9]* files*: \([0-9]*\) rows.*/\1/p' "$TMP/warmup.out" | tail -n 1)"
if [[ -z "$ROWCOUNT" ]]; then
    ROWCOUNT=$(($(wc -l <"$INPUT") - 1))
    echo "(could not read the row count from the tool's output; using line count - 1)"
fi
tail -n 1 "$TMP/warmup.out"

echo "== $RUNS timed runs"
printf '%-4s %9s %12s %10s %12s\n' run wall_s peak_rss_MB cpu_s rows_per_s
: >"$TMP/results"
for i in $(seq 1 "$RUNS"); do
    status=0
    "$TIME" -f '%e %M %U %S' -o "$TMP/time" "${CMD[@]}" >/dev/null 2>"$TMP/stderr" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "run $i: impact-drop exited with status $status; last 20 lines of its stderr/time:" >&2
        tail -n 20 "$TMP/stderr" "$TMP/time" >&2
        exit 1
    fi
    # The last line of the -o file is the format line (earlier ones would be warnings).
    read -r wall rss_kb user sys < <(tail -n 1 "$TMP/time")
    echo "$wall $rss_kb $user $sys" >>"$TMP/results"
    awk -v i="$i" -v w="$wall" -v m="$rss_kb" -v u="$user" -v s="$sys" -v n="$ROWCOUNT" \
        'BEGIN { printf "%-4d %9.2f %12.1f %10.2f %12.0f\n", i, w, m/1024, u+s, (w > 0 ? n/w : 0) }'
done

read -r BEST MEDIAN MAXRSS_MB < <(awk '
    { wall[NR] = $1; if ($2 > rss) rss = $2 }
    END {
        n = NR
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
            if (wall[j] < wall[i]) { t = wall[i]; wall[i] = wall[j]; wall[j] = t }
        med = (n % 2) ? wall[(n + 1) / 2] : (wall[n / 2] + wall[n / 2 + 1]) / 2
        printf "%.2f %.2f %.0f\n", wall[1], med, rss / 1024
    }' "$TMP/results")
RATE="$(awk -v n="$ROWCOUNT" -v w="$BEST" 'BEGIN { printf "%.0f", (w > 0 ? n/w : 0) }')"

echo "== best wall $BEST s, median wall $MEDIAN s, max peak RSS $MAXRSS_MB MB"
echo "check: $ROWCOUNT rows, best $BEST s ($RATE rows/s), peak RSS $MAXRSS_MB MB"
