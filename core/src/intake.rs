//! Intake of one file: read → map → group → validate (`process_file`). Each valid
//! conversion goes to a callback as soon as its file has been read whole (an order is
//! complete only then); invalid, filtered and stray rows are in the report.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::group::{Grouper, Keying};
use crate::model::{Field, LineRef, Problem};
use crate::money::{self, SaleRules};
use crate::profile::map::{CsvMapper, JsonMapper};
use crate::profile::Profile;
use crate::read::csv::{CsvReader, SkipCounts};
use crate::read::jsonl::JsonlReader;
use crate::read::{self, Decoding, FileKind, ReadError};
use crate::validate::{parse_money, validate, Conversion, Invalid, Rules};

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

/// Reads, maps, groups and validates one file. Each valid conversion goes to `on_valid`;
/// invalid orders, stray rows and file problems are in the report.
pub fn process_file(
    stages: &Stages,
    path: &Path,
    on_valid: &mut dyn FnMut(Conversion),
) -> Result<FileReport, ReadError> {
    let io_err = |line: u64| io_at(path, line);
    let mut input = read::open(path, stages.decoding)?;
    let kind = match FileKind::from_path(path) {
        Some(k) => k,
        None => sniff_kind(&mut input).map_err(io_err(1))?,
    };
    process_reader(stages, path, kind, input, on_valid)
}

/// The same as [`process_file`] for bytes already opened and decoded (fuzzing, tests).
pub fn process_reader(
    stages: &Stages,
    path: &Path,
    kind: FileKind,
    input: Box<dyn BufRead + Send>,
    on_valid: &mut dyn FnMut(Conversion),
) -> Result<FileReport, ReadError> {
    let io_err = |line: u64| io_at(path, line);
    let mut report = FileReport {
        path: path.to_owned(),
        kind: Some(kind),
        ..FileReport::default()
    };
    let mut grouper = Grouper::new(stages.keying.clone());
    match kind {
        FileKind::Csv => {
            let Some(mut reader) = CsvReader::new(input, stages.delimiter).map_err(io_err(1))?
            else {
                report.notes.push("empty file: nothing to do".into());
                return Ok(report);
            };
            let mut mapper = CsvMapper::new(&stages.profile, reader.header());
            report.sources = mapper.sources();
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
            let mut last_line = reader.header().line;
            loop {
                let next = reader.next_record().map_err(io_err(last_line + 1))?;
                let Some((line, hash, record)) = next else {
                    break;
                };
                last_line = line;
                report.rows += 1;
                if refuse {
                    report.refused.push(LineRef { line, hash });
                } else {
                    let mut row = mapper.map(line, hash, record);
                    if let Some((first, last)) = reader.open_quote() {
                        // One message for the broken structure, not one per cell.
                        row.problems = vec![Problem::new(
                            Some(first),
                            None,
                            format!(
                                "the quote opened on line {first} is never closed; lines \
                                 {first}–{last} became one cell: close the quote (or double a \
                                 quote inside a value: \"\"), then drop the file again"
                            ),
                        )];
                    }
                    if !skip_row(&row, stages, &report.sources, &mut report.filtered) {
                        grouper.push(row);
                    }
                }
            }
            report.skipped = reader.skipped;
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
            loop {
                let next = reader.next_record().map_err(io_err(last_line + 1))?;
                let Some((line, hash, parsed)) = next else {
                    break;
                };
                last_line = line;
                report.rows += 1;
                match parsed {
                    Ok(obj) => {
                        let row = mapper.map(line, hash, &obj);
                        if !skip_row(&row, stages, &report.sources, &mut report.filtered) {
                            grouper.push(row);
                        }
                    }
                    Err(message) => {
                        report.stray_lines.push(LineRef { line, hash });
                        report
                            .stray_problems
                            .push(Problem::new(Some(line), None, message));
                    }
                }
            }
            report.skipped = reader.skipped;
            for p in mapper.never_seen() {
                report.notes.push(p.to_string());
            }
            if report.rows == 0 {
                report.notes.push("no JSON lines: nothing to do".into());
            }
        }
    }
    // Orders are complete only now; each is validated and handed on, then freed.
    let rules = &stages.rules;
    let filters = &stages.profile.filters;
    let sources = &report.sources;
    let (mut valid_conversions, mut valid_rows, mut invalid) = (0u64, 0u64, Vec::new());
    let mut filtered = Vec::new();
    let sale = &stages.sale;
    let number = |v: &str| parse_money(v, rules);
    let strays = grouper.finish_each(|mut draft| {
        if let Some(reason) = filter_reason(&draft.order, filters, sources, false) {
            filtered.push(Filtered {
                order_id: draft.order_id,
                lines: draft.lines,
                reason,
            });
            return;
        }
        for not_sale in money::split_not_sales(&mut draft, sale, &number) {
            filtered.push(Filtered {
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
                filtered.push(Filtered {
                    order_id: conversion.key().order_id.clone(),
                    lines: conversion.lines().to_vec(),
                    reason: "zero sale: nothing to pay a commission on (an exchange or a 100 % \
                             discount); [sale] send_zero_sales = true sends it"
                        .into(),
                });
            }
            Ok(conversion) => {
                valid_conversions += 1;
                valid_rows += conversion.lines().len() as u64;
                on_valid(conversion);
            }
            Err(inv) => invalid.push(*inv),
        }
    });
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

/// Applies row-level filters: a matching row is recorded as filtered and not grouped.
fn skip_row(
    row: &crate::model::Row,
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
    let mut out: Vec<Problem> = stages
        .rules
        .required()
        .iter()
        .filter(|group| !group.iter().any(|f| given(*f)))
        .map(|group| {
            let names: Vec<&str> = group.iter().map(|f| f.name()).collect();
            let what = if names.len() == 1 {
                names[0].to_owned()
            } else {
                format!("any of {}", names.join(", "))
            };
            let columns = preset_columns(&stages.profile, group);
            if !columns.is_empty() {
                return Problem::new(
                    Some(header.line),
                    Some(names[0]),
                    format!(
                        "the \"{}\" format reads {what} from the column {}, which this file \
                         does not have (its columns: {}); export it again with that column, \
                         map another one in [mapping] ({} = \"Your Column\") or set it in \
                         [defaults]",
                        stages.profile.name,
                        columns.join(" or "),
                        header.names.join(", "),
                        names[0]
                    ),
                );
            }
            Problem::new(
                Some(header.line),
                Some(names[0]),
                format!(
                    "no column gives {what} (the columns are: {}); name a column {}, map one \
                     in [mapping] ({} = \"Your Column\") or set it in [defaults]",
                    header.names.join(", "),
                    names[0],
                    names[0]
                ),
            )
        })
        .collect();
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
        out.push(Problem::new(
            Some(header.line),
            Some(fields[0]),
            format!(
                "the \"{}\" format needs {} ({}) and this file has no such column (its \
                 columns: {}); export it again with that column, or map another one in \
                 [mapping]",
                profile.name,
                if columns.is_empty() {
                    "a column".to_owned()
                } else {
                    format!("the column {}", columns.join(" or "))
                },
                fields.join(" or "),
                header.names.join(", ")
            ),
        ));
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
