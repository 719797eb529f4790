//! `impact-drop config` prints every key the config file accepts, with its effective value.

use std::process::Command;

/// A config that sets every key, so each one prints with a value.
const EVERY_KEY: &str = r#"
[source]
drop_dir = "exports"
format = "impact"
delimiter = ";"
encoding = "windows-1252"
timezone = "Europe/Berlin"
date_format = ["%d/%m/%Y %H:%M"]
allow_event_date_now = true
rescan_secs = 7
settle_secs = 2.5
ignore = ["*.part", "*.tmp"]
ready_marker = ".done"
recursive = true
watch_events = false
decimal_separator = ","
strip_currency_symbols = true
preset_filters = false
max_file_bytes = 1000000

[impact]
endpoint = "brand"
base_url = "https://api.impact.com"
account_sid = "IRABC"
auth_token_file = "token.txt"
max_in_flight = 8
requests_per_hour = 500
connect_timeout_secs = 5
timeout_secs = 20
give_up_after_secs = 100
retry_cap_secs = 60
shutdown_grace_secs = 9

[ledger]
path = "ledger.sqlite"
keep_days = 120

[archive]
dir = "done"

[http]
listen = "127.0.0.1:9898"

[sale]
tip_names = ["Tip", "Trinkgeld"]
exclude_gift_cards = false
gift_card_names = ["Voucher*"]
send_zero_sales = true

[defaults]
CampaignId = "1000"

[mapping]
OrderId = "Order Number"

[[filter]]
column = "Status"
skip = ["cancelled"]
when_present = false
level = "row"
"#;

#[test]
fn config_prints_every_key_with_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("impact-drop.toml");
    std::fs::write(&path, EVERY_KEY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_impact-drop"))
        .arg("--config")
        .arg(&path)
        .arg("config")
        .env_remove("IMPACT_AUTH_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let printed: toml::Table = toml::from_str(&text).unwrap();
    let mut count = 0;
    for (section, keys) in impact_drop::config::keys() {
        for key in keys {
            if *key == "auth_token" {
                // Accepted only to be refused: the token is never a config key.
                continue;
            }
            let value = match &printed[section] {
                toml::Value::Array(tables) => tables[0].get(*key),
                t => t.get(*key),
            };
            assert!(value.is_some(), "[{section}] {key} is not printed:\n{text}");
            count += 1;
        }
    }
    assert!(count >= 40, "only {count} keys enumerated");
    for (section, key, value) in [
        ("source", "settle_secs", "2.5"),
        ("source", "decimal_separator", "\",\""),
        ("source", "delimiter", "\";\""),
        ("source", "encoding", "\"windows-1252\""),
        ("source", "preset_filters", "false"),
        ("source", "max_file_bytes", "1000000"),
        ("impact", "endpoint", "\"brand\""),
        ("http", "listen", "\"127.0.0.1:9898\""),
    ] {
        assert_eq!(
            printed[section][key].to_string(),
            value,
            "[{section}] {key}"
        );
    }
    assert_eq!(printed["filter"][0]["level"].as_str(), Some("row"));
    assert_eq!(printed["defaults"]["CampaignId"].as_str(), Some("1000"));
    assert_eq!(printed["mapping"]["OrderId"].as_str(), Some("Order Number"));
    // The printed configuration is itself a valid config file that loads the same way.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &text).unwrap();
    let reloaded = Command::new(env!("CARGO_BIN_EXE_impact-drop"))
        .arg("--config")
        .arg(&again)
        .arg("config")
        .env_remove("IMPACT_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(
        reloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
}

#[test]
fn the_readme_documents_every_key() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (section, keys) in impact_drop::config::keys() {
        for key in keys {
            if *key == "auth_token" {
                continue;
            }
            let documented = if section == "filter" {
                readme.contains(&format!("`[[filter]] {key}`"))
            } else {
                readme.contains(&format!("`[{section}] {key}`"))
                    || readme.contains(&format!("`[{section}] {key}`,"))
                    || readme.contains(&format!(", `{key}` |"))
            };
            assert!(documented, "README's config table lacks [{section}] {key}");
        }
    }
}
