//! Configuration: TOML file + environment overrides → a validated [`Config`], before any work.
//!
//! Every error names the key and where it came from (the file, or the environment variable
//! that set it). The auth token is never a config key: it comes from `IMPACT_AUTH_TOKEN` or
//! `auth_token_file`, is held in a [`Secret`], and never appears in `config` output or logs.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::Deserialize;

use crate::ignore::Ignore;
use crate::model::{Field, Kind, Level};
use impact_drop_core::intake::Stages;
use impact_drop_core::money::SaleRules;
use impact_drop_core::profile::Profile;
use impact_drop_core::read::Decoding;
pub use impact_drop_core::settings::{Endpoint, FilterConfig, Source};
use impact_drop_core::validate::Rules;

/// The default config file, looked up in the working directory.
pub const DEFAULT_PATH: &str = "impact-drop.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{0}")]
    Missing(String),
}

/// The auth token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that needs it: the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The validated configuration. Its `Serialize` is `impact-drop config`: each field is named
/// as its key, so the effective value of every key is printed from this one definition.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    /// The file this came from, if any (relative paths inside it are resolved against it).
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// `--new-ledger`: an empty ledger beside archived exports is intended.
    #[serde(skip)]
    pub allow_new_ledger: bool,
    pub source: SourceConfig,
    pub impact: ImpactConfig,
    pub ledger: LedgerConfig,
    pub archive: ArchiveConfig,
    pub follow_up: FollowUpConfig,
    pub http: HttpConfig,
    /// `[sale]`: which lines and orders are not a sale.
    pub sale: SaleRules,
    /// `[defaults]`: API fields every conversion gets unless the export has them.
    #[serde(serialize_with = "ser::defaults")]
    pub defaults: Vec<(Field, String)>,
    /// `[mapping]`: API field → column/path/constant, on top of the chosen profile.
    #[serde(serialize_with = "ser::mapping")]
    pub mapping: Vec<(Field, Source)>,
    /// `[[filter]]` tables replace the preset's filters; `[source] preset_filters = false`
    /// (without `[[filter]]`) turns them off.
    #[serde(rename = "filter", skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<FilterConfig>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceConfig {
    pub drop_dir: PathBuf,
    /// The input profile (`impact`, `shopify-csv`, …, `custom`).
    pub format: String,
    /// The CSV delimiter; detected from the header line when unset.
    #[serde(serialize_with = "ser::delimiter")]
    pub delimiter: Option<u8>,
    /// Text encoding of the exports; `None` means UTF-8 (with or without a BOM).
    #[serde(serialize_with = "ser::encoding")]
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// Time zone for export dates that carry no offset.
    #[serde(serialize_with = "ser::timezone")]
    pub timezone: Option<Tz>,
    /// Extra `strftime` formats tried for dates, before the built-in ones.
    #[serde(rename = "date_format")]
    pub date_formats: Vec<String>,
    /// Accept the literal `NOW` as EventDate (off: after a backlog every date would be wrong).
    pub allow_event_date_now: bool,
    /// Full rescan period of `watch` (notify events only trigger earlier scans).
    pub rescan_secs: u64,
    /// How long size and mtime must stay the same before a file is read.
    #[serde(rename = "settle_secs", serialize_with = "ser::secs")]
    pub settle: std::time::Duration,
    /// Names never read (glob patterns).
    pub ignore: Ignore,
    /// Marker suffix (`.done`): `orders.csv` is ready once `orders.csv.done` exists.
    pub ready_marker: Option<String>,
    /// Watch subfolders too.
    pub recursive: bool,
    /// Use OS file events (inotify) as hints; `false` = poll only (network mounts).
    pub watch_events: bool,
    /// Amounts written `1.234,56`.
    #[serde(
        rename = "decimal_separator",
        serialize_with = "ser::decimal_separator"
    )]
    pub decimal_comma: bool,
    /// Read `$1,234.56` as `1234.56` (otherwise an error naming the cell).
    pub strip_currency_symbols: bool,
    /// The largest export read (after decompression); larger files are refused clearly.
    pub max_file_bytes: u64,
    /// Whether the preset's own filters apply (without `[[filter]]` tables).
    pub preset_filters: bool,
}

/// `[http]`: the optional health and metrics endpoint of `watch`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HttpConfig {
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ImpactConfig {
    pub endpoint: Endpoint,
    pub base_url: String,
    pub account_sid: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    /// From `IMPACT_AUTH_TOKEN`, when set. Never printed.
    #[serde(skip)]
    auth_token_env: Option<Secret>,
    /// POSTs in flight at once.
    pub max_in_flight: usize,
    /// The account's request budget; 0 turns pacing off (only sensible for a local sandbox).
    pub requests_per_hour: u32,
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    /// How long `run` and `send` keep retrying while impact answers no conversion before
    /// leaving the rest pending for the next run (a healthy backlog is never cut off).
    pub give_up_after_secs: u64,
    /// The longest wait between retries of one conversion.
    pub retry_cap_secs: u64,
    /// On SIGTERM, how long POSTs in flight may take to finish.
    pub shutdown_grace_secs: u64,
}

/// `[follow_up]`: asking impact what became of each accepted conversion (`APISubmissions`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FollowUpConfig {
    /// Whether accepted conversions are followed up. On brand, always possible; on
    /// partner (no documented GET), impact is asked once and, if it refuses, never again.
    pub enabled: bool,
    /// How long after its acceptance a conversion is first asked about.
    pub first_check_secs: u64,
    /// The longest wait between two questions about one conversion (the wait doubles from
    /// `first_check_secs` while impact still has it queued).
    pub max_interval_secs: u64,
    /// After this many days without a final answer, the outcome is recorded as unknown
    /// (impact keeps submissions 90 days).
    pub give_up_after_days: u32,
    /// How long `run` waits for outcomes after sending before it exits; a later `run` or
    /// `watch` asks about the rest.
    pub run_wait_secs: u64,
}

/// `[archive]`: where finished files go.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ArchiveConfig {
    /// Finished files move to `<dir>/YYYY-MM-DD/`; relative to the drop folder.
    pub dir: PathBuf,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LedgerConfig {
    pub path: PathBuf,
    /// Line and conversion records older than this are pruned (never pending ones).
    pub keep_days: u32,
}

impl ImpactConfig {
    /// The auth token: `IMPACT_AUTH_TOKEN`, else the content of `auth_token_file` (read now,
    /// so a corrected file is picked up without a restart).
    pub fn auth_token(&self) -> Result<Secret, ConfigError> {
        if let Some(token) = &self.auth_token_env {
            return Ok(token.clone());
        }
        let Some(path) = &self.auth_token_file else {
            return Err(ConfigError::Missing(
                "no auth token: set IMPACT_AUTH_TOKEN, or [impact] auth_token_file = \"path\" \
                 to a file holding the token"
                    .into(),
            ));
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            source: e,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::Missing(format!(
                "the auth token file {} is empty: write the token from impact's \
                 Settings › API page into it",
                path.display()
            )));
        }
        Ok(Secret::new(token))
    }

    /// Sets the token directly (the demo's sandbox token).
    pub fn set_token(&mut self, token: Secret) {
        self.auth_token_env = Some(token);
    }

    /// The account SID, required by every command that talks to impact.
    pub fn require_account_sid(&self) -> Result<&str, ConfigError> {
        self.account_sid.as_deref().ok_or_else(|| {
            ConfigError::Missing(
                "no account SID: set [impact] account_sid = \"IR…\" or IMPACT_ACCOUNT_SID".into(),
            )
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    source: RawSource,
    #[serde(default)]
    impact: RawImpact,
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    mapping: toml::Table,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    archive: RawArchive,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    follow_up: RawFollowUp,
    #[serde(default)]
    sale: RawSale,
    filter: Option<Vec<RawFilter>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSale {
    tip_names: Option<Vec<String>>,
    exclude_gift_cards: Option<bool>,
    gift_card_names: Option<Vec<String>>,
    send_zero_sales: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    column: String,
    #[serde(default)]
    skip: Vec<String>,
    #[serde(default)]
    when_present: bool,
    level: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFollowUp {
    enabled: Option<bool>,
    first_check_secs: Option<u64>,
    max_interval_secs: Option<u64>,
    give_up_after_days: Option<u32>,
    run_wait_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSource {
    drop_dir: Option<PathBuf>,
    format: Option<String>,
    delimiter: Option<String>,
    encoding: Option<String>,
    timezone: Option<String>,
    date_format: Option<StringOrList>,
    allow_event_date_now: Option<bool>,
    rescan_secs: Option<u64>,
    settle_secs: Option<f64>,
    ignore: Option<Vec<String>>,
    ready_marker: Option<String>,
    recursive: Option<bool>,
    watch_events: Option<bool>,
    decimal_separator: Option<String>,
    strip_currency_symbols: Option<bool>,
    preset_filters: Option<bool>,
    max_file_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImpact {
    endpoint: Option<Endpoint>,
    base_url: Option<String>,
    account_sid: Option<String>,
    auth_token_file: Option<PathBuf>,
    /// Accepted only to refuse it with a helpful message.
    auth_token: Option<toml::Value>,
    max_in_flight: Option<usize>,
    requests_per_hour: Option<u32>,
    connect_timeout_secs: Option<u64>,
    timeout_secs: Option<u64>,
    give_up_after_secs: Option<u64>,
    retry_cap_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    path: Option<PathBuf>,
    keep_days: Option<u32>,
}

/// Environment variables that override single keys: `(variable, section, key)`. The value
/// is set on the file's TOML before it is parsed, so it is checked like the key itself.
pub const ENV_OVERRIDES: &[(&str, &str, &str)] = &[
    ("IMPACT_ACCOUNT_SID", "impact", "account_sid"),
    ("IMPACT_AUTH_TOKEN_FILE", "impact", "auth_token_file"),
    ("IMPACT_BASE_URL", "impact", "base_url"),
    ("IMPACT_ENDPOINT", "impact", "endpoint"),
    ("IMPACT_DROP_DIR", "source", "drop_dir"),
    ("IMPACT_DROP_FORMAT", "source", "format"),
    ("IMPACT_DROP_TIMEZONE", "source", "timezone"),
    ("IMPACT_DROP_LEDGER", "ledger", "path"),
];

/// Where configuration comes from: the file (if any) and an environment.
pub struct Loader<'a> {
    /// `--config PATH`; when `None`, `./impact-drop.toml` is used if it exists.
    pub path: Option<&'a Path>,
    /// Looks up an environment variable (a closure so tests need not touch the process env).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Loader<'_> {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let (file, text) = match self.path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.to_owned(),
                    source: e,
                })?;
                (Some(p.to_owned()), text)
            }
            None => {
                let p = Path::new(DEFAULT_PATH);
                match std::fs::read_to_string(p) {
                    Ok(text) => (Some(p.to_owned()), text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, String::new()),
                    Err(e) => {
                        return Err(ConfigError::Read {
                            path: p.to_owned(),
                            source: e,
                        })
                    }
                }
            }
        };
        let origin = file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.clone(),
            message,
        };
        // The file alone first, so its errors carry their line and column.
        let mut raw: RawConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        // Environment overrides go into the file's table before it is parsed again, so each
        // value is checked exactly like the key it sets.
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut from_env: Vec<(&'static str, &'static str, &'static str)> = Vec::new();
        for &(var, section, key) in ENV_OVERRIDES {
            if let Some(value) = (self.env)(var).filter(|v| !v.trim().is_empty()) {
                let entry = table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(t) = entry {
                    t.insert(key.to_owned(), toml::Value::String(value.trim().to_owned()));
                }
                from_env.push((var, section, key));
            }
        }
        if !from_env.is_empty() {
            raw = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let vars: Vec<String> = from_env
                        .iter()
                        .map(|(var, section, key)| {
                            let value = (self.env)(var).unwrap_or_default();
                            format!("{var} = \"{}\" sets [{section}] {key}", value.trim())
                        })
                        .collect();
                    invalid(format!(
                        "{} (from the environment: {})",
                        e.message().trim(),
                        vars.join("; ")
                    ))
                })?;
        }
        let base = file
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let token = (self.env)("IMPACT_AUTH_TOKEN")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        build(raw, file, base, token).map_err(|message| {
            // A semantic error about a key the environment set names the variable too.
            let via = from_env
                .iter()
                .find(|(_, section, key)| message.starts_with(&format!("[{section}] {key}")))
                .map(|(var, ..)| format!(" (set by the environment variable {var})"))
                .unwrap_or_default();
            invalid(format!("{message}{via}"))
        })
    }
}

/// Loads the config as the binary does: `--config` (or `./impact-drop.toml`) and the process
/// environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    Loader {
        path,
        env: &|k| std::env::var(k).ok(),
    }
    .load()
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() || base.as_os_str().is_empty() {
        p
    } else {
        base.join(p)
    }
}

fn follow_up_config(raw: RawFollowUp) -> Result<FollowUpConfig, String> {
    let give_up_after_days = raw.give_up_after_days.unwrap_or(30);
    if !(1..=85).contains(&give_up_after_days) {
        return Err(format!(
            "[follow_up] give_up_after_days = {give_up_after_days} must be between 1 and 85: \
             impact keeps submissions 90 days"
        ));
    }
    let first_check_secs = raw.first_check_secs.unwrap_or(30);
    let max_interval_secs = raw.max_interval_secs.unwrap_or(3600);
    if max_interval_secs == 0 || max_interval_secs > 86_400 {
        return Err(format!(
            "[follow_up] max_interval_secs = {max_interval_secs} must be between 1 and 86400"
        ));
    }
    Ok(FollowUpConfig {
        enabled: raw.enabled.unwrap_or(true),
        first_check_secs,
        max_interval_secs,
        give_up_after_days,
        run_wait_secs: raw.run_wait_secs.unwrap_or(60),
    })
}

fn build(
    raw: RawConfig,
    file: Option<PathBuf>,
    base: PathBuf,
    token: Option<Secret>,
) -> Result<Config, String> {
    let RawConfig {
        source,
        impact,
        defaults,
        mapping,
        ledger,
        archive,
        http,
        follow_up,
        sale,
        filter,
    } = raw;
    let follow_up = follow_up_config(follow_up)?;

    let format = source.format.unwrap_or_else(|| "impact".to_owned());
    let formats = crate::profile::FORMATS;
    if !formats.contains(&format.as_str()) {
        return Err(format!(
            "[source] format = \"{format}\" is not a profile impact-drop knows; use one of: {}",
            formats.join(", ")
        ));
    }
    let decimal_comma = match source.decimal_separator.as_deref() {
        None | Some(".") => false,
        Some(",") => true,
        Some(other) => {
            return Err(format!(
                "[source] decimal_separator = \"{other}\" must be \".\" or \",\""
            ))
        }
    };
    let delimiter = match source.delimiter.as_deref() {
        None | Some("auto") => None,
        Some(",") => Some(b','),
        Some(";") => Some(b';'),
        Some("\t") | Some("tab") | Some("\\t") => Some(b'\t'),
        Some("|") => Some(b'|'),
        Some(other) => {
            return Err(format!(
                "[source] delimiter = \"{other}\" is not supported; use \",\", \";\", \"tab\", \
                 \"|\" or \"auto\""
            ))
        }
    };
    let encoding = match source.encoding.as_deref() {
        None => None,
        Some(label) => {
            let enc =
                encoding_rs::Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
                    format!(
                        "[source] encoding = \"{label}\" is not an encoding impact-drop knows; \
                     use \"utf-8\" or \"windows-1252\""
                    )
                })?;
            (enc != encoding_rs::UTF_8).then_some(enc)
        }
    };
    let timezone = match source.timezone.as_deref() {
        None => None,
        Some(name) => Some(name.trim().parse::<Tz>().map_err(|_| {
            format!(
                "[source] timezone = \"{name}\" is not an IANA time zone; use a name such as \
                 \"America/New_York\", \"Europe/Berlin\" or \"UTC\""
            )
        })?),
    };
    let date_formats = match source.date_format {
        None => Vec::new(),
        Some(StringOrList::One(f)) => vec![f],
        Some(StringOrList::Many(v)) => v,
    };
    for f in &date_formats {
        check_date_format(f)?;
    }

    if impact.auth_token.is_some() {
        return Err(
            "[impact] auth_token: the token is never kept in the config file; set the \
                    IMPACT_AUTH_TOKEN environment variable or [impact] auth_token_file = \"path\""
                .into(),
        );
    }
    let base_url = impact
        .base_url
        .unwrap_or_else(|| "https://api.impact.com".to_owned())
        .trim_end_matches('/')
        .to_owned();
    if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
        return Err(format!(
            "[impact] base_url = \"{base_url}\" must start with https:// (or http:// for a \
             local sandbox)"
        ));
    }
    let account_sid = impact.account_sid.map(|s| s.trim().to_owned());
    if let Some(sid) = &account_sid {
        if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "[impact] account_sid = \"{sid}\" is not an account SID (letters and digits, \
                 usually starting with IR); copy it from impact's Settings › API page"
            ));
        }
    }

    let max_in_flight = impact.max_in_flight.unwrap_or(4);
    if !(1..=64).contains(&max_in_flight) {
        return Err(format!(
            "[impact] max_in_flight = {max_in_flight} must be between 1 and 64"
        ));
    }
    let positive = |name: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(format!("[impact] {name} must be at least 1")),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let connect_timeout_secs = positive("connect_timeout_secs", impact.connect_timeout_secs, 10)?;
    let timeout_secs = positive("timeout_secs", impact.timeout_secs, 30)?;
    let retry_cap_secs = positive("retry_cap_secs", impact.retry_cap_secs, 300)?;
    let give_up_after_secs = impact.give_up_after_secs.unwrap_or(600);
    let shutdown_grace_secs = impact.shutdown_grace_secs.unwrap_or(20);
    let rescan_secs = source.rescan_secs.unwrap_or(30);
    if rescan_secs == 0 {
        return Err("[source] rescan_secs must be at least 1".into());
    }
    let settle = match source.settle_secs {
        None => std::time::Duration::from_secs(5),
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
            std::time::Duration::from_secs_f64(s)
        }
        Some(s) => {
            return Err(format!(
                "[source] settle_secs = {s} must be between 0 and 86400"
            ))
        }
    };
    let ready_marker = match source.ready_marker {
        Some(m) if m.trim().is_empty() || m.contains('/') => {
            return Err(format!(
                "[source] ready_marker = \"{m}\" must be a file-name suffix such as \".done\""
            ))
        }
        other => other,
    };
    let listen = match http.listen.as_deref() {
        None => None,
        Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
            format!("[http] listen = \"{a}\" is not an address:port such as \"127.0.0.1:9898\"")
        })?),
    };
    if let Some(list) = &filter {
        if list.len() > crate::model::MAX_FILTERS {
            return Err(format!(
                "[[filter]]: at most {} filters are supported",
                crate::model::MAX_FILTERS
            ));
        }
        if let Some(f) = list
            .iter()
            .find(|f| !matches!(f.level.as_deref(), None | Some("order") | Some("row")))
        {
            return Err(format!(
                "[[filter]] on column \"{}\": level must be \"order\" (default) or \"row\"",
                f.column
            ));
        }
        if let Some(f) = list.iter().find(|f| f.skip.is_empty() && !f.when_present) {
            return Err(format!(
                "[[filter]] on column \"{}\" needs skip = [\"value\", …] or when_present = true",
                f.column
            ));
        }
    }
    let needs_zone = Profile::preset(&format).is_some_and(|p| p.needs_timezone);
    if needs_zone && timezone.is_none() {
        return Err(format!(
            "[source] timezone is required with format = \"{format}\": its dates carry no time \
             zone; set the shop's zone, e.g. timezone = \"Europe/Berlin\""
        ));
    }
    let keep_days = ledger.keep_days.unwrap_or(400);
    if keep_days < 90 {
        return Err(format!(
            "[ledger] keep_days = {keep_days} is shorter than impact's windows (90 days): a \
             re-uploaded export could then be sent twice; use at least 90"
        ));
    }

    let mut defaults_out = Vec::new();
    for (key, value) in defaults {
        let field = Field::lookup(&key)
            .filter(|f| f.level() == Level::Order)
            .ok_or_else(|| {
                format!("[defaults] {key} is not an order-level impact field (the README's \"Fields\" section lists them)")
            })?;
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(_) if matches!(field.kind(), Kind::Money | Kind::Decimal) => {
                return Err(format!(
                    "[defaults] {key}: write amounts as strings (\"12.50\"), so no digit is lost \
                     to floating point"
                ))
            }
            other => {
                return Err(format!(
                    "[defaults] {key} = {other}: expected a string or a whole number"
                ))
            }
        };
        defaults_out.push((field, text));
    }

    let mut mapping_out = Vec::new();
    for (key, value) in mapping {
        let field = Field::lookup(&key).ok_or_else(|| {
            format!("[mapping] {key} is not an impact field (the README's \"Fields\" section lists them)")
        })?;
        let source = match value {
            toml::Value::String(s) => Source::Column(s),
            toml::Value::Table(t) => {
                let get = |k: &str| t.get(k).and_then(toml::Value::as_str).map(str::to_owned);
                let unknown: Vec<_> = t
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "column" | "path" | "value"))
                    .collect();
                if !unknown.is_empty() {
                    return Err(format!(
                        "[mapping] {key}: unknown key {unknown:?}; use column = \"…\", \
                         path = \"…\" or value = \"…\""
                    ));
                }
                match (get("column").or_else(|| get("path")), t.get("value")) {
                    (Some(c), None) => Source::Column(c),
                    (None, Some(toml::Value::String(v))) => Source::Value(v.clone()),
                    (None, Some(toml::Value::Integer(i))) => Source::Value(i.to_string()),
                    _ => {
                        return Err(format!(
                            "[mapping] {key}: give exactly one of column = \"…\", path = \"…\" \
                             or value = \"…\""
                        ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "[mapping] {key} = {other}: expected a column name (\"Order ID\") or a table \
                     ({{ value = \"…\" }})"
                ))
            }
        };
        mapping_out.push((field, source));
    }
    if format == "custom" && mapping_out.is_empty() {
        return Err(
            "[source] format = \"custom\" needs a [mapping] table: API field = \
                    \"column\", e.g. OrderId = \"Order Number\""
                .into(),
        );
    }

    Ok(Config {
        source: SourceConfig {
            drop_dir: resolve(&base, source.drop_dir.unwrap_or_else(|| "exports".into())),
            format,
            delimiter,
            encoding,
            timezone,
            date_formats,
            allow_event_date_now: source.allow_event_date_now.unwrap_or(false),
            rescan_secs,
            settle,
            ignore: match source.ignore {
                Some(patterns) => Ignore::new(patterns)?,
                None => Ignore::defaults(),
            },
            ready_marker,
            recursive: source.recursive.unwrap_or(false),
            watch_events: source.watch_events.unwrap_or(true),
            decimal_comma,
            strip_currency_symbols: source.strip_currency_symbols.unwrap_or(false),
            max_file_bytes: source.max_file_bytes.unwrap_or(1 << 30),
            preset_filters: source.preset_filters.unwrap_or(true),
        },
        impact: ImpactConfig {
            endpoint: impact.endpoint.unwrap_or(Endpoint::Partner),
            base_url,
            account_sid,
            auth_token_file: impact.auth_token_file.map(|p| resolve(&base, p)),
            auth_token_env: token,
            max_in_flight,
            requests_per_hour: impact.requests_per_hour.unwrap_or(1000),
            connect_timeout_secs,
            timeout_secs,
            give_up_after_secs,
            retry_cap_secs,
            shutdown_grace_secs,
        },
        http: HttpConfig { listen },
        sale: {
            let d = SaleRules::default();
            SaleRules {
                tip_names: sale.tip_names.unwrap_or(d.tip_names),
                exclude_gift_cards: sale.exclude_gift_cards.unwrap_or(d.exclude_gift_cards),
                gift_card_names: sale.gift_card_names.unwrap_or(d.gift_card_names),
                send_zero_sales: sale.send_zero_sales.unwrap_or(d.send_zero_sales),
            }
        },
        filters: filter
            .or_else(|| (source.preset_filters == Some(false)).then(Vec::new))
            .map(|list| {
                list.into_iter()
                    .map(|f| FilterConfig {
                        rows: f.level.as_deref() == Some("row"),
                        column: f.column,
                        skip: f.skip,
                        when_present: f.when_present,
                    })
                    .collect()
            }),
        archive: ArchiveConfig {
            dir: archive.dir.unwrap_or_else(|| "processed".into()),
        },
        defaults: defaults_out,
        mapping: mapping_out,
        follow_up,
        ledger: LedgerConfig {
            path: resolve(
                &base,
                ledger.path.unwrap_or_else(|| "impact-drop.sqlite".into()),
            ),
            keep_days,
        },
        file,
        allow_new_ledger: false,
    })
}

/// Rejects a `strftime` format chrono cannot use, naming it.
fn check_date_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "[source] date_format = \"{f}\" is not a valid strftime format (e.g. \
             \"%d/%m/%Y %H:%M\")"
        ));
    }
    Ok(())
}

impl Config {
    /// The core's stages as this config sets them up.
    pub fn stages(&self) -> Stages {
        let profile = Profile::build(&self.source.format, &self.mapping, self.filters.as_deref());
        let mut rules = Rules::new(self.impact.endpoint);
        rules.defaults = self.defaults.clone();
        rules.defaults.extend(profile.constants.iter().cloned());
        rules.item_constants = profile.item_constants.clone();
        rules.timezone = self.source.timezone;
        rules.date_formats = self.source.date_formats.clone();
        rules.allow_event_date_now = self.source.allow_event_date_now;
        rules.decimal_comma = self.source.decimal_comma;
        rules.strip_currency_symbols = self.source.strip_currency_symbols;
        let decoding = Decoding {
            encoding: self.source.encoding,
            max_bytes: Some(self.source.max_file_bytes),
        };
        let mut stages = Stages::new(profile, rules, decoding, self.source.delimiter);
        stages.sale = self.sale.clone();
        stages
    }

    /// `[mapping]` and `[defaults]` entries for fields the configured endpoint does not
    /// define: impact would ignore them, so they are never sent; said once at start-up.
    pub fn endpoint_warnings(&self) -> Vec<String> {
        let endpoint = self.impact.endpoint;
        let mapped = self.mapping.iter().map(|(f, _)| (*f, "[mapping]"));
        let defaults = self.defaults.iter().map(|(f, _)| (*f, "[defaults]"));
        mapped
            .chain(defaults)
            .filter(|(f, _)| f.is_api() && !f.defined_on(endpoint))
            .map(|(f, from)| {
                format!(
                    "impact's {} endpoint ignores {f} ({from} {f}): it is not sent",
                    endpoint.as_str()
                )
            })
            .collect()
    }

    /// Warnings about files that hold secrets or order data being readable by others: the
    /// token file should be readable by its owner only, the config not by everyone.
    pub fn permission_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| m.permissions().mode() & 0o777)
            };
            if let Some(p) = &self.impact.auth_token_file {
                if let Some(m) = mode(p).filter(|m| m & 0o077 != 0) {
                    out.push(format!(
                        "the token file {} has mode {m:o}: others can read the token; run `chmod 600 {}`",
                        p.display(),
                        p.display()
                    ));
                }
            }
            if let Some(p) = &self.file {
                if let Some(m) = mode(p).filter(|m| m & 0o004 != 0) {
                    out.push(format!(
                        "the config file {} has mode {m:o}: every user can read it; run `chmod o-r {}`",
                        p.display(),
                        p.display()
                    ));
                }
            }
        }
        out
    }

    /// Plain `http://` is allowed only for a sandbox on this machine: conversions and the token
    /// would otherwise cross the network unencrypted. Returns a warning for loopback http.
    pub fn check_transport(&self) -> Result<Option<String>, String> {
        let url = &self.impact.base_url;
        if !url.starts_with("http://") {
            return Ok(None);
        }
        let host = url
            .trim_start_matches("http://")
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        if matches!(host, "localhost" | "[::1]") || host.starts_with("127.") {
            Ok(Some(format!(
                "[impact] base_url = \"{url}\" is plain http on this machine (a sandbox); real \
                 conversions go to https://api.impact.com"
            )))
        } else {
            Err(format!(
                "[impact] base_url = \"{url}\" is plain http: conversions and the token would \
                 cross the network unencrypted; use https:// (plain http is allowed only for a \
                 sandbox on 127.0.0.1 or localhost)"
            ))
        }
    }

    /// The effective configuration as TOML, for `impact-drop config`: every key with its
    /// value, serialized from the typed config; keys without a value are listed as comments.
    /// The token is shown only as where it comes from.
    pub fn dump(&self) -> String {
        let body = toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"));
        let printed: std::collections::HashSet<(String, String)> = printed_keys(&body);
        let mut unset = Vec::new();
        for (section, keys) in keys() {
            if section == "filter" && self.filters.is_none() {
                unset.push("# [[filter]]: none (the preset's own filters apply)".to_owned());
                continue;
            }
            for key in keys {
                if !printed.contains(&(section.to_owned(), (*key).to_owned()))
                    && *key != "auth_token"
                {
                    unset.push(format!("# [{section}] {key}: not set"));
                }
            }
        }
        let token = if self.impact.auth_token_env.is_some() {
            "set by IMPACT_AUTH_TOKEN (value not shown)"
        } else if self.impact.auth_token_file.is_some() {
            "read from auth_token_file (value not shown)"
        } else {
            "not set"
        };
        format!(
            "# effective configuration ({})\n# auth token: {token}\n{}{}\n{body}",
            self.file
                .as_ref()
                .map_or("no config file".into(), |p| p.display().to_string()),
            unset.join("\n"),
            if unset.is_empty() { "" } else { "\n" },
        )
    }
}

/// Every key the config file accepts, by section, read from the raw structs' own field lists
/// (the one definition of the file's keys). `[defaults]` and `[mapping]` take impact field
/// names; `[[filter]]` tables are listed under `filter`.
pub fn keys() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("source", fields_of::<RawSource>()),
        ("impact", fields_of::<RawImpact>()),
        ("ledger", fields_of::<RawLedger>()),
        ("archive", fields_of::<RawArchive>()),
        ("http", fields_of::<RawHttp>()),
        ("follow_up", fields_of::<RawFollowUp>()),
        ("sale", fields_of::<RawSale>()),
        ("filter", fields_of::<RawFilter>()),
    ]
}

/// `(section, key)` pairs of a TOML text.
fn printed_keys(text: &str) -> std::collections::HashSet<(String, String)> {
    let mut out = std::collections::HashSet::new();
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return out;
    };
    for (section, value) in doc {
        let tables: Vec<&toml::Table> = match &value {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
            _ => continue,
        };
        for t in tables {
            for key in t.keys() {
                out.insert((section.clone(), key.clone()));
            }
        }
    }
    out
}

/// The field names a `Deserialize` struct accepts, as serde's derive lists them.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// How typed values print as their keys' TOML values.
mod ser {
    use super::*;
    use serde::ser::SerializeMap;
    use serde::Serializer;

    pub fn delimiter<S: Serializer>(d: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            None => s.serialize_str("auto"),
            Some(b'\t') => s.serialize_str("tab"),
            Some(d) => s.serialize_str(&char::from(*d).to_string()),
        }
    }

    pub fn encoding<S: Serializer>(
        e: &Option<&'static encoding_rs::Encoding>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&e.map_or("utf-8", |e| e.name()).to_lowercase())
    }

    pub fn timezone<S: Serializer>(tz: &Option<Tz>, s: S) -> Result<S::Ok, S::Error> {
        match tz {
            Some(tz) => s.serialize_some(tz.name()),
            None => s.serialize_none(),
        }
    }

    pub fn secs<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn decimal_separator<S: Serializer>(comma: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *comma { "," } else { "." })
    }

    pub fn defaults<S: Serializer>(d: &[(Field, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(d.len()))?;
        for (f, v) in d {
            map.serialize_entry(f.name(), v)?;
        }
        map.end()
    }

    pub fn mapping<S: Serializer>(m: &[(Field, Source)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (f, source) in m {
            match source {
                Source::Column(c) => map.serialize_entry(f.name(), c)?,
                Source::Value(v) => {
                    let mut t = toml::Table::new();
                    t.insert("value".into(), toml::Value::String(v.clone()));
                    map.serialize_entry(f.name(), &t)?
                }
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("impact-drop.toml");
        std::fs::write(&path, text).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Loader {
            path: Some(&path),
            env: &|k| env.get(k).cloned(),
        }
        .load()
    }

    const FULL: &str = r#"
[source]
drop_dir = "exports"
format = "impact"

[impact]
endpoint = "partner"
base_url = "https://api.impact.com"
account_sid = "IRabc123"

[defaults]
CampaignId = 1000
ActionTrackerId = 2000
MediaPartnerId = 3000
CurrencyCode = "USD"

[ledger]
path = "impact-drop.sqlite"
"#;

    #[test]
    fn the_documented_keys_load() {
        let c = load_text(FULL, &[]).unwrap();
        assert_eq!(c.source.format, "impact");
        assert!(c.source.drop_dir.ends_with("exports"));
        assert_eq!(c.impact.endpoint, Endpoint::Partner);
        assert_eq!(c.impact.account_sid.as_deref(), Some("IRabc123"));
        let d: Vec<_> = c
            .defaults
            .iter()
            .map(|(f, v)| (f.name(), v.as_str()))
            .collect();
        assert_eq!(
            d,
            vec![
                ("ActionTrackerId", "2000"),
                ("CampaignId", "1000"),
                ("CurrencyCode", "USD"),
                ("MediaPartnerId", "3000")
            ]
        );
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let err = load_text("[source]\ndrop_dri = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("impact-drop.toml"), "{err}");
        assert!(err.contains("drop_dri"), "{err}");
    }

    #[test]
    fn bad_endpoint_from_env_names_the_variable() {
        let err = load_text(FULL, &[("IMPACT_ENDPOINT", "partnr")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("IMPACT_ENDPOINT"), "{err}");
        assert!(err.contains("partnr"), "{err}");
    }

    #[test]
    fn env_overrides_the_file() {
        let c = load_text(
            FULL,
            &[
                ("IMPACT_ACCOUNT_SID", "IRenv"),
                ("IMPACT_ENDPOINT", "brand"),
            ],
        )
        .unwrap();
        assert_eq!(c.impact.account_sid.as_deref(), Some("IRenv"));
        assert_eq!(c.impact.endpoint, Endpoint::Brand);
    }

    #[test]
    fn token_in_the_file_is_refused_and_never_echoed() {
        let err = load_text("[impact]\nauth_token = \"s3cr3t-token\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("IMPACT_AUTH_TOKEN"), "{err}");
        assert!(!err.contains("s3cr3t-token"), "{err}");
    }

    #[test]
    fn token_never_in_dump_or_debug() {
        let c = load_text(FULL, &[("IMPACT_AUTH_TOKEN", "s3cr3t-token")]).unwrap();
        assert_eq!(c.impact.auth_token().unwrap().expose(), "s3cr3t-token");
        assert!(!c.dump().contains("s3cr3t-token"));
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
    }

    #[test]
    fn token_file_is_read_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok-from-file\n").unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "[impact]\nauth_token_file = \"token\"\n").unwrap();
        let c = Loader {
            path: Some(&cfg),
            env: &|_| None,
        }
        .load()
        .unwrap();
        assert_eq!(c.impact.auth_token().unwrap().expose(), "tok-from-file");
        std::fs::write(&token, "").unwrap();
        assert!(c.impact.auth_token().is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[source]\nformat = \"shopifyy\"\n", "[source] format"),
            (
                "[source]\nformat = \"woocommerce\"\n",
                "[source] timezone is required",
            ),
            (
                "[source]\ndecimal_separator = \";\"\n",
                "[source] decimal_separator",
            ),
            ("[[filter]]\ncolumn = \"Status\"\n", "[[filter]]"),
            ("[source]\ntimezone = \"Mars/Base\"\n", "[source] timezone"),
            ("[source]\nencoding = \"klingon\"\n", "[source] encoding"),
            ("[source]\ndelimiter = \"#\"\n", "[source] delimiter"),
            ("[source]\ndate_format = \"%Q\"\n", "[source] date_format"),
            ("[defaults]\nCampaignID2 = 1\n", "[defaults] CampaignID2"),
            ("[defaults]\nAmount = 1.5\n", "[defaults] Amount"),
            ("[mapping]\nFoo = \"x\"\n", "[mapping] Foo"),
            ("[source]\nformat = \"custom\"\n", "[mapping]"),
            ("[impact]\nbase_url = \"ftp://x\"\n", "[impact] base_url"),
            ("[impact]\naccount_sid = \"IR 1\"\n", "[impact] account_sid"),
        ] {
            let err = load_text(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn mapping_entries_take_columns_paths_and_values() {
        let c = load_text(
            "[source]\nformat = \"custom\"\n[mapping]\nOrderId = \"Order Number\"\n\
             ItemSku = { path = \"line_items[].sku\" }\nCurrencyCode = { value = \"EUR\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.mapping.len(), 3);
        assert!(c
            .mapping
            .contains(&(Field::ORDER_ID, Source::Column("Order Number".into()))));
        assert!(c
            .mapping
            .contains(&(Field::CURRENCY_CODE, Source::Value("EUR".into()))));
    }
}
