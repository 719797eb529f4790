//! Delivery through the real binary against the sandbox on 127.0.0.1 and a real SQLite
//! ledger: exactly once, dedup semantics, replay, credentials, a fault storm and kill -9.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use impact_drop::impact::sandbox::{Faults, Sandbox};

const SID: &str = "IRTEST0000000000000000000001";
const TOKEN: &str = "test-token-5f3a9c";
const GOLDEN: &str = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=TOYS-1001\
&EventDate=2023-02-15T22:55:32-08:00&CurrencyCode=USD&ItemSku1=TOYSET&ItemQuantity1=2\
&ItemPrice1=40.00&ItemSku2=DOLL&ItemQuantity2=1&ItemPrice2=6.99";

struct Env {
    rt: tokio::runtime::Runtime,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(extra: &str) -> Env {
        let (rt, sandbox) = sandbox(SID, TOKEN);
        let dir = workspace(&format!(
            "[source]\ndrop_dir = \"drop\"\n[impact]\nbase_url = \"{}\"\naccount_sid = \"{SID}\"\n\
             requests_per_hour = 0\nretry_cap_secs = 1\n{extra}\n\
             [ledger]\npath = \"ledger.sqlite\"\n",
            sandbox.base_url()
        ));
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        Env { rt, sandbox, dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn drop_file(&self, name: &str, content: &str) {
        std::fs::write(self.path("drop").join(name), content).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_token(args, TOKEN)
    }

    fn run_with_token(&self, args: &[&str], token: &str) -> Run {
        let _guard = self.rt.enter();
        run_in(self.dir.path(), args, &[("IMPACT_AUTH_TOKEN", token)])
    }

    fn requests(&self) -> u64 {
        self.sandbox.stats().requests
    }

    /// OrderId → how many times the sandbox accepted it.
    fn accepted_counts(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in self.sandbox.received() {
            *m.entry(r.order_id).or_insert(0) += 1;
        }
        m
    }

    fn ledger_states(&self) -> BTreeMap<String, String> {
        ledger_states(&self.path("ledger.sqlite"))
    }

    fn archived(&self, name: &str) -> PathBuf {
        archived(self.dir.path(), name).unwrap_or_else(|| panic!("{name} not archived"))
    }
}

fn status_json(env: &Env) -> serde_json::Value {
    let r = env.run(&["status", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

/// Every finished file's rows add up to what the ledger recorded for them.
fn assert_every_row_accounted(env: &Env) {
    let st = status_json(env);
    for f in st["per_file"].as_array().unwrap() {
        if f["state"] == "done" {
            let sum: u64 = [
                "rows_accepted",
                "rows_rejected",
                "rows_pending",
                "rows_invalid",
                "rows_already_sent",
                "rows_changed_after_sent",
                "rows_already_pending",
                "rows_already_rejected",
                "rows_filtered",
            ]
            .iter()
            .map(|k| f[k].as_u64().unwrap())
            .sum();
            assert_eq!(sum, f["rows"].as_u64().unwrap(), "file {f}");
        }
    }
}

#[test]
fn the_seed_example_arrives_with_the_golden_body() {
    let env = Env::new("");
    std::fs::copy(samples().join("seed.csv"), env.path("drop/seed.csv")).unwrap();
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let received = env.sandbox.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, GOLDEN);
    assert!(env.archived("seed.csv").exists());
    assert!(!env.path("drop/seed.csv").exists());
}

#[test]
fn status_lists_invalid_and_filtered_rows_with_their_reasons() {
    let env = Env::new("");
    std::fs::copy(
        samples().join("bad-rows.csv"),
        env.path("drop/bad-rows.csv"),
    )
    .unwrap();
    assert_eq!(env.run(&["run"]).code, 1);
    let r = env.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("drop/bad-rows.csv:3: invalid: line 3, ItemPrice: \"-5.00\" is negative"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("drop/bad-rows.csv:6: invalid: line 6, OrderId: is empty"),
        "{}",
        r.stdout
    );
    let st = status_json(&env);
    assert_eq!(st["not_sent"].as_array().unwrap().len(), 8);

    // A Shopify export with a refunded order: filtered, listed with its reason.
    let shop = Env::new("");
    let config = shop.path("impact-drop.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[source]\n", "[source]\nformat = \"shopify-csv\"\n");
    std::fs::write(&config, text).unwrap();
    std::fs::copy(
        samples().join("shopify/orders_export.csv"),
        shop.path("drop/orders_export.csv"),
    )
    .unwrap();
    let r = shop.run(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("1 rows filtered"), "{}", r.stdout);
    let r = shop.run(&["status"]);
    assert!(
        r.stdout
            .contains("orders_export.csv:5: filtered: Financial Status is \"refunded\""),
        "{}",
        r.stdout
    );
    assert_every_row_accounted(&shop);
    assert_tallies_match(&env.path("ledger.sqlite"));
}

#[test]
fn a_file_is_sent_once_and_copies_of_it_never() {
    let env = Env::new("");
    env.drop_file("orders.csv", &orders(1, 200, 2));
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(env.requests(), 200);
    assert!(
        r.stdout.contains("400 rows: 200 conversions accepted"),
        "{}",
        r.stdout
    );

    let r = env.run(&["run"]);
    assert_eq!(r.code, 0);
    assert_eq!(env.requests(), 200, "a second run sends nothing");

    // The same content again, under the same name and under another name.
    std::fs::copy(env.archived("orders.csv"), env.path("drop/orders.csv")).unwrap();
    std::fs::copy(
        env.archived("orders.csv"),
        env.path("drop/orders_export (1).csv"),
    )
    .unwrap();
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(env.requests(), 200, "copies send nothing: {}", r.stdout);
    assert!(
        r.stdout.contains("orders_export (1).csv: same content as"),
        "{}",
        r.stdout
    );
    assert_eq!(env.accepted_counts().values().max(), Some(&1));
    assert_every_row_accounted(&env);
}

#[test]
fn a_cumulative_re_export_sends_only_the_new_orders() {
    let env = Env::new("");
    env.drop_file("day1.csv", &orders(1, 100, 1));
    assert_eq!(env.run(&["run"]).code, 0);
    env.drop_file("day2.csv", &orders(1, 150, 1));
    let r = env.run(&["send", "--dry-run", "drop/day2.csv"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("150 rows: 50 conversions would be sent, 100 already sent"),
        "{}",
        r.stdout
    );
    assert_eq!(env.requests(), 100, "a dry run sends nothing");
    assert_eq!(env.ledger_states().len(), 100, "and records nothing");
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(env.requests(), 150);
    assert!(
        r.stdout
            .contains("150 rows: 50 conversions accepted, 100 rows already sent"),
        "{}",
        r.stdout
    );
    assert_eq!(env.accepted_counts().len(), 150);
    assert_every_row_accounted(&env);
}

#[test]
fn new_items_for_an_accepted_order_are_reported_not_sent() {
    let env = Env::new("");
    env.drop_file("a.csv", &orders(1, 3, 1));
    assert_eq!(env.run(&["run"]).code, 0);
    // O-2 gains an item in a later export: a conversion cannot be amended.
    let mut later = orders(1, 3, 1);
    later.push_str("O-2,2025-11-20T10:00:00Z,SKU-EXTRA,1,5.00\n");
    env.drop_file("b.csv", &later);
    let r = env.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(env.requests(), 3);
    assert!(
        r.stdout.contains("OrderId O-2 (CampaignId 1000, ActionTrackerId 2000): order changed after it was sent; adjust it in impact (lines 3, 5)"),
        "{}",
        r.stdout
    );
    let rejects = std::fs::read_to_string(env.archived("b.csv.rejects.csv")).unwrap();
    assert!(rejects.contains("new or changed lines: 5"), "{rejects}");
    assert_every_row_accounted(&env);
}

#[test]
fn replay_after_fixing_a_rejected_order_sends_only_that_order() {
    let env = Env::new("");
    env.sandbox.set_faults(Faults {
        reject_orders: vec!["O-3".into()],
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 5, 2));
    let r = env.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("4 conversions accepted, 1 conversion rejected by impact"),
        "{}",
        r.stdout
    );
    let rejects = std::fs::read_to_string(env.archived("orders.csv.rejects.csv")).unwrap();
    assert_eq!(
        rejects.lines().count(),
        3,
        "header + the 2 rows of O-3: {rejects}"
    );
    assert!(rejects.contains("CAMPAIGN_NOT_FOUND"));

    // A plain send of the same file: already processed, nothing sent.
    let archived = env.archived("orders.csv");
    let r = env.run(&["send", archived.to_str().unwrap()]);
    assert_eq!(env.requests(), 5, "{}", r.stdout);

    // The campaign is fixed at impact; the operator replays the file.
    env.sandbox.set_faults(Faults::default());
    let r = env.run(&["send", "--replay", archived.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(env.requests(), 6, "only O-3 again: {}", r.stdout);
    assert_eq!(env.sandbox.received().last().unwrap().order_id, "O-3");
    assert_eq!(
        env.ledger_states().get("O-3").map(String::as_str),
        Some("accepted")
    );
    let c = rusqlite::Connection::open(env.path("ledger.sqlite")).unwrap();
    let (user, queued): (String, i64) = c
        .query_row("SELECT user, queued FROM replays", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(!user.is_empty());
    assert_eq!(queued, 1);
    assert_tallies_match(&env.path("ledger.sqlite"));
}

#[test]
fn resend_accepted_resends_with_a_warning() {
    let env = Env::new("");
    env.drop_file("orders.csv", &orders(1, 4, 1));
    assert_eq!(env.run(&["run"]).code, 0);
    let archived = env.archived("orders.csv");
    let r = env.run(&["send", "--replay", archived.to_str().unwrap()]);
    assert_eq!(
        env.requests(),
        4,
        "a plain replay skips accepted ones: {}",
        r.stdout
    );
    let r = env.run(&[
        "send",
        "--replay",
        "--resend-accepted",
        archived.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("warning: --resend-accepted"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("second commission"));
    assert_eq!(env.requests(), 8);
    assert_eq!(env.sandbox.stats().duplicates.len(), 4);
}

#[test]
fn a_401_stops_everything_and_a_rerun_with_the_right_token_sends_all() {
    let env = Env::new("");
    env.drop_file("orders.csv", &orders(1, 20, 1));
    let r = env.run_with_token(&["run"], "wrong-token");
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("impact-drop: error: ") && r.stderr.contains("IMPACT_AUTH_TOKEN"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("IMPACT_AUTH_TOKEN").count(),
        1,
        "said once: {}",
        r.stderr
    );
    assert!(!r.stdout.contains("wrong-token") && !r.stderr.contains("wrong-token"));
    assert_eq!(env.sandbox.stats().accepted, 0);
    assert!(env.ledger_states().values().all(|s| s == "pending"));
    assert!(
        env.path("drop/orders.csv").exists(),
        "not archived while pending"
    );

    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(env.sandbox.stats().accepted, 20);
    assert!(env.ledger_states().values().all(|s| s == "accepted"));
    assert_every_row_accounted(&env);
}

#[test]
fn a_fault_storm_loses_nothing_and_duplicates_only_dropped_answers() {
    let env = Env::new("max_in_flight = 8");
    env.sandbox.set_faults(Faults {
        error_rate: 0.3,
        drop_rate: 0.1,
        rate_limit_burst: 30,
        retry_after_secs: 1,
        ..Faults::default()
    });
    env.drop_file("storm.csv", &orders(1, 2000, 1));
    let r = env.run(&["run"]);
    // A conversion whose answer was dropped 3 times is held for the operator (impact may
    // have it): the run says so with exit 1, and a replay releases it.
    let held = env
        .ledger_states()
        .values()
        .filter(|s| *s == "held")
        .count();
    if held > 0 {
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("held for the operator"), "{}", r.stdout);
        env.sandbox.set_faults(Faults::default());
        let archived = env.archived("storm.csv");
        let replay = env.run(&["send", "--replay", archived.to_str().unwrap()]);
        assert_eq!(replay.code, 0, "{}{}", replay.stdout, replay.stderr);
    } else {
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    }
    let stats = env.sandbox.stats();
    let counts = env.accepted_counts();
    assert_eq!(counts.len(), 2000, "every order accepted");
    assert!(stats.statuses.get(&429).copied().unwrap_or(0) >= 30);
    assert!(stats.statuses.keys().any(|s| *s >= 500));
    for (order, n) in &counts {
        let dropped = stats.dropped.get(order).copied().unwrap_or(0);
        assert!(
            *n <= 1 + dropped,
            "{order} accepted {n} times but dropped only {dropped}"
        );
    }
    assert!(!stats.dropped.is_empty());
    assert!(env.ledger_states().values().all(|s| s == "accepted"));
    assert_every_row_accounted(&env);
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_resends_only_what_was_in_flight() {
    let env = Env::new("");
    env.sandbox.set_faults(Faults {
        latency_ms: 4,
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 400, 1));
    let mut in_flight_at_kills: BTreeSet<String> = BTreeSet::new();
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut kills = 0;
    for _ in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(40 + seed % 400);
        if run_killed_after(env.dir.path(), TOKEN, delay) {
            kills += 1;
            in_flight_at_kills.extend(in_flight(&env.sandbox, &env.path("ledger.sqlite")));
        }
    }
    assert!(kills >= 3, "the kills should land mid-run ({kills})");
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let counts = env.accepted_counts();
    assert_eq!(counts.len(), 400, "none lost");
    for (order, n) in &counts {
        if *n > 1 {
            assert!(
                in_flight_at_kills.contains(order),
                "{order} sent {n} times but was not in flight at a kill"
            );
        }
    }
    assert!(env.ledger_states().values().all(|s| s == "accepted"));
    assert!(env.archived("orders.csv").exists());
    assert_every_row_accounted(&env);
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn a_long_outage_leaves_conversions_pending_and_the_next_run_sends_them() {
    let env = Env::new("give_up_after_secs = 2");
    env.sandbox.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 10, 1));
    let start = Instant::now();
    let r = env.run(&["run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "gave up in bounded time"
    );
    assert!(
        r.stdout.contains(
            "10 conversions pending (impact stayed unavailable; they go on the next run)"
        ),
        "{}",
        r.stdout
    );
    assert_eq!(env.sandbox.stats().accepted, 0);
    assert!(
        env.path("drop/orders.csv").exists(),
        "a file with pending conversions stays"
    );

    env.sandbox.set_faults(Faults::default());
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(env.accepted_counts().len(), 10);
    assert!(
        r.stdout.contains("(resumed from an earlier run)"),
        "{}",
        r.stdout
    );
    assert_every_row_accounted(&env);
}

#[test]
fn the_token_appears_in_no_file_and_no_output() {
    let env = Env::new("");
    env.sandbox.set_faults(Faults {
        reject_orders: vec!["O-2".into()],
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 3, 1));
    std::fs::copy(
        samples().join("bad-rows.csv"),
        env.path("drop/bad-rows.csv"),
    )
    .unwrap();
    let mut outputs = Vec::new();
    for args in [
        &["run"][..],
        &["status"],
        &["status", "--json"],
        &["config"],
        &["--help"],
    ] {
        let r = env.run_with_token(args, TOKEN);
        outputs.push(r.stdout + &r.stderr);
    }
    let r = env.run_with_token(&["-vv", "run"], "wrong-token-ab12");
    outputs.push(r.stdout + &r.stderr);
    for o in &outputs {
        assert!(
            !o.contains(TOKEN) && !o.contains("wrong-token-ab12"),
            "token in output:\n{o}"
        );
    }
    let mut files = Vec::new();
    all_files(env.dir.path(), &mut files);
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().ends_with(".rejects.csv")));
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(TOKEN), "token found in {}", f.display());
    }
}

/// `send --dry-run` goes through the same intake as `run`: on a folder holding new, already
/// sent, changed and invalid orders, it predicts exactly the bodies the run then sends.
#[test]
fn dry_run_predicts_exactly_what_run_sends() {
    let env = Env::new("");
    env.drop_file("day1.csv", &orders(1, 10, 2));
    assert_eq!(env.run(&["run"]).code, 0);
    let before = env.sandbox.received().len();
    assert_eq!(before, 10);
    // Orders 1–10 again (same content: already sent) with a new item for O-3 (changed after
    // it was sent), orders 11–14 (new), and an order with a bad price (invalid).
    let mut day2 = orders(1, 14, 2);
    day2.push_str("O-3,2025-11-20T10:00:00Z,SKU-NEW,1,5.00\n");
    day2.push_str("O-99,2025-11-20T10:00:00Z,SKU-99,1,abc\n");
    env.drop_file("day2.csv", &day2);
    env.drop_file("other.csv", &orders(20, 3, 1));

    let dry = env.run(&["send", "--dry-run", "drop"]);
    assert_eq!(dry.code, 1, "invalid rows make the exit 1:\n{}", dry.stdout);
    let predicted: BTreeSet<String> = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("CampaignId="))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        predicted.len(),
        7,
        "4 new + 3 from other.csv:\n{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(
            "day2.csv: 30 rows: 4 conversions would be sent, 9 already sent, 0 already \
             pending, 0 rejected before, 1 changed after sent, 1 orders invalid, 0 filtered"
        ),
        "{}",
        dry.stdout
    );
    assert_eq!(
        env.sandbox.received().len(),
        before,
        "a dry run sends nothing"
    );

    let r = env.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let sent: BTreeSet<String> = env.sandbox.received()[before..]
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(
        sent, predicted,
        "the run sent exactly what the dry run predicted"
    );
    assert!(r.stdout.contains("4 conversions accepted"), "{}", r.stdout);
    assert_every_row_accounted(&env);
}

/// Retries scheduled under a clock that was a day ahead are released once the clock is
/// right: a retry time is never further out than the retry cap from now.
#[test]
fn retries_scheduled_under_a_clock_ahead_are_released_when_it_is_corrected() {
    let env = Env::new("give_up_after_secs = 2");
    env.sandbox.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 10, 1));
    assert_eq!(env.run(&["run"]).code, 1);
    // As a clock a day ahead would have scheduled them.
    let c = rusqlite::Connection::open(env.path("ledger.sqlite")).unwrap();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    c.execute(
        "UPDATE conversions SET next_attempt_at = ?1 WHERE state = 'pending'",
        [&tomorrow],
    )
    .unwrap();
    drop(c);
    env.sandbox.set_faults(Faults::default());
    let start = Instant::now();
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(env.accepted_counts().len(), 10);
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// A 200 whose body is not impact's (a captive portal's page) is never taken for an
/// acceptance: each conversion is sent at most 3 times in all, then held for the operator
/// (exit 1, `status` shows it); `send --replay` releases it once the network is right.
#[test]
fn a_200_that_is_not_impacts_answer_is_uncertain_and_held_for_the_operator() {
    let env = Env::new("give_up_after_secs = 30");
    env.sandbox.set_faults(Faults {
        html_200: true,
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 5, 1));
    let r = env.run(&["run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(env.requests(), 15, "each sent 3 times in all, never more");
    assert_eq!(env.sandbox.stats().accepted, 0);
    assert!(
        r.stdout
            .contains("5 conversions held for the operator (impact may have it already)"),
        "{}",
        r.stdout
    );
    let states = env.ledger_states();
    assert!(states.values().all(|s| s == "held"), "{states:?}");
    let st = env.run(&["status"]);
    assert!(st.stdout.contains("5 held"), "{}", st.stdout);
    // A later run does not send them again by itself.
    let again = env.run(&["run"]);
    assert_eq!(env.requests(), 15, "{}", again.stdout);
    // The operator fixes the network and releases them.
    env.sandbox.set_faults(Faults::default());
    let archived = env.archived("orders.csv");
    let r = env.run(&["send", "--replay", archived.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(env.sandbox.stats().accepted, 5);
    assert!(env.ledger_states().values().all(|s| s == "accepted"));
}

/// SIGTERM to `run` (as cron and systemd timers stop it) with POSTs in flight: no new POST
/// starts, those in flight finish and are recorded, the rest stays pending, exit 1.
#[test]
fn sigterm_to_run_lets_posts_in_flight_finish_and_records_them() {
    let env = Env::new("max_in_flight = 2");
    env.sandbox.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 10, 1));
    let _g = env.rt.enter();
    let child = command(env.dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while env.requests() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "no POST started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("(interrupted)"), "{stdout}");
    let sent = env.requests();
    let states = env.ledger_states();
    let accepted = states.values().filter(|s| *s == "accepted").count() as u64;
    assert_eq!(
        accepted,
        env.sandbox.stats().accepted,
        "every answer recorded"
    );
    assert_eq!(accepted, sent, "the POSTs in flight finished");
    assert_eq!(
        states.values().filter(|s| *s == "pending").count() as u64,
        10 - sent
    );
}

/// Guarantee 4 under many kills: 30+ `kill -9` at random moments of `run` (20 ms API
/// latency, default settings). After each, the orders sent again are only those whose POST
/// had started and whose answer was not committed; on average at most `max_in_flight` (4)
/// per kill; none lost.
#[test]
fn thirty_kills_resend_at_most_what_was_in_flight() {
    let env = Env::new("");
    env.sandbox.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 1500, 1));
    let mut in_flight_at_kills: BTreeSet<String> = BTreeSet::new();
    let mut seed: u64 = 0x0dd_5eed_0000_0030;
    let mut kills = 0u64;
    let mut attempts = 0;
    while kills < 30 && attempts < 80 {
        attempts += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(60 + seed % 300);
        if run_killed_after(env.dir.path(), TOKEN, delay) {
            kills += 1;
            in_flight_at_kills.extend(in_flight(&env.sandbox, &env.path("ledger.sqlite")));
        }
    }
    assert!(kills >= 30, "only {kills} kills landed mid-run");
    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let counts = env.accepted_counts();
    assert_eq!(counts.len(), 1500, "none lost");
    let mut duplicates = 0u64;
    for (order, n) in &counts {
        if *n > 1 {
            duplicates += n - 1;
            assert!(
                in_flight_at_kills.contains(order),
                "{order} sent {n} times but was not in flight at a kill"
            );
        }
    }
    let per_kill = duplicates as f64 / kills as f64;
    eprintln!("{kills} kills, {duplicates} orders accepted again, {per_kill:.2} per kill");
    assert!(
        per_kill <= 4.0,
        "{per_kill:.2} duplicates per kill (max_in_flight is 4)"
    );
    assert_every_row_accounted(&env);
}

/// Honest time: `status` says how long the pending backlog takes at the account's budget.
#[test]
fn status_says_how_long_the_backlog_takes_at_the_budget() {
    let env = Env::new("give_up_after_secs = 1");
    env.sandbox.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    env.drop_file("orders.csv", &orders(1, 480, 1));
    assert_eq!(env.run(&["run"]).code, 1);
    let config = env.path("impact-drop.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("requests_per_hour = 0", "requests_per_hour = 1000");
    std::fs::write(&config, text).unwrap();
    let st = env.run(&["status"]);
    assert!(
        st.stdout
            .contains("480 pending: about 29 min at 1,000 requests/hour"),
        "{}",
        st.stdout
    );
    let json = status_json(&env);
    assert_eq!(json["pending_eta_secs"], 1728);
}

/// A large export (over 4 MiB, so it is recorded in parts as it is read): its first
/// conversions go out before the file has been read to its end, and a `kill -9` in the
/// middle of the file loses nothing: the next run reads the file again, keeps the part
/// recorded as its own and records the rest. Orders whose last item sits at the end of the
/// file arrive whole.
#[test]
fn a_large_file_is_sent_as_it_is_read_and_a_kill_mid_file_resumes_the_rest() {
    let env = Env::new("");
    env.sandbox.set_faults(Faults {
        latency_ms: 2,
        ..Faults::default()
    });
    let n = 6_000;
    let pad = "x".repeat(200);
    let mut body = String::from("OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice,Note\n");
    let mut tail = String::new();
    for o in 1..=n {
        for i in 0..3 {
            let row = format!(
                "O-{o},2025-11-20T10:00:00Z,SKU-{o}-{i},1,{}.{i}0,{pad}\n",
                1 + o % 90
            );
            // Every 20th order's last item is far away, at the end of the file.
            if i == 2 && o % 20 == 0 {
                tail.push_str(&row);
            } else {
                body.push_str(&row);
            }
        }
    }
    body.push_str(&tail);
    assert!(body.len() > 4 << 20, "{} bytes", body.len());
    env.drop_file("big.csv", &body);

    // Killed once part of the file is recorded and sent, before the whole plan is.
    let ledger = env.path("ledger.sqlite");
    let mut child = command(env.dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let parts = |c: &rusqlite::Connection| -> rusqlite::Result<(i64, i64)> {
        c.query_row(
            "SELECT (SELECT COUNT(*) FROM conversions),
                    (SELECT COUNT(*) FROM files WHERE plan_complete = 0)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        assert!(Instant::now() < deadline, "no part recorded in time");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        let seen = rusqlite::Connection::open_with_flags(
            &ledger,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| parts(&c));
        if let Ok((convs, incomplete)) = seen {
            if convs >= 2048 && incomplete == 1 && env.requests() > 0 {
                child.kill().unwrap();
                child.wait().unwrap();
                break convs;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let c = rusqlite::Connection::open(&ledger).unwrap();
    let (convs, incomplete) = parts(&c).unwrap();
    drop(c);
    assert_eq!(incomplete, 1, "killed mid-file");
    assert!(
        (at_kill..n as i64).contains(&convs),
        "{convs} of {n} recorded at the kill"
    );
    let sent_before = env.requests();
    assert!(
        sent_before > 0 && sent_before < n as u64,
        "{sent_before} sent before the kill"
    );
    let in_flight_at_kill = in_flight(&env.sandbox, &ledger);

    let r = env.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("part of this file was recorded when an earlier run stopped"),
        "{}",
        r.stderr
    );
    let counts = env.accepted_counts();
    assert_eq!(counts.len(), n, "none lost");
    for (order, k) in &counts {
        assert!(
            *k == 1 || in_flight_at_kill.contains(order),
            "{order} sent {k} times but was not in flight at the kill"
        );
    }
    // The far item travels with its order.
    let far = env
        .sandbox
        .received()
        .into_iter()
        .find(|r| r.order_id == "O-20")
        .unwrap();
    assert!(far.body.contains("ItemSku3=SKU-20-2"), "{}", far.body);
    // And the amount impact computes is the order's: 21.00 + 21.10 + 21.20.
    let amount: rust_decimal::Decimal = far.sale_amount.as_deref().unwrap().parse().unwrap();
    assert_eq!(amount, rust_decimal::Decimal::new(6330, 2), "{}", far.body);
    // The file is the account of every row: all sent (the part recorded before the kill
    // too, not "already pending"), archived once.
    let st = status_json(&env);
    let f = &st["per_file"][0];
    assert_eq!(f["rows"], 3 * n as u64, "{f}");
    assert_eq!(f["rows_accepted"], 3 * n as u64, "{f}");
    assert_eq!(f["state"], "done", "{f}");
    assert!(env.archived("big.csv").exists());
    assert_every_row_accounted(&env);
    assert_tallies_match(&ledger);
}
