//! The sale amount impact computes is what the shop sold, on either endpoint: exports
//! generated as the platforms lay them out go through the real binary to the sandbox, which
//! computes the sale amount from each body as impact does for the endpoint posted to; every
//! figure is compared, as a decimal, with the export's own subtotal.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;

use common::*;
use impact_drop::impact::sandbox::Received;
use rust_decimal::Decimal;

const SID: &str = "IRMONEY000000000000000000001";
const TOKEN: &str = "money-token-41b7";

const SHOPIFY: &str = "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,Payment Method,Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,Device ID,Id,Tags,Risk Level,Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,Payment References";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// One line item: name, SKU, quantity, unit price, the line's discount.
struct Line(&'static str, &'static str, u32, &'static str, &'static str);

/// A Shopify order: its fields (first row) and its lines.
struct Order {
    name: &'static str,
    currency: &'static str,
    subtotal: &'static str,
    discount_code: &'static str,
    discount_amount: &'static str,
    status: &'static str,
    cancelled_at: &'static str,
    lines: Vec<Line>,
}

impl Order {
    fn new(name: &'static str, subtotal: &'static str, lines: Vec<Line>) -> Order {
        Order {
            name,
            currency: "USD",
            subtotal,
            discount_code: "",
            discount_amount: "0.00",
            status: "paid",
            cancelled_at: "",
            lines,
        }
    }
}

fn cell(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// The export as Shopify writes it: order fields on the first row of each order only.
fn shopify_csv(orders: &[&Order]) -> String {
    let header: Vec<&str> = SHOPIFY.split(',').collect();
    let mut out = format!("{SHOPIFY}\n");
    for o in orders {
        for (i, l) in o.lines.iter().enumerate() {
            let quantity = l.2.to_string();
            let mut cells: Vec<(&str, &str)> = vec![
                ("Name", o.name),
                ("Created at", "2025-12-07 19:08:24 +0000"),
                ("Lineitem name", l.0),
                ("Lineitem sku", l.1),
                ("Lineitem quantity", &quantity),
                ("Lineitem price", l.3),
                ("Lineitem discount", l.4),
            ];
            if i == 0 {
                cells.extend([
                    ("Financial Status", o.status),
                    ("Currency", o.currency),
                    ("Subtotal", o.subtotal),
                    ("Discount Code", o.discount_code),
                    ("Discount Amount", o.discount_amount),
                    ("Cancelled at", o.cancelled_at),
                ]);
            }
            let row: Vec<String> = header
                .iter()
                .map(|h| cell(cells.iter().find(|(k, _)| k == h).map_or("", |(_, v)| v)))
                .collect();
            out.push_str(&row.join(","));
            out.push('\n');
        }
    }
    out
}

/// The cases of the issue, each with the sale it must arrive with (`None`: not sent).
fn shopify_cases() -> Vec<(Order, Option<&'static str>)> {
    let mut shipping = Order::new("#1004", "40.00", vec![Line("Lamp", "LAMP", 1, "40.00", "")]);
    shipping.discount_code = "FREESHIP";
    shipping.discount_amount = "9.95";
    let mut both = Order::new(
        "#1005",
        "90.00",
        vec![Line("Chair", "CHAIR", 1, "100.00", "10.00")],
    );
    both.discount_code = "SAVE10, FREESHIP";
    both.discount_amount = "19.95";
    let mut percent = Order::new(
        "#1002",
        "81.00",
        vec![
            Line("Boots", "BOOTS", 1, "50.00", "5.00"),
            Line("Socks", "SOCKS", 2, "20.00", "4.00"),
        ],
    );
    percent.discount_code = "TENOFF";
    percent.discount_amount = "9.00";
    let mut fixed = Order::new(
        "#1003",
        "45.00",
        vec![
            Line("Mug", "MUG", 1, "30.00", ""),
            Line("Tea", "TEA", 1, "20.00", ""),
        ],
    );
    fixed.discount_code = "FIVE";
    fixed.discount_amount = "5.00";
    let mut cancelled = Order::new("#1008", "12.00", vec![Line("Pen", "PEN", 1, "12.00", "")]);
    cancelled.cancelled_at = "2025-12-08 10:00:00 +0000";
    let mut exchange = Order::new(
        "#1009",
        "0.00",
        vec![Line("Shirt", "SHIRT", 1, "20.00", "20.00")],
    );
    exchange.discount_amount = "20.00";
    let mut yen = Order::new("#1010", "4000", vec![Line("Cup", "CUP", 3, "1500", "")]);
    yen.currency = "JPY";
    yen.discount_amount = "500";
    vec![
        (
            Order::new(
                "#1001",
                "25.50",
                vec![
                    Line("Toy", "TOY", 2, "10.00", ""),
                    Line("Ball", "BALL", 1, "5.50", ""),
                ],
            ),
            Some("25.50"),
        ),
        (percent, Some("81.00")),
        (fixed, Some("45.00")),
        (shipping, Some("40.00")),
        (both, Some("90.00")),
        (
            Order::new(
                "#1006",
                "25.00",
                vec![
                    Line("Book", "BOOK", 1, "25.00", ""),
                    Line("Tip", "", 1, "5.00", ""),
                ],
            ),
            Some("25.00"),
        ),
        (
            Order::new(
                "#1007",
                "80.00",
                vec![
                    Line("Scarf", "SCARF", 1, "30.00", ""),
                    Line("Gift Card - $50", "GC50", 1, "50.00", ""),
                ],
            ),
            Some("30.00"),
        ),
        (cancelled, None),
        (exchange, None),
        (yen, Some("4000")),
        // Line discounts that do not hold the order-level code: the rest is allocated.
        (
            Order::new(
                "#1012",
                "10.00",
                vec![Line("Hat", "HAT", 1, "15.00", "1.00")],
            ),
            Some("10.00"),
        ),
        // The lines come to less than the export's own figure: not sent.
        (
            Order::new(
                "#1011",
                "20.00",
                vec![Line("Cap", "CAP", 1, "15.00", "1.00")],
            ),
            None,
        ),
    ]
}

struct Env(SandboxDir);

fn env(format: &str, endpoint: &str, extra: &str) -> Env {
    Env(SandboxDir::new(SID, TOKEN, |base_url| {
        format!(
            "[defaults]\nCampaignId = 1000\nActionTrackerId = 2000\nMediaPartnerId = 3000\n\
             CurrencyCode = \"USD\"\n[source]\ndrop_dir = \"drop\"\nformat = \"{format}\"\n\
             {extra}\n[impact]\nendpoint = \"{endpoint}\"\nbase_url = \"{base_url}\"\n\
             account_sid = \"{SID}\"\nrequests_per_hour = 0\n[follow_up]\nrun_wait_secs = 0\n[ledger]\npath = \"ledger.sqlite\"\n"
        )
    }))
}

impl Env {
    fn run(&self, name: &str, content: &str) -> (Run, BTreeMap<String, Received>) {
        self.0.run(name, content, &[("IMPACT_AUTH_TOKEN", TOKEN)])
    }
}

/// `(sku, quantity, unit price)` of each item in a body, in order.
fn items(body: &str) -> Vec<(String, String, String)> {
    let fields: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    (1..)
        .map_while(|i| {
            fields.get(&format!("ItemQuantity{i}")).map(|q| {
                (
                    fields
                        .get(&format!("ItemSku{i}"))
                        .cloned()
                        .unwrap_or_default(),
                    q.clone(),
                    fields
                        .get(&format!("ItemPrice{i}"))
                        .cloned()
                        .unwrap_or_default(),
                )
            })
        })
        .collect()
}

fn item(sku: &str, q: &str, p: &str) -> (String, String, String) {
    (sku.into(), q.into(), p.into())
}

#[test]
fn shopify_csv_sales_reconcile_with_subtotal_on_both_endpoints() {
    for endpoint in ["partner", "brand"] {
        let e = env("shopify-csv", endpoint, "");
        let cases = shopify_cases();
        let orders: Vec<&Order> = cases.iter().map(|(o, _)| o).collect();
        let (r, received) = e.run("orders_export.csv", &shopify_csv(&orders));
        assert_eq!(
            r.code, 1,
            "{endpoint}: one order does not reconcile:\n{}",
            r.stdout
        );
        for (o, sale) in &cases {
            match sale {
                Some(sale) => {
                    let got = received.get(o.name).unwrap_or_else(|| {
                        panic!("{endpoint}: {} not sent:\n{}", o.name, r.stdout)
                    });
                    assert_eq!(got.endpoint, endpoint);
                    let computed = d(got.sale_amount.as_deref().unwrap());
                    assert_eq!(computed, d(sale), "{endpoint} {}: {}", o.name, got.body);
                    assert!(!got.body.contains("OrderDiscount"), "{}", got.body);
                }
                None => assert!(
                    !received.contains_key(o.name),
                    "{endpoint}: {} must not be sent",
                    o.name
                ),
            }
        }
        // Items: SKU, quantity and unit price as the shop sold them.
        assert_eq!(
            items(&received["#1001"].body),
            vec![item("TOY", "2", "10.00"), item("BALL", "1", "5.50")]
        );
        assert!(received["#1002"].body.contains("&ItemTotalDiscount1=5.00&"));
        assert!(received["#1002"].body.ends_with("&ItemTotalDiscount2=4.00"));
        // A fixed order discount without line discounts is allocated to the cent.
        assert!(received["#1003"].body.contains("&ItemTotalDiscount1=3.00&"));
        assert!(received["#1003"].body.ends_with("&ItemTotalDiscount2=2.00"));
        // A shipping discount never comes off the goods.
        assert!(
            !received["#1004"].body.contains("Discount"),
            "{}",
            received["#1004"].body
        );
        // Several codes: the first is the promo code.
        // (On brand only: the partner endpoint does not define OrderPromoCode.)
        assert_eq!(
            received["#1005"].body.contains("&OrderPromoCode=SAVE10&"),
            endpoint == "brand"
        );
        assert!(!received["#1005"].body.contains("FREESHIP"));
        // The tip is not an item; the gift card is left out of items and amount.
        assert_eq!(
            items(&received["#1006"].body),
            vec![item("BOOK", "1", "25.00")]
        );
        assert_eq!(
            items(&received["#1007"].body),
            vec![item("SCARF", "1", "30.00")]
        );
        assert!(
            received["#1012"].body.ends_with("&ItemTotalDiscount1=5.00"),
            "{}",
            received["#1012"].body
        );
        // Zero-decimal currency: allocated in whole yen.
        assert!(received["#1010"]
            .body
            .ends_with("&ItemPrice1=1500&ItemTotalDiscount1=500"));
        // What was not sent, and why.
        for expected in [
            "OrderId #1006 (line 11) tip line: not an item of the sale",
            "OrderId #1007 (line 13) gift card: left out of the sale amount",
            "OrderId #1008 (line 14) Cancelled at is set",
            "OrderId #1009 (line 15) zero sale",
            "does not match the export's subtotal (20) (lines 18)",
        ] {
            assert!(
                r.stdout.contains(expected),
                "{endpoint}: {expected}\n{}",
                r.stdout
            );
        }
        assert!(
            r.stdout
                .contains("the sale amount impact would compute from these lines (14)"),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn partner_does_not_send_order_discount_and_says_so() {
    // A [mapping] that sends OrderDiscount as well as the line discounts: the partner endpoint
    // does not define it, so it is not sent (said at start-up), and the sale is still right.
    let e = env(
        "shopify-csv",
        "partner",
        "[mapping]\nOrderDiscount = \"Discount Amount\"\n",
    );
    let csv = shopify_csv(&[&Order {
        discount_amount: "5.00",
        ..Order::new(
            "#2001",
            "45.00",
            vec![Line("Mug", "MUG", 1, "50.00", "5.00")],
        )
    }]);
    let (r, received) = e.run("a.csv", &csv);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let got = &received["#2001"];
    assert_eq!(d(got.sale_amount.as_deref().unwrap()), d("45.00"));
    assert!(!got.body.contains("OrderDiscount"), "{}", got.body);
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    assert!(
        r.stderr.contains(
            "impact's partner endpoint ignores OrderDiscount ([mapping] OrderDiscount): it is \
             not sent"
        ),
        "{}",
        r.stderr
    );

    // On brand the same mapping would subtract the discount twice: the order is refused.
    let e = env(
        "shopify-csv",
        "brand",
        "[mapping]\nOrderDiscount = \"Discount Amount\"\n",
    );
    let (r, received) = e.run("a.csv", &csv);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(received.is_empty());
    assert!(
        r.stdout
            .contains("the sale amount impact would compute from these lines (40) does not match the export's subtotal (45)"),
        "{}",
        r.stdout
    );
}

#[test]
fn shopify_bulk_jsonl_sales_reconcile_on_both_endpoints() {
    let order = |id: u32, currency: &str, subtotal: &str, discount: &str, extra: &str| {
        format!(
            "{{\"id\":\"gid://shopify/Order/{id}\",\"name\":\"#{id}\",\"createdAt\":\"2025-06-15T10:30:00Z\",\
             \"currencyCode\":\"{currency}\",\"displayFinancialStatus\":\"PAID\",\"test\":false,\"discountCodes\":[\"SAVE10\",\"FREESHIP\"],\
             \"totalDiscountsSet\":{{\"shopMoney\":{{\"amount\":\"{discount}\"}}}},\
             \"subtotalPriceSet\":{{\"shopMoney\":{{\"amount\":\"{subtotal}\"}}}}{extra}}}"
        )
    };
    let line = |id: u32, parent: u32, sku: &str, qty: u32, price: &str, disc: &str, gift: bool| {
        let (sku, name) = match sku {
            "" => ("null".to_owned(), "Tip".to_owned()),
            s => (format!("\"{s}\""), format!("Item {id}")),
        };
        format!(
            "{{\"id\":\"gid://shopify/LineItem/{id}\",\"sku\":{sku},\"name\":\"{name}\",\"quantity\":{qty},\
             \"isGiftCard\":{gift},\"originalUnitPriceSet\":{{\"shopMoney\":{{\"amount\":\"{price}\"}}}},\
             \"totalDiscountSet\":{{\"shopMoney\":{{\"amount\":\"{disc}\"}}}},\"__parentId\":\"gid://shopify/Order/{parent}\"}}"
        )
    };
    let text = [
        // Line discounts (10 % off the chair) with a free-shipping code: 90.
        order(1, "USD", "90.0", "19.95", ""),
        // A gift card among the goods: 30.
        order(2, "USD", "80.0", "0.0", ""),
        // Paid, then cancelled: not sent.
        order(
            3,
            "USD",
            "12.0",
            "0.0",
            ",\"cancelledAt\":\"2025-06-16T08:00:00Z\"",
        ),
        // No discount, and a tip: 25.
        order(4, "USD", "25.0", "0.0", ""),
        // A 100 % discount exchange: zero sale, not sent.
        order(5, "USD", "0.0", "20.0", ""),
        // Yen, an order discount without line discounts: allocated in whole yen, 4000.
        order(6, "JPY", "4000", "500", ""),
        // A shipping discount only: the goods keep their price, 40.
        order(7, "USD", "40.0", "9.95", ""),
        line(11, 1, "CHAIR", 1, "100.0", "10.0", false),
        line(21, 2, "SCARF", 1, "30.0", "0.0", false),
        line(22, 2, "GC50", 1, "50.0", "0.0", true),
        line(31, 3, "PEN", 1, "12.0", "0.0", false),
        line(41, 4, "BOOK", 1, "25.0", "0.0", false),
        line(42, 4, "", 1, "5.0", "0.0", false),
        line(51, 5, "SHIRT", 1, "20.0", "20.0", false),
        line(61, 6, "CUP", 3, "1500", "0", false),
        line(71, 7, "LAMP", 1, "40.0", "0.0", false),
    ]
    .join("\n");
    for endpoint in ["partner", "brand"] {
        let e = env("shopify-jsonl", endpoint, "");
        let (r, received) = e.run("bulk.jsonl", &text);
        assert_eq!(r.code, 0, "{endpoint}: {}", r.stdout);
        let sales: BTreeMap<&str, Decimal> = received
            .iter()
            .map(|(k, v)| (k.as_str(), d(v.sale_amount.as_deref().unwrap())))
            .collect();
        let expected: BTreeMap<&str, Decimal> = [
            ("#1", d("90")),
            ("#2", d("30")),
            ("#4", d("25")),
            ("#6", d("4000")),
            ("#7", d("40")),
        ]
        .into_iter()
        .collect();
        assert_eq!(sales, expected, "{endpoint}: {}", r.stdout);
        assert_eq!(
            received["#1"].body.contains("&OrderPromoCode=SAVE10&"),
            endpoint == "brand"
        );
        assert_eq!(
            items(&received["#2"].body),
            vec![item("SCARF", "1", "30.0")]
        );
        assert_eq!(items(&received["#4"].body), vec![item("BOOK", "1", "25.0")]);
        assert!(
            received["#6"].body.ends_with("&ItemTotalDiscount1=500"),
            "{}",
            received["#6"].body
        );
        assert!(
            !received["#7"].body.contains("Discount"),
            "{}",
            received["#7"].body
        );
        for reason in [
            "gift card: left out of the sale amount",
            "cancelledAt is set",
            "tip line: not an item of the sale",
            "OrderId #5 (lines 5, 14) zero sale",
        ] {
            assert!(
                r.stdout.contains(reason),
                "{endpoint}: {reason}\n{}",
                r.stdout
            );
        }
    }
}

#[test]
fn woocommerce_sales_on_both_endpoints() {
    let csv = "Order Number,Order Status,Order Date,Order Currency,Coupon Code,SKU,Item Name,Quantity,Item Cost\n\
               701,completed,2025-11-20 10:00,EUR,\"SPRING, FREESHIP\",MUG,Blue mug,2,7.50\n\
               701,completed,2025-11-20 10:00,EUR,\"SPRING, FREESHIP\",TEA,Green tea,1,4.25\n\
               702,cancelled,2025-11-20 11:00,EUR,,PEN,Pen,1,3.00\n\
               703,completed,2025-11-20 12:00,JPY,,CUP,Cup,3,1500\n\
               704,completed,2025-11-20 13:00,EUR,,GC,Gift Card 25,1,25.00\n";
    for endpoint in ["partner", "brand"] {
        let e = env("woocommerce", endpoint, "timezone = \"Europe/Berlin\"");
        let (r, received) = e.run("orders.csv", csv);
        assert_eq!(r.code, 0, "{endpoint}: {}", r.stdout);
        let sales: BTreeMap<&str, Decimal> = received
            .iter()
            .map(|(k, v)| (k.as_str(), d(v.sale_amount.as_deref().unwrap())))
            .collect();
        assert_eq!(
            sales,
            [("701", d("19.25")), ("703", d("4500"))]
                .into_iter()
                .collect(),
            "{endpoint}: {}",
            r.stdout
        );
        assert_eq!(
            received["701"].body.contains("&OrderPromoCode=SPRING&"),
            endpoint == "brand"
        );
        assert!(
            r.stdout.contains("Order Status is \"cancelled\""),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("the whole order is not a sale (gift card"),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn an_export_without_any_amount_column_is_refused_naming_it() {
    // A 10-column Shopify export from 2014: no Lineitem price, no Subtotal.
    let dir = workspace("[source]\nformat = \"shopify-csv\"\n");
    let csv = "Name,Email,Financial Status,Paid at,Fulfillment Status,Currency,Created at,Lineitem quantity,Lineitem name,Lineitem sku\n\
               #1,a@example.com,paid,2014-03-01 10:00:00 +0000,fulfilled,USD,2014-03-01 10:00:00 +0000,1,Mug,MUG\n";
    let r = check_bytes(dir.path(), "orders_export.csv", csv.as_bytes(), &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "the \"shopify-csv\" format needs the column \"Lineitem price\" (ItemPrice) and this file has no such column"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn woocommerce_never_takes_a_bare_name_as_the_product() {
    let dir = workspace("[source]\nformat = \"woocommerce\"\ntimezone = \"Europe/Berlin\"\n");
    let csv = "Order Number,Order Status,Order Date,Order Currency,Name,SKU,Item Name,Quantity,Item Cost\n\
               501,completed,2025-11-20 10:00,EUR,Ana Lima,MUG,Blue mug,2,7.50\n";
    let r = check_bytes(dir.path(), "orders.csv", csv.as_bytes(), &["--show"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let body = bodies(&r.stdout)[0];
    assert!(body.contains("&ItemName1=Blue%20mug&"), "{body}");
    assert!(!body.contains("Ana"), "{body}");
    assert!(
        r.stdout.contains(
            "sale amount impact will compute: 15 (the export states no figure to check it against)"
        ),
        "{}",
        r.stdout
    );
}
