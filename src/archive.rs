//! Archiving: content hashes, moving finished files to `processed/YYYY-MM-DD/` without ever
//! overwriting, and `<name>.rejects.csv` files of the rows that need fixing.
//!
//! A move never replaces an existing file: the target is taken with a hard link (which fails
//! if the name exists), or copied with `create_new` across file systems, and the original is
//! removed only after that. A name conflict gets a numbered suffix (`orders.1.csv`).
//! Nothing is ever deleted except the original after a successful move.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::read::csv::CsvReader;
use crate::read::{self, Decoding, FileKind};

/// The identity of a settled file: the hash of its whole content, with its size.
pub fn content_hash(path: &Path) -> io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path)?;
    let size = hasher.update_reader(file)?.count();
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// The file's modification time as RFC 3339 (metadata only, never identity).
pub fn mtime_text(path: &Path) -> Option<String> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    let t: chrono::DateTime<chrono::Utc> = modified.into();
    Some(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// A free name for `name` in `dir`: `name`, then `stem.1.ext`, `stem.2.ext`, …
fn candidate(dir: &Path, name: &str, n: u32) -> PathBuf {
    if n == 0 {
        return dir.join(name);
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => dir.join(format!("{stem}.{n}.{ext}")),
        _ => dir.join(format!("{name}.{n}")),
    }
}

/// Moves `file` into `dir` (created if needed) under its own name or a suffixed one; returns
/// the new path. Never overwrites.
pub fn move_into(file: &Path, dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{} has no file name", file.display())))?;
    let source = fs::metadata(file)?;
    for n in 0..10_000 {
        let target = candidate(dir, name, n);
        // A move a crash interrupted after linking: the target is this very file. Finish
        // the move instead of making a second copy (`orders.1.csv`).
        if let Ok(t) = fs::metadata(&target) {
            if same_inode(&source, &t) {
                fs::remove_file(file)?;
                return Ok(target);
            }
            continue;
        }
        match fs::hard_link(file, &target) {
            Ok(()) => {
                fs::remove_file(file)?;
                return Ok(target);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                // Another file system (or no hard links): copy to a new file, then remove.
                let mut out = match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                };
                io::copy(&mut File::open(file)?, &mut out)?;
                out.sync_all()?;
                fs::remove_file(file)?;
                return Ok(target);
            }
        }
    }
    Err(io::Error::other(format!(
        "no free name for {name} in {}",
        dir.display()
    )))
}

fn same_inode(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// Where a file named `name` with this content hash was archived in `dir`, if it was (a
/// crash after the move but before it was recorded).
pub fn find_archived(dir: &Path, name: &str, hash: &str) -> Option<PathBuf> {
    (0..10_000)
        .map(|n| candidate(dir, name, n))
        .take_while(|p| p.exists())
        .find(|p| content_hash(p).is_ok_and(|(h, _)| h == hash))
}

/// `processed/2026-11-25` under the drop folder (or the configured archive folder).
pub fn dated_dir(drop_dir: &Path, archive_dir: &Path) -> PathBuf {
    let base = if archive_dir.is_absolute() {
        archive_dir.to_owned()
    } else {
        drop_dir.join(archive_dir)
    };
    base.join(chrono::Local::now().format("%Y-%m-%d").to_string())
}

/// The reason column added to a rejects file.
pub const REASON_COLUMN: &str = "impact_drop_reason";

/// How to read an export again for its rejects file.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub decoding: Decoding,
    pub delimiter: Option<u8>,
}

/// Writes the rows of `src` at `lines` (line → reason) to a new rejects file in `dir`:
/// `<name>.rejects.csv` (original header plus a reason column) for CSV, `<name>.rejects.jsonl`
/// (each object plus a reason key) for JSONL. Returns its path.
///
/// The file is written to a temporary file in `dir` (mode 0600: it holds order data),
/// fsynced, then given its name with `persist_noclobber`: a crash never leaves half a rejects
/// file, and an existing file is never replaced.
pub fn write_rejects(
    src: &Path,
    reading: Reading,
    lines: &BTreeMap<u64, String>,
    dir: &Path,
) -> io::Result<PathBuf> {
    let (mut tmp, name, ext) = write_listed(src, reading, lines, dir, "rejects")?;
    // The same rows with the same reasons already in a rejects file there (the same export
    // finished again): that file is the answer, never a second identical one.
    let size = tmp.as_file().metadata()?.len();
    for n in 0..10_000 {
        let existing = candidate(dir, &format!("{name}.rejects.{ext}"), n);
        match fs::metadata(&existing) {
            Ok(m) if m.len() == size && same_bytes(tmp.path(), &existing)? => {
                return Ok(existing);
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    for n in 0..10_000 {
        let target = candidate(dir, &format!("{name}.rejects.{ext}"), n);
        match tmp.persist_noclobber(&target) {
            Ok(_) => {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
                return Ok(target);
            }
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => return Err(e.error),
        }
    }
    Err(io::Error::other("no free name for a rejects file"))
}

/// Writes the rows of `src` at `lines` with their reasons to `<dir>/<name>.failed-at-impact.<ext>`
/// (the rejects format), replacing an earlier one: the file grows as follow-ups find more
/// failures. Written to a temporary file, fsynced, then renamed over the old one.
pub fn write_failed_at_impact(
    src: &Path,
    reading: Reading,
    lines: &BTreeMap<u64, String>,
    dir: &Path,
) -> io::Result<PathBuf> {
    let (tmp, name, ext) = write_listed(src, reading, lines, dir, "failed-at-impact")?;
    let target = dir.join(format!("{name}.failed-at-impact.{ext}"));
    tmp.persist(&target).map_err(|e| e.error)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(target)
}

/// The listed rows of `src` with a reason each, in a synced temporary file in `dir`, with
/// the source's name and the extension of its kind.
fn write_listed(
    src: &Path,
    reading: Reading,
    lines: &BTreeMap<u64, String>,
    dir: &Path,
    what: &str,
) -> io::Result<(tempfile::NamedTempFile, String, &'static str)> {
    fs::create_dir_all(dir)?;
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("export")
        .to_owned();
    let kind = FileKind::from_path(src).unwrap_or(FileKind::Csv);
    let ext = match kind {
        FileKind::Csv => "csv",
        FileKind::Jsonl => "jsonl",
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".impact-drop-{what}"))
        .tempfile_in(dir)?;
    write_rows(src, reading, kind, lines, BufWriter::new(tmp.as_file_mut()))?;
    tmp.as_file().sync_all()?;
    Ok((tmp, name, ext))
}

/// Whether two files hold the same bytes, compared in blocks.
fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y[..1])? == 0);
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

fn write_rows<W: Write>(
    src: &Path,
    reading: Reading,
    kind: FileKind,
    lines: &BTreeMap<u64, String>,
    mut out: W,
) -> io::Result<()> {
    let open = || read::open(src, reading.decoding).map_err(|e| io::Error::other(e.to_string()));
    match kind {
        FileKind::Csv => {
            // Where each listed record ends: its first line plus the line breaks inside its
            // quoted cells. The header's line and the delimiter come from the same reading.
            let Some(mut r) = CsvReader::new(open()?, reading.delimiter)? else {
                return Ok(());
            };
            let header_line = r.header().line;
            let delimiter = r.delimiter();
            let mut ends: BTreeMap<u64, u64> = BTreeMap::new();
            while let Some((line, _, record)) = r.next_record()? {
                if lines.contains_key(&line) {
                    let breaks = record
                        .iter()
                        .map(|f| f.iter().filter(|b| **b == b'\n').count() as u64)
                        .sum::<u64>();
                    ends.insert(line, line + breaks);
                }
            }
            // The rows' own bytes, line for line, each followed by its reason.
            copy_lines(open()?, &mut out, |n, text, eol| {
                if n == header_line {
                    return Some(format!(
                        "{text}{}{REASON_COLUMN}{eol}",
                        char::from(delimiter)
                    ));
                }
                let (&start, &end) = ends.range(..=n).next_back()?;
                if n > end {
                    return None;
                }
                if n < end {
                    return Some(format!("{text}{eol}"));
                }
                let reason = lines.get(&start).map_or("", String::as_str);
                Some(format!(
                    "{text}{}\"{}\"{eol}",
                    char::from(delimiter),
                    reason.replace('"', "\"\"")
                ))
            })?;
        }
        FileKind::Jsonl => {
            copy_lines(open()?, &mut out, |n, text, eol| {
                let reason = lines.get(&n)?;
                let quoted = serde_json::Value::String(reason.clone()).to_string();
                let trimmed = text.trim_end();
                let is_object =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(trimmed)
                        .is_ok();
                Some(if is_object {
                    // The line's own bytes, with the reason as one more key.
                    let body = trimmed.strip_suffix('}').unwrap_or(trimmed);
                    let sep = if body.trim_end().ends_with('{') {
                        ""
                    } else {
                        ","
                    };
                    format!("{body}{sep}\"{REASON_COLUMN}\":{quoted}}}{eol}")
                } else {
                    // Not a JSON object: kept whole, as text, beside its reason.
                    let original = serde_json::Value::String(text.to_owned()).to_string();
                    format!(
                        "{{\"{REASON_COLUMN}\":{quoted},\"impact_drop_original_line\":{original}}}{eol}"
                    )
                })
            })?;
        }
    }
    out.flush()
}

/// Feeds every physical line of `input` (its number from 1, its text without the line
/// ending, and the ending) to `keep`, and writes what it returns.
fn copy_lines<W: Write>(
    mut input: Box<dyn io::BufRead + Send>,
    out: &mut W,
    mut keep: impl FnMut(u64, &str, &str) -> Option<String>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        n += 1;
        let text = String::from_utf8_lossy(&buf);
        let (body, eol) = match text.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match text.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (text.as_ref(), "\n"),
            },
        };
        let body = if n == 1 {
            body.trim_start_matches('\u{feff}')
        } else {
            body
        };
        if let Some(line) = keep(n, body, eol) {
            out.write_all(line.as_bytes())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("processed");
        for content in ["one", "two", "three"] {
            let f = dir.path().join("orders.csv");
            fs::write(&f, content).unwrap();
            move_into(&f, &dest).unwrap();
            assert!(!f.exists());
        }
        assert_eq!(fs::read_to_string(dest.join("orders.csv")).unwrap(), "one");
        assert_eq!(
            fs::read_to_string(dest.join("orders.1.csv")).unwrap(),
            "two"
        );
        assert_eq!(
            fs::read_to_string(dest.join("orders.2.csv")).unwrap(),
            "three"
        );
    }

    #[test]
    fn a_move_interrupted_after_linking_is_finished_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("processed");
        fs::create_dir(&dest).unwrap();
        let f = dir.path().join("orders.csv");
        fs::write(&f, "rows").unwrap();
        // A crash between the hard link and the removal of the original.
        fs::hard_link(&f, dest.join("orders.csv")).unwrap();
        let to = move_into(&f, &dest).unwrap();
        assert_eq!(to, dest.join("orders.csv"));
        assert!(!f.exists());
        assert!(!dest.join("orders.1.csv").exists(), "no second copy");
        // And a move a crash left unrecorded is found again by name and content.
        let (hash, _) = content_hash(&to).unwrap();
        assert_eq!(find_archived(&dest, "orders.csv", &hash), Some(to));
        assert_eq!(find_archived(&dest, "orders.csv", "other"), None);
    }

    #[test]
    fn content_hash_ignores_the_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.csv"), "x,y\n1,2\n").unwrap();
        fs::write(dir.path().join("b (1).csv"), "x,y\n1,2\n").unwrap();
        let a = content_hash(&dir.path().join("a.csv")).unwrap();
        assert_eq!(a, content_hash(&dir.path().join("b (1).csv")).unwrap());
        assert_eq!(a.1, 8);
    }
}
