//! `impact-drop watch` through the real binary and a real watcher, against the sandbox on
//! 127.0.0.1: every test waits on a condition with a deadline; no fixed sleep decides.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use impact_drop::impact::sandbox::{Faults, Sandbox};

const SID: &str = "IRWATCH000000000000000000001";
const TOKEN: &str = "watch-token-77aa";

struct Daemon {
    rt: tokio::runtime::Runtime,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `watch` with extra `[source]` and `[impact]` keys; the token comes from
    /// `auth_token_file = "token"` holding `token`.
    fn start(source: &str, impact: &str, token: &str) -> Daemon {
        let (rt, sandbox) = sandbox(SID, TOKEN);
        let dir = workspace(&format!(
            "[source]\ndrop_dir = \"drop\"\n{source}\n\
             [impact]\nbase_url = \"{}\"\naccount_sid = \"{SID}\"\nrequests_per_hour = 0\n\
             retry_cap_secs = 1\nauth_token_file = \"token\"\n{impact}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[ledger]\npath = \"ledger.sqlite\"\n",
            sandbox.base_url()
        ));
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        std::fs::write(dir.path().join("token"), token).unwrap();
        let mut d = Daemon {
            rt,
            sandbox,
            dir,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut child = command(self.dir.path(), &["watch"], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        self.wait_for(
            "the daemon to start watching",
            Duration::from_secs(20),
            |d| d.log().contains("watching:"),
        );
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Waits until `cond` holds, failing the test with the log after `deadline`.
    fn wait_for(&self, what: &str, deadline: Duration, cond: impl Fn(&Daemon) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if start.elapsed() > deadline {
                panic!(
                    "timed out after {deadline:?} waiting for {what}\n--- daemon log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn accepted(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in self.sandbox.received() {
            *m.entry(r.order_id).or_insert(0) += 1;
        }
        m
    }

    fn http(&self, path: &str) -> (u16, String) {
        let log = self.log();
        let base = log
            .split("health on ")
            .nth(1)
            .and_then(|s| s.split("/healthz").next())
            .expect("health address in the log")
            .to_owned();
        self.rt.block_on(async {
            let r = reqwest::get(format!("{base}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.http("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("impact_drop_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Sends SIGTERM; returns the exit code and how long the exit took.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let child = self.child.as_mut().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "watch did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn files_in_ledger(&self) -> Vec<String> {
        let c = rusqlite::Connection::open_with_flags(
            self.path("ledger.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut st = c.prepare("SELECT path FROM files ORDER BY id").unwrap();
        let rows = st.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_slow_writer_is_read_only_once_complete() {
    let d = Daemon::start("settle_secs = 1\nrescan_secs = 30", "", TOKEN);
    let content = orders(1, 30, 3);
    let path = d.path("drop/orders.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    // Chunks that cut orders (and lines) in half, over about 3.5 s (> 3 × settle).
    let bytes = content.as_bytes();
    let chunks = 12;
    let size = bytes.len().div_ceil(chunks);
    for chunk in bytes.chunks(size) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            d.sandbox.stats().requests,
            0,
            "nothing is sent while the file grows"
        );
    }
    drop(f);
    d.wait_for("30 orders accepted", Duration::from_secs(30), |d| {
        d.accepted().len() == 30
    });
    d.wait_for("the file archived", Duration::from_secs(10), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
    });
    assert!(d.accepted().values().all(|n| *n == 1));
    for r in d.sandbox.received() {
        assert!(
            r.body.contains("ItemSku3="),
            "every order with all its items: {}",
            r.body
        );
    }
    assert_eq!(
        d.files_in_ledger(),
        vec!["drop/orders.csv".to_string()],
        "read once, complete"
    );
}

#[test]
fn a_temp_name_is_never_read_and_the_rename_is() {
    let d = Daemon::start("settle_secs = 0.5\nrescan_secs = 1", "", TOKEN);
    std::fs::write(d.path("drop/orders.csv.filepart"), orders(1, 5, 1)).unwrap();
    let scans = d.metric("scans_total");
    d.wait_for("two more scans", Duration::from_secs(20), |d| {
        d.metric("scans_total") >= scans + 2
    });
    assert_eq!(d.sandbox.stats().requests, 0);
    std::fs::rename(
        d.path("drop/orders.csv.filepart"),
        d.path("drop/orders.csv"),
    )
    .unwrap();
    d.wait_for("5 orders accepted", Duration::from_secs(20), |d| {
        d.accepted().len() == 5
    });
    assert!(d.accepted().values().all(|n| *n == 1));
    assert!(d.files_in_ledger().iter().all(|p| !p.contains("filepart")));
}

#[test]
fn marker_mode_waits_for_the_marker() {
    let d = Daemon::start(
        "settle_secs = 0.2\nrescan_secs = 1\nready_marker = \".done\"",
        "",
        TOKEN,
    );
    std::fs::write(d.path("drop/orders.csv"), orders(1, 4, 1)).unwrap();
    d.wait_for("the file seen and waiting", Duration::from_secs(20), |d| {
        d.metric("files_waiting") == 1
    });
    let scans = d.metric("scans_total");
    d.wait_for("another scan", Duration::from_secs(20), |d| {
        d.metric("scans_total") > scans
    });
    assert_eq!(d.sandbox.stats().requests, 0, "nothing before the marker");
    std::fs::write(d.path("drop/orders.csv.done"), "").unwrap();
    d.wait_for("4 orders accepted", Duration::from_secs(20), |d| {
        d.accepted().len() == 4
    });
    d.wait_for("file and marker archived", Duration::from_secs(10), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
            && archived(d.dir.path(), "orders.csv.done").is_some()
    });
}

#[test]
fn a_thousand_files_at_once_each_order_once() {
    let d = Daemon::start("settle_secs = 0.5\nrescan_secs = 2", "", TOKEN);
    for i in 0..1000 {
        std::fs::write(d.path(&format!("drop/export-{i:04}.csv")), orders(i, 1, 1)).unwrap();
    }
    d.wait_for("1000 orders accepted", Duration::from_secs(180), |d| {
        d.accepted().len() == 1000
    });
    assert!(d.accepted().values().all(|n| *n == 1));
    d.wait_for("all archived", Duration::from_secs(60), |d| {
        std::fs::read_dir(d.path("drop"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
            .count()
            == 0
    });
}

#[test]
fn a_re_export_under_the_same_name_sends_only_new_orders() {
    let d = Daemon::start("settle_secs = 0.3\nrescan_secs = 1", "", TOKEN);
    std::fs::write(d.path("drop/orders.csv"), orders(1, 5, 2)).unwrap();
    d.wait_for("first file archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
    });
    assert_eq!(d.accepted().len(), 5);
    // Tomorrow's export: yesterday's rows plus new ones, same name.
    std::fs::write(d.path("drop/orders.csv"), orders(1, 8, 2)).unwrap();
    d.wait_for("8 orders accepted", Duration::from_secs(20), |d| {
        d.accepted().len() == 8
    });
    d.wait_for("second file archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders.1.csv").is_some()
    });
    assert_eq!(d.sandbox.stats().requests, 8);
    assert!(d.accepted().values().all(|n| *n == 1));
}

#[test]
fn an_outage_then_recovery_without_restart() {
    let d = Daemon::start("settle_secs = 0.2\nrescan_secs = 1", "", TOKEN);
    d.sandbox.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    std::fs::write(d.path("drop/orders.csv"), orders(1, 6, 1)).unwrap();
    d.wait_for("retries during the outage", Duration::from_secs(30), |d| {
        d.sandbox.stats().requests >= 12
    });
    assert_eq!(d.sandbox.stats().accepted, 0);
    assert!(d.metric("retries_total") >= 6);
    d.sandbox.set_faults(Faults::default());
    d.wait_for("6 orders accepted", Duration::from_secs(30), |d| {
        d.accepted().len() == 6
    });
    assert!(d.accepted().values().all(|n| *n == 1));
}

#[test]
fn sigterm_lets_posts_in_flight_finish_and_exits_0() {
    let mut d = Daemon::start(
        "settle_secs = 0.2\nrescan_secs = 1",
        "shutdown_grace_secs = 10\nmax_in_flight = 4",
        TOKEN,
    );
    d.sandbox.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    std::fs::write(d.path("drop/orders.csv"), orders(1, 4, 1)).unwrap();
    d.wait_for("4 POSTs in flight", Duration::from_secs(20), |d| {
        d.sandbox.stats().arrived >= 4
    });
    assert_eq!(d.sandbox.stats().accepted, 0, "still in flight");
    let (code, took) = d.terminate();
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(
        took < Duration::from_secs(10),
        "within the grace period: {took:?}"
    );
    assert_eq!(d.sandbox.stats().accepted, 4);
    let states = ledger_states(&d.path("ledger.sqlite"));
    assert_eq!(states.len(), 4);
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
}

#[test]
fn poll_only_mode_finds_files_within_rescan_secs() {
    let d = Daemon::start(
        "settle_secs = 0.2\nrescan_secs = 1\nwatch_events = false",
        "",
        TOKEN,
    );
    assert!(d.log().contains("file events off"));
    std::fs::write(d.path("drop/orders.csv"), orders(1, 3, 1)).unwrap();
    d.wait_for(
        "3 orders accepted by polling",
        Duration::from_secs(10),
        |d| d.accepted().len() == 3,
    );
}

#[test]
fn a_401_pauses_sending_and_fixing_the_token_file_resumes_it() {
    let d = Daemon::start("settle_secs = 0.2\nrescan_secs = 1", "", "stale-token");
    std::fs::write(d.path("drop/orders.csv"), orders(1, 3, 1)).unwrap();
    d.wait_for(
        "healthz to report the credentials",
        Duration::from_secs(20),
        |d| d.http("/healthz").0 == 503,
    );
    let (_, reason) = d.http("/healthz");
    assert!(
        reason.contains("401") && reason.contains("IMPACT_AUTH_TOKEN"),
        "{reason}"
    );
    assert!(d.log().contains("sending is paused"));
    assert!(!d.log().contains("stale-token"));
    assert_eq!(d.sandbox.stats().accepted, 0);
    std::fs::write(d.path("token"), TOKEN).unwrap();
    d.wait_for(
        "3 orders accepted after the fix",
        Duration::from_secs(30),
        |d| d.accepted().len() == 3,
    );
    d.wait_for("healthy again", Duration::from_secs(10), |d| {
        d.http("/healthz").0 == 200
    });
}

#[test]
fn a_file_appended_to_while_its_orders_are_pending_is_read_again_for_the_new_orders() {
    let d = Daemon::start("settle_secs = 0.3\nrescan_secs = 1", "", TOKEN);
    d.sandbox.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    std::fs::write(d.path("drop/orders.csv"), orders(1, 4, 1)).unwrap();
    d.wait_for("the first content taken in", Duration::from_secs(20), |d| {
        d.files_in_ledger().len() == 1
    });
    // The export job appends while the first orders still wait for impact.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path("drop/orders.csv"))
        .unwrap();
    f.write_all(orders(5, 3, 1).split_once('\n').unwrap().1.as_bytes())
        .unwrap();
    drop(f);
    d.wait_for(
        "the appended content taken in",
        Duration::from_secs(20),
        |d| d.files_in_ledger().len() == 2,
    );
    d.sandbox.set_faults(Faults::default());
    d.wait_for("7 orders accepted", Duration::from_secs(30), |d| {
        d.accepted().len() == 7
    });
    assert!(d.accepted().values().all(|n| *n == 1), "{:?}", d.accepted());
    d.wait_for("the grown file archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
    });
    let archived_content =
        std::fs::read_to_string(archived(d.dir.path(), "orders.csv").unwrap()).unwrap();
    assert_eq!(
        archived_content.lines().count(),
        8,
        "the whole grown file is what was archived"
    );
}

#[test]
fn a_hundred_thousand_empty_files_do_not_stop_the_daemon() {
    let d = Daemon::start("settle_secs = 0.2\nrescan_secs = 2", "", TOKEN);
    for i in 0..100_000 {
        std::fs::File::create(d.path(&format!("drop/empty-{i:06}.csv"))).unwrap();
    }
    std::fs::write(d.path("drop/real.csv"), orders(1, 3, 1)).unwrap();
    d.wait_for("the real export accepted", Duration::from_secs(120), |d| {
        d.accepted().len() == 3
    });
    let pid = d.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 100 * 1024, "RSS {} MiB", rss_kib / 1024);
    assert_eq!(
        d.files_in_ledger(),
        vec!["drop/real.csv".to_string()],
        "empty files are not exports"
    );
    assert!(
        d.log().lines().all(|l| !l.contains("empty-")),
        "and make no noise"
    );
}

/// A file refused as a whole (a Shopify export without `Created at`): the daemon logs an
/// ERROR naming the file and the column, counts it in `files_refused_total`, records every
/// row invalid, writes them all to the rejects file and archives the file (so it is neither
/// lost nor read again in a loop).
#[test]
fn a_refused_file_is_logged_counted_and_kept_in_its_rejects_file() {
    let d = Daemon::start(
        "settle_secs = 0.3\nrescan_secs = 1\nformat = \"shopify-csv\"",
        "",
        TOKEN,
    );
    std::fs::write(
        d.path("drop/orders_export.csv"),
        "Name,Currency,Subtotal,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku\n\
         #1,USD,10.00,1,Mug,10.00,MUG\n#2,USD,5.00,1,Tea,5.00,TEA\n",
    )
    .unwrap();
    d.wait_for("the rejects file", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders_export.csv.rejects.csv").is_some()
    });
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("orders_export.csv")
            && l.contains("\"Created at\"")),
        "{log}"
    );
    assert_eq!(d.metric("files_refused_total"), 1);
    let rejects =
        std::fs::read_to_string(archived(d.dir.path(), "orders_export.csv.rejects.csv").unwrap())
            .unwrap();
    assert_eq!(rejects.lines().count(), 3, "{rejects}");
    assert!(
        rejects
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("#1,USD,10.00,1,Mug,10.00,MUG,\"the file was refused"),
        "{rejects}"
    );
    assert!(archived(d.dir.path(), "orders_export.csv").is_some());
    assert_eq!(d.sandbox.stats().requests, 0);
    let st = run_in(d.dir.path(), &["status", "--json"], &[]);
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let f = &doc["per_file"][0];
    assert_eq!(f["rows"], 2);
    assert_eq!(f["rows_invalid"], 2, "{f}");
}

/// Ages every record in the ledger by `days`, as a clock that far ahead would see them.
fn age_ledger(path: &Path, days: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    let t = (chrono::Utc::now() - chrono::Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    c.execute(
        "UPDATE conversions SET updated_at = ?1, created_at = ?1, accepted_at = ?1",
        [&t],
    )
    .unwrap();
    c.execute("UPDATE files SET first_seen = ?1, finished_at = ?1", [&t])
        .unwrap();
}

/// A start with the clock far ahead (every record looks 401 days old): nothing is pruned,
/// the daemon says why, and a cumulative re-export sends only its new orders.
#[test]
fn a_clock_far_ahead_at_start_prunes_nothing_and_pays_nothing_twice() {
    let mut d = Daemon::start("settle_secs = 0.3\nrescan_secs = 1", "", TOKEN);
    std::fs::write(d.path("drop/orders.csv"), orders(1, 10, 1)).unwrap();
    d.wait_for("10 accepted and archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
    });
    d.terminate();
    age_ledger(&d.path("ledger.sqlite"), 401);
    d.spawn();
    d.wait_for("the refusal to prune", Duration::from_secs(20), |d| {
        d.log().contains("not pruning: the clock says")
    });
    std::fs::write(d.path("drop/orders.csv"), orders(1, 12, 1)).unwrap();
    d.wait_for("12 orders accepted", Duration::from_secs(20), |d| {
        d.accepted().len() == 12
    });
    d.wait_for("the re-export archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders.1.csv").is_some()
    });
    assert_eq!(d.sandbox.stats().requests, 12, "only the 2 new orders went");
    assert!(d.accepted().values().all(|n| *n == 1));
}

/// After normal pruning (records older than keep_days, newer ones present), an accepted
/// order is still known: an old export dropped again sends nothing, and `status` shows the
/// pruned rows as pruned, never as unaccounted.
#[test]
fn pruned_orders_are_never_paid_again_and_status_says_pruned() {
    let mut d = Daemon::start("settle_secs = 0.3\nrescan_secs = 1", "", TOKEN);
    std::fs::write(d.path("drop/old.csv"), orders(1, 5, 1)).unwrap();
    d.wait_for("old archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "old.csv").is_some()
    });
    d.terminate();
    age_ledger(&d.path("ledger.sqlite"), 500);
    // One recent file, so the clock looks right.
    std::fs::write(d.path("drop/new.csv"), orders(100, 1, 1)).unwrap();
    d.spawn();
    d.wait_for("new archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "new.csv").is_some()
    });
    d.terminate();
    d.spawn();
    d.wait_for("pruning", Duration::from_secs(20), |d| {
        d.log().contains("pruned 5 line records")
    });
    // The old export again, under another name.
    std::fs::write(d.path("drop/old-again.csv"), orders(1, 5, 1) + "\n").unwrap();
    d.wait_for("old-again archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "old-again.csv").is_some()
    });
    assert_eq!(
        d.sandbox.stats().requests,
        6,
        "nothing of the old orders went again"
    );
    let st = run_in(d.dir.path(), &["status"], &[]);
    assert!(st.stdout.contains("5 rows pruned"), "{}", st.stdout);
    assert!(!st.stdout.contains("UNACCOUNTED"), "{}", st.stdout);
    assert_tallies_match(&d.path("ledger.sqlite"));
}

/// The lock follows the ledger file, not its name: a second daemon naming the same ledger
/// through a symlink is refused; a second daemon on the same drop folder with another ledger
/// is refused too; nothing is sent twice.
#[test]
fn one_writer_per_ledger_and_per_drop_folder_whatever_the_path() {
    let d = Daemon::start("settle_secs = 0.3\nrescan_secs = 1", "", TOKEN);
    std::fs::write(d.path("drop/orders.csv"), orders(1, 20, 1)).unwrap();
    d.wait_for("archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
    });
    std::os::unix::fs::symlink(d.path("ledger.sqlite"), d.path("alias.sqlite")).unwrap();
    let run_with = |ledger: &str| {
        let _g = d.rt.enter();
        run_in(
            d.dir.path(),
            &["watch"],
            &[("IMPACT_DROP_LEDGER", ledger), ("IMPACT_AUTH_TOKEN", TOKEN)],
        )
    };
    let second = run_with("alias.sqlite");
    assert_eq!(second.code, 2, "{}", second.stderr);
    let pid = d.child.as_ref().unwrap().id();
    assert!(
        second.stderr.contains(&format!(
            "is in use by another impact-drop (pid {pid}: impact-drop watch)"
        )),
        "the holder is named: {}",
        second.stderr
    );
    let other = run_with("other.sqlite");
    assert_eq!(other.code, 2, "{}", other.stderr);
    assert!(
        other
            .stderr
            .contains("is taking files from the drop folder")
            && other
                .stderr
                .contains(&format!("pid {}", d.child.as_ref().unwrap().id())),
        "{}",
        other.stderr
    );
    // `run` over the same folder with another ledger is refused the same way.
    let _g = d.rt.enter();
    let run = run_in(
        d.dir.path(),
        &["run"],
        &[
            ("IMPACT_DROP_LEDGER", "third.sqlite"),
            ("IMPACT_AUTH_TOKEN", TOKEN),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(d.sandbox.stats().requests, 20);
}

/// The ledger deleted under a running daemon: it notices (healthz 503, an ERROR), takes in
/// and sends nothing more; a restart with the empty ledger is refused because the archive
/// holds exports an earlier ledger sent, until the operator says --new-ledger.
#[test]
fn a_ledger_deleted_under_watch_is_an_alarm_not_a_fresh_start() {
    let mut d = Daemon::start("settle_secs = 0.3\nrescan_secs = 1", "", TOKEN);
    std::fs::write(d.path("drop/orders.csv"), orders(1, 20, 1)).unwrap();
    d.wait_for("archived", Duration::from_secs(20), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
    });
    for f in ["ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"] {
        let _ = std::fs::remove_file(d.path(f));
    }
    d.wait_for("the alarm", Duration::from_secs(20), |d| {
        d.log().contains("ERROR") && d.log().contains("was deleted or replaced")
    });
    assert_eq!(d.http("/healthz").0, 503);
    // A cumulative re-export is not taken in while the ledger is gone.
    let scans = d.metric("scans_total");
    std::fs::write(d.path("drop/orders.csv"), orders(1, 25, 1)).unwrap();
    d.wait_for("two more scans", Duration::from_secs(20), |d| {
        d.metric("scans_total") >= scans + 2
    });
    assert_eq!(d.sandbox.stats().requests, 20);
    d.terminate();
    // A restart on the empty ledger is refused …
    let _g = d.rt.enter();
    let r = run_in(d.dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("archived exports that an earlier ledger sent"),
        "{}",
        r.stderr
    );
    assert_eq!(d.sandbox.stats().requests, 20, "nothing re-sent");
    // … unless the operator says so.
    let r = run_in(
        d.dir.path(),
        &["run", "--new-ledger"],
        &[("IMPACT_AUTH_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// A marker left behind (as a kill between moving a file and its marker used to leave it)
/// never makes the next upload of that name look finished while it is being written: a
/// marker counts only if it is no older than its file. The upload pauses longer than
/// `settle_secs` halfway; nothing goes until its own marker, then every order once, whole.
#[test]
fn a_stale_marker_never_admits_a_half_written_upload() {
    let d = Daemon::start(
        "settle_secs = 0.2\nrescan_secs = 1\nready_marker = \".done\"",
        "",
        TOKEN,
    );
    std::fs::write(d.path("drop/orders.csv.done"), "").unwrap();
    // Left behind by an earlier upload: older than anything written now.
    std::fs::File::options()
        .write(true)
        .open(d.path("drop/orders.csv.done"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let content = orders(1, 40, 3);
    let half = content.len() / 2;
    let mut f = std::fs::File::create(d.path("drop/orders.csv")).unwrap();
    f.write_all(&content.as_bytes()[..half]).unwrap();
    f.flush().unwrap();
    // The upload stalls for several settle windows.
    let scans = d.metric("scans_total");
    d.wait_for("three scans while stalled", Duration::from_secs(20), |d| {
        d.metric("scans_total") >= scans + 3
    });
    assert_eq!(
        d.sandbox.stats().requests,
        0,
        "a stale marker admits nothing"
    );
    f.write_all(&content.as_bytes()[half..]).unwrap();
    drop(f);
    std::fs::write(d.path("drop/orders.csv.done"), "").unwrap();
    d.wait_for("40 orders accepted", Duration::from_secs(20), |d| {
        d.accepted().len() == 40
    });
    assert!(d.accepted().values().all(|n| *n == 1));
    for r in d.sandbox.received() {
        assert!(r.body.contains("ItemSku3="), "every item: {}", r.body);
    }
}

/// The daemon stopped (SIGSTOP) past `timeout_secs` while POSTs are in flight, then
/// continued: the answers that arrived meanwhile are read and recorded (the timeout counts
/// time the process ran), so every order is accepted exactly once; nothing is lost.
#[test]
fn a_pause_past_the_timeout_records_the_late_answers() {
    let d = Daemon::start(
        "settle_secs = 0.2\nrescan_secs = 1",
        "timeout_secs = 1\nmax_in_flight = 4",
        TOKEN,
    );
    d.sandbox.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    std::fs::write(d.path("drop/orders.csv"), orders(1, 8, 1)).unwrap();
    d.wait_for("POSTs in flight", Duration::from_secs(20), |d| {
        d.sandbox.stats().requests >= 1
    });
    let pid = d.child.as_ref().unwrap().id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_secs(3)); // the fault itself: a stopped process
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    d.sandbox.set_faults(Faults::default());
    d.wait_for("every order accepted", Duration::from_secs(60), |d| {
        d.accepted().len() == 8
    });
    d.wait_for("the file finished", Duration::from_secs(60), |d| {
        archived(d.dir.path(), "orders.csv").is_some()
    });
    assert!(d.accepted().values().all(|n| *n <= 3), "{:?}", d.accepted());
}
