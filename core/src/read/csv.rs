//! CSV reader: header row, delimiter (configured, `sep=` line, or sniffed), quoted CRLF, blank
//! lines and repeated header rows skipped, each record with its line and content hash.

use std::collections::VecDeque;
use std::io::{BufRead, Read};

use csv::ByteRecord;

use crate::model::{fold_name, LineHash};

/// The header row of a CSV file.
#[derive(Clone, Debug, Default)]
pub struct Header {
    /// Column names as written (trimmed).
    pub names: Vec<String>,
    /// Line of the header row.
    pub line: u64,
    /// Column indices sorted by folded name: the canonical order for line hashes, so a
    /// re-export with its columns in another order hashes the same.
    hash_order: Vec<(usize, String)>,
}

impl Header {
    fn new(record: &ByteRecord, line: u64) -> Header {
        let names: Vec<String> = record
            .iter()
            .map(|f| {
                String::from_utf8_lossy(f)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_owned()
            })
            .collect();
        let mut hash_order: Vec<(usize, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i, fold_name(n)))
            .collect();
        hash_order.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        Header {
            names,
            line,
            hash_order,
        }
    }

    fn matches(&self, record: &ByteRecord) -> bool {
        record.len() == self.names.len()
            && record
                .iter()
                .zip(&self.names)
                .all(|(f, n)| trim(f) == n.as_bytes())
    }
}

/// Counts of lines that carried no row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SkipCounts {
    /// Blank lines (or lines of empty cells).
    pub blank: u64,
    /// Copies of the header row inside the file (concatenated exports).
    pub repeated_headers: u64,
}

/// The longest single CSV record read.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Sits under the CSV parser and notes where each line's content starts.
///
/// The csv crate's own positions are unusable as line numbers: with CRLF endings and blank
/// lines its record offsets point at the previous line ending. So this reader remembers, for
/// every line that starts with content, its byte offset and line number; a record's line is
/// that of the first content start at or after the offset csv reports.
struct LineTracker {
    inner: Box<dyn BufRead + Send>,
    /// Where the current record started; a record longer than `MAX_RECORD_BYTES` fails the
    /// read, so one endless line cannot take the memory.
    record_start: u64,
    offset: u64,
    line: u64,
    at_line_start: bool,
    starts: VecDeque<(u64, u64)>,
    /// Double quotes seen so far: an odd count at the end means a quote never closed.
    quotes: u64,
    /// The input is exhausted.
    eof: bool,
}

impl LineTracker {
    fn new(inner: Box<dyn BufRead + Send>) -> LineTracker {
        LineTracker {
            inner,
            record_start: 0,
            offset: 0,
            line: 1,
            at_line_start: true,
            starts: VecDeque::new(),
            quotes: 0,
            eof: false,
        }
    }

    /// The line of the first content byte at or after `byte`.
    fn line_at(&mut self, byte: u64) -> u64 {
        while self.starts.front().is_some_and(|&(o, _)| o < byte) {
            self.starts.pop_front();
        }
        self.starts.front().map_or(self.line, |&(_, l)| l)
    }
}

impl Read for LineTracker {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.offset.saturating_sub(self.record_start) > MAX_RECORD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a record is longer than {} MiB (an unclosed quote, or not a CSV file): the \
                     file cannot be read past line {}",
                    MAX_RECORD_BYTES / (1024 * 1024),
                    self.line_at(self.record_start)
                ),
            ));
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            let eol = b == b'\n' || b == b'\r';
            if self.at_line_start && !eol {
                self.starts.push_back((self.offset + i as u64, self.line));
            }
            if b == b'\n' {
                self.line += 1;
            } else if b == b'"' {
                self.quotes += 1;
            }
            self.at_line_start = eol;
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Streams the records of a CSV file.
pub struct CsvReader {
    rdr: csv::Reader<LineTracker>,
    header: Header,
    record: ByteRecord,
    norm: Vec<u8>,
    /// Lines consumed before the CSV data (a `sep=` line).
    line_offset: u64,
    delimiter: u8,
    open_quote: Option<(u64, u64)>,
    /// Off for a pass that only needs the records (the first of two): no line hashes.
    hash_lines: bool,
    pub skipped: SkipCounts,
}

/// Trims ASCII whitespace (and `\r`) from both ends of a cell.
pub fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

impl CsvReader {
    /// Starts reading: consumes a `sep=` line if any, settles the delimiter and reads the
    /// header row. Returns `None` for a file with no header at all (empty or blank).
    pub fn new(
        mut input: Box<dyn BufRead + Send>,
        delimiter: Option<u8>,
    ) -> std::io::Result<Option<CsvReader>> {
        let mut line_offset = 0;
        let mut delimiter = delimiter;
        {
            let head = input.fill_buf()?;
            if head.len() >= 5 && head[..4].eq_ignore_ascii_case(b"sep=") {
                let d = head[4];
                let end = head
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(head.len(), |i| i + 1);
                if delimiter.is_none() && d != b'\r' && d != b'\n' {
                    delimiter = Some(d);
                }
                input.consume(end);
                line_offset = 1;
            }
        }
        let delimiter = match delimiter {
            Some(d) => d,
            None => sniff_delimiter(input.fill_buf()?),
        };
        let rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .buffer_capacity(64 * 1024)
            .from_reader(LineTracker::new(input));
        let mut reader = CsvReader {
            rdr,
            header: Header::default(),
            record: ByteRecord::new(),
            norm: Vec::with_capacity(1024),
            line_offset,
            delimiter,
            open_quote: None,
            hash_lines: true,
            skipped: SkipCounts::default(),
        };
        loop {
            if !reader.read_record()? {
                return Ok(None);
            }
            if is_blank(&reader.record) {
                reader.skipped.blank += 1;
                continue;
            }
            let line = reader.line();
            reader.header = Header::new(&reader.record, line);
            return Ok(Some(reader));
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// For the record just read: `(first, last)` line when a quote opened in it is never
    /// closed, so every line up to the end of the file became part of one cell.
    pub fn open_quote(&self) -> Option<(u64, u64)> {
        self.open_quote
    }

    fn read_record(&mut self) -> std::io::Result<bool> {
        let more =
            self.rdr
                .read_byte_record(&mut self.record)
                .map_err(|e| match e.into_kind() {
                    csv::ErrorKind::Io(io) => io,
                    other => std::io::Error::other(format!("{other:?}")),
                })?;
        // The next record starts where the parser stands now.
        let next = self.rdr.position().byte();
        self.rdr.get_mut().record_start = next;
        Ok(more)
    }

    fn line(&mut self) -> u64 {
        let byte = self.record.position().map_or(0, |p| p.byte());
        self.rdr.get_mut().line_at(byte) + self.line_offset
    }

    /// Reads records without their line hashes (they come as the default hash).
    pub fn without_line_hashes(mut self) -> CsvReader {
        self.hash_lines = false;
        self
    }

    /// The next data record with its line number and content hash, skipping blank lines and
    /// repeated header rows.
    pub fn next_record(&mut self) -> std::io::Result<Option<(u64, LineHash, &ByteRecord)>> {
        loop {
            if !self.read_record()? {
                return Ok(None);
            }
            if is_blank(&self.record) {
                self.skipped.blank += 1;
                continue;
            }
            if self.header.matches(&self.record) {
                self.skipped.repeated_headers += 1;
                continue;
            }
            let hash = if self.hash_lines {
                self.hash_record()
            } else {
                LineHash::default()
            };
            let line = self.line();
            // A record that ends only at the end of the file, after a quote that was never
            // closed, swallowed every line after it into one cell.
            self.open_quote = None;
            let tracker = self.rdr.get_ref();
            if tracker.eof && tracker.quotes % 2 == 1 {
                let breaks: u64 = self
                    .record
                    .iter()
                    .map(|f| f.iter().filter(|b| **b == b'\n').count() as u64)
                    .sum();
                let trailing = self
                    .record
                    .iter()
                    .next_back()
                    .is_some_and(|f| f.ends_with(b"\n"));
                let last = line + breaks - u64::from(trailing);
                if last > line {
                    self.open_quote = Some((line, last));
                }
            }
            return Ok(Some((line, hash, &self.record)));
        }
    }

    /// Hash of the record's normalised content: `(folded column name, trimmed value)` for
    /// every non-empty cell, in column-name order. Quoting, line endings, column order and
    /// empty columns do not change it.
    fn hash_record(&mut self) -> LineHash {
        self.norm.clear();
        for (i, name) in &self.header.hash_order {
            if let Some(v) = self.record.get(*i) {
                let v = trim(v);
                if !v.is_empty() {
                    self.norm.extend_from_slice(name.as_bytes());
                    self.norm.push(0x1f);
                    self.norm.extend_from_slice(v);
                    self.norm.push(0x1e);
                }
            }
        }
        for i in self.header.names.len()..self.record.len() {
            let v = trim(&self.record[i]);
            if !v.is_empty() {
                self.norm.extend_from_slice(format!("#{i}").as_bytes());
                self.norm.push(0x1f);
                self.norm.extend_from_slice(v);
                self.norm.push(0x1e);
            }
        }
        LineHash::of(&self.norm)
    }
}

fn is_blank(record: &ByteRecord) -> bool {
    record.iter().all(|f| trim(f).is_empty())
}

/// Picks the delimiter of the first line: whichever of `,` `;` tab `|` occurs most often
/// outside quotes (`,` on a tie or when none occurs).
pub fn sniff_delimiter(head: &[u8]) -> u8 {
    let mut counts = [0usize; 4];
    let candidates = [b',', b';', b'\t', b'|'];
    let mut quoted = false;
    for &b in head {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = candidates.iter().position(|&c| c == b) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let mut best = 0;
    for i in 1..4 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: &'static [u8], delim: Option<u8>) -> (Vec<String>, Vec<(u64, Vec<String>)>) {
        let mut r = CsvReader::new(Box::new(data), delim).unwrap().unwrap();
        let header = r.header().names.clone();
        let mut out = Vec::new();
        while let Some((line, _, rec)) = r.next_record().unwrap() {
            out.push((
                line,
                rec.iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            ));
        }
        (header, out)
    }

    #[test]
    fn crlf_quoted_newlines_blank_lines_and_repeated_headers() {
        let data = b"OrderId,Note\r\n\r\nA,\"two\r\nlines\"\r\nOrderId,Note\r\n,\r\nB,\"\"\r\nC,x";
        let (header, rows) = rows(data, None);
        assert_eq!(header, vec!["OrderId", "Note"]);
        assert_eq!(
            rows,
            vec![
                (3, vec!["A".into(), "two\r\nlines".into()]),
                (7, vec!["B".into(), "".into()]),
                (8, vec!["C".into(), "x".into()]),
            ]
        );
    }

    #[test]
    fn delimiter_is_sniffed_or_taken_from_a_sep_line() {
        assert_eq!(sniff_delimiter(b"a;b;c\n1,5;2;3"), b';');
        assert_eq!(sniff_delimiter(b"a\tb\tc\n"), b'\t');
        assert_eq!(sniff_delimiter(b"\"a;x\",b,c\n"), b',');
        assert_eq!(sniff_delimiter(b"onlyone\n"), b',');
        let (header, rows) = rows(b"sep=;\nOrderId;Amount\nA;1,50\n", None);
        assert_eq!(header, vec!["OrderId", "Amount"]);
        assert_eq!(rows, vec![(3, vec!["A".into(), "1,50".into()])]);
    }

    #[test]
    fn empty_and_blank_files_have_no_header() {
        assert!(CsvReader::new(Box::new(&b""[..]), None).unwrap().is_none());
        assert!(CsvReader::new(Box::new(&b"\n\r\n,,\n"[..]), None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn hash_ignores_quoting_column_order_and_empty_columns() {
        let hash = |data: &'static [u8]| {
            let mut r = CsvReader::new(Box::new(data), None).unwrap().unwrap();
            r.next_record().unwrap().unwrap().1
        };
        let a = hash(b"OrderId,Sku\nA,X\n");
        assert_eq!(a, hash(b"Sku,OrderId\r\n\"X\",A\r\n"));
        assert_eq!(a, hash(b"OrderId,Sku,Extra\nA, X ,\n"));
        assert_ne!(a, hash(b"OrderId,Sku\nA,Y\n"));
        assert_ne!(a, hash(b"OrderId,ItemName\nA,X\n"));
    }
}
