#!/usr/bin/env bash
# Shared by the bench scripts (sourced): start the sandbox, write a bench config.

BENCH_SID=IRBENCH0000000000000000000001

# start_sandbox LOG [sandbox options…]: starts `impact-drop sandbox` on a free port, sets
# URL and SANDBOX_PID, and stops it when the script exits.
start_sandbox() {
    local log="$1"
    shift
    "$BIN" sandbox --port 0 --account-sid "$BENCH_SID" --token bench-token "$@" > "$log" 2>&1 &
    SANDBOX_PID=$!
    trap 'kill $SANDBOX_PID 2>/dev/null || true' EXIT
    URL=""
    for _ in $(seq 100); do
        URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)
        [[ -n "$URL" ]] && break
        sleep 0.05
    done
    [[ -n "$URL" ]] || { echo "sandbox did not start:"; cat "$log"; exit 1; }
}

# write_config FILE IN_FLIGHT [SOURCE_KEYS] [MORE_TOML]: a config for the sandbox at $URL
# (pacing off, the three ids as defaults, ledger.sqlite beside it), mode 600. SOURCE_KEYS go
# into [source]; MORE_TOML (whole tables) at the end.
write_config() {
    cat > "$1" <<TOML
[source]
drop_dir = "drop"
${3:-}
[impact]
base_url = "$URL"
account_sid = "$BENCH_SID"
requests_per_hour = 0
max_in_flight = $2
[follow_up]
# The benchmarks measure sending: follow-ups are recorded for every accepted conversion, and
# \`run\` does not wait for them unless FOLLOW_WAIT (seconds) says so.
run_wait_secs = ${FOLLOW_WAIT:-0}
first_check_secs = 0
enabled = ${FOLLOW_ENABLED:-true}
[defaults]
CampaignId = 1000
ActionTrackerId = 2000
MediaPartnerId = 3000
[ledger]
path = "ledger.sqlite"
${4:-}
TOML
    chmod 600 "$1"
}
