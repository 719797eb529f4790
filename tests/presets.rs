//! The export presets through `check --show`, on files generated here exactly as the
//! platforms lay them out (no customer data): each test asserts the exact request bodies.

mod common;

use common::*;

const D: &str = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000";

/// The current (79-column) Shopify header.
const SHOPIFY_79: &str = "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,Payment Method,Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,Device ID,Id,Tags,Risk Level,Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,Payment References";

/// An older (47-column) generation of the header: fewer columns, in another order.
const SHOPIFY_47: &str = "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at";

/// A CSV line for `header` with the given cells (others empty), quoted as Excel/Shopify do.
fn csv_line(header: &str, cells: &[(&str, &str)]) -> String {
    header
        .split(',')
        .map(|h| {
            let v = cells.iter().find(|(k, _)| *k == h).map_or("", |(_, v)| *v);
            if v.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Three orders: a multi-item paid order with continuation rows (blank order cells), a quoted
/// multi-line note with JSON inside and an Excel-quoted postcode; a refunded one; a paid one.
fn shopify_rows(header: &str) -> Vec<String> {
    vec![
        csv_line(
            header,
            &[
                ("Name", "#1050"),
                ("Email", "ana@example.com"),
                ("Financial Status", "paid"),
                ("Currency", "USD"),
                ("Subtotal", "86.99"),
                ("Total", "91.99"),
                ("Discount Code", "WELCOME10"),
                ("Discount Amount", "10.00"),
                ("Created at", "2025-12-07 19:08:24 +0000"),
                ("Lineitem quantity", "2"),
                ("Lineitem name", "Toy set"),
                ("Lineitem price", "40.00"),
                ("Lineitem sku", "TOYSET"),
                ("Billing City", "Sydney"),
                ("Billing Zip", "'2759"),
                ("Billing Country", "AU"),
                ("Notes", "Leave at door,\r\nring twice"),
                ("Note Attributes", "gift: {\"wrap\": true, \"to\": \"Sam\"}"),
                ("Vendor", "Acme"),
                ("Id", "6109234561234"),
            ],
        ),
        csv_line(
            header,
            &[
                ("Name", "#1050"),
                ("Email", "ana@example.com"),
                ("Created at", "2025-12-07 19:08:24 +0000"),
                ("Lineitem quantity", "1"),
                ("Lineitem name", "Doll"),
                ("Lineitem price", "16.99"),
                ("Lineitem sku", "DOLL"),
                ("Vendor", "Acme"),
            ],
        ),
        csv_line(
            header,
            &[
                ("Name", "#1051"),
                ("Financial Status", "refunded"),
                ("Currency", "USD"),
                ("Created at", "2025-12-07 20:00:00 +0000"),
                ("Lineitem quantity", "1"),
                ("Lineitem name", "Kite"),
                ("Lineitem price", "25.00"),
                ("Lineitem sku", "KITE"),
                ("Refunded Amount", "25.00"),
                ("Id", "6109234561299"),
            ],
        ),
        csv_line(
            header,
            &[
                ("Name", "#1052"),
                ("Financial Status", "partially_refunded"),
                ("Currency", "JPY"),
                ("Created at", "2025-12-08 09:01:10 +0900"),
                ("Lineitem quantity", "3"),
                ("Lineitem name", "Cup"),
                ("Lineitem price", "1500"),
                ("Lineitem sku", "CUP-1"),
                ("Billing Zip", "100-0001"),
                ("Id", "6109234561300"),
            ],
        ),
    ]
}

const SHOPIFY_BODIES: [&str; 2] = [
    "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=%231050&EventDate=2025-12-07T19:08:24%2B00:00&CurrencyCode=USD&CustomerCity=Sydney&CustomerCountry=AU&CustomerPostCode=2759&ItemSku1=TOYSET&ItemName1=Toy%20set&ItemBrand1=Acme&ItemQuantity1=2&ItemPrice1=40.00&ItemTotalDiscount1=8.25&ItemSku2=DOLL&ItemName2=Doll&ItemBrand2=Acme&ItemQuantity2=1&ItemPrice2=16.99&ItemTotalDiscount2=1.75",
    "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=%231052&EventDate=2025-12-08T09:01:10%2B09:00&CurrencyCode=JPY&CustomerPostCode=100-0001&ItemSku1=CUP-1&ItemName1=Cup&ItemQuantity1=3&ItemPrice1=1500",
];

fn check_preset(format: &str, extra: &str, name: &str, bytes: &[u8]) -> Run {
    let dir = workspace(&format!("[source]\nformat = \"{format}\"\n{extra}\n"));
    let r = check_bytes(dir.path(), name, bytes, &["--show"]);
    // Keep the folder alive until the run is done (check_bytes has run it).
    drop(dir);
    r
}

#[test]
fn shopify_csv_current_header_lf() {
    let mut text = format!("{SHOPIFY_79}\n");
    for l in shopify_rows(SHOPIFY_79) {
        text.push_str(&l);
        text.push('\n');
    }
    let r = check_preset("shopify-csv", "", "orders_export.csv", text.as_bytes());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(bodies(&r.stdout), SHOPIFY_BODIES.to_vec(), "{}", r.stdout);
    // The note spans two physical lines, so #1051 starts on line 5.
    assert!(
        r.stdout
            .contains("filtered OrderId #1051, line 5: Financial Status is \"refunded\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("4 rows, 2 conversions valid, 1 order filtered (1 row)"),
        "{}",
        r.stdout
    );
}

#[test]
fn shopify_csv_old_header_crlf_bom_no_final_newline() {
    let mut text = format!("\u{feff}{SHOPIFY_47}");
    for l in shopify_rows(SHOPIFY_47) {
        text.push_str("\r\n");
        text.push_str(&l);
    }
    let r = check_preset("shopify-csv", "", "orders_export (1).csv", text.as_bytes());
    assert_eq!(r.code, 0, "{}", r.stdout);
    // The 47-column generation has no Vendor column: no ItemBrand.
    let expected: Vec<String> = SHOPIFY_BODIES
        .iter()
        .map(|b| {
            b.replace("&ItemBrand1=Acme", "")
                .replace("&ItemBrand2=Acme", "")
        })
        .collect();
    assert_eq!(bodies(&r.stdout), expected, "{}", r.stdout);
}

#[test]
fn shopify_csv_order_id_from_id_and_filters_turned_off() {
    let mut text = format!("{SHOPIFY_79}\n");
    for l in shopify_rows(SHOPIFY_79) {
        text.push_str(&l);
        text.push('\n');
    }
    let r = check_preset(
        "shopify-csv",
        "preset_filters = false\n[mapping]\nOrderId = \"Id\"",
        "orders_export.csv",
        text.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let b = bodies(&r.stdout);
    assert_eq!(
        b.len(),
        3,
        "the refunded order too, once filters are off: {}",
        r.stdout
    );
    assert!(b[0].contains("&OrderId=6109234561234&"), "{}", b[0]);
    assert!(b[1].contains("&OrderId=6109234561299&"), "{}", b[1]);
}

/// Shopify bulk JSONL lines; `grouped` puts children right under their parent.
fn shopify_jsonl(grouped: bool) -> String {
    let order = |id: u32, name: &str, status: &str, extra: &str| {
        let subtotal = match id {
            1 => "85.6",
            4 => "7.0",
            _ => "20.0",
        };
        format!(
            "{{\"id\":\"gid:\\/\\/shopify\\/Order\\/{id}\",\"name\":\"{name}\",\"createdAt\":\"2025-06-15T10:30:00Z\",\
             \"currencyCode\":\"USD\",\"displayFinancialStatus\":\"{status}\",\"test\":false,\"discountCodes\":[\"SUMMER5\"],\
             \"totalDiscountsSet\":{{\"shopMoney\":{{\"amount\":\"5.0\"}}}},\
             \"subtotalPriceSet\":{{\"shopMoney\":{{\"amount\":\"{subtotal}\"}}}}{extra}}}"
        )
    };
    let item = |id: u32, parent: u32, sku: &str, qty: u32, price: &str| {
        format!(
            "{{\"id\":\"gid:\\/\\/shopify\\/LineItem\\/{id}\",\"sku\":{sku},\"name\":\"Item {id}\",\"quantity\":{qty},\
             \"originalUnitPriceSet\":{{\"shopMoney\":{{\"amount\":\"{price}\"}}}},\"__parentId\":\"gid:\\/\\/shopify\\/Order\\/{parent}\"}}"
        )
    };
    let o1 = order(1, "#3001", "PAID", ",\"cancelledAt\":null");
    let o2 = order(2, "#3002", "VOIDED", "");
    let o3 = order(
        3,
        "#3003",
        "PAID",
        ",\"cancelledAt\":\"2025-06-16T08:00:00Z\"",
    );
    let o4 = order(4, "#3004", "PARTIALLY_REFUNDED", "");
    let i11 = item(11, 1, "\"MUG\"", 2, "12.5");
    let i12 = item(12, 1, "null", 1, "65.6");
    let i21 = item(21, 2, "\"KITE\"", 1, "25.0");
    let i31 = item(31, 3, "\"HAT\"", 1, "9.0");
    let i41 = item(41, 4, "\"TEA\"", 3, "4.0");
    let lines = if grouped {
        vec![o1, i11, i12, o2, i21, o3, i31, o4, i41]
    } else {
        // groupObjects: false: children anywhere after their parent.
        vec![o1, o2, i21, o3, o4, i41, i11, i31, i12]
    };
    lines.join("\n")
}

#[test]
fn shopify_jsonl_grouped_and_ungrouped_give_the_same_conversions() {
    let expected = vec![
        "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=%233001&EventDate=2025-06-15T10:30:00%2B00:00&CurrencyCode=USD&ItemSku1=MUG&ItemName1=Item%2011&ItemQuantity1=2&ItemPrice1=12.5&ItemTotalDiscount1=1.38&ItemName2=Item%2012&ItemQuantity2=1&ItemPrice2=65.6&ItemTotalDiscount2=3.62",
        "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=%233004&EventDate=2025-06-15T10:30:00%2B00:00&CurrencyCode=USD&ItemSku1=TEA&ItemName1=Item%2041&ItemQuantity1=3&ItemPrice1=4.0&ItemTotalDiscount1=5.00",
    ];
    for grouped in [true, false] {
        let r = check_preset(
            "shopify-jsonl",
            "",
            "bulk.jsonl",
            shopify_jsonl(grouped).as_bytes(),
        );
        assert_eq!(r.code, 0, "grouped {grouped}: {}", r.stdout);
        assert_eq!(
            bodies(&r.stdout),
            expected,
            "grouped {grouped}: {}",
            r.stdout
        );
        assert!(
            r.stdout.contains("filtered OrderId #3002")
                && r.stdout.contains("displayFinancialStatus is \"VOIDED\""),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("filtered OrderId #3003") && r.stdout.contains("cancelledAt is set"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("9 rows, 2 conversions valid, 2 orders filtered (4 rows)"),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn shopify_jsonl_test_orders_are_filtered_and_orphans_are_invalid() {
    let text = "{\"id\":\"gid://shopify/Order/9\",\"name\":\"#9\",\"createdAt\":\"2025-06-15T10:30:00Z\",\"currencyCode\":\"USD\",\"test\":true}\n\
                {\"id\":\"gid://shopify/LineItem/91\",\"sku\":\"X\",\"quantity\":1,\"originalUnitPriceSet\":{\"shopMoney\":{\"amount\":\"1.0\"}},\"__parentId\":\"gid://shopify/Order/9\"}\n\
                {\"id\":\"gid://shopify/LineItem/99\",\"sku\":\"Y\",\"quantity\":1,\"originalUnitPriceSet\":{\"shopMoney\":{\"amount\":\"1.0\"}},\"__parentId\":\"gid://shopify/Order/404\"}";
    let r = check_preset("shopify-jsonl", "", "bulk.jsonl", text.as_bytes());
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("test is \"true\""), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("bulk.jsonl:3: name (OrderId): is missing"),
        "an item whose order line is absent: {}",
        r.stdout
    );
}

const WOO_AOE: &str = "\"Order Number\",\"Order Status\",\"Order Date\",\"Order Currency\",\"Coupon Code\",\"SKU\",\"Item Name\",\"Quantity\",\"Item Cost\",\"Order Total Amount\"\r\n\
\"3001\",\"completed\",\"2025-07-02 14:05\",\"EUR\",\"ETE\",\"CHAISE-1\",\"Chaise\",\"2\",\"45.00\",\"90.00\"\r\n\
\"3002\",\"processing\",\"2025-11-02 15:30\",\"EUR\",\"\",\"TABLE-9\",\"Table\",\"1\",\"210.00\",\"235.00\"\r\n\
\"3002\",\"processing\",\"2025-11-02 15:30\",\"EUR\",\"\",\"NAPPE-2\",\"Nappe\",\"1\",\"25.00\",\"235.00\"\r\n\
\"3003\",\"cancelled\",\"2025-11-03 09:12\",\"EUR\",\"\",\"VASE-3\",\"Vase\",\"1\",\"30.00\",\"30.00\"\r\n";

const WOO_SKYVERGE: &str = "order_id,order_number,date,status,order_currency,item_sku,item_name,item_price,item_quantity\n\
91,3001,2025-07-02 14:05,completed,EUR,CHAISE-1,Chaise,45.00,2\n\
92,3002,2025-11-02 15:30,processing,EUR,TABLE-9,Table,210.00,1\n\
92,3002,2025-11-02 15:30,processing,EUR,NAPPE-2,Nappe,25.00,1\n\
93,3003,2025-11-03 09:12,cancelled,EUR,VASE-3,Vase,30.00,1\n";

#[test]
fn woocommerce_both_layouts_with_the_shops_zone() {
    let first_aoe = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=3001&EventDate=2025-07-02T14:05:00%2B02:00&CurrencyCode=EUR&ItemSku1=CHAISE-1&ItemName1=Chaise&ItemQuantity1=2&ItemPrice1=45.00";
    let second = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=3002&EventDate=2025-11-02T15:30:00%2B01:00&CurrencyCode=EUR&ItemSku1=TABLE-9&ItemName1=Table&ItemQuantity1=1&ItemPrice1=210.00&ItemSku2=NAPPE-2&ItemName2=Nappe&ItemQuantity2=1&ItemPrice2=25.00";
    let r = check_preset(
        "woocommerce",
        "timezone = \"Europe/Paris\"",
        "orders.csv",
        WOO_AOE.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        bodies(&r.stdout),
        vec![first_aoe, second],
        "summer +02:00, winter +01:00: {}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("filtered OrderId 3003, line 5: Order Status is \"cancelled\""),
        "{}",
        r.stdout
    );
    let r = check_preset(
        "woocommerce",
        "timezone = \"Europe/Paris\"",
        "export.csv",
        WOO_SKYVERGE.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    let first_sky = first_aoe.to_owned();
    assert_eq!(
        bodies(&r.stdout),
        vec![first_sky.as_str(), second],
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("filtered OrderId 3003, line 5: status is \"cancelled\""),
        "{}",
        r.stdout
    );
}

#[test]
fn woocommerce_without_a_zone_is_a_config_error_naming_the_key() {
    let dir = workspace("[source]\nformat = \"woocommerce\"\n");
    let r = check_bytes(dir.path(), "orders.csv", WOO_AOE.as_bytes(), &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("[source] timezone is required with format = \"woocommerce\""),
        "{}",
        r.stderr
    );
}

#[test]
fn impact_batch_is_the_ftp_template() {
    let text = "CampaignId,ActionTrackerId,EventDate,OrderId,ClickId,CustomerId,CurrencyCode,Amount,Category,Sku,Quantity\n\
                1000,2000,2025-11-22T14:05:00-08:00,FTP-1,abc,c-1,USD,80.00,Toys,TOYSET,2\n\
                1000,2000,2025-11-22T14:05:00-08:00,FTP-1,abc,c-1,USD,6.99,Toys,DOLL,1\n";
    let r = check_preset("impact-batch", "", "batch.csv", text.as_bytes());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        bodies(&r.stdout),
        vec![format!("{D}&OrderId=FTP-1&EventDate=2025-11-22T14:05:00-08:00&CurrencyCode=USD&ItemSku1=TOYSET&ItemCategory1=Toys&ItemQuantity1=2&ItemSubTotal1=80.00&ItemSku2=DOLL&ItemCategory2=Toys&ItemQuantity2=1&ItemSubTotal2=6.99")]
    );
}

#[test]
fn european_numbers_only_when_configured() {
    let text = "OrderId;EventDate;CurrencyCode;ItemSku;ItemQuantity;ItemPrice\nE-1;2025-01-01T10:00:00+01:00;EUR;X;1;1.234,56\n";
    let r = check_preset("impact", "", "eu.csv", text.as_bytes());
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("eu.csv:2: ItemPrice: \"1.234,56\" is not an amount"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("decimal_separator"), "{}", r.stdout);
    let r = check_preset(
        "impact",
        "decimal_separator = \",\"",
        "eu.csv",
        text.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        bodies(&r.stdout)[0].ends_with("&ItemPrice1=1234.56"),
        "{}",
        r.stdout
    );
}

#[test]
fn currency_symbols_only_when_configured() {
    let text = "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\nS-1,2025-01-01T10:00:00Z,X,1,\"$1,234.50\"\n";
    let r = check_preset("impact", "", "s.csv", text.as_bytes());
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("s.csv:2: ItemPrice: \"$1,234.50\" is not an amount")
            && r.stdout.contains("strip_currency_symbols"),
        "{}",
        r.stdout
    );
    let r = check_preset(
        "impact",
        "strip_currency_symbols = true",
        "s.csv",
        text.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        bodies(&r.stdout)[0].ends_with("&ItemPrice1=1234.50"),
        "{}",
        r.stdout
    );
}

#[test]
fn gz_exports_are_read() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"OrderId,EventDate,Amount\nG-1,2025-01-01T10:00:00Z,5.00\n")
        .unwrap();
    let bytes = gz.finish().unwrap();
    let r = check_preset("impact", "", "orders.csv.gz", &bytes);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        bodies(&r.stdout),
        vec![format!(
            "{D}&OrderId=G-1&EventDate=2025-01-01T10:00:00%2B00:00&CurrencyCode=USD&Amount=5.00"
        )]
    );
}

#[test]
fn show_says_where_each_field_came_from() {
    let mut text = format!("{SHOPIFY_79}\n");
    for l in shopify_rows(SHOPIFY_79) {
        text.push_str(&l);
        text.push('\n');
    }
    let dir = workspace("[source]\nformat = \"shopify-csv\"\n");
    let plain = check_bytes(
        dir.path(),
        "orders_export.csv",
        text.as_bytes(),
        &["--show"],
    );
    assert!(!plain.stdout.contains(" <- "), "--show alone: bodies only");
    let r = check_bytes(
        dir.path(),
        "orders_export.csv",
        text.as_bytes(),
        &["--show", "--sources"],
    );
    for expected in [
        "#   CampaignId <- [defaults]",
        "#   OrderId <- \"Name\", line 2",
        "#   EventDate <- \"Created at\", line 2",
        "#   ItemSku2 <- \"Lineitem sku\", line 4",
        "#   ItemPrice2 <- \"Lineitem price\", line 4",
    ] {
        assert!(
            r.stdout.contains(expected),
            "missing {expected:?}:\n{}",
            r.stdout
        );
    }
}

#[test]
fn row_filters_skip_single_rows_and_list_them() {
    let text = "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice\n\
                R-1,2025-01-01T10:00:00Z,MUG,1,10.00\n\
                R-1,2025-01-01T10:00:00Z,GIFTCARD,1,50.00\n\
                R-2,2025-01-01T11:00:00Z,TEA,2,4.00\n";
    let r = check_preset(
        "impact",
        "[[filter]]\ncolumn = \"ItemSku\"\nskip = [\"giftcard\"]\nlevel = \"row\"",
        "orders.csv",
        text.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        bodies(&r.stdout),
        vec![
            format!("{D}&OrderId=R-1&EventDate=2025-01-01T10:00:00%2B00:00&CurrencyCode=USD&ItemSku1=MUG&ItemQuantity1=1&ItemPrice1=10.00"),
            format!("{D}&OrderId=R-2&EventDate=2025-01-01T11:00:00%2B00:00&CurrencyCode=USD&ItemSku1=TEA&ItemQuantity1=2&ItemPrice1=4.00"),
        ]
    );
    assert!(
        r.stdout
            .contains("filtered OrderId R-1, line 3: row skipped: ItemSku is \"GIFTCARD\""),
        "{}",
        r.stdout
    );
}
