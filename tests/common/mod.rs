//! Test helpers: run the real binary in a temp dir with a clean environment.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_impact-drop");

/// The project's `samples/` folder.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fails the test on a panic: bad input must never crash the tool.
    pub fn no_panic(&self) -> &Self {
        assert!(
            !self.stderr.contains("panicked"),
            "impact-drop panicked:\n{}",
            self.stderr
        );
        assert_ne!(self.code, 101, "panic exit code; stderr:\n{}", self.stderr);
        self
    }
}

/// Environment variables the tool reads; cleared so the developer's shell cannot leak in.
const ENV: &[&str] = &[
    "IMPACT_ACCOUNT_SID",
    "IMPACT_AUTH_TOKEN",
    "IMPACT_AUTH_TOKEN_FILE",
    "IMPACT_BASE_URL",
    "IMPACT_ENDPOINT",
    "IMPACT_DROP_DIR",
    "IMPACT_DROP_FORMAT",
    "IMPACT_DROP_TIMEZONE",
    "IMPACT_DROP_LEDGER",
    "IMPACT_DROP_CONFIG",
    "RUST_LOG",
];

/// `impact-drop ARGS` in `dir`, the tool's environment variables cleared and `env` set; the
/// caller runs or spawns it.
pub fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    for v in ENV {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `impact-drop ARGS` in `dir` with extra environment variables.
pub fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = command(dir, args, env).output().expect("run impact-drop");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.no_panic();
    run
}

/// A temp dir with an `impact-drop.toml` holding the sample defaults plus `extra` TOML.
pub fn workspace(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // `run` does not wait for follow-ups here (tests/followup.rs covers them).
    let mut config = String::from(
        "[follow_up]\nrun_wait_secs = 0\n\
         [defaults]\nCampaignId = 1000\nActionTrackerId = 2000\nMediaPartnerId = 3000\nCurrencyCode = \"USD\"\n",
    );
    config.push_str(extra);
    std::fs::write(dir.path().join("impact-drop.toml"), config).unwrap();
    dir
}

/// Writes `bytes` to `name` in `dir` and runs `impact-drop check ARGS... name`.
pub fn check_bytes(dir: &Path, name: &str, bytes: &[u8], args: &[&str]) -> Run {
    std::fs::write(dir.join(name), bytes).unwrap();
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.push(name);
    run_in(dir, &all, &[])
}

/// The request bodies `check --show` printed (lines that are not comments or summaries).
pub fn bodies(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("CampaignId="))
        .collect()
}

/// OrderId → state, as the ledger records it (read-only, safe while a writer runs).
pub fn ledger_states(path: &Path) -> BTreeMap<String, String> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    // A run killed before the ledger's first migration leaves an empty database: nothing
    // recorded yet.
    let Ok(mut stmt) = c.prepare("SELECT order_id, state FROM conversions") else {
        return BTreeMap::new();
    };
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Asserts that the ledger's tallies (counts by state kept by triggers, read by `status` and
/// `/metrics`) equal the counts of the rows themselves.
pub fn assert_tallies_match(path: &Path) {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    if c.prepare("SELECT 1 FROM tallies").is_err() {
        return; // killed before the migration that made them
    }
    for (table, column) in [
        ("files", "state"),
        ("conversions", "state"),
        ("lines", "outcome"),
        ("followups", "state"),
    ] {
        let Ok(mut counting) = c.prepare(&format!(
            "SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}"
        )) else {
            continue; // a ledger from before the migration that made this table
        };
        let counted: BTreeMap<String, i64> = counting
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let tallied: BTreeMap<String, i64> = c
            .prepare("SELECT state, n FROM tallies WHERE tbl = ?1 AND n != 0")
            .unwrap()
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(tallied, counted, "tallies of {table}");
    }
}

/// `n` orders (from `first`), `items` rows each, impact columns.
pub fn orders(first: usize, n: usize, items: usize) -> String {
    let mut s = String::from("OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n");
    for o in first..first + n {
        for i in 0..items {
            s.push_str(&format!(
                "O-{o},2025-11-20T10:00:00Z,SKU-{o}-{i},1,{}.{:02}\n",
                1 + o % 90,
                i
            ));
        }
    }
    s
}

/// A tokio runtime (kept alive by the caller) with the sandbox on 127.0.0.1:0.
pub fn sandbox(
    sid: &str,
    token: &str,
) -> (
    tokio::runtime::Runtime,
    impact_drop::impact::sandbox::Sandbox,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sandbox = rt
        .block_on(impact_drop::impact::sandbox::Sandbox::start(
            ([127, 0, 0, 1], 0).into(),
            sid,
            token,
            Default::default(),
        ))
        .unwrap();
    (rt, sandbox)
}

/// A temp dir whose config (made by `config` from the sandbox's base URL) points at a sandbox
/// of its own, with an empty `drop/` folder.
pub struct SandboxDir {
    pub rt: tokio::runtime::Runtime,
    pub sandbox: impact_drop::impact::sandbox::Sandbox,
    pub dir: tempfile::TempDir,
}

impl SandboxDir {
    pub fn new(sid: &str, token: &str, config: impl FnOnce(&str) -> String) -> SandboxDir {
        let (rt, sandbox) = sandbox(sid, token);
        let dir = tempfile::tempdir().unwrap();
        let text = config(&sandbox.base_url());
        std::fs::write(dir.path().join("impact-drop.toml"), text).unwrap();
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        SandboxDir { rt, sandbox, dir }
    }

    /// Drops `content` as `drop/NAME`, runs `impact-drop run` with `env`, and returns the run
    /// and what the sandbox received so far, by OrderId.
    pub fn run(
        &self,
        name: &str,
        content: &str,
        env: &[(&str, &str)],
    ) -> (
        Run,
        BTreeMap<String, impact_drop::impact::sandbox::Received>,
    ) {
        std::fs::write(self.dir.path().join("drop").join(name), content).unwrap();
        let _g = self.rt.enter();
        let r = run_in(self.dir.path(), &["run"], env);
        let received = (self.sandbox.received().into_iter())
            .map(|r| (r.order_id.clone(), r))
            .collect();
        (r, received)
    }
}

/// Starts `impact-drop run` and kills it (SIGKILL) after `delay` unless it ended first;
/// returns whether it was killed.
pub fn run_killed_after(dir: &Path, token: &str, delay: std::time::Duration) -> bool {
    let mut child = command(dir, &["run"], &[("IMPACT_AUTH_TOKEN", token)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// Orders impact accepted that the ledger had not recorded as accepted: in flight at a kill.
pub fn in_flight(
    sandbox: &impact_drop::impact::sandbox::Sandbox,
    ledger: &Path,
) -> std::collections::BTreeSet<String> {
    let states = if ledger.exists() {
        ledger_states(ledger)
    } else {
        BTreeMap::new()
    };
    sandbox
        .received()
        .into_iter()
        .map(|r| r.order_id)
        .filter(|o| states.get(o).map(String::as_str) != Some("accepted"))
        .collect()
}

/// `NAME` as archived under `DIR/drop/processed/<day>/`, if it is there.
pub fn archived(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("drop").join("processed"))
        .ok()?
        .flatten()
        .map(|d| d.path().join(name))
        .find(|p| p.exists())
}
