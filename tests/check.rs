//! `impact-drop check` through the real binary: the golden body, the samples, bad input of
//! every kind (clear error, no panic, nothing lost), exit codes, JSON output and config errors.

mod common;

use common::*;

/// The seed's "2 toy sets at $40 USD each and 1 doll at $6.99 USD", as impact receives it.
const GOLDEN: &str = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=TOYS-1001\
&EventDate=2023-02-15T22:55:32-08:00&CurrencyCode=USD&ItemSku1=TOYSET&ItemQuantity1=2\
&ItemPrice1=40.00&ItemSku2=DOLL&ItemQuantity2=1&ItemPrice2=6.99";

fn sample_check(args: &[&str]) -> Run {
    let samples = samples();
    let config = samples.join("impact-drop.toml");
    let mut all = vec!["--config", config.to_str().unwrap(), "check"];
    all.extend_from_slice(args);
    run_in(&samples, &all, &[])
}

#[test]
fn seed_sample_prints_exactly_the_golden_body() {
    let r = sample_check(&["--show", "seed.csv"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(bodies(&r.stdout), vec![GOLDEN]);
}

#[test]
fn config_flag_works_after_the_subcommand_too() {
    let samples = samples();
    let config = samples.join("impact-drop.toml");
    let r = run_in(
        &samples,
        &[
            "check",
            "--show",
            "seed.csv",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(bodies(&r.stdout), vec![GOLDEN]);
}

#[test]
fn every_sample_is_accounted_for() {
    for (file, rows, valid, code) in [
        ("seed.csv", 2, 1, 0),
        ("orders.csv", 7, 4, 0),
        ("orders-ftp-template.csv", 3, 2, 0),
        ("orders.jsonl", 4, 3, 0),
        ("bad-rows.csv", 10, 2, 1),
    ] {
        let r = sample_check(&["--json", file]);
        assert_eq!(r.code, code, "{file}: {}", r.stdout);
        let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let f = &doc["files"][0];
        assert_eq!(f["rows"], rows, "{file}");
        assert_eq!(f["valid_conversions"], valid, "{file}");
        let valid_rows = f["valid_rows"].as_u64().unwrap();
        let invalid_rows = f["invalid_rows"].as_u64().unwrap();
        assert_eq!(
            valid_rows + invalid_rows,
            rows,
            "{file}: every row accounted for"
        );
        assert_eq!(doc["exit"], code);
    }
}

#[test]
fn bad_rows_sample_names_file_line_field_and_remedy() {
    let r = sample_check(&["bad-rows.csv"]);
    assert_eq!(r.code, 1);
    for expected in [
        "bad-rows.csv:3: ItemPrice: \"-5.00\" is negative",
        "bad-rows.csv:4: EventDate: is missing",
        "bad-rows.csv:5: CurrencyCode: \"US\" is not a three-letter",
        "bad-rows.csv:8: CurrencyCode: line 7 says \"USD\" but line 8 says \"EUR\"",
        "bad-rows.csv:9: OrderId: \"1.21286E+13\" is a number Excel turned into scientific",
        "bad-rows.csv:10: EventDate: \"2025-11-24 10:35\" has no time zone",
        "bad-rows.csv:10: ItemPrice: \"1,50\" is not an amount",
        "bad-rows.csv:6: OrderId: is empty",
        "10 rows, 2 conversions valid, 6 orders invalid (8 rows)",
    ] {
        assert!(
            r.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            r.stdout
        );
    }
}

#[test]
fn show_json_carries_bodies_and_keys() {
    let r = sample_check(&["--show", "--json", "seed.csv"]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let conv = &doc["files"][0]["conversions"][0];
    assert_eq!(conv["body"], GOLDEN);
    assert_eq!(conv["key"]["order_id"], "TOYS-1001");
    assert_eq!(conv["lines"], serde_json::json!([2, 3]));
}

#[test]
fn random_bytes_are_refused_clearly() {
    let dir = workspace("");
    // A deterministic stream of arbitrary bytes (xorshift), newlines included.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    for name in ["noise.csv", "noise.jsonl", "noise.bin"] {
        let r = check_bytes(dir.path(), name, &bytes, &[]);
        assert_eq!(r.code, 1, "{name}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains("no column gives")
                || r.stdout.contains("not valid JSON")
                || r.stdout.contains("not UTF-8"),
            "{name}: {}",
            r.stdout
        );
    }
}

#[test]
fn missing_required_column_refuses_the_file_and_names_it() {
    let dir = workspace("");
    let r = check_bytes(
        dir.path(),
        "orders.csv",
        b"OrderId,ItemSku,ItemQuantity,ItemPrice\nA,X,1,2.00\nB,Y,1,3.00\n",
        &[],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("orders.csv:1: EventDate: no column gives EventDate (the columns are: OrderId, ItemSku, ItemQuantity, ItemPrice)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("2 rows, 0 conversions valid, file refused (2 rows kept for fixing)"),
        "{}",
        r.stdout
    );
}

#[test]
fn ragged_rows_cost_only_their_order() {
    let dir = workspace("");
    let r = check_bytes(
        dir.path(),
        "ragged.csv",
        b"OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n\
          A,2025-01-01T00:00:00Z,X,1,2.00\n\
          B,2025-01-01T00:00:00Z,Y\n\
          C,2025-01-01T00:00:00Z,Z,1,2.00,oops\n\
          D,2025-01-01T00:00:00Z,W,1,2.00\n",
        &[],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("ragged.csv:3: the row has only 3 cells but the header has 5: the row looks cut short (no ItemQuantity, ItemPrice)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("ragged.csv:4: the row has 6 cells but the header has 5"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("4 rows, 2 conversions valid, 2 orders invalid (2 rows)"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_ten_megabyte_line_is_handled() {
    let dir = workspace("");
    let big = "x".repeat(10 * 1024 * 1024);
    let csv = format!(
        "OrderId,EventDate,ItemSku,ItemName,ItemQuantity,ItemPrice\n\
         A,2025-01-01T00:00:00Z,X,{big},1,2.00\nB,2025-01-01T00:00:00Z,Y,ok,1,3.00\n"
    );
    let r = check_bytes(dir.path(), "big.csv", csv.as_bytes(), &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains(
            "big.csv:2: ItemName: is 10485760 characters long; impact accepts at most 255"
        ),
        "{}",
        &r.stdout[..r.stdout.len().min(2000)]
    );
    assert!(
        r.stdout.contains("2 rows, 1 conversion valid"),
        "{}",
        r.stdout
    );

    let jsonl = format!(
        "{{\"OrderId\":\"A\",\"EventDate\":\"2025-01-01T00:00:00Z\",\"Note\":\"{big}\",\"Amount\":\"1\"}}\n\
         {{\"OrderId\":\"B\",\"EventDate\":\"2025-01-01T00:00:00Z\",\"Amount\":\"1\"}}"
    );
    let r = check_bytes(dir.path(), "big.jsonl", jsonl.as_bytes(), &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("big.jsonl:1: Note: is 10485760 characters long"),
        "{}",
        &r.stdout[..r.stdout.len().min(2000)]
    );
    assert!(r.stdout.contains("2 rows, 1 conversion valid"));
}

#[test]
fn empty_and_header_only_files_are_quiet_successes() {
    let dir = workspace("");
    let r = check_bytes(dir.path(), "empty.csv", b"", &[]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("empty.csv: 0 rows, 0 conversions valid"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("note: empty file: nothing to do"));
    let r = check_bytes(
        dir.path(),
        "header.csv",
        b"OrderId,EventDate,Amount\r\n",
        &[],
    );
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains("note: header only, no rows: nothing to do"),
        "{}",
        r.stdout
    );
    let r = check_bytes(dir.path(), "empty.jsonl", b"\n\n", &[]);
    assert_eq!(r.code, 0);
}

#[test]
fn bom_crlf_and_quoted_newlines() {
    let dir = workspace("");
    let r = check_bytes(
        dir.path(),
        "excel.csv",
        b"\xEF\xBB\xBFOrderId,EventDate,Note,Amount\r\nA-1,2025-01-01T00:00:00Z,\"line one\r\nline two, \"\"quoted\"\"\",9.50\r\n\r\nB-2,2025-01-01T00:00:00Z,,1.00",
        &["--show"],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        bodies(&r.stdout),
        vec![
            "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=A-1&EventDate=2025-01-01T00:00:00%2B00:00&CurrencyCode=USD&Amount=9.50&Note=line%20one%0D%0Aline%20two%2C%20%22quoted%22",
            "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=B-2&EventDate=2025-01-01T00:00:00%2B00:00&CurrencyCode=USD&Amount=1.00",
        ]
    );
    assert!(r.stdout.contains("excel.csv:2 OrderId A-1"), "{}", r.stdout);
    assert!(
        r.stdout.contains("excel.csv:5 OrderId B-2"),
        "line numbers count physical lines: {}",
        r.stdout
    );
}

#[test]
fn windows_1252_is_an_error_naming_the_line_unless_configured() {
    let data: &[u8] = b"OrderId,EventDate,ItemSku,ItemName,ItemQuantity,ItemPrice\n\
        A,2025-01-01T00:00:00Z,X,Caf\xE9 cr\xE8me,1,2.00\nB,2025-01-01T00:00:00Z,Y,plain,1,3.00\n";
    let dir = workspace("");
    let r = check_bytes(dir.path(), "w.csv", data, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("w.csv:2: ItemName: contains bytes that are not UTF-8 (0xE9 after \"Caf\")"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("encoding = \"windows-1252\""));
    assert!(r.stdout.contains("1 conversion valid"));

    let dir = workspace("[source]\nencoding = \"windows-1252\"\n");
    let r = check_bytes(dir.path(), "w.csv", data, &["--show"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        bodies(&r.stdout)[0].contains("ItemName1=Caf%C3%A9%20cr%C3%A8me"),
        "{}",
        r.stdout
    );
}

#[test]
fn semicolon_files_and_tsv_are_read() {
    let dir = workspace("");
    let r = check_bytes(
        dir.path(),
        "semi.csv",
        b"OrderId;EventDate;Amount\nA;2025-01-01T00:00:00Z;1.00\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    let r = check_bytes(
        dir.path(),
        "tabs.tsv",
        b"OrderId\tEventDate\tAmount\nA\t2025-01-01T00:00:00Z\t1.00\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn unreadable_file_is_fatal_but_others_are_still_checked() {
    let dir = workspace("");
    std::fs::write(
        dir.path().join("ok.csv"),
        "OrderId,EventDate,Amount\nA,2025-01-01T00:00:00Z,1\n",
    )
    .unwrap();
    let r = run_in(dir.path(), &["check", "missing.csv", "ok.csv"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stdout.contains("cannot open missing.csv"), "{}", r.stdout);
    assert!(
        r.stdout.contains("ok.csv: 1 row, 1 conversion valid"),
        "{}",
        r.stdout
    );
}

#[test]
fn bad_config_is_fatal_and_names_key_and_file() {
    let dir = workspace("[source]\nformat = \"shopfy\"\n");
    let r = run_in(dir.path(), &["check", "x.csv"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("impact-drop.toml"), "{}", r.stderr);
    assert!(
        r.stderr.contains("[source] format = \"shopfy\""),
        "{}",
        r.stderr
    );
}

#[test]
fn folders_expand_to_exports_skipping_temp_names() {
    let dir = workspace("");
    let drop = dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    let good = "OrderId,EventDate,Amount\nA,2025-01-01T00:00:00Z,1\n";
    std::fs::write(drop.join("b.csv"), good).unwrap();
    std::fs::write(
        drop.join("a.jsonl"),
        "{\"OrderId\":\"J\",\"EventDate\":\"2025-01-01T00:00:00Z\",\"Amount\":\"1\"}\n",
    )
    .unwrap();
    std::fs::write(drop.join("c.csv.part"), "garbage").unwrap();
    std::fs::write(drop.join(".hidden.csv"), "garbage").unwrap();
    std::fs::write(drop.join("notes.toml"), "garbage").unwrap();
    let r = run_in(dir.path(), &["check", "drop"], &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("checked 2 files: 2 rows, 2 conversions valid"),
        "{}",
        r.stdout
    );
}

#[test]
fn config_command_never_shows_the_token() {
    let dir = workspace("[impact]\naccount_sid = \"IRabc\"\n");
    let r = run_in(
        dir.path(),
        &["config"],
        &[("IMPACT_AUTH_TOKEN", "tok-SECRET-123")],
    );
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains("set by IMPACT_AUTH_TOKEN (value not shown)"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("tok-SECRET-123"));
    let help = run_in(
        dir.path(),
        &["--help"],
        &[("IMPACT_AUTH_TOKEN", "tok-SECRET-123")],
    );
    assert!(!help.stdout.contains("tok-SECRET-123"));
}

#[test]
fn custom_mapping_with_naive_dates_and_a_zone() {
    let dir = workspace(
        "[source]\nformat = \"custom\"\ntimezone = \"America/New_York\"\ndate_format = \"%m/%d/%Y %H:%M\"\n\
         [mapping]\nOrderId = \"Order Number\"\nEventDate = \"Placed\"\nItemSku = \"SKU\"\nItemQuantity = \"Qty\"\n\
         ItemPrice = \"Unit Price\"\nItemCategory = { value = \"Garden\" }\n",
    );
    let r = check_bytes(
        dir.path(),
        "shop.csv",
        b"Order Number,Placed,SKU,Qty,Unit Price,Colour\n1001,07/04/2025 18:30,HOSE,1,25.00,green\n",
        &["--show"],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        bodies(&r.stdout),
        vec!["CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=1001&EventDate=2025-07-04T18:30:00-04:00&CurrencyCode=USD&ItemSku1=HOSE&ItemCategory1=Garden&ItemQuantity1=1&ItemPrice1=25.00"]
    );
    assert!(r
        .stdout
        .contains("1 column not used by the \"custom\" profile: Colour"));
    // The mapped column renamed in a later export: the file is refused, naming the column.
    let r = check_bytes(
        dir.path(),
        "shop2.csv",
        b"Order No,Placed,SKU,Qty,Unit Price\n1001,07/04/2025 18:30,HOSE,1,25.00\n",
        &[],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("maps OrderId to the column \"Order Number\", which this file does not have"),
        "{}",
        r.stdout
    );
}
