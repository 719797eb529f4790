//! `impact-drop status`: what the ledger knows, enough to account for every row of every file.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::{CommandError, Outcome};
use crate::config::Config;
use crate::ledger::{
    ConvState, FileState, FileStats, FollowCounts, Ledger, NotSent, RecentError, Replay, StateName,
};

#[derive(Serialize)]
struct LastFatal {
    at: String,
    message: String,
}

#[derive(Serialize)]
struct Status {
    ledger: String,
    ledger_bytes: u64,
    /// Files by state: every state, 0 when none.
    files: BTreeMap<&'static str, u64>,
    /// Conversions by state: every state, 0 when none.
    conversions: BTreeMap<&'static str, u64>,
    oldest_pending: Option<String>,
    /// How long the pending backlog takes at the configured budget, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_eta: Option<String>,
    /// The same, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_eta_secs: Option<u64>,
    /// Whether accepted conversions are followed up at impact, in words.
    follow_up: String,
    /// What impact did with accepted conversions, as follow-ups found (all files).
    at_impact: FollowCounts,
    /// The fatal condition that stopped sending last, while it holds (a 401, a 403, a wrong
    /// account): `{"at", "message"}`.
    last_fatal: Option<LastFatal>,
    recent_errors: Vec<RecentError>,
    /// Rows not sent for a reason of their own (invalid, filtered, …), latest files first;
    /// `fixed_by` names the later file an invalid row's order was accepted from.
    not_sent: Vec<NotSent>,
    /// `send --replay` runs, newest first.
    replays: Vec<Replay>,
    per_file: Vec<FileStats>,
}

pub fn run(
    config: &Config,
    json: bool,
    limit: usize,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    let ledger = Ledger::open_read(&config.ledger.path)?;
    let pending = ledger.pending_count()?;
    let eta = (pending > 0)
        .then(|| crate::impact::pacing::Pacer::new(config.impact.requests_per_hour).eta(pending))
        .flatten();
    let partner = config.impact.endpoint == crate::config::Endpoint::Partner;
    let said = ledger.meta(crate::followup::PARTNER_KEY)?;
    let follow_up = if !config.follow_up.enabled {
        "off ([follow_up] enabled = false)".to_owned()
    } else if partner && crate::followup::known_unavailable(said.as_deref()) {
        format!(
            "not available for this partner account ({}); impact-drop does not ask again",
            said.unwrap_or_default()
        )
    } else if partner && said.is_none() {
        "on (impact is asked once whether this partner account offers it)".to_owned()
    } else {
        "on".to_owned()
    };
    let status = Status {
        follow_up,
        at_impact: ledger.follow_counts(None)?,
        ledger: config.ledger.path.display().to_string(),
        ledger_bytes: ledger.size_on_disk(),
        files: named(ledger.counts_by_state::<FileState>()?),
        conversions: named(ledger.counts_by_state::<ConvState>()?),
        oldest_pending: ledger.oldest_pending()?,
        pending_eta: eta.as_ref().map(|(_, t)| t.clone()),
        pending_eta_secs: eta.as_ref().map(|(d, _)| d.as_secs()),
        last_fatal: ledger
            .last_fatal()?
            .map(|(at, message)| LastFatal { at, message }),
        recent_errors: ledger.recent_errors(10)?,
        not_sent: ledger.not_sent(50)?,
        replays: ledger.replays(10)?,
        per_file: ledger.file_stats(None, limit)?,
    };
    if json {
        super::write_json(out, &status)?;
        return Ok(Outcome::Clean);
    }
    let list = |v: &BTreeMap<&'static str, u64>, order: &[&'static str]| {
        let parts: Vec<String> = order
            .iter()
            .filter_map(|s| v.get(s).filter(|n| **n > 0).map(|n| format!("{n} {s}")))
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    };
    let file_order: Vec<&'static str> = FileState::ALL.iter().map(|s| s.sql()).collect();
    let conv_order: Vec<&'static str> = ConvState::ALL.iter().map(|s| s.sql()).collect();
    writeln!(
        out,
        "ledger: {} ({:.1} MB)",
        status.ledger,
        status.ledger_bytes as f64 / 1e6
    )?;
    writeln!(out, "files: {}", list(&status.files, &file_order))?;
    writeln!(
        out,
        "conversions: {}",
        list(&status.conversions, &conv_order)
    )?;
    if let Some(p) = &status.oldest_pending {
        writeln!(out, "oldest pending since: {p}")?;
    }
    if let Some(eta) = &status.pending_eta {
        writeln!(out, "{eta}")?;
    }
    writeln!(out, "follow-up: {}", status.follow_up)?;
    if let Some(t) = super::deliver::at_impact_text(&status.at_impact) {
        writeln!(out, "at impact: {t}")?;
    }
    if let Some(f) = &status.last_fatal {
        writeln!(
            out,
            "sending stopped at {}: {} (nothing is sent until it is fixed; {} pending)",
            f.at,
            f.message,
            status.conversions.get("pending").copied().unwrap_or(0)
        )?;
    }
    if !status.recent_errors.is_empty() {
        writeln!(out, "last errors:")?;
        for e in &status.recent_errors {
            writeln!(
                out,
                "  {} OrderId {} ({}): {}",
                e.at,
                e.order_id,
                e.state,
                e.error.replace('\n', "; ")
            )?;
        }
    }
    let (fixed, open): (Vec<&NotSent>, Vec<&NotSent>) =
        status.not_sent.iter().partition(|n| n.fixed_by.is_some());
    if !open.is_empty() {
        writeln!(out, "rows not sent (latest files first, at most 50):")?;
        for n in open {
            writeln!(
                out,
                "  {}:{}: {}: {}",
                n.file,
                n.line,
                n.outcome.replace('_', " "),
                n.reason
            )?;
        }
    }
    if !fixed.is_empty() {
        writeln!(
            out,
            "rows fixed since (their order was accepted from a later file):"
        )?;
        for n in fixed {
            writeln!(
                out,
                "  {}:{}: was {}; accepted from {}",
                n.file,
                n.line,
                n.outcome.replace('_', " "),
                n.fixed_by.as_deref().unwrap_or_default()
            )?;
        }
    }
    if !status.replays.is_empty() {
        writeln!(out, "replays (newest first):")?;
        for r in &status.replays {
            writeln!(
                out,
                "  {} by {}: {} ({} queued{})",
                r.at,
                r.user,
                r.file,
                r.queued,
                if r.resend_accepted {
                    ", accepted ones resent"
                } else {
                    ""
                }
            )?;
        }
    }
    writeln!(out, "files (newest first):")?;
    for f in &status.per_file {
        write!(
            out,
            "  #{} {} [{}] {}",
            f.id,
            f.path,
            f.state,
            super::count(f.rows, "row")
        )?;
        if let Some(of) = f.duplicate_of {
            writeln!(out, ": same content as file #{of}, nothing sent")?;
            continue;
        }
        let mut parts: Vec<String> = f
            .by_state
            .nonzero()
            .map(|(state, n)| format!("{n} {}", state.label()))
            .collect();
        if f.pruned_rows > 0 {
            parts.push(format!(
                "{} rows pruned (older than keep_days: accounted for, no longer itemised)",
                f.pruned_rows
            ));
        }
        write!(
            out,
            ": {}",
            if parts.is_empty() {
                "none".into()
            } else {
                parts.join(", ")
            }
        )?;
        let unaccounted = f.rows.saturating_sub(f.accounted());
        if unaccounted > 0 && f.state != FileState::Processing.sql() {
            write!(out, "; {unaccounted} rows UNACCOUNTED")?;
        }
        if let Some(t) = super::deliver::at_impact_text(&f.at_impact) {
            write!(out, "; at impact: {t}")?;
        }
        if let Some(r) = &f.rejects_path {
            write!(out, "; rejects: {r}")?;
        }
        if let Some(p) = f
            .failed_at_impact_path
            .as_ref()
            .filter(|_| f.at_impact.get(crate::state::FollowState::Failed) > 0)
        {
            write!(out, "; failed at impact: {p}")?;
        }
        if let Some(a) = &f.archived_to {
            write!(out, "; moved to {a}")?;
        }
        writeln!(out)?;
    }
    Ok(Outcome::Clean)
}

/// Every state's name with its count (0 when none).
fn named<S: StateName>(counts: Vec<(S, u64)>) -> BTreeMap<&'static str, u64> {
    S::ALL
        .iter()
        .map(|s| {
            let n = counts.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n);
            (s.sql(), n)
        })
        .collect()
}
