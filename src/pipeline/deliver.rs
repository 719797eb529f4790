//! Delivery: a file's content hash → ledger dedup → read … validate → plan → record pending
//! → (submit, in `submit`) → rejects file and archive once every conversion is final.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{process_file, FileReport, Stages};
use crate::archive::{content_hash, dated_dir, move_into, mtime_text, write_rejects};
use crate::config::Config;
use crate::impact::form;
use crate::ledger::{ConvState, FileCounts, FileRecord, LedgerError, PlanFile};
use crate::model::{LineHash, LineRef, Problem};
use crate::plan::{self, Changed, Mode};
use crate::read::ReadError;
use crate::submit::SharedLedger;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DeliverError {
    /// Fatal errors stop the command (the ledger cannot be written); the rest cost one file.
    pub fn is_fatal(&self) -> bool {
        matches!(self, DeliverError::Ledger(_))
    }
}

/// What a file's plan decided, for the report.
#[derive(Debug, Default)]
pub struct PlanCounts {
    pub queued: u64,
    pub already_sent: u64,
    pub already_pending: u64,
    pub already_rejected: u64,
    pub resent_accepted: u64,
    pub changed: Vec<Changed>,
}

/// What intake did with a file.
#[derive(Debug)]
pub enum Intake {
    /// Read, planned and recorded (new content, or a replay of known content).
    Planned {
        file_id: i64,
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

pub struct Deliverer {
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

impl Deliverer {
    pub fn new(config: Config, ledger: SharedLedger) -> Deliverer {
        Deliverer {
            stages: Stages::from_config(&config),
            config,
            ledger,
        }
    }

    /// Takes one file in (blocking: reads the file and the ledger).
    pub fn intake(&self, path: &Path, mode: Mode, run_id: i64) -> Result<Intake, DeliverError> {
        let io = |e| DeliverError::Io {
            path: path.to_owned(),
            source: e,
        };
        let (hash, size) = content_hash(path).map_err(io)?;
        let shown = path.display().to_string();
        let found = lock(&self.ledger)?.file_by_hash(&hash)?;
        let file = match (found, mode) {
            (Some(f), Mode::Normal) if f.state == "processing" && f.path == shown => {
                return Ok(Intake::Resumed { file_id: f.id });
            }
            (Some(f), Mode::Normal) => {
                let file_id = lock(&self.ledger)?.insert_duplicate(&hash, &shown, size, f.id)?;
                tracing::info!(file = %shown, duplicate_of = f.id, "same content as {}: nothing sent", f.path);
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
        fault_hook_after_hash();
        let mut conversions = Vec::new();
        let report = process_file(&self.stages, path, &mut |c| {
            let body = form::encode(&c);
            conversions.push((c, body));
        })?;
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
        let p = plan::plan(
            &conversions,
            &report.invalid,
            &report.filtered,
            &strays,
            &known,
            &known_lines,
            mode,
        );
        let counts = FileCounts {
            rows: report.rows,
            skipped_lines: report.skipped.blank + report.skipped.repeated_headers,
            invalid_orders: report.invalid.len() as u64,
        };
        let (file_id, _) = ledger.record_plan(&file, &p.send, &p.lines, &counts)?;
        if let Mode::Replay { resend_accepted } = mode {
            ledger.record_replay(run_id, file_id, resend_accepted, p.send.len() as u64)?;
        }
        for c in &p.changed {
            tracing::warn!(file = %shown, order_id = %c.key.order_id, "order changed after it was sent; adjust it in impact (lines {:?})", c.lines);
        }
        Ok(Intake::Planned {
            file_id,
            report: Box::new(report),
            plan: PlanCounts {
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
            done.rejects = Some(write_rejects(path, &self.stages, &lines, &dir).map_err(io)?);
        }
        if archive && same {
            done.archived_to = Some(move_into(path, &dir).map_err(io)?);
            // In marker mode the marker goes with its file.
            if let Some(m) = &self.config.source.ready_marker {
                let marker = crate::watch::marker_path(path, m);
                if marker.exists() {
                    move_into(&marker, &dir).map_err(io)?;
                }
            }
        }
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        lock(&self.ledger)?.finish_file(
            file_id,
            shown(&done.archived_to).as_deref(),
            shown(&done.rejects).as_deref(),
        )?;
        Ok(Some(done))
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
/// set: after hashing a file, intake writes `<dir>/hashed` and waits (at most 30 s) for
/// `<dir>/go`, so a test can change the file exactly between the hash and the read.
fn fault_hook_after_hash() {
    let Some(dir) = std::env::var_os("IMPACT_DROP_FAULT_HOOK_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::write(dir.join("hashed"), b"");
    let start = std::time::Instant::now();
    while !dir.join("go").exists() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
