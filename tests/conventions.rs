//! The conventions operators expect from a command-line tool (ripgrep's, cargo's), through
//! the real binary: no colour codes unless a terminal asks, a closed pipe ends quietly,
//! `--quiet` prints nothing, `--json` documents parse as objects of a stable shape,
//! completions and the man page list every subcommand, `demo` works from any folder, `check`
//! without a file reads the drop folder and without a config names the preset a header fits,
//! and the README names every config key, subcommand, metric and sandbox endpoint.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use clap::CommandFactory;
use common::*;

const SID: &str = "IRCONVENTIONS0000000000001";
const TOKEN: &str = "conventions-token";

fn env() -> SandboxDir {
    SandboxDir::new(SID, TOKEN, |base_url| {
        format!(
            "[source]\ndrop_dir = \"drop\"\n[impact]\nbase_url = \"{base_url}\"\n\
             account_sid = \"{SID}\"\nrequests_per_hour = 0\n\
             [follow_up]\nfirst_check_secs = 0\nrun_wait_secs = 10\n\
             [ledger]\npath = \"ledger.sqlite\"\n\
             [defaults]\nCampaignId = 1000\nActionTrackerId = 2000\nMediaPartnerId = 3000\n\
             CurrencyCode = \"USD\"\n"
        )
    })
}

fn subcommands() -> Vec<String> {
    impact_drop::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[test]
fn no_escape_codes_without_a_terminal_with_or_without_no_color() {
    let e = env();
    for no_color in [None, Some("1")] {
        let mut vars = vec![("IMPACT_AUTH_TOKEN", TOKEN), ("RUST_LOG", "debug")];
        if let Some(v) = no_color {
            vars.push(("NO_COLOR", v));
        }
        let (r, _) = e.run(&format!("o{}.csv", vars.len()), &orders(1, 2, 1), &vars);
        assert!(r.stderr.contains("WARN"), "{}", r.stderr);
        assert!(!r.stderr.contains('\u{1b}'), "escape codes: {:?}", r.stderr);
        assert!(!r.stdout.contains('\u{1b}'));
    }
}

/// Under a terminal (a pty from util-linux's `script`), logs are coloured, and `NO_COLOR`
/// turns that off.
#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no `script` (util-linux) on this machine: skipped");
        return;
    }
    let e = env();
    let _g = e.rt.enter();
    for (no_color, coloured) in [(None, true), (Some("1"), false)] {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &format!("'{BIN}' run"), "/dev/null"])
            .current_dir(e.dir.path())
            .env("IMPACT_AUTH_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .env_remove("IMPACT_DROP_CONFIG")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("WARN"), "{text}");
        assert_eq!(
            text.contains('\u{1b}'),
            coloured,
            "NO_COLOR={no_color:?}: {text:?}"
        );
    }
}

#[test]
fn a_closed_pipe_ends_quietly_and_quiet_prints_nothing() {
    let dir = workspace("");
    let mut csv = String::from("OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n");
    for i in 0..3000 {
        csv.push_str(&format!("Q-{i},2026-11-30T10:00:00Z,SKU,1,2.00\n"));
    }
    std::fs::write(dir.path().join("big.csv"), csv).unwrap();
    // The reader takes one line and goes away, as `| head -1` does.
    let mut child = command(
        dir.path(),
        &["check", "--show", "--sources", "big.csv"],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("# big.csv:2"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Broken pipe") && !err.contains("cannot write"),
        "{err}"
    );
    // --quiet: nothing on stdout; the exit status says it (1: an invalid row).
    std::fs::write(
        dir.path().join("bad.csv"),
        "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\nB-1,,SKU,1,2.00\n",
    )
    .unwrap();
    let r = run_in(dir.path(), &["check", "-q", "bad.csv"], &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    let r = run_in(dir.path(), &["check", "bad.csv"], &[]);
    assert!(r.stdout.contains("EventDate"), "{}", r.stdout);
}

#[test]
fn json_documents_are_objects_of_a_stable_shape() {
    let e = env();
    let good = orders(1, 3, 2);
    std::fs::write(e.dir.path().join("drop").join("a.csv"), &good).unwrap();
    let _g = e.rt.enter();
    let json = |args: &[&str]| -> serde_json::Value {
        let r = run_in(e.dir.path(), args, &[("IMPACT_AUTH_TOKEN", TOKEN)]);
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|err| panic!("{args:?}: {err}\n{}\n{}", r.stdout, r.stderr))
    };
    let check = json(&["check", "--json"]);
    assert_eq!(check["totals"]["valid_conversions"], 3);
    assert_eq!(check["files"][0]["rows"], 6);
    assert_eq!(check["exit"], 0);
    let run = json(&["run", "--json"]);
    assert_eq!(run["command"], "run");
    assert_eq!(run["exit"], 0);
    assert_eq!(run["sent"]["accepted"], 3);
    assert_eq!(run["pending"], 0);
    let f = &run["files"][0];
    assert_eq!(f["intake"], "planned");
    assert_eq!(f["stats"]["rows"], 6);
    assert_eq!(f["stats"]["rows_accepted"], 6);
    assert_eq!(f["stats"]["conversions_accepted"], 3);
    assert_eq!(f["stats"]["at_impact"]["processed"], 3);
    assert!(f["moved_to"].as_str().unwrap().ends_with("a.csv"));
    assert_eq!(run["follow_up"]["processed"], 3);
    assert_eq!(run["at_impact"]["processed"], 3);
    // send --json on a new file with an invalid order.
    let path = e.dir.path().join("b.csv");
    std::fs::write(
        &path,
        "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\nS-1,2026-11-30T10:00:00Z,X,1,1.00\nS-2,,Y,1,1.00\n",
    )
    .unwrap();
    let send = json(&["send", "--json", path.to_str().unwrap()]);
    assert_eq!(send["command"], "send");
    assert_eq!(send["exit"], 1);
    assert_eq!(send["files"][0]["invalid"][0]["order_id"], "S-2");
    assert_eq!(send["files"][0]["invalid"][0]["lines"][0], 3);
    assert_eq!(send["sent"]["accepted"], 1);
    // status: counts by state are objects with every state, not pairs.
    let status = json(&["status", "--json"]);
    assert_eq!(status["conversions"]["accepted"], 4);
    assert_eq!(status["conversions"]["pending"], 0);
    assert_eq!(status["files"]["done"], 2);
    assert!(status["files"].is_object() && status["conversions"].is_object());
    assert_eq!(status["at_impact"]["processed"], 4);
}

#[test]
fn completions_and_the_man_page_list_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let man = run_in(dir.path(), &["man"], &[]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH impact-drop 1"));
    for shell in ["bash", "zsh", "fish"] {
        let c = run_in(dir.path(), &["completions", shell], &[]);
        assert_eq!(c.code, 0, "{}", c.stderr);
        for sub in subcommands() {
            if sub == "help" {
                continue;
            }
            assert!(c.stdout.contains(&sub), "{shell} completions lack {sub}");
            assert!(man.stdout.contains(&sub), "the man page lacks {sub}");
        }
    }
    let v = run_in(dir.path(), &["--version"], &[]);
    assert!(v.stdout.starts_with("impact-drop 0."), "{}", v.stdout);
    assert!(
        v.stdout.contains(" ("),
        "--version names the commit: {}",
        v.stdout
    );
}

#[test]
fn demo_works_from_any_folder_and_warns_about_nothing_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_in(dir.path(), &["demo"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("nothing is sent twice"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("follow-up: 12 questions to impact: 12 processed"),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("WARN"), "{}", r.stderr);
    assert!(!r.stderr.contains("chmod") && !r.stdout.contains("chmod"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn check_reads_the_drop_folder_and_names_the_preset_a_header_fits() {
    let dir = workspace("[source]\ndrop_dir = \"drop\"\n");
    std::fs::create_dir(dir.path().join("drop")).unwrap();
    std::fs::write(dir.path().join("drop").join("x.csv"), orders(1, 2, 1)).unwrap();
    let r = run_in(dir.path(), &["check"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("x.csv: 2 rows, 2 conversions valid"),
        "{}",
        r.stdout
    );
    // No config at all: a Shopify export is recognised by its header.
    let bare = tempfile::tempdir().unwrap();
    let shopify = samples().join("shopify").join("orders_export.csv");
    std::fs::copy(&shopify, bare.path().join("orders_export.csv")).unwrap();
    let r = run_in(bare.path(), &["check", "orders_export.csv"], &[]);
    assert!(
        r.stdout.contains(
            "its header is a shopify-csv export's: put [source] format = \"shopify-csv\""
        ),
        "{}",
        r.stdout
    );
    // Refused (the impact format finds none of its columns): the 79 columns named once.
    assert_eq!(
        r.stdout.matches("the columns are: ").count(),
        1,
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("5 rows, 0 conversions valid, file refused (5 rows kept for fixing)"),
        "{}",
        r.stdout
    );
    let r = run_in(bare.path(), &["check", "--json", "orders_export.csv"], &[]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["files"][0]["suggested_format"], "shopify-csv");
}

#[test]
fn the_readme_names_every_key_subcommand_metric_and_sandbox_endpoint() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let mut missing = Vec::new();
    for (section, keys) in impact_drop::config::keys() {
        for key in keys {
            let named = if section == "filter" {
                format!("[[filter]] {key}`")
            } else {
                format!("[{section}] {key}")
            };
            if !readme.contains(&named) {
                missing.push(named);
            }
        }
    }
    for sub in subcommands() {
        if sub != "help" && !readme.contains(&format!("impact-drop {sub}")) {
            missing.push(format!("impact-drop {sub}"));
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ledger = std::sync::Arc::new(std::sync::Mutex::new(
        impact_drop::ledger::Ledger::in_memory().unwrap(),
    ));
    let text = rt.block_on(impact_drop::pipeline::health::metrics(
        &Default::default(),
        &ledger,
    ));
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.split(' ').next())
        {
            if !readme.contains(name) {
                missing.push(name.to_owned());
            }
        }
    }
    for endpoint in impact_drop::impact::sandbox::ENDPOINTS {
        let path = endpoint.split(' ').nth(1).unwrap();
        if !readme.contains(path) {
            missing.push((*endpoint).to_owned());
        }
    }
    assert!(missing.is_empty(), "the README does not name: {missing:#?}");
}
