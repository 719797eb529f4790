//! `impact-drop run` and `impact-drop send`: files → ledger → impact → archive, with a report.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{location, CommandError, Outcome};
use crate::config::Config;
use crate::impact::client::Client;
use crate::impact::pacing::Pacer;
use crate::ledger::{FileStats, Ledger};
use crate::pipeline::deliver::{Deliverer, Finished, Intake};
use crate::pipeline::{self};
use crate::plan::Mode;
use crate::submit::{self, Progress, Summary};

/// What to deliver.
pub struct Request {
    /// `run`, `send` or `demo` (recorded in the ledger's runs).
    pub command: &'static str,
    /// Named files (`send`); `None` scans the drop folder (`run`).
    pub files: Option<Vec<PathBuf>>,
    pub mode: Mode,
}

/// A file as this run saw it.
struct Seen {
    path: PathBuf,
    file_id: i64,
    intake: Option<Intake>,
    finished: Option<Finished>,
    archived_duplicate: Option<PathBuf>,
}

/// Runs a delivery from the CLI (its own runtime).
pub fn run(
    config: &Config,
    request: Request,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CommandError::Output)?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: letting POSTs in flight finish, then stopping");
            c.cancel();
        }
    });
    rt.block_on(deliver(config, request, cancel, out))
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn answered(&self, _accepted: bool) {
        self.0.inc(1);
    }
}

/// The delivery itself, for callers that already run tokio (the demo).
pub async fn deliver(
    config: &Config,
    request: Request,
    cancel: CancellationToken,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    let sid = config.impact.require_account_sid()?.to_owned();
    let token = config.impact.auth_token()?;
    match config.check_transport() {
        Err(e) => return Err(CommandError::Message(e)),
        Ok(Some(w)) => tracing::warn!("{w}"),
        Ok(None) => {}
    }
    for w in config.permission_warnings() {
        tracing::warn!("{w}");
    }
    let ledger = Ledger::open(&config.ledger.path)?;
    let ledger = Arc::new(Mutex::new(ledger));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run_id = submit::with_ledger(&ledger, {
        let (cmd, args) = (request.command, args.join(" "));
        move |l| l.start_run(cmd, &args)
    })
    .await?;
    let deliverer = Arc::new(Deliverer::new(config.clone(), ledger.clone()));
    if let Mode::Replay {
        resend_accepted: true,
    } = request.mode
    {
        writeln!(
            out,
            "warning: --resend-accepted sends conversions impact already accepted once more; \
             outside impact's deduplication window each one pays the partner a second commission"
        )?;
    }

    // Intake: every file read, planned and recorded before anything is sent.
    let paths = match &request.files {
        Some(files) => pipeline::expand_paths(files, &config.source.ignore)
            .map_err(|e| CommandError::Message(e.to_string()))?,
        None => crate::watch::scan(&crate::watch::WatchOptions::from_config(config))
            .map_err(|e| {
                CommandError::Message(format!(
                    "cannot read the drop folder {}: {e}; check [source] drop_dir",
                    config.source.drop_dir.display()
                ))
            })?
            .into_iter()
            .filter(|c| c.marked)
            .map(|c| c.path)
            .collect(),
    };
    let mut seen: Vec<Seen> = Vec::new();
    let mut unreadable = 0u64;
    for path in paths {
        let d = deliverer.clone();
        let p = path.clone();
        let mode = request.mode;
        let result = tokio::task::spawn_blocking(move || d.intake(&p, mode, run_id))
            .await
            .map_err(|e| CommandError::Message(format!("intake failed: {e}")))?;
        match result {
            Ok(intake) => {
                let file_id = match &intake {
                    Intake::Planned { file_id, .. }
                    | Intake::Duplicate { file_id, .. }
                    | Intake::Resumed { file_id } => *file_id,
                };
                seen.push(Seen {
                    path,
                    file_id,
                    intake: Some(intake),
                    finished: None,
                    archived_duplicate: None,
                });
            }
            Err(e) if e.is_fatal() => return Err(CommandError::Message(e.to_string())),
            Err(e) => {
                unreadable += 1;
                writeln!(out, "error: {e}")?;
            }
        }
    }
    // Files an earlier run left unfinished are finished too.
    let open = submit::with_ledger(&ledger, |l| l.open_files()).await?;
    for f in open {
        if !seen.iter().any(|s| s.file_id == f.id) {
            seen.push(Seen {
                path: PathBuf::from(&f.path),
                file_id: f.id,
                intake: None,
                finished: None,
                archived_duplicate: None,
            });
        }
    }

    // Submit everything pending (this run's and any left from before).
    let pending = submit::with_ledger(&ledger, |l| l.pending_count()).await?;
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() && pending >= 20 {
        let bar = indicatif::ProgressBar::new(pending);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} conversions answered ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Arc::new(Bar(bar))
    } else {
        Arc::new(())
    };
    let client = Arc::new(
        Client::new(&config.impact, &sid, token)
            .map_err(|e| CommandError::Message(e.to_string()))?,
    );
    let pacer = Arc::new(Pacer::new(config.impact.requests_per_hour));
    let opts = submit::Options {
        max_in_flight: config.impact.max_in_flight,
        give_up_after: Some(Duration::from_secs(config.impact.give_up_after_secs)),
        retry_cap: Duration::from_secs(config.impact.retry_cap_secs),
        batch: 64,
    };
    let summary =
        submit::send_pending(ledger.clone(), client, pacer, opts, cancel, progress, None).await?;

    // Finish: rejects files and archive for every file whose conversions are all final.
    for s in &mut seen {
        let archive = deliverer.in_drop_dir(&s.path);
        if let Some(Intake::Duplicate { .. }) = &s.intake {
            if archive && s.path.exists() {
                let d = deliverer.clone();
                let (id, p) = (s.file_id, s.path.clone());
                s.archived_duplicate =
                    tokio::task::spawn_blocking(move || d.archive_duplicate(id, &p))
                        .await
                        .ok()
                        .and_then(Result::ok);
            }
            continue;
        }
        let d = deliverer.clone();
        let (id, p) = (s.file_id, s.path.clone());
        s.finished = tokio::task::spawn_blocking(move || d.finish(id, &p, archive))
            .await
            .map_err(|e| CommandError::Message(format!("finishing failed: {e}")))?
            .map_err(|e| CommandError::Message(e.to_string()))?;
    }

    // Report.
    let mut problems = unreadable > 0;
    for s in &seen {
        let stats = submit::with_ledger(&ledger, {
            let id = s.file_id;
            move |l| l.file_stats(Some(id), 1)
        })
        .await?;
        let Some(stats) = stats.into_iter().next() else {
            continue;
        };
        problems |= write_file_line(out, s, &stats)?;
    }
    let left = submit::with_ledger(&ledger, |l| l.pending_count()).await?;
    writeln!(out, "{}", summary_line(request.command, &summary, left))?;
    let text = format!("{summary:?}; pending {left}");
    submit::with_ledger(&ledger, move |l| l.finish_run(run_id, &text)).await?;
    if let Some(fatal) = &summary.fatal {
        writeln!(out, "error: {fatal}")?;
        return Ok(Outcome::Fatal);
    }
    Ok(if problems || left > 0 || summary.rejected > 0 {
        Outcome::Problems
    } else {
        Outcome::Clean
    })
}

/// `send --dry-run`: what `send` would do, planned against the ledger read-only; nothing is
/// sent or recorded.
pub fn dry_run(
    config: &Config,
    files: &[PathBuf],
    mode: Mode,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    use crate::impact::form;
    use std::collections::{HashMap, HashSet};
    let ledger = match Ledger::open_read(&config.ledger.path) {
        Ok(l) => Some(l),
        Err(crate::ledger::LedgerError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let stages = pipeline::Stages::from_config(config);
    let mut outcome = Outcome::Clean;
    for path in pipeline::expand_paths(files, &config.source.ignore)
        .map_err(|e| CommandError::Message(e.to_string()))?
    {
        let (hash, _) = crate::archive::content_hash(&path)
            .map_err(|e| CommandError::Message(format!("{}: {e}", path.display())))?;
        let seen = match &ledger {
            Some(l) => l.file_by_hash(&hash)?,
            None => None,
        };
        if let (Some(f), Mode::Normal) = (&seen, mode) {
            writeln!(
                out,
                "{}: same content as {} (file #{}): nothing would be sent",
                path.display(),
                f.path,
                f.id
            )?;
            continue;
        }
        let mut conversions = Vec::new();
        let report = match pipeline::process_file(&stages, &path, &mut |c| {
            let body = form::encode(&c);
            conversions.push((c, body));
        }) {
            Ok(r) => r,
            Err(e) => {
                writeln!(out, "error: {e}")?;
                outcome = Outcome::Fatal;
                continue;
            }
        };
        let keys: Vec<_> = conversions.iter().map(|(c, _)| c.key()).collect();
        let known = match &ledger {
            Some(l) => l.known(&keys)?,
            None => HashMap::new(),
        };
        let p = crate::plan::plan(
            &conversions,
            &report.invalid,
            &report.filtered,
            &[],
            &known,
            &HashSet::new(),
            mode,
        );
        for c in &p.send {
            writeln!(out, "# would send {}", c.key)?;
            writeln!(out, "{}", c.body)?;
        }
        writeln!(
            out,
            "{}: {} rows: {} conversions would be sent, {} already sent, {} already pending, {} rejected before, {} changed after sent, {} orders invalid, {} filtered; nothing was sent",
            path.display(),
            report.rows,
            p.send.len(),
            p.already_sent,
            p.already_pending,
            p.already_rejected,
            p.changed.len(),
            report.invalid.len(),
            report.filtered.len()
        )?;
        if !report.is_clean() {
            outcome = outcome.and(Outcome::Problems);
        }
    }
    Ok(outcome)
}

fn lines_text(lines: &[crate::model::LineRef]) -> String {
    format!(
        "line{} {}",
        if lines.len() == 1 { "" } else { "s" },
        super::check::line_ranges(lines.iter().map(|l| l.line))
    )
}

fn summary_line(command: &str, s: &Summary, pending: u64) -> String {
    let mut line = format!(
        "{command}: {} request{}: {} accepted, {} rejected, {} retried, {} rate-limited; {} \
         conversion{} pending",
        s.requests,
        if s.requests == 1 { "" } else { "s" },
        s.accepted,
        s.rejected,
        s.retried,
        s.rate_limited,
        pending,
        if pending == 1 { "" } else { "s" },
    );
    if s.gave_up && pending > 0 {
        line.push_str(" (impact stayed unavailable; they go on the next run)");
    }
    if s.interrupted {
        line.push_str(" (interrupted)");
    }
    line
}

/// One line per file; returns whether the file has rows that need attention.
fn write_file_line(out: &mut dyn Write, s: &Seen, st: &FileStats) -> std::io::Result<bool> {
    let name = s.path.display();
    if let Some(Intake::Duplicate { of, .. }) = &s.intake {
        write!(
            out,
            "{name}: same content as {} (file #{}, first seen {}): nothing sent",
            of.path, of.id, of.first_seen
        )?;
        if let Some(p) = &s.archived_duplicate {
            write!(out, "; moved to {}", p.display())?;
        }
        writeln!(out)?;
        return Ok(false);
    }
    let mut parts = Vec::new();
    let conv = |n: u64| format!("{n} conversion{}", if n == 1 { "" } else { "s" });
    if st.conversions_accepted > 0 {
        parts.push(format!("{} accepted", conv(st.conversions_accepted)));
    }
    if st.conversions_rejected > 0 {
        parts.push(format!(
            "{} rejected by impact",
            conv(st.conversions_rejected)
        ));
    }
    if st.conversions_pending > 0 {
        parts.push(format!("{} pending", conv(st.conversions_pending)));
    }
    if st.invalid_orders > 0 || st.rows_invalid > 0 {
        parts.push(format!(
            "{} order{} invalid ({} rows)",
            st.invalid_orders,
            if st.invalid_orders == 1 { "" } else { "s" },
            st.rows_invalid
        ));
    }
    // Rows that were not sent for a reason of their own, in report order.
    let row_outcomes = [
        (st.rows_already_sent, "rows already sent"),
        (
            st.rows_changed_after_sent,
            "rows of orders changed after they were sent (adjust them in impact)",
        ),
        (st.rows_already_pending, "rows already on their way"),
        (st.rows_filtered, "rows filtered"),
        (
            st.rows_already_rejected,
            "rows rejected before with the same content",
        ),
    ];
    for (n, what) in row_outcomes {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if parts.is_empty() {
        parts.push("nothing to send".into());
    }
    write!(out, "{name}: {} rows: {}", st.rows, parts.join(", "))?;
    if let Some(Intake::Resumed { .. }) = &s.intake {
        write!(out, " (resumed from an earlier run)")?;
    }
    if let Some(f) = &s.finished {
        if let Some(r) = &f.rejects {
            write!(out, "; {} rows to fix in {}", f.rejected_rows, r.display())?;
        }
        if let Some(a) = &f.archived_to {
            write!(out, "; moved to {}", a.display())?;
        }
        if f.changed_on_disk {
            write!(
                out,
                "; the file changed since it was read and stays for the next run"
            )?;
        }
    }
    writeln!(out)?;
    if let Some(Intake::Planned { report, plan, .. }) = &s.intake {
        for inv in &report.invalid {
            for p in &inv.problems {
                writeln!(out, "  invalid: {}", location(Path::new(&s.path), p))?;
            }
        }
        for p in &report.stray_problems {
            writeln!(out, "  invalid: {}", location(Path::new(&s.path), p))?;
        }
        for f in &report.filtered {
            writeln!(
                out,
                "  OrderId {} ({}) {}",
                f.order_id,
                lines_text(&f.lines),
                f.reason
            )?;
        }
        for c in &plan.changed {
            writeln!(
                out,
                "  {}: order changed after it was sent; adjust it in impact (lines {})",
                c.key,
                c.lines
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
    }
    Ok(st.rows_rejected
        + st.rows_pending
        + st.rows_invalid
        + st.rows_changed_after_sent
        + st.rows_already_rejected
        > 0)
}
