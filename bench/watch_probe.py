#!/usr/bin/env python3
"""Measurement helper for bench/watch.sh (stdlib only; not meant to be run on its own).

Subcommands (each prints human-readable lines and writes a JSON result to --json):
  latency  drop N one-order files one at a time; time from write-complete to the first POST
           arriving at the sandbox, minus the settle window
  soak     drop TOTAL one-order files in batches; VmRSS/VmHWM of the daemon once MARK and
           TOTAL files are done and the daemon is quiet
  idle     utime+stime of the daemon over SECS seconds with an empty drop folder
  summary  combine the three JSON results into the final block
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse

NOW = time.monotonic


class Http:
    """A keep-alive GET client for one host (reconnects on error)."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def get(self, path):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET {path}: HTTP {r.status}")
                return body.decode()
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.05)


class Probe:
    def __init__(self, a):
        self.sandbox = Http(a.sandbox)
        u = urllib.parse.urlsplit(a.metrics)
        self.metrics_http = Http(a.metrics)
        self.metrics_path = u.path or "/metrics"
        self.pid = a.pid
        self.drop = a.drop
        self.nonce = a.nonce
        with open(f"/proc/{self.pid}/comm") as f:
            comm = f.read().strip()
        if comm != "impact-drop":
            sys.exit(f"watch_probe: pid {self.pid} is {comm!r}, not impact-drop")

    def stats(self):
        return json.loads(self.sandbox.get("/_sandbox/stats"))

    def metrics(self):
        out = {}
        for line in self.metrics_http.get(self.metrics_path).splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, val = line.rpartition(" ")
            try:
                out[key] = float(val)
            except ValueError:
                pass
        return out

    def alive(self):
        if not os.path.exists(f"/proc/{self.pid}"):
            sys.exit(f"watch_probe: the watch daemon (pid {self.pid}) has exited")

    def status(self):
        """VmRSS, VmHWM in KiB, and the thread count."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
        return out

    def cpu_ticks(self):
        with open(f"/proc/{self.pid}/stat") as f:
            rest = f.read().rpartition(")")[2].split()
        # rest[0] is field 3 (state); utime = field 14, stime = field 15
        return int(rest[11]), int(rest[12])

    def write_order(self, name, order_id):
        path = os.path.join(self.drop, name)
        with open(path, "w") as f:
            f.write(
                "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n"
                f"{order_id},2025-11-20T10:00:00Z,SKU-{order_id},1,12.50\n"
            )


def m(metrics, name, default=0.0):
    return metrics.get(name, default)


DONE = "impact_drop_files_done_total"
SEEN = "impact_drop_files_seen_total"
WAITING = "impact_drop_files_waiting"
SCANS = "impact_drop_scans_total"
ACCEPTED_M = 'impact_drop_answers_total{outcome="accepted"}'


def save(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def latency(p, a):
    settle = a.settle
    results = []
    base = p.stats()
    base_done = m(p.metrics(), DONE)
    for i in range(a.files):
        before = p.stats()["arrived"]
        p.write_order(f"lat-{p.nonce}-{i:03d}.csv", f"L-{p.nonce}-{i}")
        t_written = NOW()
        deadline = t_written + settle + 15
        while True:
            if p.stats()["arrived"] > before:
                t_post = NOW()
                break
            if NOW() > deadline:
                p.alive()
                sys.exit(f"latency: file {i}: no POST within {settle + 15:.0f} s of writing it")
            time.sleep(0.005)
        lat = t_post - t_written - settle
        # Wait until the file is finished before the next one.
        while m(p.metrics(), DONE) < base_done + i + 1:
            if NOW() > deadline:
                p.alive()
                sys.exit(f"latency: file {i}: POSTed but not finished within {settle + 15:.0f} s")
            time.sleep(0.02)
        results.append(lat)
        print(f"  file {i + 1:2d}: first POST {t_post - t_written:6.3f} s after write"
              f" = settle + {lat:6.3f} s", flush=True)
        time.sleep(a.gap)
    end = p.stats()
    r = {
        "files": a.files,
        "settle_s": settle,
        "min_s": min(results),
        "median_s": statistics.median(results),
        "max_s": max(results),
        "all_s": results,
        "posts": end["arrived"] - base["arrived"],
        "accepted": end["accepted"] - base["accepted"],
    }
    print(f"  latency after the settle window: min {r['min_s']:.3f} s, median "
          f"{r['median_s']:.3f} s, max {r['max_s']:.3f} s  (POSTs {r['posts']}, "
          f"accepted {r['accepted']})", flush=True)
    save(a.json, r)


def soak(p, a):
    t0 = NOW()
    deadline = t0 + a.timeout
    base = p.stats()
    written = 0
    points = {}
    trend = []
    next_trend = a.every

    def check_deadline(what):
        if NOW() > deadline:
            st, mt = p.stats(), p.metrics()
            sys.exit(
                f"soak: over {a.timeout} s ({what}): written {written}, done {m(mt, DONE):.0f}, "
                f"seen {m(mt, SEEN):.0f}, waiting {m(mt, WAITING):.0f}, sandbox accepted "
                f"{st['accepted'] - base['accepted']}, arrived {st['arrived'] - base['arrived']}")

    def write_until(target):
        nonlocal written, next_trend
        while True:
            p.alive()
            check_deadline(f"writing towards {target}")
            mt = p.metrics()
            done = m(mt, DONE)
            while done >= next_trend and next_trend <= a.total:
                s = p.status()
                trend.append({"done": int(done), "t_s": round(NOW() - t0, 1),
                              "rss_kib": s["VmRSS"], "hwm_kib": s["VmHWM"]})
                print(f"  … {int(done):6d} done after {NOW() - t0:6.1f} s: VmRSS "
                      f"{s['VmRSS'] / 1024:6.1f} MiB (not quiesced)", flush=True)
                next_trend += a.every
            if written >= target:
                return
            if written - done < a.backlog:
                n = min(a.batch, target - written)
                for _ in range(n):
                    p.write_order(f"soak-{p.nonce}-{written:06d}.csv", f"S-{p.nonce}-{written}")
                    written += 1
            time.sleep(a.interval)

    def quiesce(label):
        """Waits until every written file is accepted and finished, then reads RSS."""
        while True:
            p.alive()
            check_deadline(f"waiting for {label} files to finish")
            st, mt = p.stats(), p.metrics()
            acc = st["accepted"] - base["accepted"]
            if m(mt, DONE) >= written and m(mt, WAITING) == 0 and acc >= written:
                break
            time.sleep(0.1)
        t_done = NOW() - t0
        time.sleep(a.quiet)
        s = p.status()
        st, mt = p.stats(), p.metrics()
        pt = {"files": written, "t_s": round(t_done, 1), "rss_kib": s["VmRSS"],
              "hwm_kib": s["VmHWM"], "threads": s["Threads"],
              "sandbox_arrived": st["arrived"] - base["arrived"],
              "sandbox_accepted": st["accepted"] - base["accepted"],
              "done": int(m(mt, DONE)), "seen": int(m(mt, SEEN)),
              "scans": int(m(mt, SCANS))}
        print(f"  {written:6d} files done at {t_done:6.1f} s; after {a.quiet:.0f} s quiet: "
              f"VmRSS {s['VmRSS'] / 1024:.1f} MiB, VmHWM {s['VmHWM'] / 1024:.1f} MiB, "
              f"threads {s['Threads']}, POSTs {pt['sandbox_arrived']}, "
              f"accepted {pt['sandbox_accepted']}, scans {pt['scans']}", flush=True)
        return pt

    s0 = p.status()
    print(f"  start: VmRSS {s0['VmRSS'] / 1024:.1f} MiB", flush=True)
    write_until(a.mark)
    points["mark"] = quiesce(a.mark)
    write_until(a.total)
    points["total"] = quiesce(a.total)
    elapsed = points["total"]["t_s"] - a.quiet  # writing + processing, without the quiet waits
    growth = points["total"]["rss_kib"] - points["mark"]["rss_kib"]
    r = {"files": a.total, "mark": a.mark, "start_rss_kib": s0["VmRSS"],
         "points": points, "trend": trend, "rss_growth_kib": growth,
         "busy_s": round(elapsed, 1), "files_per_s": round(a.total / elapsed, 1)}
    print(f"  RSS growth {a.mark} → {a.total} files: {growth / 1024:+.1f} MiB "
          f"({elapsed:.0f} s, {a.total / elapsed:.1f} files/s)", flush=True)
    save(a.json, r)


def idle(p, a):
    tck = os.sysconf("SC_CLK_TCK")
    mt0 = p.metrics()
    u0, s0 = p.cpu_ticks()
    t0 = NOW()
    time.sleep(a.secs)
    u1, s1 = p.cpu_ticks()
    t1 = NOW()
    p.alive()
    mt1 = p.metrics()
    ticks = (u1 - u0) + (s1 - s0)
    cpu_s = ticks / tck
    pct = 100.0 * cpu_s / (t1 - t0)
    st = p.status()
    r = {"secs": round(t1 - t0, 2), "ticks": ticks, "clk_tck": tck,
         "utime_ticks": u1 - u0, "stime_ticks": s1 - s0, "cpu_s": cpu_s, "pct": pct,
         "scans": int(m(mt1, SCANS) - m(mt0, SCANS)), "rss_kib": st["VmRSS"],
         "threads": st["Threads"]}
    print(f"  {ticks} ticks (user {u1 - u0}, sys {s1 - s0}; CLK_TCK {tck}) in {t1 - t0:.1f} s"
          f" = {pct:.3f} % of one core; scans during the window: {r['scans']}; VmRSS "
          f"{st['VmRSS'] / 1024:.1f} MiB, threads {st['Threads']}", flush=True)
    save(a.json, r)


def summary(a):
    lat = json.load(open(a.latency))
    soak = json.load(open(a.soak))
    idl = json.load(open(a.idle))
    mark, total = soak["points"]["mark"], soak["points"]["total"]
    growth_mib = soak["rss_growth_kib"] / 1024

    def ok(b):
        return "PASS" if b else "FAIL"

    rows = [
        ("Latency (first POST after settle window, "
         f"{lat['files']} files, settle {lat['settle_s']:g} s)",
         f"min {lat['min_s']:.3f} s / median {lat['median_s']:.3f} s / max {lat['max_s']:.3f} s",
         "< 1 s", ok(lat["max_s"] < 1.0)),
        (f"Soak RSS growth ({soak['mark']:,} → {soak['files']:,} one-order files)",
         f"{mark['rss_kib'] / 1024:.1f} MiB → {total['rss_kib'] / 1024:.1f} MiB "
         f"({growth_mib:+.1f} MiB; VmHWM {total['hwm_kib'] / 1024:.1f} MiB; "
         f"{soak['files_per_s']:.0f} files/s)",
         "< 10 MB", ok(soak["rss_growth_kib"] * 1024 < 10_000_000)),
        (f"Idle CPU (empty folder, {idl['secs']:.0f} s)",
         f"{idl['pct']:.3f} % of one core ({idl['ticks']} ticks at {idl['clk_tck']} Hz)",
         "< 1 %", ok(idl["pct"] < 1.0)),
    ]
    host = f"{os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}"
    lines = [f"impact-drop watch benchmark ({a.date}; {host}; release build)", "",
             "| Target | Measured | Goal | Result |", "|---|---|---|---|"]
    lines += [f"| {t} | {mv} | {g} | {res} |" for t, mv, g, res in rows]
    text = "\n".join(lines)
    print(text)
    fails = sum(1 for r in rows if r[3] == "FAIL")
    sys.exit(1 if fails and a.strict else 0)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--sandbox", required=True)
        sp.add_argument("--metrics", required=True)
        sp.add_argument("--pid", type=int, required=True)
        sp.add_argument("--drop", required=True)
        sp.add_argument("--nonce", required=True)
        sp.add_argument("--json", required=True)

    sp = sub.add_parser("latency")
    common(sp)
    sp.add_argument("--files", type=int, default=10)
    sp.add_argument("--settle", type=float, required=True)
    sp.add_argument("--gap", type=float, default=0.3)
    sp = sub.add_parser("soak")
    common(sp)
    sp.add_argument("--total", type=int, default=10000)
    sp.add_argument("--mark", type=int, default=1000)
    sp.add_argument("--batch", type=int, default=100)
    sp.add_argument("--backlog", type=int, default=300)
    sp.add_argument("--interval", type=float, default=0.1)
    sp.add_argument("--every", type=int, default=1000)
    sp.add_argument("--quiet", type=float, default=3.0)
    sp.add_argument("--timeout", type=float, default=900)
    sp = sub.add_parser("idle")
    common(sp)
    sp.add_argument("--secs", type=float, default=30)
    sp = sub.add_parser("summary")
    sp.add_argument("--latency", required=True)
    sp.add_argument("--soak", required=True)
    sp.add_argument("--idle", required=True)
    sp.add_argument("--date", required=True)
    sp.add_argument("--strict", action="store_true")
    a = ap.parse_args()
    if a.cmd == "summary":
        summary(a)
        return
    p = Probe(a)
    {"latency": latency, "soak": soak, "idle": idle}[a.cmd](p, a)


if __name__ == "__main__":
    main()
