//! Property: on random impact-column files (orders' rows shuffled through the file, some rows
//! with a bad quantity, some without an OrderId), the two-pass intake (which finishes each
//! order at its last row) gives exactly what a simple, independent reading gives: group
//! every row by OrderId, items in file order, an order with a bad row invalid as a whole.
//! Bodies, invalid orders with their lines, and stray rows are compared; the one-pass reader
//! (`process_reader`) must agree too, and so must the verified two passes `run` records in
//! parts (`first_pass_in` + `second_pass`, with blocks of a few rows so their edges fall
//! everywhere), which also hash the file as they read it.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use impact_drop_core::form;
use impact_drop_core::intake::{
    first_pass_in, process_file_in, process_reader, second_pass, FileReport, Stages,
};
use impact_drop_core::model::Field;
use impact_drop_core::profile::Profile;
use impact_drop_core::read::{decode, Decoding, FileKind};
use impact_drop_core::settings::Endpoint;
use impact_drop_core::validate::Rules;
use proptest::prelude::*;

const HEADER: &str = "OrderId,EventDate,CurrencyCode,ItemSku,ItemQuantity,ItemPrice";

#[derive(Clone, Debug)]
struct Item {
    sku: u32,
    /// `None`: a quantity that is not a number.
    quantity: Option<u32>,
    cents: u32,
}

#[derive(Clone, Debug)]
struct Order {
    minute: u32,
    items: Vec<Item>,
}

fn item() -> impl Strategy<Value = Item> {
    (
        0u32..50,
        prop_oneof![20 => (1u32..6).prop_map(Some), 1 => Just(None)],
        1u32..100_000,
    )
        .prop_map(|(sku, quantity, cents)| Item {
            sku,
            quantity,
            cents,
        })
}

fn order() -> impl Strategy<Value = Order> {
    (0u32..60, prop::collection::vec(item(), 1..5))
        .prop_map(|(minute, items)| Order { minute, items })
}

/// One data row: `(OrderId or "" for a stray, the row's cells)`.
type RowText = (String, String);

fn rows(orders: &[Order], strays: usize) -> Vec<RowText> {
    let mut out = Vec::new();
    for (n, o) in orders.iter().enumerate() {
        let id = format!("ORD-{n}");
        for it in &o.items {
            let quantity = it.quantity.map_or("x".to_owned(), |q| q.to_string());
            out.push((
                id.clone(),
                format!(
                    "{id},2025-11-20T10:{:02}:00-05:00,USD,SKU-{},{quantity},{}.{:02}",
                    o.minute,
                    it.sku,
                    it.cents / 100,
                    it.cents % 100
                ),
            ));
        }
    }
    for s in 0..strays {
        out.push((
            String::new(),
            format!(",2025-11-20T10:00:00-05:00,USD,STRAY-{s},1,1.00"),
        ));
    }
    out
}

/// What the simple reading expects: bodies of valid orders, invalid orders with their lines,
/// stray lines.
struct Expected {
    bodies: BTreeMap<String, String>,
    invalid: BTreeMap<String, Vec<u64>>,
    strays: Vec<u64>,
}

/// An order's rows as the simple reading keeps them: `(line, cells)`.
type Rows = Vec<(u64, Vec<String>)>;

fn simple(file: &[RowText]) -> Expected {
    // Group by OrderId in order of first appearance; items in file order.
    let mut groups: Vec<(String, Rows)> = Vec::new();
    let mut strays = Vec::new();
    for (i, (id, text)) in file.iter().enumerate() {
        let line = i as u64 + 2;
        if id.is_empty() {
            strays.push(line);
            continue;
        }
        let cells: Vec<String> = text.split(',').map(str::to_owned).collect();
        match groups.iter_mut().find(|(g, _)| g == id) {
            Some((_, rows)) => rows.push((line, cells)),
            None => groups.push((id.clone(), vec![(line, cells)])),
        }
    }
    let mut bodies = BTreeMap::new();
    let mut invalid = BTreeMap::new();
    for (id, rows) in groups {
        if rows.iter().any(|(_, c)| c[4].parse::<u32>().is_err()) {
            invalid.insert(id, rows.iter().map(|(l, _)| *l).collect());
            continue;
        }
        let first = &rows[0].1;
        let mut body = format!(
            "CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId={id}&EventDate={}&CurrencyCode={}",
            first[1], first[2]
        );
        for (n, (_, c)) in rows.iter().enumerate() {
            let n = n + 1;
            body.push_str(&format!(
                "&ItemSku{n}={}&ItemQuantity{n}={}&ItemPrice{n}={}",
                c[3], c[4], c[5]
            ));
        }
        bodies.insert(id, body);
    }
    Expected {
        bodies,
        invalid,
        strays,
    }
}

fn stages() -> Stages {
    let mut rules = Rules::new(Endpoint::Partner);
    rules.defaults = vec![
        (Field::CAMPAIGN_ID, "1".into()),
        (Field::ACTION_TRACKER_ID, "2".into()),
        (Field::MEDIA_PARTNER_ID, "3".into()),
    ];
    Stages::new(Profile::impact(), rules, Decoding::default(), None)
}

/// What the intake produced, in the simple reading's terms.
fn got(report: &FileReport, bodies: Vec<(String, String)>) -> Expected {
    Expected {
        bodies: bodies.into_iter().collect(),
        invalid: report
            .invalid
            .iter()
            .map(|i| (i.order_id.clone(), i.lines.iter().map(|l| l.line).collect()))
            .collect(),
        strays: report.stray_lines.iter().map(|l| l.line).collect(),
    }
}

fn assert_same(got: &Expected, want: &Expected, text: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&got.bodies, &want.bodies, "{}", text);
    prop_assert_eq!(&got.invalid, &want.invalid, "{}", text);
    prop_assert_eq!(&got.strays, &want.strays, "{}", text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn two_pass_intake_matches_a_simple_reading(
        file in (prop::collection::vec(order(), 1..25), 0usize..3)
            .prop_flat_map(|(orders, strays)| Just(rows(&orders, strays)).prop_shuffle()),
        per_block in 1u64..9,
    ) {
        let text = std::iter::once(HEADER.to_owned())
            .chain(file.iter().map(|(_, t)| t.clone()))
            .collect::<Vec<_>>()
            .join("\n");
        let want = simple(&file);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.csv");
        std::fs::write(&path, &text).unwrap();
        let mut bodies = Vec::new();
        let report = process_file_in(&stages(), &path, 2, &mut |c| {
            bodies.push((c.key().order_id.clone(), form::encode(&c)));
        })
        .unwrap();
        prop_assert_eq!(report.rows, file.len() as u64);
        // Each order is handed on once.
        prop_assert_eq!(bodies.len() as u64, report.valid_conversions);
        assert_same(&got(&report, bodies), &want, &text)?;

        // The verified passes: the same, and the file's hash taken on the way.
        let first = first_pass_in(&stages(), &path, per_block).unwrap();
        prop_assert_eq!(&first.content_hash, &blake3::hash(text.as_bytes()).to_hex().to_string());
        prop_assert_eq!(first.size, text.len() as u64);
        let mut bodies = Vec::new();
        let report = second_pass(&stages(), &path, &first, &mut |c| {
            bodies.push((c.key().order_id.clone(), form::encode(&c)));
        })
        .unwrap();
        prop_assert_eq!(bodies.len() as u64, report.valid_conversions);
        assert_same(&got(&report, bodies), &want, &text)?;

        let input = decode(Cursor::new(text.clone().into_bytes()), Decoding::default()).unwrap();
        let mut bodies = Vec::new();
        let report = process_reader(&stages(), Path::new("orders.csv"), FileKind::Csv, input, &mut |c| {
            bodies.push((c.key().order_id.clone(), form::encode(&c)));
        })
        .unwrap();
        assert_same(&got(&report, bodies), &want, &text)?;
    }
}

/// A file rewritten between the passes: the second pass fails at the first block that
/// differs, and no order using a row of it (or after it) is handed on.
#[test]
fn a_file_changed_between_the_passes_hands_on_nothing_it_cannot_prove() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.csv");
    let row = |o: u32, price: &str| format!("O-{o},2025-11-20T10:00:00-05:00,USD,S{o},1,{price}");
    // Orders 1..=40, one row each, in blocks of 4 rows.
    let write = |changed: Option<u32>| {
        let rows: Vec<String> = (1..=40)
            .map(|o| row(o, if Some(o) == changed { "99.00" } else { "10.00" }))
            .collect();
        std::fs::write(&path, format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
    };
    write(None);
    let first = first_pass_in(&stages(), &path, 4).unwrap();
    // Order 22 (row 22, in the sixth block: rows 21–24) changes its price.
    write(Some(22));
    let mut handed = Vec::new();
    let err = second_pass(&stages(), &path, &first, &mut |c| {
        handed.push(c.key().order_id.clone());
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("the file changed while it was read (by line 25)"),
        "{err}"
    );
    // Only the orders of the five blocks proven unchanged (rows 1–20).
    let want: Vec<String> = (1..=20).map(|o| format!("O-{o}")).collect();
    assert_eq!(handed, want);

    // A header renamed (same rows): nothing is handed on.
    write(None);
    let first = first_pass_in(&stages(), &path, 4).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("ItemPrice", "ItemSubTotal", 1)).unwrap();
    let mut handed = 0;
    let err = second_pass(&stages(), &path, &first, &mut |_| handed += 1).unwrap_err();
    assert!(
        err.to_string().contains("changed while it was read"),
        "{err}"
    );
    assert_eq!(handed, 0);

    // Rows appended after the first pass: every block it knew is proven, then the end
    // differs; the whole file is refused before its last orders are handed on.
    write(None);
    let first = first_pass_in(&stages(), &path, 4).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("{}\n", row(41, "10.00")));
    std::fs::write(&path, text).unwrap();
    let mut handed = 0;
    let err = second_pass(&stages(), &path, &first, &mut |_| handed += 1).unwrap_err();
    assert!(
        err.to_string().contains("changed while it was read"),
        "{err}"
    );
    assert_eq!(handed, 40);
}
