//! Property: for random Shopify orders with random discounts (per line, or only in the
//! order's subtotal), shipping discounts, tips and gift cards, the sale amount impact computes
//! from the body (the sandbox's independent reading of the contract) equals the export's
//! subtotal less gift cards, to the cent, on both endpoints.

use std::io::Cursor;
use std::path::Path;
use std::str::FromStr;

use impact_drop_core::contract;
use impact_drop_core::form;
use impact_drop_core::intake::{process_reader, Stages};
use impact_drop_core::model::Field;
use impact_drop_core::profile::Profile;
use impact_drop_core::read::{decode, Decoding, FileKind};
use impact_drop_core::settings::Endpoint;
use impact_drop_core::validate::Rules;
use proptest::prelude::*;
use rust_decimal::Decimal;

const HEADER: &str = "Name,Financial Status,Currency,Subtotal,Discount Code,Discount Amount,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Cancelled at,Lineitem discount";

#[derive(Clone, Debug)]
struct Line {
    cents: i64,
    quantity: u32,
    /// Share of the line discounted, in percent.
    off: u32,
    kind: u8, // 0 product, 1 tip, 2 gift card
}

#[derive(Clone, Debug)]
struct Order {
    lines: Vec<Line>,
    /// Discounts given per line (true) or only through the subtotal (false).
    per_line: bool,
    shipping_discount_cents: i64,
}

fn line() -> impl Strategy<Value = Line> {
    (
        1i64..50_000,
        1u32..5,
        0u32..=100,
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(|(cents, quantity, off, kind)| Line {
            cents,
            quantity,
            off,
            kind,
        })
}

fn order() -> impl Strategy<Value = Order> {
    (
        prop::collection::vec(line(), 1..6),
        any::<bool>(),
        0i64..2_000,
    )
        .prop_map(|(lines, per_line, shipping_discount_cents)| Order {
            lines,
            per_line,
            shipping_discount_cents,
        })
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The export and, per order, the sale it must arrive with (`None`: not a sale).
fn export(orders: &[Order]) -> (String, Vec<Option<Decimal>>) {
    let mut text = format!("{HEADER}\n");
    let mut expected = Vec::new();
    for (n, o) in orders.iter().enumerate() {
        let mut subtotal = 0i64;
        let mut gift = 0i64;
        let mut discount_total = 0i64;
        let mut rows = Vec::new();
        for l in &o.lines {
            let gross = l.cents * i64::from(l.quantity);
            let (name, sku, off) = match l.kind {
                1 => ("Tip", "", 0),
                2 => ("Gift Card - $25", "GC", 0),
                _ => ("Thing", "SKU", gross * i64::from(l.off) / 100),
            };
            if l.kind != 1 {
                subtotal += gross - off;
            }
            if l.kind == 2 {
                gift += gross;
            }
            discount_total += off;
            rows.push((name, sku, l, off));
        }
        for (i, (name, sku, l, off)) in rows.iter().enumerate() {
            let first = i == 0;
            text.push_str(&format!(
                "#{n},{},{},{},{},{},2025-12-07 19:08:24 +0000,{},{},{},{},,{}\n",
                if first { "paid" } else { "" },
                if first { "USD" } else { "" },
                if first {
                    money(subtotal)
                } else {
                    String::new()
                },
                if first { "CODE" } else { "" },
                if first {
                    money(discount_total + o.shipping_discount_cents)
                } else {
                    String::new()
                },
                l.quantity,
                name,
                money(l.cents),
                if sku.is_empty() {
                    String::new()
                } else {
                    format!("{sku}{i}")
                },
                if o.per_line && *off > 0 {
                    money(*off)
                } else {
                    String::new()
                },
            ));
        }
        let sale = subtotal - gift;
        let only_excluded = o.lines.iter().all(|l| l.kind != 0);
        expected.push((sale > 0 && !only_excluded).then(|| Decimal::new(sale, 2)));
    }
    (text, expected)
}

fn stages(endpoint: Endpoint) -> Stages {
    let mut rules = Rules::new(endpoint);
    rules.defaults = vec![
        (Field::CAMPAIGN_ID, "1".into()),
        (Field::ACTION_TRACKER_ID, "2".into()),
        (Field::MEDIA_PARTNER_ID, "3".into()),
    ];
    let profile = Profile::build("shopify-csv", &[], None);
    Stages::new(profile, rules, Decoding::default(), None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_sale_impact_computes_equals_the_subtotal(orders in prop::collection::vec(order(), 1..8)) {
        let (text, expected) = export(&orders);
        for endpoint in [Endpoint::Partner, Endpoint::Brand] {
            let mut bodies = Vec::new();
            let input = decode(Cursor::new(text.clone().into_bytes()), Decoding::default()).unwrap();
            let report = process_reader(&stages(endpoint), Path::new("orders.csv"), FileKind::Csv, input, &mut |c| {
                bodies.push((c.key().order_id.clone(), form::encode(&c), c.sale_amount()));
            }).unwrap();
            prop_assert!(report.invalid.is_empty(), "{:?}\n{text}", report.invalid);
            for (n, want) in expected.iter().enumerate() {
                let name = format!("#{n}");
                let got = bodies.iter().find(|(o, _, _)| *o == name);
                match (want, got) {
                    (Some(want), Some((_, body, ours))) => {
                        let fields: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                        let theirs = contract::sale_amount(endpoint.as_str(), &fields).unwrap();
                        prop_assert_eq!(theirs, *want, "{} {}: {}", endpoint.as_str(), name, body);
                        prop_assert_eq!(*ours, *want);
                        for (k, v) in &fields {
                            if k.starts_with("ItemTotalDiscount") {
                                prop_assert!(Decimal::from_str(v).unwrap() >= Decimal::ZERO);
                            }
                        }
                    }
                    (None, None) => {}
                    (want, got) => prop_assert!(false, "{}: expected {:?}, got {:?}\n{}", name, want, got, text),
                }
            }
        }
    }
}
