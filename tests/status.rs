//! `status` as the operator's memory, through a whole story with the real binary and the
//! sandbox: invalid rows, the corrected rejects file accepted (the rows show as fixed, by
//! which file), a replay (shown, and the file's own counts kept), a 401 (the fatal condition
//! shown with what is pending, until impact answers again).

mod common;

use std::path::Path;

use common::*;

const SID: &str = "IRSTATUS000000000000000001";
const TOKEN: &str = "status-token-0b7";

fn status(dir: &Path) -> (String, serde_json::Value) {
    let text = run_in(dir, &["status"], &[]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let json = run_in(dir, &["status", "--json"], &[]);
    (text.stdout, serde_json::from_str(&json.stdout).unwrap())
}

fn file_stats<'a>(doc: &'a serde_json::Value, ends: &str) -> &'a serde_json::Value {
    doc["per_file"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(ends))
        .unwrap_or_else(|| panic!("no {ends} in {doc}"))
}

#[test]
fn status_tells_the_whole_story_invalid_fixed_replayed_and_stopped() {
    let e = SandboxDir::new(SID, TOKEN, |base_url| {
        format!(
            "[source]\ndrop_dir = \"drop\"\n[impact]\nbase_url = \"{base_url}\"\n\
             account_sid = \"{SID}\"\nrequests_per_hour = 0\n\
             [follow_up]\nrun_wait_secs = 0\n[ledger]\npath = \"ledger.sqlite\"\n\
             [defaults]\nCampaignId = 1000\nActionTrackerId = 2000\nMediaPartnerId = 3000\n\
             CurrencyCode = \"USD\"\n"
        )
    });
    let token = [("IMPACT_AUTH_TOKEN", TOKEN)];
    let dir = e.dir.path();

    // 1. Invalid rows: S-2 has no EventDate.
    let csv = "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n\
               S-1,2026-11-30T10:00:00Z,A,1,5.00\n\
               S-2,,B,1,6.00\n\
               S-3,2026-11-30T11:00:00Z,C,2,7.00\n";
    let (r, _) = e.run("a.csv", csv, &token);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let (text, doc) = status(dir);
    assert!(text.contains("rows not sent"), "{text}");
    assert!(text.contains("drop/a.csv:3: invalid: "), "{text}");
    assert_eq!(doc["not_sent"][0]["line"], 3);
    assert!(doc["not_sent"][0].get("fixed_by").is_none(), "{doc}");
    assert!(doc["last_fatal"].is_null());
    assert_eq!(file_stats(&doc, "a.csv")["conversions_accepted"], 2);

    // 2. The rejects file, corrected and dropped again: accepted, and the row shows fixed.
    let rejects = archived(dir, "a.csv.rejects.csv").unwrap();
    let fixed = std::fs::read_to_string(rejects)
        .unwrap()
        .replace("S-2,,B", "S-2,2026-11-30T12:00:00Z,B");
    let (r, got) = e.run("a.fixed.csv", &fixed, &token);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(got["S-2"].sale_amount.as_deref(), Some("6"));
    let (text, doc) = status(dir);
    assert!(!text.contains("rows not sent"), "{text}");
    assert!(
        text.contains("rows fixed since (their order was accepted from a later file):\n  drop/a.csv:3: was invalid; accepted from drop/a.fixed.csv"),
        "{text}"
    );
    assert_eq!(doc["not_sent"][0]["fixed_by"], "drop/a.fixed.csv");

    // 3. A replay of the first file: shown, and its own account is not rewritten.
    let archived = archived(dir, "a.csv").unwrap();
    let _g = e.rt.enter();
    let r = run_in(
        dir,
        &["send", "--replay", archived.to_str().unwrap()],
        &token,
    );
    assert!(r.code == 0 || r.code == 1, "{}\n{}", r.stdout, r.stderr);
    let (text, doc) = status(dir);
    assert_eq!(doc["replays"].as_array().unwrap().len(), 1, "{doc}");
    assert!(doc["replays"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("a.csv"));
    assert_eq!(doc["replays"][0]["resend_accepted"], false);
    assert!(text.contains("replays (newest first):"), "{text}");
    let a = file_stats(&doc, "drop/a.csv");
    assert_eq!(
        a["conversions_accepted"], 2,
        "the replay kept the file's counts: {a}"
    );
    assert_eq!(a["rows_accepted"], 2);
    assert_eq!(e.sandbox.received().len(), 3, "nothing sent twice");

    // 4. A 401: the fatal condition and what waits for it, until impact answers again.
    std::fs::write(
        dir.join("drop").join("b.csv"),
        "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\nS-4,2026-11-30T13:00:00Z,D,1,1.00\n",
    )
    .unwrap();
    let r = run_in(dir, &["run"], &[("IMPACT_AUTH_TOKEN", "wrong")]);
    assert_eq!(r.code, 2);
    let (text, doc) = status(dir);
    assert!(
        doc["last_fatal"]["message"]
            .as_str()
            .unwrap()
            .contains("401"),
        "{doc}"
    );
    assert!(
        text.contains("(nothing is sent until it is fixed; 1 pending)")
            && text.contains("sending stopped at "),
        "{text}"
    );
    assert!(text.contains("IMPACT_AUTH_TOKEN"), "{text}");
    let r = run_in(dir, &["run"], &token);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let (text, doc) = status(dir);
    assert!(doc["last_fatal"].is_null(), "{doc}");
    assert!(!text.contains("sending stopped"), "{text}");
    assert_eq!(doc["conversions"]["accepted"], 4);
    assert_tallies_match(&dir.join("ledger.sqlite"));
}
