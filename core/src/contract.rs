//! impact's Conversions contract as the sandbox reads it, from the published OpenAPI documents
//! themselves (`core/specs/`, copied unchanged from impact's partner v16 and brand v14 specs):
//! every field each endpoint defines, its type, format and length, plus the rules the specs
//! state in prose (required one-of groups, `MediaId` or `MediaPartnerId` but not both on
//! brand, hashed `CustomerEmail`, values "ignored with a warning").
//!
//! Written independently of `validate` and `model` (it imports neither), so a bug in one is
//! caught by the other. Pure, so it can be fuzzed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use rust_decimal::Decimal;
use yaml_rust2::YamlLoader;

/// The partner endpoint's published OpenAPI document.
pub const PARTNER_SPEC: &str = include_str!("../specs/impact-partner-conversions-v16.yaml");
/// The brand endpoint's published OpenAPI document.
pub const BRAND_SPEC: &str = include_str!("../specs/impact-brand-conversions-v14.yaml");

/// A field's type as its spec declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Integer,
    /// `type: number, format: decimal`.
    Decimal,
    Boolean,
    /// `format: date-time`, or the partner's `EventDate` (ISO 8601 or `NOW`).
    DateTime,
    /// `format: uri`.
    Uri,
    String,
}

/// One field of an endpoint, with item families named `ItemText_1` (sent `ItemText{i}_1`)
/// and item fields named without their index (`ItemSku`, sent `ItemSku{i}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecField {
    pub name: String,
    pub item: bool,
    pub ty: Type,
    /// The spec's `maxLength`, when it states one.
    pub max_length: Option<usize>,
}

/// What one endpoint's spec defines.
#[derive(Debug)]
pub struct Spec {
    pub fields: Vec<SpecField>,
    /// Groups of which a body needs at least one field each.
    pub required: Vec<Vec<String>>,
    by_name: HashMap<String, usize>,
}

impl Spec {
    pub fn field(&self, name: &str) -> Option<&SpecField> {
        self.by_name.get(name).map(|&i| &self.fields[i])
    }
}

/// The spec of `endpoint` (`partner` or `brand`), read from its OpenAPI document once.
pub fn spec(endpoint: &str) -> &'static Spec {
    static PARTNER: OnceLock<Spec> = OnceLock::new();
    static BRAND: OnceLock<Spec> = OnceLock::new();
    if endpoint == "brand" {
        BRAND.get_or_init(|| read_spec(BRAND_SPEC, "brand").expect("the bundled brand spec"))
    } else {
        PARTNER
            .get_or_init(|| read_spec(PARTNER_SPEC, "partner").expect("the bundled partner spec"))
    }
}

/// Reads an OpenAPI document's `ConversionPayload`: its properties with template names
/// expanded (`Text1-Text50`, `Text1–Text50`, `ItemSku[i]`, `ItemText[i]_1 to ItemText[i]_50`),
/// the `required` list and the description's "One of `A`, `B` … is required" groups.
pub fn read_spec(text: &str, endpoint: &str) -> Result<Spec, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let doc = docs.first().ok_or("empty document")?;
    let schemas = &doc["components"]["schemas"];
    let payload = &schemas["ConversionPayload"];
    let Some(props) = payload["properties"].as_hash() else {
        return Err("no ConversionPayload properties".into());
    };
    let mut fields = Vec::new();
    for (key, schema) in props {
        let Some(name) = key.as_str() else { continue };
        // A `$ref` names a schema of the same document (the partner's `ConversionType`).
        let schema = match schema["$ref"].as_str() {
            Some(r) => &schemas[r.rsplit('/').next().unwrap_or_default()],
            None => schema,
        };
        let format = schema["format"].as_str().unwrap_or_default();
        let ty = match (schema["type"].as_str().unwrap_or_default(), format) {
            ("integer", _) => Type::Integer,
            ("number", _) => Type::Decimal,
            ("boolean", _) => Type::Boolean,
            (_, "date-time") => Type::DateTime,
            (_, "uri") => Type::Uri,
            _ if name == "EventDate" => Type::DateTime,
            _ => Type::String,
        };
        let max_length = schema["maxLength"].as_i64().map(|n| n as usize);
        for (name, item) in expand(name) {
            fields.push(SpecField {
                name,
                item,
                ty,
                max_length,
            });
        }
    }
    let listed: Vec<String> = payload["required"]
        .as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|y| y.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut required: Vec<Vec<String>> = Vec::new();
    if endpoint == "partner" {
        // The list names both aliases; the text says one of the two.
        let alias = ["MediaId", "MediaPartnerId"];
        required.extend(
            listed
                .iter()
                .filter(|n| !alias.contains(&n.as_str()))
                .map(|n| vec![n.clone()]),
        );
        required.push(alias.iter().map(|s| (*s).to_owned()).collect());
    } else {
        required.extend(listed.iter().map(|n| vec![n.clone()]));
    }
    let description = doc["paths"]
        .as_hash()
        .and_then(|paths| paths.values().next())
        .map(|p| p["post"]["description"].as_str().unwrap_or_default())
        .unwrap_or_default();
    for sentence in description.lines() {
        let Some(rest) = sentence
            .trim()
            .trim_start_matches("- ")
            .strip_prefix("One of ")
        else {
            continue;
        };
        if !rest.contains("is required") {
            continue;
        }
        let group: Vec<String> = rest
            .split('`')
            .skip(1)
            .step_by(2)
            .flat_map(|n| n.split('/'))
            .map(str::to_owned)
            .collect();
        // A field named only here (brand's ActionTrackerId, CustomClickId, …) is defined too.
        for n in &group {
            if !fields.iter().any(|f| &f.name == n) {
                fields.push(SpecField {
                    name: n.clone(),
                    item: false,
                    ty: if n.ends_with("TrackerId") {
                        Type::Integer
                    } else {
                        Type::String
                    },
                    max_length: None,
                });
            }
        }
        required.push(group);
    }
    let by_name = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .collect();
    Ok(Spec {
        fields,
        required,
        by_name,
    })
}

/// A property name as the specs write it → field names, each with "is an item field".
fn expand(name: &str) -> Vec<(String, bool)> {
    let range = |a: &str, b: &str| -> Option<(String, u32, u32)> {
        let split = |s: &str| {
            let digits = s.len() - s.bytes().rev().take_while(u8::is_ascii_digit).count();
            (s[..digits].to_owned(), s[digits..].parse::<u32>().ok())
        };
        let ((pa, na), (pb, nb)) = (split(a.trim()), split(b.trim()));
        (pa == pb).then_some((pa, na?, nb?))
    };
    if let Some((a, b)) = name.split_once(" to ") {
        // `ItemText[i]_1 to ItemText[i]_50`.
        if let Some((prefix, from, to)) = range(&a.replace("[i]", ""), &b.replace("[i]", "")) {
            return (from..=to)
                .map(|n| (format!("{prefix}{n}"), true))
                .collect();
        }
    }
    if let Some((a, b)) = name.split_once(['–', '-']) {
        if let Some((prefix, from, to)) = range(a, b) {
            return (from..=to)
                .map(|n| (format!("{prefix}{n}"), false))
                .collect();
        }
    }
    match name.strip_suffix("[i]") {
        Some(item) => vec![(item.to_owned(), true)],
        None => vec![(name.to_owned(), false)],
    }
}

/// The field a body key names on `spec` (`ItemSku3` → `ItemSku` and item 3; `ItemText2_5` →
/// `ItemText_5` and item 2), or `None` when the endpoint does not define it.
fn resolve<'a>(spec: &'a Spec, key: &str) -> Option<(&'a SpecField, Option<u32>)> {
    if let Some(f) = spec.field(key).filter(|f| !f.item) {
        return Some((f, None));
    }
    let (head, sub) = match key.split_once('_') {
        Some((h, s)) => (h, Some(s)),
        None => (key, None),
    };
    let digits = head.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (prefix, index) = head.split_at(head.len() - digits);
    if index.is_empty() || index.starts_with('0') {
        return None;
    }
    let name = match sub {
        Some(s) => format!("{prefix}_{s}"),
        None => prefix.to_owned(),
    };
    let field = spec.field(&name).filter(|f| f.item)?;
    Some((field, index.parse().ok()))
}

/// Number fields that are money (never negative, two decimals): all but `Numeric*` and
/// discount rates.
fn is_money(name: &str) -> bool {
    !name.contains("Numeric") && !name.contains("Rate")
}

/// A decimal as impact reads it: optional `-`, digits, optional `.` and digits.
fn decimal(v: &str) -> Option<(bool, &str, &str)> {
    let (negative, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = !int.is_empty() && digits(int) && digits(frac) && !(body.ends_with('.'));
    ok.then_some((negative, int, frac))
}

fn is_hex_digest(v: &str) -> bool {
    (v.len() == 40 || v.len() == 64) && v.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Default lengths where the specs state none (`impact-api.md`).
fn default_length(name: &str) -> usize {
    match name {
        "OrderId" | "ClickId" => 64,
        "CustomProfileId" => 70,
        _ => 255,
    }
}

/// `(field, message)` pairs.
pub type Findings = Vec<(String, String)>;

/// The contract's checks on a decoded form body: `(errors, warnings)`. Warnings are what
/// impact "ignores with a warning": fields the endpoint does not define, invalid optional
/// values the spec says are ignored, `Amount` or `ItemPrice` overridden by item data.
pub fn check(endpoint: &str, fields: &[(String, String)]) -> (Findings, Findings) {
    let spec = spec(endpoint);
    let mut errors: Findings = Vec::new();
    let mut warnings: Findings = Vec::new();
    let mut err = |f: &str, m: String| errors.push((f.to_owned(), m));
    let mut warn = |f: &str, m: &str| warnings.push((f.to_owned(), m.to_owned()));
    let mut map: HashMap<&str, &str> = HashMap::new();
    for (k, v) in fields {
        if map.insert(k.as_str(), v.as_str()).is_some() {
            err(k, "is given more than once".into());
        }
    }
    let has = |k: &str| map.get(k).is_some_and(|v| !v.is_empty());
    for group in &spec.required {
        if !group.iter().any(|k| has(k)) {
            let others = if group.len() > 1 {
                format!(" (or one of {})", group[1..].join(", "))
            } else {
                String::new()
            };
            err(&group[0], format!("is required{others}"));
        }
    }
    if endpoint == "brand" && has("MediaId") && has("MediaPartnerId") {
        err(
            "MediaId",
            "provide either MediaId or MediaPartnerId, not both".into(),
        );
    }
    let mut any_money = false;
    let mut items: BTreeMap<u32, HashSet<&str>> = BTreeMap::new();
    let mut keys: Vec<&&str> = map.keys().collect();
    keys.sort();
    for k in keys {
        let v = map[*k];
        let Some((field, index)) = resolve(spec, k) else {
            warn(
                k,
                &format!("is not a field of the {endpoint} endpoint: ignored"),
            );
            continue;
        };
        if let Some(n) = index {
            items.entry(n).or_default().insert(field.name.as_str());
        }
        let name = field.name.as_str();
        match field.ty {
            Type::Integer => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    err(k, "must be an integer".into());
                }
            }
            Type::Decimal => match decimal(v) {
                None => err(k, "must be a decimal number with a . separator".into()),
                Some((negative, _, _)) if negative && name == "PayoutAmount" => {
                    warn(k, "is negative: ignored");
                }
                Some((negative, int, frac)) if is_money(name) => {
                    any_money = true;
                    let nonzero = int.bytes().chain(frac.bytes()).any(|b| b != b'0');
                    if negative && nonzero {
                        err(k, "must not be negative".into());
                    } else if frac.len() > 2 || int.len() > 16 {
                        err(k, "must fit decimal(18,2): at most two decimals".into());
                    }
                }
                Some(_) => {}
            },
            Type::Boolean => {
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                    err(k, "must be true or false".into());
                }
            }
            Type::DateTime => {
                let now = endpoint == "partner" && name == "EventDate" && v == "NOW";
                if !now && chrono::DateTime::parse_from_rfc3339(v).is_err() {
                    err(
                        k,
                        "must be an ISO 8601 date-time with an offset (2023-02-15T22:55:32-08:00)"
                            .into(),
                    );
                }
            }
            Type::Uri => {
                let ok = v.split_once("://").is_some_and(|(s, rest)| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                        && !rest.is_empty()
                }) && !v.contains(char::is_whitespace);
                if !ok {
                    err(k, "must be an absolute URI".into());
                }
            }
            Type::String => {
                let max = field.max_length.unwrap_or_else(|| default_length(name));
                if v.chars().count() > max {
                    err(k, format!("is longer than {max} characters"));
                }
                match name {
                    "CurrencyCode"
                        if v.len() != 3 || !v.bytes().all(|b| b.is_ascii_uppercase()) =>
                    {
                        err(k, "must be a three-letter ISO 4217 code".into())
                    }
                    "CountryCode"
                        if v.len() != 2 || !v.bytes().all(|b| b.is_ascii_alphabetic()) =>
                    {
                        err(k, "must be an ISO 3166-1 alpha-2 code".into())
                    }
                    "CustomerEmail" if !is_hex_digest(v) => err(
                        k,
                        "must be sent as a SHA1 or SHA256 hash: plaintext emails are not accepted"
                            .into(),
                    ),
                    "CardBin"
                        if !(v.len() == 6 || v.len() == 8)
                            || !v.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        warn(k, "must be exactly 6 or 8 digits: ignored")
                    }
                    "CardLastFour" if v.len() != 4 || !v.bytes().all(|b| b.is_ascii_digit()) => {
                        warn(k, "must be exactly 4 digits: ignored")
                    }
                    "ConversionType" if !v.is_empty() && !v.eq_ignore_ascii_case("CLO") => {
                        warn(k, "is not CLO: defaulted to partner")
                    }
                    _ => {}
                }
            }
        }
    }
    if !map.contains_key("CurrencyCode") && any_money && endpoint == "brand" {
        err("CurrencyCode", "is required with money fields".into());
    }
    if let Some((&last, _)) = items.iter().next_back() {
        if last as usize != items.len() {
            err("ItemSku1", "item indices must run 1..N without gaps".into());
        }
        if has("Amount") {
            warn("Amount", "item fields are present: Amount is not used");
        }
        if has("OrderSubTotalPostDiscount") {
            warn(
                "OrderSubTotalPostDiscount",
                "is for conversions without items: not used",
            );
        }
    }
    for (n, f) in &items {
        if f.contains("ItemPrice") && f.contains("ItemSubTotal") {
            warn(
                &format!("ItemPrice{n}"),
                "ItemSubTotal is also given: the subtotal is used",
            );
        } else if f.contains("ItemPrice") && !f.contains("ItemQuantity") {
            err(
                &format!("ItemQuantity{n}"),
                "is required with ItemPrice".into(),
            );
        } else if !f.contains("ItemPrice") && !f.contains("ItemSubTotal") {
            err(
                &format!("ItemSubTotal{n}"),
                "an item needs ItemSubTotal, or ItemPrice and ItemQuantity".into(),
            );
        }
    }
    (errors, warnings)
}

/// The sale amount impact computes from a body on `endpoint`, as the specs describe it,
/// with only the fields that endpoint defines: per item the subtotal (or price × quantity,
/// the subtotal winning when both come), less `ItemTotalDiscount` (per line),
/// `ItemDiscount` × quantity (per unit) and `ItemDiscountRate` % of the line; less
/// `OrderDiscount` on the brand endpoint only; `Amount` when there are no items. `None` when
/// a value it needs is not a number. Written independently of `validate` and `money`.
pub fn sale_amount(endpoint: &str, fields: &[(String, String)]) -> Option<Decimal> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    const SEED: &str = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000&OrderId=TOYS-1001&EventDate=2023-02-15T22:55:32-08:00&CurrencyCode=USD&ItemSku1=TOYSET&ItemQuantity1=2&ItemPrice1=40.00&ItemSku2=DOLL&ItemQuantity2=1&ItemPrice2=6.99";
    const BRAND: &str = "CampaignId=1&EventTypeCode=SALE&OrderId=A&EventDate=2023-02-15T22:55:32Z";

    #[test]
    fn the_specs_are_read_whole() {
        let brand = spec("brand");
        // 94 properties, with templates expanded, and the four named only in the text.
        assert_eq!(brand.fields.len(), 94 - 5 + 50 + 50 + 10 + 10 + 3 + 4);
        assert_eq!(brand.field("Text50").unwrap().max_length, Some(64));
        assert_eq!(brand.field("ItemText_50").unwrap().max_length, Some(64));
        assert!(brand.field("ItemText_50").unwrap().item);
        assert!(brand.field("Date10").is_some() && brand.field("Date11").is_none());
        assert_eq!(brand.field("GiftPurchase").unwrap().ty, Type::Boolean);
        assert!(brand.field("AndroidId").is_some() && brand.field("ActionTrackerId").is_some());
        let partner = spec("partner");
        assert_eq!(partner.field("Text50").unwrap().max_length, Some(255));
        assert!(partner.field("Date15").is_some() && partner.field("CustomerId").is_none());
        assert_eq!(partner.field("EventDate").unwrap().ty, Type::DateTime);
        assert_eq!(
            partner.required.last().unwrap(),
            &vec!["MediaId", "MediaPartnerId"]
        );
    }

    #[test]
    fn the_seed_body_passes() {
        let (e, w) = check("partner", &fields(SEED));
        assert!(e.is_empty(), "{e:?}");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn contract_violations_are_named() {
        let p = "CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=2023-02-15T22:55:32Z";
        for (body, field) in [
            (
                "ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=2023-02-15T22:55:32Z"
                    .to_owned(),
                "CampaignId",
            ),
            (p.replace("CampaignId=1", "CampaignId=x"), "CampaignId"),
            (p.replace("22:55:32Z", "22:55:32"), "EventDate"),
            (format!("{p}&Amount=-1"), "Amount"),
            (format!("{p}&ItemSku2=X&ItemSubTotal2=1"), "ItemSku1"),
            (format!("{p}&ItemSku1=X&ItemPrice1=1"), "ItemQuantity1"),
            (format!("{p}&CurrencyCode=usd"), "CurrencyCode"),
            (format!("{p}&Date1=notadate"), "Date1"),
            (format!("{p}&Numeric1=abc"), "Numeric1"),
            (
                format!("{p}&ItemSku1=X&ItemSubTotal1=1&ItemDiscountRate1=abc"),
                "ItemDiscountRate1",
            ),
            (format!("{p}&Money1=1.234"), "Money1"),
            (
                format!("{BRAND}&ClickId=c&GiftPurchase=maybe"),
                "GiftPurchase",
            ),
            (format!("{BRAND}&MediaId=1&MediaPartnerId=1"), "MediaId"),
            (
                format!("{BRAND}&ClickId=c&CustomerEmail=a@b.example"),
                "CustomerEmail",
            ),
            (
                format!("{BRAND}&CustomerEmail={}", "a".repeat(64)),
                "ClickId",
            ),
            (
                format!("{BRAND}&ClickId=c&Text1={}", "x".repeat(65)),
                "Text1",
            ),
            (format!("{BRAND}&ClickId=c&CountryCode=USA"), "CountryCode"),
        ] {
            let endpoint = if body.contains("EventTypeCode") {
                "brand"
            } else {
                "partner"
            };
            let (e, _) = check(endpoint, &fields(&body));
            assert!(e.iter().any(|(f, _)| f == field), "{body}: {e:?}");
        }
    }

    #[test]
    fn what_impact_accepts_passes_with_its_warnings() {
        let p = "CampaignId=1&ActionTrackerId=2&MediaPartnerId=3&OrderId=A&EventDate=2023-02-15T22:55:32Z";
        for (endpoint, body, warned) in [
            ("partner", format!("{p}&PayoutAmount=-1.00"), Some("PayoutAmount")),
            ("partner", format!("{p}&ItemSku1=X&ItemPrice1=1&ItemQuantity1=1&ItemSubTotal1=2"), Some("ItemPrice1")),
            ("partner", format!("{p}&CustomerId=9"), Some("CustomerId")),
            ("partner", format!("{p}&Date15=2023-02-15T22:55:32Z&Numeric1=-2.125"), None),
            ("partner", format!("{p}&MediaId=3"), None),
            ("brand", format!("{BRAND}&PromoCode=SAVE"), None),
            ("brand", format!("{BRAND}&CustomClickId=c"), None),
            ("brand", format!("{BRAND}&AndroidId=c"), None),
            ("brand", format!("{BRAND}&ClickId=c&Date11=2023-02-15T22:55:32Z"), Some("Date11")),
            ("brand", format!("{BRAND}&ClickId=c&CustomerEmail={}", "ab".repeat(20)), None),
            ("brand", format!("{BRAND}&ClickId=c&ItemSku1=X&ItemSubTotal1=2&CurrencyCode=USD&ItemText1_50=blue&ItemMoney1_3=1.50&ItemDate1_1=2023-02-15T22:55:32Z"), None),
        ] {
            let (e, w) = check(endpoint, &fields(&body));
            assert!(e.is_empty(), "{body}: {e:?}");
            match warned {
                Some(f) => assert!(w.iter().any(|(g, _)| g == f), "{body}: {w:?}"),
                None => assert!(w.is_empty(), "{body}: {w:?}"),
            }
        }
        let both = fields(&format!(
            "{p}&ItemSku1=X&ItemPrice1=1&ItemQuantity1=1&ItemSubTotal1=2"
        ));
        assert_eq!(sale_amount("partner", &both), Some(Decimal::from(2)));
    }
}
