//! The delivery service, the one module that wires the stages, used by `run`, `send`,
//! `send --dry-run` and `watch` alike:
//!
//! `intake`: a file's content hash → ledger dedup → the core's intake (read … validate) →
//! the content verified unchanged → plan against the ledger → recorded (or, in a dry run, only
//! reported); `deliver` (run/send): intake of every file, then `submit`, then `finish`;
//! `finish`: rejects file and archive once every conversion of a file is final.
//!
//! A dry run goes through the very same `intake` with a read-only ledger (or an empty one),
//! so what it predicts is what a run would send.

pub mod daemon;
pub mod health;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::archive::{self, content_hash, dated_dir, move_into, mtime_text, write_rejects};
use crate::config::{Config, ConfigError};
use crate::followup;
use crate::impact::client::Client;
use crate::impact::form;
use crate::impact::pacing::Pacer;
use crate::intake::{process_file, FileReport, Stages};
use crate::ledger::{
    with_ledger, ConvState, FileCounts, FileRecord, FileState, Ledger, LedgerError, NewConversion,
    PlanFile, SharedLedger,
};
use crate::model::{LineHash, LineRef, Problem};
use crate::plan::{self, Changed, Mode};
use crate::read::ReadError;
use crate::submit::{self, Progress, Summary};

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Plain http to another host: conversions and the token would cross the network
    /// unencrypted.
    #[error("{0}")]
    Transport(String),
    #[error(
        "cannot read the drop folder {dir}: {source}; check [source] drop_dir",
        dir = .dir.display()
    )]
    DropDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error(transparent)]
    FolderInUse(#[from] crate::watch::FolderInUse),
    #[error(
        "the ledger {ledger} is empty, but {archive} holds {archived} archived exports that an \
         earlier ledger sent: with a fresh ledger they would be sent again if they come back. \
         Restore the earlier ledger (or point [ledger] path at it); to start a new ledger on \
         purpose, run once with --new-ledger",
        ledger = .ledger.display(),
        archive = .archive.display()
    )]
    NewLedger {
        ledger: PathBuf,
        archive: PathBuf,
        archived: usize,
    },
}

/// A start with an empty ledger while the archive holds exports is refused unless the
/// operator says it is a new ledger on purpose (`--new-ledger`): a lost or replaced ledger
/// must be an alarm, not a fresh start that pays everything again.
pub fn guard_new_ledger(config: &Config, ledger: &Ledger) -> Result<(), DeliverError> {
    if config.allow_new_ledger {
        return Ok(());
    }
    let recorded: u64 = ledger
        .counts_by_state::<FileState>()?
        .iter()
        .map(|(_, n)| n)
        .sum();
    if recorded > 0 {
        return Ok(());
    }
    let archive = crate::watch::WatchOptions::from_config(config).archive_dir;
    let archived = std::fs::read_dir(&archive)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|day| day.path().is_dir())
        .flat_map(|day| {
            std::fs::read_dir(day.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            !name.contains(".rejects.") && crate::read::FileKind::from_path(&f.path()).is_some()
        })
        .count();
    if archived > 0 {
        return Err(DeliverError::NewLedger {
            ledger: config.ledger.path.clone(),
            archive,
            archived,
        });
    }
    Ok(())
}

impl DeliverError {
    /// Fatal errors stop the command (the ledger cannot be written); the rest cost one file.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DeliverError::Read(_) | DeliverError::Io { .. })
    }
}

fn task_failed(e: tokio::task::JoinError) -> DeliverError {
    DeliverError::Task(e.to_string())
}

/// What a file's plan decided, for the report.
#[derive(Debug, Default)]
pub struct PlanCounts {
    pub queued: u64,
    /// In a dry run: the conversions that would be sent, with their bodies.
    pub would_send: Vec<NewConversion>,
    pub already_sent: u64,
    pub already_pending: u64,
    pub already_rejected: u64,
    pub resent_accepted: u64,
    pub changed: Vec<Changed>,
}

/// What intake did with a file.
#[derive(Debug)]
pub enum Intake {
    /// Read, planned and recorded (new content, or a replay of known content). In a dry run
    /// nothing is recorded and `file_id` is `None`.
    Planned {
        file_id: Option<i64>,
        report: Box<FileReport>,
        plan: PlanCounts,
    },
    /// The same content as a file seen before: nothing is sent.
    Duplicate { file_id: i64, of: FileRecord },
    /// This very file was being processed when an earlier run stopped: its conversions are
    /// in the ledger and go from there.
    Resumed { file_id: i64 },
}

/// How a file ended up once its conversions were all final.
#[derive(Debug, Default)]
pub struct Finished {
    pub archived_to: Option<PathBuf>,
    pub rejects: Option<PathBuf>,
    /// Rows in the rejects file.
    pub rejected_rows: usize,
    /// The file changed on disk since it was read: left in place to be read again.
    pub changed_on_disk: bool,
}

impl Intake {
    /// The file's id in the ledger (`None` only for a file a dry run would record).
    pub fn file_id(&self) -> Option<i64> {
        match self {
            Intake::Planned { file_id, .. } => *file_id,
            Intake::Duplicate { file_id, .. } | Intake::Resumed { file_id } => Some(*file_id),
        }
    }
}

/// Whether intake records what it decides (`run`, `send`, `watch`) or only reports it
/// (`send --dry-run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Yes { run_id: i64 },
    DryRun,
}

/// The delivery service: a config, the core's stages built from it, and the ledger.
pub struct Delivery {
    pub config: Config,
    pub stages: Stages,
    pub ledger: SharedLedger,
}

fn lock(
    ledger: &SharedLedger,
) -> Result<std::sync::MutexGuard<'_, crate::ledger::Ledger>, LedgerError> {
    ledger
        .lock()
        .map_err(|_| LedgerError::Internal("the ledger lock was poisoned".into()))
}

impl Delivery {
    pub fn new(config: Config, ledger: SharedLedger) -> Delivery {
        Delivery {
            stages: config.stages(),
            config,
            ledger,
        }
    }

    /// For a dry run: the ledger read-only without its lock, or an empty one when none
    /// exists yet.
    pub fn read_only(config: Config) -> Result<Delivery, DeliverError> {
        let ledger = match Ledger::open_read(&config.ledger.path) {
            Ok(l) => l,
            Err(LedgerError::Missing { .. }) => Ledger::in_memory()?,
            Err(e) => return Err(e.into()),
        };
        Ok(Delivery::new(config, Arc::new(Mutex::new(ledger))))
    }

    /// Takes one file in (blocking: reads the file and the ledger).
    pub fn intake(&self, path: &Path, mode: Mode, record: Record) -> Result<Intake, DeliverError> {
        let io = |e| DeliverError::Io {
            path: path.to_owned(),
            source: e,
        };
        let (hash, size) = content_hash(path).map_err(io)?;
        let shown = path.display().to_string();
        let found = lock(&self.ledger)?.file_by_hash(&hash)?;
        let file = match (found, mode) {
            (Some(f), Mode::Normal) if f.state == FileState::Processing && f.path == shown => {
                return Ok(Intake::Resumed { file_id: f.id });
            }
            (Some(f), Mode::Normal) => {
                let file_id = match record {
                    Record::Yes { .. } => {
                        lock(&self.ledger)?.insert_duplicate(&hash, &shown, size, f.id)?
                    }
                    Record::DryRun => f.id,
                };
                tracing::debug!(file = %shown, duplicate_of = f.id, "same content as {}: nothing sent", f.path);
                return Ok(Intake::Duplicate { file_id, of: f });
            }
            (Some(f), Mode::Replay { .. }) => PlanFile::Existing(f.id),
            (None, _) => PlanFile::New {
                content_hash: hash.clone(),
                path: shown.clone(),
                size,
                mtime: mtime_text(path),
            },
        };
        if record != Record::DryRun {
            fault_hook_after_hash();
        }
        let mut conversions = Vec::new();
        let mut report = process_file(&self.stages, path, &mut |c| {
            let body = form::encode(&c);
            conversions.push((c, body));
        })?;
        // Orders arrive as they complete; they are planned (and sent) in file order.
        conversions.sort_by_key(|(c, _)| c.lines().first().map(|l| l.line));
        // Fields the endpoint does not define: a line each when few, else one line naming
        // them (`check` gives each with its column).
        let endpoint = self.config.impact.endpoint;
        if report.ignored.len() <= 3 {
            for (field, from) in &report.ignored {
                let note = crate::intake::not_sent_note(endpoint, *field, from);
                tracing::info!(file = %shown, "{note}");
            }
        } else {
            let names: Vec<&str> = report.ignored.iter().map(|(f, _)| f.name()).collect();
            tracing::info!(
                file = %shown,
                "impact's {} endpoint ignores {} fields of this file, not sent: {} (`impact-drop check` names their columns)",
                endpoint.as_str(),
                names.len(),
                names.join(", ")
            );
        }
        // The content must still be what was hashed: a file rewritten or truncated while it
        // was read is not planned (no order goes with part of its rows); it is read again
        // once it settles.
        let (after, _) = content_hash(path).map_err(io)?;
        if after != hash {
            return Err(DeliverError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(
                    "the file changed while it was read; nothing was recorded, it is read again once it settles",
                ),
            });
        }
        let mut strays: BTreeMap<u64, (LineRef, Vec<Problem>)> = report
            .stray_lines
            .iter()
            .map(|l| (l.line, (*l, Vec::new())))
            .collect();
        for p in &report.stray_problems {
            if let Some(entry) = p.line.and_then(|l| strays.get_mut(&l)) {
                entry.1.push(p.clone());
            }
        }
        let strays: Vec<(LineRef, Vec<Problem>)> = strays.into_values().collect();

        let mut ledger = lock(&self.ledger)?;
        let keys: Vec<_> = conversions.iter().map(|(c, _)| c.key()).collect();
        let known = ledger.known(&keys)?;
        // Line hashes matter only for orders already accepted (to name the new lines).
        let hashes: Vec<LineHash> = conversions
            .iter()
            .filter(|(c, _)| {
                known
                    .get(c.key())
                    .is_some_and(|k| k.state == ConvState::Accepted)
            })
            .flat_map(|(c, _)| c.lines().iter().map(|l| l.hash))
            .collect();
        let known_lines: HashSet<LineHash> = ledger.known_lines(&hashes)?;
        let refused = plan::Refused {
            lines: std::mem::take(&mut report.refused),
            problems: report.file_problems.clone(),
        };
        let p = plan::plan(
            &conversions,
            &report.invalid,
            &report.filtered,
            &strays,
            &refused,
            &known,
            &known_lines,
            mode,
        );
        let counts = FileCounts {
            rows: report.rows,
            skipped_lines: report.skipped.blank + report.skipped.repeated_headers,
            invalid_orders: report.invalid.len() as u64,
        };
        let Record::Yes { run_id } = record else {
            return Ok(Intake::Planned {
                file_id: None,
                report: Box::new(report),
                plan: PlanCounts {
                    queued: p.send.len() as u64,
                    already_sent: p.already_sent,
                    already_pending: p.already_pending,
                    already_rejected: p.already_rejected,
                    resent_accepted: p.resent_accepted,
                    changed: p.changed,
                    would_send: p.send,
                },
            });
        };
        let (file_id, _) = ledger.record_plan(&file, &p.send, &p.lines, &counts)?;
        if let Mode::Replay { resend_accepted } = mode {
            ledger.record_replay(run_id, file_id, resend_accepted, p.send.len() as u64)?;
        }
        for c in &p.changed {
            tracing::warn!(file = %shown, order_id = %c.key.order_id, "order changed after it was sent; adjust it in impact (lines {:?})", c.lines);
        }
        Ok(Intake::Planned {
            file_id: Some(file_id),
            report: Box::new(report),
            plan: PlanCounts {
                would_send: Vec::new(),
                queued: p.send.len() as u64,
                already_sent: p.already_sent,
                already_pending: p.already_pending,
                already_rejected: p.already_rejected,
                resent_accepted: p.resent_accepted,
                changed: p.changed,
            },
        })
    }

    /// Whether `path` sits directly in the drop folder (only those files are moved).
    pub fn in_drop_dir(&self, path: &Path) -> bool {
        let dir = std::fs::canonicalize(&self.config.source.drop_dir).ok();
        let parent = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .and_then(|p| std::fs::canonicalize(p).ok());
        dir.is_some() && dir == parent
    }

    /// The archive folder for today.
    pub fn archive_dir(&self) -> PathBuf {
        dated_dir(&self.config.source.drop_dir, &self.config.archive.dir)
    }

    /// Finishes a file whose conversions are all final: writes its rejects file (if any row
    /// needs fixing) and, when `archive` and the file's content is still what was read, moves
    /// it to the archive. Returns `None` while conversions are still pending.
    pub fn finish(
        &self,
        file_id: i64,
        path: &Path,
        archive: bool,
    ) -> Result<Option<Finished>, DeliverError> {
        let (pending, rejected, record) = {
            let ledger = lock(&self.ledger)?;
            (
                ledger.pending_in_file(file_id)?,
                ledger.rejected_lines(file_id)?,
                ledger.file(file_id)?,
            )
        };
        if pending > 0 {
            return Ok(None);
        }
        let io = |e| DeliverError::Io {
            path: path.to_owned(),
            source: e,
        };
        let mut done = Finished::default();
        let dir = self.archive_dir();
        let current = if path.exists() {
            Some(content_hash(path).map_err(io)?.0)
        } else {
            None
        };
        let same = match (&current, &record) {
            (Some(now), Some(r)) => *now == r.content_hash,
            _ => false,
        };
        if current.is_some() && !same {
            done.changed_on_disk = true;
            tracing::warn!(file = %path.display(), "the file changed since it was read; it stays in place and its new content will be read");
        }
        if !rejected.is_empty() && same {
            let lines: BTreeMap<u64, String> = rejected.into_iter().collect();
            done.rejected_rows = lines.len();
            let reading = archive::Reading {
                decoding: self.stages.decoding,
                delimiter: self.stages.delimiter,
            };
            done.rejects = Some(write_rejects(path, reading, &lines, &dir).map_err(io)?);
        }
        if current.is_none() && archive {
            // Gone from the drop folder: a crash after the move, before it was recorded.
            if let (Some(r), Some(name)) = (&record, path.file_name().and_then(|n| n.to_str())) {
                done.archived_to = crate::archive::find_archived(&dir, name, &r.content_hash);
            }
        }
        if archive && same {
            // In marker mode the marker goes first: a crash between the two moves leaves the
            // file without its marker (not ready, never half-read), never a marker without
            // its file waiting for the next upload.
            if let Some(m) = &self.config.source.ready_marker {
                let marker = crate::watch::marker_path(path, m);
                if marker.exists() {
                    move_into(&marker, &dir).map_err(io)?;
                }
            }
            done.archived_to = Some(move_into(path, &dir).map_err(io)?);
        }
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        lock(&self.ledger)?.finish_file(
            file_id,
            shown(&done.archived_to).as_deref(),
            shown(&done.rejects).as_deref(),
        )?;
        // Failures impact reported before the file was finished go next to its archived copy.
        self.write_failed_at_impact(file_id)?;
        Ok(Some(done))
    }

    /// Writes (again) a file's `<name>.failed-at-impact.<ext>` next to its archived copy (or,
    /// for a file left in place, in the archive folder where its rejects go), from the copy
    /// whose content is still what was read. Returns `None` when no row failed, or when no
    /// copy with that content is left to read the rows from (said in the log).
    pub fn write_failed_at_impact(&self, file_id: i64) -> Result<Option<PathBuf>, DeliverError> {
        let (lines, places) = {
            let l = lock(&self.ledger)?;
            (l.failed_at_impact_lines(file_id)?, l.file_places(file_id)?)
        };
        let Some(places) = places.filter(|_| !lines.is_empty()) else {
            return Ok(None);
        };
        let candidates = [places.archived_to.as_deref(), Some(places.path.as_str())];
        let Some(src) = candidates
            .into_iter()
            .flatten()
            .map(PathBuf::from)
            .find(|p| p.exists() && content_hash(p).is_ok_and(|(h, _)| h == places.content_hash))
        else {
            tracing::warn!(
                file = %places.path,
                "{} rows failed at impact, but no copy of the file as it was read is left to write them out; status lists them",
                lines.len()
            );
            return Ok(None);
        };
        let dir = match &places.archived_to {
            Some(a) if Path::new(a) == src => src
                .parent()
                .map_or_else(|| self.archive_dir(), Path::to_path_buf),
            _ => self.archive_dir(),
        };
        let reading = archive::Reading {
            decoding: self.stages.decoding,
            delimiter: self.stages.delimiter,
        };
        let lines: BTreeMap<u64, String> = lines.into_iter().collect();
        let written =
            archive::write_failed_at_impact(&src, reading, &lines, &dir).map_err(|e| {
                DeliverError::Io {
                    path: dir.clone(),
                    source: e,
                }
            })?;
        lock(&self.ledger)?.set_failed_path(file_id, &written.display().to_string())?;
        tracing::warn!(
            file = %places.path,
            "{} rows failed at impact: {}",
            lines.len(),
            written.display()
        );
        Ok(Some(written))
    }

    /// Moves a duplicate file to the archive (it is recorded; nothing of it is sent).
    pub fn archive_duplicate(&self, file_id: i64, path: &Path) -> Result<PathBuf, DeliverError> {
        let to = move_into(path, &self.archive_dir()).map_err(|e| DeliverError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        lock(&self.ledger)?.set_archived(file_id, &to.display().to_string())?;
        Ok(to)
    }
}

/// Fault injection for the reliability tests, inert unless `IMPACT_DROP_FAULT_HOOK_DIR` is
/// set (read once per process): after hashing a file, intake writes `<dir>/hashed` and waits
/// (at most 30 s) for `<dir>/go`, so a test can change the file exactly between the hash
/// and the read.
fn fault_hook_after_hash() {
    static HOOK: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(dir) =
        HOOK.get_or_init(|| std::env::var_os("IMPACT_DROP_FAULT_HOOK_DIR").map(PathBuf::from))
    else {
        return;
    };
    let _ = std::fs::write(dir.join("hashed"), b"");
    let start = std::time::Instant::now();
    while !dir.join("go").exists() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What to deliver.
pub struct Request {
    /// `run`, `send` or `demo` (recorded in the ledger's runs).
    pub command: &'static str,
    /// The command line, for the audit trail.
    pub args: String,
    /// Named files (`send`); `None` scans the drop folder (`run`).
    pub files: Option<Vec<PathBuf>>,
    pub mode: Mode,
    /// Say the start-up warnings (false for a second delivery in one process: the demo).
    pub warn: bool,
}

/// A file as one delivery saw it.
pub struct Seen {
    pub path: PathBuf,
    pub file_id: i64,
    /// `None` for a file an earlier run left unfinished.
    pub intake: Option<Intake>,
    pub finished: Option<Finished>,
    pub archived_duplicate: Option<PathBuf>,
    /// What the ledger holds for the file once the delivery ended.
    pub stats: Option<crate::ledger::FileStats>,
}

/// What one delivery did, for the command's report.
pub struct Delivered {
    pub seen: Vec<Seen>,
    /// Files that could not be taken in, with why.
    pub unreadable: Vec<DeliverError>,
    pub summary: Summary,
    /// Conversions still pending when it ended.
    pub pending: u64,
    /// What this run's follow-up found (`None`: none ran).
    pub followed: Option<followup::Summary>,
    /// Follow-up outcomes over the whole ledger when it ended.
    pub at_impact: crate::ledger::FollowCounts,
}

/// The files a request names: the named files (folders expanded), or the drop folder's
/// ready files.
pub fn request_paths(
    config: &Config,
    files: Option<&[PathBuf]>,
) -> Result<Vec<PathBuf>, DeliverError> {
    match files {
        Some(files) => Ok(crate::watch::expand_paths(files, &config.source.ignore)?),
        None => Ok(
            crate::watch::scan(&crate::watch::WatchOptions::from_config(config))
                .map_err(|source| DeliverError::DropDir {
                    dir: config.source.drop_dir.clone(),
                    source,
                })?
                .into_iter()
                .filter(|c| c.marked)
                .map(|c| c.path)
                .collect(),
        ),
    }
}

/// Checks done before anything is sent: the account, the token, the transport.
pub fn preflight(
    config: &Config,
    warn: bool,
) -> Result<(String, crate::config::Secret), DeliverError> {
    let sid = config.impact.require_account_sid()?.to_owned();
    let token = config.impact.auth_token()?;
    match config.check_transport() {
        Err(e) => return Err(DeliverError::Transport(e)),
        Ok(Some(w)) if warn => tracing::warn!("{w}"),
        Ok(_) => {}
    }
    for w in config
        .permission_warnings()
        .into_iter()
        .chain(config.endpoint_warnings())
        .filter(|_| warn)
    {
        tracing::warn!("{w}");
    }
    Ok((sid, token))
}

/// `run` and `send`: every file taken in (read, planned, recorded) before anything is sent;
/// then everything pending is submitted; then every file whose conversions are final is
/// finished. `progress` is made once the number of pending conversions is known.
pub async fn deliver(
    config: &Config,
    request: Request,
    cancel: CancellationToken,
    progress: impl FnOnce(u64, u32) -> Arc<dyn Progress>,
) -> Result<Delivered, DeliverError> {
    let (sid, token) = preflight(config, request.warn)?;
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::open(&config.ledger.path)?));
    let _folder = crate::watch::lock_folder(&config.source.drop_dir, &config.ledger.path)?;
    with_ledger(&ledger, {
        let config = config.clone();
        move |l| Ok(guard_new_ledger(&config, l))
    })
    .await??;
    let run_id = with_ledger(&ledger, {
        let (cmd, args) = (request.command, request.args.clone());
        move |l| l.start_run(cmd, &args)
    })
    .await?;
    let delivery = Arc::new(Delivery::new(config.clone(), ledger.clone()));

    // Intake: every file read, planned and recorded before anything is sent.
    let mut seen: Vec<Seen> = Vec::new();
    let mut unreadable = Vec::new();
    for path in request_paths(config, request.files.as_deref())? {
        let (d, p, mode) = (delivery.clone(), path.clone(), request.mode);
        let result =
            tokio::task::spawn_blocking(move || d.intake(&p, mode, Record::Yes { run_id }))
                .await
                .map_err(task_failed)?;
        match result {
            Ok(intake) => seen.push(Seen {
                path,
                file_id: intake.file_id().unwrap_or_default(),
                intake: Some(intake),
                finished: None,
                archived_duplicate: None,
                stats: None,
            }),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => unreadable.push(e),
        }
    }
    // Files an earlier run left unfinished are finished too.
    for f in with_ledger(&ledger, |l| l.open_files()).await? {
        if !seen.iter().any(|s| s.file_id == f.id) {
            seen.push(Seen {
                path: PathBuf::from(&f.path),
                file_id: f.id,
                intake: None,
                finished: None,
                archived_duplicate: None,
                stats: None,
            });
        }
    }

    let follow = arm_follow_up(config, &ledger).await?;
    // Submit everything pending (this run's and any left from before).
    let pending = with_ledger(&ledger, |l| l.pending_count()).await?;
    let client = Arc::new(
        Client::new(&config.impact, &sid, token)
            .map_err(|e| DeliverError::Client(e.to_string()))?,
    );
    let pacer = Arc::new(Pacer::new(config.impact.requests_per_hour));
    if let Some((_, text)) = pacer
        .eta(pending)
        .filter(|(eta, _)| *eta >= Duration::from_secs(60))
    {
        tracing::info!(
            "{text}; raise [impact] requests_per_hour only if impact raised your account's limit"
        );
    }
    let opts = submit::Options {
        max_in_flight: config.impact.max_in_flight,
        give_up_after: Some(Duration::from_secs(config.impact.give_up_after_secs)),
        retry_cap: Duration::from_secs(config.impact.retry_cap_secs),
    };
    let mut backlog = Vec::new();
    let summary = submit::send_pending(
        ledger.clone(),
        client.clone(),
        pacer.clone(),
        opts,
        cancel.clone(),
        progress(pending, config.impact.requests_per_hour),
        None,
        &mut backlog,
    )
    .await;
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            // Answers received but not recorded: try a few more times before giving up
            // (whatever stays unrecorded is sent again by the next run).
            for wait in [1, 2, 4] {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                let batch = backlog.clone();
                if with_ledger(&ledger, move |l| l.record_outcomes(&batch))
                    .await
                    .is_ok()
                {
                    backlog.clear();
                    break;
                }
            }
            return Err(e.into());
        }
    };

    // Finish: rejects files and archive for every file whose conversions are all final.
    for s in &mut seen {
        let archive = delivery.in_drop_dir(&s.path);
        let (d, id, p) = (delivery.clone(), s.file_id, s.path.clone());
        if let Some(Intake::Duplicate { .. }) = &s.intake {
            if archive && s.path.exists() {
                s.archived_duplicate =
                    tokio::task::spawn_blocking(move || d.archive_duplicate(id, &p))
                        .await
                        .ok()
                        .and_then(Result::ok);
            }
            continue;
        }
        s.finished = tokio::task::spawn_blocking(move || d.finish(id, &p, archive))
            .await
            .map_err(task_failed)??;
    }
    // Follow-up: what impact did with what it accepted (this run's and earlier), for at
    // most `run_wait_secs`; a later run or `watch` asks about the rest.
    let wait = Duration::from_secs(config.follow_up.run_wait_secs);
    let followed = if follow && !wait.is_zero() && summary.fatal.is_none() && !summary.interrupted {
        let opts = followup::Options::from_config(config.impact.endpoint, &config.follow_up);
        let until = followup::Until::Deadline(tokio::time::Instant::now() + wait);
        let d = delivery.clone();
        let write: Arc<dyn Fn(i64) + Send + Sync> = Arc::new(move |id| {
            if let Err(e) = d.write_failed_at_impact(id) {
                tracing::warn!("cannot write the rows that failed at impact: {e}");
            }
        });
        let s =
            followup::follow_up(ledger.clone(), client, pacer, opts, until, cancel, write).await?;
        Some(s)
    } else {
        None
    };
    for s in &mut seen {
        let id = s.file_id;
        s.stats = with_ledger(&ledger, move |l| l.file_stats(Some(id), 1))
            .await?
            .into_iter()
            .next();
    }
    let left = with_ledger(&ledger, |l| l.pending_count()).await?;
    let text = format!("{summary:?}; pending {left}");
    with_ledger(&ledger, move |l| l.finish_run(run_id, &text)).await?;
    // The last fatal condition, for `status`: kept while it holds, cleared once impact
    // answers again.
    let fatal = summary.fatal.clone().or_else(|| {
        followed
            .as_ref()
            .and_then(|f: &followup::Summary| f.denied.clone())
    });
    let answered = summary.accepted + summary.rejected > 0
        || followed
            .as_ref()
            .is_some_and(|f| f.asked > 0 && f.denied.is_none());
    if fatal.is_some() || answered {
        with_ledger(&ledger, move |l| l.set_last_fatal(fatal.as_deref())).await?;
    }
    let at_impact = with_ledger(&ledger, |l| l.follow_counts(None)).await?;
    Ok(Delivered {
        seen,
        unreadable,
        summary,
        pending: left,
        followed,
        at_impact,
    })
}

/// Whether this process follows accepted conversions up (`[follow_up] enabled`, and not a
/// partner account impact already said has no follow-up); tells the ledger so.
pub async fn arm_follow_up(config: &Config, ledger: &SharedLedger) -> Result<bool, LedgerError> {
    let wanted = config.follow_up.enabled;
    let first = Duration::from_secs(config.follow_up.first_check_secs);
    let partner = config.impact.endpoint == crate::config::Endpoint::Partner;
    with_ledger(ledger, move |l| {
        let refused =
            partner && followup::known_unavailable(l.meta(followup::PARTNER_KEY)?.as_deref());
        let on = wanted && !refused;
        l.set_follow_up(on.then_some(first));
        Ok(on)
    })
    .await
}

/// One dry-run result per file.
pub type DryRun = Vec<(PathBuf, Result<Intake, DeliverError>)>;

/// `send --dry-run`: the same intake as `send`, against the ledger read-only; nothing is
/// sent or recorded. One result per file.
pub fn dry_run(config: &Config, files: &[PathBuf], mode: Mode) -> Result<DryRun, DeliverError> {
    let delivery = Delivery::read_only(config.clone())?;
    Ok(request_paths(config, Some(files))?
        .into_iter()
        .map(|path| {
            let result = delivery.intake(&path, mode, Record::DryRun);
            (path, result)
        })
        .collect())
}
