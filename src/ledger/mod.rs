//! The ledger (SQLite): every file, line and conversion, and every run and replay.
//!
//! One file in WAL mode with `synchronous=FULL`. Migrations run at open, keyed by
//! `PRAGMA user_version`, inside one exclusive transaction: a migration is never removed or
//! changed incompatibly. A writer takes `<ledger>.lock` so a second instance refuses to start.
//! Readers (`status`, `--dry-run`) take no lock. Every SQL statement of the project is here.
//!
//! The commit protocol: a conversion is recorded `pending`, with its lines, *before* it is
//! POSTed. Its outcome (`accepted` with its QueuedUri, `rejected` with reasons, or back to
//! `pending` with the next retry time) is committed after the answer, with other outcomes in
//! one transaction. Pending conversions are sent again at start.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::model::{ConversionKey, LineHash};

mod schema;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "the ledger {path} is in use by another impact-drop (lock file {lock}): stop the other \
         instance first, or give this one its own [ledger] path"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "the ledger {path} was written by a newer impact-drop (schema version {found}, this \
         build knows up to {known}): upgrade impact-drop; the file was not changed"
    )]
    Newer {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "the ledger {path} is damaged ({detail}): it was not changed. Stop impact-drop, move \
         the file aside and restore a backup, or start a new ledger (conversions it recorded \
         would then not be known as sent)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the disk under the ledger {path} is full: nothing more is sent and nothing was marked; \
         free space and run again (what was not recorded is sent then)"
    )]
    DiskFull { path: PathBuf },
    #[error("the ledger {path} does not exist yet: nothing has been processed with it")]
    Missing { path: PathBuf },
    #[error("ledger {path}: {context}: {source}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        source: rusqlite::Error,
    },
    #[error("ledger: {0}")]
    Internal(String),
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, LedgerError>;

/// State of a conversion in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvState {
    Pending,
    Accepted,
    Rejected,
}

impl ConvState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConvState::Pending => "pending",
            ConvState::Accepted => "accepted",
            ConvState::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> ConvState {
        match s {
            "accepted" => ConvState::Accepted,
            "rejected" => ConvState::Rejected,
            _ => ConvState::Pending,
        }
    }
}

/// What became of one line of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineOutcome {
    /// Part of a conversion this file sends (its state says how that went).
    Sent,
    /// Invalid locally; the reason is kept and the row goes to the rejects file.
    Invalid,
    /// Its conversion was already accepted, from this content: nothing to do.
    AlreadySent,
    /// Its order was already accepted with other content: cannot be amended.
    ChangedAfterSent,
    /// Its conversion is already being sent from another file.
    AlreadyPending,
    /// Its conversion was rejected by impact with this same content before.
    AlreadyRejected,
    /// Its order was skipped by a filter (a status the operator does not send).
    Filtered,
}

impl LineOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LineOutcome::Sent => "sent",
            LineOutcome::Invalid => "invalid",
            LineOutcome::AlreadySent => "already_sent",
            LineOutcome::ChangedAfterSent => "changed_after_sent",
            LineOutcome::AlreadyPending => "already_pending",
            LineOutcome::AlreadyRejected => "already_rejected",
            LineOutcome::Filtered => "filtered",
        }
    }
}

/// A file as the ledger knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub id: i64,
    pub content_hash: String,
    pub path: String,
    pub state: String,
    pub first_seen: String,
}

/// What the ledger knows of a conversion key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub id: i64,
    pub state: ConvState,
    pub payload_hash: String,
}

/// A conversion to record as pending.
#[derive(Clone, Debug)]
pub struct NewConversion {
    pub key: ConversionKey,
    pub body: String,
    pub payload_hash: String,
    /// An existing row to send again (replay, or fixed content after a rejection).
    pub existing: Option<i64>,
}

/// One line to record, pointing at a conversion by its index in the plan's `conversions`
/// or at an existing conversion id.
#[derive(Clone, Debug)]
pub struct NewLine {
    pub line: u64,
    pub hash: LineHash,
    pub outcome: LineOutcome,
    pub conversion: Option<ConvRef>,
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub enum ConvRef {
    Planned(usize),
    Existing(i64),
}

/// A pending conversion that is due.
#[derive(Clone, Debug)]
pub struct Due {
    pub id: i64,
    pub order_id: String,
    pub body: String,
    pub attempts: u32,
    pub file_id: i64,
}

/// The result of one POST, to commit.
#[derive(Clone, Debug)]
pub enum Outcome {
    Accepted {
        id: i64,
        queued_uri: Option<String>,
        warnings: Vec<String>,
    },
    Rejected {
        id: i64,
        reasons: Vec<String>,
    },
    /// Back to pending; try again at `next_at` (RFC 3339 UTC).
    Retry {
        id: i64,
        error: String,
        next_at: String,
    },
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    _lock: Option<File>,
}

/// Now, as the ledger writes times: RFC 3339 UTC with milliseconds (sorts as text).
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

pub fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl Ledger {
    /// Opens (creating if needed) the ledger for writing: takes the single-instance lock,
    /// checks integrity and runs migrations.
    pub fn open(path: &Path) -> Result<Ledger> {
        let io = |e| LedgerError::Io {
            path: path.to_owned(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock_path = lock_path(path);
        let lock = private_file(&lock_path).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: path.to_owned(),
                    lock: lock_path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Created 0600: the ledger holds order data.
        drop(private_file(path).map_err(io)?);
        let conn = Connection::open(path).map_err(sql(path, "open"))?;
        let mut ledger = Ledger {
            conn,
            path: path.to_owned(),
            _lock: Some(lock),
        };
        ledger.setup(true)?;
        Ok(ledger)
    }

    /// Opens an existing ledger for reading only, without the lock (`status`, dry runs).
    pub fn open_read(path: &Path) -> Result<Ledger> {
        if !path.exists() {
            return Err(LedgerError::Missing {
                path: path.to_owned(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(path, "open"))?;
        let mut ledger = Ledger {
            conn,
            path: path.to_owned(),
            _lock: None,
        };
        ledger.setup(false)?;
        Ok(ledger)
    }

    /// An in-memory ledger, for tests.
    pub fn in_memory() -> Result<Ledger> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(sql(&path, "open"))?;
        let mut ledger = Ledger {
            conn,
            path,
            _lock: None,
        };
        ledger.setup(true)?;
        Ok(ledger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setup(&mut self, write: bool) -> Result<()> {
        let path = self.path.clone();
        self.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql(&path, "set busy_timeout"))?;
        let check: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| LedgerError::Corrupt {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if check != "ok" {
            return Err(LedgerError::Corrupt {
                path,
                detail: check,
            });
        }
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql(&path, "read the schema version"))?;
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(LedgerError::Newer {
                path,
                found: version,
                known,
            });
        }
        if !write {
            if version < known {
                return Err(LedgerError::Missing { path });
            }
            return Ok(());
        }
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sql(&path, "switch to WAL"))?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sql(&path, "set synchronous"))?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(sql(&path, "enable foreign keys"))?;
        schema::migrate(&mut self.conn).map_err(sql(&path, "migrate"))?;
        Ok(())
    }

    /// The first file recorded with this content (not counting duplicates).
    pub fn file_by_hash(&self, content_hash: &str) -> Result<Option<FileRecord>> {
        self.conn
            .query_row(
                "SELECT id, content_hash, path, state, first_seen FROM files
                 WHERE content_hash = ?1 AND state != 'duplicate' ORDER BY id LIMIT 1",
                [content_hash],
                file_record,
            )
            .optional()
            .map_err(sql(&self.path, "look up a file"))
    }

    pub fn file(&self, id: i64) -> Result<Option<FileRecord>> {
        self.conn
            .query_row(
                "SELECT id, content_hash, path, state, first_seen FROM files WHERE id = ?1",
                [id],
                file_record,
            )
            .optional()
            .map_err(sql(&self.path, "look up a file"))
    }

    /// Files still being processed (their conversions not all final, or not yet archived).
    pub fn open_files(&self) -> Result<Vec<FileRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, content_hash, path, state, first_seen FROM files
                 WHERE state = 'processing' ORDER BY id",
            )
            .map_err(sql(&self.path, "list open files"))?;
        let rows = stmt
            .query_map([], file_record)
            .map_err(sql(&self.path, "list open files"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list open files"))
    }

    /// Records a new file as `processing`.
    pub fn insert_file(
        &mut self,
        content_hash: &str,
        path: &str,
        size: u64,
        mtime: Option<&str>,
    ) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO files (content_hash, path, size, mtime, state, first_seen)
                 VALUES (?1, ?2, ?3, ?4, 'processing', ?5)",
                params![content_hash, path, size as i64, mtime, now_text()],
            )
            .map_err(sql(&self.path, "record a file"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a file whose content was seen before: nothing of it is sent.
    pub fn insert_duplicate(
        &mut self,
        content_hash: &str,
        path: &str,
        size: u64,
        of: i64,
    ) -> Result<i64> {
        let now = now_text();
        self.conn
            .execute(
                "INSERT INTO files (content_hash, path, size, state, duplicate_of, first_seen, finished_at)
                 VALUES (?1, ?2, ?3, 'duplicate', ?4, ?5, ?5)",
                params![content_hash, path, size as i64, of, now],
            )
            .map_err(sql(&self.path, "record a duplicate file"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// What the ledger knows of each key.
    pub fn known(&self, keys: &[&ConversionKey]) -> Result<HashMap<ConversionKey, Known>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, state, payload_hash FROM conversions
                 WHERE campaign_id = ?1 AND event_field = ?2 AND event_id = ?3 AND order_id = ?4",
            )
            .map_err(sql(&self.path, "look up conversions"))?;
        let mut out = HashMap::new();
        for key in keys {
            let found = stmt
                .query_row(
                    params![key.campaign_id, key.event_field, key.event_id, key.order_id],
                    |r| {
                        Ok(Known {
                            id: r.get(0)?,
                            state: ConvState::parse(&r.get::<_, String>(1)?),
                            payload_hash: r.get(2)?,
                        })
                    },
                )
                .optional()
                .map_err(sql(&self.path, "look up conversions"))?;
            if let Some(k) = found {
                out.insert((*key).clone(), k);
            }
        }
        Ok(out)
    }

    /// Which of these line hashes the ledger has seen in any file.
    pub fn known_lines(&self, hashes: &[LineHash]) -> Result<HashSet<LineHash>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM lines WHERE hash = ?1 LIMIT 1")
            .map_err(sql(&self.path, "look up lines"))?;
        let mut out = HashSet::new();
        for h in hashes {
            if stmt
                .exists([&h.0[..]])
                .map_err(sql(&self.path, "look up lines"))?
            {
                out.insert(*h);
            }
        }
        Ok(out)
    }

    /// Records a file's plan in one transaction: conversions become `pending` (new rows, or
    /// existing rows to send again), every line points at its outcome, and the file's counts
    /// are stored. Nothing is POSTed before this commits.
    pub fn record_plan(
        &mut self,
        file: &PlanFile,
        conversions: &[NewConversion],
        lines: &[NewLine],
        counts: &FileCounts,
    ) -> Result<(i64, Vec<i64>)> {
        let path = self.path.clone();
        let now = now_text();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        // The file's record and its plan commit together: a file is either fully planned in
        // the ledger or not there at all (a failed commit, e.g. a full disk, leaves nothing
        // that a later run could mistake for a planned file).
        let file_id = match file {
            PlanFile::Existing(id) => *id,
            PlanFile::New {
                content_hash,
                path: shown,
                size,
                mtime,
            } => {
                tx.execute(
                    "INSERT INTO files (content_hash, path, size, mtime, state, first_seen)
                     VALUES (?1, ?2, ?3, ?4, 'processing', ?5)",
                    params![content_hash, shown, *size as i64, mtime, now],
                )
                .map_err(sql(&path, "record a file"))?;
                tx.last_insert_rowid()
            }
        };
        let mut ids = Vec::with_capacity(conversions.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO conversions (campaign_id, event_field, event_id, order_id, state,
                        body, payload_hash, file_id, created_at, updated_at, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?8, ?8)",
                )
                .map_err(sql(&path, "record conversions"))?;
            let mut resend = tx
                .prepare_cached(
                    "UPDATE conversions SET state = 'pending', body = ?2, payload_hash = ?3,
                        file_id = ?4, attempts = 0, last_error = NULL, next_attempt_at = ?5,
                        updated_at = ?5
                     WHERE id = ?1",
                )
                .map_err(sql(&path, "record conversions"))?;
            for c in conversions {
                match c.existing {
                    Some(id) => {
                        resend
                            .execute(params![id, c.body, c.payload_hash, file_id, now])
                            .map_err(sql(&path, "record conversions"))?;
                        ids.push(id);
                    }
                    None => {
                        insert
                            .execute(params![
                                c.key.campaign_id,
                                c.key.event_field,
                                c.key.event_id,
                                c.key.order_id,
                                c.body,
                                c.payload_hash,
                                file_id,
                                now
                            ])
                            .map_err(sql(&path, "record conversions"))?;
                        ids.push(tx.last_insert_rowid());
                    }
                }
            }
            let mut line = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO lines (file_id, line, hash, conversion_id, outcome, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql(&path, "record lines"))?;
            for l in lines {
                let conv = match l.conversion {
                    Some(ConvRef::Planned(i)) => ids.get(i).copied(),
                    Some(ConvRef::Existing(id)) => Some(id),
                    None => None,
                };
                line.execute(params![
                    file_id,
                    l.line as i64,
                    &l.hash.0[..],
                    conv,
                    l.outcome.as_str(),
                    l.reason
                ])
                .map_err(sql(&path, "record lines"))?;
            }
            tx.execute(
                "UPDATE files SET rows = ?2, skipped_lines = ?3, invalid_orders = ?4 WHERE id = ?1",
                params![
                    file_id,
                    counts.rows as i64,
                    counts.skipped_lines as i64,
                    counts.invalid_orders as i64
                ],
            )
            .map_err(sql(&path, "record file counts"))?;
        }
        tx.commit().map_err(sql(&path, "commit a file's plan"))?;
        Ok((file_id, ids))
    }

    /// Pending conversions due now, oldest first, not counting those in `exclude`.
    pub fn due(&self, now: &str, limit: usize, exclude: &HashSet<i64>) -> Result<Vec<Due>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, order_id, body, attempts, file_id FROM conversions
                 WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?1)
                 ORDER BY next_attempt_at, id LIMIT ?2",
            )
            .map_err(sql(&self.path, "list pending conversions"))?;
        let rows = stmt
            .query_map(params![now, (limit + exclude.len()) as i64], |r| {
                Ok(Due {
                    id: r.get(0)?,
                    order_id: r.get(1)?,
                    body: r.get(2)?,
                    attempts: r.get::<_, i64>(3)? as u32,
                    file_id: r.get(4)?,
                })
            })
            .map_err(sql(&self.path, "list pending conversions"))?;
        let mut out = Vec::new();
        for r in rows {
            let d = r.map_err(sql(&self.path, "list pending conversions"))?;
            if !exclude.contains(&d.id) {
                out.push(d);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// When the next pending conversion is due, if any is pending.
    pub fn next_due(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT MIN(next_attempt_at) FROM conversions WHERE state = 'pending'",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .map_err(sql(&self.path, "find the next retry"))
    }

    /// Commits the outcomes of many POSTs in one transaction (group commit).
    pub fn record_outcomes(&mut self, outcomes: &[Outcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let now = now_text();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        {
            let mut accepted = tx
                .prepare_cached(
                    "UPDATE conversions SET state = 'accepted', queued_uri = ?2, warnings = ?3,
                        attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL,
                        updated_at = ?4, accepted_at = ?4
                     WHERE id = ?1",
                )
                .map_err(sql(&path, "record outcomes"))?;
            let mut rejected = tx
                .prepare_cached(
                    "UPDATE conversions SET state = 'rejected', last_error = ?2,
                        attempts = attempts + 1, next_attempt_at = NULL, updated_at = ?3
                     WHERE id = ?1",
                )
                .map_err(sql(&path, "record outcomes"))?;
            let mut retry = tx
                .prepare_cached(
                    "UPDATE conversions SET last_error = ?2, attempts = attempts + 1,
                        next_attempt_at = ?3, updated_at = ?4
                     WHERE id = ?1 AND state = 'pending'",
                )
                .map_err(sql(&path, "record outcomes"))?;
            for o in outcomes {
                match o {
                    Outcome::Accepted {
                        id,
                        queued_uri,
                        warnings,
                    } => {
                        let w = (!warnings.is_empty()).then(|| warnings.join("\n"));
                        accepted.execute(params![id, queued_uri, w, now])
                    }
                    Outcome::Rejected { id, reasons } => {
                        rejected.execute(params![id, reasons.join("\n"), now])
                    }
                    Outcome::Retry { id, error, next_at } => {
                        retry.execute(params![id, error, next_at, now])
                    }
                }
                .map_err(sql(&path, "record outcomes"))?;
            }
        }
        tx.commit().map_err(sql(&path, "commit outcomes"))
    }

    /// How many of a file's conversions are still pending.
    pub fn pending_in_file(&self, file_id: i64) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM conversions c
                 WHERE c.state = 'pending' AND c.id IN
                   (SELECT conversion_id FROM lines WHERE file_id = ?1 AND outcome = 'sent')",
                [file_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql(&self.path, "count pending conversions"))
    }

    /// The lines of a file that go to its rejects file, with their reasons: invalid rows and
    /// the rows of conversions impact rejected.
    pub fn rejected_lines(&self, file_id: i64) -> Result<Vec<(u64, String)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT l.line, CASE
                    WHEN l.outcome = 'invalid' THEN l.reason
                    WHEN l.outcome = 'changed_after_sent' THEN l.reason
                    ELSE 'rejected by impact: ' || COALESCE(c.last_error, '') END
                 FROM lines l LEFT JOIN conversions c ON c.id = l.conversion_id
                 WHERE l.file_id = ?1 AND (l.outcome IN ('invalid', 'changed_after_sent')
                    OR (l.outcome = 'sent' AND c.state = 'rejected'))
                 ORDER BY l.line",
            )
            .map_err(sql(&self.path, "list rejected lines"))?;
        let rows = stmt
            .query_map([file_id], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            })
            .map_err(sql(&self.path, "list rejected lines"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list rejected lines"))
    }

    /// Marks a file done, with where it was moved and its rejects file.
    pub fn finish_file(
        &mut self,
        file_id: i64,
        archived_to: Option<&str>,
        rejects: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET state = 'done', finished_at = ?2, archived_to = COALESCE(?3, archived_to),
                    rejects_path = COALESCE(?4, rejects_path)
                 WHERE id = ?1",
                params![file_id, now_text(), archived_to, rejects],
            )
            .map_err(sql(&self.path, "finish a file"))?;
        Ok(())
    }

    /// Notes where a duplicate file was moved.
    pub fn set_archived(&mut self, file_id: i64, archived_to: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET archived_to = ?2 WHERE id = ?1",
                params![file_id, archived_to],
            )
            .map_err(sql(&self.path, "record an archive path"))?;
        Ok(())
    }

    /// Starts a run record (each `run`, `send`, `watch`, `demo`).
    pub fn start_run(&mut self, command: &str, args: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (command, user, args, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![command, current_user(), args, now_text()],
            )
            .map_err(sql(&self.path, "record a run"))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&mut self, run: i64, summary: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, summary = ?3 WHERE id = ?1",
                params![run, now_text(), summary],
            )
            .map_err(sql(&self.path, "finish a run"))?;
        Ok(())
    }

    /// Records a replay: who, when, which file, what was asked, what it queued.
    pub fn record_replay(
        &mut self,
        run: i64,
        file_id: i64,
        resend_accepted: bool,
        queued: u64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO replays (run_id, file_id, user, at, resend_accepted, queued)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    run,
                    file_id,
                    current_user(),
                    now_text(),
                    resend_accepted,
                    queued as i64
                ],
            )
            .map_err(sql(&self.path, "record a replay"))?;
        Ok(())
    }

    /// Runs a read-only query for `status`.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// Everything `status` and the run report say about one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileStats {
    pub id: i64,
    pub path: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<i64>,
    pub rows: u64,
    pub skipped_lines: u64,
    pub invalid_orders: u64,
    /// Rows by what became of them; they add up to `rows` for a finished file.
    pub rows_accepted: u64,
    pub rows_rejected: u64,
    pub rows_pending: u64,
    pub rows_invalid: u64,
    pub rows_already_sent: u64,
    pub rows_changed_after_sent: u64,
    pub rows_already_pending: u64,
    pub rows_already_rejected: u64,
    pub rows_filtered: u64,
    pub conversions_accepted: u64,
    pub conversions_rejected: u64,
    pub conversions_pending: u64,
    pub first_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_path: Option<String>,
}

impl FileStats {
    /// Rows with a recorded outcome.
    pub fn accounted(&self) -> u64 {
        self.rows_accepted
            + self.rows_rejected
            + self.rows_pending
            + self.rows_invalid
            + self.rows_already_sent
            + self.rows_changed_after_sent
            + self.rows_already_pending
            + self.rows_already_rejected
            + self.rows_filtered
    }
}

/// A row that was not sent, with why: invalid, filtered, changed after it was sent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NotSent {
    pub file: String,
    pub line: u64,
    pub outcome: String,
    pub reason: String,
}

/// A recent error, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecentError {
    pub order_id: String,
    pub state: String,
    pub error: String,
    pub at: String,
}

impl Ledger {
    /// Per-file statistics: one file, or all files (newest first, at most `limit`).
    pub fn file_stats(&self, file_id: Option<i64>, limit: usize) -> Result<Vec<FileStats>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT f.id, f.path, f.state, f.duplicate_of, f.rows, f.skipped_lines,
                    f.invalid_orders, f.first_seen, f.finished_at, f.archived_to, f.rejects_path,
                    COALESCE(SUM(l.outcome = 'sent' AND c.state = 'accepted'), 0),
                    COALESCE(SUM(l.outcome = 'sent' AND c.state = 'rejected'), 0),
                    COALESCE(SUM(l.outcome = 'sent' AND c.state = 'pending'), 0),
                    COALESCE(SUM(l.outcome = 'invalid'), 0),
                    COALESCE(SUM(l.outcome = 'already_sent'), 0),
                    COALESCE(SUM(l.outcome = 'changed_after_sent'), 0),
                    COALESCE(SUM(l.outcome = 'already_pending'), 0),
                    COALESCE(SUM(l.outcome = 'already_rejected'), 0),
                    COALESCE(SUM(l.outcome = 'filtered'), 0),
                    COUNT(DISTINCT CASE WHEN l.outcome = 'sent' AND c.state = 'accepted' THEN c.id END),
                    COUNT(DISTINCT CASE WHEN l.outcome = 'sent' AND c.state = 'rejected' THEN c.id END),
                    COUNT(DISTINCT CASE WHEN l.outcome = 'sent' AND c.state = 'pending' THEN c.id END)
                 FROM files f
                 LEFT JOIN lines l ON l.file_id = f.id
                 LEFT JOIN conversions c ON c.id = l.conversion_id
                 WHERE ?1 IS NULL OR f.id = ?1
                 GROUP BY f.id ORDER BY f.id DESC LIMIT ?2",
            )
            .map_err(sql(&self.path, "read file statistics"))?;
        let rows = stmt
            .query_map(params![file_id, limit as i64], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(FileStats {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    state: r.get(2)?,
                    duplicate_of: r.get(3)?,
                    rows: n(4)?,
                    skipped_lines: n(5)?,
                    invalid_orders: n(6)?,
                    first_seen: r.get(7)?,
                    finished_at: r.get(8)?,
                    archived_to: r.get(9)?,
                    rejects_path: r.get(10)?,
                    rows_accepted: n(11)?,
                    rows_rejected: n(12)?,
                    rows_pending: n(13)?,
                    rows_invalid: n(14)?,
                    rows_already_sent: n(15)?,
                    rows_changed_after_sent: n(16)?,
                    rows_already_pending: n(17)?,
                    rows_already_rejected: n(18)?,
                    rows_filtered: n(19)?,
                    conversions_accepted: n(20)?,
                    conversions_rejected: n(21)?,
                    conversions_pending: n(22)?,
                })
            })
            .map_err(sql(&self.path, "read file statistics"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "read file statistics"))
    }

    /// `(state, count)` for files or conversions.
    pub fn counts_by_state(&self, table: &str) -> Result<Vec<(String, u64)>> {
        let query = match table {
            "files" => "SELECT state, COUNT(*) FROM files GROUP BY state ORDER BY state",
            _ => "SELECT state, COUNT(*) FROM conversions GROUP BY state ORDER BY state",
        };
        let mut stmt = self
            .conn
            .prepare_cached(query)
            .map_err(sql(&self.path, "count by state"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(sql(&self.path, "count by state"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "count by state"))
    }

    /// Prunes line and conversion records older than `keep_days`, never those still pending
    /// (nor the lines of files still processing). File records stay: they are small, and they
    /// keep even an ancient export recognised by its content hash. Returns `(lines,
    /// conversions)` removed.
    pub fn prune(&mut self, keep_days: u32) -> Result<(u64, u64)> {
        let cutoff = time_text(chrono::Utc::now() - chrono::Duration::days(i64::from(keep_days)));
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(&path, "begin"))?;
        let lines = tx
            .execute(
                "DELETE FROM lines WHERE file_id IN
                    (SELECT id FROM files WHERE state != 'processing'
                       AND COALESCE(finished_at, first_seen) < ?1)
                 AND (conversion_id IS NULL OR conversion_id NOT IN
                    (SELECT id FROM conversions WHERE state = 'pending'))",
                [&cutoff],
            )
            .map_err(sql(&path, "prune lines"))?;
        let conversions = tx
            .execute(
                "DELETE FROM conversions WHERE state != 'pending' AND updated_at < ?1
                 AND id NOT IN (SELECT conversion_id FROM lines WHERE conversion_id IS NOT NULL)",
                [&cutoff],
            )
            .map_err(sql(&path, "prune conversions"))?;
        tx.commit().map_err(sql(&path, "commit pruning"))?;
        Ok((lines as u64, conversions as u64))
    }

    /// Rows recorded with this outcome (e.g. `invalid`), across all files.
    pub fn count_lines(&self, outcome: LineOutcome) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM lines WHERE outcome = ?1",
                [outcome.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql(&self.path, "count lines"))
    }

    /// How many conversions are pending.
    pub fn pending_count(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM conversions WHERE state = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql(&self.path, "count pending conversions"))
    }

    /// When the oldest pending conversion was recorded.
    pub fn oldest_pending(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT MIN(created_at) FROM conversions WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(sql(&self.path, "find the oldest pending conversion"))
    }

    /// The most recent errors (rejections and retry reasons).
    pub fn recent_errors(&self, limit: usize) -> Result<Vec<RecentError>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT order_id, state, last_error, updated_at FROM conversions
                 WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT ?1",
            )
            .map_err(sql(&self.path, "list recent errors"))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(RecentError {
                    order_id: r.get(0)?,
                    state: r.get(1)?,
                    error: r.get(2)?,
                    at: r.get(3)?,
                })
            })
            .map_err(sql(&self.path, "list recent errors"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list recent errors"))
    }

    /// The latest rows that were not sent for a reason of their own (invalid, filtered,
    /// changed after sent, rejected before), newest files first.
    pub fn not_sent(&self, limit: usize) -> Result<Vec<NotSent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT f.path, l.line, l.outcome, COALESCE(l.reason, '') FROM lines l
                 JOIN files f ON f.id = l.file_id
                 WHERE l.outcome IN ('invalid', 'filtered', 'changed_after_sent', 'already_rejected')
                 ORDER BY l.file_id DESC, l.line LIMIT ?1",
            )
            .map_err(sql(&self.path, "list rows not sent"))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(NotSent {
                    file: r.get(0)?,
                    line: r.get::<_, i64>(1)? as u64,
                    outcome: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .map_err(sql(&self.path, "list rows not sent"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(&self.path, "list rows not sent"))
    }

    /// Bytes on disk: the database and its write-ahead log.
    pub fn size_on_disk(&self) -> u64 {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        [self.path.clone(), PathBuf::from(wal)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// The file a plan belongs to: known already (a replay), or recorded with the plan.
#[derive(Clone, Debug)]
pub enum PlanFile {
    Existing(i64),
    New {
        content_hash: String,
        path: String,
        size: u64,
        mtime: Option<String>,
    },
}

/// Per-file counts stored with the plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileCounts {
    pub rows: u64,
    pub skipped_lines: u64,
    pub invalid_orders: u64,
}

fn file_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: r.get(0)?,
        content_hash: r.get(1)?,
        path: r.get(2)?,
        state: r.get(3)?,
        first_seen: r.get(4)?,
    })
}

fn sql<'a>(path: &'a Path, context: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError + 'a {
    move |source| {
        if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return LedgerError::DiskFull {
                path: path.to_owned(),
            };
        }
        LedgerError::Sqlite {
            path: path.to_owned(),
            context,
            source,
        }
    }
}

pub fn lock_path(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Opens (creating with mode 0600) a file that holds private data.
fn private_file(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Who ran a command, for the audit trail of runs and replays.
pub fn current_user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(order: &str) -> ConversionKey {
        ConversionKey {
            campaign_id: "1".into(),
            event_field: "ActionTrackerId".into(),
            event_id: "2".into(),
            order_id: order.into(),
        }
    }

    fn plan_one(l: &mut Ledger, file: i64, order: &str, line: u64) -> i64 {
        let conv = NewConversion {
            key: key(order),
            body: format!("OrderId={order}"),
            payload_hash: format!("h-{order}"),
            existing: None,
        };
        let lines = [NewLine {
            line,
            hash: LineHash::of(order.as_bytes()),
            outcome: LineOutcome::Sent,
            conversion: Some(ConvRef::Planned(0)),
            reason: None,
        }];
        l.record_plan(
            &PlanFile::Existing(file),
            &[conv],
            &lines,
            &FileCounts::default(),
        )
        .unwrap()
        .1[0]
    }

    #[test]
    fn a_failed_plan_leaves_no_file_behind() {
        let mut l = Ledger::in_memory().unwrap();
        let file = PlanFile::New {
            content_hash: "h".into(),
            path: "a.csv".into(),
            size: 1,
            mtime: None,
        };
        // A conversion whose key is given twice violates UNIQUE: the transaction fails whole.
        let conv = NewConversion {
            key: key("A"),
            body: "x".into(),
            payload_hash: "p".into(),
            existing: None,
        };
        assert!(l
            .record_plan(&file, &[conv.clone(), conv], &[], &FileCounts::default())
            .is_err());
        assert!(
            l.file_by_hash("h").unwrap().is_none(),
            "no half-recorded file"
        );
        let (id, ids) = l
            .record_plan(
                &file,
                &[NewConversion {
                    key: key("B"),
                    ..key_conv()
                }],
                &[],
                &FileCounts::default(),
            )
            .unwrap();
        assert_eq!(l.file_by_hash("h").unwrap().map(|f| f.id), Some(id));
        assert_eq!(ids.len(), 1);
    }

    fn key_conv() -> NewConversion {
        NewConversion {
            key: key("Z"),
            body: "b".into(),
            payload_hash: "p".into(),
            existing: None,
        }
    }

    #[test]
    fn pending_then_accepted_is_recorded_with_its_uri() {
        let mut l = Ledger::in_memory().unwrap();
        let f = l.insert_file("abc", "a.csv", 10, None).unwrap();
        let id = plan_one(&mut l, f, "A", 2);
        let due = l.due(&now_text(), 10, &HashSet::new()).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].body, "OrderId=A");
        assert_eq!(l.pending_in_file(f).unwrap(), 1);
        l.record_outcomes(&[Outcome::Accepted {
            id,
            queued_uri: Some("/q/1".into()),
            warnings: vec![],
        }])
        .unwrap();
        assert!(l.due(&now_text(), 10, &HashSet::new()).unwrap().is_empty());
        assert_eq!(l.pending_in_file(f).unwrap(), 0);
        let k = key("A");
        let known = l.known(&[&k]).unwrap();
        assert_eq!(known[&k].state, ConvState::Accepted);
        let uri: String = l
            .conn()
            .query_row(
                "SELECT queued_uri FROM conversions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(uri, "/q/1");
    }

    #[test]
    fn retries_wait_for_their_time_and_rejections_list_their_lines() {
        let mut l = Ledger::in_memory().unwrap();
        let f = l.insert_file("abc", "a.csv", 10, None).unwrap();
        let a = plan_one(&mut l, f, "A", 2);
        let b = plan_one(&mut l, f, "B", 3);
        l.record_outcomes(&[
            Outcome::Retry {
                id: a,
                error: "503".into(),
                next_at: "2999-01-01T00:00:00.000Z".into(),
            },
            Outcome::Rejected {
                id: b,
                reasons: vec!["OrderId: bad".into()],
            },
        ])
        .unwrap();
        assert!(l.due(&now_text(), 10, &HashSet::new()).unwrap().is_empty());
        assert_eq!(
            l.next_due().unwrap().as_deref(),
            Some("2999-01-01T00:00:00.000Z")
        );
        assert_eq!(
            l.rejected_lines(f).unwrap(),
            vec![(3, "rejected by impact: OrderId: bad".into())]
        );
    }

    #[test]
    fn pruning_removes_old_final_records_and_never_pending_ones() {
        let mut l = Ledger::in_memory().unwrap();
        let old = l.insert_file("old", "old.csv", 1, None).unwrap();
        let a = plan_one(&mut l, old, "A", 2);
        let p = plan_one(&mut l, old, "P", 3);
        l.record_outcomes(&[Outcome::Accepted {
            id: a,
            queued_uri: None,
            warnings: vec![],
        }])
        .unwrap();
        l.finish_file(old, None, None).unwrap();
        let recent = l.insert_file("new", "new.csv", 1, None).unwrap();
        let b = plan_one(&mut l, recent, "B", 2);
        l.record_outcomes(&[Outcome::Accepted {
            id: b,
            queued_uri: None,
            warnings: vec![],
        }])
        .unwrap();
        l.finish_file(recent, None, None).unwrap();
        // Age the old file and its conversions by 500 days.
        let long_ago = time_text(chrono::Utc::now() - chrono::Duration::days(500));
        l.conn()
            .execute(
                "UPDATE files SET finished_at = ?1, first_seen = ?1 WHERE id = ?2",
                params![long_ago, old],
            )
            .unwrap();
        l.conn()
            .execute(
                "UPDATE conversions SET updated_at = ?1 WHERE id IN (?2, ?3)",
                params![long_ago, a, p],
            )
            .unwrap();
        assert_eq!(
            l.prune(400).unwrap(),
            (1, 1),
            "A's line and A; not pending P or its line"
        );
        let left: Vec<String> = {
            let mut st = l
                .conn()
                .prepare("SELECT order_id FROM conversions ORDER BY order_id")
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(left, vec!["B", "P"]);
        assert!(
            l.file_by_hash("old").unwrap().is_some(),
            "file records stay"
        );
    }

    #[test]
    fn a_second_writer_is_refused_and_readers_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        let _first = Ledger::open(&path).unwrap();
        let err = Ledger::open(&path).err().unwrap();
        assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another impact-drop"));
        Ledger::open_read(&path).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        drop(Ledger::open(&path).unwrap());
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = Ledger::open(&path).err().unwrap();
        assert!(matches!(err, LedgerError::Newer { found: 99, .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_corrupt_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        std::fs::write(
            &path,
            b"this is not a database, but it is long enough to look like one.......",
        )
        .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Ledger::open(&path).err().unwrap();
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[cfg(unix)]
    #[test]
    fn the_ledger_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        drop(Ledger::open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
