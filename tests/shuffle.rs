//! Property: any shuffle of an export's rows gives the same conversions (items compared as a
//! multiset) and the same invalid orders, through the real reader, mapper, grouper and
//! validator.

use std::collections::BTreeMap;
use std::path::Path;

use impact_drop::config::{Endpoint, Source};
use impact_drop::group::Keying;
use impact_drop::impact::form;
use impact_drop::intake::{process_file, Stages};
use impact_drop::model::Field;
use impact_drop::profile::Profile;
use impact_drop::read::Decoding;
use impact_drop::validate::Rules;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Order {
    /// Order cells on every row (true) or on one row only, the others blank (false).
    repeat: bool,
    date: usize,
    currency: usize,
    items: Vec<(u8, u8, u16)>,
}

fn order() -> impl Strategy<Value = Order> {
    (
        any::<bool>(),
        0..3usize,
        0..3usize,
        prop::collection::vec((0..6u8, 0..4u8, 0..3000u16), 1..6),
    )
        .prop_map(|(repeat, date, currency, items)| Order {
            repeat,
            date,
            currency,
            items,
        })
}

const DATES: &[&str] = &[
    "2025-01-01T10:00:00Z",
    "2025-06-30 23:59:59 +0200",
    "2024-12-24T08:00:00-05:00",
];
const CURRENCIES: &[&str] = &["USD", "EUR", "GBP"];

/// One row per item; quantity 0 makes the order invalid (on purpose, sometimes).
fn rows(orders: &[Order]) -> Vec<String> {
    let mut rows = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        for (n, (sku, qty, cents)) in o.items.iter().enumerate() {
            let cells = if o.repeat || n == 0 {
                format!("{},{}", DATES[o.date], CURRENCIES[o.currency])
            } else {
                ",".to_owned()
            };
            rows.push(format!(
                "ORD-{i},{cells},SKU-{sku},\"Item, {sku}\",{qty},{}.{:02}",
                cents / 100,
                cents % 100
            ));
        }
    }
    rows
}

fn shuffle(rows: &mut [String], mut seed: u64) {
    for i in (1..rows.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        rows.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Conversion key → (order fields, sorted item bodies); plus the invalid order ids and the
/// filtered ones (a zero sale, when every price is 0.00).
type Outcome = (
    BTreeMap<String, (String, Vec<String>)>,
    Vec<String>,
    Vec<String>,
);

fn outcome(stages: &Stages, path: &Path, rows: &[String]) -> Outcome {
    let text = format!(
        "OrderId,EventDate,CurrencyCode,ItemSku,ItemName,ItemQuantity,ItemPrice\n{}\n",
        rows.join("\n")
    );
    std::fs::write(path, text).unwrap();
    let mut valid = BTreeMap::new();
    let report = process_file(stages, path, &mut |c| {
        let order: Vec<String> = c.fields().map(|(f, v)| format!("{f}={v}")).collect();
        let mut items: Vec<String> = c
            .items()
            .iter()
            .map(|i| {
                i.iter()
                    .map(|(f, v)| format!("{f}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .collect();
        items.sort();
        assert!(form::encode(&c).starts_with("CampaignId=7&"));
        valid.insert(format!("{:?}", c.key()), (order.join("&"), items));
    })
    .unwrap();
    assert_eq!(report.rows as usize, rows.len());
    let mut invalid: Vec<String> = report.invalid.iter().map(|i| i.order_id.clone()).collect();
    invalid.sort();
    let mut filtered: Vec<String> = report.filtered.iter().map(|f| f.order_id.clone()).collect();
    filtered.sort();
    (valid, invalid, filtered)
}

fn stages() -> Stages {
    let mut rules = Rules::new(Endpoint::Partner);
    rules.defaults = vec![
        (Field::CAMPAIGN_ID, "7".into()),
        (Field::ACTION_TRACKER_ID, "8".into()),
        (Field::MEDIA_PARTNER_ID, "9".into()),
    ];
    let mut profile = Profile::impact();
    profile.apply_mapping(&[(Field::ORDER_ID, Source::Column("OrderId".into()))]);
    Stages {
        profile,
        keying: Keying {
            event_fields: rules.event_fields(),
            default_campaign: Some("7".into()),
            default_event: Some((Field::ACTION_TRACKER_ID, "8".into())),
        },
        rules,
        decoding: Decoding::default(),
        delimiter: None,
        sale: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_shuffle_gives_the_same_conversions(orders in prop::collection::vec(order(), 1..25), seed in 1..u64::MAX) {
        let dir = tempfile::tempdir().unwrap();
        let stages = stages();
        let original = rows(&orders);
        let mut shuffled = original.clone();
        shuffle(&mut shuffled, seed);
        let a = outcome(&stages, &dir.path().join("a.csv"), &original);
        let b = outcome(&stages, &dir.path().join("b.csv"), &shuffled);
        prop_assert_eq!(a.0.len() + a.1.len() + a.2.len(), orders.len());
        prop_assert_eq!(a, b);
    }
}
