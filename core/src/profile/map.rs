//! Applying a profile: a CSV record or a JSON object → a [`Row`] of API fields.
//!
//! Mapping never fails a file for one row: a row's trouble (bytes that are not UTF-8, a ragged
//! row, an object where a value should be) becomes a [`Problem`] on that row, which makes its
//! order invalid while the rest of the file goes on.

use std::collections::HashMap;

use csv::ByteRecord;
use serde_json::{Map, Value};

use super::{ColumnRule, Profile, Transform};
use crate::model::{fold_name, Field, FieldSet, FieldSetBuilder, Level, LineHash, Problem, Row};
use crate::read::csv::{trim, Header};
use crate::read::jsonl::kind_name;
use crate::read::not_utf8_message;

/// A profile resolved against one CSV header.
#[derive(Debug)]
pub struct CsvMapper {
    /// Maps only the group key fields (see [`CsvMapper::keys_only`]).
    keys_only: bool,
    /// `(column index, field, transform)` for every mapped column (a column may feed an API
    /// field and a filter slot).
    targets: Vec<(usize, Field, Option<Transform>)>,
    width: usize,
    names: Vec<String>,
    /// Header columns no rule uses (reported by `check` as a note, never an error).
    pub unused: Vec<String>,
    /// Problems with the header itself: they make every row of the file invalid.
    pub file_problems: Vec<Problem>,
    order: FieldSetBuilder,
    item: FieldSetBuilder,
}

impl CsvMapper {
    pub fn new(profile: &Profile, header: &Header) -> CsvMapper {
        let filter_rules: Vec<ColumnRule> = profile
            .filters
            .iter()
            .flat_map(|f| f.sources.iter().map(|s| ColumnRule::new(s, f.slot)))
            .collect();
        let mut by_source: HashMap<String, Vec<&ColumnRule>> = HashMap::new();
        for r in profile.rules.iter().chain(&filter_rules) {
            by_source.entry(fold_name(&r.source)).or_default().push(r);
        }
        let matched: Vec<(usize, &ColumnRule)> = header
            .names
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                by_source
                    .get(&fold_name(n))
                    .into_iter()
                    .flatten()
                    .map(move |r| (i, *r))
            })
            .collect();
        let has_items = matched.iter().any(|(_, r)| r.field.level() == Level::Item);
        let mut targets: Vec<(usize, Field, Option<Transform>)> = Vec::new();
        let mut file_problems = Vec::new();
        for (i, rule) in &matched {
            let field = match rule.with_items {
                Some(item_field) if has_items => item_field,
                _ => rule.field,
            };
            if let Some((j, _, _)) = targets.iter().find(|(_, f, _)| *f == field) {
                file_problems.push(Problem::new(
                    Some(header.line),
                    Some(field.name()),
                    format!(
                        "columns \"{}\" (column {}) and \"{}\" (column {}) both give {field}: \
                         remove or rename one of them",
                        header.names[*j],
                        j + 1,
                        header.names[*i],
                        i + 1
                    ),
                ));
                continue;
            }
            targets.push((*i, field, rule.transform));
        }
        for rule in profile.rules.iter().filter(|r| r.required) {
            if !matched.iter().any(|(_, r)| r.source == rule.source) {
                file_problems.push(Problem::new(
                    Some(header.line),
                    Some(&rule.source),
                    format!(
                        "[mapping] maps {} to the column \"{}\", which this file does not have \
                         (its columns: {}); was the column renamed? Fix the export or the mapping",
                        rule.field,
                        rule.source,
                        header.names.join(", ")
                    ),
                ));
            }
        }
        let unused = header
            .names
            .iter()
            .enumerate()
            .filter(|(i, n)| !n.is_empty() && !targets.iter().any(|(j, _, _)| j == i))
            .map(|(_, n)| n.clone())
            .collect();
        CsvMapper {
            keys_only: false,
            targets,
            width: header.names.len(),
            names: header.names.clone(),
            unused,
            file_problems,
            order: FieldSetBuilder::default(),
            item: FieldSetBuilder::default(),
        }
    }

    /// Maps only what [`crate::group::group_key`] reads (the join key and OrderId), the same
    /// way as a full mapping: for a pass that only needs each row's key.
    pub fn keys_only(mut self) -> CsvMapper {
        self.keys_only = true;
        self
    }

    /// The column each field (and filter slot) comes from in this file.
    pub fn sources(&self) -> Vec<(Field, String)> {
        self.targets
            .iter()
            .map(|(i, f, _)| (*f, self.names[*i].clone()))
            .collect()
    }

    /// Whether some column gives this field.
    pub fn has(&self, field: Field) -> bool {
        self.targets.iter().any(|(_, f, _)| *f == field)
    }

    pub fn map(&mut self, line: u64, hash: LineHash, record: &ByteRecord) -> Row {
        let mut problems = Vec::new();
        if record.len() > self.width && record.iter().skip(self.width).any(|f| !trim(f).is_empty())
        {
            problems.push(Problem::new(
                Some(line),
                None,
                format!(
                    "the row has {} cells but the header has {}: a value probably contains an \
                     unquoted delimiter; quote it or fix the row",
                    record.len(),
                    self.width
                ),
            ));
        }
        // A whole row packed in one quoted cell: one message, and nothing of it is read as a
        // value (it would otherwise become a 600-character OrderId holding an address).
        if record.len() == 1 && self.width > 1 {
            let cell = String::from_utf8_lossy(trim(&record[0])).into_owned();
            if cell.contains([',', ';', '\t', '|']) {
                problems.push(Problem::new(
                    Some(line),
                    None,
                    format!(
                        "the whole row is one quoted cell (\"{}\"): the export quoted each row \
                         instead of each value; export it again with plain CSV quoting",
                        crate::model::excerpt(&cell)
                    ),
                ));
                return Row {
                    line,
                    hash,
                    problems,
                    ..Row::default()
                };
            }
        }
        if record.len() < self.width && self.targets.iter().any(|(c, _, _)| *c >= record.len()) {
            let missing: Vec<&str> = self
                .targets
                .iter()
                .filter(|(c, _, _)| *c >= record.len())
                .map(|(c, _, _)| self.names[*c].as_str())
                .collect();
            problems.push(Problem::new(
                Some(line),
                None,
                format!(
                    "the row has only {} cells but the header has {}: the row looks cut short \
                     (no {}); fix or remove it",
                    record.len(),
                    self.width,
                    missing.join(", ")
                ),
            ));
        }
        for i in 0..self.targets.len() {
            let (col, field, transform) = self.targets[i];
            if self.keys_only && field != Field::GROUP_KEY && field != Field::ORDER_ID {
                continue;
            }
            let Some(raw) = record.get(col) else {
                continue;
            };
            let raw = match transform {
                Some(Transform::StripLeadingApostrophe) => {
                    trim(raw).strip_prefix(b"'").unwrap_or(trim(raw))
                }
                Some(Transform::FirstOfList) => {
                    trim(raw.split(|b| *b == b',').next().unwrap_or(raw))
                }
                None => trim(raw),
            };
            let value = match std::str::from_utf8(raw) {
                Ok(v) => v,
                Err(_) => {
                    problems.push(Problem::at(line, &self.names[col], not_utf8_message(raw)));
                    // Keep a readable value so the row still joins its order (which is then
                    // invalid as a whole, never sent without this row).
                    let lossy = String::from_utf8_lossy(raw).into_owned();
                    self.push(field, &lossy);
                    continue;
                }
            };
            self.push(field, value);
        }
        self.finish_row(line, hash, problems)
    }

    fn push(&mut self, field: Field, value: &str) {
        push(&mut self.order, &mut self.item, field, value);
    }

    fn finish_row(&mut self, line: u64, hash: LineHash, problems: Vec<Problem>) -> Row {
        let items = if self.item.is_empty() {
            Vec::new()
        } else {
            vec![self.item.take()]
        };
        Row {
            line,
            hash,
            order: self.order.take(),
            items,
            problems,
        }
    }
}

/// Where a JSON rule reads from.
#[derive(Debug)]
enum JsonSource {
    /// A path of object keys from the line's top level (`customer.email`).
    Path(Vec<String>),
    /// An array of item objects and a path inside each (`line_items[].sku`).
    ItemPath(Vec<String>, Vec<String>),
}

/// What a rule writes: the field, its item meaning next to item fields, a transform.
type Target = (Field, Option<Field>, Option<Transform>);

/// Rules compiled for JSON objects.
#[derive(Debug, Default)]
struct RuleSet {
    /// Folded top-level key → targets.
    keys: HashMap<String, Vec<Target>>,
    /// Folded key inside nested item objects → item field.
    item_keys: HashMap<String, Field>,
    /// Explicit paths: `(source, target, the rule as written)`.
    paths: Vec<(JsonSource, Target, String)>,
}

fn split_path(p: &str) -> Vec<String> {
    p.split('.').map(str::to_owned).collect()
}

impl RuleSet {
    fn new(rules: &[ColumnRule]) -> RuleSet {
        let mut set = RuleSet::default();
        for rule in rules {
            let target = (rule.field, rule.with_items, rule.transform);
            if let Some((array, rel)) = rule.source.split_once("[]") {
                let rel = rel.trim_start_matches('.');
                set.paths.push((
                    JsonSource::ItemPath(split_path(array), split_path(rel)),
                    target,
                    rule.source.clone(),
                ));
            } else if rule.source.contains('.') {
                set.paths.push((
                    JsonSource::Path(split_path(&rule.source)),
                    target,
                    rule.source.clone(),
                ));
            } else {
                let folded = fold_name(&rule.source);
                if rule.field.level() == Level::Item {
                    set.item_keys.insert(folded.clone(), rule.field);
                }
                set.keys.entry(folded).or_default().push(target);
            }
        }
        set
    }
}

/// A profile ready to map JSON objects.
#[derive(Debug)]
pub struct JsonMapper {
    parents: RuleSet,
    /// For child lines of a join (Shopify bulk line items).
    children: RuleSet,
    join: Option<super::Join>,
    /// Folded keys holding arrays of items.
    item_arrays: Vec<String>,
    /// For each `[mapping]` rule: whether any line had it (schema drift is reported).
    required_seen: Vec<(String, Field, bool)>,
    order: FieldSetBuilder,
    item: FieldSetBuilder,
}

impl JsonMapper {
    pub fn new(profile: &Profile) -> JsonMapper {
        let mut parent_rules = profile.rules.clone();
        for f in &profile.filters {
            for source in &f.sources {
                parent_rules.push(ColumnRule::new(source, f.slot));
            }
        }
        JsonMapper {
            parents: RuleSet::new(&parent_rules),
            children: RuleSet::new(&profile.child_rules),
            join: profile.join.clone(),
            item_arrays: profile.item_arrays.iter().map(|a| fold_name(a)).collect(),
            required_seen: profile
                .rules
                .iter()
                .chain(&profile.child_rules)
                .filter(|r| r.required)
                .map(|r| (r.source.clone(), r.field, false))
                .collect(),
            order: FieldSetBuilder::default(),
            item: FieldSetBuilder::default(),
        }
    }

    /// `[mapping]` sources that no line of the file had: the export probably changed shape.
    pub fn never_seen(&self) -> Vec<Problem> {
        self.required_seen
            .iter()
            .filter(|(_, _, seen)| !seen)
            .map(|(source, field, _)| {
                Problem::new(
                    None,
                    Some(source),
                    format!(
                        "[mapping] maps {field} to \"{source}\", which no line of this file has; \
                         was it renamed? Fix the export or the mapping"
                    ),
                )
            })
            .collect()
    }

    pub fn map(&mut self, line: u64, hash: LineHash, obj: &Map<String, Value>) -> Row {
        let mut problems = Vec::new();
        let mut flat: Vec<(Target, String)> = Vec::new();
        let mut nested: Vec<FieldSet> = Vec::new();
        // In a join, a line with a parent id is an item of that parent; both carry the
        // parent's id as their group key.
        let (child, group_key) = match &self.join {
            Some(j) => match obj
                .get(&j.parent_key)
                .and_then(|v| scalar(v).ok().flatten())
            {
                Some(parent) => (true, Some(parent)),
                None => (
                    false,
                    obj.get(&j.id_key).and_then(|v| scalar(v).ok().flatten()),
                ),
            },
            None => (false, None),
        };
        let set = if child { &self.children } else { &self.parents };
        for (key, value) in obj {
            let folded = fold_name(key);
            if !child && self.item_arrays.contains(&folded) {
                if let Value::Array(elements) = value {
                    for element in elements {
                        nested_item(
                            set,
                            &mut self.item,
                            line,
                            key,
                            element,
                            &mut problems,
                            &mut nested,
                        );
                    }
                    continue;
                }
            }
            let Some(targets) = set.keys.get(&folded) else {
                continue;
            };
            mark(&mut self.required_seen, key);
            match scalar(value) {
                Ok(Some(v)) => flat.extend(targets.iter().map(|t| (*t, v.clone()))),
                Ok(None) => {}
                Err(kind) => problems.push(Problem::at(
                    line,
                    key,
                    format!("holds {kind} where a value is expected; map a nested path instead (e.g. \"{key}.amount\")"),
                )),
            }
        }
        let mut path_items: Vec<Vec<(Field, String)>> = Vec::new();
        for (source, target, name) in &set.paths {
            match source {
                JsonSource::Path(path) => {
                    let Some(v) = walk(obj, path) else { continue };
                    mark(&mut self.required_seen, name);
                    match scalar(v) {
                        Ok(Some(s)) => flat.push((*target, s)),
                        Ok(None) => {}
                        Err(kind) => problems.push(Problem::at(
                            line,
                            name,
                            format!("holds {kind} where a value is expected"),
                        )),
                    }
                }
                JsonSource::ItemPath(array, rel) => {
                    let Some(Value::Array(elements)) = walk(obj, array) else {
                        continue;
                    };
                    mark(&mut self.required_seen, name);
                    for (i, element) in elements.iter().enumerate() {
                        let Value::Object(e) = element else { continue };
                        if path_items.len() <= i {
                            path_items.resize_with(i + 1, Vec::new);
                        }
                        match walk(e, rel).map(scalar) {
                            Some(Ok(Some(s))) => path_items[i].push((target.0, s)),
                            Some(Err(kind)) => problems.push(Problem::at(
                                line,
                                name,
                                format!("item {} holds {kind} where a value is expected", i + 1),
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
        let has_flat_items = flat.iter().any(|((f, _, _), _)| f.level() == Level::Item);
        for ((field, with_items, transform), value) in &flat {
            let field = match with_items {
                Some(item_field) if has_flat_items => *item_field,
                _ => *field,
            };
            let value = match transform {
                Some(Transform::StripLeadingApostrophe) => {
                    value.strip_prefix('\'').unwrap_or(value)
                }
                Some(Transform::FirstOfList) => value.split(',').next().unwrap_or("").trim(),
                None => value.as_str(),
            };
            push(&mut self.order, &mut self.item, field, value);
        }
        if let Some(k) = &group_key {
            self.order.push(Field::GROUP_KEY, k);
        }
        let mut items = Vec::new();
        if !self.item.is_empty() {
            items.push(self.item.take());
        }
        items.extend(nested);
        for fields in path_items {
            for (f, v) in &fields {
                self.item.push(*f, v);
            }
            if !self.item.is_empty() {
                items.push(self.item.take());
            }
        }
        Row {
            line,
            hash,
            order: self.order.take(),
            items,
            problems,
        }
    }
}

fn nested_item(
    set: &RuleSet,
    builder: &mut FieldSetBuilder,
    line: u64,
    array_key: &str,
    element: &Value,
    problems: &mut Vec<Problem>,
    out: &mut Vec<FieldSet>,
) {
    let Value::Object(item) = element else {
        problems.push(Problem::at(
            line,
            array_key,
            format!("an item is {} instead of an object", kind_name(element)),
        ));
        return;
    };
    for (key, value) in item {
        let Some(&field) = set.item_keys.get(&fold_name(key)) else {
            continue;
        };
        match scalar(value) {
            Ok(Some(v)) => builder.push(field, &v),
            Ok(None) => {}
            Err(kind) => problems.push(Problem::at(
                line,
                format!("{array_key}[].{key}"),
                format!("holds {kind} where a value is expected"),
            )),
        }
    }
    if !builder.is_empty() {
        out.push(builder.take());
    }
}

fn push(order: &mut FieldSetBuilder, item: &mut FieldSetBuilder, field: Field, value: &str) {
    match field.level() {
        Level::Order => order.push(field, value),
        Level::Item => item.push(field, value),
    }
}

fn mark(seen: &mut [(String, Field, bool)], source: &str) {
    for entry in seen
        .iter_mut()
        .filter(|e| fold_name(&e.0) == fold_name(source))
    {
        entry.2 = true;
    }
}

fn walk<'a>(obj: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = obj.get(first.as_str())?;
    for key in rest {
        v = v.as_object()?.get(key.as_str())?;
    }
    Some(v)
}

/// A JSON value as the text of an API field: strings as they are, numbers exactly as written,
/// `null` as absent. Objects and arrays are an error (named by kind).
fn scalar(v: &Value) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        // A list where one value belongs (Shopify's discountCodes): its first value.
        Value::Array(list) if list.iter().all(|v| !v.is_object() && !v.is_array()) => {
            list.first().map_or(Ok(None), scalar)
        }
        other => Err(kind_name(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::csv::CsvReader;
    use crate::settings::Source;

    fn csv_rows(profile: &Profile, data: &'static [u8]) -> (CsvMapper, Vec<Row>) {
        let mut r = CsvReader::new(Box::new(data), None).unwrap().unwrap();
        let mut m = CsvMapper::new(profile, r.header());
        let mut rows = Vec::new();
        while let Some((line, hash, rec)) = r.next_record().unwrap() {
            rows.push(m.map(line, hash, rec));
        }
        (m, rows)
    }

    fn pairs(set: &FieldSet) -> Vec<(&'static str, String)> {
        set.iter().map(|(f, v)| (f.name(), v.to_owned())).collect()
    }

    #[test]
    fn ftp_template_amount_is_the_line_amount() {
        let (m, rows) = csv_rows(
            &Profile::impact(),
            b"CampaignId,ActionTrackerId,EventDate,OrderId,CurrencyCode,Amount,Category,Sku,Quantity\n\
              1,2,2024-01-01T00:00:00Z,A,USD,80.00,Toys,TOYSET,2\n",
        );
        assert!(m.file_problems.is_empty());
        assert_eq!(
            pairs(&rows[0].items[0]),
            vec![
                ("ItemSubTotal", "80.00".to_owned()),
                ("ItemCategory", "Toys".to_owned()),
                ("ItemSku", "TOYSET".to_owned()),
                ("ItemQuantity", "2".to_owned()),
            ]
        );
        assert_eq!(rows[0].order.get(Field::AMOUNT), None);
    }

    #[test]
    fn amount_without_item_columns_is_the_order_amount() {
        let (_, rows) = csv_rows(&Profile::impact(), b"OrderId,Amount\nA,12.50\n");
        assert_eq!(rows[0].order.get(Field::AMOUNT), Some("12.50"));
        assert!(rows[0].items.is_empty());
    }

    #[test]
    fn loose_header_names_and_unused_columns() {
        let (m, rows) = csv_rows(&Profile::impact(), b"order_id, Item Sku ,Colour\nA,X,red\n");
        assert_eq!(rows[0].order.get(Field::ORDER_ID), Some("A"));
        assert_eq!(pairs(&rows[0].items[0]), vec![("ItemSku", "X".to_owned())]);
        assert_eq!(m.unused, vec!["Colour".to_owned()]);
    }

    #[test]
    fn duplicate_and_missing_mapped_columns_are_file_problems() {
        let (m, _) = csv_rows(&Profile::impact(), b"OrderId,Order Id\nA,B\n");
        assert_eq!(m.file_problems.len(), 1);
        assert!(m.file_problems[0].message.contains("both give OrderId"));
        let mut p = Profile::custom();
        p.apply_mapping(&[(Field::ORDER_ID, Source::Column("Order Number".into()))]);
        let (m, _) = csv_rows(&p, b"Order No,Total\nA,1\n");
        assert!(
            m.file_problems[0].message.contains("\"Order Number\""),
            "{:?}",
            m.file_problems
        );
    }

    #[test]
    fn ragged_and_non_utf8_rows_carry_problems() {
        let (_, rows) = csv_rows(
            &Profile::impact(),
            b"OrderId,ItemSku,ItemName\nA,X,caf\xE9\nB,Y\nC,Z,n,extra\nD,W,n,\n",
        );
        assert!(rows[0].problems[0].message.contains("windows-1252"));
        assert_eq!(rows[0].problems[0].field.as_deref(), Some("ItemName"));
        assert!(rows[1].problems[0].message.contains("cut short"));
        assert!(rows[2].problems[0].message.contains("unquoted delimiter"));
        assert!(rows[3].problems.is_empty(), "a trailing empty cell is fine");
    }

    fn json_row(profile: &Profile, text: &str) -> (JsonMapper, Row) {
        let Value::Object(obj) = serde_json::from_str(text).unwrap() else {
            panic!("not an object")
        };
        let mut m = JsonMapper::new(profile);
        let row = m.map(1, LineHash::default(), &obj);
        (m, row)
    }

    #[test]
    fn json_nested_items_and_flat_items() {
        let (_, row) = json_row(
            &Profile::impact(),
            r#"{"OrderId":"A","CurrencyCode":"USD","Items":[{"ItemSku":"X","ItemPrice":40.00,"ItemQuantity":2},{"Sku":"Y","ItemSubTotal":"6.99"}]}"#,
        );
        assert_eq!(row.order.get(Field::ORDER_ID), Some("A"));
        assert_eq!(row.items.len(), 2);
        assert_eq!(
            row.items[0].get(Field::item("Price").unwrap()),
            Some("40.00")
        );
        assert_eq!(row.items[1].get(Field::item("Sku").unwrap()), Some("Y"));
        let (_, row) = json_row(
            &Profile::impact(),
            r#"{"OrderId":"A","Sku":"X","Amount":"5"}"#,
        );
        assert_eq!(
            row.items[0].get(Field::item("SubTotal").unwrap()),
            Some("5")
        );
    }

    #[test]
    fn json_custom_paths() {
        let mut p = Profile::custom();
        p.apply_mapping(&[
            (Field::ORDER_ID, Source::Column("order.number".into())),
            (
                Field::item("Sku").unwrap(),
                Source::Column("line_items[].sku".into()),
            ),
            (
                Field::item("Quantity").unwrap(),
                Source::Column("line_items[].qty".into()),
            ),
            (Field::CURRENCY_CODE, Source::Column("currency".into())),
        ]);
        let (m, row) = json_row(
            &p,
            r#"{"order":{"number":1001},"line_items":[{"sku":"X","qty":2},{"sku":"Y","qty":1}]}"#,
        );
        assert_eq!(row.order.get(Field::ORDER_ID), Some("1001"));
        assert_eq!(row.items.len(), 2);
        assert_eq!(
            row.items[1].get(Field::item("Quantity").unwrap()),
            Some("1")
        );
        let missing = m.never_seen();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].field.as_deref(), Some("currency"));
    }

    #[test]
    fn json_objects_where_values_belong_are_problems() {
        let (_, row) = json_row(
            &Profile::impact(),
            r#"{"OrderId":"A","Amount":{"value":1}}"#,
        );
        assert_eq!(row.problems.len(), 1);
        assert!(row.problems[0].message.contains("an object"));
    }
}
