//! Follow-up (async): asks impact what became of each accepted conversion (`GET` its
//! QueuedUri, impact's `APISubmissions`) until impact says `Complete`, and records the final
//! outcome: processed, failed at impact (with `ErrorType` and `ErrorReason`), absorbed by
//! impact's dedup, or unknown after `give_up_after_days`.
//!
//! Never at the expense of sending: every question waits for a slot the pacer has spare
//! ([`Pacer::wait_spare`]), the wait doubles while impact still has a conversion queued, a
//! 429 pauses everyone, and a 401/403 stops follow-ups as it stops sends. On the partner
//! endpoint (no documented GET) the first question is a probe: a 404, 405 or 403 records
//! that this account has no follow-up, and impact is never asked again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Endpoint, FollowUpConfig};
use crate::impact::client::Client;
use crate::impact::pacing::Pacer;
use crate::impact::response::Submission;
use crate::ledger::{
    later, now_text, with_ledger, FollowDue, FollowState, FollowUpdate, LedgerError, SharedLedger,
};

/// The ledger's `meta` key that says whether the partner account offers follow-up.
pub const PARTNER_KEY: &str = "follow_up.partner";

/// The value `PARTNER_KEY` starts with once impact said no.
pub const UNAVAILABLE: &str = "unavailable";

/// How long follow-up may go on.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// `run`: until nothing is waiting, or nothing more is due before this instant.
    Deadline(Instant),
    /// `watch`: until cancelled.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub endpoint: Endpoint,
    pub first_check: Duration,
    pub max_interval: Duration,
    pub give_up_after: chrono::Duration,
}

impl Options {
    pub fn from_config(endpoint: Endpoint, c: &FollowUpConfig) -> Options {
        Options {
            endpoint,
            first_check: Duration::from_secs(c.first_check_secs),
            max_interval: Duration::from_secs(c.max_interval_secs),
            give_up_after: chrono::Duration::days(i64::from(c.give_up_after_days)),
        }
    }

    /// The wait before question number `polls + 1` about a conversion still queued: doubles
    /// from `first_check` (at least a second), up to `max_interval`.
    fn again_after(&self, polls: u32) -> Duration {
        let base = self.first_check.max(Duration::from_secs(1));
        base.checked_mul(1u32 << polls.min(20))
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }
}

/// What a follow-up session did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub asked: u64,
    pub processed: u64,
    pub failed: u64,
    pub absorbed: u64,
    pub unknown: u64,
    /// Files that got a new failure at impact (their failed-at-impact file is due).
    pub failed_files: Vec<i64>,
    /// impact said the partner account has no follow-up (the answer, in words).
    pub unavailable: Option<String>,
    /// Why follow-ups stopped for good in this session (credentials).
    pub denied: Option<String>,
}

/// Whether the ledger says impact refused follow-up to this (partner) account.
pub fn known_unavailable(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.starts_with(UNAVAILABLE))
}

/// Asks about every waiting conversion that is due, as `until` allows. `files_failed` is
/// called (on the blocking pool) with each file that got a new failure, to write its
/// failed-at-impact file.
pub async fn follow_up(
    ledger: SharedLedger,
    client: Arc<Client>,
    pacer: Arc<Pacer>,
    opts: Options,
    until: Until,
    cancel: CancellationToken,
    files_failed: Arc<dyn Fn(i64) + Send + Sync>,
) -> Result<Summary, LedgerError> {
    let mut summary = Summary::default();
    // On partner, whether impact answered a follow-up before (else the next is a probe).
    let mut confirmed = match opts.endpoint {
        Endpoint::Brand => true,
        Endpoint::Partner => with_ledger(&ledger, |l| l.meta(PARTNER_KEY))
            .await?
            .is_some_and(|v| v == "available"),
    };
    let deadline = match until {
        Until::Deadline(d) => Some(d),
        Until::Cancelled => None,
    };
    let recheck = opts
        .first_check
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut expired_at: Option<Instant> = None;
    'session: loop {
        if cancel.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Those past the age limit end unknown without a question, whenever they are due
        // next (at the start, then every ten minutes).
        if expired_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
            let cutoff = crate::ledger::time_text(chrono::Utc::now() - opts.give_up_after);
            let why = format!(
                "no final answer within {} days",
                opts.give_up_after.num_days()
            );
            summary.unknown +=
                with_ledger(&ledger, move |l| l.expire_followups(&cutoff, &why)).await?;
            expired_at = Some(Instant::now());
        }
        let due = with_ledger(&ledger, |l| l.due_followups(&now_text(), 64)).await?;
        if due.is_empty() {
            let next = with_ledger(&ledger, |l| l.next_followup()).await?;
            let wait = match (next, deadline) {
                // `run`: nothing is waiting at all.
                (None, Some(_)) => break,
                (None, None) => recheck,
                (Some(at), _) => {
                    let wait = crate::ledger::until(&at);
                    // `run`: nothing more is due before it must exit.
                    if deadline.is_some_and(|d| Instant::now() + wait > d) {
                        break;
                    }
                    wait.min(recheck)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                _ = cancel.cancelled() => break,
            }
            continue;
        }
        let mut updates = Vec::with_capacity(due.len());
        for d in due {
            if cancel.is_cancelled() || deadline.is_some_and(|x| Instant::now() >= x) {
                break;
            }
            let waited = tokio::select! {
                biased;
                _ = cancel.cancelled() => false,
                _ = sleep_until_opt(deadline) => false,
                _ = pacer.wait_spare() => true,
            };
            if !waited {
                break;
            }
            let (answer, limits) = client.submission(&d.queued_uri).await;
            pacer.observe(limits);
            summary.asked += 1;
            match answer {
                Submission::Waiting { status } => {
                    confirm(&ledger, &mut confirmed).await?;
                    let mut u = update(&d, FollowState::Waiting, Some(status), true);
                    u.next_at = Some(later(opts.again_after(d.polls + 1)));
                    updates.push(u);
                }
                Submission::Complete {
                    error,
                    completed_at,
                } => {
                    confirm(&ledger, &mut confirmed).await?;
                    let state = match &error {
                        None => FollowState::Processed,
                        Some((t, r)) if d.maybe_sent_before && is_duplicate(t, r) => {
                            FollowState::Absorbed
                        }
                        Some(_) => FollowState::Failed,
                    };
                    match state {
                        FollowState::Processed => summary.processed += 1,
                        FollowState::Absorbed => {
                            summary.absorbed += 1;
                            tracing::info!(order_id = %d.order_id, file_id = d.file_id, "impact's dedup absorbed a copy sent again after a stop (CONV_DUPLICATE): the first copy counts");
                        }
                        _ => {
                            summary.failed += 1;
                            let (t, r) = error.clone().unwrap_or_default();
                            tracing::warn!(order_id = %d.order_id, file_id = d.file_id, "failed at impact after it was queued: {t}: {r}");
                        }
                    }
                    let mut u = update(&d, state, Some("Complete".into()), true);
                    u.error = error;
                    u.completed_at = completed_at;
                    updates.push(u);
                }
                Submission::Gone { status } | Submission::Denied { status, .. }
                    if !confirmed && opts.endpoint == Endpoint::Partner && status != 401 =>
                {
                    // The partner probe: impact offers no follow-up to this account.
                    let said = format!(
                        "{UNAVAILABLE}: impact answered {status} to a follow-up on {}",
                        now_text()
                    );
                    let told = said.clone();
                    with_ledger(&ledger, move |l| {
                        l.set_meta(PARTNER_KEY, &told)?;
                        l.set_follow_up(None);
                        l.followups_unavailable()
                    })
                    .await?;
                    tracing::warn!("impact answered {status} when asked what became of a partner conversion: this account offers no follow-up, so impact-drop does not ask again (final outcomes are in impact's UI)");
                    summary.unavailable = Some(said);
                    updates.clear();
                    break 'session;
                }
                Submission::Gone { status } => {
                    summary.unknown += 1;
                    let why = format!("impact answered {status}: it does not know this submission");
                    updates.push(update(&d, FollowState::Unknown, Some(why), true));
                }
                Submission::OtherHost => {
                    summary.unknown += 1;
                    let why = format!(
                        "its QueuedUri {} is not on impact's host: not asked",
                        d.queued_uri
                    );
                    updates.push(update(&d, FollowState::Unknown, Some(why), false));
                }
                Submission::Denied { message, .. } => {
                    tracing::error!("{message}; follow-ups stopped");
                    summary.denied = Some(message);
                    break;
                }
                Submission::RateLimited { wait } => {
                    pacer.pause_until(Instant::now() + wait);
                    break;
                }
                Submission::Retry { reason } => {
                    tracing::debug!(order_id = %d.order_id, "{reason}; asked again later");
                    let mut u = update(&d, FollowState::Waiting, None, false);
                    u.next_at = Some(later(opts.again_after(d.polls + 1)));
                    updates.push(u);
                }
            }
        }
        if !updates.is_empty() {
            let files = with_ledger(&ledger, move |l| l.record_followups(&updates)).await?;
            for f in files {
                if !summary.failed_files.contains(&f) {
                    summary.failed_files.push(f);
                }
                let write = files_failed.clone();
                let _ = tokio::task::spawn_blocking(move || write(f)).await;
            }
        }
        if summary.denied.is_some() {
            break;
        }
    }
    Ok(summary)
}

/// Records that the partner account answered a follow-up (it is no longer probed).
async fn confirm(ledger: &SharedLedger, confirmed: &mut bool) -> Result<(), LedgerError> {
    if !*confirmed {
        with_ledger(ledger, |l| l.set_meta(PARTNER_KEY, "available")).await?;
        *confirmed = true;
    }
    Ok(())
}

fn update(d: &FollowDue, state: FollowState, status: Option<String>, asked: bool) -> FollowUpdate {
    FollowUpdate {
        id: d.id,
        state,
        next_at: None,
        impact_status: status,
        error: None,
        completed_at: None,
        asked,
    }
}

/// impact's duplicate code, in either field.
fn is_duplicate(error_type: &str, reason: &str) -> bool {
    [error_type, reason]
        .iter()
        .any(|t| t.split_whitespace().any(|w| w == "CONV_DUPLICATE"))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_first_check_up_to_the_cap() {
        let o = Options {
            endpoint: Endpoint::Brand,
            first_check: Duration::from_secs(30),
            max_interval: Duration::from_secs(600),
            give_up_after: chrono::Duration::days(30),
        };
        let waits: Vec<u64> = (1..7).map(|p| o.again_after(p).as_secs()).collect();
        assert_eq!(waits, vec![60, 120, 240, 480, 600, 600]);
        let o = Options {
            first_check: Duration::ZERO,
            ..o
        };
        assert_eq!(o.again_after(1), Duration::from_secs(2));
        assert!(is_duplicate("Validation", "CONV_DUPLICATE"));
        assert!(is_duplicate(
            "Validation",
            "CONTRACT_NOT_FOUND CONV_DUPLICATE"
        ));
        assert!(!is_duplicate("Validation", "CONV_DUPLICATES"));
    }
}
