//! `impact-drop check`: everything up to the request body, nothing sent; human or JSON report.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::{location, plural, CommandError, Outcome};
use crate::config::Config;
use crate::impact::form;
use crate::intake::{self, FileReport, Filtered, Stages};
use crate::model::{ConversionKey, Field, Problem};
use crate::read::csv::SkipCounts;
use crate::validate::{Conversion, Invalid};

/// One valid conversion as `--show` prints it.
#[derive(Serialize)]
struct Shown {
    key: ConversionKey,
    lines: Vec<u64>,
    items: usize,
    body: String,
    /// The sale amount impact will compute from the body on the configured endpoint.
    sale_amount: String,
    /// The export's own figure for it (e.g. Shopify `Subtotal`), when it states one.
    #[serde(skip_serializing_if = "Option::is_none")]
    export_amount: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<Problem>,
    /// Where each field of the body came from.
    sources: Vec<Provenance>,
}

/// `ItemSku2 ← "Lineitem sku", line 7`.
#[derive(Serialize)]
struct Provenance {
    field: String,
    from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip)]
    api_field: Field,
}

impl Shown {
    fn of(c: &Conversion) -> Shown {
        let first = c.lines().first().map(|l| l.line);
        let mut sources: Vec<Provenance> = c
            .fields()
            .map(|(f, _)| Provenance {
                field: f.name().to_owned(),
                from: String::new(),
                line: first,
                api_field: f,
            })
            .collect();
        for (i, (item, line)) in c.items().iter().zip(c.item_lines()).enumerate() {
            for (f, _) in item.iter() {
                sources.push(Provenance {
                    field: f.item_param(i + 1),
                    from: String::new(),
                    line: Some(*line),
                    api_field: f,
                });
            }
        }
        Shown {
            key: c.key().clone(),
            lines: c.lines().iter().map(|l| l.line).collect(),
            items: c.items().len(),
            body: form::encode(c),
            sale_amount: c.sale_amount().normalize().to_string(),
            export_amount: c.stated_amount().map(|d| d.normalize().to_string()),
            warnings: c.warnings().to_vec(),
            sources,
        }
    }

    /// Fills in the source of each field: its column, or the config.
    fn attribute(&mut self, report: &FileReport, config: &Config, stages: &Stages) {
        for p in &mut self.sources {
            p.from = if let Some((_, col)) = report.sources.iter().find(|(f, _)| *f == p.api_field)
            {
                format!("\"{col}\"")
            } else if p.api_field == Field::ITEM_TOTAL_DISCOUNT {
                "the export's subtotal (the order's discount allocated over its lines)".into()
            } else if stages
                .profile
                .constants
                .iter()
                .chain(&stages.profile.item_constants)
                .any(|(f, _)| *f == p.api_field)
            {
                p.line = None;
                "[mapping] constant".into()
            } else if config.defaults.iter().any(|(f, _)| *f == p.api_field) {
                p.line = None;
                "[defaults]".into()
            } else {
                "the order's other rows".into()
            };
        }
    }
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    rows: u64,
    valid_conversions: u64,
    valid_rows: u64,
    invalid_orders: usize,
    invalid_rows: u64,
    skipped: SkipCounts,
    file_problems: &'a [Problem],
    invalid: &'a [Invalid],
    row_problems: &'a [Problem],
    filtered_orders: usize,
    filtered_rows: u64,
    filtered: &'a [Filtered],
    notes: &'a [String],
    /// Without a config file: the preset the header fits, when it is not the one used.
    #[serde(skip_serializing_if = "Option::is_none")]
    suggested_format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversions: Option<&'a [Shown]>,
}

#[derive(Serialize, Default)]
struct Totals {
    files: usize,
    unreadable_files: usize,
    rows: u64,
    valid_conversions: u64,
    invalid_orders: usize,
    invalid_rows: u64,
    filtered_orders: usize,
}

pub fn run(
    config: &Config,
    paths: &[PathBuf],
    show: bool,
    sources: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    let stages = config.stages();
    let mut outcome = Outcome::Clean;
    let mut totals = Totals::default();
    let mut json_files: Vec<serde_json::Value> = Vec::new();
    let files = match crate::watch::expand_paths(paths, &config.source.ignore) {
        Ok(f) => f,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(Outcome::Fatal);
        }
    };
    if files.is_empty() {
        writeln!(out, "no export files found in {}", display_list(paths))?;
        return Ok(Outcome::Clean);
    }
    for path in &files {
        totals.files += 1;
        let mut shown = Vec::new();
        let mut on_valid = |c: Conversion| {
            if show {
                shown.push(Shown::of(&c));
            }
        };
        let result = intake::process_file(&stages, path, &mut on_valid);
        match result {
            Err(e) => {
                outcome = Outcome::Fatal;
                totals.unreadable_files += 1;
                if json {
                    json_files.push(serde_json::json!({
                        "path": path.display().to_string(),
                        "error": e.to_string(),
                    }));
                } else {
                    writeln!(out, "error: {e}")?;
                }
            }
            Ok(mut report) => {
                // Orders come as they complete; they are shown in file order.
                shown.sort_by_key(|s| s.lines.first().copied());
                report
                    .invalid
                    .sort_by_key(|i| i.lines.first().map(|l| l.line));
                let suggested = if config.file.is_none() {
                    suggest_format(path, &stages, &config.source.format)
                } else {
                    None
                };
                if let Some(f) = suggested {
                    if !json {
                        writeln!(
                            out,
                            "note: there is no config file, so {} was read as format = \"{}\"; its header is a {f} export's: put [source] format = \"{f}\" in impact-drop.toml (or set IMPACT_DROP_FORMAT={f})",
                            path.display(),
                            config.source.format
                        )?;
                    }
                }
                for s in &mut shown {
                    s.attribute(&report, config, &stages);
                }
                if !report.is_clean() {
                    outcome = outcome.and(Outcome::Problems);
                }
                totals.rows += report.rows;
                totals.valid_conversions += report.valid_conversions;
                totals.invalid_orders += report.invalid.len();
                totals.invalid_rows += report.invalid_rows();
                totals.filtered_orders += report.filtered.len();
                if json {
                    let file = JsonFile {
                        path: report.path.display().to_string(),
                        error: None,
                        format: report.kind.map(|k| match k {
                            crate::read::FileKind::Csv => "csv",
                            crate::read::FileKind::Jsonl => "jsonl",
                        }),
                        rows: report.rows,
                        valid_conversions: report.valid_conversions,
                        valid_rows: report.valid_rows,
                        invalid_orders: report.invalid.len(),
                        invalid_rows: report.invalid_rows(),
                        skipped: report.skipped,
                        file_problems: &report.file_problems,
                        invalid: &report.invalid,
                        row_problems: &report.stray_problems,
                        filtered_orders: report.filtered.len(),
                        filtered_rows: report.filtered_rows(),
                        filtered: &report.filtered,
                        notes: &report.notes,
                        suggested_format: suggested,
                        conversions: show.then_some(shown.as_slice()),
                    };
                    json_files.push(serde_json::to_value(&file).unwrap_or_default());
                } else {
                    write_human(out, &report, &shown, sources)?;
                }
            }
        }
    }
    if json {
        let doc = serde_json::json!({
            "files": json_files,
            "totals": totals,
            "exit": outcome.code(),
        });
        super::write_json(out, &doc)?;
    } else {
        let filtered = if totals.filtered_orders > 0 {
            format!(", {} filtered", totals.filtered_orders)
        } else {
            String::new()
        };
        let invalid = if totals.invalid_orders > 0 {
            format!(
                "{} invalid ({})",
                super::count(totals.invalid_orders as u64, "order"),
                super::count(totals.invalid_rows, "row")
            )
        } else {
            format!("{} invalid", super::count(totals.invalid_rows, "row"))
        };
        writeln!(
            out,
            "checked {}: {}, {} valid, {invalid}{filtered}; nothing was sent",
            super::count(totals.files as u64, "file"),
            super::count(totals.rows, "row"),
            super::count(totals.valid_conversions, "conversion"),
        )?;
    }
    Ok(outcome)
}

/// The preset a CSV file's header fits, when it is not `used` (`None` for JSONL, an
/// unreadable header, or a header no preset recognises).
fn suggest_format(path: &std::path::Path, stages: &Stages, used: &str) -> Option<&'static str> {
    if crate::read::FileKind::from_path(path) != Some(crate::read::FileKind::Csv) {
        return None;
    }
    let input = crate::read::open(path, stages.decoding).ok()?;
    let reader = crate::read::csv::CsvReader::new(input, stages.delimiter).ok()??;
    crate::profile::fitting_preset(&reader.header().names).filter(|f| *f != used)
}

fn display_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2, 3, 4, 7` → `2-4, 7`.
pub fn line_ranges(lines: impl IntoIterator<Item = u64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    let flush = |r: (u64, u64), parts: &mut Vec<String>| {
        parts.push(if r.0 == r.1 {
            r.0.to_string()
        } else {
            format!("{}-{}", r.0, r.1)
        })
    };
    for l in lines {
        run = match run {
            Some((a, b)) if l == b + 1 => Some((a, l)),
            Some(r) => {
                flush(r, &mut parts);
                Some((l, l))
            }
            None => Some((l, l)),
        };
    }
    if let Some(r) = run {
        flush(r, &mut parts);
    }
    parts.join(", ")
}

fn write_human(
    out: &mut dyn Write,
    r: &FileReport,
    shown: &[Shown],
    sources: bool,
) -> std::io::Result<()> {
    let path = r.path.as_path();
    for s in shown {
        writeln!(
            out,
            "# {}:{} {}, {}",
            path.display(),
            line_ranges(s.lines.iter().copied()),
            s.key,
            match s.items {
                0 => "no items".to_owned(),
                n => format!("{n} item{}", plural(n as u64)),
            }
        )?;
        for w in &s.warnings {
            writeln!(out, "# warning: {}", location(path, w))?;
        }
        writeln!(out, "{}", s.body)?;
        match &s.export_amount {
            Some(e) => writeln!(
                out,
                "#   sale amount impact will compute: {} (the export's own figure: {e})",
                s.sale_amount
            )?,
            None => writeln!(
                out,
                "#   sale amount impact will compute: {} (the export states no figure to check it against)",
                s.sale_amount
            )?,
        }
        for p in s.sources.iter().filter(|_| sources) {
            match p.line {
                Some(l) => writeln!(out, "#   {} <- {}, line {l}", p.field, p.from)?,
                None => writeln!(out, "#   {} <- {}", p.field, p.from)?,
            }
        }
    }
    let mut summary = format!(
        "{}: {} row{}, {} conversion{} valid",
        path.display(),
        r.rows,
        plural(r.rows),
        r.valid_conversions,
        plural(r.valid_conversions)
    );
    if !r.file_problems.is_empty() {
        summary.push_str(&format!(
            ", file refused ({} kept for fixing)",
            super::count(r.invalid_rows(), "row")
        ));
    } else if !r.invalid.is_empty() || r.invalid_rows() > 0 {
        summary.push_str(&format!(
            ", {} order{} invalid ({} row{})",
            r.invalid.len(),
            plural(r.invalid.len() as u64),
            r.invalid_rows(),
            plural(r.invalid_rows())
        ));
    }
    if !r.filtered.is_empty() {
        summary.push_str(&format!(
            ", {} order{} filtered ({} row{})",
            r.filtered.len(),
            plural(r.filtered.len() as u64),
            r.filtered_rows(),
            plural(r.filtered_rows())
        ));
    }
    let skipped = r.skipped.blank + r.skipped.repeated_headers;
    if r.skipped.repeated_headers > 0 {
        summary.push_str(&format!(
            "; {} repeated header row{} skipped",
            r.skipped.repeated_headers,
            plural(r.skipped.repeated_headers)
        ));
    } else if skipped > 0 {
        summary.push_str(&format!(
            "; {skipped} blank line{} skipped",
            plural(skipped)
        ));
    }
    writeln!(out, "{summary}")?;
    for p in &r.file_problems {
        writeln!(out, "  file refused: {}", location(path, p))?;
    }
    for inv in &r.invalid {
        let what = inv
            .key
            .as_ref()
            .map_or_else(|| format!("OrderId {}", inv.order_id), |k| k.to_string());
        writeln!(
            out,
            "  invalid {what}, line{} {}:",
            plural(inv.lines.len() as u64),
            line_ranges(inv.lines.iter().map(|l| l.line))
        )?;
        for p in &inv.problems {
            writeln!(out, "    {}", location(path, p))?;
        }
    }
    for p in &r.stray_problems {
        writeln!(out, "  invalid row: {}", location(path, p))?;
    }
    for f in &r.filtered {
        writeln!(
            out,
            "  filtered OrderId {}, line{} {}: {}",
            f.order_id,
            plural(f.lines.len() as u64),
            line_ranges(f.lines.iter().map(|l| l.line)),
            f.reason
        )?;
    }
    for n in &r.notes {
        writeln!(out, "  note: {n}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ranges_compress_runs() {
        assert_eq!(line_ranges([2, 3, 4, 7, 9, 10]), "2-4, 7, 9-10");
        assert_eq!(line_ranges([5]), "5");
        assert_eq!(line_ranges([]), "");
    }
}
