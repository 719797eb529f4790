//! Submitting (async): pending conversions in the ledger → impact, outcomes back to the ledger.
//!
//! At most `max_in_flight` POSTs run at once, each after the pacer's slot. Answers go to a
//! committer task at once; it commits whatever arrived while its previous commit ran (group
//! commit with no timer), in parallel with sending: the send loop never waits on an fsync.
//! A conversion is "in flight" from its POST until its outcome is committed: after a kill,
//! at most those are sent again, and impact's OrderId dedup absorbs them. A 401/403 stops
//! every new POST at once; in-flight answers are still recorded. Retries wait with capped
//! exponential backoff and jitter, or as impact's headers say. When impact answers no
//! conversion for `give_up_after`, the rest stays pending for next time. A ledger write
//! failure stops sending: the answers are kept and recorded first once it can write again.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::impact::client::Client;
use crate::impact::pacing::{backoff, Pacer};
use crate::impact::response::Answer;
use crate::ledger::{later, now_text, until, Due, LedgerError, Outcome};
pub use crate::ledger::{with_ledger, SharedLedger};

#[derive(Clone, Debug)]
pub struct Options {
    pub max_in_flight: usize,
    /// Stop retrying after this long and leave the rest pending; `None` = keep going.
    pub give_up_after: Option<Duration>,
    pub retry_cap: Duration,
}

/// What a sending session did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub retried: u64,
    pub rate_limited: u64,
    /// Answers that were not impact's or never came (the conversion may be at impact).
    pub uncertain: u64,
    /// Why sending stopped for good (credentials, account), if it did.
    pub fatal: Option<String>,
    /// Gave up waiting for impact; conversions are left pending.
    pub gave_up: bool,
    /// Stopped by a signal.
    pub interrupted: bool,
}

/// Callbacks for progress (a progress bar, metrics); all optional.
pub trait Progress: Send + Sync {
    /// A final answer: accepted or rejected.
    fn answered(&self, _accepted: bool) {}
    /// A failure that will be retried.
    fn retried(&self) {}
    /// A 429.
    fn rate_limited(&self) {}
    /// More conversions queued while sending (a file, or a part of a large one, recorded).
    fn queued(&self, _n: u64) {}
}

/// New work that arrives while a sender runs: `notify` wakes it at once; while `open` is
/// set, a sender with nothing due waits for more instead of returning (`run` reading its
/// files as it sends).
#[derive(Clone, Default)]
pub struct Feed {
    pub notify: Arc<tokio::sync::Notify>,
    pub open: Arc<std::sync::atomic::AtomicBool>,
}

impl Feed {
    /// A feed that stays open until [`Feed::close`].
    pub fn opened() -> Feed {
        let feed = Feed::default();
        feed.open.store(true, std::sync::atomic::Ordering::SeqCst);
        feed
    }

    /// Nothing more comes: a sender waiting for work returns once nothing is due.
    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Progress for () {}

/// Sends every pending conversion that is due, until none is left (and the `feed`, if any, is
/// closed), impact stays unavailable past `give_up_after`, credentials fail, or `cancel`
/// fires.
///
/// `backlog` holds answers received but not yet committed; it belongs to the caller and
/// outlives a failed call. Nothing is sent while it cannot be committed: a call first
/// commits it, and when a commit fails, no new POST starts, the answers of POSTs in flight
/// join the backlog, and the call returns the error. The next call (once the disk has room
/// again) records them before anything else, so an answered conversion is never sent again.
#[allow(clippy::too_many_arguments)] // the sending session's parts, each its own concern
pub async fn send_pending(
    ledger: SharedLedger,
    client: Arc<Client>,
    pacer: Arc<Pacer>,
    opts: Options,
    cancel: CancellationToken,
    progress: Arc<dyn Progress>,
    feed: Option<Feed>,
    backlog: &mut Vec<Outcome>,
) -> Result<Summary, LedgerError> {
    // Giving up means "impact stayed unavailable": the clock restarts whenever impact
    // answers a conversion (accepted or rejected), so a long healthy backlog is never cut off.
    let mut deadline = opts.give_up_after.map(|d| Instant::now() + d);
    let mut summary = Summary::default();
    let mut claimed: HashSet<i64> = HashSet::new();
    let mut queue: VecDeque<Due> = VecDeque::new();
    // Answers from an earlier call that could not be recorded go first, before any POST.
    flush(&ledger, backlog, &mut claimed).await?;
    let (to_committer, from_sender) = mpsc::unbounded_channel::<ToCommitter>();
    let (committed_tx, mut committed) = mpsc::unbounded_channel::<Committed>();
    // Its own thread, not a blocking-pool task per commit: one wake per group, no hand-off.
    let committer = {
        let ledger = ledger.clone();
        std::thread::Builder::new()
            .name("ledger-commit".into())
            .spawn(move || commit_as_answers_arrive(ledger, from_sender, committed_tx))
            .map_err(|e| LedgerError::Internal(format!("cannot start the committer: {e}")))?
    };
    // `None`: stopped while waiting for its slot, never sent (it stays pending).
    let mut tasks: JoinSet<(Due, Option<Answer>)> = JoinSet::new();
    let mut stopping = false;
    // A commit that failed: nothing new starts; in-flight answers are kept.
    let mut failed: Option<LedgerError> = None;
    let mut to_commit: Vec<Outcome> = Vec::with_capacity(1);

    let result = loop {
        // What the committer recorded: those conversions are no longer in flight.
        while let Ok(c) = committed.try_recv() {
            match c {
                Committed::Ids(ids) => {
                    for id in ids {
                        claimed.remove(&id);
                    }
                }
                Committed::Failed(e) => stop_on_failure(&mut failed, &mut stopping, e),
            }
        }
        if cancel.is_cancelled() && !stopping {
            summary.interrupted = true;
            stopping = true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) && !stopping {
            stopping = true;
            summary.gave_up = true;
        }
        // Start POSTs up to the limit.
        while !stopping && tasks.len() < opts.max_in_flight {
            if queue.is_empty() {
                let exclude = claimed.clone();
                let latest = later(opts.retry_cap + Duration::from_secs(60));
                match with_ledger(&ledger, move |l| l.due(&now_text(), &latest, 256, &exclude))
                    .await
                {
                    Ok(due) => {
                        claimed.extend(due.iter().map(|d| d.id));
                        queue.extend(due);
                    }
                    Err(e) => {
                        stop_on_failure(&mut failed, &mut stopping, e);
                        break;
                    }
                }
            }
            let Some(d) = queue.pop_front() else { break };
            let (client, pacer, cancel) = (client.clone(), pacer.clone(), cancel.clone());
            tasks.spawn(async move {
                // A stop while waiting for the slot means the POST never starts; once it
                // has started, it finishes and its answer is recorded.
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return (d, None),
                    _ = pacer.wait() => {}
                }
                let (answer, limits) = client.post(&d.body).await;
                pacer.observe(limits);
                (d, Some(answer))
            });
        }
        if tasks.is_empty() {
            // Everything answered is committed before looking at what is due next.
            if let Err(e) = barrier(&to_committer, &mut committed, &mut claimed).await {
                stop_on_failure(&mut failed, &mut stopping, e);
            }
            if let Some(e) = failed.take() {
                break Err(e);
            }
            if stopping {
                break Ok(());
            }
            // Nothing due now: wait for the next retry, if any is pending.
            let next = match with_ledger(&ledger, |l| l.next_due()).await {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let Some(next) = next else {
                match &feed {
                    Some(f) if f.is_open() && !cancel.is_cancelled() => {
                        // More is being read: wait for it (time spent waiting for the file
                        // is not impact being unavailable).
                        tokio::select! {
                            _ = f.notify.notified() => {}
                            _ = cancel.cancelled() => {}
                        }
                        deadline = opts.give_up_after.map(|d| Instant::now() + d);
                        continue;
                    }
                    _ => break Ok(()),
                }
            };
            // Never further out than the retry cap: a time set under a clock that was ahead
            // is released once the clock is right.
            let wait = until(&next).min(opts.retry_cap);
            if wait.is_zero() {
                continue;
            }
            let wake_at = match deadline {
                Some(d) => (Instant::now() + wait).min(d),
                None => Instant::now() + wait,
            };
            let woken = async {
                match &feed {
                    Some(f) => f.notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = cancel.cancelled() => {}
                // New work (a file taken in) goes at once, not after the next retry.
                _ = woken => {}
            }
            continue;
        }
        let joined = tokio::select! {
            j = tasks.join_next() => j,
            Some(c) = committed.recv() => {
                match c {
                    Committed::Ids(ids) => for id in ids { claimed.remove(&id); },
                    Committed::Failed(e) => stop_on_failure(&mut failed, &mut stopping, e),
                }
                continue;
            }
            _ = cancel.cancelled(), if !stopping => continue,
        };
        let Some(joined) = joined else { continue };
        let (d, answer) = match joined {
            Ok((d, Some(answer))) => (d, answer),
            Ok((d, None)) => {
                // Never sent: its dispatch is taken back (it stays claimed until recorded).
                let _ = to_committer.send(ToCommitter::Outcome(Outcome::Unsent { id: d.id }));
                continue;
            }
            Err(e) => break Err(LedgerError::Internal(format!("a sending task failed: {e}"))),
        };
        summary.requests += 1;
        match answer {
            Answer::Accepted {
                queued_uri,
                warnings,
            } => {
                summary.accepted += 1;
                deadline = opts.give_up_after.map(|d| Instant::now() + d);
                tracing::debug!(order_id = %d.order_id, file_id = d.file_id, "accepted");
                for w in &warnings {
                    tracing::warn!(order_id = %d.order_id, file_id = d.file_id, "impact warning: {w}");
                }
                to_commit.push(Outcome::Accepted {
                    id: d.id,
                    queued_uri,
                    warnings,
                });
                progress.answered(true);
            }
            Answer::Rejected { reasons } => {
                summary.rejected += 1;
                deadline = opts.give_up_after.map(|d| Instant::now() + d);
                tracing::warn!(order_id = %d.order_id, file_id = d.file_id, "rejected by impact: {}", reasons.join("; "));
                to_commit.push(Outcome::Rejected { id: d.id, reasons });
                progress.answered(false);
            }
            Answer::Fatal { message, .. } => {
                if summary.fatal.is_none() {
                    // Said once: by the run report, or by the daemon's alert.
                    tracing::debug!("{message}; sending stopped");
                    summary.fatal = Some(message);
                }
                stopping = true;
                // impact did not take it: it stays pending as it was, its dispatch taken back.
                to_commit.push(Outcome::Unsent { id: d.id });
            }
            Answer::RateLimited { wait } => {
                summary.rate_limited += 1;
                tracing::info!(order_id = %d.order_id, "impact answered 429; waiting {}s", wait.as_secs());
                pacer.pause_until(Instant::now() + wait);
                progress.rate_limited();
                to_commit.push(Outcome::Retry {
                    id: d.id,
                    error: "impact answered 429 Too Many Requests".into(),
                    next_at: later(wait),
                });
            }
            Answer::Uncertain { reason } => {
                summary.uncertain += 1;
                progress.retried();
                let wait = backoff(d.attempts + 1, opts.retry_cap);
                tracing::warn!(order_id = %d.order_id, file_id = d.file_id, "{reason}: impact may or may not have this conversion; it is sent again at most {} times in all, then held for the operator", crate::ledger::UNCERTAIN_LIMIT);
                to_commit.push(Outcome::Uncertain {
                    id: d.id,
                    error: format!("uncertain: {reason}"),
                    next_at: later(wait),
                });
            }
            Answer::Retry {
                reason,
                retry_after,
            } => {
                summary.retried += 1;
                progress.retried();
                let wait = retry_after.unwrap_or_else(|| backoff(d.attempts + 1, opts.retry_cap));
                tracing::info!(order_id = %d.order_id, file_id = d.file_id, "{reason}; retrying in {:.1}s", wait.as_secs_f64());
                to_commit.push(Outcome::Retry {
                    id: d.id,
                    error: reason,
                    next_at: later(wait),
                });
            }
        }
        // Handed to the committer at once: the send loop never waits on an fsync.
        for o in to_commit.drain(..) {
            let _ = to_committer.send(ToCommitter::Outcome(o));
        }
    };
    // Conversions handed out but never started: their dispatches are taken back.
    for d in queue.drain(..) {
        let _ = to_committer.send(ToCommitter::Outcome(Outcome::Unsent { id: d.id }));
    }
    // Whatever the committer could not record comes back, to be recorded first next time.
    drop(to_committer);
    if let Ok(Ok(unrecorded)) = tokio::task::spawn_blocking(move || committer.join()).await {
        backlog.extend(unrecorded);
    }
    result.map(|()| summary)
}

/// Messages to the committer.
enum ToCommitter {
    Outcome(Outcome),
    /// Answered once everything sent before it is committed (or failed).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// What the committer did.
enum Committed {
    Ids(Vec<i64>),
    Failed(LedgerError),
}

/// Group commit with no timer: takes whatever answers arrived while the previous commit ran
/// and commits them at once, in parallel with sending. After a failed commit it records
/// nothing more and returns every answer it holds, so the caller keeps them.
fn commit_as_answers_arrive(
    ledger: SharedLedger,
    mut from_sender: mpsc::UnboundedReceiver<ToCommitter>,
    committed: mpsc::UnboundedSender<Committed>,
) -> Vec<Outcome> {
    let mut pending: Vec<Outcome> = Vec::new();
    let mut barriers = Vec::new();
    let mut broken = false;
    loop {
        if pending.is_empty() && barriers.is_empty() {
            match from_sender.blocking_recv() {
                Some(ToCommitter::Outcome(o)) => pending.push(o),
                Some(ToCommitter::Barrier(b)) => barriers.push(b),
                None => return pending,
            }
        }
        while let Ok(m) = from_sender.try_recv() {
            match m {
                ToCommitter::Outcome(o) => pending.push(o),
                ToCommitter::Barrier(b) => barriers.push(b),
            }
        }
        if !pending.is_empty() && !broken {
            let result = match ledger.lock() {
                Ok(mut l) => l.record_outcomes(&pending),
                Err(_) => Err(LedgerError::Internal("the ledger lock was poisoned".into())),
            };
            match result {
                Ok(()) => {
                    let ids = pending.drain(..).map(|o| o.id()).collect();
                    let _ = committed.send(Committed::Ids(ids));
                }
                Err(e) => {
                    broken = true;
                    let _ = committed.send(Committed::Failed(e));
                }
            }
        }
        for b in barriers.drain(..) {
            let _ = b.send(());
        }
        if broken {
            // Keep what arrives for the caller; record nothing more.
            match from_sender.blocking_recv() {
                Some(ToCommitter::Outcome(o)) => pending.push(o),
                Some(ToCommitter::Barrier(b)) => {
                    let _ = b.send(());
                }
                None => return pending,
            }
        }
    }
}

/// Waits until the committer has committed everything handed to it so far.
async fn barrier(
    to_committer: &mpsc::UnboundedSender<ToCommitter>,
    committed: &mut mpsc::UnboundedReceiver<Committed>,
    claimed: &mut HashSet<i64>,
) -> Result<(), LedgerError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if to_committer.send(ToCommitter::Barrier(tx)).is_ok() {
        let _ = rx.await;
    }
    let mut result = Ok(());
    while let Ok(c) = committed.try_recv() {
        match c {
            Committed::Ids(ids) => {
                for id in ids {
                    claimed.remove(&id);
                }
            }
            Committed::Failed(e) => result = Err(e),
        }
    }
    result
}

/// A commit failed: no new POST starts; the answers of those in flight are still collected.
fn stop_on_failure(failed: &mut Option<LedgerError>, stopping: &mut bool, e: LedgerError) {
    tracing::error!("{e}; no new conversion is sent until the answers received can be recorded");
    *failed = Some(e);
    *stopping = true;
}

/// Commits outcomes in one transaction; only then are their conversions no longer in flight.
async fn flush(
    ledger: &SharedLedger,
    outcomes: &mut Vec<Outcome>,
    claimed: &mut HashSet<i64>,
) -> Result<Vec<i64>, LedgerError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let batch = std::mem::take(outcomes);
    let (result, batch) = {
        let ledger = ledger.clone();
        tokio::task::spawn_blocking(move || {
            let result = match ledger.lock() {
                Ok(mut l) => l.record_outcomes(&batch),
                Err(_) => Err(LedgerError::Internal("the ledger lock was poisoned".into())),
            };
            (result, batch)
        })
        .await
        .map_err(|e| LedgerError::Internal(format!("ledger task failed: {e}")))?
    };
    if let Err(e) = result {
        // Kept: they are committed by the next attempt, before anything else is sent.
        let newer = std::mem::replace(outcomes, batch);
        outcomes.extend(newer);
        return Err(e);
    }
    let ids: Vec<i64> = batch.iter().map(Outcome::id).collect();
    for id in &ids {
        claimed.remove(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::config::{Loader, Secret};
    use crate::impact::pacing::Pacer;
    use crate::impact::sandbox::{Faults, Sandbox};
    use crate::ledger::{FileCounts, Ledger, PlanFile};
    use crate::model::{ConversionKey, LineHash};
    use crate::state::{ConvRef, LineOutcome, NewConversion, NewLine};

    const SID: &str = "IRPACE00000000000000000000001";

    /// Records the ETA the pacer tells after every answer, as the progress display does.
    struct Etas {
        pacer: Arc<Pacer>,
        left: AtomicU64,
        told: Mutex<Vec<String>>,
    }

    impl Progress for Etas {
        fn answered(&self, _accepted: bool) {
            let left = self.left.fetch_sub(1, Ordering::SeqCst) - 1;
            if let (Some((_, text)), Ok(mut told)) = (self.pacer.eta(left), self.told.lock()) {
                told.push(text);
            }
        }
    }

    /// An hour of controlled time against the sandbox's hourly budget of 1,000 requests
    /// (with its `X-RateLimit-*-hour` headers): the pacer uses at least 95 % of it, impact
    /// never answers 429, and the ETA told along the way is the budget's and the headers'.
    #[tokio::test(start_paused = true)]
    async fn an_hour_at_the_budget_uses_95_percent_with_no_429_and_tells_the_eta() {
        let dir = tempfile::tempdir().unwrap();
        let ledger_path = dir.path().join("ledger.sqlite");
        let mut ledger = Ledger::open(&ledger_path).unwrap();
        let pending = 1_100usize;
        let conversions: Vec<NewConversion> = (0..pending)
            .map(|i| NewConversion {
                key: ConversionKey {
                    campaign_id: "1000".into(),
                    event_field: "ActionTrackerId".into(),
                    event_id: "2000".into(),
                    order_id: format!("PACE-{i:05}"),
                },
                body: format!(
                    "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=PACE-{i:05}\
                     &EventDate=2025-11-20T10%3A00%3A00-05%3A00&CurrencyCode=USD&ItemSku1=A\
                     &ItemQuantity1=1&ItemPrice1=10.00"
                ),
                payload_hash: format!("p{i}"),
                existing: None,
            })
            .collect();
        let lines: Vec<NewLine> = (0..pending)
            .map(|i| NewLine {
                line: i as u64 + 2,
                hash: LineHash::of(format!("line {i}").as_bytes()),
                outcome: LineOutcome::Sent,
                conversion: Some(ConvRef::Planned(i)),
                reason: None,
                order_id: None,
            })
            .collect();
        let file = PlanFile::New {
            content_hash: "pace".into(),
            path: "pace.csv".into(),
            size: 1,
            mtime: None,
        };
        ledger
            .record_plan(&file, &conversions, &lines, &FileCounts::default())
            .unwrap();
        let ledger: SharedLedger = Arc::new(std::sync::Mutex::new(ledger));

        let sandbox = Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            SID,
            "pace-token",
            Faults {
                hourly_limit: 1000,
                ..Faults::default()
            },
        )
        .await
        .unwrap();
        let config_path = dir.path().join("impact-drop.toml");
        std::fs::write(
            &config_path,
            format!(
                "[impact]\nbase_url = \"{}\"\naccount_sid = \"{SID}\"\nrequests_per_hour = 1000\n",
                sandbox.base_url()
            ),
        )
        .unwrap();
        let config = Loader {
            path: Some(&config_path),
            env: &|_| None,
        }
        .load()
        .unwrap();
        assert_eq!(config.impact.requests_per_hour, 1000);
        let client = Arc::new(Client::new(&config.impact, SID, Secret::new("pace-token")).unwrap());
        let pacer = Arc::new(Pacer::new(config.impact.requests_per_hour));
        let etas = Arc::new(Etas {
            pacer: pacer.clone(),
            left: AtomicU64::new(pending as u64),
            told: Mutex::new(Vec::new()),
        });
        // The first ETA, before any answer: the budget's alone.
        assert_eq!(
            pacer.eta(pending as u64).unwrap().1,
            "1100 pending: about 66 min at 1,000 requests/hour"
        );

        // Stop just before the sandbox's hour ends, so every request counts in one window.
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3599)).await;
            stop.cancel();
        });
        let opts = Options {
            max_in_flight: config.impact.max_in_flight,
            give_up_after: None,
            retry_cap: Duration::from_secs(config.impact.retry_cap_secs),
        };
        let mut backlog = Vec::new();
        let summary = send_pending(
            ledger.clone(),
            client,
            pacer.clone(),
            opts,
            cancel,
            etas.clone(),
            None,
            &mut backlog,
        )
        .await
        .unwrap();

        let stats = sandbox.stats();
        assert_eq!(
            stats.statuses.get(&429),
            None,
            "impact answered 429: {stats:?}"
        );
        assert_eq!(summary.rate_limited, 0);
        assert!(summary.interrupted);
        assert!(
            (950..=1000).contains(&stats.accepted),
            "{} of the hour's 1,000 used",
            stats.accepted
        );
        assert_eq!(summary.accepted, stats.accepted);
        assert!(backlog.is_empty());
        // What is left is what the ledger says is pending.
        let left = ledger.lock().unwrap().pending_count().unwrap();
        assert_eq!(left, pending as u64 - stats.accepted);

        let told = etas.told.lock().unwrap().clone();
        assert_eq!(told.len() as u64, stats.accepted);
        // After each answer: the time is the budget's for what is left (1,099 × 3.6 s =
        // 66 min after the first), rounded for people; the headers say what is left of the
        // hour as of the latest answer (up to `max_in_flight` answers ahead of those
        // counted here, since answers are observed as they arrive).
        assert!(
            told[0].starts_with(
                "1099 pending: about 66 min at 1,000 requests/hour; impact's headers say "
            ),
            "{}",
            told[0]
        );
        assert!(
            told[499].starts_with(
                "600 pending: about 36 min at 1,000 requests/hour; impact's headers say "
            ),
            "{}",
            told[499]
        );
        for (k, text) in told.iter().enumerate() {
            let answered = k as u64 + 1;
            let left_by_headers: u64 = text
                .rsplit("impact's headers say ")
                .next()
                .and_then(|t| t.strip_suffix(" left this hour"))
                .and_then(|n| n.replace(',', "").parse().ok())
                .unwrap_or_else(|| panic!("no header figure in {text:?}"));
            let in_flight = config.impact.max_in_flight as u64;
            assert!(
                (1000 - answered).saturating_sub(in_flight) <= left_by_headers
                    && left_by_headers <= 1000 - answered,
                "after {answered} answers: {text}"
            );
        }
        sandbox.stop();
    }
}
