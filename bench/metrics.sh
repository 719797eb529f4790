#!/usr/bin/env bash
# Benchmark of `/metrics` at scale: a ledger holding LINES line records (default 10,000,000)
# and LINES/2.5 conversions, while `watch` sends a backlog to the sandbox (20 ms latency,
# 4 in flight). `/metrics` is scraped SCRAPES times (default 200) during the sending;
# min / median / p99 / max milliseconds are reported. Target (issue "Intake in bounded
# memory"): at most 10 ms.
#
# What it does: cargo build --release; starts the sandbox; creates the ledger with a first
# `run` on an empty folder; fills it with python3's sqlite3 (one recursive INSERT … SELECT per
# table, so the ledger's own triggers keep its tallies); drops BACKLOG orders (default 3,000)
# into the folder; starts `watch` with [http] listen on a free port; scrapes once sending has
# begun; stops everything on exit.
#
# Usage: bench/metrics.sh
#        LINES=1000000 SCRAPES=100 bench/metrics.sh
#        REUSE=1 bench/metrics.sh     # keep the ledger filled by the last run (filling 10M
#                                       lines takes about 5 minutes)
# Needs: cargo, python3. Work files go to bench/out/metrics/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out/metrics"
LINES="${LINES:-10000000}"
SCRAPES="${SCRAPES:-200}"
BACKLOG="${BACKLOG:-3000}"
BIN="${BIN:-$ROOT/target/release/impact-drop}"

cd "$ROOT"
echo "== build (cargo build --release)"
cargo build --release --quiet
if [[ "${REUSE:-0}" == 1 && -f "$OUT/ledger.sqlite" ]]; then
    rm -rf "$OUT/drop" "$OUT/watch.log" && mkdir -p "$OUT/drop"
    REUSED=1
else
    rm -rf "$OUT" && mkdir -p "$OUT/drop"
    REUSED=0
fi

. "$ROOT/bench/lib.sh"
start_sandbox "$OUT/sandbox.log" --latency-ms 20
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
write_config "$OUT/bench.toml" 4 "settle_secs = 0.3" "[http]
listen = \"127.0.0.1:$PORT\""
WATCH_PID=""
trap 'kill $SANDBOX_PID $WATCH_PID 2>/dev/null || true' EXIT
export IMPACT_AUTH_TOKEN=bench-token
if [[ "$REUSED" == 1 ]]; then
    echo "== reusing the filled ledger in $OUT"
else
"$BIN" --config "$OUT/bench.toml" run > "$OUT/first-run.txt" 2>&1

echo "== filling the ledger: $LINES lines, $((LINES * 2 / 5)) conversions"
python3 - "$OUT/ledger.sqlite" "$LINES" <<'PY'
import sqlite3, sys, time
path, lines = sys.argv[1], int(sys.argv[2])
convs = lines * 2 // 5
t = time.time()
c = sqlite3.connect(path)
c.execute("PRAGMA journal_mode=WAL")
c.execute("INSERT INTO files (content_hash, path, size, state, first_seen, finished_at, rows) "
          "VALUES ('fill', 'fill.csv', 1, 'done', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', ?)", (lines,))
file_id = c.execute("SELECT last_insert_rowid()").fetchone()[0]
c.execute(f"""WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {convs})
  INSERT INTO conversions (campaign_id, event_field, event_id, order_id, state, payload_hash,
    file_id, attempts, created_at, updated_at, accepted_at)
  SELECT '1000', 'ActionTrackerId', '2000', 'FILL-' || i, 'accepted', 'h', {file_id}, 1,
    '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z' FROM s""")
c.execute(f"""WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {lines})
  INSERT INTO lines (file_id, line, hash, conversion_id, outcome, reason)
  SELECT {file_id}, i + 1, randomblob(16), CASE WHEN i % 50 = 0 THEN NULL ELSE (i * 2 / 5) + 1 END,
    CASE WHEN i % 50 = 0 THEN 'invalid' ELSE 'sent' END,
    CASE WHEN i % 50 = 0 THEN 'filled' END FROM s""")
c.commit()
n = c.execute("SELECT n FROM tallies WHERE tbl = 'lines' AND state = 'sent'").fetchone()[0]
t2 = time.time()
scan = c.execute("SELECT COUNT(*) FROM lines WHERE outcome = 'invalid'").fetchone()[0]
print(f"filled in {t2 - t:.0f} s; tallies say {n} sent lines; "
      f"the old per-scrape scan (COUNT(*) of invalid lines) takes {1000 * (time.time() - t2):.0f} ms")
c.close()
PY
fi
ls -la "$OUT/ledger.sqlite" | awk '{print "ledger bytes:", $5}'

python3 - "$BACKLOG" "$OUT/drop/backlog.csv" <<'PY'
import sys, time
n, path = int(sys.argv[1]), sys.argv[2]
run = int(time.time())
with open(path, "w") as f:
    f.write("OrderId,EventDate,CurrencyCode,ItemSku,ItemQuantity,ItemPrice\n")
    for o in range(n):
        f.write(f"BACKLOG-{run}-{o},2025-11-20T10:00:00-05:00,USD,SKU-{o},1,{10 + o % 90}.00\n")
PY

"$BIN" --config "$OUT/bench.toml" watch > "$OUT/watch.log" 2>&1 &
WATCH_PID=$!
python3 - "$URL" "http://127.0.0.1:$PORT/metrics" "$SCRAPES" <<'PY'
import json, statistics, sys, time, urllib.request
sandbox, metrics, scrapes = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + 120
while time.time() < deadline:
    try:
        stats = json.load(urllib.request.urlopen(sandbox + "/_sandbox/stats", timeout=5))
        if stats["requests"] > 0:
            break
    except OSError:
        pass
    time.sleep(0.05)
else:
    sys.exit("watch never started sending")
times = []
for _ in range(scrapes):
    t = time.perf_counter()
    body = urllib.request.urlopen(metrics, timeout=10).read().decode()
    times.append((time.perf_counter() - t) * 1000)
    time.sleep(0.01)
sent_after = json.load(urllib.request.urlopen(sandbox + "/_sandbox/stats", timeout=5))["requests"]
assert "impact_drop_invalid_rows" in body, body[:500]
times.sort()
p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
print(f"/metrics while sending ({sent_after} requests sent by the last scrape): "
      f"min {times[0]:.1f} ms, median {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms")
PY
