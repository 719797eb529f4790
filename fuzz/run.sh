#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECS seconds (default 600), two at a time, and writes the
# figures to fuzz/out/results.md. A crash stops with the artifact's path; turn it into a case
# in core/src/fuzzing.rs (CORPUS) so `cargo test --workspace` keeps it fixed.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on the stable toolchain through
# RUSTC_BOOTSTRAP=1 (the sanitizer flags are nightly-only). Not needed by `cargo test`.
#
# Usage: fuzz/run.sh            # 10 minutes per target
#        SECS=60 fuzz/run.sh    # a quick pass
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${SECS:-600}"
OUT="$ROOT/fuzz/out"
mkdir -p "$OUT"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
TARGETS=(pipeline_csv pipeline_jsonl response sandbox_form)

# Seed corpora from the samples (the fuzzer mutates real layouts).
mkdir -p fuzz/corpus/{pipeline_csv,pipeline_jsonl,response,sandbox_form}
cp samples/*.csv samples/shopify/*.csv samples/woocommerce/*.csv fuzz/corpus/pipeline_csv/ 2>/dev/null || true
cp samples/*.jsonl samples/shopify-bulk/*.jsonl fuzz/corpus/pipeline_jsonl/ 2>/dev/null || true
printf '\xc8\x00Retry-After: 3\n\n{"Status":"QUEUED","QueuedUri":"/x"}' > fuzz/corpus/response/queued
printf '\x90\x01\n\n{"Status":"ERROR","errors":[{"field":"OrderId","message":"bad"}]}' > fuzz/corpus/response/error
printf 'CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=NOW&ItemSku1=X&ItemPrice1=1&ItemQuantity1=1' > fuzz/corpus/sandbox_form/seed

for t in "${TARGETS[@]}"; do cargo fuzz build -O "$t" >/dev/null; done

run() {
    local t=$1
    local log="$OUT/$t.log"
    if cargo fuzz run -O "$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 > "$log" 2>&1; then
        echo "$t ok"
    else
        echo "$t CRASH: see $log and fuzz/artifacts/$t/"
    fi
}

pids=()
for t in "${TARGETS[@]}"; do
    run "$t" &
    pids+=($!)
    if (( ${#pids[@]} == 2 )); then wait "${pids[@]}"; pids=(); fi
done
wait "${pids[@]}" 2>/dev/null || true

{
    echo "| target | seconds | executions | exec/s | coverage (edges) | peak RSS MB | crashes |"
    echo "|---|---|---|---|---|---|---|"
    for t in "${TARGETS[@]}"; do
        log="$OUT/$t.log"
        execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
        eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
        rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
        crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | grep -c -E '^(crash|oom|timeout|leak)-' || true)
        echo "| $t | $SECS | ${execs:-?} | ${eps:-?} | ${cov:-?} | ${rss:-?} | $crashes |"
    done
} | tee "$OUT/results.md"
