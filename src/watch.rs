//! Finding finished files in the drop folder: scans, notify hints, settling and temp names.
//!
//! notify is only a hint that triggers a scan, never the source of truth: the folder is
//! scanned at start, on every event, on a timer (`rescan_secs`), and after an overflow or a
//! watcher error. inotify misses writes on NFS/SMB, overflows, and runs out of watches. A
//! file is ready when its size and mtime stayed the same across two looks at least `settle`
//! apart, measured by our own monotonic clock (SFTP clients set old or future mtimes).
//! Temp names are never read. In marker mode, `orders.csv` is ready only once
//! `orders.csv<marker>` exists and is no older than the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::ignore::Ignore;
use crate::read::{FileKind, ReadError};

/// What to look for and how.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub dir: PathBuf,
    pub recursive: bool,
    pub settle: Duration,
    /// Names never read.
    pub ignore: Ignore,
    /// Marker suffix (`.done`): a file is ready only once `<name><marker>` exists.
    pub ready_marker: Option<String>,
    /// The archive folder, never scanned.
    pub archive_dir: PathBuf,
}

impl WatchOptions {
    pub fn from_config(config: &crate::config::Config) -> WatchOptions {
        let dir = config.source.drop_dir.clone();
        let archive_dir = if config.archive.dir.is_absolute() {
            config.archive.dir.clone()
        } else {
            dir.join(&config.archive.dir)
        };
        WatchOptions {
            dir,
            recursive: config.source.recursive,
            settle: config.source.settle,
            ignore: config.source.ignore.clone(),
            ready_marker: config.source.ready_marker.clone(),
            archive_dir,
        }
    }

    pub fn ignored(&self, name: &str) -> bool {
        self.ignore.matches(name)
    }
}

/// A file that may become ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    /// In marker mode: whether the marker exists (always true otherwise).
    pub marked: bool,
}

/// Lists the exports in the folder (recursively if asked), skipping ignored names, unknown
/// extensions, the archive folder, symlinks and anything that is not a regular file.
pub fn scan(opts: &WatchOptions) -> std::io::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    let archive = std::fs::canonicalize(&opts.archive_dir).ok();
    scan_dir(&opts.dir, opts, archive.as_deref(), &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn scan_dir(
    dir: &Path,
    opts: &WatchOptions,
    archive: Option<&Path>,
    out: &mut Vec<Candidate>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(ft) = entry.file_type() else { continue };
        if opts.ignore.matches(&name) {
            continue;
        }
        if ft.is_dir() {
            let is_archive =
                archive.is_some() && std::fs::canonicalize(&path).ok().as_deref() == archive;
            if opts.recursive && !is_archive {
                // A folder that cannot be read costs only itself.
                let _ = scan_dir(&path, opts, archive, out);
            }
            continue;
        }
        if !ft.is_file() || FileKind::from_path(&path).is_none() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        // An empty file is often an upload about to start; it is not an export yet.
        if meta.len() == 0 {
            continue;
        }
        // A marker counts only if it is no older than its file: a stale marker (left by a
        // crash, or by an earlier upload) never makes a file that is being written again
        // look finished.
        let marked = match &opts.ready_marker {
            Some(m) => std::fs::metadata(marker_path(&path, m))
                .ok()
                .is_some_and(|mk| match (mk.modified(), meta.modified()) {
                    (Ok(mt), Ok(ft)) => mt >= ft,
                    _ => true,
                }),
            None => true,
        };
        out.push(Candidate {
            path,
            size: meta.len(),
            mtime: meta.modified().ok(),
            marked,
        });
    }
    Ok(())
}

/// `orders.csv` + `.done` → `orders.csv.done`.
pub fn marker_path(path: &Path, marker: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(marker);
    PathBuf::from(s)
}

type Look = (u64, Option<SystemTime>);

/// Decides when files are settled (pure: time is passed in).
#[derive(Debug, Default)]
pub struct Settler {
    /// First moment each file was seen with its current look.
    looks: HashMap<PathBuf, (Look, Instant)>,
    /// Files already taken in, with the look they had: not taken again until they change.
    taken: HashMap<PathBuf, Look>,
}

impl Settler {
    /// Takes a scan at `now`; returns the files that are ready and when the next settle check
    /// is due (if some file is still settling).
    pub fn observe(
        &mut self,
        scan: &[Candidate],
        now: Instant,
        settle: Duration,
    ) -> (Vec<PathBuf>, Option<Instant>) {
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        let present: std::collections::HashSet<&PathBuf> = scan.iter().map(|c| &c.path).collect();
        self.looks.retain(|p, _| present.contains(p));
        self.taken.retain(|p, _| present.contains(p));
        for c in scan {
            let look = (c.size, c.mtime);
            if self.taken.get(&c.path) == Some(&look) {
                continue;
            }
            let since = match self.looks.get(&c.path) {
                Some((l, since)) if *l == look => *since,
                _ => {
                    self.looks.insert(c.path.clone(), (look, now));
                    now
                }
            };
            if !c.marked {
                continue;
            }
            let due = since + settle;
            if now >= due && now > since {
                ready.push(c.path.clone());
            } else {
                let at = due.max(now + Duration::from_millis(1));
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        (ready, next)
    }

    /// Marks a file taken in with the look it had; it is not offered again until it changes.
    pub fn take(&mut self, path: &Path, scan: &[Candidate]) {
        if let Some(c) = scan.iter().find(|c| c.path == path) {
            self.taken.insert(path.to_owned(), (c.size, c.mtime));
            self.looks.remove(path);
        }
    }

    /// Forgets a taken file, so it settles and is offered again (a file that could not be
    /// read, tried again after a backoff even though it did not change).
    pub fn forget(&mut self, path: &Path) {
        self.taken.remove(path);
    }

    /// Files seen but not yet ready (settling or waiting for their marker).
    pub fn waiting(&self) -> usize {
        self.looks.len()
    }
}

/// What a notify event means for the scanner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Something changed: scan soon.
    Scan,
    /// Events may have been lost (overflow) or the watcher failed: scan everything and warn.
    Rescan(String),
    /// Nothing we care about (access events, ignored names).
    Nothing,
}

/// Interprets one notify event (pure).
pub fn interpret(event: &notify::Result<notify::Event>, ignore: &Ignore) -> Hint {
    use notify::EventKind;
    match event {
        Err(e) => Hint::Rescan(watcher_error_message(e)),
        Ok(ev) if ev.need_rescan() => {
            Hint::Rescan("the file watcher lost events (queue overflow)".into())
        }
        Ok(ev) => match ev.kind {
            EventKind::Access(_) => Hint::Nothing,
            _ => {
                let all_ignored = !ev.paths.is_empty()
                    && ev.paths.iter().all(|p| {
                        let name = p
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        ignore.matches(&name) && !name.is_empty()
                    });
                // A rename from a temp name to the final name reports both paths, so an event
                // is ignored only when every path in it is a temp name.
                if all_ignored {
                    Hint::Nothing
                } else {
                    Hint::Scan
                }
            }
        },
    }
}

/// OS watcher errors in words that say what to do.
pub fn watcher_error_message(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => "the system's inotify watch limit is reached (raise fs.inotify.max_user_watches, e.g. `sysctl fs.inotify.max_user_watches=524288`); impact-drop keeps working by rescanning".into(),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28) => "the system's inotify limits are reached (ENOSPC: raise fs.inotify.max_user_watches / max_user_instances); impact-drop keeps working by rescanning".into(),
        _ => format!("file watcher error ({e}); impact-drop keeps working by rescanning"),
    }
}

/// The files a list of paths names: files as given; directories expanded (not recursively)
/// to the exports inside them, sorted by name, temp names skipped.
pub fn expand_paths(paths: &[PathBuf], ignore: &Ignore) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| ReadError::Open {
                path: p.clone(),
                source: e,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.is_file())
                .filter(|f| {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                    !ignore.matches(name) && FileKind::from_path(f).is_some()
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The name of the lock a running impact-drop holds in its drop folder (a dotfile, so never
/// read as an export).
pub const FOLDER_LOCK: &str = ".impact-drop.lock";

/// Held while an impact-drop takes files from a drop folder: a second one over the same
/// folder, even with another ledger, would send every order again.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// Another impact-drop is taking files from this folder.
#[derive(Debug, thiserror::Error)]
#[error(
    "another impact-drop ({holder}) is taking files from the drop folder {dir}: two instances \
     over one folder would each send every order (with two ledgers, nothing stops the second \
     from paying again); stop the other one, or give each its own drop folder",
    dir = .dir.display()
)]
pub struct FolderInUse {
    pub dir: PathBuf,
    pub holder: String,
}

/// Takes the folder's lock (`None` when the folder does not exist or cannot hold the file).
pub fn lock_folder(dir: &Path, ledger: &Path) -> Result<Option<FolderLock>, FolderInUse> {
    use std::io::{Read, Seek, Write};
    if !dir.is_dir() {
        return Ok(None);
    }
    let path = dir.join(FOLDER_LOCK);
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    else {
        return Ok(None);
    };
    match file.try_lock() {
        Ok(()) => {
            let ledger = std::fs::canonicalize(ledger).unwrap_or_else(|_| ledger.to_owned());
            let _ = file.set_len(0);
            let _ = file.seek(std::io::SeekFrom::Start(0));
            let _ = write!(
                file,
                "pid {} ledger {}",
                std::process::id(),
                ledger.display()
            );
            Ok(Some(FolderLock { _file: file }))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(FolderInUse {
                dir: dir.to_owned(),
                holder: if holder.trim().is_empty() {
                    "another process".into()
                } else {
                    holder.trim().to_owned()
                },
            })
        }
        Err(std::fs::TryLockError::Error(_)) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    fn ignore() -> Ignore {
        Ignore::defaults()
    }

    fn cand(path: &str, size: u64) -> Candidate {
        Candidate {
            path: path.into(),
            size,
            mtime: None,
            marked: true,
        }
    }

    #[test]
    fn a_file_is_ready_after_two_equal_looks_settle_apart() {
        let mut s = Settler::default();
        let t0 = Instant::now();
        let settle = Duration::from_secs(5);
        let (ready, next) = s.observe(&[cand("a.csv", 10)], t0, settle);
        assert!(ready.is_empty());
        assert_eq!(next, Some(t0 + settle));
        // Still growing: the clock restarts.
        let (ready, next) = s.observe(&[cand("a.csv", 20)], t0 + Duration::from_secs(3), settle);
        assert!(ready.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_secs(8)));
        let (ready, _) = s.observe(&[cand("a.csv", 20)], t0 + Duration::from_secs(7), settle);
        assert!(ready.is_empty());
        let scan = [cand("a.csv", 20)];
        let (ready, next) = s.observe(&scan, t0 + Duration::from_secs(8), settle);
        assert_eq!(ready, vec![PathBuf::from("a.csv")]);
        assert_eq!(next, None);
        s.take(Path::new("a.csv"), &scan);
        assert!(
            s.observe(&scan, t0 + Duration::from_secs(60), settle)
                .0
                .is_empty(),
            "taken once"
        );
        // Replaced with new content: offered again after settling.
        let changed = [cand("a.csv", 30)];
        assert!(s
            .observe(&changed, t0 + Duration::from_secs(61), settle)
            .0
            .is_empty());
        assert_eq!(
            s.observe(&changed, t0 + Duration::from_secs(66), settle)
                .0
                .len(),
            1
        );
    }

    #[test]
    fn unmarked_files_wait_for_their_marker() {
        let mut s = Settler::default();
        let t0 = Instant::now();
        let mut c = cand("a.csv", 10);
        c.marked = false;
        assert!(s.observe(&[c.clone()], t0, Duration::ZERO).0.is_empty());
        assert!(s
            .observe(&[c.clone()], t0 + Duration::from_secs(100), Duration::ZERO)
            .0
            .is_empty());
        assert_eq!(s.waiting(), 1);
        c.marked = true;
        assert_eq!(
            s.observe(&[c], t0 + Duration::from_secs(101), Duration::ZERO)
                .0
                .len(),
            1
        );
    }

    #[test]
    fn events_are_hints() {
        let ev = |kind, paths: &[&str]| {
            Ok(Event {
                kind,
                paths: paths.iter().map(PathBuf::from).collect(),
                attrs: Default::default(),
            })
        };
        assert_eq!(
            interpret(
                &ev(EventKind::Create(CreateKind::File), &["/d/a.csv"]),
                &ignore()
            ),
            Hint::Scan
        );
        assert_eq!(
            interpret(
                &ev(EventKind::Create(CreateKind::File), &["/d/a.csv.part"]),
                &ignore()
            ),
            Hint::Nothing
        );
        assert_eq!(
            interpret(
                &ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/d/a.csv.part", "/d/a.csv"]
                ),
                &ignore()
            ),
            Hint::Scan
        );
        assert_eq!(
            interpret(
                &ev(
                    EventKind::Access(notify::event::AccessKind::Read),
                    &["/d/a.csv"]
                ),
                &ignore()
            ),
            Hint::Nothing
        );
        let overflow = Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan));
        assert!(matches!(interpret(&overflow, &ignore()), Hint::Rescan(_)));
        let err = Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        let Hint::Rescan(msg) = interpret(&err, &ignore()) else {
            panic!()
        };
        assert!(msg.contains("max_user_watches"), "{msg}");
    }

    #[test]
    fn scan_skips_temp_names_archive_and_waits_for_markers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "a.csv",
            "b.jsonl",
            "c.csv.gz",
            ".hidden.csv",
            "d.csv.part",
            "notes.txt.bak",
            "e.ndjson",
        ] {
            std::fs::write(d.join(name), "x").unwrap();
        }
        std::fs::create_dir_all(d.join("processed/2026-01-01")).unwrap();
        std::fs::write(d.join("processed/2026-01-01/old.csv"), "x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f.csv"), "x").unwrap();
        let mut opts = WatchOptions {
            dir: d.to_owned(),
            recursive: false,
            settle: Duration::ZERO,
            ignore: ignore(),
            ready_marker: None,
            archive_dir: d.join("processed"),
        };
        let names = |opts: &WatchOptions| -> Vec<String> {
            scan(opts)
                .unwrap()
                .iter()
                .map(|c| c.path.strip_prefix(d).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(&opts),
            vec!["a.csv", "b.jsonl", "c.csv.gz", "e.ndjson"]
        );
        opts.recursive = true;
        assert_eq!(
            names(&opts),
            vec!["a.csv", "b.jsonl", "c.csv.gz", "e.ndjson", "sub/f.csv"]
        );
        opts.ready_marker = Some(".done".into());
        std::fs::write(d.join("a.csv.done"), "").unwrap();
        let marked: Vec<bool> = scan(&opts).unwrap().iter().map(|c| c.marked).collect();
        assert_eq!(marked, vec![true, false, false, false, false]);
    }
}
