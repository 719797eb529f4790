//! impact's Conversions contract as the sandbox reads it: required fields per endpoint,
//! types, formats, lengths and item rules, checked on a decoded form body.
//!
//! Written from `../shared/docs/impact-api.md` independently of `validate` and `model` (it
//! imports neither), so a bug in one is caught by the other. Pure, so it can be fuzzed.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Brand conversions need at least one of these to attribute the conversion to a partner.
const ATTRIBUTION_KEYS: &[&str] = &[
    "ClickId",
    "CustomerId",
    "CustomProfileId",
    "CustomerEmail",
    "OrderPromoCode",
    "MediaPartnerId",
    "MediaId",
    "UniqueUrl",
    "GoogAId",
    "AppleIfa",
    "AppleIfv",
    "CallerId",
];

/// Order-level fields the API defines (numbered families are in `is_numbered`).
const ORDER_FIELDS: &[&str] = &[
    "CampaignId",
    "ActionTrackerId",
    "EventTypeId",
    "EventTypeCode",
    "MediaPartnerId",
    "MediaId",
    "OrderId",
    "EventDate",
    "CurrencyCode",
    "Amount",
    "OrderSubtotal",
    "OrderDiscount",
    "OrderShipping",
    "OrderTax",
    "OrderPromoCode",
    "ClickId",
    "CustomerId",
    "CustomProfileId",
    "CustomerEmail",
    "CustomerStatus",
    "CustomerCity",
    "CustomerCountry",
    "CustomerPostCode",
    "UniqueUrl",
    "GoogAId",
    "AppleIfa",
    "AppleIfv",
    "CallerId",
    "IpAddress",
    "UserAgent",
    "DeviceMfr",
    "DeviceModel",
    "LocationId",
    "LocationName",
    "Note",
    "SharedId",
    "SubId1",
    "SubId2",
    "SubId3",
    "ConversionType",
    "CardBin",
    "CardLastFour",
    "PayoutAmount",
];

/// Order-level fields the partner endpoint does not define (impact ignores them there, with a
/// warning): `specs/impact-partner-conversions-v16.yaml`.
const NOT_PARTNER: &[&str] = &[
    "EventTypeId",
    "EventTypeCode",
    "OrderSubtotal",
    "OrderDiscount",
    "OrderShipping",
    "OrderTax",
    "OrderPromoCode",
    "ClickId",
    "CustomerId",
    "CustomProfileId",
    "CustomerEmail",
    "UniqueUrl",
    "GoogAId",
    "AppleIfa",
    "AppleIfv",
    "CallerId",
];

/// The sale amount impact computes from a body on `endpoint`, as the specs describe it,
/// with only the fields that endpoint defines: per item the subtotal (or price × quantity,
/// the subtotal winning when both come), less `ItemTotalDiscount` (per line),
/// `ItemDiscount` × quantity (per unit) and `ItemDiscountRate` % of the line; less
/// `OrderDiscount` on the brand endpoint only; `Amount` when there are no items. `None` when
/// a value it needs is not a number. Written independently of `validate` and `money`.
pub fn sale_amount(endpoint: &str, fields: &[(String, String)]) -> Option<rust_decimal::Decimal> {
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let map: HashMap<&str, &str> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let num = |k: &str| -> Option<Option<Decimal>> {
        map.get(k).map(|v| Decimal::from_str(v.trim()).ok())
    };
    let mut indices: Vec<u32> = map
        .keys()
        .filter_map(|k| {
            [
                "ItemSku",
                "ItemPrice",
                "ItemSubTotal",
                "ItemQuantity",
                "ItemName",
            ]
            .iter()
            .find_map(|p| k.strip_prefix(p))
            .and_then(|n| n.parse::<u32>().ok())
        })
        .collect();
    indices.sort_unstable();
    indices.dedup();
    if indices.is_empty() {
        return num("Amount").unwrap_or(Some(Decimal::ZERO));
    }
    let mut total = Decimal::ZERO;
    for n in indices {
        let quantity = num(&format!("ItemQuantity{n}")).unwrap_or(Some(Decimal::ONE))?;
        let line = match num(&format!("ItemSubTotal{n}")) {
            Some(sub) => sub?,
            None => num(&format!("ItemPrice{n}")).unwrap_or(Some(Decimal::ZERO))? * quantity,
        };
        let per_line = num(&format!("ItemTotalDiscount{n}")).unwrap_or(Some(Decimal::ZERO))?;
        let per_unit = num(&format!("ItemDiscount{n}")).unwrap_or(Some(Decimal::ZERO))?;
        let rate = num(&format!("ItemDiscountRate{n}")).unwrap_or(Some(Decimal::ZERO))?;
        total += line - per_line - per_unit * quantity - line * rate / Decimal::ONE_HUNDRED;
    }
    if endpoint == "brand" {
        total -= num("OrderDiscount").unwrap_or(Some(Decimal::ZERO))?;
    }
    Some(total)
}

/// `Text1..50`, `Numeric1..10`, `Money1..3`, `Date1..15`.
fn is_numbered(k: &str) -> bool {
    [("Text", 50), ("Numeric", 10), ("Money", 3), ("Date", 15)]
        .iter()
        .any(|(family, max)| {
            k.strip_prefix(family)
                .filter(|n| !n.starts_with('0'))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| (1..=*max).contains(&n))
        })
}

const INTS: &[&str] = &[
    "CampaignId",
    "ActionTrackerId",
    "MediaPartnerId",
    "MediaId",
    "EventTypeId",
];
const MONEY: &[&str] = &[
    "Amount",
    "OrderSubtotal",
    "OrderDiscount",
    "OrderShipping",
    "OrderTax",
    "PayoutAmount",
    "Money1",
    "Money2",
    "Money3",
];
const ITEM_MONEY: &[&str] = &[
    "ItemPrice",
    "ItemSubTotal",
    "ItemDiscount",
    "ItemTotalDiscount",
];
const ITEM_FIELDS: &[&str] = &[
    "ItemSku",
    "ItemName",
    "ItemCategory",
    "ItemSubCategory",
    "ItemBrand",
    "ItemMpn",
    "ItemQuantity",
    "ItemPrice",
    "ItemSubTotal",
    "ItemDiscount",
    "ItemDiscountRate",
    "ItemTotalDiscount",
    "ItemPromoCode",
    "ItemDeliveryType",
];

fn is_money(v: &str) -> bool {
    let (int, frac) = v.split_once('.').unwrap_or((v, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

/// `(field, message)` pairs.
pub type Findings = Vec<(String, String)>;

/// The contract's checks on a decoded form body: `(errors, warnings)`.
pub fn check(endpoint: &str, fields: &[(String, String)]) -> (Findings, Findings) {
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    let mut err = |f: &str, m: &str| errors.push((f.to_owned(), m.to_owned()));
    let mut map: HashMap<&str, &str> = HashMap::new();
    for (k, v) in fields {
        if map.insert(k.as_str(), v.as_str()).is_some() {
            err(k, "is given more than once");
        }
    }
    let has = |k: &str| map.get(k).is_some_and(|v| !v.is_empty());
    let mut required: Vec<Vec<&str>> = vec![vec!["CampaignId"], vec!["EventDate"], vec!["OrderId"]];
    if endpoint == "partner" {
        required.push(vec!["ActionTrackerId"]);
        required.push(vec!["MediaPartnerId", "MediaId"]);
    } else {
        required.push(vec!["ActionTrackerId", "EventTypeId", "EventTypeCode"]);
        required.push(ATTRIBUTION_KEYS.to_vec());
    }
    for group in &required {
        if !group.iter().any(|k| has(k)) {
            err(
                group[0],
                &format!(
                    "is required{}",
                    if group.len() > 1 {
                        format!(" (or one of {})", group[1..].join(", "))
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
    for k in INTS {
        if let Some(v) = map.get(k) {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                err(k, "must be an integer");
            }
        }
    }
    if let Some(d) = map.get("EventDate") {
        if *d != "NOW" && chrono::DateTime::parse_from_rfc3339(d).is_err() {
            err(
                "EventDate",
                "must be ISO 8601 with an offset (2023-02-15T22:55:32-08:00) or NOW",
            );
        }
    }
    for (k, max) in [("OrderId", 64), ("ClickId", 64), ("CustomProfileId", 70)] {
        if map.get(k).is_some_and(|v| v.chars().count() > max) {
            err(k, &format!("is longer than {max} characters"));
        }
    }
    let mut any_money = false;
    let mut items: BTreeMap<u32, HashSet<&str>> = BTreeMap::new();
    for (k, v) in &map {
        if endpoint == "partner" && NOT_PARTNER.contains(k) {
            warnings.push((
                (*k).to_owned(),
                "is not a field of the partner endpoint: ignored".to_owned(),
            ));
            continue;
        }
        if MONEY.contains(k) {
            any_money = true;
            if !is_money(v) {
                err(k, "must be a non-negative decimal with a . separator");
            }
            continue;
        }
        if let Some(field) = ITEM_FIELDS
            .iter()
            .filter(|f| k.starts_with(*f))
            .max_by_key(|f| f.len())
        {
            let index = &k[field.len()..];
            match index.parse::<u32>() {
                Ok(n) if n >= 1 && !index.starts_with('0') => {
                    items.entry(n).or_default().insert(field);
                    if ITEM_MONEY.contains(field) {
                        any_money = true;
                        if !is_money(v) {
                            err(k, "must be a non-negative decimal with a . separator");
                        }
                    }
                    if *field == "ItemQuantity"
                        && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
                    {
                        err(k, "must be an integer");
                    }
                }
                _ => err(
                    k,
                    "item fields need an index from 1 (ItemSku1, ItemSku2, …)",
                ),
            }
            continue;
        }
        let known = ORDER_FIELDS.contains(k) || is_numbered(k);
        if !known {
            warnings.push(((*k).to_owned(), "unknown field, ignored".to_owned()));
        } else if map.get(k).is_some_and(|v| v.chars().count() > 255) {
            err(k, "is longer than 255 characters");
        }
    }
    if let Some(c) = map.get("CurrencyCode") {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            err("CurrencyCode", "must be a three-letter ISO 4217 code");
        }
    } else if any_money && endpoint == "brand" {
        err("CurrencyCode", "is required with money fields");
    }
    if let Some((&last, _)) = items.iter().next_back() {
        if last as usize != items.len() {
            err("ItemSku1", "item indices must run 1..N without gaps");
        }
        if has("Amount") {
            err("Amount", "must not be sent together with item fields");
        }
    }
    for (n, f) in &items {
        if f.contains("ItemPrice") && f.contains("ItemSubTotal") {
            err(
                &format!("ItemPrice{n}"),
                "must not be sent together with ItemSubTotal",
            );
        }
        if f.contains("ItemPrice") && !f.contains("ItemQuantity") {
            err(&format!("ItemQuantity{n}"), "is required with ItemPrice");
        }
        if !f.contains("ItemPrice") && !f.contains("ItemSubTotal") {
            err(
                &format!("ItemSubTotal{n}"),
                "an item needs ItemSubTotal, or ItemPrice and ItemQuantity",
            );
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    const SEED: &str = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=TOYS-1001&EventDate=2023-02-15T22:55:32-08:00&CurrencyCode=USD&ItemSku1=TOYSET&ItemQuantity1=2&ItemPrice1=40.00&ItemSku2=DOLL&ItemQuantity2=1&ItemPrice2=6.99";

    #[test]
    fn the_seed_body_passes() {
        let (e, w) = check("partner", &fields(SEED));
        assert!(e.is_empty(), "{e:?}");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn contract_violations_are_named() {
        for (body, field) in [
            ("ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=2023-02-15T22:55:32Z", "CampaignId"),
            ("CampaignId=x&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=2023-02-15T22:55:32Z", "CampaignId"),
            ("CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=2023-02-15 22:55:32", "EventDate"),
            ("CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=NOW&Amount=-1", "Amount"),
            ("CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=NOW&Amount=1&ItemSku1=X&ItemSubTotal1=1", "Amount"),
            ("CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=NOW&ItemSku2=X&ItemSubTotal2=1", "ItemSku1"),
            ("CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=NOW&ItemSku1=X&ItemPrice1=1", "ItemQuantity1"),
            ("CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=NOW&CurrencyCode=usd", "CurrencyCode"),
        ] {
            let (e, _) = check("partner", &fields(body));
            assert!(e.iter().any(|(f, _)| f == field), "{body}: {e:?}");
        }
        let (e, _) = check(
            "brand",
            &fields("CampaignId=1&EventTypeCode=SALE&OrderId=A&EventDate=NOW"),
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "ClickId");
    }
}
