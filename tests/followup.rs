//! Follow-up through the real binary and the sandbox: what became of each accepted conversion
//! at impact (`APISubmissions`). Every accepted conversion is asked about until impact says
//! `Complete`, and its final outcome is recorded; failures land in the file's
//! `.failed-at-impact.csv`; a copy sent again after a kill is recorded as absorbed by impact's
//! dedup, while a real duplicate from elsewhere is a failure; `run` waits a bounded time and a
//! later run finishes; a partner account without follow-up is probed once; and under a tight
//! hourly budget sends keep their rate while follow-ups wait (`watch`). Every wait is on a
//! condition with a deadline.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use impact_drop::impact::sandbox::Faults;

const SID: &str = "IRFOLLOW00000000000000000001";
const TOKEN: &str = "follow-token-5e1d";

/// A workspace on `endpoint` with extra `[impact]` and `[follow_up]` keys.
fn env(endpoint: &str, impact: &str, follow_up: &str) -> SandboxDir {
    SandboxDir::new(SID, TOKEN, |base_url| {
        format!(
            "[source]\ndrop_dir = \"drop\"\nsettle_secs = 0.2\nrescan_secs = 1\n\
             [impact]\nendpoint = \"{endpoint}\"\nbase_url = \"{base_url}\"\n\
             account_sid = \"{SID}\"\nrequests_per_hour = 0\nretry_cap_secs = 1\n{impact}\n\
             [follow_up]\nfirst_check_secs = 0\nmax_interval_secs = 1\n{follow_up}\n\
             [ledger]\npath = \"ledger.sqlite\"\n\
             [defaults]\nCampaignId = 1000\nActionTrackerId = 2000\nCurrencyCode = \"USD\"\n"
        )
    })
}

const TOKEN_ENV: &[(&str, &str)] = &[("IMPACT_AUTH_TOKEN", TOKEN)];

/// Orders with a ClickId (brand's attribution) and one item each, `extra` rows appended.
fn csv(orders: &[&str]) -> String {
    let mut s =
        String::from("OrderId,EventDate,ClickId,MediaPartnerId,ItemSku,ItemQuantity,ItemPrice\n");
    for o in orders {
        s.push_str(&format!(
            "{o},2026-11-30T10:00:00Z,clk-{o},3000,SKU-{o},1,12.50\n"
        ));
    }
    s
}

/// OrderId → (follow-up state, ErrorReason), from the ledger.
fn outcomes(dir: &Path) -> BTreeMap<String, (String, Option<String>)> {
    let c = rusqlite::Connection::open_with_flags(
        dir.join("ledger.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = c
        .prepare(
            "SELECT c.order_id, f.state, f.error_reason FROM followups f
             JOIN conversions c ON c.id = f.conversion_id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn status_json(dir: &Path) -> serde_json::Value {
    let r = run_in(dir, &["status", "--json"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_accepted_conversion_is_followed_to_its_final_outcome() {
    let e = env("brand", "", "run_wait_secs = 30");
    let mut fail = BTreeMap::new();
    fail.insert("F-1".to_owned(), "CAMPAIGN_NOT_FOUND".to_owned());
    fail.insert("F-2".to_owned(), "OUTSIDE_ASSOCIATION_WINDOW".to_owned());
    e.sandbox.set_faults(Faults {
        // Queued, then In Progress, then Complete: several questions each.
        complete_after_ms: 1_500,
        fail_orders: fail,
        ..Faults::default()
    });
    let mut data = csv(&["A-1", "A-2", "A-3", "F-1", "F-2"]);
    // F-2 has a second item: both its rows go to the failed-at-impact file.
    data.push_str("F-2,2026-11-30T10:00:00Z,clk-F-2,3000,SKU-F-2b,2,5.00\n");
    let (r, got) = e.run("orders.csv", &data, TOKEN_ENV);
    assert_eq!(
        r.code, 1,
        "failures at impact need the operator\n{}",
        r.stdout
    );
    // The sale amount impact computed from the body, to the cent.
    assert_eq!(got["F-2"].sale_amount.as_deref(), Some("22.5"));
    assert!(
        r.stdout.contains("3 processed, 2 failed at impact, 0 absorbed by impact's dedup, 0 unknown; 0 still queued at impact"),
        "{}",
        r.stdout
    );
    let o = outcomes(e.dir.path());
    let state = |k: &str| o[k].0.as_str();
    for a in ["A-1", "A-2", "A-3"] {
        assert_eq!(state(a), "processed", "{o:?}");
    }
    assert_eq!(
        o["F-1"],
        ("failed".into(), Some("CAMPAIGN_NOT_FOUND".into()))
    );
    assert_eq!(
        o["F-2"],
        ("failed".into(), Some("OUTSIDE_ASSOCIATION_WINDOW".into()))
    );
    // Every accepted conversion was asked about, and the answers went Queued → Complete.
    let asked = e.sandbox.asked();
    for rcv in got.values() {
        let id = rcv.queued_uri.rsplit('/').next().unwrap();
        let mine: Vec<_> = asked.iter().filter(|a| a.batch_id == id).collect();
        assert!(!mine.is_empty(), "{} never asked", rcv.order_id);
        assert_eq!(
            mine.last().unwrap().impact_status.as_deref(),
            Some("Complete")
        );
        // Nothing is asked again once impact said Complete.
        assert_eq!(
            mine.iter()
                .filter(|a| a.impact_status.as_deref() == Some("Complete"))
                .count(),
            1
        );
    }
    assert!(
        asked
            .iter()
            .any(|a| a.impact_status.as_deref() == Some("Queued")),
        "the first questions come before impact completes: {asked:?}"
    );
    // The failed rows, in the rejects format, next to the archived copy.
    let failed = archived(e.dir.path(), "orders.csv.failed-at-impact.csv").expect("failed file");
    assert_eq!(
        failed.parent(),
        archived(e.dir.path(), "orders.csv").unwrap().parent()
    );
    assert_eq!(
        std::fs::read_to_string(&failed).unwrap(),
        "OrderId,EventDate,ClickId,MediaPartnerId,ItemSku,ItemQuantity,ItemPrice,impact_drop_reason\n\
         F-1,2026-11-30T10:00:00Z,clk-F-1,3000,SKU-F-1,1,12.50,\"failed at impact: Validation: CAMPAIGN_NOT_FOUND\"\n\
         F-2,2026-11-30T10:00:00Z,clk-F-2,3000,SKU-F-2,1,12.50,\"failed at impact: Validation: OUTSIDE_ASSOCIATION_WINDOW\"\n\
         F-2,2026-11-30T10:00:00Z,clk-F-2,3000,SKU-F-2b,2,5.00,\"failed at impact: Validation: OUTSIDE_ASSOCIATION_WINDOW\"\n"
    );
    // status, overall and per file, in JSON and in words.
    let s = status_json(e.dir.path());
    let at = &s["at_impact"];
    assert_eq!(at["processed"], 3);
    assert_eq!(at["failed"], 2);
    assert_eq!(at["waiting"], 0);
    assert_eq!(at["failed_by_reason"]["CAMPAIGN_NOT_FOUND"], 1);
    assert_eq!(at["failed_by_reason"]["OUTSIDE_ASSOCIATION_WINDOW"], 1);
    assert_eq!(s["per_file"][0]["at_impact"], *at);
    // Paths as the config names them (relative to the workspace here), like archived_to.
    assert_eq!(
        e.dir
            .path()
            .join(s["per_file"][0]["failed_at_impact_path"].as_str().unwrap()),
        failed
    );
    let text = run_in(e.dir.path(), &["status"], &[]).stdout;
    assert!(
        text.contains("at impact: 3 processed by impact, 2 failed at impact (1 CAMPAIGN_NOT_FOUND, 1 OUTSIDE_ASSOCIATION_WINDOW)"),
        "{text}"
    );
    assert_tallies_match(&e.dir.path().join("ledger.sqlite"));
}

#[test]
fn run_waits_a_bounded_time_and_a_later_run_finishes() {
    let e = env("brand", "", "run_wait_secs = 1");
    e.sandbox.set_faults(Faults {
        complete_after_ms: 5_000,
        ..Faults::default()
    });
    let start = Instant::now();
    let (r, _) = e.run("orders.csv", &csv(&["W-1", "W-2", "W-3"]), TOKEN_ENV);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "run waited {:?}",
        start.elapsed()
    );
    assert!(
        r.stdout
            .contains("3 still queued at impact (asked again by the next run or by watch)"),
        "{}",
        r.stdout
    );
    assert!(outcomes(e.dir.path()).values().all(|(s, _)| s == "waiting"));
    // Later runs (nothing new to send) ask again; once impact completes, all are processed.
    wait_for(
        "a later run to finish the follow-ups",
        Duration::from_secs(30),
        || {
            let r = run_in(e.dir.path(), &["run"], TOKEN_ENV);
            assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
            outcomes(e.dir.path())
                .values()
                .all(|(s, _)| s == "processed")
        },
    );
    assert_eq!(e.sandbox.received().len(), 3, "nothing is sent twice");
    assert_eq!(status_json(e.dir.path())["at_impact"]["processed"], 3);
}

#[test]
fn an_old_conversion_ends_unknown_and_a_401_stops_follow_ups() {
    let e = env("brand", "", "run_wait_secs = 5\ngive_up_after_days = 30");
    e.sandbox.set_faults(Faults {
        complete_after_ms: 600_000,
        ..Faults::default()
    });
    let (r, _) = e.run(
        "orders.csv",
        &csv(&["U-1", "U-2", "U-3"]),
        &[("IMPACT_AUTH_TOKEN", TOKEN)],
    );
    assert!(
        r.stdout.contains("3 still queued at impact"),
        "{}",
        r.stdout
    );
    // U-1 was accepted 31 days ago as far as the ledger knows.
    let ledger = e.dir.path().join("ledger.sqlite");
    let c = rusqlite::Connection::open(&ledger).unwrap();
    c.execute(
        "UPDATE conversions SET accepted_at = '2020-01-01T00:00:00.000Z' WHERE order_id = 'U-1'",
        [],
    )
    .unwrap();
    drop(c);
    // A wrong token: the first question is answered 401 and no other is asked.
    let before = e.sandbox.asked().len();
    let r = run_in(e.dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", "wrong")]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("impact-drop: error: ") && r.stderr.contains("IMPACT_AUTH_TOKEN"),
        "{}",
        r.stdout
    );
    assert_eq!(e.sandbox.stats().statuses.get(&401), Some(&1));
    assert_eq!(e.sandbox.asked().len(), before);
    // U-1 was given up on without asking (no question needed for that).
    assert!(r.stdout.contains("1 unknown"), "{}", r.stdout);
    let o = outcomes(e.dir.path());
    assert_eq!(o["U-1"].0, "unknown");
    assert_eq!(o["U-2"].0, "waiting");
    // With the right token again, the others are asked about again.
    let r = run_in(e.dir.path(), &["run"], TOKEN_ENV);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("0 unknown; 2 still queued at impact"),
        "{}",
        r.stdout
    );
    assert!(e.sandbox.asked().len() > before);
    let s = status_json(e.dir.path());
    assert_eq!(s["at_impact"]["unknown"], 1);
    assert_eq!(s["at_impact"]["waiting"], 2);
}

#[test]
fn a_copy_sent_again_after_a_kill_is_absorbed_and_a_real_duplicate_is_a_failure() {
    let e = env("brand", "max_in_flight = 4", "run_wait_secs = 20");
    // A real duplicate: another tool (its own ledger) already sent D-1 to this account.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("impact-drop.toml"),
        format!(
            "[source]\ndrop_dir = \"drop\"\n[impact]\nendpoint = \"brand\"\n\
             base_url = \"{}\"\naccount_sid = \"{SID}\"\nrequests_per_hour = 0\n\
             [follow_up]\nenabled = false\n[ledger]\npath = \"ledger.sqlite\"\n\
             [defaults]\nCampaignId = 1000\nActionTrackerId = 2000\nCurrencyCode = \"USD\"\n",
            e.sandbox.base_url()
        ),
    )
    .unwrap();
    std::fs::create_dir(other.path().join("drop")).unwrap();
    std::fs::write(other.path().join("drop").join("d.csv"), csv(&["D-1"])).unwrap();
    {
        let _g = e.rt.enter();
        let r = run_in(other.path(), &["run"], TOKEN_ENV);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stdout.contains("follow-up"), "{}", r.stdout);
    }
    // impact records K-1..K-3 but answers late; the run is killed before any answer.
    e.sandbox.set_faults(Faults {
        answer_delay_ms: 60_000,
        ..Faults::default()
    });
    std::fs::write(
        e.dir.path().join("drop").join("orders.csv"),
        csv(&["K-1", "K-2", "K-3"]),
    )
    .unwrap();
    let mut child = {
        let _g = e.rt.enter();
        command(e.dir.path(), &["run"], TOKEN_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    wait_for("impact to have K-1..K-3", Duration::from_secs(20), || {
        e.sandbox.received().len() == 4
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let ledger = e.dir.path().join("ledger.sqlite");
    let lost: Vec<String> = in_flight(&e.sandbox, &ledger)
        .into_iter()
        .filter(|o| o.starts_with('K'))
        .collect();
    assert_eq!(lost, ["K-1", "K-2", "K-3"]);
    // The next run sends them again (impact answers CONV_DUPLICATE for each, after its 200)
    // and D-1 for the first time from this ledger (a CONV_DUPLICATE too: a real one).
    e.sandbox.set_faults(Faults::default());
    let (r, got) = e.run("more.csv", &csv(&["D-1"]), TOKEN_ENV);
    assert_eq!(r.code, 1, "D-1 failed at impact\n{}", r.stdout);
    assert_eq!(got.len(), 4);
    assert_eq!(e.sandbox.received().len(), 8, "K-1..K-3 twice, D-1 twice");
    let o = outcomes(e.dir.path());
    for k in ["K-1", "K-2", "K-3"] {
        assert_eq!(
            o[k],
            ("absorbed".into(), Some("CONV_DUPLICATE".into())),
            "{o:?}"
        );
    }
    assert_eq!(o["D-1"], ("failed".into(), Some("CONV_DUPLICATE".into())));
    assert!(
        r.stdout
            .contains("0 processed, 1 failed at impact, 3 absorbed by impact's dedup"),
        "{}",
        r.stdout
    );
    let s = status_json(e.dir.path());
    assert_eq!(s["at_impact"]["absorbed"], 3);
    assert_eq!(s["at_impact"]["failed"], 1);
    assert_eq!(s["at_impact"]["failed_by_reason"]["CONV_DUPLICATE"], 1);
    // Only D-1 is in the failed-at-impact file of more.csv; orders.csv has none.
    let failed = archived(e.dir.path(), "more.csv.failed-at-impact.csv").unwrap();
    let text = std::fs::read_to_string(failed).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("D-1,") && text.contains("CONV_DUPLICATE"),
        "{text}"
    );
    assert!(archived(e.dir.path(), "orders.csv.failed-at-impact.csv").is_none());
    assert_tallies_match(&ledger);
}

#[test]
fn a_partner_account_without_follow_up_is_probed_once() {
    let e = env("partner", "", "run_wait_secs = 10");
    e.sandbox.set_faults(Faults {
        no_partner_submissions: true,
        ..Faults::default()
    });
    let (r, _) = e.run("a.csv", &csv(&["P-1", "P-2"]), TOKEN_ENV);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(
            "follow-up: not available for this account (unavailable: impact answered 404"
        ),
        "{}",
        r.stdout
    );
    assert_eq!(e.sandbox.asked().len(), 1, "one probe");
    let (r, got) = e.run("b.csv", &csv(&["P-3"]), TOKEN_ENV);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(got.contains_key("P-3"));
    assert_eq!(e.sandbox.asked().len(), 1, "never asked again");
    let o = outcomes(e.dir.path());
    assert_eq!(o.len(), 2, "P-3 is not followed: {o:?}");
    assert!(o.values().all(|(s, _)| s == "unavailable"));
    let s = status_json(e.dir.path());
    assert!(
        s["follow_up"].as_str().unwrap().starts_with(
            "not available for this partner account (unavailable: impact answered 404"
        ),
        "{s}"
    );
    let text = run_in(e.dir.path(), &["status"], &[]).stdout;
    assert!(
        text.contains("follow-up: not available for this partner account"),
        "{text}"
    );
    // A partner account that has it is followed like brand.
    let e = env("partner", "", "run_wait_secs = 10");
    let (r, _) = e.run("a.csv", &csv(&["Q-1", "Q-2"]), TOKEN_ENV);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(outcomes(e.dir.path())
        .values()
        .all(|(s, _)| s == "processed"));
}

/// `watch` follows up continuously; under a tight hourly budget a new file's sends keep the
/// pacer's rate while follow-ups wait, and follow-ups resume once the sends are done.
#[test]
fn watch_follows_up_continuously_and_sends_keep_their_rate_under_a_tight_budget() {
    // 14,400 requests/hour: a burst of 20, then one every ~250 ms.
    let e = env("brand", "requests_per_hour = 14400", "");
    std::fs::write(
        e.dir.path().join("impact-drop.toml"),
        std::fs::read_to_string(e.dir.path().join("impact-drop.toml"))
            .unwrap()
            .replace("requests_per_hour = 0\n", "")
            + "[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    e.sandbox.set_faults(Faults {
        complete_after_ms: 600_000,
        ..Faults::default()
    });
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut child = {
        let _g = e.rt.enter();
        command(e.dir.path(), &["watch"], TOKEN_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stderr = child.stderr.take().unwrap();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let drop_file = |name: &str, first: usize, n: usize| {
        let names: Vec<String> = (first..first + n).map(|i| format!("T-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let tmp = e.dir.path().join(format!(".{name}"));
        std::fs::write(&tmp, csv(&refs)).unwrap();
        std::fs::rename(&tmp, e.dir.path().join("drop").join(name)).unwrap();
    };
    drop_file("a.csv", 1, 5);
    wait_for("follow-ups of a.csv", Duration::from_secs(30), || {
        e.sandbox.asked().len() >= 10
    });
    drop_file("b.csv", 100, 40);
    wait_for("b.csv sent", Duration::from_secs(60), || {
        e.sandbox.received().len() == 45
    });
    let b: Vec<u64> = e
        .sandbox
        .received()
        .iter()
        .filter(|r| r.order_id.starts_with("T-1") && r.order_id.len() == 5)
        .map(|r| r.at_ms)
        .collect();
    assert_eq!(b.len(), 40);
    let (first, last) = (b[0], b[b.len() - 1]);
    // The rate: the burst (less at most the one slot a follow-up held), then one per
    // interval: 20-21 intervals of 250 ms, never much more.
    let took = last - first;
    assert!(
        (4_400..=5_250 + 800).contains(&took),
        "40 sends took {took} ms at 14,400/hour"
    );
    // Follow-ups waited: no question while the sends had slots to wait for (one that had its
    // slot already may go as the first send arrives).
    let asked = e.sandbox.asked();
    let during = asked
        .iter()
        .filter(|a| a.at_ms > first + 50 && a.at_ms < last)
        .count();
    assert!(during <= 1, "{during} follow-ups while sending: {asked:?}");
    eprintln!("40 sends in {took} ms at 14,400/hour; {during} follow-ups during them");
    // And resumed after.
    wait_for(
        "follow-ups after the sends",
        Duration::from_secs(30),
        || e.sandbox.asked().iter().any(|a| a.at_ms > last),
    );
    // impact completes them: every one is recorded processed, and /metrics counts them.
    e.sandbox.set_faults(Faults::default());
    wait_for("all 45 processed", Duration::from_secs(90), || {
        outcomes(e.dir.path())
            .values()
            .filter(|(s, _)| s == "processed")
            .count()
            == 45
    });
    let base = log
        .lock()
        .unwrap()
        .split("health on ")
        .nth(1)
        .and_then(|s| s.split("/healthz").next())
        .unwrap()
        .to_owned();
    let metrics = e.rt.block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("impact_drop_at_impact{state=\"processed\"} 45\n")
            && metrics.contains("impact_drop_at_impact{state=\"waiting\"} 0\n"),
        "{metrics}"
    );
    assert_eq!(e.sandbox.received().len(), 45, "nothing sent twice");
}
