//! Readers: bytes on disk → records with their line number and a hash of their content.
//!
//! `open` deals with encodings (UTF-8 with or without BOM, UTF-16 by BOM, a configured
//! encoding such as Windows-1252) and always streams: nothing reads a file whole.

pub mod csv;
pub mod jsonl;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The two record layouts impact-drop reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Csv,
    Jsonl,
}

impl FileKind {
    /// By extension: `.csv`/`.tsv`/`.txt` are CSV, `.jsonl`/`.ndjson`/`.json` are JSONL, and
    /// the same with `.gz` (compressed).
    pub fn from_path(path: &Path) -> Option<FileKind> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "csv" | "tsv" | "txt" => Some(FileKind::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileKind::Jsonl),
            _ => None,
        }
    }
}

/// Errors that stop reading a whole file (as opposed to problems with one row).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: read failed near line {line}: {source}")]
    Io {
        path: PathBuf,
        line: u64,
        source: io::Error,
    },
    /// The file's bytes differ between the two passes over it: it was still being written
    /// (or replaced) while it was read.
    #[error(
        "{path}: the file changed while it was read{}; nothing was recorded from the changed \
         read: it is read again once it settles",
        .line.map(|l| format!(" (by line {l})")).unwrap_or_default()
    )]
    Changed { path: PathBuf, line: Option<u64> },
}

/// How to decode a file's bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Decoding {
    /// `None`: UTF-8 (a BOM is skipped; invalid bytes are reported per line).
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// The most bytes read from one file (after decompression); `None` = no limit.
    pub max_bytes: Option<u64>,
}

/// Fails the read once more than `limit` bytes came through (a gzip bomb, a runaway file).
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a file of exactly the limit from a larger one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the file is larger than [source] max_file_bytes ({} MiB){}: split the \
                         export into smaller files, or raise the limit",
                        self.limit / (1024 * 1024),
                        " once decompressed"
                    ),
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether the file is gzip-compressed (by its name).
pub fn is_gzip(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Opens a file for streaming, decompressed (`.gz`) and decoded to UTF-8 as configured, with
/// any BOM removed.
pub fn open(path: &Path, decoding: Decoding) -> Result<Box<dyn BufRead + Send>, ReadError> {
    open_in(path, decoding, None)
}

/// The content hash (BLAKE3, hex) and size of the bytes on disk, taken as a file is read.
#[derive(Clone, Default)]
pub struct RawDigest(std::sync::Arc<std::sync::Mutex<(blake3::Hasher, u64)>>);

impl RawDigest {
    /// The hash and size of every byte read so far (all of them once the reader hit the end).
    pub fn finish(&self) -> (String, u64) {
        match self.0.lock() {
            Ok(g) => (g.0.finalize().to_hex().to_string(), g.1),
            // A reader that panicked mid-update: a hash that matches nothing.
            Err(_) => (String::new(), 0),
        }
    }
}

/// Feeds every byte read from the file into a [`RawDigest`] (before decompression and
/// decoding: the hash is of the bytes on disk, the same as hashing the file separately).
struct Hashing<R> {
    inner: R,
    digest: RawDigest,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut g) = self.digest.0.lock() {
            g.0.update(&buf[..n]);
            g.1 += n as u64;
        }
        Ok(n)
    }
}

/// [`open`], hashing the bytes on disk as they are read: the file is hashed while it is
/// parsed instead of read once more for its hash.
pub fn open_hashing(
    path: &Path,
    decoding: Decoding,
) -> Result<(Box<dyn BufRead + Send>, RawDigest), ReadError> {
    let digest = RawDigest::default();
    let input = open_in(path, decoding, Some(digest.clone()))?;
    Ok((input, digest))
}

fn open_in(
    path: &Path,
    decoding: Decoding,
    digest: Option<RawDigest>,
) -> Result<Box<dyn BufRead + Send>, ReadError> {
    let file = File::open(path).map_err(|e| ReadError::Open {
        path: path.to_owned(),
        source: e,
    })?;
    if let (Some(limit), Ok(meta)) = (decoding.max_bytes, file.metadata()) {
        if meta.len() > limit {
            return Err(ReadError::Io {
                path: path.to_owned(),
                line: 0,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the file is {} MiB, larger than [source] max_file_bytes ({} MiB): split \
                         the export into smaller files, or raise the limit",
                        meta.len() / (1024 * 1024),
                        limit / (1024 * 1024)
                    ),
                ),
            });
        }
    }
    let file: Box<dyn Read + Send> = match digest {
        Some(digest) => Box::new(Hashing {
            inner: file,
            digest,
        }),
        None => Box::new(file),
    };
    let raw: Box<dyn BufRead + Send> = match (is_gzip(path), decoding.max_bytes) {
        (true, limit) => {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, file));
            match limit {
                Some(limit) => Box::new(BufReader::with_capacity(
                    256 * 1024,
                    Capped {
                        inner: gz,
                        left: limit,
                        limit,
                    },
                )),
                None => Box::new(BufReader::with_capacity(256 * 1024, gz)),
            }
        }
        (false, _) => Box::new(BufReader::with_capacity(256 * 1024, file)),
    };
    decode(raw, decoding).map_err(|e| ReadError::Io {
        path: path.to_owned(),
        line: 1,
        source: e,
    })
}

/// Wraps a reader so it yields UTF-8 (or raw bytes, for UTF-8 files) without a BOM.
pub fn decode<R: BufRead + Send + 'static>(
    mut reader: R,
    decoding: Decoding,
) -> io::Result<Box<dyn BufRead + Send>> {
    let head = reader.fill_buf()?;
    let utf16 = head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF");
    if utf16 || decoding.encoding.is_some() {
        let decoder = encoding_rs_io::DecodeReaderBytesBuilder::new()
            .encoding(decoding.encoding)
            .bom_override(true)
            .strip_bom(true)
            .build(reader);
        return Ok(Box::new(BufReader::with_capacity(256 * 1024, decoder)));
    }
    if head.starts_with(UTF8_BOM) {
        reader.consume(UTF8_BOM.len());
    }
    Ok(Box::new(reader))
}

/// Describes bytes that are not UTF-8, for a problem message.
pub fn not_utf8_message(bytes: &[u8]) -> String {
    let at = std::str::from_utf8(bytes)
        .err()
        .map_or(0, |e| e.valid_up_to());
    let bad = bytes.get(at).copied().unwrap_or_default();
    format!(
        "contains bytes that are not UTF-8 (0x{bad:02X} after \"{}\"): the file looks like \
         Windows-1252, e.g. re-saved in Excel; set [source] encoding = \"windows-1252\" or \
         export it again as UTF-8",
        String::from_utf8_lossy(&bytes[..at])
            .chars()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    )
}

/// Reads into `buf` up to and including the next `\n`, but no more than `limit` bytes; returns
/// the bytes read and whether the line was cut at the limit (the rest is skipped).
pub fn read_line_limited<R: BufRead + ?Sized>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<(usize, bool)> {
    buf.clear();
    let n = reader.take(limit as u64).read_until(b'\n', buf)?;
    if n == limit && buf.last() != Some(&b'\n') {
        // Too long: skip to the end of this line without keeping it.
        let mut skipped = 0usize;
        loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match memchr_newline(chunk) {
                Some(i) => {
                    reader.consume(i + 1);
                    skipped += i + 1;
                    break;
                }
                None => {
                    let len = chunk.len();
                    reader.consume(len);
                    skipped += len;
                }
            }
        }
        return Ok((n + skipped, true));
    }
    Ok((n, false))
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_small(mut r: impl Read) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    fn decoded(bytes: &'static [u8], decoding: Decoding) -> Vec<u8> {
        read_small(decode(bytes, decoding).unwrap()).unwrap()
    }

    #[test]
    fn utf8_bom_is_skipped_and_bad_bytes_pass_through() {
        assert_eq!(decoded(b"\xEF\xBB\xBFa,b\n", Decoding::default()), b"a,b\n");
        assert_eq!(decoded(b"caf\xE9\n", Decoding::default()), b"caf\xE9\n");
    }

    #[test]
    fn windows_1252_is_transcoded() {
        let d = Decoding {
            encoding: Some(encoding_rs::WINDOWS_1252),
            max_bytes: None,
        };
        assert_eq!(decoded(b"caf\xE9 \x80\n", d), "café €\n".as_bytes());
        // A UTF-8 BOM wins over the configured encoding.
        assert_eq!(
            decoded(b"\xEF\xBB\xBFcaf\xC3\xA9\n", d),
            "café\n".as_bytes()
        );
    }

    #[test]
    fn utf16_is_recognised_by_its_bom() {
        assert_eq!(
            decoded(b"\xFF\xFEa\0,\0b\0\n\0", Decoding::default()),
            b"a,b\n"
        );
    }

    #[test]
    fn kinds_by_name_with_or_without_gz() {
        assert_eq!(FileKind::from_path(Path::new("a.csv")), Some(FileKind::Csv));
        assert_eq!(
            FileKind::from_path(Path::new("a.CSV.gz")),
            Some(FileKind::Csv)
        );
        assert_eq!(
            FileKind::from_path(Path::new("orders (1).ndjson.gz")),
            Some(FileKind::Jsonl)
        );
        assert_eq!(FileKind::from_path(Path::new("a.gz")), None);
        assert_eq!(FileKind::from_path(Path::new("a.csv.done")), None);
    }

    #[test]
    fn gz_files_are_read_streaming() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(b"\xEF\xBB\xBFOrderId\nA\n").unwrap();
        gz.finish().unwrap();
        let got = read_small(open(&path, Decoding::default()).unwrap()).unwrap();
        assert_eq!(got, b"OrderId\nA\n");
    }

    #[test]
    fn long_lines_are_cut_and_skipped() {
        let mut r: &[u8] = b"short\nthis line is long\nnext\n";
        let mut buf = Vec::new();
        assert_eq!(read_line_limited(&mut r, &mut buf, 8).unwrap(), (6, false));
        assert_eq!(read_line_limited(&mut r, &mut buf, 8).unwrap(), (18, true));
        assert_eq!(read_line_limited(&mut r, &mut buf, 8).unwrap(), (5, false));
        assert_eq!(buf, b"next\n");
    }

    #[test]
    fn not_utf8_message_says_what_to_do() {
        let m = not_utf8_message(b"Caf\xE9");
        assert!(m.contains("0xE9") && m.contains("windows-1252"), "{m}");
    }
}
