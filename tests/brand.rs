//! Each endpoint gets the fields its published spec defines, through the real binary and the
//! sandbox: brand `CustomerEmail` leaves only as a SHA-256 (the address is nowhere in the body,
//! the ledger or the logs), each brand attribution key works alone, every newly mappable brand
//! field arrives as the spec types it, `Date11` is not sent to brand, and fields the partner
//! endpoint does not define are reported and not sent. The sandbox's answers are checked over
//! HTTP against the spec's cases.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use impact_drop::impact::sandbox::Received;

const SID: &str = "IRBRAND00000000000000000001";
const TOKEN: &str = "brand-token-7c21";

struct Env(SandboxDir);

/// A workspace for `endpoint` with `[defaults]` and `[mapping]` as given (no MediaPartnerId
/// default: brand bodies carry only the keys a test gives them).
fn env(endpoint: &str, defaults: &str, mapping: &str) -> Env {
    Env(SandboxDir::new(SID, TOKEN, |base_url| {
        format!(
            "[source]\ndrop_dir = \"drop\"\nformat = \"impact\"\n\
             [impact]\nendpoint = \"{endpoint}\"\nbase_url = \"{base_url}\"\n\
             account_sid = \"{SID}\"\nrequests_per_hour = 0\n[follow_up]\nrun_wait_secs = 0\n[ledger]\npath = \"ledger.sqlite\"\n\
             [defaults]\nCampaignId = 1000\nCurrencyCode = \"USD\"\n{defaults}\n\
             [mapping]\n{mapping}\n"
        )
    }))
}

impl Env {
    fn run(&self, name: &str, content: &str) -> (Run, BTreeMap<String, Received>) {
        let env = [("IMPACT_AUTH_TOKEN", TOKEN), ("RUST_LOG", "trace")];
        self.0.run(name, content, &env)
    }

    fn check(&self, name: &str) -> Run {
        let path = self.0.dir.path().join("drop").join(name);
        run_in(self.0.dir.path(), &["check", path.to_str().unwrap()], &[])
    }
}

fn fields(body: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

/// Every byte of the ledger (database, WAL, journal) as text, lossily.
fn ledger_bytes(dir: &Path) -> String {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ledger.sqlite"))
        {
            all.extend(std::fs::read(&p).unwrap());
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn brand_email_leaves_only_as_its_sha256() {
    let e = env("brand", "EventTypeCode = \"SALE\"", "");
    let csv = "OrderId,EventDate,ClickId,CustomerEmail,ItemSku,ItemQuantity,ItemPrice\n\
               E-1,2025-03-01T10:00:00Z,clk-1,  Jane.Roe@Example.COM ,SKU1,2,10.00\n\
               E-2,2025-03-01T10:00:00Z,clk-2,4db6c86b5d02c22ab6c5e1b1a0b82a7b5d4ef068,SKU2,1,5.50\n\
               E-3,2025-03-01T10:00:00Z,,only.email@example.com,SKU3,1,1.00\n";
    let (r, got) = e.run("orders.csv", csv);
    assert_eq!(r.code, 1, "E-3 has no attribution key: {}", r.stderr);
    // SHA-256 of "jane.roe@example.com" (Python's hashlib).
    let digest = "22fff12b355cb9cb6303835fe8227cbb155ee22d300caccba72b326d1a6fb98a";
    let e1 = fields(&got["E-1"].body);
    assert_eq!(e1["CustomerEmail"], digest);
    assert_eq!(got["E-1"].sale_amount.as_deref(), Some("20"));
    assert!(got["E-1"].warnings.is_empty(), "{:?}", got["E-1"].warnings);
    assert_eq!(
        fields(&got["E-2"].body)["CustomerEmail"],
        "4db6c86b5d02c22ab6c5e1b1a0b82a7b5d4ef068"
    );
    assert_eq!(got["E-2"].sale_amount.as_deref(), Some("5.5"));
    assert!(!got.contains_key("E-3"));
    let status = run_in(e.0.dir.path(), &["status", "--json"], &[]);
    for (what, text) in [
        (
            "bodies",
            got.values()
                .map(|r| r.body.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("stdout", r.stdout.clone()),
        ("stderr (trace)", r.stderr.clone()),
        ("status", status.stdout.clone()),
        ("ledger", ledger_bytes(e.0.dir.path())),
    ] {
        for plain in ["jane.roe", "Jane.Roe", "only.email", "Example.COM"] {
            assert!(!text.contains(plain), "{plain} found in the {what}");
        }
    }
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("orders.csv:4: ClickId: is missing") && said.contains("CustomClickId"),
        "E-3 is refused naming the attribution keys: {}",
        r.stdout
    );
}

#[test]
fn each_brand_attribution_key_works_alone() {
    let keys = [
        ("ClickId", "clk"),
        ("CustomerId", "cust-9"),
        ("CustomProfileId", "prof-9"),
        ("CustomClickId", "cc-9"),
        ("PromoCode", "SAVE10"),
        ("MediaId", "4000"),
        ("MediaPartnerId", "4000"),
        ("UniqueUrl", "https://partner.example/p/9"),
        ("CallerId", "8051234567"),
        ("GoogAId", "38400000-8cf0-11bd-b23e-10b96e40000d"),
        ("AndroidId", "a1b2c3d4"),
        ("AppleIfa", "38400000-8cf0-11bd-b23e-10b96e40000e"),
        ("AppleIfv", "38400000-8cf0-11bd-b23e-10b96e40000f"),
    ];
    let e = env("brand", "ActionTrackerId = 2000", "");
    let header: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    let mut csv = format!(
        "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice,{}\n",
        header.join(",")
    );
    for (i, (_, value)) in keys.iter().enumerate() {
        let cells: Vec<&str> = (0..keys.len())
            .map(|j| if i == j { *value } else { "" })
            .collect();
        csv.push_str(&format!(
            "K-{i},2025-03-01T10:00:00Z,S,1,3.00,{}\n",
            cells.join(",")
        ));
    }
    let (r, got) = e.run("keys.csv", &csv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(got.len(), keys.len());
    for (i, (key, value)) in keys.iter().enumerate() {
        let rec = &got[&format!("K-{i}")];
        let f = fields(&rec.body);
        assert_eq!(
            f.get(*key).map(String::as_str),
            Some(*value),
            "{}",
            rec.body
        );
        let others: Vec<&&str> = header
            .iter()
            .filter(|k| *k != key && f.contains_key(**k))
            .collect();
        assert!(others.is_empty(), "{key}: {others:?}");
        assert!(rec.warnings.is_empty(), "{key}: {:?}", rec.warnings);
        assert_eq!(rec.sale_amount.as_deref(), Some("3"));
    }
}

#[test]
fn every_newly_mappable_brand_field_arrives_typed() {
    let mapping = "ItemText_1 = \"Colour\"\nItemText_50 = \"Size\"\nItemNumeric_1 = \"Weight\"\n\
                   ItemDate_1 = \"Shipped\"\nItemMoney_3 = \"Cost\"\nGiftPurchase = \"Gift\"\n\
                   TrackingConsent = \"Consent\"\n";
    let e = env(
        "brand",
        "EventTypeCode = \"SALE\"\nClickId = \"clk\"",
        mapping,
    );
    let order_level = [
        ("DispositionCode", "DEFAULT", "DEFAULT"),
        ("CustomerRegion", "AMER", "AMER"),
        ("PhoneNumber", "8051234567", "8051234567"),
        ("CountryCode", "us", "US"),
        ("OrderMargin", "30.00", "30.00"),
        ("OrderDiscountRate", "12.5", "12.5"),
        ("PaymentType", "CREDIT_CARD", "CREDIT_CARD"),
        ("LocationType", "HOTEL", "HOTEL"),
        ("PropertyId", "12345", "12345"),
        ("AppPackage", "com.acme.app", "com.acme.app"),
        ("AppInstallRef", "ref-1", "ref-1"),
        ("AppVer", "1.2.3", "1.2.3"),
    ];
    let names: Vec<&str> = order_level.iter().map(|f| f.0).collect();
    let values: Vec<&str> = order_level.iter().map(|f| f.1).collect();
    let csv = format!(
        "OrderId,EventDate,ItemSku,ItemQuantity,ItemPrice,Colour,Size,Weight,Shipped,Cost,Gift,Consent,{}\n\
         N-1,2025-03-01T10:00:00Z,A,2,10.00,Blue,XL,1.25,2025-03-02 09:00:00 +0100,4.5,yes,0,{}\n\
         N-1,2025-03-01T10:00:00Z,B,1,5.00,Red,S,-0.5,2025-03-03T09:00:00Z,0.10,yes,0,{}\n",
        names.join(","),
        values.join(","),
        values.join(",")
    );
    // An order without items takes OrderSubTotalPostDiscount.
    let (r, got) = e.run("fields.csv", &csv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = &got["N-1"];
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
    assert_eq!(rec.sale_amount.as_deref(), Some("25"));
    let f = fields(&rec.body);
    for (name, _, sent) in order_level {
        assert_eq!(
            f.get(name).map(String::as_str),
            Some(sent),
            "{name}: {}",
            rec.body
        );
    }
    for (k, v) in [
        ("GiftPurchase", "true"),
        ("TrackingConsent", "false"),
        ("ItemText1_1", "Blue"),
        ("ItemText1_50", "XL"),
        ("ItemText2_1", "Red"),
        ("ItemNumeric1_1", "1.25"),
        ("ItemNumeric2_1", "-0.5"),
        ("ItemDate1_1", "2025-03-02T09:00:00+01:00"),
        ("ItemDate2_1", "2025-03-03T09:00:00+00:00"),
        ("ItemMoney1_3", "4.5"),
        ("ItemMoney2_3", "0.10"),
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{k}: {}", rec.body);
    }

    let e = env("brand", "EventTypeCode = \"SALE\"\nClickId = \"clk\"", "");
    let (r, got) = e.run(
        "order-level.csv",
        "OrderId,EventDate,Amount,OrderSubTotalPostDiscount\nO-1,2025-03-01T10:00:00Z,95.00,95.00\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        fields(&got["O-1"].body)["OrderSubTotalPostDiscount"],
        "95.00"
    );
    assert!(got["O-1"].warnings.is_empty(), "{:?}", got["O-1"].warnings);
}

#[test]
fn date11_is_not_sent_to_brand_and_partner_only_fields_are_reported() {
    let csv = "OrderId,EventDate,ClickId,Date10,Date11,ItemSku,ItemQuantity,ItemPrice\n\
               D-1,2025-03-01T10:00:00Z,clk,2025-03-05T00:00:00Z,2025-03-06T00:00:00Z,S,1,2.00\n";
    let e = env("brand", "EventTypeCode = \"SALE\"", "");
    let check = {
        std::fs::write(e.0.dir.path().join("drop").join("dates.csv"), csv).unwrap();
        e.check("dates.csv")
    };
    assert!(
        check
            .stdout
            .contains("impact's brand endpoint ignores Date11 (from column \"Date11\"): not sent"),
        "{}",
        check.stdout
    );
    let (r, got) = e.run("dates.csv", csv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = fields(&got["D-1"].body);
    assert!(
        f.contains_key("Date10") && !f.contains_key("Date11"),
        "{}",
        got["D-1"].body
    );
    assert!(got["D-1"].warnings.is_empty());

    // Partner: brand-only columns and defaults are said at start-up and by check, not sent.
    let e = env(
        "partner",
        "ActionTrackerId = 2000\nMediaPartnerId = 3000\nOrderPromoCode = \"SPRING\"",
        "CustomerId = \"Customer\"",
    );
    let csv = "OrderId,EventDate,Customer,ClickId,Date11,ItemSku,ItemQuantity,ItemPrice\n\
               P-1,2025-03-01T10:00:00Z,cust-1,clk,2025-03-06T00:00:00Z,S,1,2.00\n";
    std::fs::write(e.0.dir.path().join("drop").join("p.csv"), csv).unwrap();
    let check = e.check("p.csv");
    for said in [
        "impact's partner endpoint ignores CustomerId (from column \"Customer\"): not sent",
        "impact's partner endpoint ignores ClickId (from column \"ClickId\"): not sent",
        "impact's partner endpoint ignores OrderPromoCode (from [defaults]): not sent",
    ] {
        assert!(check.stdout.contains(said), "{said}: {}", check.stdout);
    }
    let (r, got) = e.run("p.csv", csv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "impact's partner endpoint ignores CustomerId ([mapping] CustomerId): it is not sent"
        ),
        "{}",
        r.stderr
    );
    let f = fields(&got["P-1"].body);
    for absent in ["CustomerId", "ClickId", "OrderPromoCode"] {
        assert!(!f.contains_key(absent), "{absent}: {}", got["P-1"].body);
    }
    assert!(f.contains_key("Date11"));
    assert!(got["P-1"].warnings.is_empty(), "{:?}", got["P-1"].warnings);
    assert_eq!(got["P-1"].sale_amount.as_deref(), Some("2"));
}

#[test]
fn the_sandbox_answers_as_the_specs_say() {
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let base = sandbox.base_url();
    let partner =
        "CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=2023-02-15T22:55:32Z";
    let brand = "CampaignId=1&EventTypeCode=SALE&OrderId=B&EventDate=2023-02-15T22:55:32Z";
    let digest = "4db6c86b5d02c22ab6c5e1b1a0b82a7b5d4ef068";
    // (endpoint, body, status, the field named in errors or warnings)
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        (
            "partner",
            format!("{partner}&PayoutAmount=-1.00"),
            200,
            Some("PayoutAmount"),
        ),
        (
            "partner",
            format!("{partner}&ItemSku1=X&ItemPrice1=1.00&ItemQuantity1=1&ItemSubTotal1=2.00"),
            200,
            Some("ItemPrice1"),
        ),
        (
            "partner",
            format!("{partner}&CustomerId=9"),
            200,
            Some("CustomerId"),
        ),
        (
            "partner",
            format!("{partner}&Date1=notadate"),
            400,
            Some("Date1"),
        ),
        (
            "partner",
            format!("{partner}&Date1=2023-02-15T22:55:32"),
            400,
            Some("Date1"),
        ),
        (
            "partner",
            format!("{partner}&Numeric1=abc"),
            400,
            Some("Numeric1"),
        ),
        (
            "partner",
            format!("{partner}&ItemSku1=X&ItemSubTotal1=2.00&ItemDiscountRate1=abc"),
            400,
            Some("ItemDiscountRate1"),
        ),
        (
            "partner",
            format!("{partner}&Money1=1.234"),
            400,
            Some("Money1"),
        ),
        ("brand", format!("{brand}&PromoCode=SAVE"), 200, None),
        ("brand", format!("{brand}&CustomClickId=cc"), 200, None),
        ("brand", format!("{brand}&AndroidId=a1"), 200, None),
        (
            "brand",
            format!("{brand}&ClickId=c&GiftPurchase=maybe"),
            400,
            Some("GiftPurchase"),
        ),
        (
            "brand",
            format!("{brand}&MediaId=1&MediaPartnerId=1"),
            400,
            Some("MediaId"),
        ),
        (
            "brand",
            format!("{brand}&ClickId=c&CustomerEmail=jane%40example.com"),
            400,
            Some("CustomerEmail"),
        ),
        (
            "brand",
            format!("{brand}&CustomerEmail={digest}"),
            400,
            Some("ClickId"),
        ),
        (
            "brand",
            format!("{brand}&ClickId=c&CustomerEmail={digest}"),
            200,
            None,
        ),
        (
            "brand",
            format!("{brand}&ClickId=c&Date11=2023-02-15T22:55:32Z"),
            200,
            Some("Date11"),
        ),
        (
            "brand",
            format!("{brand}&ClickId=c&Text1={}", "x".repeat(65)),
            400,
            Some("Text1"),
        ),
    ];
    rt.block_on(async {
        let client = reqwest::Client::new();
        for (endpoint, body, status, field) in cases {
            let path = if endpoint == "partner" {
                format!("/Mediapartners/{SID}/PartnerConversions")
            } else {
                format!("/Advertisers/{SID}/Conversions")
            };
            let r = client
                .post(format!("{base}{path}"))
                .basic_auth(SID, Some(TOKEN))
                .header("Accept", "application/json")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status, "{endpoint} {body}");
            let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            let list = if status == 200 {
                &v["warnings"]
            } else {
                &v["errors"]
            };
            let named: Vec<&str> = list
                .as_array()
                .map(|a| a.iter().filter_map(|w| w["field"].as_str()).collect())
                .unwrap_or_default();
            match field {
                Some(f) => assert!(named.contains(&f), "{endpoint} {body}: {v}"),
                None => assert!(named.is_empty(), "{endpoint} {body}: {v}"),
            }
        }
    });
}
