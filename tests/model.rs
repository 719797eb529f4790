//! Model-based test: random sequences of file operations, API faults, 401s and kills, run
//! through the real binary against the sandbox, checked against a model of what must (and
//! may) have been sent.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use impact_drop::impact::sandbox::Faults;
use proptest::prelude::*;

const SID: &str = "IRMODEL000000000000000000001";
const TOKEN: &str = "model-token-5c2b";

#[derive(Clone, Debug)]
enum Op {
    /// A complete export appears (written under a temp name, then renamed).
    Create(u8, u8),
    /// More orders appended to an existing export (a cumulative re-export).
    Append(u8, u8),
    /// An export replaced by one with other orders.
    Replace(u8, u8),
    Delete(u8),
    /// An upload that never completes: only its temp name exists.
    PartialWrite(u8),
    /// An export without a column the format needs (no EventDate): refused as a whole, every
    /// row recorded invalid, nothing of it ever sent.
    MissingColumn(u8, u8),
    ApiDown,
    ApiUp,
    Burst429(u8),
    /// A run with a wrong token.
    Run401,
    Run,
    /// A run killed after this many milliseconds.
    KilledRun(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u8, 1..40u8).prop_map(|(f, n)| Op::Create(f, n)),
        2 => (0..4u8, 1..20u8).prop_map(|(f, n)| Op::Append(f, n)),
        1 => (0..4u8, 1..20u8).prop_map(|(f, n)| Op::Replace(f, n)),
        1 => (0..4u8).prop_map(Op::Delete),
        1 => (0..4u8).prop_map(Op::PartialWrite),
        1 => (0..4u8, 1..10u8).prop_map(|(f, n)| Op::MissingColumn(f, n)),
        1 => Just(Op::ApiDown),
        1 => Just(Op::ApiUp),
        1 => (1..20u8).prop_map(Op::Burst429),
        1 => Just(Op::Run401),
        3 => Just(Op::Run),
        2 => (5..200u16).prop_map(Op::KilledRun),
    ]
}

struct World {
    dir: tempfile::TempDir,
    next_order: usize,
    /// Export name → its orders, as now in the folder.
    files: BTreeMap<String, Vec<usize>>,
    /// Orders that were in a complete export when some run started (may be sent).
    allowed: BTreeSet<String>,
    /// Orders accepted by impact but not yet in the ledger at a kill (may be sent twice).
    in_flight_at_kills: BTreeSet<String>,
}

impl World {
    fn file_text(orders: &[usize]) -> String {
        let mut s = String::from("OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n");
        for o in orders {
            s.push_str(&format!(
                "M-{o},2025-11-20T10:00:00Z,SKU-{o},1,{}.50\n",
                o % 90 + 1
            ));
        }
        s
    }

    fn write(&self, name: &str, orders: &[usize]) {
        let drop = self.dir.path().join("drop");
        let tmp = drop.join(format!("{name}.part"));
        std::fs::write(&tmp, Self::file_text(orders)).unwrap();
        std::fs::rename(&tmp, drop.join(name)).unwrap();
    }

    fn fresh(&mut self, n: u8) -> Vec<usize> {
        let v: Vec<usize> = (self.next_order..self.next_order + n as usize).collect();
        self.next_order += n as usize;
        v
    }

    fn note_run_start(&mut self) {
        for orders in self.files.values() {
            self.allowed.extend(orders.iter().map(|o| format!("M-{o}")));
        }
    }
}

fn run(dir: &Path, token: &str) -> Run {
    run_in(dir, &["run"], &[("IMPACT_AUTH_TOKEN", token)])
}

fn check_sequence(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let _guard = rt.enter();
    let dir = workspace(&format!(
        "[source]\ndrop_dir = \"drop\"\n[impact]\nbase_url = \"{}\"\naccount_sid = \"{SID}\"\n\
         requests_per_hour = 0\nretry_cap_secs = 1\ngive_up_after_secs = 1\ntimeout_secs = 2\n\
         [ledger]\npath = \"ledger.sqlite\"\n",
        sandbox.base_url()
    ));
    std::fs::create_dir(dir.path().join("drop")).unwrap();
    let mut w = World {
        dir,
        next_order: 1,
        files: BTreeMap::new(),
        allowed: BTreeSet::new(),
        in_flight_at_kills: BTreeSet::new(),
    };
    // A little latency so kills land while POSTs are in flight.
    let mut faults = Faults {
        latency_ms: 2,
        ..Faults::default()
    };
    sandbox.set_faults(faults.clone());
    for op in ops {
        let name = |f: u8| format!("export-{f}.csv");
        match op {
            Op::Create(f, n) => {
                if !w.files.contains_key(&name(f)) {
                    let orders = w.fresh(n);
                    w.write(&name(f), &orders);
                    w.files.insert(name(f), orders);
                }
            }
            Op::Append(f, n) => {
                if let Some(mut orders) = w.files.get(&name(f)).cloned() {
                    if w.dir.path().join("drop").join(name(f)).exists() {
                        orders.extend(w.fresh(n));
                        w.write(&name(f), &orders);
                        w.files.insert(name(f), orders);
                    }
                }
            }
            Op::Replace(f, n) => {
                if w.files.contains_key(&name(f)) {
                    let orders = w.fresh(n);
                    w.write(&name(f), &orders);
                    w.files.insert(name(f), orders);
                }
            }
            Op::Delete(f) => {
                let _ = std::fs::remove_file(w.dir.path().join("drop").join(name(f)));
                w.files.remove(&name(f));
            }
            Op::MissingColumn(f, n) => {
                let orders = w.fresh(n);
                let mut text = String::from("OrderId,ItemSku,ItemQuantity,ItemPrice\n");
                for o in &orders {
                    text.push_str(&format!("B-{o},SKU-{o},1,1.00\n"));
                }
                std::fs::write(
                    w.dir.path().join("drop").join(format!("broken-{f}.csv")),
                    text,
                )
                .unwrap();
            }
            Op::PartialWrite(f) => {
                let orders = w.fresh(2);
                let text = World::file_text(&orders);
                std::fs::write(
                    w.dir
                        .path()
                        .join("drop")
                        .join(format!("upload-{f}.csv.filepart")),
                    &text[..text.len() / 2],
                )
                .unwrap();
            }
            Op::ApiDown => {
                faults.outage = true;
                sandbox.set_faults(faults.clone());
            }
            Op::ApiUp => {
                faults.outage = false;
                sandbox.set_faults(faults.clone());
            }
            Op::Burst429(n) => {
                faults.rate_limit_burst = u32::from(n);
                faults.retry_after_secs = 1;
                sandbox.set_faults(faults.clone());
            }
            Op::Run401 => {
                w.note_run_start();
                let r = run(w.dir.path(), "wrong-token");
                prop_assert!(r.code == 2 || r.code == 0 || r.code == 1, "{}", r.stderr);
            }
            Op::Run => {
                w.note_run_start();
                run(w.dir.path(), TOKEN);
            }
            Op::KilledRun(ms) => {
                w.note_run_start();
                run_killed_after(w.dir.path(), TOKEN, Duration::from_millis(u64::from(ms)));
                let ledger = w.dir.path().join("ledger.sqlite");
                w.in_flight_at_kills.extend(in_flight(&sandbox, &ledger));
            }
        }
        // Moved files are gone from the folder; the model follows the folder.
        let drop = w.dir.path().join("drop");
        w.files.retain(|n, _| drop.join(n).exists());
    }
    // Final: impact healthy, the right token, until nothing is pending.
    sandbox.set_faults(Faults::default());
    w.note_run_start();
    let required: BTreeSet<String> = w
        .files
        .values()
        .flatten()
        .map(|o| format!("M-{o}"))
        .collect();
    let mut last = run(w.dir.path(), TOKEN);
    for _ in 0..3 {
        if last.code == 0 {
            break;
        }
        last = run(w.dir.path(), TOKEN);
    }
    prop_assert_eq!(last.code, 0, "{}{}", last.stdout, last.stderr);

    // Every order of every archived export must have gone (an export is archived only when
    // all its conversions are final), and every conversion the ledger knows must be accepted.
    let mut required = required;
    let processed = w.dir.path().join("drop/processed");
    if let Ok(days) = std::fs::read_dir(&processed) {
        for day in days.flatten() {
            for f in std::fs::read_dir(day.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.contains(".rejects.") || name.starts_with("broken-") {
                    continue;
                }
                let text = std::fs::read_to_string(f.path()).unwrap();
                required.extend(
                    text.lines()
                        .skip(1)
                        .filter_map(|l| l.split(',').next())
                        .map(str::to_owned),
                );
            }
        }
    }
    let ledger = w.dir.path().join("ledger.sqlite");
    if ledger.exists() {
        assert_tallies_match(&ledger);
        for (order, state) in ledger_states(&ledger) {
            prop_assert_eq!(
                state.as_str(),
                "accepted",
                "{} is {} in the ledger",
                order,
                state
            );
            required.insert(order);
        }
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in sandbox.received() {
        *counts.entry(r.order_id).or_default() += 1;
    }
    let accepted: BTreeSet<String> = counts.keys().cloned().collect();
    let missing: Vec<_> = required.difference(&accepted).collect();
    prop_assert!(missing.is_empty(), "never lose: {missing:?} not accepted");
    let unexpected: Vec<_> = accepted.difference(&w.allowed).collect();
    prop_assert!(unexpected.is_empty(), "nothing else sent: {unexpected:?}");
    for (order, n) in &counts {
        prop_assert!(
            *n == 1 || w.in_flight_at_kills.contains(order),
            "{order} sent {n} times, not in flight at a kill"
        );
    }
    // status accounts for every row of every finished file.
    let st = run_in(w.dir.path(), &["status", "--json"], &[]);
    if st.code == 0 {
        let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
        for f in doc["per_file"].as_array().unwrap() {
            if f["state"] != "processing" {
                let sum: u64 = f
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k.starts_with("rows_"))
                    .map(|(_, v)| v.as_u64().unwrap_or(0))
                    .sum();
                prop_assert_eq!(sum, f["rows"].as_u64().unwrap(), "file {}", f);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_lose_nothing_and_send_nothing_twice(ops in prop::collection::vec(op(), 1..14)) {
        check_sequence(ops)?;
    }
}
