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
use crate::state::{ConvState, FollowState, RowState, StateName};
use crate::submit::{Progress, Summary};

/// Runs a delivery from the CLI (its own runtime); `json` prints the report as one JSON
/// document instead of lines.
pub fn run(
    config: &Config,
    request: Request,
    json: bool,
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
        deliver(config, request, cancel, json, out).await
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

    fn queued(&self, n: u64) {
        self.bar.inc_length(n);
        // Shown once there are enough to be worth a bar.
        if self.bar.is_hidden() && self.bar.length().unwrap_or(0) >= 20 {
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        self.tell();
    }
}

/// The delivery itself, for callers that already run tokio (the demo), with its report.
pub async fn deliver(
    config: &Config,
    request: Request,
    cancel: CancellationToken,
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    if let (
        Mode::Replay {
            resend_accepted: true,
        },
        false,
    ) = (request.mode, json)
    {
        writeln!(
            out,
            "warning: --resend-accepted sends conversions impact already accepted once more; \
             outside impact's deduplication window each one pays the partner a second commission"
        )?;
    }
    let command = request.command;
    let progress = |pending: u64, per_hour: u32| -> Arc<dyn Progress> {
        if std::io::stderr().is_terminal() && !json {
            // Files are read as conversions are sent: the length grows as they are recorded.
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(pending),
                if pending >= 20 {
                    indicatif::ProgressDrawTarget::stderr()
                } else {
                    indicatif::ProgressDrawTarget::hidden()
                },
            );
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

    if json {
        let outcome = outcome_of(&done);
        super::write_json(out, &JsonReport::of(command, &done, outcome))?;
        return Ok(outcome);
    }
    // Report.
    for e in &done.unreadable {
        writeln!(out, "error: {e}")?;
    }
    for s in &done.seen {
        if let Some(stats) = &s.stats {
            write_file_line(out, s, stats)?;
        }
    }
    let summary = &done.summary;
    writeln!(out, "{}", summary_line(command, summary, done.pending))?;
    if let Some(f) = done.followed.as_ref().filter(|f| {
        f.asked > 0
            || f.unknown > 0
            || f.unavailable.is_some()
            || done.at_impact.get(FollowState::Waiting) > 0
    }) {
        writeln!(out, "{}", follow_line(f, &done.at_impact))?;
    }
    // A fatal condition is said once, on stderr (as cargo does), even with --quiet.
    if let Some(fatal) = fatal_of(&done) {
        eprintln!("impact-drop: error: {fatal}");
    }
    Ok(outcome_of(&done))
}

/// How a delivery ends: fatal (credentials, account), problems (something rejected,
/// invalid, failed at impact, unknown or still pending), or clean.
fn outcome_of(done: &pipeline::Delivered) -> Outcome {
    let followed = done.followed.as_ref();
    if fatal_of(done).is_some() {
        return Outcome::Fatal;
    }
    let rows_need_work = done
        .seen
        .iter()
        .filter_map(|s| s.stats.as_ref())
        .any(|st| st.by_state.needing_attention() > 0);
    let problems = !done.unreadable.is_empty()
        || rows_need_work
        || done.pending > 0
        || done.summary.rejected > 0
        || followed.is_some_and(|f| f.failed > 0 || f.unknown > 0);
    if problems {
        Outcome::Problems
    } else {
        Outcome::Clean
    }
}

/// What stopped sending or following up for good (credentials, account), if anything did.
fn fatal_of(done: &pipeline::Delivered) -> Option<&String> {
    (done.summary.fatal.as_ref()).or_else(|| done.followed.as_ref()?.denied.as_ref())
}

/// `run --json` and `send --json`: one document (documented in the README).
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    command: &'a str,
    files: Vec<JsonFile<'a>>,
    /// Files that could not be taken in, with why.
    unreadable: Vec<String>,
    /// What sending did.
    sent: &'a Summary,
    /// Conversions still pending when the run ended.
    pending: u64,
    /// What this run's follow-up found (`null`: none ran).
    follow_up: Option<&'a crate::followup::Summary>,
    /// Follow-up outcomes over the whole ledger.
    at_impact: &'a crate::ledger::FollowCounts,
    exit: u8,
}

#[derive(serde::Serialize)]
struct JsonFile<'a> {
    path: String,
    /// `planned` (read now), `resumed` (read by an earlier run that stopped), `duplicate`
    /// (same content as an earlier file), or `earlier` (an earlier run's file finished now).
    intake: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate_of: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<&'a FileStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    moved_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejects: Option<String>,
    file_problems: &'a [crate::model::Problem],
    invalid: &'a [crate::validate::Invalid],
    row_problems: &'a [crate::model::Problem],
    filtered: &'a [crate::intake::Filtered],
    /// Orders changed after they were sent: `(key, lines)`.
    changed: Vec<String>,
}

impl<'a> JsonReport<'a> {
    fn of(command: &'a str, done: &'a pipeline::Delivered, outcome: Outcome) -> JsonReport<'a> {
        let files = done
            .seen
            .iter()
            .map(|s| {
                let (intake, report, plan) = match &s.intake {
                    Some(Intake::Planned { report, plan, .. }) => {
                        ("planned", Some(report), Some(plan))
                    }
                    Some(Intake::Duplicate { .. }) => ("duplicate", None, None),
                    Some(Intake::Resumed { .. }) => ("resumed", None, None),
                    None => ("earlier", None, None),
                };
                let empty: &[crate::model::Problem] = &[];
                JsonFile {
                    path: s.path.display().to_string(),
                    intake,
                    duplicate_of: match &s.intake {
                        Some(Intake::Duplicate { of, .. }) => Some(of.path.as_str()),
                        _ => None,
                    },
                    stats: s.stats.as_ref(),
                    moved_to: s
                        .finished
                        .as_ref()
                        .and_then(|f| f.archived_to.as_ref())
                        .or(s.archived_duplicate.as_ref())
                        .map(|p| p.display().to_string()),
                    rejects: s
                        .finished
                        .as_ref()
                        .and_then(|f| f.rejects.as_ref())
                        .map(|p| p.display().to_string()),
                    file_problems: report.map_or(empty, |r| &r.file_problems),
                    invalid: report.map_or(&[], |r| &r.invalid),
                    row_problems: report.map_or(empty, |r| &r.stray_problems),
                    filtered: report.map_or(&[], |r| &r.filtered),
                    changed: plan.map_or_else(Vec::new, |p| {
                        p.changed.iter().map(|c| c.key.to_string()).collect()
                    }),
                }
            })
            .collect();
        JsonReport {
            command,
            files,
            unreadable: done.unreadable.iter().map(ToString::to_string).collect(),
            sent: &done.summary,
            pending: done.pending,
            follow_up: done.followed.as_ref(),
            at_impact: &done.at_impact,
            exit: outcome.code(),
        }
    }
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
    let numbers: Vec<u64> = lines.iter().map(|l| l.line).collect();
    lines_text_of(&numbers)
}

/// `line 4`, `lines 4-6, 32`.
fn lines_text_of(lines: &[u64]) -> String {
    format!(
        "line{} {}",
        super::plural(lines.len() as u64),
        super::check::line_ranges(lines.iter().copied())
    )
}

/// The most lines of one kind a report lists per file; the rest are counted (cargo's "and N
/// more"), and `status` or `check` lists them all.
const LIST_MAX: usize = 10;

/// Writes up to [`LIST_MAX`] items, indented, then how many more there are.
fn list_capped(
    out: &mut dyn Write,
    items: impl Iterator<Item = String>,
    what: &str,
) -> std::io::Result<()> {
    let mut more = 0u64;
    for (i, item) in items.enumerate() {
        if i < LIST_MAX {
            writeln!(out, "  {item}")?;
        } else {
            more += 1;
        }
    }
    if more > 0 {
        writeln!(out, "  … and {more} more {what} (`--json` lists them all)")?;
    }
    Ok(())
}

fn summary_line(command: &str, s: &Summary, pending: u64) -> String {
    let mut line = format!(
        "{command}: {} request{}: {} accepted, {} rejected, {} retried, {} rate-limited; {} \
         conversion{} pending",
        s.requests,
        super::plural(s.requests),
        s.accepted,
        s.rejected,
        s.retried,
        s.rate_limited,
        pending,
        super::plural(pending),
    );
    if s.uncertain > 0 {
        line.push_str(&format!(
            "; {} answer{} not impact's or never came (those conversions may be at impact)",
            s.uncertain,
            super::plural(s.uncertain)
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
        super::plural(f.asked),
        f.processed,
        f.failed,
        f.absorbed,
        f.unknown,
        all.get(FollowState::Waiting)
    );
    if all.get(FollowState::Waiting) > 0 {
        line.push_str(" (asked again by the next run or by watch)");
    }
    if f.denied.is_some() {
        line.push_str("; follow-ups stopped (the error says why)");
    }
    line
}

/// What impact did with a file's conversions, in words (`None` when nothing was followed).
pub fn at_impact_text(c: &crate::ledger::FollowCounts) -> Option<String> {
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

/// One line per file, then its problems (at most [`LIST_MAX`] of each kind).
fn write_file_line(out: &mut dyn Write, s: &Seen, st: &FileStats) -> std::io::Result<()> {
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
        return Ok(());
    }
    let mut parts = Vec::new();
    let conv = |n: u64| super::count(n, "conversion");
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
            "{} invalid ({})",
            super::count(st.invalid_orders, "order"),
            super::count(invalid_rows, "row")
        ));
    } else if invalid_rows > 0 {
        parts.push(format!("{} invalid", super::count(invalid_rows, "row")));
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
    write!(
        out,
        "{name}: {}: {}",
        super::count(st.rows, "row"),
        parts.join(", ")
    )?;
    if let Some(Intake::Resumed { .. }) = &s.intake {
        write!(out, " (resumed from an earlier run)")?;
    }
    if let Some(t) = at_impact_text(&st.at_impact) {
        write!(out, "; at impact: {t}")?;
    }
    if let Some(p) = st
        .failed_at_impact_path
        .as_ref()
        .filter(|_| st.at_impact.get(FollowState::Failed) > 0)
    {
        write!(out, "; rows that failed at impact in {p}")?;
    }
    if let Some(f) = &s.finished {
        if let Some(r) = &f.rejects {
            write!(
                out,
                "; {} to fix in {}",
                super::count(f.rejected_rows as u64, "row"),
                r.display()
            )?;
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
        let file = Path::new(&s.path);
        let mut lines: Vec<(u64, String)> = Vec::new();
        for p in &report.file_problems {
            lines.push((
                p.line.unwrap_or(0),
                format!(
                    "file refused, every row kept for fixing: {}",
                    location(file, p)
                ),
            ));
        }
        for inv in &report.invalid {
            for p in &inv.problems {
                let at = p.line.or(inv.lines.first().map(|l| l.line)).unwrap_or(0);
                lines.push((at, format!("invalid: {}", location(file, p))));
            }
        }
        for p in &report.stray_problems {
            lines.push((
                p.line.unwrap_or(0),
                format!("invalid: {}", location(file, p)),
            ));
        }
        // In file order, whatever order the orders completed in.
        lines.sort_by_key(|(at, _)| *at);
        list_capped(out, lines.into_iter().map(|(_, l)| l), "problems")?;
        list_capped(
            out,
            report.filtered.iter().map(|f| {
                format!(
                    "OrderId {} ({}) {}",
                    f.order_id,
                    lines_text(&f.lines),
                    f.reason
                )
            }),
            "filtered orders",
        )?;
        list_capped(
            out,
            plan.changed.iter().map(|c| {
                format!(
                    "{}: order changed after it was sent; adjust it in impact ({})",
                    c.key,
                    lines_text_of(&c.lines)
                )
            }),
            "changed orders",
        )?;
    }
    Ok(())
}
