//! The ledger (SQLite): every file, line and conversion, and every run and replay.
//!
//! Split by job: this file opens the ledger (lock, integrity, migrations, the state CHECK
//! triggers) and bridges it to async code (`with_ledger`); `commit` is the commit protocol;
//! `report` is what `status`, reports and `/metrics` read; `schema` is the migrations.
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

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use crate::state::{
    ConvRef, ConvState, FileState, FollowState, Known, LineOutcome, NewConversion, NewLine,
    StateName, UnknownState,
};

mod commit;
mod followup;
mod report;
mod schema;

pub use followup::{FilePlaces, FollowCounts, FollowDue, FollowUpdate};
pub use report::{FileStats, NotSent, Pruned, RecentError, Replay, RowCounts};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "the ledger {path} is in use by another impact-drop{holder} (it holds a lock on the \
         file itself): stop the other instance first, or give this one its own [ledger] path"
    )]
    Locked {
        path: PathBuf,
        /// ` (pid 1234: impact-drop watch)` when the system says who holds it, else empty.
        holder: String,
    },
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
    #[error(
        "the ledger {path} was written by an earlier impact-drop (schema version {found}; this \
         build uses {known}): it is upgraded, keeping everything, by the first `run`, `send` or \
         `watch`; it cannot be read before that"
    )]
    Older {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("ledger {path}: {context}: {source}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        source: rusqlite::Error,
    },
    #[error("ledger: {0}")]
    Internal(String),
    #[error("ledger {path}: {source}")]
    UnknownState { path: PathBuf, source: UnknownState },
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, LedgerError>;

/// A file as the ledger knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub id: i64,
    pub content_hash: String,
    pub path: String,
    pub state: FileState,
    pub first_seen: String,
    /// Whether its whole plan is recorded (false while a large file is recorded in parts).
    pub plan_complete: bool,
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
    /// Sent, but the answer was not impact's or never came: impact may have it. Back to
    /// pending, or held for the operator after `UNCERTAIN_LIMIT` such answers.
    Uncertain {
        id: i64,
        error: String,
        next_at: String,
    },
    /// Handed to a sender but never sent (stopped while waiting for its slot): its dispatch
    /// is taken back.
    Unsent {
        id: i64,
    },
}

/// Uncertain answers after which a conversion is held for the operator instead of being sent
/// again (the first send plus two automatic resends).
pub const UNCERTAIN_LIMIT: i64 = 3;

impl Outcome {
    pub fn id(&self) -> i64 {
        match self {
            Outcome::Accepted { id, .. }
            | Outcome::Rejected { id, .. }
            | Outcome::Retry { id, .. }
            | Outcome::Uncertain { id, .. }
            | Outcome::Unsent { id } => *id,
        }
    }
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    _lock: Option<File>,
    /// `(device, inode)` of the file opened, to notice it deleted or replaced.
    identity: Option<(u64, u64)>,
    /// When accepted conversions are first asked about at impact, after their acceptance
    /// (`[follow_up]`); `None`: not followed (off, or unavailable for this account).
    follow_up: Option<chrono::Duration>,
}

/// Now, as the ledger writes times: RFC 3339 UTC with milliseconds (sorts as text).
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

pub fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `wait` from now, as the ledger writes times (an hour if `wait` is out of range).
pub fn later(wait: std::time::Duration) -> String {
    let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
    time_text(chrono::Utc::now() + wait)
}

/// Time from now until an RFC 3339 instant (zero if past or unreadable).
pub fn until(at: &str) -> std::time::Duration {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|t| {
            (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or_default()
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
        // Created 0600: the ledger holds order data. The lock is taken on the ledger file
        // itself (flock, separate from SQLite's own fcntl locks), so a second writer is
        // refused whatever path names the file (a symlink, a relative path) and no lock file
        // beside it can be deleted or go stale.
        let lock = private_file(path).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: path.to_owned(),
                    holder: lock_holder(&lock).unwrap_or_default(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let identity = file_identity(&lock);
        let conn = Connection::open(path).map_err(sql(path, "open"))?;
        let mut ledger = Ledger {
            conn,
            path: path.to_owned(),
            _lock: Some(lock),
            identity,
            follow_up: None,
        };
        ledger.setup(true, true)?;
        Ok(ledger)
    }

    /// Whether the ledger's path still names the file this ledger opened: `false` once the
    /// file was deleted, moved away or replaced under a running process.
    pub fn still_at_its_path(&self) -> bool {
        match (self.identity, std::fs::metadata(&self.path)) {
            (Some(id), Ok(m)) => metadata_identity(&m) == Some(id),
            (None, _) => true,
            (Some(_), Err(_)) => false,
        }
    }

    /// Opens an existing ledger for reading only, without the lock (`status`, dry runs).
    pub fn open_read(path: &Path) -> Result<Ledger> {
        Ledger::open_read_with(path, true)
    }

    /// A second, read-only connection for a process whose writer already opened (and
    /// checked) the ledger: no integrity check, which reads the whole file.
    pub fn open_second_reader(path: &Path) -> Result<Ledger> {
        Ledger::open_read_with(path, false)
    }

    fn open_read_with(path: &Path, check: bool) -> Result<Ledger> {
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
            identity: None,
            follow_up: None,
        };
        ledger.setup(false, check)?;
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
            identity: None,
            follow_up: None,
        };
        ledger.setup(true, true)?;
        Ok(ledger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setup(&mut self, write: bool, integrity: bool) -> Result<()> {
        let path = self.path.clone();
        self.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql(&path, "set busy_timeout"))?;
        if integrity {
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
            if version == 0 {
                return Err(LedgerError::Missing { path });
            }
            if version < known {
                return Err(LedgerError::Older {
                    path,
                    found: version,
                    known,
                });
            }
            return Ok(());
        }
        if version == 0 {
            // A new ledger gives back the pages its bodies used once they are sent
            // (`reclaim`); the mode can only be chosen before the first table exists.
            self.conn
                .pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(sql(&path, "set auto_vacuum"))?;
        }
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sql(&path, "switch to WAL"))?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sql(&path, "set synchronous"))?;
        // A page cache of 8 MiB (SQLite's default is 2 MiB): a part of a large file's plan
        // touches the indexes of conversions by key at random, and with the default cache
        // pages evicted in a part's transaction were written to the WAL again and again.
        // 32 MiB measured 10 % faster on a 1,000,000-row backfill but 30 MB more resident
        // with statement journals in memory (`bench/backfill.sh`).
        self.conn
            .pragma_update(None, "cache_size", -8192)
            .map_err(sql(&path, "set cache_size"))?;
        // Statement journals (the pages one statement changed, kept so that statement alone
        // can be undone: triggers and upserts need them) in memory: on disk, every insert
        // of a large plan wrote its pages to a temporary file (a third of intake's time).
        self.conn
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(sql(&path, "set temp_store"))?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(sql(&path, "enable foreign keys"))?;
        schema::migrate(&mut self.conn).map_err(sql(&path, "migrate"))?;
        schema::state_checks(&self.conn).map_err(sql(&path, "install state checks"))?;
        Ok(())
    }

    /// Gives the file's free pages back to the disk (the bodies of a backlog, once sent) when
    /// there are more than 1 MiB of them; returns how many pages. Ledgers made before
    /// version 9 keep their free pages for reuse instead.
    pub fn reclaim(&mut self) -> Result<u64> {
        let path = self.path.clone();
        let pages = |c: &Connection, pragma: &str| -> rusqlite::Result<i64> {
            c.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        };
        let incremental = pages(&self.conn, "auto_vacuum").map_err(sql(&path, "reclaim"))? == 2;
        let free = pages(&self.conn, "freelist_count").map_err(sql(&path, "reclaim"))?;
        if !incremental || free < 256 {
            return Ok(0);
        }
        // The pragma frees one page per step: stepped to its end.
        let mut stmt = self
            .conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(sql(&path, "reclaim free pages"))?;
        let mut rows = stmt.query([]).map_err(sql(&path, "reclaim free pages"))?;
        while rows
            .next()
            .map_err(sql(&path, "reclaim free pages"))?
            .is_some()
        {}
        Ok(free as u64)
    }

    /// Runs a read-only query for `status`.
    pub fn conn(&self) -> &Connection {
        &self.conn
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
        id: r.get("id")?,
        content_hash: r.get("content_hash")?,
        path: r.get("path")?,
        state: state(r, "state")?,
        first_seen: r.get("first_seen")?,
        plan_complete: r.get("plan_complete")?,
    })
}

/// A state column read by name; an unknown value is an error, never a default.
fn state<S: StateName>(r: &rusqlite::Row<'_>, column: &str) -> rusqlite::Result<S> {
    let text: String = r.get(column)?;
    S::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A ledger shared by async tasks; calls go through [`with_ledger`].
pub type SharedLedger = Arc<Mutex<Ledger>>;

/// Runs a ledger call on the blocking pool (rusqlite is blocking).
pub async fn with_ledger<T, F>(ledger: &SharedLedger, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Ledger) -> Result<T> + Send + 'static,
{
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = ledger
            .lock()
            .map_err(|_| LedgerError::Internal("the ledger lock was poisoned".into()))?;
        f(&mut guard)
    })
    .await
    .map_err(|e| LedgerError::Internal(format!("ledger task failed: {e}")))?
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

/// Who holds the flock on `file`, from Linux's `/proc/locks` (`FLOCK ADVISORY WRITE <pid>
/// <major>:<minor>:<inode> …`) and the holder's command line: ` (pid 1234: impact-drop
/// watch)`. `None` elsewhere or when it cannot be told.
fn lock_holder(file: &File) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let inode = file.metadata().ok()?.ino().to_string();
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let pid = locks.lines().find_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let at = parts.iter().position(|p| *p == "FLOCK")?;
            let (pid, id) = (parts.get(at + 3)?, parts.get(at + 4)?);
            (id.rsplit(':').next() == Some(inode.as_str())).then(|| pid.to_string())
        })?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let name = args.first().map(|a| {
            std::path::Path::new(a)
                .file_name()
                .map_or(a.clone(), |n| n.to_string_lossy().into_owned())
        });
        let command = name
            .into_iter()
            .chain(args.into_iter().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        Some(if command.is_empty() {
            format!(" (pid {pid})")
        } else {
            format!(" (pid {pid}: {command})")
        })
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

/// `(device, inode)` of an open file: which file a path named when it was opened.
fn file_identity(f: &File) -> Option<(u64, u64)> {
    f.metadata().ok().as_ref().and_then(metadata_identity)
}

fn metadata_identity(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
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
    use crate::model::{ConversionKey, LineHash};
    use rusqlite::params;
    use std::collections::HashSet;

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
            order_id: None,
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

    /// A body is kept while its conversion is pending and goes at its acceptance; the pages
    /// a sent backlog's bodies used go back to the disk, and what is due still reads them.
    #[test]
    fn bodies_go_at_acceptance_and_their_pages_go_back_to_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut l = Ledger::open(&path).unwrap();
        let file = l.insert_file("h", "a.csv", 1, None).unwrap();
        let big = "x".repeat(2000);
        let conversions: Vec<NewConversion> = (0..2000)
            .map(|i| NewConversion {
                key: key(&format!("B-{i}")),
                body: format!("OrderId=B-{i}&Pad={big}"),
                payload_hash: format!("h-{i}"),
                existing: None,
            })
            .collect();
        let (_, ids) = l
            .record_plan(
                &PlanFile::Existing(file),
                &conversions,
                &[],
                &FileCounts::default(),
            )
            .unwrap();
        let due = l.due(&now_text(), &now_text(), 1, &HashSet::new()).unwrap();
        assert_eq!(due[0].body, format!("OrderId=B-0&Pad={big}"));
        l.conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        assert!(full > 4_000_000, "{full}");
        let accepted: Vec<Outcome> = ids
            .iter()
            .map(|&id| Outcome::Accepted {
                id,
                queued_uri: None,
                warnings: vec![],
            })
            .collect();
        l.record_outcomes(&accepted).unwrap();
        let bodies: i64 = l
            .conn()
            .query_row("SELECT COUNT(*) FROM bodies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bodies, 0);
        assert!(l.reclaim().unwrap() > 900);
        l.conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after < full / 5, "{full} bytes before, {after} after");
        assert_eq!(l.reclaim().unwrap(), 0, "nothing left to give back");
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
        let due = l.due(&now_text(), "9999", 10, &HashSet::new()).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].body, "OrderId=A");
        assert_eq!(l.pending_in_file(f).unwrap(), 1);
        l.record_outcomes(&[Outcome::Accepted {
            id,
            queued_uri: Some("/q/1".into()),
            warnings: vec![],
        }])
        .unwrap();
        assert!(l
            .due(&now_text(), "9999", 10, &HashSet::new())
            .unwrap()
            .is_empty());
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
        assert!(l
            .due(&now_text(), "9999", 10, &HashSet::new())
            .unwrap()
            .is_empty());
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
            Pruned::Done {
                lines: 1,
                bodies: 0
            },
            "A's line (its body went when it was accepted); not pending P or its line"
        );
        // Every conversion's key and state stay: A, accepted long ago, is still known.
        let left: Vec<(String, String, String)> = {
            let mut st = l
                .conn()
                .prepare(
                    "SELECT order_id, state, COALESCE(body, '') FROM conversions
                     LEFT JOIN bodies ON conversion_id = id ORDER BY order_id",
                )
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(left.len(), 3);
        assert_eq!(
            (left[0].0.as_str(), left[0].1.as_str(), left[0].2.as_str()),
            ("A", "accepted", "")
        );
        assert_eq!(l.file_stats(Some(old), 1).unwrap()[0].pruned_rows, 1);
        assert_eq!(
            l.file_stats(Some(old), 1).unwrap()[0].accounted(),
            2,
            "P pending + A pruned"
        );
        // A clock far ahead: every record looks older than keep_days: nothing is pruned.
        l.conn()
            .execute("UPDATE conversions SET updated_at = ?1", params![long_ago])
            .unwrap();
        l.conn()
            .execute(
                "UPDATE files SET finished_at = ?1, first_seen = ?1",
                params![long_ago],
            )
            .unwrap();
        assert!(matches!(l.prune(400).unwrap(), Pruned::Refused { .. }));
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
        // The holder is named where the system says (Linux's /proc/locks): here, this test.
        if std::path::Path::new("/proc/locks").exists() {
            let pid = format!("(pid {}", std::process::id());
            assert!(err.to_string().contains(&pid), "{err}");
        }
        Ledger::open_read(&path).unwrap();
    }

    #[test]
    fn an_older_ledger_is_named_as_such_until_a_writer_upgrades_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(schema::MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let err = Ledger::open_read(&path).err().unwrap();
        assert!(matches!(err, LedgerError::Older { found: 1, .. }), "{err}");
        drop(Ledger::open(&path).unwrap());
        assert!(Ledger::open_read(&path).is_ok());
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
