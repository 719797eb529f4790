//! The daemon (`watch`): scan → settle → intake → submit → finish, until a signal.
//!
//! Two tasks share the ledger. The **scanner** scans the drop folder at start, on every
//! notify hint, every `rescan_secs`, and when a settling file is due. It takes ready files in
//! and finishes files whose conversions are all final. The **sender** sends whatever is
//! pending, waits as impact asks, and sleeps until new work arrives.
//!
//! - **Outages** wait with no time limit: conversions go when impact is back.
//! - **A 401/403** pauses sending, with an alert repeated every 5 minutes. The token (env or
//!   `auth_token_file`) is re-read every 5 seconds; a new token resumes sending without a
//!   restart. The same token is tried again after 10 minutes, in case permissions were fixed.
//! - **On shutdown** no new file is taken, POSTs in flight get `shutdown_grace_secs` to
//!   finish and commit, and the process exits 0.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::health::{self, DaemonState};
use super::{Delivery, Intake, Record};
use crate::config::{Config, Secret};
use crate::impact::client::Client;
use crate::impact::pacing::Pacer;
use crate::ledger::{with_ledger, Ledger, LedgerError, Pruned, SharedLedger};
use crate::plan::Mode;
use crate::submit;
use crate::watch::{self, Hint, Settler, WatchOptions};

/// How often an unresolved credentials problem is logged again.
const ALERT_EVERY: Duration = Duration::from_secs(300);
/// How often the token is re-read while credentials fail.
const TOKEN_CHECK_EVERY: Duration = Duration::from_secs(5);
/// After this long, the same token is tried again (permissions may have been fixed).
const RETRY_SAME_TOKEN_AFTER: Duration = Duration::from_secs(600);
/// How often old ledger records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Transport(String),
    #[error(
        "the drop folder {} does not exist or is not a folder: create it or fix [source] drop_dir",
        .0.display()
    )]
    NoDropDir(std::path::PathBuf),
    #[error(transparent)]
    FolderInUse(#[from] crate::watch::FolderInUse),
    #[error(transparent)]
    Deliver(#[from] super::DeliverError),
    #[error("cannot listen on {addr} ([http] listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs until `shutdown` fires; returns after the grace period at the latest.
pub async fn watch(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let sid = config.impact.require_account_sid()?.to_owned();
    match config.check_transport() {
        Err(e) => return Err(DaemonError::Transport(e)),
        Ok(Some(w)) => tracing::warn!("{w}"),
        Ok(None) => {}
    }
    for w in config
        .permission_warnings()
        .into_iter()
        .chain(config.endpoint_warnings())
    {
        tracing::warn!("{w}");
    }
    let opts = WatchOptions::from_config(&config);
    if !opts.dir.is_dir() {
        return Err(DaemonError::NoDropDir(opts.dir.clone()));
    }
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::open(&config.ledger.path)?));
    let _folder = watch::lock_folder(&opts.dir, &config.ledger.path)?;
    with_ledger(&ledger, {
        let config = config.clone();
        move |l| Ok(super::guard_new_ledger(&config, l))
    })
    .await??;
    let run_id = with_ledger(&ledger, |l| l.start_run("watch", "")).await?;
    let state = Arc::new(DaemonState::default());
    let http_stop = CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let bound = health::serve(addr, state.clone(), ledger.clone(), http_stop.clone())
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        tracing::info!("health on http://{bound}/healthz, metrics on http://{bound}/metrics");
    }

    let scan_now = Arc::new(Notify::new());
    let _watcher = if config.source.watch_events {
        start_watcher(&opts, scan_now.clone(), config.source.rescan_secs)
    } else {
        tracing::info!(
            "file events off ([source] watch_events = false): polling every {}s",
            config.source.rescan_secs
        );
        None
    };

    let work = Arc::new(Notify::new());
    // A large file's parts go out as they are recorded.
    let deliverer = Arc::new(Delivery::new(config.clone(), ledger.clone()).on_part({
        let work = work.clone();
        Arc::new(move |_| work.notify_one())
    }));
    let send_stop = CancellationToken::new();
    // One pacer for sends and follow-ups: follow-ups take only the slots sending leaves.
    let pacer = Arc::new(Pacer::new(config.impact.requests_per_hour));
    let follow = super::arm_follow_up(&config, &ledger).await?;
    let follower = follow.then(|| {
        tokio::spawn(follow_up_loop(
            config.clone(),
            sid.clone(),
            ledger.clone(),
            pacer.clone(),
            deliverer.clone(),
            send_stop.clone(),
        ))
    });
    let sender = tokio::spawn(sender_loop(
        config.clone(),
        sid,
        ledger.clone(),
        pacer,
        state.clone(),
        work.clone(),
        scan_now.clone(),
        send_stop.clone(),
    ));
    prune(&ledger, config.ledger.keep_days).await;
    tracing::info!(
        dir = %opts.dir.display(),
        "watching: settle {:.1}s, rescan every {}s{}",
        opts.settle.as_secs_f64(),
        config.source.rescan_secs,
        opts.ready_marker.as_ref().map(|m| format!(", ready marker {m}")).unwrap_or_default()
    );

    let rescan = Duration::from_secs(config.source.rescan_secs);
    let mut settler = Settler::default();
    let mut next_rescan = Instant::now();
    let mut next_settle: Option<Instant> = None;
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    let mut ledger_lost = false;
    let mut finish_backoff = FinishBackoff::new();
    let mut unreadable: std::collections::HashMap<std::path::PathBuf, (u32, Instant)> =
        std::collections::HashMap::new();
    loop {
        let settle_at = next_settle.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = scan_now.notified() => {}
            _ = tokio::time::sleep_until(next_rescan) => next_rescan = Instant::now() + rescan,
            _ = tokio::time::sleep_until(settle_at), if next_settle.is_some() => {}
            _ = tokio::time::sleep_until(next_prune) => {
                next_prune = Instant::now() + PRUNE_EVERY;
                prune(&ledger, config.ledger.keep_days).await;
                continue;
            }
        }
        state.scans.fetch_add(1, Ordering::Relaxed);
        // A ledger deleted or replaced under the daemon is an alarm, never a fresh start:
        // what it recorded would no longer stop a second payment.
        if !ledger_lost
            && !with_ledger(&ledger, |l| Ok(l.still_at_its_path()))
                .await
                .unwrap_or(true)
        {
            ledger_lost = true;
            let msg = format!(
                "the ledger {} was deleted or replaced while impact-drop was running: nothing \
                 more is taken in or sent; restore it (or move the new file aside) and restart",
                config.ledger.path.display()
            );
            tracing::error!("{msg}");
            state.set_problem(Some(msg));
            send_stop.cancel();
        }
        if ledger_lost {
            continue;
        }
        let o = opts.clone();
        let candidates = match tokio::task::spawn_blocking(move || watch::scan(&o)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(dir = %opts.dir.display(), "cannot scan the drop folder: {e}");
                continue;
            }
            Err(_) => continue,
        };
        // Files that could not be read go again once their backoff is over.
        let now = Instant::now();
        unreadable.retain(|p, (_, at)| {
            if !p.exists() {
                return false;
            }
            if *at <= now {
                settler.forget(p);
            }
            true
        });
        let (ready, next) = settler.observe(&candidates, Instant::now(), opts.settle);
        next_settle = next;
        state
            .files_waiting
            .store(settler.waiting() as u64, Ordering::Relaxed);
        for path in ready {
            if shutdown.is_cancelled() {
                break;
            }
            let (d, p) = (deliverer.clone(), path.clone());
            let result = tokio::task::spawn_blocking(move || {
                d.intake(&p, Mode::Normal, Record::Yes { run_id })
            })
            .await;
            let Ok(result) = result else { continue };
            match result {
                Ok(intake) => {
                    settler.take(&path, &candidates);
                    unreadable.remove(&path);
                    state.files_seen.fetch_add(1, Ordering::Relaxed);
                    match intake {
                        Intake::Planned { report, .. } if !report.file_problems.is_empty() => {
                            state.files_refused.fetch_add(1, Ordering::Relaxed);
                            let why: Vec<String> = report
                                .file_problems
                                .iter()
                                .map(ToString::to_string)
                                .collect();
                            tracing::error!(
                                file = %path.display(),
                                "file refused, {} rows recorded invalid and kept in its rejects file: {}",
                                report.rows,
                                why.join("; ")
                            );
                            work.notify_one();
                        }
                        Intake::Planned { report, plan, .. } => {
                            tracing::info!(
                                file = %path.display(),
                                "{} rows: {} conversions queued, {} already sent, {} invalid orders",
                                report.rows, plan.queued, plan.already_sent, report.invalid.len()
                            );
                            work.notify_one();
                        }
                        Intake::Resumed { .. } => work.notify_one(),
                        Intake::Duplicate { file_id, of } => {
                            tracing::info!(file = %path.display(), "same content as {} (file #{}): nothing sent", of.path, of.id);
                            let (d, p) = (deliverer.clone(), path.clone());
                            let moved = tokio::task::spawn_blocking(move || {
                                d.archive_duplicate(file_id, &p)
                            })
                            .await;
                            if let Ok(Err(e)) = moved {
                                tracing::warn!(file = %path.display(), "cannot move the duplicate: {e}");
                            }
                        }
                    }
                }
                Err(e) if e.is_fatal() => {
                    tracing::error!(file = %path.display(), "{e}; the file will be tried again");
                    state.set_problem(Some(format!("ledger: {e}")));
                }
                Err(e) => {
                    // Removed mid-read, unreadable, …: logged and counted, and tried again
                    // after a backoff (1, 2, 4 … up to 16 rescans), changed or not: a
                    // permission fixed with chmod is picked up without a restart.
                    settler.take(&path, &candidates);
                    state.files_failed.fetch_add(1, Ordering::Relaxed);
                    let tries = unreadable.get(&path).map_or(0, |(n, _)| *n) + 1;
                    let wait = rescan * 2u32.saturating_pow(tries.min(5) - 1).min(16);
                    tracing::warn!(file = %path.display(), "{e}; tried again in {}s", wait.as_secs());
                    unreadable.insert(path.clone(), (tries, Instant::now() + wait));
                    next_settle = Some(
                        next_settle.map_or(Instant::now() + wait, |n| n.min(Instant::now() + wait)),
                    );
                }
            }
        }
        finish_files(&deliverer, &ledger, &state, &mut finish_backoff).await;
    }

    tracing::info!(
        "stopping: no new files; POSTs in flight get up to {}s to finish",
        config.impact.shutdown_grace_secs
    );
    send_stop.cancel();
    let grace = Duration::from_secs(config.impact.shutdown_grace_secs);
    match tokio::time::timeout(grace, sender).await {
        Ok(_) => tracing::info!("stopped cleanly"),
        Err(_) => tracing::warn!(
            "grace period over: answers still outstanding stay pending and go next time"
        ),
    }
    if let Some(f) = follower {
        // A question in flight is simply asked again next time: no grace needed.
        let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
    }
    finish_files(&deliverer, &ledger, &state, &mut finish_backoff).await;
    let summary = format!(
        "files seen {}, done {}, failed {}; accepted {}, rejected {}",
        state.files_seen.load(Ordering::Relaxed),
        state.files_done.load(Ordering::Relaxed),
        state.files_failed.load(Ordering::Relaxed),
        state.accepted.load(Ordering::Relaxed),
        state.rejected.load(Ordering::Relaxed)
    );
    let _ = with_ledger(&ledger, move |l| l.finish_run(run_id, &summary)).await;
    http_stop.cancel();
    Ok(())
}

/// Starts the OS watcher as a hint source; `None` (poll mode) when it cannot start.
fn start_watcher(
    opts: &WatchOptions,
    scan_now: Arc<Notify>,
    rescan_secs: u64,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let ignore = opts.ignore.clone();
    let handler =
        move |event: notify::Result<notify::Event>| match watch::interpret(&event, &ignore) {
            Hint::Scan => scan_now.notify_one(),
            Hint::Rescan(why) => {
                tracing::warn!("{why}");
                scan_now.notify_one();
            }
            Hint::Nothing => {}
        };
    let mode = if opts.recursive {
        notify::RecursiveMode::Recursive
    } else {
        notify::RecursiveMode::NonRecursive
    };
    match notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(&opts.dir, mode).map(|()| w))
    {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "{}; polling every {rescan_secs}s instead",
                watch::watcher_error_message(&e)
            );
            None
        }
    }
}

/// Files whose finishing failed, with how often and when to try again.
type FinishBackoff = std::collections::HashMap<i64, (u32, Instant)>;

/// Finishes every open file whose conversions are all final (rejects file, archive). A
/// finish that fails is tried again after a backoff (5 s doubling to 10 min), not at every
/// scan.
async fn finish_files(
    deliverer: &Arc<Delivery>,
    ledger: &SharedLedger,
    state: &Arc<DaemonState>,
    backoff: &mut FinishBackoff,
) {
    let Ok(open) = with_ledger(ledger, |l| l.open_files()).await else {
        return;
    };
    let now = Instant::now();
    for f in open {
        if backoff.get(&f.id).is_some_and(|(_, at)| *at > now) {
            continue;
        }
        let d = deliverer.clone();
        let path = std::path::PathBuf::from(&f.path);
        let result = tokio::task::spawn_blocking(move || {
            let archive = d.in_drop_dir(&path);
            d.finish(f.id, &path, archive)
        })
        .await;
        match result {
            Ok(Ok(Some(done))) => {
                backoff.remove(&f.id);
                state.files_done.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    file = %f.path,
                    "finished{}{}",
                    done.rejects.map(|r| format!("; rows to fix in {}", r.display())).unwrap_or_default(),
                    done.archived_to.map(|a| format!("; moved to {}", a.display())).unwrap_or_default()
                );
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                let tries = backoff.get(&f.id).map_or(0, |(n, _)| *n) + 1;
                let wait = Duration::from_secs(5 * 2u64.pow(tries.min(7) - 1))
                    .min(Duration::from_secs(600));
                tracing::warn!(file = %f.path, "cannot finish: {e}; tried again in {}s", wait.as_secs());
                backoff.insert(f.id, (tries, Instant::now() + wait));
            }
            Err(_) => {}
        }
    }
}

async fn prune(ledger: &SharedLedger, keep_days: u32) {
    match with_ledger(ledger, move |l| l.prune(keep_days)).await {
        Ok(Pruned::Done { lines: 0, bodies: 0 }) => {}
        Ok(Pruned::Done { lines, bodies }) => tracing::info!(
            "pruned {lines} line records and {bodies} conversion bodies older than {keep_days} days (every conversion's key and state stay)"
        ),
        Ok(Pruned::Refused { newest, now }) => tracing::warn!(
            "not pruning: the clock says {now}, but the newest record in the ledger is from {newest}, more than {keep_days} days earlier; the clock looks wrong (fix it), or the ledger has been idle that long"
        ),
        Err(e) => tracing::warn!("pruning the ledger failed: {e}"),
    }
}

/// Follows accepted conversions up for as long as the daemon runs: what impact did with
/// each, failed-at-impact files as failures come. Stops for good when impact says the
/// (partner) account has none; after a 401/403, tries again every ten minutes.
async fn follow_up_loop(
    config: Config,
    sid: String,
    ledger: SharedLedger,
    pacer: Arc<Pacer>,
    deliverer: Arc<Delivery>,
    stop: CancellationToken,
) {
    let opts = crate::followup::Options::from_config(config.impact.endpoint, &config.follow_up);
    let write: Arc<dyn Fn(i64) + Send + Sync> = Arc::new(move |id| {
        if let Err(e) = deliverer.write_failed_at_impact(id) {
            tracing::warn!("cannot write the rows that failed at impact: {e}");
        }
    });
    while !stop.is_cancelled() {
        let client = config
            .impact
            .auth_token()
            .map_err(|e| e.to_string())
            .and_then(|t| Client::new(&config.impact, &sid, t).map_err(|e| e.to_string()));
        let wait = match client {
            Err(_) => TOKEN_CHECK_EVERY,
            Ok(c) => match crate::followup::follow_up(
                ledger.clone(),
                Arc::new(c),
                pacer.clone(),
                opts.clone(),
                crate::followup::Until::Cancelled,
                stop.clone(),
                write.clone(),
            )
            .await
            {
                Ok(s) if s.unavailable.is_some() => return,
                Ok(s) if s.denied.is_some() => RETRY_SAME_TOKEN_AFTER,
                Ok(_) => TOKEN_CHECK_EVERY,
                Err(e) => {
                    tracing::warn!("follow-up: {e}; tried again in 30s");
                    Duration::from_secs(30)
                }
            },
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Sends whatever is pending, for as long as the daemon runs.
#[allow(clippy::too_many_arguments)] // the sending loop's parts, each its own concern
async fn sender_loop(
    config: Config,
    sid: String,
    ledger: SharedLedger,
    pacer: Arc<Pacer>,
    state: Arc<DaemonState>,
    work: Arc<Notify>,
    scan_now: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut alerts = Alerts::default();
    let mut failed: Option<(Secret, Instant)> = None;
    let pause = |d: Duration| {
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.cancelled() => {}
            }
        }
    };
    // Answers received but not yet recorded (the ledger's disk was full): kept across
    // sending sessions, recorded before anything else is sent.
    let mut backlog = Vec::new();
    let mut ledger_retry = Duration::from_secs(1);
    while !stop.is_cancelled() {
        let token = match config.impact.auth_token() {
            Ok(t) => t,
            Err(e) => {
                alerts.raise(&e.to_string(), &state);
                pause(TOKEN_CHECK_EVERY).await;
                continue;
            }
        };
        if let Some((bad, since)) = &failed {
            if *bad == token && since.elapsed() < RETRY_SAME_TOKEN_AFTER {
                pause(TOKEN_CHECK_EVERY).await;
                continue;
            }
        }
        let client = match Client::new(&config.impact, &sid, token.clone()) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                alerts.raise(&e.to_string(), &state);
                pause(TOKEN_CHECK_EVERY).await;
                continue;
            }
        };
        let opts = submit::Options {
            max_in_flight: config.impact.max_in_flight,
            give_up_after: None,
            retry_cap: Duration::from_secs(config.impact.retry_cap_secs),
        };
        let progress: Arc<dyn submit::Progress> = state.clone();
        let result = submit::send_pending(
            ledger.clone(),
            client,
            pacer.clone(),
            opts,
            stop.clone(),
            progress,
            Some(submit::Feed {
                notify: work.clone(),
                open: Default::default(),
            }),
            &mut backlog,
        )
        .await;
        if result.is_ok() {
            ledger_retry = Duration::from_secs(1);
            // Nothing left to send now: the space of the bodies sent goes back to the disk.
            if let Err(e) = with_ledger(&ledger, |l| l.reclaim()).await {
                tracing::warn!("{e}");
            }
        }
        match result {
            Err(e) => {
                alerts.raise(
                    &format!(
                        "the ledger cannot be written ({e}); {} answers from impact are kept in \
                         memory until they can be recorded, and nothing more is sent until then",
                        backlog.len()
                    ),
                    &state,
                );
                tracing::info!(
                    "trying again to record {} answers in {}s",
                    backlog.len(),
                    ledger_retry.as_secs()
                );
                pause(ledger_retry).await;
                ledger_retry = (ledger_retry * 2).min(Duration::from_secs(30));
            }
            Ok(s) if s.fatal.is_some() => {
                let msg = s.fatal.unwrap_or_default();
                alerts.raise(&msg, &state);
                let m = msg.clone();
                let _ = with_ledger(&ledger, move |l| l.set_last_fatal(Some(&m))).await;
                failed = Some((token, Instant::now()));
            }
            Ok(s) if s.interrupted => return,
            Ok(_) => {
                if failed.take().is_some() {
                    tracing::info!("credentials work again: sending resumed");
                    let _ = with_ledger(&ledger, |l| l.set_last_fatal(None)).await;
                }
                alerts.clear(&state);
                // Let the scanner finish files whose conversions just became final.
                scan_now.notify_one();
                tokio::select! {
                    _ = work.notified() => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// A problem that stops sending, logged when it starts and every `ALERT_EVERY` after.
#[derive(Default)]
struct Alerts {
    last: Option<Instant>,
}

impl Alerts {
    fn raise(&mut self, msg: &str, state: &DaemonState) {
        state.set_problem(Some(msg.to_owned()));
        if self.last.is_none_or(|t| t.elapsed() >= ALERT_EVERY) {
            tracing::error!(
                "{msg}; sending is paused (scanning goes on); this alert repeats every {} minutes",
                ALERT_EVERY.as_secs() / 60
            );
            self.last = Some(Instant::now());
        }
    }

    fn clear(&mut self, state: &DaemonState) {
        self.last = None;
        state.set_problem(None);
    }
}
