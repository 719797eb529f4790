//! `impact-drop sandbox` (serve the local imitation of impact) and `impact-drop demo` (the
//! main job on the bundled samples against it).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::deliver::{deliver, Request};
use super::{CommandError, Outcome};
use crate::config::{self, Secret};
use crate::impact::sandbox::{Faults, Sandbox};
use crate::plan::Mode;

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CommandError::Output)
}

/// Serves until interrupted.
pub fn serve(
    port: u16,
    sid: &str,
    token: &str,
    faults: Faults,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    runtime()?.block_on(async {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let sandbox = Sandbox::start(addr, sid, token, faults)
            .await
            .map_err(|source| CommandError::Sandbox {
                addr: addr.to_string(),
                source,
            })?;
        writeln!(
            out,
            "impact sandbox listening on {} (account {sid}); point [impact] base_url there, set \
             IMPACT_ACCOUNT_SID={sid} and IMPACT_AUTH_TOKEN to the sandbox token; \
             GET /_sandbox/received and /_sandbox/stats show what arrived; Ctrl-C stops",
            sandbox.base_url()
        )?;
        out.flush()?;
        let _ = tokio::signal::ctrl_c().await;
        let stats = sandbox.stats();
        writeln!(
            out,
            "sandbox: {} requests, {} accepted",
            stats.requests, stats.accepted
        )?;
        Ok(Outcome::Clean)
    })
}

const DEMO_SID: &str = "IRDEMO0000000000000000000001";
const DEMO_TOKEN: &str = "demo-sandbox-token";

/// The bundled samples, built into the binary so `demo` works from any folder.
const SAMPLES: &[(&str, &str)] = &[
    (
        "impact-drop.toml",
        include_str!("../../samples/impact-drop.toml"),
    ),
    ("bad-rows.csv", include_str!("../../samples/bad-rows.csv")),
    (
        "orders-ftp-template.csv",
        include_str!("../../samples/orders-ftp-template.csv"),
    ),
    ("orders.csv", include_str!("../../samples/orders.csv")),
    ("orders.jsonl", include_str!("../../samples/orders.jsonl")),
    ("seed.csv", include_str!("../../samples/seed.csv")),
];

/// Copies the sample exports (the bundled ones, or those of `samples`) to a temporary drop
/// folder, runs the delivery against a sandbox on 127.0.0.1, and shows what the sandbox
/// received.
pub fn demo(samples: Option<&Path>, out: &mut dyn Write) -> Result<Outcome, CommandError> {
    let work = tempfile::tempdir().map_err(CommandError::Output)?;
    let drop_dir = work.path().join("exports");
    std::fs::create_dir_all(&drop_dir)?;
    // The config is a private copy in the temporary folder: the demo warns about nothing of
    // the repository's own files.
    let config_path = work.path().join("impact-drop.toml");
    let mut copied = Vec::new();
    match samples {
        None => {
            for (name, text) in SAMPLES {
                let to = if *name == "impact-drop.toml" {
                    config_path.clone()
                } else {
                    copied.push((*name).to_owned());
                    drop_dir.join(name)
                };
                std::fs::write(to, text)?;
            }
        }
        Some(dir) => {
            std::fs::copy(dir.join("impact-drop.toml"), &config_path).map_err(|e| {
                CommandError::Config(config::ConfigError::Read {
                    path: dir.join("impact-drop.toml"),
                    source: e,
                })
            })?;
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.is_file() && crate::read::FileKind::from_path(&path).is_some() {
                    let name = path.file_name().unwrap_or_default().to_owned();
                    std::fs::copy(&path, drop_dir.join(&name))?;
                    copied.push(name.to_string_lossy().into_owned());
                }
            }
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut config = config::load(Some(&config_path))?;
    copied.sort();
    runtime()?.block_on(async {
        let sandbox = Sandbox::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            DEMO_SID,
            DEMO_TOKEN,
            Faults::default(),
        )
        .await
        .map_err(|source| CommandError::Sandbox {
            addr: "127.0.0.1".into(),
            source,
        })?;
        config.source.drop_dir = drop_dir.clone();
        config.ledger.path = work.path().join("impact-drop.sqlite");
        config.impact.base_url = sandbox.base_url();
        config.impact.account_sid = Some(DEMO_SID.into());
        config.impact.set_token(Secret::new(DEMO_TOKEN));
        config.impact.requests_per_hour = 0;
        // The sandbox completes a conversion at once: ask right after sending.
        config.follow_up.first_check_secs = 0;
        writeln!(
            out,
            "demo: {} sample exports ({}) copied to {}; impact sandbox on {}\n",
            copied.len(),
            copied.join(", "),
            drop_dir.display(),
            sandbox.base_url()
        )?;
        let request = Request {
            args: super::command_line(),
            command: "demo",
            files: None,
            mode: Mode::Normal,
            // The demo's sandbox and config are its own: nothing to warn about.
            warn: false,
        };
        let outcome = deliver(&config, request, CancellationToken::new(), false, out).await?;
        let received = sandbox.received();
        writeln!(
            out,
            "\nimpact (the sandbox) received {} conversions:",
            received.len()
        )?;
        for r in &received {
            writeln!(
                out,
                "POST /{}\n  {}\n  -> QUEUED {}",
                endpoint_path(&r.endpoint),
                r.body,
                r.queued_uri
            )?;
        }
        // Show the rejects file of the sample with bad rows.
        let processed = drop_dir.join("processed");
        if let Some(rejects) = find_processed(&processed, |n| n.contains(".rejects.")) {
            writeln!(
                out,
                "\nrows to fix and drop again ({}; the demo's temporary folder is removed when it exits):",
                rejects.display()
            )?;
            out.write_all(&std::fs::read(&rejects)?)?;
        }
        // The same export dropped again under another name: recognised by content.
        if copied.iter().any(|n| n == "seed.csv") {
            std::fs::copy(
                find_processed(&processed, |n| n == "seed.csv").unwrap_or_else(|| drop_dir.join("seed.csv")),
                drop_dir.join("seed (copy).csv"),
            )?;
            writeln!(
                out,
                "\nThe seed export dropped again as \"seed (copy).csv\", and a second run:"
            )?;
            let before = sandbox.stats().requests;
            let second = Request {
                args: super::command_line(),
                command: "demo",
                files: None,
                mode: Mode::Normal,
                warn: false,
            };
            deliver(&config, second, CancellationToken::new(), false, out).await?;
            writeln!(
                out,
                "impact received {} more requests: nothing is sent twice.",
                sandbox.stats().requests - before
            )?;
        }
        // The demo succeeded if nothing fatal happened; invalid sample rows are the point.
        Ok(match outcome {
            Outcome::Fatal => Outcome::Fatal,
            _ => Outcome::Clean,
        })
    })
}

/// The first file in a dated folder of `processed` whose name `wanted` accepts.
fn find_processed(processed: &Path, wanted: impl Fn(&str) -> bool) -> Option<std::path::PathBuf> {
    for day in std::fs::read_dir(processed).ok()?.flatten() {
        for f in std::fs::read_dir(day.path()).ok()?.flatten() {
            if wanted(&f.file_name().to_string_lossy()) {
                return Some(f.path());
            }
        }
    }
    None
}

fn endpoint_path(endpoint: &str) -> String {
    if endpoint == "partner" {
        format!("Mediapartners/{DEMO_SID}/PartnerConversions")
    } else {
        format!("Advertisers/{DEMO_SID}/Conversions")
    }
}
