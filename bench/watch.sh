#!/usr/bin/env bash
# Benchmark of the `impact-drop watch` daemon against the built-in sandbox, for three
# acceptance targets:
#   1. Latency: time from a file being settled (write complete + settle_secs) to its first
#      POST arriving at the sandbox. Target: under 1 s after the settle window.
#      LAT_FILES one-order files (default 10) are dropped one at a time; each must be
#      finished before the next; min/median/max of (first POST − write − settle_secs).
#   2. Soak: SOAK_FILES one-order files (default 10,000, unique OrderIds) dropped in batches
#      of 100 (at most ~300 unfinished at any time) into a fresh work folder and ledger.
#      VmRSS of the daemon is read once SOAK_MARK (default 1,000) and all SOAK_FILES files
#      are finished and the daemon is quiet (every file accepted by the sandbox, moved to
#      processed/, files_waiting 0, then 3 s idle). Target: VmRSS growth under 10 MB between
#      those two points. VmHWM and a per-1,000 RSS trend (not quiesced) are shown too.
#      Fails if the soak takes longer than SOAK_TIMEOUT seconds (default 900).
#   3. Idle CPU: utime+stime (/proc/PID/stat, CLK_TCK ticks) of a fresh daemon on an empty
#      drop folder over IDLE_SECS seconds (default 30), starting 1 s after it logs
#      `watching:`. Target: under 1 % of one core.
#
# What it does: cargo build --release (project root found from this script's location);
# starts one sandbox on a free port; one fresh daemon per phase (work folders under
# bench/out/watch-run/, config settle_secs = 1, rescan_secs = 30, pacing off, health/metrics
# on a free port); measures with bench/watch_probe.py (python3, stdlib only); stops
# everything on exit, also on failure or Ctrl-C.
#
# Usage (from anywhere):
#   bench/watch.sh
#   IDLE_SECS=60 SOAK_FILES=20000 bench/watch.sh
#   STRICT=1 bench/watch.sh        # exit 1 if a target is missed
#
# Output: figures on stdout, then a Markdown summary block for the README; the same text goes
# to bench/out/watch-results.txt. Logs and work folders stay in bench/out/watch-run/.
# Needs: cargo, python3, curl, Linux /proc. Takes about 2–5 minutes after the build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
RUN="$OUT/watch-run"
RESULTS="$OUT/watch-results.txt"
BIN="$ROOT/target/release/impact-drop"
PROBE="$ROOT/bench/watch_probe.py"

SETTLE="${SETTLE:-1}"
LAT_FILES="${LAT_FILES:-10}"
SOAK_FILES="${SOAK_FILES:-10000}"
SOAK_MARK="${SOAK_MARK:-1000}"
SOAK_TIMEOUT="${SOAK_TIMEOUT:-900}"
IDLE_SECS="${IDLE_SECS:-30}"
STRICT="${STRICT:-0}"
SID="IRBENCH0000000000000000000001"
TOKEN="bench-token"
NONCE="$(date +%s)"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}

die() { echo "watch.sh: $*" >&2; exit 1; }

# wait_for FILE REGEX SECONDS PID: prints the first match of REGEX (grep -o) in FILE.
wait_for() {
    local file=$1 re=$2 secs=$3 pid=$4 i hit
    for i in $(seq $((secs * 20))); do
        hit="$(grep -oE "$re" "$file" 2>/dev/null | head -n1 || true)"
        if [[ -n "$hit" ]]; then
            echo "$hit"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$file" >&2; die "process $pid exited before '$re' appeared in $file"; }
        sleep 0.05
    done
    tail -n 20 "$file" >&2
    die "'$re' did not appear in $file within ${secs}s"
}

# start_daemon NAME: fresh work folder RUN/NAME; sets DAEMON_PID, METRICS_URL, DROP.
start_daemon() {
    local work="$RUN/$1"
    rm -rf "$work"
    mkdir -p "$work/drop"
    cat >"$work/impact-drop.toml" <<EOF
[source]
drop_dir = "drop"
settle_secs = $SETTLE
rescan_secs = 30
[impact]
base_url = "$SANDBOX_URL"
account_sid = "$SID"
requests_per_hour = 0
[defaults]
CampaignId = 1000
ActionTrackerId = 2000
MediaPartnerId = 3000
CurrencyCode = "USD"
[http]
listen = "127.0.0.1:0"
[ledger]
path = "ledger.sqlite"
EOF
    env IMPACT_AUTH_TOKEN="$TOKEN" "$BIN" --config "$work/impact-drop.toml" watch \
        >"$work/daemon.out" 2>"$work/daemon.log" &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    METRICS_URL="$(wait_for "$work/daemon.log" 'http://127\.0\.0\.1:[0-9]+/metrics' 30 "$DAEMON_PID")"
    wait_for "$work/daemon.log" 'watching:' 30 "$DAEMON_PID" >/dev/null
    DROP="$work/drop"
}

# stop_daemon: SIGTERM, up to 15 s for a clean exit; reports the exit status.
stop_daemon() {
    local rc=0 i
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for i in $(seq 150); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "  note: daemon $DAEMON_PID still running 15 s after SIGTERM; killing it"
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    wait "$DAEMON_PID" 2>/dev/null || rc=$?
    [[ $rc -eq 0 ]] || echo "  note: daemon exited with status $rc after SIGTERM"
    local keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$DAEMON_PID" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

probe() { # probe SUBCOMMAND JSON [ARGS...]
    local cmd=$1 json=$2
    shift 2
    python3 "$PROBE" "$cmd" --sandbox "$SANDBOX_URL" --metrics "$METRICS_URL" \
        --pid "$DAEMON_PID" --drop "$DROP" --nonce "$NONCE" --json "$json" "$@"
}

main() {
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM
command -v python3 >/dev/null || die "python3 is needed"
command -v curl >/dev/null || die "curl is needed"

echo "== build"
echo "  $(date -u +%FT%TZ), $(nproc) CPUs, $(uname -sr)"
(cd "$ROOT" && cargo build --release --quiet)
[[ -x "$BIN" ]] || die "no $BIN after the build"


echo "== sandbox"
"$BIN" sandbox --port 0 --account-sid "$SID" --token "$TOKEN" \
    >"$RUN/sandbox.out" 2>"$RUN/sandbox.log" &
SANDBOX_PID=$!
PIDS+=("$SANDBOX_PID")
SANDBOX_URL="$(wait_for "$RUN/sandbox.out" 'http://127\.0\.0\.1:[0-9]+' 30 "$SANDBOX_PID")"
curl -fsS "$SANDBOX_URL/_sandbox/stats" >/dev/null || die "sandbox at $SANDBOX_URL does not answer"
echo "  $SANDBOX_URL (pid $SANDBOX_PID)"

echo "== 1. latency: $LAT_FILES one-order files, one at a time, settle_secs = $SETTLE"
start_daemon latency
echo "  daemon pid $DAEMON_PID, $METRICS_URL"
probe latency "$RUN/latency.json" --files "$LAT_FILES" --settle "$SETTLE"
stop_daemon

echo "== 2. soak: $SOAK_FILES one-order files, RSS at $SOAK_MARK and $SOAK_FILES (timeout ${SOAK_TIMEOUT}s)"
start_daemon soak
echo "  daemon pid $DAEMON_PID, $METRICS_URL"
probe soak "$RUN/soak.json" --total "$SOAK_FILES" --mark "$SOAK_MARK" --timeout "$SOAK_TIMEOUT"
processed="$(find "$DROP/processed" -type f -name 'soak-*.csv' | wc -l)"
left="$(find "$DROP" -maxdepth 1 -type f | wc -l)"
echo "  files in processed/: $processed, left in drop/: $left"
stop_daemon

echo "== 3. idle CPU: empty drop folder, ${IDLE_SECS}s"
start_daemon idle
echo "  daemon pid $DAEMON_PID, $METRICS_URL"
sleep 1
probe idle "$RUN/idle.json" --secs "$IDLE_SECS"
stop_daemon

echo
echo "== summary"
strict=()
[[ "$STRICT" == 1 ]] && strict=(--strict)
rc=0
python3 "$PROBE" summary --latency "$RUN/latency.json" --soak "$RUN/soak.json" \
    --idle "$RUN/idle.json" --date "$(date -u +%Y-%m-%d)" "${strict[@]}" \
    >"$RUN/summary.md" || rc=$?
cat "$RUN/summary.md"
return "$rc"
}

rm -rf "$RUN"
mkdir -p "$RUN"
main "$@" 2>&1 | tee "$RESULTS"
