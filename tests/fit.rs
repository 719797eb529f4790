//! A file that does not fit is never lost, and never explained wrongly: refused files,
//! rejects files that keep each row's own bytes, readings replaced by later ones, and broken
//! structure named once. Through the real binary, the sandbox and a real ledger.

mod common;

use std::path::PathBuf;

use common::*;

const SID: &str = "IRFIT00000000000000000000001";
const TOKEN: &str = "fit-token-77a1";

struct Env {
    rt: tokio::runtime::Runtime,
    sandbox: impact_drop::impact::sandbox::Sandbox,
    dir: tempfile::TempDir,
}

fn env(extra: &str) -> Env {
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = workspace(&format!(
        "[source]\ndrop_dir = \"drop\"\n{extra}\n[impact]\nbase_url = \"{}\"\naccount_sid = \"{SID}\"\n\
         requests_per_hour = 0\n[ledger]\npath = \"ledger.sqlite\"\n",
        sandbox.base_url()
    ));
    std::fs::create_dir(dir.path().join("drop")).unwrap();
    Env { rt, sandbox, dir }
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, args: &[&str]) -> Run {
        let _g = self.rt.enter();
        run_in(self.dir.path(), args, &[("IMPACT_AUTH_TOKEN", TOKEN)])
    }

    fn status(&self) -> serde_json::Value {
        let r = self.run(&["status", "--json"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// No finished file has a row without a recorded outcome.
    fn assert_every_row_accounted(&self) {
        let st = self.status();
        for f in st["per_file"].as_array().unwrap() {
            let sum: u64 = f
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with("rows_"))
                .map(|(_, v)| v.as_u64().unwrap())
                .sum();
            assert_eq!(sum, f["rows"].as_u64().unwrap(), "unaccounted rows in {f}");
        }
        let text = self.run(&["status"]);
        assert!(!text.stdout.contains("UNACCOUNTED"), "{}", text.stdout);
    }

    /// Every rejects file under `drop/processed`.
    fn rejects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let processed = self.path("drop/processed");
        let Ok(days) = std::fs::read_dir(&processed) else {
            return out;
        };
        for day in days {
            for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.to_string_lossy().contains(".rejects.") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

const NO_CREATED_AT: &str = "Name,Financial Status,Currency,Subtotal,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku\n\
#1,paid,USD,10.00,1,Mug,10.00,MUG\n\
#2,paid,USD,5.00,1,\"Tea, green\",5.00,TEA\n\
#2,,,,1,Pot,0.00,POT\n";

fn assert_refused(e: &Env, r: &Run, name: &str, column: &str) {
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("file refused, every row kept for fixing") && r.stdout.contains(column),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("3 rows invalid"), "{}", r.stdout);
    assert_eq!(e.sandbox.stats().requests, 0);
    let rejects = e.rejects();
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let text = std::fs::read_to_string(&rejects[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    // Each row's own bytes, then its reason.
    assert!(
        lines[2].starts_with("#2,paid,USD,5.00,1,\"Tea, green\",5.00,TEA,\"the file was refused"),
        "{text}"
    );
    assert!(lines[3].contains(column), "{text}");
    assert!(rejects[0].to_string_lossy().contains(name));
    e.assert_every_row_accounted();
    let st = e.status();
    assert_eq!(st["per_file"][0]["rows_invalid"], 3);
}

#[test]
fn a_shopify_file_without_created_at_is_refused_by_run_and_send() {
    let e = env("format = \"shopify-csv\"");
    std::fs::write(e.path("drop/orders_export.csv"), NO_CREATED_AT).unwrap();
    let r = e.run(&["run"]);
    assert_refused(&e, &r, "orders_export.csv", "\"Created at\"");
    assert!(
        !e.path("drop/orders_export.csv").exists(),
        "archived, not read again"
    );
    // Run again: nothing is read in a loop, nothing sent.
    let again = e.run(&["run"]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert_eq!(e.sandbox.stats().requests, 0);

    let e = env("format = \"shopify-csv\"");
    std::fs::write(e.path("drop/export.csv"), NO_CREATED_AT).unwrap();
    let r = e.run(&["send", "drop/export.csv"]);
    assert_refused(&e, &r, "export.csv", "\"Created at\"");
}

#[test]
fn a_custom_mapping_whose_column_is_missing_is_refused() {
    let e = env(
        "format = \"custom\"\n[mapping]\nOrderId = \"Name\"\nEventDate = \"Order Date\"\n\
         CurrencyCode = \"Currency\"\nItemSku = \"Lineitem sku\"\nItemQuantity = \"Lineitem quantity\"\n\
         ItemPrice = \"Lineitem price\"\n",
    );
    std::fs::write(e.path("drop/orders.csv"), NO_CREATED_AT).unwrap();
    let r = e.run(&["run"]);
    assert_refused(&e, &r, "orders.csv", "\"Order Date\"");
}

#[test]
fn a_jsonl_rejects_file_keeps_the_lines_to_fix() {
    let e = env("");
    let good = "{\"OrderId\":\"A\",\"EventDate\":\"2025-01-01T00:00:00Z\",\"ItemSku\":\"X\",\"ItemQuantity\":1,\"ItemPrice\":\"1.00\"}";
    let broken = "{\"OrderId\":\"B\",\"EventDate\":\"2025-01-01T00:00:00Z\",\"ItemSku\":\"Y\",\"ItemQuantity\":1,\"ItemPrice\":\"2.00\"";
    let bad_value = "{\"OrderId\":\"C\",\"EventDate\":\"yesterday\",\"ItemSku\":\"Z\",\"ItemQuantity\":1,\"ItemPrice\":\"3.00\"}";
    std::fs::write(
        e.path("drop/orders.jsonl"),
        format!("{good}\n{broken}\n{bad_value}\n"),
    )
    .unwrap();
    let r = e.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(e.sandbox.stats().accepted, 1);
    let rejects = e.rejects();
    assert_eq!(rejects.len(), 1);
    let text = std::fs::read_to_string(&rejects[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // The unparsable line, kept whole beside its reason.
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["impact_drop_original_line"], broken);
    assert!(
        first["impact_drop_reason"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{text}"
    );
    // A parsable line: its own bytes, with the reason as one more key.
    let stem = bad_value.strip_suffix('}').unwrap();
    assert!(lines[1].starts_with(stem), "{text}");
    assert!(lines[1].contains("\"impact_drop_reason\":"), "{text}");
    e.assert_every_row_accounted();
}

#[test]
fn a_stalled_upload_completed_later_leaves_no_open_problem() {
    let e = env("");
    // The upload stalls in the middle of order C's row: it is cut short.
    let complete = orders(1, 3, 1);
    let cut = &complete[..complete.len() - 12];
    std::fs::write(e.path("drop/orders.csv"), cut).unwrap();
    let r = e.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(e.rejects().len(), 1);
    let st = e.status();
    assert_eq!(st["not_sent"].as_array().unwrap().len(), 1, "{st}");
    // The complete file arrives under the same name.
    std::fs::write(e.path("drop/orders.csv"), &complete).unwrap();
    let r = e.run(&["run"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(e.sandbox.stats().accepted, 3, "{}", r.stdout);
    let st = e.status();
    assert_eq!(
        st["not_sent"].as_array().unwrap().len(),
        0,
        "the cut-off reading is no longer an open problem: {st}"
    );
    assert_eq!(st["per_file"][1]["state"], "superseded", "{st}");
    assert_eq!(e.rejects().len(), 1, "no second rejects file");
    e.assert_every_row_accounted();
}

#[test]
fn the_same_rejects_are_never_written_twice() {
    let e = env("");
    let bad = "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\nA,2025-01-01T00:00:00Z,X,1,abc\n";
    std::fs::write(e.path("drop/a.csv"), bad).unwrap();
    assert_eq!(e.run(&["run"]).code, 1);
    let first = e.rejects();
    assert_eq!(first.len(), 1);
    // The same file replayed by the operator: finished again, same rejects.
    let archived: PathBuf = first[0]
        .to_string_lossy()
        .replace(".rejects.csv", "")
        .into();
    let r = e.run(&["send", "--replay", archived.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(e.rejects(), first, "no second identical rejects file");
}

#[test]
fn an_unterminated_quote_is_named_once_and_nothing_is_lost() {
    let e = env("");
    let text = "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n\
                A,2025-01-01T00:00:00Z,X,1,1.00\n\
                B,2025-01-01T00:00:00Z,Y,1,2.00\n\
                C,2025-01-01T00:00:00Z,Z,1,3.00\n\
                D,2025-01-01T00:00:00Z,\"W,1,4.00\n\
                E,2025-01-01T00:00:00Z,V,1,5.00\n\
                F,2025-01-01T00:00:00Z,U,1,6.00\n\
                G,2025-01-01T00:00:00Z,T,1,7.00\n\
                H,2025-01-01T00:00:00Z,S,1,8.00\n";
    std::fs::write(e.path("q.csv"), text).unwrap();
    let r = e.run(&["check", "q.csv"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout
            .matches("the quote opened on line 5 is never closed; lines 5–9 became one cell")
            .count(),
        1,
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("cut short"), "{}", r.stdout);
    // Through run: the swallowed lines are in the rejects file, byte for byte.
    std::fs::write(e.path("drop/q.csv"), text).unwrap();
    let r = e.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(e.sandbox.stats().accepted, 3);
    let rejects = std::fs::read_to_string(&e.rejects()[0]).unwrap();
    for l in ["D,2025", "E,2025", "F,2025", "G,2025", "H,2025"] {
        assert!(rejects.contains(l), "{rejects}");
    }
    e.assert_every_row_accounted();
}

#[test]
fn rows_packed_in_one_cell_are_named_without_printing_the_row() {
    let e = env("");
    let mut text = String::from("OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n");
    for i in 0..3 {
        text.push_str(&format!(
            "\"O{i},2025-01-01T00:00:00Z,X,1,1.00,ana.lima{i}@example.com,12 Long Street, Springfield 99999\"\n"
        ));
    }
    std::fs::write(e.path("p.csv"), &text).unwrap();
    let r = e.run(&["check", "p.csv"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout.matches("the whole row is one quoted cell").count(),
        3,
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("cut short"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("Springfield"),
        "no whole row in a message: {}",
        r.stdout
    );
    assert!(!r.stdout.contains("characters long"), "{}", r.stdout);
}

#[test]
fn messages_name_the_exports_column_beside_impacts_field() {
    let dir = workspace("[source]\nformat = \"shopify-csv\"\n");
    let csv = "Name,Currency,Subtotal,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku\n\
               #1,USD,19.99,2025-12-07 19:08:24 +0000,1,Mug,\"19,99\",MUG\n";
    let r = check_bytes(dir.path(), "orders_export.csv", csv.as_bytes(), &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("Lineitem price (ItemPrice): \"19,99\""),
        "{}",
        r.stdout
    );
}

/// Ragged rows (too few and too many cells) never block finishing: the rejects file is
/// written from the rows' own lines, the file is archived, later files go on, `status`
/// shows it done.
#[test]
fn ragged_rows_never_block_a_file() {
    let e = env("");
    let text = "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n\
                A,2025-01-01T00:00:00Z,X,1,1.00\n\
                B,2025-01-01T00:00:00Z,Y\n\
                C,2025-01-01T00:00:00Z,Z,1,3.00,extra,cells\n\
                D,2025-01-01T00:00:00Z,W,1,4.00\n";
    std::fs::write(e.path("drop/a-ragged.csv"), text).unwrap();
    std::fs::write(e.path("drop/b-next.csv"), orders(10, 2, 1)).unwrap();
    let r = e.run(&["run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(e.sandbox.stats().accepted, 4);
    let rejects = std::fs::read_to_string(&e.rejects()[0]).unwrap();
    assert!(
        rejects.contains("\nB,2025-01-01T00:00:00Z,Y,\""),
        "{rejects}"
    );
    assert!(
        rejects.contains("\nC,2025-01-01T00:00:00Z,Z,1,3.00,extra,cells,\""),
        "{rejects}"
    );
    assert!(!e.path("drop/a-ragged.csv").exists() && !e.path("drop/b-next.csv").exists());
    let st = e.status();
    for f in st["per_file"].as_array().unwrap() {
        assert_eq!(f["state"], "done", "{f}");
    }
    e.assert_every_row_accounted();
}
