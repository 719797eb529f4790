//! Grouping (pure): rows → one order draft per `(CampaignId, event id, OrderId)`, whether or
//! not an order's rows are adjacent, with items in file order.
//!
//! Order-level cells may repeat on every row or sit on the first row only (later rows blank).
//! Blank key cells (CampaignId, event id) take the one value the order's other rows give, or
//! the defaults; rows that give *different* non-blank values for an order-level field make the
//! order invalid, naming both lines. The result never depends on the order of the rows.

use std::collections::{BTreeMap, HashMap};

use crate::model::{Field, FieldSet, LineRef, OrderDraft, Problem, Row};

/// How conversion keys are formed.
#[derive(Clone, Debug, Default)]
pub struct Keying {
    /// Fields that can identify the event, in order of preference (partner: ActionTrackerId;
    /// brand: ActionTrackerId, EventTypeId, EventTypeCode).
    pub event_fields: Vec<Field>,
    /// CampaignId used when the export has none.
    pub default_campaign: Option<String>,
    /// Event id used when the export has none.
    pub default_event: Option<(Field, String)>,
}

/// A distinct set of order-level values seen on rows of one OrderId, with the first line
/// that had it. Most orders have one (every row repeats the order cells) or two (the first
/// row has them, continuation rows are blank).
struct Variant {
    set: FieldSet,
    line: u64,
}

/// One row of an order, as kept until the order is finished: 48 bytes plus its item.
struct Entry {
    hash: crate::model::LineHash,
    line: u64,
    /// The variant its order cells match.
    variant: u32,
    /// The row's first item (CSV rows have at most one).
    item: Option<FieldSet>,
}

/// The rows of one OrderId, from its first row until it is finished. Rare things (further
/// items of a JSON line, problems) sit in their own lists, empty for most orders.
struct Bucket {
    /// Order of first appearance among all orders of the file.
    seq: u64,
    variants: Vec<Variant>,
    rows: Vec<Entry>,
    /// `(line, variant, item)` for items beyond a row's first.
    extra_items: Vec<(u64, u32, FieldSet)>,
    /// `(variant, problem)`.
    problems: Vec<(u32, Problem)>,
}

/// Rows that cannot belong to any order (no OrderId), kept so every row is accounted for.
#[derive(Debug, Default)]
pub struct Strays {
    pub lines: Vec<LineRef>,
    pub problems: Vec<Problem>,
}

/// The key a row groups by: its join key (a JSONL child line's parent id) or its OrderId.
pub fn group_key(order: &FieldSet) -> Option<&str> {
    order
        .get(Field::GROUP_KEY)
        .or_else(|| order.get(Field::ORDER_ID))
}

/// Collects rows of the orders still open; [`Grouper::finish`] hands out one order's drafts
/// as soon as its last row is in, [`Grouper::finish_each`] the rest at the end.
pub struct Grouper {
    keying: Keying,
    /// OrderId → its rows so far. foldhash is fast and seeded per process, so crafted
    /// OrderIds cannot force collisions.
    open: HashMap<Box<str>, Bucket, foldhash::fast::RandomState>,
    next_seq: u64,
    strays: Strays,
}

/// How many distinct variants of one order are compared before new rows are just appended.
const VARIANT_SCAN: usize = 8;

impl Grouper {
    pub fn new(keying: Keying) -> Grouper {
        Grouper {
            keying,
            open: HashMap::default(),
            next_seq: 0,
            strays: Strays::default(),
        }
    }

    pub fn push(&mut self, row: Row) {
        let Some(order_id) = group_key(&row.order) else {
            self.strays.lines.push(LineRef {
                line: row.line,
                hash: row.hash,
            });
            if row.problems.is_empty() {
                self.strays.problems.push(Problem::at(
                    row.line,
                    Field::ORDER_ID,
                    "is empty: every row needs the OrderId of the order it belongs to; fill it \
                     in or remove the row",
                ));
            }
            self.strays.problems.extend(row.problems);
            return;
        };
        let bucket = match self.open.get_mut(order_id) {
            Some(b) => b,
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.open.entry(order_id.into()).or_insert(Bucket {
                    seq,
                    variants: Vec::new(),
                    rows: Vec::new(),
                    extra_items: Vec::new(),
                    problems: Vec::new(),
                })
            }
        };
        let found = bucket
            .variants
            .iter()
            .rev()
            .take(VARIANT_SCAN)
            .position(|v| v.set == row.order)
            .map(|back| bucket.variants.len() - 1 - back);
        let variant = match found {
            Some(i) => i as u32,
            None => {
                bucket.variants.push(Variant {
                    set: row.order,
                    line: row.line,
                });
                (bucket.variants.len() - 1) as u32
            }
        };
        let mut items = row.items.into_iter();
        bucket.rows.push(Entry {
            hash: row.hash,
            line: row.line,
            variant,
            item: items.next(),
        });
        for item in items {
            bucket.extra_items.push((row.line, variant, item));
        }
        for p in row.problems {
            bucket.problems.push((variant, p));
        }
    }

    /// How many orders are open (rows in, not yet finished).
    pub fn open_orders(&self) -> usize {
        self.open.len()
    }

    /// Finishes the order grouped by `key` (its last row is in): hands its drafts to `f`
    /// and frees its rows. Nothing happens if no row of it was grouped.
    pub fn finish_one(&mut self, key: &str, f: &mut impl FnMut(OrderDraft)) {
        if let Some((order_id, bucket)) = self.open.remove_entry(key) {
            split_bucket(&self.keying, &order_id, bucket, f);
        }
    }

    /// Hands the drafts of every order still open to `f`, in order of first appearance;
    /// returns the rows that had no OrderId.
    pub fn finish_each(self, mut f: impl FnMut(OrderDraft)) -> Strays {
        let Grouper {
            keying,
            open,
            strays,
            ..
        } = self;
        let mut open: Vec<(Box<str>, Bucket)> = open.into_iter().collect();
        open.sort_by_key(|(_, b)| b.seq);
        for (order_id, bucket) in open {
            split_bucket(&keying, &order_id, bucket, &mut f);
        }
        strays
    }

    /// All drafts, sorted by their first line.
    pub fn finish(self) -> (Vec<OrderDraft>, Strays) {
        let mut drafts = Vec::new();
        let strays = self.finish_each(|d| drafts.push(d));
        drafts.sort_by_key(OrderDraft::first_line);
        (drafts, strays)
    }
}

/// Groups rows in one go.
pub fn group(keying: Keying, rows: impl IntoIterator<Item = Row>) -> (Vec<OrderDraft>, Strays) {
    let mut g = Grouper::new(keying);
    for row in rows {
        g.push(row);
    }
    g.finish()
}

type Key = (Option<String>, Option<(Field, String)>);

fn event_of(keying: &Keying, set: &FieldSet) -> Option<(Field, String)> {
    keying
        .event_fields
        .iter()
        .find_map(|f| set.get(*f).map(|v| (*f, v.to_owned())))
}

/// Splits one OrderId's rows into conversions by their resolved key, and merges each.
fn split_bucket(keying: &Keying, order_id: &str, bucket: Bucket, out: &mut impl FnMut(OrderDraft)) {
    let Bucket {
        variants,
        rows,
        extra_items,
        problems,
        ..
    } = bucket;

    // The distinct explicit key values among the order's rows, with a line that has each.
    let mut campaigns: BTreeMap<String, u64> = BTreeMap::new();
    let mut events: BTreeMap<(Field, String), u64> = BTreeMap::new();
    for v in &variants {
        if let Some(c) = v.set.get(Field::CAMPAIGN_ID) {
            let e = campaigns.entry(c.to_owned()).or_insert(v.line);
            *e = (*e).min(v.line);
        }
        if let Some(ev) = event_of(keying, &v.set) {
            let e = events.entry(ev).or_insert(v.line);
            *e = (*e).min(v.line);
        }
    }

    // Resolve each variant's key; blanks take the order's single value or the default.
    let mut extra: Vec<(u32, Problem)> = Vec::new();
    let mut keys: Vec<Key> = Vec::with_capacity(variants.len());
    for (i, v) in variants.iter().enumerate() {
        let campaign = match v.set.get(Field::CAMPAIGN_ID) {
            Some(c) => Some(c.to_owned()),
            None => match campaigns.len() {
                0 => keying.default_campaign.clone(),
                1 => campaigns.keys().next().cloned(),
                _ => {
                    extra.push((
                        i as u32,
                        ambiguous(v.line, order_id, "CampaignId", &campaigns),
                    ));
                    None
                }
            },
        };
        let event = match event_of(keying, &v.set) {
            Some(e) => Some(e),
            None => match events.len() {
                0 => keying.default_event.clone(),
                1 => events.keys().next().cloned(),
                _ => {
                    let shown: BTreeMap<String, u64> = events
                        .iter()
                        .map(|((f, val), l)| (format!("{f} {val}"), *l))
                        .collect();
                    extra.push((i as u32, ambiguous(v.line, order_id, "event id", &shown)));
                    None
                }
            },
        };
        keys.push((campaign, event));
    }

    // One draft per distinct key, in the order keys first appear.
    let mut parts: Vec<Key> = Vec::new();
    let mut part_of: Vec<usize> = Vec::with_capacity(keys.len());
    for k in &keys {
        let i = parts.iter().position(|p| p == k).unwrap_or_else(|| {
            parts.push(k.clone());
            parts.len() - 1
        });
        part_of.push(i);
    }
    let mut drafts: Vec<OrderDraft> = parts
        .into_iter()
        .map(|(campaign_id, event)| OrderDraft {
            order_id: order_id.to_owned(),
            campaign_id,
            event,
            order: FieldSet::default(),
            items: Vec::new(),
            lines: Vec::new(),
            problems: Vec::new(),
        })
        .collect();
    for e in rows {
        let draft = &mut drafts[part_of[e.variant as usize]];
        draft.lines.push(LineRef {
            line: e.line,
            hash: e.hash,
        });
        if let Some(item) = e.item {
            draft.items.push((e.line, item));
        }
    }
    for (line, v, item) in extra_items {
        drafts[part_of[v as usize]].items.push((line, item));
    }
    for (v, p) in problems.into_iter().chain(extra) {
        drafts[part_of[v as usize]].problems.push(p);
    }
    // Merge the order-level cells of each draft's variants, in line order.
    let mut by_part: Vec<Vec<&Variant>> = vec![Vec::new(); drafts.len()];
    for (i, v) in variants.iter().enumerate() {
        by_part[part_of[i]].push(v);
    }
    for (draft, mut vs) in drafts.iter_mut().zip(by_part) {
        vs.sort_by_key(|v| v.line);
        let mut merged: Vec<(Field, &str, u64)> = Vec::new();
        for v in vs {
            for (field, value) in v.set.iter() {
                match merged.iter().find(|(f, _, _)| *f == field) {
                    None => merged.push((field, value, v.line)),
                    Some(&(_, first, first_line)) if first != value => {
                        let (first, value) = (field.shown(first), field.shown(value));
                        draft.problems.push(Problem::at(
                            v.line,
                            field,
                            format!(
                                "line {first_line} says \"{first}\" but line {} says \"{value}\" \
                                 for the same order {order_id}: rows of one order must agree on \
                                 order-level fields; fix the export",
                                v.line
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        merged.sort_by_key(|(f, _, _)| *f);
        draft.order = FieldSet::from_pairs(merged.iter().map(|(f, v, _)| (*f, *v)));
        // Grouped by a join key: name the order by its real OrderId when a row gave one.
        if let Some(id) = draft.order.get(Field::ORDER_ID) {
            if id != draft.order_id {
                draft.order_id = id.to_owned();
            }
        }
        draft.lines.sort_by_key(|l| l.line);
        draft.items.sort_by_key(|(l, _)| *l);
        draft
            .problems
            .sort_by(|a, b| a.line.cmp(&b.line).then(a.message.cmp(&b.message)));
    }
    for d in drafts {
        out(d);
    }
}

fn ambiguous(line: u64, order_id: &str, what: &str, seen: &BTreeMap<String, u64>) -> Problem {
    let list: Vec<String> = seen
        .iter()
        .map(|(v, l)| format!("{v} on line {l}"))
        .collect();
    Problem::new(
        Some(line),
        Some(what),
        format!(
            "is blank, and order {order_id} appears with several ({}), so this row cannot be \
             placed: fill in {what} on every row of the order",
            list.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LineHash;

    fn row(line: u64, order: &[(&str, &str)], item: &[(&str, &str)]) -> Row {
        let f = |pairs: &[(&str, &str)]| {
            FieldSet::from_pairs(pairs.iter().map(|(k, v)| (Field::lookup(k).unwrap(), *v)))
        };
        Row {
            line,
            hash: LineHash::of(&line.to_le_bytes()),
            order: f(order),
            items: if item.is_empty() {
                vec![]
            } else {
                vec![f(item)]
            },
            problems: vec![],
        }
    }

    fn keying() -> Keying {
        Keying {
            event_fields: vec![Field::ACTION_TRACKER_ID],
            default_campaign: Some("1000".into()),
            default_event: Some((Field::ACTION_TRACKER_ID, "2000".into())),
        }
    }

    #[test]
    fn non_adjacent_rows_join_their_order_in_file_order() {
        let (drafts, strays) = group(
            keying(),
            vec![
                row(2, &[("OrderId", "A")], &[("ItemSku", "X")]),
                row(3, &[("OrderId", "B")], &[("ItemSku", "Y")]),
                row(4, &[("OrderId", "A")], &[("ItemSku", "Z")]),
            ],
        );
        assert!(strays.lines.is_empty());
        assert_eq!(drafts.len(), 2);
        assert_eq!(drafts[0].order_id, "A");
        assert_eq!(drafts[0].campaign_id.as_deref(), Some("1000"));
        let skus: Vec<_> = drafts[0]
            .items
            .iter()
            .map(|(l, s)| (*l, s.get(Field::item("Sku").unwrap()).unwrap().to_owned()))
            .collect();
        assert_eq!(skus, vec![(2, "X".to_owned()), (4, "Z".to_owned())]);
        assert_eq!(drafts[0].lines.len(), 2);
    }

    #[test]
    fn first_row_only_order_cells_merge() {
        let (drafts, _) = group(
            keying(),
            vec![
                row(
                    2,
                    &[
                        ("OrderId", "A"),
                        ("CampaignId", "7"),
                        ("CurrencyCode", "EUR"),
                    ],
                    &[("ItemSku", "X")],
                ),
                row(3, &[("OrderId", "A")], &[("ItemSku", "Y")]),
            ],
        );
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].campaign_id.as_deref(), Some("7"));
        assert_eq!(drafts[0].order.get(Field::CURRENCY_CODE), Some("EUR"));
        assert_eq!(drafts[0].items.len(), 2);
        assert!(drafts[0].problems.is_empty());
    }

    #[test]
    fn one_order_id_under_two_campaigns_is_two_conversions() {
        let (drafts, _) = group(
            keying(),
            vec![
                row(2, &[("OrderId", "A"), ("CampaignId", "1")], &[]),
                row(3, &[("OrderId", "A"), ("CampaignId", "2")], &[]),
            ],
        );
        assert_eq!(drafts.len(), 2);
        assert_eq!(drafts[1].campaign_id.as_deref(), Some("2"));
    }

    #[test]
    fn blank_key_with_several_candidates_is_ambiguous() {
        let (drafts, _) = group(
            keying(),
            vec![
                row(2, &[("OrderId", "A"), ("CampaignId", "1")], &[]),
                row(3, &[("OrderId", "A"), ("CampaignId", "2")], &[]),
                row(4, &[("OrderId", "A")], &[("ItemSku", "X")]),
            ],
        );
        let bad = drafts.iter().find(|d| d.campaign_id.is_none()).unwrap();
        assert_eq!(bad.problems.len(), 1);
        assert_eq!(bad.problems[0].line, Some(4));
        assert!(bad.problems[0].message.contains("1 on line 2, 2 on line 3"));
    }

    #[test]
    fn disagreeing_rows_name_both_lines() {
        let (drafts, _) = group(
            keying(),
            vec![
                row(2, &[("OrderId", "A"), ("CurrencyCode", "USD")], &[]),
                row(5, &[("OrderId", "A"), ("CurrencyCode", "EUR")], &[]),
            ],
        );
        assert_eq!(drafts.len(), 1);
        let p = &drafts[0].problems[0];
        assert_eq!(p.line, Some(5));
        assert_eq!(p.field.as_deref(), Some("CurrencyCode"));
        assert!(p
            .message
            .contains("line 2 says \"USD\" but line 5 says \"EUR\""));
    }

    #[test]
    fn rows_without_order_id_are_strays() {
        let (drafts, strays) = group(keying(), vec![row(9, &[("ItemSku", "X")], &[])]);
        assert!(drafts.is_empty());
        assert_eq!(strays.lines[0].line, 9);
        assert!(strays.problems[0].message.contains("OrderId"));
    }
}
