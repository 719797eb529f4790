//! Intake of one file: read → map → group → validate (`process_file`), in memory that does
//! not grow with the file.
//!
//! An order is complete only at its last row, and its rows need not be adjacent. So the file
//! is read twice: a first pass maps every row's group key and marks, in a bitmap of one bit
//! per row, the row that is the last of its order (the key → last row map is dropped once
//! the bitmap is made). The second pass groups rows as before and finishes each order at its
//! marked row: it is validated and handed to a callback at once, and its rows are freed.
//! Only the orders still open are held, however large the file. Invalid, filtered and stray
//! rows are in the report, in the order of their first line.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::group::{group_key, Grouper, Keying};
use crate::model::{Field, LineRef, OrderDraft, Problem, Row};
use crate::money::{self, SaleRules};
use crate::profile::map::{CsvMapper, JsonMapper};
use crate::profile::Profile;
use crate::read::csv::{CsvReader, SkipCounts};
use crate::read::jsonl::JsonlReader;
use crate::read::{self, Decoding, FileKind, ReadError};
use crate::settings::Endpoint;
use crate::validate::{parse_money, validate, Conversion, Invalid, Rules};

/// What this file maps (from its columns, constants and `[defaults]`) to fields the endpoint
/// does not define: impact would ignore them, so they are not sent, and this says so.
pub fn not_sent(stages: &Stages, sources: &[(Field, String)]) -> Vec<(Field, String)> {
    let endpoint = stages.rules.endpoint;
    let from_file = sources.iter().map(|(f, c)| (*f, format!("column \"{c}\"")));
    let constants = (stages.profile.constants.iter())
        .chain(&stages.profile.item_constants)
        .map(|(f, _)| (*f, "a [mapping] value".to_owned()));
    let defaults = (stages.rules.defaults.iter()).map(|(f, _)| (*f, "[defaults]".to_owned()));
    let mut out: Vec<(Field, String)> = Vec::new();
    for (field, from) in from_file.chain(constants).chain(defaults) {
        if field.is_api() && !field.defined_on(endpoint) && !out.iter().any(|(f, _)| *f == field) {
            out.push((field, from));
        }
    }
    out
}

/// The note for a field the endpoint does not define (see [`not_sent`]).
pub fn not_sent_note(endpoint: Endpoint, field: Field, from: &str) -> String {
    format!(
        "impact's {} endpoint ignores {field} (from {from}): not sent",
        endpoint.as_str()
    )
}

impl FileReport {
    /// Records the fields the endpoint ignores, and a note for each.
    fn set_ignored(&mut self, endpoint: Endpoint, ignored: Vec<(Field, String)>) {
        self.notes.extend(
            ignored
                .iter()
                .map(|(f, from)| not_sent_note(endpoint, *f, from)),
        );
        self.ignored = ignored;
    }
}

/// Everything the stages need, built once from the config.
#[derive(Clone, Debug)]
pub struct Stages {
    pub profile: Profile,
    pub rules: Rules,
    pub keying: Keying,
    pub decoding: Decoding,
    pub delimiter: Option<u8>,
    /// Which lines and orders are not a sale (tips, gift cards, zero sales).
    pub sale: SaleRules,
}

impl Stages {
    /// The stages for a profile and rules; how orders are keyed follows from the rules.
    pub fn new(
        profile: Profile,
        rules: Rules,
        decoding: Decoding,
        delimiter: Option<u8>,
    ) -> Stages {
        let keying = Keying {
            event_fields: rules.event_fields(),
            default_campaign: rules.default_for(Field::CAMPAIGN_ID).map(str::to_owned),
            default_event: rules
                .event_fields()
                .into_iter()
                .find_map(|f| rules.default_for(f).map(|v| (f, v.to_owned()))),
        };
        Stages {
            profile,
            rules,
            keying,
            decoding,
            delimiter,
            sale: SaleRules::default(),
        }
    }
}

/// What reading one file found: every row is counted as valid, invalid or skipped.
#[derive(Debug, Default)]
pub struct FileReport {
    pub path: PathBuf,
    pub kind: Option<FileKind>,
    /// Data rows (CSV records or non-blank JSON lines), header excluded.
    pub rows: u64,
    pub skipped: SkipCounts,
    pub valid_conversions: u64,
    pub valid_rows: u64,
    pub invalid: Vec<Invalid>,
    /// Rows that belong to no order (no OrderId, unreadable JSON line).
    pub stray_lines: Vec<LineRef>,
    pub stray_problems: Vec<Problem>,
    /// Problems with the file as a whole (header): every row is invalid.
    pub file_problems: Vec<Problem>,
    /// The rows of a file refused as a whole (`file_problems`): each is recorded invalid
    /// with the file's reason and listed in its rejects file, never silently dropped.
    pub refused: Vec<LineRef>,
    /// Things worth saying that do not make anything invalid.
    pub notes: Vec<String>,
    /// Orders skipped by a filter (a status the operator does not send).
    pub filtered: Vec<Filtered>,
    /// Where each API field came from in this file (column or JSON path).
    pub sources: Vec<(crate::model::Field, String)>,
    /// Fields the endpoint does not define, with where each came from: not sent.
    pub ignored: Vec<(crate::model::Field, String)>,
}

/// An order a filter skipped: never sent, never lost, listed with its reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Filtered {
    pub order_id: String,
    #[serde(serialize_with = "lines_only")]
    pub lines: Vec<LineRef>,
    pub reason: String,
}

fn lines_only<S: serde::Serializer>(lines: &[LineRef], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(lines.iter().map(|l| l.line))
}

/// The reason a filter skips this order (or, with `rows`, this row), if one does, naming the
/// column the file used.
pub fn filter_reason(
    order: &crate::model::FieldSet,
    filters: &[crate::profile::Filter],
    sources: &[(crate::model::Field, String)],
    rows: bool,
) -> Option<String> {
    filters.iter().filter(|f| f.rows == rows).find_map(|f| {
        let value = order.get(f.slot)?;
        let column = sources
            .iter()
            .find(|(slot, _)| *slot == f.slot)
            .map(|(_, c)| c.as_str())
            .or(f.sources.first().map(String::as_str))
            .unwrap_or("");
        if f.when_present {
            return Some(format!("{column} is set (\"{value}\")"));
        }
        f.skip
            .iter()
            .any(|s| s.eq_ignore_ascii_case(value))
            .then(|| format!("{column} is \"{value}\""))
    })
}

impl FileReport {
    pub fn filtered_rows(&self) -> u64 {
        self.filtered.iter().map(|f| f.lines.len() as u64).sum()
    }

    pub fn invalid_rows(&self) -> u64 {
        self.rows
            .saturating_sub(self.valid_rows + self.filtered_rows())
    }

    pub fn is_clean(&self) -> bool {
        self.invalid_rows() == 0 && self.file_problems.is_empty() && self.stray_problems.is_empty()
    }
}

/// An I/O error while reading `path` near `line`.
fn io_at(path: &Path, line: u64) -> impl FnOnce(std::io::Error) -> ReadError {
    let path = path.to_owned();
    move |source| ReadError::Io { path, line, source }
}

/// Reads, maps, groups and validates one file. Each valid conversion goes to `on_valid` as
/// soon as its order's last row is read; invalid orders, stray rows and file problems are in
/// the report. A small plain file (under [`ONE_PASS_BELOW`]) is read once, every order
/// finished at its end: holding it costs less than reading it twice. Larger files and
/// compressed ones (whose size says little) are read in two passes.
pub fn process_file(
    stages: &Stages,
    path: &Path,
    on_valid: &mut dyn FnMut(Conversion),
) -> Result<FileReport, ReadError> {
    let passes = if in_two_passes(path) { 2 } else { 1 };
    process_file_in(stages, path, passes, on_valid)
}

/// Whether a file is read in two passes: a plain file of [`ONE_PASS_BELOW`] or more, or a
/// compressed one.
pub fn in_two_passes(path: &Path) -> bool {
    let small = std::fs::metadata(path).is_ok_and(|m| m.len() < ONE_PASS_BELOW)
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    !small
}

/// Files smaller than this are read in one pass (at most a few times this in memory).
pub const ONE_PASS_BELOW: u64 = 4 << 20;

/// [`process_file`] with the number of passes chosen by the caller (1 or 2; tests compare
/// both).
pub fn process_file_in(
    stages: &Stages,
    path: &Path,
    passes: u8,
    on_valid: &mut dyn FnMut(Conversion),
) -> Result<FileReport, ReadError> {
    let io_err = |line: u64| io_at(path, line);
    let mut input = read::open(path, stages.decoding)?;
    let kind = match FileKind::from_path(path) {
        Some(k) => k,
        None => sniff_kind(&mut input).map_err(io_err(1))?,
    };
    if passes < 2 {
        return process(stages, path, kind, input, None, on_valid);
    }
    let first = first_pass_of(stages, path, kind, input, None)?;
    let input = read::open(path, stages.decoding)?;
    process(stages, path, kind, input, Some(&first), on_valid)
}

/// Rows per verified block of the second pass (see [`FirstPass`]).
pub const VERIFY_ROWS: u64 = 4096;

/// What the first pass of [`first_pass`] learned of a file: the hash and size of its bytes on
/// disk, which rows end an order, and (when verifying) a digest of each block of
/// [`VERIFY_ROWS`] rows, so the second pass proves each row is what the first read before any
/// order that uses it is handed on.
pub struct FirstPass {
    pub content_hash: String,
    pub size: u64,
    pub kind: FileKind,
    last: LastRows,
    blocks: Option<Vec<[u8; 16]>>,
    per_block: u64,
}

/// Digests of consecutive blocks of rows (line number and line hash of each), the header's
/// column names first: the same rows in the same places give the same digests.
struct BlockDigest {
    hasher: blake3::Hasher,
    rows: u64,
    per_block: u64,
    done: Vec<[u8; 16]>,
}

impl BlockDigest {
    fn new(header: Option<&[String]>, per_block: u64) -> BlockDigest {
        let mut hasher = blake3::Hasher::new();
        for name in header.unwrap_or_default() {
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
        }
        BlockDigest {
            hasher,
            rows: 0,
            per_block: per_block.max(1),
            done: Vec::new(),
        }
    }

    /// Adds a row; true when it closed a block.
    fn add(&mut self, line: u64, hash: &crate::model::LineHash) -> bool {
        self.hasher.update(&line.to_le_bytes());
        self.hasher.update(&hash.0);
        self.rows += 1;
        if self.rows.is_multiple_of(self.per_block) {
            self.close();
            return true;
        }
        false
    }

    fn close(&mut self) {
        let full = self.hasher.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full.as_bytes()[..16]);
        self.done.push(out);
        self.hasher.reset();
    }

    /// Closes the last, partial block (an empty one counts: a file that lost rows differs).
    fn finish(mut self) -> Vec<[u8; 16]> {
        self.close();
        self.done
    }
}

/// The first pass of a file that is recorded as it is read: hashes its bytes on disk, marks
/// the last row of each order, and takes the digests the second pass ([`second_pass`])
/// verifies. The file is read once for all three.
pub fn first_pass(stages: &Stages, path: &Path) -> Result<FirstPass, ReadError> {
    first_pass_in(stages, path, VERIFY_ROWS)
}

/// [`first_pass`] with blocks of `per_block` rows (tests use small ones).
pub fn first_pass_in(stages: &Stages, path: &Path, per_block: u64) -> Result<FirstPass, ReadError> {
    let (mut input, digest) = read::open_hashing(path, stages.decoding)?;
    let kind = match FileKind::from_path(path) {
        Some(k) => k,
        None => sniff_kind(&mut input).map_err(io_at(path, 1))?,
    };
    let mut first = first_pass_of(stages, path, kind, input, Some(per_block))?;
    (first.content_hash, first.size) = digest.finish();
    Ok(first)
}

/// The second pass of [`first_pass`]: the same as [`process_file`], except that each
/// conversion goes to `on_valid` only once every row up to its last one (and the header) is
/// proven the same as in the first pass, and the whole file's hash is compared at its end.
/// A file that changed in between fails with [`ReadError::Changed`]; conversions handed on
/// before that came from rows verified unchanged.
pub fn second_pass(
    stages: &Stages,
    path: &Path,
    first: &FirstPass,
    on_valid: &mut dyn FnMut(Conversion),
) -> Result<FileReport, ReadError> {
    let (input, digest) = read::open_hashing(path, stages.decoding)?;
    let report = process(stages, path, first.kind, input, Some(first), on_valid)?;
    if digest.finish() != (first.content_hash.clone(), first.size) {
        return Err(ReadError::Changed {
            path: path.to_owned(),
            line: None,
        });
    }
    Ok(report)
}

/// The same as [`process_file`] for bytes already opened and decoded (fuzzing, tests), in
/// one pass: every order is finished at the end.
pub fn process_reader(
    stages: &Stages,
    path: &Path,
    kind: FileKind,
    input: Box<dyn BufRead + Send>,
    on_valid: &mut dyn FnMut(Conversion),
) -> Result<FileReport, ReadError> {
    process(stages, path, kind, input, None, on_valid)
}

/// One bit per row (in reading order): set when the row is the last of its order.
pub struct LastRows(Vec<u64>);

impl LastRows {
    fn is_last(&self, row: u64) -> bool {
        usize::try_from(row / 64)
            .ok()
            .and_then(|w| self.0.get(w))
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }
}

/// The first pass: maps each row's group key exactly as the second pass does and marks the
/// last row of each. The map holds a 64-bit hash of each key, not the key: two orders whose
/// keys collide share a mark at the later of their last rows, so the other one is finished
/// at the end of the file instead: later, never early. With `verify`, it also takes the
/// digests of blocks of rows.
fn first_pass_of(
    stages: &Stages,
    path: &Path,
    kind: FileKind,
    input: Box<dyn BufRead + Send>,
    per_block: Option<u64>,
) -> Result<FirstPass, ReadError> {
    let verify = per_block.is_some();
    let per_block = per_block.unwrap_or(VERIFY_ROWS);
    use std::collections::HashMap;
    use std::hash::BuildHasher;
    let io_err = |line: u64| io_at(path, line);
    let hasher = foldhash::fast::RandomState::default();
    // 12 bytes an entry (a key hash as two u32, the row as u32): on 10,000,000 rows the map
    // and its last doubling are most of the peak memory. A row past u32::MAX (never in a
    // real export) saturates: its order is finished at the end of the file, later, never
    // early.
    let mut last: HashMap<[u32; 2], u32, foldhash::fast::RandomState> = HashMap::default();
    let mut rows = 0u64;
    let mut mark = |key: Option<&str>| {
        if let Some(key) = key {
            let h = hasher.hash_one(key);
            let row = u32::try_from(rows).unwrap_or(u32::MAX);
            last.insert([h as u32, (h >> 32) as u32], row);
        }
        rows += 1;
    };
    let mut blocks = None;
    match kind {
        FileKind::Csv => {
            if let Some(reader) = CsvReader::new(input, stages.delimiter).map_err(io_err(1))? {
                let mut digest = BlockDigest::new(Some(&reader.header().names), per_block);
                let mut reader = if verify {
                    reader
                } else {
                    reader.without_line_hashes()
                };
                let mut mapper = CsvMapper::new(&stages.profile, reader.header()).keys_only();
                let mut last_line = reader.header().line;
                while let Some((line, hash, record)) =
                    reader.next_record().map_err(io_err(last_line + 1))?
                {
                    last_line = line;
                    if verify {
                        digest.add(line, &hash);
                    }
                    let row = mapper.map(line, hash, record);
                    mark(group_key(&row.order));
                }
                blocks = verify.then(|| digest.finish());
            } else if verify {
                // Empty: any row the second pass finds fails its first block.
                blocks = Some(Vec::new());
            }
        }
        FileKind::Jsonl => {
            let mut digest = BlockDigest::new(None, per_block);
            let mut reader = JsonlReader::new(input);
            let mut mapper = JsonMapper::new(&stages.profile);
            let mut last_line = 0;
            while let Some((line, hash, parsed)) =
                reader.next_record().map_err(io_err(last_line + 1))?
            {
                last_line = line;
                if verify {
                    digest.add(line, &hash);
                }
                match parsed {
                    Ok(obj) => {
                        let row = mapper.map(line, hash, &obj);
                        mark(group_key(&row.order));
                    }
                    Err(_) => mark(None),
                }
            }
            blocks = verify.then(|| digest.finish());
        }
    }
    let mut bits = vec![0u64; usize::try_from(rows.div_ceil(64)).unwrap_or(0)];
    for row in last.into_values().map(u64::from) {
        if let Some(w) = usize::try_from(row / 64).ok().and_then(|w| bits.get_mut(w)) {
            *w |= 1 << (row % 64);
        }
    }
    Ok(FirstPass {
        content_hash: String::new(),
        size: 0,
        kind,
        last: LastRows(bits),
        blocks,
        per_block,
    })
}

/// Rows handed from the reading thread to the grouping one at a time.
const BATCH: usize = 512;

/// One record as read and mapped (`row` is `None` for a file refused as a whole).
struct ReadRow {
    line: u64,
    hash: crate::model::LineHash,
    row: Option<Row>,
}

/// What the reading thread sends.
enum Batch {
    Rows(Vec<ReadRow>),
    /// The end of the file, with the lines skipped on the way.
    Done(SkipCounts),
    Failed(ReadError),
}

/// What becomes of each finished order: filtered, not a sale, invalid or valid.
struct Finisher<'a> {
    stages: &'a Stages,
    on_valid: &'a mut dyn FnMut(Conversion),
    /// Finished but not yet handed on: their rows are not all verified yet (second pass of
    /// [`first_pass`] only).
    held: Option<Vec<Conversion>>,
    valid_conversions: u64,
    valid_rows: u64,
    invalid: Vec<Invalid>,
    filtered: Vec<Filtered>,
}

impl Finisher<'_> {
    /// Hands on what was held: every row it uses is verified.
    fn release(&mut self) {
        if let Some(held) = &mut self.held {
            for c in held.drain(..) {
                (self.on_valid)(c);
            }
        }
    }

    fn take(&mut self, mut draft: OrderDraft, sources: &[(Field, String)]) {
        let rules = &self.stages.rules;
        let sale = &self.stages.sale;
        let number = |v: &str| parse_money(v, rules);
        if let Some(reason) =
            filter_reason(&draft.order, &self.stages.profile.filters, sources, false)
        {
            self.filtered.push(Filtered {
                order_id: draft.order_id,
                lines: draft.lines,
                reason,
            });
            return;
        }
        for not_sale in money::split_not_sales(&mut draft, sale, &number) {
            self.filtered.push(Filtered {
                order_id: draft.order_id.clone(),
                lines: not_sale.lines,
                reason: not_sale.reason,
            });
        }
        if draft.lines.is_empty() {
            return;
        }
        match validate(draft, rules) {
            Ok(conversion) if conversion.sale_amount().is_zero() && !sale.send_zero_sales => {
                self.filtered.push(Filtered {
                    order_id: conversion.key().order_id.clone(),
                    lines: conversion.lines().to_vec(),
                    reason: "zero sale: nothing to pay a commission on (an exchange or a 100 % \
                             discount); [sale] send_zero_sales = true sends it"
                        .into(),
                });
            }
            Ok(conversion) => {
                self.valid_conversions += 1;
                self.valid_rows += conversion.lines().len() as u64;
                match &mut self.held {
                    Some(held) => held.push(conversion),
                    None => (self.on_valid)(conversion),
                }
            }
            Err(inv) => self.invalid.push(*inv),
        }
    }
}

/// The second pass (or the only one, without `last`).
fn process(
    stages: &Stages,
    path: &Path,
    kind: FileKind,
    input: Box<dyn BufRead + Send>,
    first: Option<&FirstPass>,
    on_valid: &mut dyn FnMut(Conversion),
) -> Result<FileReport, ReadError> {
    let io_err = |line: u64| io_at(path, line);
    let last = first.map(|f| &f.last);
    let expected = first.and_then(|f| f.blocks.as_deref());
    let per_block = first.map_or(VERIFY_ROWS, |f| f.per_block);
    let mut verifier: Option<Verifier>;
    let mut report = FileReport {
        path: path.to_owned(),
        kind: Some(kind),
        ..FileReport::default()
    };
    let mut grouper = Grouper::new(stages.keying.clone());
    let mut finisher = Finisher {
        stages,
        on_valid,
        held: expected.map(|_| Vec::new()),
        valid_conversions: 0,
        valid_rows: 0,
        invalid: Vec::new(),
        filtered: Vec::new(),
    };
    match kind {
        FileKind::Csv => {
            let Some(mut reader) = CsvReader::new(input, stages.delimiter).map_err(io_err(1))?
            else {
                report.notes.push("empty file: nothing to do".into());
                return Ok(report);
            };
            let mut mapper = CsvMapper::new(&stages.profile, reader.header());
            report.sources = mapper.sources();
            let ignored = not_sent(stages, &report.sources);
            report.set_ignored(stages.rules.endpoint, ignored);
            report.file_problems = std::mem::take(&mut mapper.file_problems);
            report
                .file_problems
                .extend(missing_columns(stages, &mapper, reader.header()));
            if !mapper.unused.is_empty() {
                let n = mapper.unused.len();
                let shown: Vec<&str> = mapper.unused.iter().take(12).map(String::as_str).collect();
                report.notes.push(format!(
                    "{n} column{} not used by the \"{}\" profile: {}{}",
                    if n == 1 { "" } else { "s" },
                    stages.profile.name,
                    shown.join(", "),
                    if n > shown.len() {
                        format!(" and {} more", n - shown.len())
                    } else {
                        String::new()
                    }
                ));
            }
            let refuse = !report.file_problems.is_empty();
            verifier = expected.map(|e| Verifier::new(e, Some(&reader.header().names), per_block));
            // Both cores: reading and mapping on one thread, grouping and validating on this
            // one. Rows go through a bounded channel in batches, in file order, so results
            // and line numbers are the same as on one thread and memory stays bounded.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
            let header_line = reader.header().line;
            std::thread::scope(|scope| -> Result<(), ReadError> {
                scope.spawn(move || {
                    let mut batch = Vec::with_capacity(BATCH);
                    let mut last_line = header_line;
                    loop {
                        let (line, hash, record) = match reader.next_record() {
                            Ok(Some(next)) => next,
                            Ok(None) => break,
                            Err(e) => {
                                let _ = tx.send(Batch::Failed(io_at(path, last_line + 1)(e)));
                                return;
                            }
                        };
                        last_line = line;
                        let mapped = (!refuse).then(|| mapper.map(line, hash, record));
                        let open_quote = reader.open_quote();
                        let row = mapped.map(|mut row| {
                            if let Some((first, last)) = open_quote {
                                // One message for the broken structure, not one per cell.
                                row.problems = vec![Problem::new(
                                    Some(first),
                                    None,
                                    format!(
                                        "the quote opened on line {first} is never closed; \
                                         lines {first}–{last} became one cell: close the quote \
                                         (or double a quote inside a value: \"\"), then drop \
                                         the file again"
                                    ),
                                )];
                            }
                            row
                        });
                        batch.push(ReadRow { line, hash, row });
                        if batch.len() == BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            if tx.send(Batch::Rows(full)).is_err() {
                                return;
                            }
                        }
                    }
                    if !batch.is_empty() && tx.send(Batch::Rows(batch)).is_err() {
                        return;
                    }
                    let _ = tx.send(Batch::Done(reader.skipped));
                });
                for message in rx {
                    let rows = match message {
                        Batch::Rows(rows) => rows,
                        Batch::Done(skipped) => {
                            report.skipped = skipped;
                            continue;
                        }
                        Batch::Failed(e) => return Err(e),
                    };
                    for ReadRow { line, hash, row } in rows {
                        let ordinal = report.rows;
                        report.rows += 1;
                        if let Some(v) = &mut verifier {
                            v.add(line, &hash, path)?;
                        }
                        match row {
                            Some(row) => take_row(
                                row,
                                last.is_some_and(|l| l.is_last(ordinal)),
                                stages,
                                &mut report,
                                &mut grouper,
                                &mut finisher,
                            ),
                            None => report.refused.push(LineRef { line, hash }),
                        }
                        if verifier.as_ref().is_some_and(|v| v.closed_block()) {
                            finisher.release();
                        }
                    }
                }
                Ok(())
            })?;
            if report.rows == 0 && !refuse {
                report
                    .notes
                    .push("header only, no rows: nothing to do".into());
            }
        }
        FileKind::Jsonl => {
            let mut reader = JsonlReader::new(input);
            let mut mapper = JsonMapper::new(&stages.profile);
            report.sources = crate::model::Field::all()
                .filter_map(|f| stages.profile.describe_source(f).map(|s| (f, s)))
                .collect();
            let mut last_line = 0;
            verifier = expected.map(|e| Verifier::new(e, None, per_block));
            loop {
                let next = reader.next_record().map_err(io_err(last_line + 1))?;
                let Some((line, hash, parsed)) = next else {
                    break;
                };
                last_line = line;
                let ordinal = report.rows;
                report.rows += 1;
                if let Some(v) = &mut verifier {
                    v.add(line, &hash, path)?;
                }
                match parsed {
                    Ok(obj) => {
                        take_row(
                            mapper.map(line, hash, &obj),
                            last.is_some_and(|l| l.is_last(ordinal)),
                            stages,
                            &mut report,
                            &mut grouper,
                            &mut finisher,
                        );
                    }
                    Err(message) => {
                        report.stray_lines.push(LineRef { line, hash });
                        report
                            .stray_problems
                            .push(Problem::new(Some(line), None, message));
                    }
                }
                if verifier.as_ref().is_some_and(|v| v.closed_block()) {
                    finisher.release();
                }
            }
            report.skipped = reader.skipped;
            let rules = stages.profile.rules.iter();
            let paths: Vec<(Field, String)> = rules
                .chain(&stages.profile.child_rules)
                .map(|r| (r.field, r.source.clone()))
                .collect();
            report.set_ignored(stages.rules.endpoint, not_sent(stages, &paths));
            for p in mapper.never_seen() {
                report.notes.push(p.to_string());
            }
            if report.rows == 0 {
                report.notes.push("no JSON lines: nothing to do".into());
            }
        }
    }
    // Every row read is verified (the last, partial block too) before the rest is handed on.
    if let Some(v) = verifier {
        v.finish(path)?;
    }
    finisher.release();
    finisher.held = None;
    // The orders still open (all of them in one pass) are complete now.
    let strays = grouper.finish_each(|d| finisher.take(d, &report.sources));
    let Finisher {
        valid_conversions,
        valid_rows,
        mut invalid,
        mut filtered,
        ..
    } = finisher;
    // Listed by first line, whatever order the orders were finished in.
    filtered.sort_by_key(|f| f.lines.first().map(|l| l.line));
    invalid.sort_by_key(|i| i.lines.first().map(|l| l.line));
    report.filtered.extend(filtered);
    for inv in &mut invalid {
        name_columns(&mut inv.problems, &report.sources);
    }
    name_columns(&mut report.stray_problems, &report.sources);
    report.valid_conversions = valid_conversions;
    report.valid_rows = valid_rows;
    report.invalid = invalid;
    report.stray_lines.extend(strays.lines);
    report.stray_problems.extend(strays.problems);
    report.stray_problems.sort_by_key(|p| p.line);
    Ok(report)
}

/// Checks the second pass's rows against the first pass's block digests as they come.
struct Verifier<'a> {
    expected: &'a [[u8; 16]],
    digest: BlockDigest,
    closed: bool,
    last_line: u64,
}

impl<'a> Verifier<'a> {
    fn new(expected: &'a [[u8; 16]], header: Option<&[String]>, per_block: u64) -> Verifier<'a> {
        Verifier {
            expected,
            digest: BlockDigest::new(header, per_block),
            closed: false,
            last_line: 0,
        }
    }

    fn add(
        &mut self,
        line: u64,
        hash: &crate::model::LineHash,
        path: &Path,
    ) -> Result<(), ReadError> {
        self.last_line = line;
        self.closed = self.digest.add(line, hash);
        if self.closed {
            self.check(path)?;
        }
        Ok(())
    }

    /// Whether the row just added closed (and so verified) a block.
    fn closed_block(&self) -> bool {
        self.closed
    }

    fn check(&self, path: &Path) -> Result<(), ReadError> {
        let k = self.digest.done.len() - 1;
        if self.expected.get(k) != self.digest.done.get(k) {
            return Err(ReadError::Changed {
                path: path.to_owned(),
                line: Some(self.last_line),
            });
        }
        Ok(())
    }

    fn finish(self, path: &Path) -> Result<(), ReadError> {
        let (expected, last_line) = (self.expected, self.last_line);
        let done = self.digest.finish();
        if done.as_slice() != expected {
            return Err(ReadError::Changed {
                path: path.to_owned(),
                line: Some(last_line),
            });
        }
        Ok(())
    }
}

/// One mapped row of the second pass: filtered, or grouped; when it is the last row of its
/// order (`is_last`), the order is finished at once.
fn take_row(
    row: Row,
    is_last: bool,
    stages: &Stages,
    report: &mut FileReport,
    grouper: &mut Grouper,
    finisher: &mut Finisher<'_>,
) {
    let finishes = is_last
        .then(|| group_key(&row.order).map(Box::<str>::from))
        .flatten();
    if !skip_row(&row, stages, &report.sources, &mut report.filtered) {
        grouper.push(row);
    }
    if let Some(key) = finishes {
        grouper.finish_one(&key, &mut |d| finisher.take(d, &report.sources));
    }
}

/// Applies row-level filters: a matching row is recorded as filtered and not grouped.
fn skip_row(
    row: &Row,
    stages: &Stages,
    sources: &[(crate::model::Field, String)],
    filtered: &mut Vec<Filtered>,
) -> bool {
    let Some(reason) = filter_reason(&row.order, &stages.profile.filters, sources, true) else {
        return false;
    };
    filtered.push(Filtered {
        order_id: row
            .order
            .get(crate::model::Field::ORDER_ID)
            .unwrap_or("")
            .to_owned(),
        lines: vec![LineRef {
            line: row.line,
            hash: row.hash,
        }],
        reason: format!("row skipped: {reason}"),
    });
    true
}

/// Required fields no column gives and no default or constant supplies, and the fields the
/// preset cannot do without: every row would fail the same way, so the file is refused
/// once, naming the field and the columns it has.
fn missing_columns(
    stages: &Stages,
    mapper: &CsvMapper,
    header: &crate::read::csv::Header,
) -> Vec<Problem> {
    let given = |f: Field| mapper.has(f) || stages.rules.default_for(f).is_some();
    // The file's columns are named once, in the first problem: a refused file with five
    // missing fields would otherwise list its 79 columns five times.
    let mut listed = false;
    let mut columns_once = |label: &str| {
        if std::mem::replace(&mut listed, true) {
            String::new()
        } else {
            format!(" ({label}: {})", header.names.join(", "))
        }
    };
    let mut out: Vec<Problem> = Vec::new();
    for group in stages.rules.required() {
        if group.iter().any(|f| given(*f)) {
            continue;
        }
        let names: Vec<&str> = group.iter().map(|f| f.name()).collect();
        let what = if names.len() == 1 {
            names[0].to_owned()
        } else {
            format!("any of {}", names.join(", "))
        };
        let columns = preset_columns(&stages.profile, group);
        let message = if columns.is_empty() {
            format!(
                "no column gives {what}{}; name a column {}, map one in [mapping] ({} = \
                 \"Your Column\") or set it in [defaults]",
                columns_once("the columns are"),
                names[0],
                names[0]
            )
        } else {
            format!(
                "the \"{}\" format reads {what} from the column {}, which this file does not \
                 have{}; export it again with that column, map another one in [mapping] ({} = \
                 \"Your Column\") or set it in [defaults]",
                stages.profile.name,
                columns.join(" or "),
                columns_once("its columns"),
                names[0]
            )
        };
        out.push(Problem::new(Some(header.line), Some(names[0]), message));
    }
    let profile = &stages.profile;
    for group in &profile.needs {
        if group.iter().any(|f| given(*f))
            || out
                .iter()
                .any(|p| group.iter().any(|f| p.field.as_deref() == Some(f.name())))
        {
            continue;
        }
        let columns = preset_columns(profile, group);
        let fields: Vec<&str> = group.iter().map(|f| f.name()).collect();
        let message = format!(
            "the \"{}\" format needs {} ({}) and this file has no such column{}; export it \
             again with that column, or map another one in [mapping]",
            profile.name,
            if columns.is_empty() {
                "a column".to_owned()
            } else {
                format!("the column {}", columns.join(" or "))
            },
            fields.join(" or "),
            columns_once("its columns")
        );
        out.push(Problem::new(Some(header.line), Some(fields[0]), message));
    }
    out
}

/// The preset's columns for any field of `group`, quoted (none for `impact` and `custom`,
/// whose columns are named like the fields).
fn preset_columns(profile: &Profile, group: &[Field]) -> Vec<String> {
    if matches!(profile.name.as_str(), "impact" | "impact-batch" | "custom") {
        return Vec::new();
    }
    profile
        .rules
        .iter()
        .filter(|r| group.contains(&r.field) || r.with_items.is_some_and(|f| group.contains(&f)))
        .map(|r| format!("\"{}\"", r.source))
        .collect()
}

/// Problems name the export's column (or JSON key) beside impact's field when the two
/// differ: `Lineitem price (ItemPrice)`.
fn name_columns(problems: &mut [Problem], sources: &[(Field, String)]) {
    for p in problems {
        let Some(field) = p.field.as_deref() else {
            continue;
        };
        let Some((_, column)) = sources.iter().find(|(f, _)| f.name() == field) else {
            continue;
        };
        if crate::model::fold_name(column) != crate::model::fold_name(field) {
            p.field = Some(format!("{column} ({field})"));
        }
    }
}

/// A file without a known extension: JSONL if its first non-blank byte is `{`, else CSV.
fn sniff_kind(input: &mut Box<dyn BufRead + Send>) -> std::io::Result<FileKind> {
    let head = input.fill_buf()?;
    Ok(match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => FileKind::Jsonl,
        _ => FileKind::Csv,
    })
}
