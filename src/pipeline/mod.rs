//! The delivery service, the one module that wires the stages, used by `run`, `send`,
//! `send --dry-run` and `watch` alike:
//!
//! `intake`: a file's content hash → ledger dedup → the core's intake (read … validate) →
//! the content verified unchanged → plan against the ledger → recorded (or, in a dry run, only
//! reported); a large file is hashed by its first pass and recorded in parts as the second
//! proves its rows unchanged. `deliver` (run/send): intake of every file while `submit` sends
//! what is recorded, then `finish`: rejects file and archive once every conversion of a file
//! is final.
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

impl PlanCounts {
    /// Adds one part's plan (its bodies stay in the plan).
    fn add(&mut self, p: &plan::Plan) {
        self.queued += p.send.len() as u64;
        self.already_sent += p.already_sent;
        self.already_pending += p.already_pending;
        self.already_rejected += p.already_rejected;
        self.resent_accepted += p.resent_accepted;
        self.changed.extend(p.changed.iter().cloned());
    }
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
    /// Told how many conversions each recorded part of a large file queued.
    on_part: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

/// Conversions per recorded part of a large file.
pub const PART: usize = 2048;

/// What intake does with a file's content, given what the ledger knows of it.
enum Known {
    Taken(Intake),
    Plan(PlanFile, Option<i64>),
}

/// The parts of a large file's plan, recorded as its conversions are handed on.
struct Parts<'a> {
    delivery: &'a Delivery,
    file: PlanFile,
    mode: Mode,
    resuming: Option<i64>,
    held: Vec<(crate::validate::Conversion, String)>,
    plan: PlanCounts,
    /// A part that could not be recorded: nothing more is (the file is read again later).
    failed: Option<DeliverError>,
    shown: &'a str,
}

impl<'a> Parts<'a> {
    fn new(
        delivery: &'a Delivery,
        file: PlanFile,
        mode: Mode,
        resuming: Option<i64>,
        shown: &'a str,
    ) -> Parts<'a> {
        Parts {
            delivery,
            file,
            mode,
            resuming,
            held: Vec::new(),
            plan: PlanCounts::default(),
            failed: None,
            shown,
        }
    }

    fn push(&mut self, c: crate::validate::Conversion) {
        if self.failed.is_some() {
            return;
        }
        let body = form::encode(&c);
        self.held.push((c, body));
        if self.held.len() >= PART {
            if let Err(e) = self.record(None) {
                self.failed = Some(e);
            }
        }
    }

    /// Plans and records what is held (with the rest of the file's rows and its counts when
    /// `tail` is the finished report, which completes the plan); returns the file's id.
    fn record(&mut self, tail: Option<&mut FileReport>) -> Result<i64, DeliverError> {
        let counts = tail.as_deref().map(file_counts);
        let mut conversions = std::mem::take(&mut self.held);
        let mut ledger = lock(&self.delivery.ledger)?;
        let p = plan_part(&ledger, &mut conversions, tail, self.mode, self.resuming)?;
        let (file_id, _) =
            ledger.record_plan_part(&self.file, &p.send, &p.lines, counts.as_ref())?;
        drop(ledger);
        self.file = PlanFile::Existing(file_id);
        warn_changed(&p.changed, self.shown);
        self.plan.add(&p);
        if let Some(hook) = &self.delivery.on_part {
            hook(p.send.len() as u64);
        }
        Ok(file_id)
    }
}

/// Plans conversions (sorted by first line here) against the ledger; with the file's
/// `report`, its invalid, filtered, stray and refused rows too.
fn plan_part(
    ledger: &Ledger,
    conversions: &mut [(crate::validate::Conversion, String)],
    report: Option<&mut FileReport>,
    mode: Mode,
    resuming: Option<i64>,
) -> Result<plan::Plan, DeliverError> {
    // Orders arrive as they complete; they are planned (and sent) in file order.
    conversions.sort_by_key(|(c, _)| c.lines().first().map(|l| l.line));
    let keys: Vec<_> = conversions.iter().map(|(c, _)| c.key()).collect();
    let known = ledger.known(&keys)?;
    // Line hashes matter only for orders already accepted (to name the new lines): those
    // conversions' own lines.
    let accepted: Vec<i64> = conversions
        .iter()
        .filter_map(|(c, _)| known.get(c.key()))
        .filter(|k| k.state == ConvState::Accepted)
        .map(|k| k.id)
        .collect();
    let known_lines: HashSet<LineHash> = ledger.known_lines(&accepted)?;
    let Some(report) = report else {
        return Ok(plan::plan(
            conversions,
            &[],
            &[],
            &[],
            &plan::Refused::default(),
            &known,
            &known_lines,
            mode,
            resuming,
        ));
    };
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
    let refused = plan::Refused {
        lines: std::mem::take(&mut report.refused),
        problems: report.file_problems.clone(),
    };
    Ok(plan::plan(
        conversions,
        &report.invalid,
        &report.filtered,
        &strays,
        &refused,
        &known,
        &known_lines,
        mode,
        resuming,
    ))
}

fn file_counts(report: &FileReport) -> FileCounts {
    FileCounts {
        rows: report.rows,
        skipped_lines: report.skipped.blank + report.skipped.repeated_headers,
        invalid_orders: report.invalid.len() as u64,
    }
}

fn warn_changed(changed: &[Changed], shown: &str) {
    for c in changed {
        tracing::warn!(file = %shown, order_id = %c.key.order_id, "order changed after it was sent; adjust it in impact (lines {:?})", c.lines);
    }
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
            on_part: None,
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

    /// Calls `hook` with the number of conversions queued each time part of a large file's
    /// plan is recorded (the sender can start on them while the rest is read).
    pub fn on_part(mut self, hook: Arc<dyn Fn(u64) + Send + Sync>) -> Delivery {
        self.on_part = Some(hook);
        self
    }

    /// Takes one file in (blocking: reads the file and the ledger). A file read in two passes
    /// (see [`crate::intake::in_two_passes`]) is recorded in parts as it is read; a small one
    /// in one transaction once read.
    pub fn intake(&self, path: &Path, mode: Mode, record: Record) -> Result<Intake, DeliverError> {
        if let (Record::Yes { run_id }, true) = (record, crate::intake::in_two_passes(path)) {
            return self.intake_in_parts(path, mode, run_id);
        }
        let io = |e| DeliverError::Io {
            path: path.to_owned(),
            source: e,
        };
        let (hash, size) = content_hash(path).map_err(io)?;
        let shown = path.display().to_string();
        let file = match self.known_file(&hash, path, mode, record, size)? {
            Known::Taken(intake) => return Ok(intake),
            Known::Plan(file, _) => file,
        };
        if record != Record::DryRun {
            fault_hook_after_hash();
        }
        let mut conversions = Vec::new();
        let mut report = process_file(&self.stages, path, &mut |c| {
            let body = form::encode(&c);
            conversions.push((c, body));
        })?;
        self.say_ignored(&report, &shown);
        // The content must still be what was hashed: a file rewritten or truncated while it
        // was read is not planned (no order goes with part of its rows); it is read again
        // once it settles.
        let (after, _) = content_hash(path).map_err(io)?;
        if after != hash {
            return Err(ReadError::Changed {
                path: path.to_owned(),
                line: None,
            }
            .into());
        }
        let Record::Yes { run_id } = record else {
            let ledger = lock(&self.ledger)?;
            let p = plan_part(&ledger, &mut conversions, Some(&mut report), mode, None)?;
            let mut plan = PlanCounts::default();
            plan.add(&p);
            plan.would_send = p.send;
            return Ok(Intake::Planned {
                file_id: None,
                report: Box::new(report),
                plan,
            });
        };
        // The whole file is one part, its last.
        let mut parts = Parts::new(self, file, mode, None, &shown);
        parts.held = conversions;
        self.last_part(parts, report, run_id)
    }

    /// Records the last part of a file's plan (the rest of its conversions, its invalid,
    /// filtered and stray rows, its counts) and, for a replay, the replay itself.
    fn last_part(
        &self,
        mut parts: Parts<'_>,
        mut report: FileReport,
        run_id: i64,
    ) -> Result<Intake, DeliverError> {
        let file_id = parts.record(Some(&mut report))?;
        if let Mode::Replay { resend_accepted } = parts.mode {
            lock(&self.ledger)?.record_replay(
                run_id,
                file_id,
                resend_accepted,
                parts.plan.queued,
            )?;
        }
        Ok(Intake::Planned {
            file_id: Some(file_id),
            report: Box::new(report),
            plan: parts.plan,
        })
    }

    /// What the ledger already knows of content `hash` at `path`: a duplicate or a file to
    /// resume (taken), or how to record its plan (with the file whose recorded part is
    /// resumed, if any).
    fn known_file(
        &self,
        hash: &str,
        path: &Path,
        mode: Mode,
        record: Record,
        size: u64,
    ) -> Result<Known, DeliverError> {
        let shown = path.display().to_string();
        let found = lock(&self.ledger)?.file_by_hash(hash)?;
        Ok(match (found, mode) {
            (Some(f), Mode::Normal) if f.state == FileState::Processing && f.path == shown => {
                if f.plan_complete {
                    return Ok(Known::Taken(Intake::Resumed { file_id: f.id }));
                }
                // Recorded in part when an earlier run stopped: the rest is read now.
                tracing::info!(file = %shown, "part of this file was recorded when an earlier run stopped; reading the rest");
                Known::Plan(PlanFile::Existing(f.id), Some(f.id))
            }
            (Some(f), Mode::Normal) => {
                let file_id = match record {
                    Record::Yes { .. } => {
                        lock(&self.ledger)?.insert_duplicate(hash, &shown, size, f.id)?
                    }
                    Record::DryRun => f.id,
                };
                tracing::debug!(file = %shown, duplicate_of = f.id, "same content as {}: nothing sent", f.path);
                Known::Taken(Intake::Duplicate { file_id, of: f })
            }
            (Some(f), Mode::Replay { .. }) => Known::Plan(PlanFile::Existing(f.id), None),
            (None, _) => Known::Plan(
                PlanFile::New {
                    content_hash: hash.to_owned(),
                    path: shown,
                    size,
                    mtime: mtime_text(path),
                },
                None,
            ),
        })
    }

    /// Fields the endpoint does not define: a line each when few, else one line naming them
    /// (`check` gives each with its column).
    fn say_ignored(&self, report: &FileReport, shown: &str) {
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
    }

    /// A large file, recorded in parts as it is read, so its first conversions go out while
    /// the rest is read and memory does not grow with the file. The first pass hashes the
    /// file and marks the last row of each order; the second hands each order on once every
    /// row it uses is proven the same as in the first pass, and parts of [`PART`]
    /// conversions are planned and recorded, each in its own transaction. The last part
    /// (the rest, the invalid and filtered rows, the file's counts) completes the plan; a
    /// run that stops before it reads the file again and records the rest (`resuming`).
    fn intake_in_parts(
        &self,
        path: &Path,
        mode: Mode,
        run_id: i64,
    ) -> Result<Intake, DeliverError> {
        let shown = path.display().to_string();
        let first = crate::intake::first_pass(&self.stages, path)?;
        let (file, resuming) = match self.known_file(
            &first.content_hash,
            path,
            mode,
            Record::Yes { run_id },
            first.size,
        )? {
            Known::Taken(intake) => return Ok(intake),
            Known::Plan(file, resuming) => (file, resuming),
        };
        fault_hook_after_hash();
        let mut parts = Parts::new(self, file, mode, resuming, &shown);
        let read = crate::intake::second_pass(&self.stages, path, &first, &mut |c| parts.push(c));
        if let Some(e) = parts.failed.take() {
            return Err(e);
        }
        let report = read?;
        self.say_ignored(&report, &shown);
        self.last_part(parts, report, run_id)
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
        if same && record.as_ref().is_some_and(|r| !r.plan_complete) {
            // Recorded in part: the rest is read (and recorded) by the next run first.
            return Ok(None);
        }
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

/// `run` and `send`: every file taken in (read, planned, recorded) while what is recorded is
/// submitted (each file, or part of a large one, before any of its conversions is sent);
/// then every file whose conversions are final is finished. `progress` starts with the
/// conversions already pending and grows as files are recorded.
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
    let follow = arm_follow_up(config, &ledger).await?;
    let client = Arc::new(
        Client::new(&config.impact, &sid, token)
            .map_err(|e| DeliverError::Client(e.to_string()))?,
    );
    let pacer = Arc::new(Pacer::new(config.impact.requests_per_hour));

    // Intake and sending at once: each file (or part of a large one) is recorded before
    // any of its conversions is sent, and sent while the next is read.
    let pending_before = with_ledger(&ledger, |l| l.pending_count()).await?;
    let progress = progress(pending_before, config.impact.requests_per_hour);
    let feed = submit::Feed::opened();
    let delivery = Arc::new(Delivery::new(config.clone(), ledger.clone()).on_part({
        let (progress, feed) = (progress.clone(), feed.clone());
        Arc::new(move |n| {
            progress.queued(n);
            feed.notify.notify_one();
        })
    }));
    let intake = {
        let paths = request_paths(config, request.files.as_deref())?;
        let (delivery, feed, cancel, mode) =
            (delivery.clone(), feed.clone(), cancel.clone(), request.mode);
        let pacer = pacer.clone();
        tokio::spawn(async move {
            let result = intake_all(delivery.clone(), paths, mode, run_id, cancel).await;
            feed.close();
            // The time the whole backlog takes at the account's budget.
            let ledger = delivery.ledger.clone();
            if let Ok(pending) = with_ledger(&ledger, |l| l.pending_count()).await {
                if let Some((_, text)) = pacer
                    .eta(pending)
                    .filter(|(eta, _)| *eta >= Duration::from_secs(60))
                {
                    tracing::info!(
                        "{text}; raise [impact] requests_per_hour only if impact raised your account's limit"
                    );
                }
            }
            result
        })
    };
    // Submit everything pending (this run's, as it is recorded, and any left from before).
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
        progress,
        Some(feed),
        &mut backlog,
    )
    .await;
    let taken = intake.await.map_err(task_failed)?;
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
    let (mut seen, unreadable) = taken?;
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
    // The space of the bodies sent goes back to the disk.
    if let Err(e) = with_ledger(&ledger, |l| l.reclaim()).await {
        tracing::warn!("{e}");
    }
    Ok(Delivered {
        seen,
        unreadable,
        summary,
        pending: left,
        followed,
        at_impact,
    })
}

/// Takes every file in, in order (stopping at a fatal error, or before the next file once
/// `cancel` fires): the files seen and those that could not be read.
async fn intake_all(
    delivery: Arc<Delivery>,
    paths: Vec<PathBuf>,
    mode: Mode,
    run_id: i64,
    cancel: CancellationToken,
) -> Result<(Vec<Seen>, Vec<DeliverError>), DeliverError> {
    let mut seen: Vec<Seen> = Vec::new();
    let mut unreadable = Vec::new();
    for path in paths {
        if cancel.is_cancelled() {
            break;
        }
        let (d, p) = (delivery.clone(), path.clone());
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
    Ok((seen, unreadable))
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
