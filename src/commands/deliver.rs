//! `impact-drop run` and `impact-drop send`: files → ledger → impact → archive, with a report.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{location, CommandError, Outcome};
use crate::config::Config;
use crate::ledger::FileStats;
pub use crate::pipeline::Request;
use crate::pipeline::{self, Intake, Seen};
use crate::plan::Mode;
use crate::state::{ConvState, RowState, StateName};
use crate::submit::{Progress, Summary};

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
    rt.block_on(async {
        super::stop_on_signals(cancel.clone());
        deliver(config, request, cancel, out).await
    })
}

/// The progress bar: answers so far, the rate achieved and the time the rest takes at the
/// account's budget, in numbers rounded for people.
struct Bar {
    bar: indicatif::ProgressBar,
    per_hour: u32,
    start: std::time::Instant,
}

impl Bar {
    fn tell(&self) {
        use crate::impact::pacing::{backlog_eta, grouped, human_duration};
        let done = self.bar.position();
        let left = self.bar.length().unwrap_or(0).saturating_sub(done);
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let achieved = if rate >= 1.0 {
            format!("{rate:.0}/s")
        } else {
            format!("{:.0}/min", rate * 60.0)
        };
        let eta = match backlog_eta(left, self.per_hour) {
            Some(eta) => format!(
                "about {} left at {} requests/hour",
                human_duration(eta),
                grouped(u64::from(self.per_hour))
            ),
            None if rate > 0.0 => format!(
                "about {} left",
                human_duration(std::time::Duration::from_secs_f64(left as f64 / rate))
            ),
            None => String::new(),
        };
        self.bar.set_message(if done == 0 {
            eta
        } else {
            format!("{achieved} achieved, {eta}")
        });
    }
}

impl Progress for Bar {
    fn answered(&self, _accepted: bool) {
        self.bar.inc(1);
        self.tell();
    }
}

/// The delivery itself, for callers that already run tokio (the demo), with its report.
pub async fn deliver(
    config: &Config,
    request: Request,
    cancel: CancellationToken,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
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
    let command = request.command;
    let progress = |pending: u64, per_hour: u32| -> Arc<dyn Progress> {
        if std::io::stderr().is_terminal() && pending >= 20 {
            let bar = indicatif::ProgressBar::new(pending);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} conversions answered ({msg})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let b = Bar {
                bar,
                per_hour,
                start: std::time::Instant::now(),
            };
            b.tell();
            Arc::new(b)
        } else {
            Arc::new(())
        }
    };
    let done = pipeline::deliver(config, request, cancel, progress).await?;

    // Report.
    let mut problems = !done.unreadable.is_empty();
    for e in &done.unreadable {
        writeln!(out, "error: {e}")?;
    }
    for s in &done.seen {
        if let Some(stats) = &s.stats {
            problems |= write_file_line(out, s, stats)?;
        }
    }
    let summary = &done.summary;
    writeln!(out, "{}", summary_line(command, summary, done.pending))?;
    if let Some(f) = done.followed.as_ref().filter(|f| {
        f.asked > 0 || f.unknown > 0 || f.unavailable.is_some() || done.at_impact.waiting > 0
    }) {
        writeln!(out, "{}", follow_line(f, &done.at_impact))?;
        problems |= f.failed > 0 || f.unknown > 0;
    }
    if let Some(fatal) = &summary.fatal {
        writeln!(out, "error: {fatal}")?;
        return Ok(Outcome::Fatal);
    }
    if let Some(denied) = done.followed.as_ref().and_then(|f| f.denied.as_ref()) {
        writeln!(out, "error: {denied}")?;
        return Ok(Outcome::Fatal);
    }
    Ok(if problems || done.pending > 0 || summary.rejected > 0 {
        Outcome::Problems
    } else {
        Outcome::Clean
    })
}

/// `send --dry-run`: what `send` would do, through the same intake, planned against the
/// ledger read-only; nothing is sent or recorded.
pub fn dry_run(
    config: &Config,
    files: &[PathBuf],
    mode: Mode,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    let mut outcome = Outcome::Clean;
    for (path, result) in pipeline::dry_run(config, files, mode)? {
        let shown = path.display();
        match result {
            Err(e) => {
                writeln!(out, "error: {e}")?;
                outcome = Outcome::Fatal;
            }
            Ok(Intake::Duplicate { of, .. }) => writeln!(
                out,
                "{shown}: same content as {} (file #{}): nothing would be sent",
                of.path, of.id
            )?,
            Ok(Intake::Resumed { file_id }) => writeln!(
                out,
                "{shown}: already taken in (file #{file_id}); its pending conversions go from the ledger"
            )?,
            Ok(Intake::Planned { report, plan, .. }) => {
                for c in &plan.would_send {
                    writeln!(out, "# would send {}", c.key)?;
                    writeln!(out, "{}", c.body)?;
                }
                writeln!(
                    out,
                    "{shown}: {} rows: {} conversions would be sent, {} already sent, {} already pending, {} rejected before, {} changed after sent, {} orders invalid, {} filtered; nothing was sent",
                    report.rows,
                    plan.queued,
                    plan.already_sent,
                    plan.already_pending,
                    plan.already_rejected,
                    plan.changed.len(),
                    report.invalid.len(),
                    report.filtered.len()
                )?;
                if !report.is_clean() {
                    outcome = outcome.and(Outcome::Problems);
                }
            }
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
    if s.uncertain > 0 {
        line.push_str(&format!(
            "; {} answer{} not impact's or never came (those conversions may be at impact)",
            s.uncertain,
            if s.uncertain == 1 { "" } else { "s" }
        ));
    }
    if s.gave_up && pending > 0 {
        line.push_str(" (impact stayed unavailable; they go on the next run)");
    }
    if s.interrupted {
        line.push_str(" (interrupted)");
    }
    line
}

/// What this run's follow-up found, and what is still queued at impact.
fn follow_line(f: &crate::followup::Summary, all: &crate::ledger::FollowCounts) -> String {
    if let Some(why) = &f.unavailable {
        return format!(
            "follow-up: not available for this account ({why}); impact-drop will not ask again"
        );
    }
    let mut line = format!(
        "follow-up: {} question{} to impact: {} processed, {} failed at impact, {} absorbed by impact's dedup, {} unknown; {} still queued at impact",
        f.asked,
        if f.asked == 1 { "" } else { "s" },
        f.processed,
        f.failed,
        f.absorbed,
        f.unknown,
        all.waiting
    );
    if all.waiting > 0 {
        line.push_str(" (asked again by the next run or by watch)");
    }
    if let Some(d) = &f.denied {
        line.push_str(&format!("; stopped: {d}"));
    }
    line
}

/// What impact did with a file's conversions, in words (`None` when nothing was followed).
pub fn at_impact_text(c: &crate::ledger::FollowCounts) -> Option<String> {
    use crate::state::FollowState;
    if c.total() == 0 {
        return None;
    }
    let mut parts = Vec::new();
    for s in FollowState::ALL {
        let n = c.get(*s);
        if n == 0 {
            continue;
        }
        if *s == FollowState::Failed && !c.failed_by_reason.is_empty() {
            let reasons: Vec<String> = c
                .failed_by_reason
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            parts.push(format!("{n} {} ({})", s.label(), reasons.join(", ")));
        } else {
            parts.push(format!("{n} {}", s.label()));
        }
    }
    Some(parts.join(", "))
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
    for c in ConvState::ALL {
        let n = st.conversions.get(*c);
        if n > 0 {
            parts.push(format!("{} {}", conv(n), c.label()));
        }
    }
    let invalid_rows = st
        .by_state
        .get(RowState::Line(crate::state::LineOutcome::Invalid));
    if st.invalid_orders > 0 {
        parts.push(format!(
            "{} order{} invalid ({} rows)",
            st.invalid_orders,
            if st.invalid_orders == 1 { "" } else { "s" },
            invalid_rows
        ));
    } else if invalid_rows > 0 {
        parts.push(format!("{invalid_rows} rows invalid"));
    }
    // Rows that were not sent for a reason of their own, in report order.
    for (state, n) in st.by_state.nonzero() {
        if let RowState::Line(o) = state {
            if o != crate::state::LineOutcome::Invalid {
                parts.push(format!("{n} {}", o.label()));
            }
        }
    }
    if parts.is_empty() {
        parts.push("nothing to send".into());
    }
    write!(out, "{name}: {} rows: {}", st.rows, parts.join(", "))?;
    if let Some(Intake::Resumed { .. }) = &s.intake {
        write!(out, " (resumed from an earlier run)")?;
    }
    if let Some(t) = at_impact_text(&st.at_impact) {
        write!(out, "; at impact: {t}")?;
    }
    if let Some(p) = st
        .failed_at_impact_path
        .as_ref()
        .filter(|_| st.at_impact.failed > 0)
    {
        write!(out, "; rows that failed at impact in {p}")?;
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
        for p in &report.file_problems {
            writeln!(
                out,
                "  file refused, every row kept for fixing: {}",
                location(Path::new(&s.path), p)
            )?;
        }
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
    Ok(st.by_state.needing_attention() > 0)
}
