//! Domain types shared by every stage: impact's field catalog, rows, order drafts, problems.
//!
//! The catalog lists every API field impact-drop knows, in the order fields are encoded in a
//! request body, with the kind of value each takes and its length limit. Stages refer to
//! fields by [`Field`] (a small index into the catalog), never by loose strings.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// Whether a field belongs to the conversion (order) or to one of its items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Order,
    Item,
}

/// The kind of value a field takes, which decides how `validate` checks and normalises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Digits only (ids, quantities).
    Int,
    /// A non-negative decimal amount with a `.` separator and at most two decimals (impact
    /// keeps money as decimal(18,2)).
    Money,
    /// A decimal that may be negative (`Numeric1..10`, discount rates).
    Decimal,
    /// A date-time, normalised to RFC 3339 with an explicit offset.
    Date,
    /// An ISO 4217 three-letter code.
    Currency,
    /// An ISO 3166-1 alpha-2 country code (`CountryCode`).
    Country,
    /// `true` or `false`.
    Bool,
    /// An absolute URL (`UniqueUrl`, the spec's `format: uri`).
    Url,
    /// An e-mail address sent as its SHA-256 digest (or a SHA-1/SHA-256 digest as given).
    HashedEmail,
    /// Exactly this many digits, or the second count (`CardBin`: 6 or 8, `CardLastFour`: 4).
    Digits(u8, u8),
    /// One of these values, compared without case (`ConversionType`: `CLO`).
    OneOf(&'static [&'static str]),
    /// Free text up to this many characters.
    Text(usize),
    /// Not an API field: a value carried for grouping or filtering, never sent.
    Internal,
}

/// impact's conversion endpoints that define a field (`specs/`: partner v16, brand v14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct On {
    pub partner: bool,
    pub brand: bool,
}

const P: On = On {
    partner: true,
    brand: false,
};
const B: On = On {
    partner: false,
    brand: true,
};
const PB: On = On {
    partner: true,
    brand: true,
};
const NONE: On = On {
    partner: false,
    brand: false,
};

/// One API field: an index into the catalog. Cheap to copy, ordered as fields are encoded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Field(u16);

struct Def {
    name: &'static str,
    level: Level,
    kind: Kind,
    on: On,
    /// The brand endpoint's length limit where it differs (`Text1..50`: 64, not 255).
    brand_limit: Option<usize>,
}

struct Catalog {
    defs: Vec<Def>,
    by_name: HashMap<String, Field>,
}

const TEXT: Kind = Kind::Text(255);

/// How many filter columns a profile can use.
pub const MAX_FILTERS: usize = 16;

/// Order-level fields, in the order they are encoded, with the endpoints that define them
/// (`specs/impact-partner-conversions-v16.yaml`, `specs/impact-brand-conversions-v14.yaml`;
/// brand's `ActionTrackerId`, `CustomClickId`, `PromoCode` and `AndroidId` are named in its
/// required-parameter text rather than its schema). The first six are the conversion key and
/// the ids impact routes on; the seed example's body starts with them in this order. Lengths
/// without a `maxLength` in the specs are `impact-api.md`'s (`OrderId` 64, `ClickId` 64,
/// `CustomProfileId` 70, any other string 255).
const ORDER_FIELDS: &[(&str, Kind, On)] = &[
    ("CampaignId", Kind::Int, PB),
    ("ActionTrackerId", Kind::Int, PB),
    ("EventTypeId", Kind::Int, B),
    ("EventTypeCode", TEXT, B),
    ("MediaPartnerId", Kind::Int, PB),
    ("MediaId", Kind::Int, PB),
    ("OrderId", Kind::Text(64), PB),
    ("EventDate", Kind::Date, PB),
    ("CurrencyCode", Kind::Currency, PB),
    ("Amount", Kind::Money, PB),
    ("OrderSubTotalPostDiscount", Kind::Money, B),
    ("OrderDiscount", Kind::Money, B),
    ("OrderShipping", Kind::Money, B),
    ("OrderTax", Kind::Money, B),
    ("OrderPromoCode", TEXT, B),
    ("ClickId", Kind::Text(64), B),
    ("CustomerId", TEXT, B),
    ("CustomProfileId", Kind::Text(70), B),
    ("CustomerEmail", Kind::HashedEmail, B),
    ("CustomerStatus", TEXT, PB),
    ("CustomerCity", TEXT, PB),
    ("CustomerCountry", TEXT, PB),
    ("CustomerPostCode", TEXT, PB),
    ("UniqueUrl", Kind::Url, B),
    ("GoogAId", TEXT, B),
    ("AppleIfa", TEXT, B),
    ("AppleIfv", TEXT, B),
    ("CallerId", TEXT, B),
    ("IpAddress", TEXT, PB),
    ("UserAgent", TEXT, PB),
    ("DeviceMfr", TEXT, PB),
    ("DeviceModel", TEXT, PB),
    ("LocationId", TEXT, PB),
    ("LocationName", TEXT, PB),
    ("Note", TEXT, PB),
    ("SharedId", TEXT, PB),
    ("SubId1", TEXT, PB),
    ("SubId2", TEXT, PB),
    ("SubId3", TEXT, PB),
    ("ConversionType", Kind::OneOf(&["CLO"]), P),
    ("CardBin", Kind::Digits(6, 8), P),
    ("CardLastFour", Kind::Digits(4, 4), P),
    ("PayoutAmount", Kind::Money, P),
    ("CustomClickId", TEXT, B),
    ("PromoCode", TEXT, B),
    ("AndroidId", TEXT, B),
    ("CustomerRegion", TEXT, B),
    ("PhoneNumber", TEXT, B),
    ("CountryCode", Kind::Country, B),
    ("OrderMargin", Kind::Money, B),
    ("OrderDiscountRate", Kind::Decimal, B),
    ("PaymentType", TEXT, B),
    ("GiftPurchase", Kind::Bool, B),
    ("TrackingConsent", Kind::Bool, B),
    ("LocationType", TEXT, B),
    ("PropertyId", Kind::Int, B),
    ("AppPackage", TEXT, B),
    ("AppInstallRef", TEXT, B),
    ("AppVer", TEXT, B),
    ("DispositionCode", TEXT, B),
];

/// Item fields (sent as `ItemSku1`, `ItemSku2`, …), in encoding order.
const ITEM_FIELDS: &[(&str, Kind)] = &[
    ("ItemSku", TEXT),
    ("ItemName", TEXT),
    ("ItemCategory", TEXT),
    ("ItemSubCategory", TEXT),
    ("ItemBrand", TEXT),
    ("ItemMpn", TEXT),
    ("ItemQuantity", Kind::Int),
    ("ItemPrice", Kind::Money),
    ("ItemSubTotal", Kind::Money),
    ("ItemDiscount", Kind::Money),
    ("ItemDiscountRate", Kind::Decimal),
    ("ItemTotalDiscount", Kind::Money),
    ("ItemPromoCode", TEXT),
    ("ItemDeliveryType", TEXT),
];

/// Numbered families of general-purpose order fields: `(family, how many on partner, how many
/// on brand, kind, brand's length limit)`. `Text1..50`, `Numeric1..10`, `Money1..3` on both;
/// `Date1..15` on partner, `Date1..10` on brand.
const FAMILIES: &[(&str, usize, usize, Kind, Option<usize>)] = &[
    ("Text", 50, 50, TEXT, Some(64)),
    ("Numeric", 10, 10, Kind::Decimal, None),
    ("Money", 3, 3, Kind::Money, None),
    ("Date", 15, 10, Kind::Date, None),
];

/// Numbered families of item fields, brand only: `ItemText{i}_1..50` (64 characters),
/// `ItemNumeric{i}_1..10`, `ItemDate{i}_1..10`, `ItemMoney{i}_1..3`. In the catalog and in
/// configuration they are named `ItemText_1` …; the body carries the item's index before
/// the underscore (`ItemText2_1`).
const ITEM_FAMILIES: &[(&str, usize, Kind)] = &[
    ("ItemText", 50, Kind::Text(64)),
    ("ItemNumeric", 10, Kind::Decimal),
    ("ItemDate", 10, Kind::Date),
    ("ItemMoney", 3, Kind::Money),
];

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut defs = Vec::new();
        let mut push = |name: &'static str, level, kind, on, brand_limit| {
            defs.push(Def {
                name,
                level,
                kind,
                on,
                brand_limit,
            })
        };
        for &(name, kind, on) in ORDER_FIELDS {
            push(name, Level::Order, kind, on, None);
        }
        // Names are leaked once per process: the catalog lives for the whole run.
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        for &(family, partner, brand, kind, brand_limit) in FAMILIES {
            for n in 1..=partner.max(brand) {
                let on = On {
                    partner: n <= partner,
                    brand: n <= brand,
                };
                push(
                    leak(format!("{family}{n}")),
                    Level::Order,
                    kind,
                    on,
                    brand_limit,
                );
            }
        }
        for &(name, kind) in ITEM_FIELDS {
            push(name, Level::Item, kind, PB, None);
        }
        for &(family, count, kind) in ITEM_FAMILIES {
            for n in 1..=count {
                push(leak(format!("{family}_{n}")), Level::Item, kind, B, None);
            }
        }
        // Internal slots: the group key (JSONL parent/child joins) and filter columns.
        push("(group key)", Level::Order, Kind::Internal, NONE, None);
        for i in 0..MAX_FILTERS {
            let name = leak(format!("(filter column {})", i + 1));
            push(name, Level::Order, Kind::Internal, NONE, None);
        }
        // Money slots: the export's own figure for the sale, the amount of lines left out of
        // the sale, and an item's "not a sale" mark (gift card).
        for (name, level) in [
            ("(export subtotal)", Level::Order),
            ("(excluded amount)", Level::Order),
            ("(gift card)", Level::Item),
            ("(order discount)", Level::Order),
        ] {
            push(name, level, Kind::Internal, NONE, None);
        }
        assert!(
            defs.len() < 1 << 14,
            "catalog outgrew FieldSet's 14-bit field ids"
        );
        let by_name = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (fold_name(d.name), Field(i as u16)))
            .collect();
        Catalog { defs, by_name }
    })
}

/// The catalog as a Markdown table (the README's "Fields" section): field, level, the
/// endpoints that define it, the kind of value and its limit. Numbered families are one row.
pub fn fields_markdown() -> String {
    use crate::settings::Endpoint;
    let kind = |k: Kind| -> String {
        match k {
            Kind::Int => "integer (digits)".into(),
            Kind::Money => "money: decimal(18,2), not negative".into(),
            Kind::Decimal => "decimal".into(),
            Kind::Date => "date-time with offset".into(),
            Kind::Currency => "ISO 4217 code".into(),
            Kind::Country => "ISO 3166-1 alpha-2 code".into(),
            Kind::Bool => "true / false".into(),
            Kind::Url => "absolute URL".into(),
            Kind::HashedEmail => "e-mail, sent as its SHA-256".into(),
            Kind::Digits(a, b) if a == b => format!("{a} digits"),
            Kind::Digits(a, b) => format!("{a} or {b} digits"),
            Kind::OneOf(v) => v.join(", "),
            Kind::Text(_) => "text".into(),
            Kind::Internal => String::new(),
        }
    };
    let limit = |f: Field| match (f.limit(Endpoint::Partner), f.limit(Endpoint::Brand)) {
        (Some(p), Some(b)) if p != b && f.endpoints() == PB => format!("{p} (brand {b})"),
        (Some(p), _) if f.endpoints().partner => p.to_string(),
        (_, Some(b)) => b.to_string(),
        _ => String::new(),
    };
    let on = |o: On| match (o.partner, o.brand) {
        (true, true) => "partner, brand",
        (true, false) => "partner",
        (false, true) => "brand",
        (false, false) => "",
    };
    // A family's stem: `Text12` → `Text`, `ItemText_3` → `ItemText_`.
    let stem = |name: &'static str| name.trim_end_matches(|c: char| c.is_ascii_digit());
    let mut rows: Vec<(Field, Field)> = Vec::new();
    for f in Field::all() {
        match rows.last_mut() {
            Some((first, last))
                if stem(first.name()) != first.name()
                    && stem(f.name()) == stem(first.name())
                    && f.kind() == last.kind()
                    && f.endpoints() == last.endpoints() =>
            {
                *last = f
            }
            _ => rows.push((f, f)),
        }
    }
    let mut out = String::from(
        "| field | level | endpoints | value | max. characters |\n|---|---|---|---|---|\n",
    );
    for (first, last) in rows {
        let name = if first == last {
            first.name().to_owned()
        } else {
            format!("{}..{}", first.name(), last.name())
        };
        let level = match first.level() {
            Level::Order => "order",
            Level::Item => "item",
        };
        out.push_str(&format!(
            "| `{name}` | {level} | {} | {} | {} |\n",
            on(first.endpoints()),
            kind(first.kind()),
            limit(first)
        ));
    }
    out
}

/// At most the first 40 characters of a cell, for messages: never a whole row.
pub fn excerpt(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_owned(),
    }
}

/// Folds a column or field name for loose matching: lower case, without spaces, `_` and `-`.
/// `Item Sku`, `item_sku` and `ItemSku` all fold to `itemsku`.
pub fn fold_name(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

impl Field {
    pub const CAMPAIGN_ID: Field = Field(0);
    pub const ACTION_TRACKER_ID: Field = Field(1);
    pub const EVENT_TYPE_ID: Field = Field(2);
    pub const EVENT_TYPE_CODE: Field = Field(3);
    pub const MEDIA_PARTNER_ID: Field = Field(4);
    pub const MEDIA_ID: Field = Field(5);
    pub const ORDER_ID: Field = Field(6);
    pub const EVENT_DATE: Field = Field(7);
    pub const CURRENCY_CODE: Field = Field(8);
    pub const AMOUNT: Field = Field(9);
    pub const ITEM_SKU: Field = Field::item_at(0);
    pub const ITEM_QUANTITY: Field = Field::item_at(6);
    pub const ITEM_PRICE: Field = Field::item_at(7);
    pub const ITEM_SUBTOTAL: Field = Field::item_at(8);

    /// Groups rows instead of OrderId when present (a JSONL child line's parent id).
    pub const GROUP_KEY: Field = Field::item_at(ITEM_FIELDS.len() + Field::item_families_len());

    /// Filter column `i` (carried through grouping, never sent).
    pub const fn filter(i: usize) -> Field {
        Field(Field::GROUP_KEY.0 + 1 + i as u16)
    }

    /// The export's own figure for merchandise after discounts (Shopify `Subtotal`), which
    /// the sale amount must reconcile with. Never sent.
    pub const EXPORT_SUBTOTAL: Field = Field::filter(MAX_FILTERS);
    /// The amount of an order's lines left out of the sale (gift cards), taken off the
    /// export's subtotal before reconciling. Never sent.
    pub const EXCLUDED_AMOUNT: Field = Field(Field::EXPORT_SUBTOTAL.0 + 1);
    /// An item the export marks as a gift card (`isGiftCard`). Never sent.
    pub const GIFT_CARD: Field = Field(Field::EXPORT_SUBTOTAL.0 + 2);
    /// The export's total discount of the order (may include shipping discounts), used only
    /// to refuse an order whose discount cannot be placed. Never sent.
    pub const ORDER_DISCOUNT_INFO: Field = Field(Field::EXPORT_SUBTOTAL.0 + 3);
    pub const ITEM_NAME: Field = Field::item_at(1);
    pub const ITEM_DISCOUNT: Field = Field::item_at(9);
    pub const ITEM_DISCOUNT_RATE: Field = Field::item_at(10);
    pub const ITEM_TOTAL_DISCOUNT: Field = Field::item_at(11);
    pub const ORDER_DISCOUNT: Field = Field(11);
    pub const ORDER_SUBTOTAL_POST_DISCOUNT: Field = Field(10);
    pub const CUSTOMER_EMAIL: Field = Field(18);

    /// Whether this is an API field (sent) rather than an internal slot.
    pub fn is_api(self) -> bool {
        self.kind() != Kind::Internal
    }

    /// The item field at `i` in [`ITEM_FIELDS`]: item fields follow the order fields and the
    /// numbered families in the catalog.
    const fn item_at(i: usize) -> Field {
        let mut families = 0;
        let mut f = 0;
        while f < FAMILIES.len() {
            let (partner, brand) = (FAMILIES[f].1, FAMILIES[f].2);
            families += if partner > brand { partner } else { brand };
            f += 1;
        }
        Field((ORDER_FIELDS.len() + families + i) as u16)
    }

    const fn item_families_len() -> usize {
        let mut n = 0;
        let mut f = 0;
        while f < ITEM_FAMILIES.len() {
            n += ITEM_FAMILIES[f].1;
            f += 1;
        }
        n
    }

    /// Looks an API field up by its name, loosely (see [`fold_name`]).
    pub fn lookup(name: &str) -> Option<Field> {
        // The specs write item families as `ItemText[i]_1` or `ItemText{i}_1`.
        let name = name.replace("[i]", "").replace("{i}", "");
        catalog()
            .by_name
            .get(&fold_name(&name))
            .copied()
            .filter(|f| f.is_api())
    }

    /// Looks a field up by its exact API name.
    pub fn named(name: &str) -> Option<Field> {
        Self::lookup(name).filter(|f| f.name() == name)
    }

    /// The item field by its short name (`Sku` → `ItemSku`) or full name.
    pub fn item(name: &str) -> Option<Field> {
        let item = |f: &Field| f.level() == Level::Item;
        Self::lookup(name)
            .filter(item)
            .or_else(|| Self::lookup(&format!("Item{name}")).filter(item))
    }

    /// A value of this field as messages may quote it: an e-mail address never is.
    pub fn shown(self, value: &str) -> std::borrow::Cow<'_, str> {
        if self.kind() == Kind::HashedEmail {
            "(an e-mail address, not shown)".into()
        } else {
            value.into()
        }
    }

    pub fn name(self) -> &'static str {
        catalog().defs[usize::from(self.0)].name
    }

    pub fn level(self) -> Level {
        catalog().defs[usize::from(self.0)].level
    }

    pub fn kind(self) -> Kind {
        catalog().defs[usize::from(self.0)].kind
    }

    /// Whether `endpoint` defines this field (impact ignores the others).
    pub fn defined_on(self, endpoint: crate::settings::Endpoint) -> bool {
        let on = catalog().defs[usize::from(self.0)].on;
        match endpoint {
            crate::settings::Endpoint::Partner => on.partner,
            crate::settings::Endpoint::Brand => on.brand,
        }
    }

    /// The endpoints that define this field.
    pub fn endpoints(self) -> On {
        catalog().defs[usize::from(self.0)].on
    }

    /// The longest text `endpoint` accepts in this field, for text fields.
    pub fn limit(self, endpoint: crate::settings::Endpoint) -> Option<usize> {
        let def = &catalog().defs[usize::from(self.0)];
        match (def.kind, endpoint) {
            (Kind::Text(_), crate::settings::Endpoint::Brand) if def.brand_limit.is_some() => {
                def.brand_limit
            }
            (Kind::Text(n), _) => Some(n),
            _ => None,
        }
    }

    /// The parameter name of this item field for the item at `index` (1-based):
    /// `ItemSku` → `ItemSku2`, `ItemText_1` → `ItemText2_1`.
    pub fn item_param(self, index: usize) -> String {
        let mut out = String::new();
        self.push_item_param(index, &mut out);
        out
    }

    /// Appends [`Field::item_param`] to `out` without allocating (the request body's path).
    pub fn push_item_param(self, index: usize, out: &mut String) {
        let name = self.name();
        let (family, rest) = name.split_once('_').unwrap_or((name, ""));
        out.push_str(family);
        out.push_str(itoa::Buffer::new().format(index));
        if !rest.is_empty() {
            out.push('_');
            out.push_str(rest);
        }
    }

    /// Every API field of the catalog, in encoding order.
    pub fn all() -> impl Iterator<Item = Field> {
        (0..catalog().defs.len())
            .map(|i| Field(i as u16))
            .filter(|f| f.is_api())
    }
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compact, immutable set of `(Field, value)` pairs in one allocation.
///
/// A million-row export keeps every mapped value in memory until its orders are complete, so
/// each row's fields live in a single boxed string rather than a vector of strings: about 48
/// bytes for a typical item instead of 200. Each entry is a header of ASCII bytes (the field
/// in two 7-bit bytes, then the value's length in 6-bit groups, `0x40` marking "more")
/// followed by the value. The whole is valid UTF-8, checked once when the row is read:
/// reading a value back is a slice, never another UTF-8 validation.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldSet(Box<str>);

/// Builds [`FieldSet`]s, reusing its buffer from row to row.
#[derive(Default, Debug)]
pub struct FieldSetBuilder {
    buf: String,
}

impl FieldSetBuilder {
    /// Adds a value. Empty values are not stored: an empty cell and a missing column mean the
    /// same thing everywhere in impact-drop.
    pub fn push(&mut self, field: Field, value: &str) {
        if value.is_empty() {
            return;
        }
        let id = field.0;
        self.buf.push(char::from((id >> 7) as u8 & 0x7f));
        self.buf.push(char::from(id as u8 & 0x7f));
        let mut len = value.len();
        loop {
            let group = (len & 0x3f) as u8;
            len >>= 6;
            if len == 0 {
                self.buf.push(char::from(group));
                break;
            }
            self.buf.push(char::from(group | 0x40));
        }
        self.buf.push_str(value);
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the set built so far and leaves the builder empty for the next row.
    pub fn take(&mut self) -> FieldSet {
        let set = FieldSet(self.buf.as_str().into());
        self.buf.clear();
        set
    }
}

impl FieldSet {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (Field, &'a str)>) -> FieldSet {
        let mut b = FieldSetBuilder::default();
        for (f, v) in pairs {
            b.push(f, v);
        }
        b.take()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> FieldSetIter<'_> {
        FieldSetIter { rest: &self.0 }
    }

    /// The first value stored for `field`.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.iter().find(|(f, _)| *f == field).map(|(_, v)| v)
    }
}

impl fmt::Debug for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

pub struct FieldSetIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for FieldSetIter<'a> {
    type Item = (Field, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.rest.as_bytes();
        let (&hi, &lo) = (bytes.first()?, bytes.get(1)?);
        let id = (u16::from(hi) << 7) | u16::from(lo);
        let mut at = 2;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let byte = *bytes.get(at)?;
            at += 1;
            len |= usize::from(byte & 0x3f) << shift;
            shift += 6;
            if byte & 0x40 == 0 {
                break;
            }
        }
        // The header is ASCII and the value a whole `&str`: both ends are char boundaries.
        let value = self.rest.get(at..at + len)?;
        self.rest = self.rest.get(at + len..)?;
        Some((Field(id), value))
    }
}

/// A hash of a row's normalised content: the identity of a line across files and re-exports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LineHash(pub [u8; 16]);

impl LineHash {
    pub fn of(bytes: &[u8]) -> LineHash {
        let full = blake3::hash(bytes);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full.as_bytes()[..16]);
        LineHash(out)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for LineHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LineHash({})", self.to_hex())
    }
}

/// Where a problem was found and what the merchant should do about it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// 1-based line in the file where the offending row starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The API field or export column involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A sentence a merchant understands, saying what is wrong and what to do.
    pub message: String,
}

impl Problem {
    pub fn new(line: Option<u64>, field: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            line,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn at(line: u64, field: impl fmt::Display, message: impl Into<String>) -> Problem {
        Problem {
            line: Some(line),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line, &self.field) {
            (Some(l), Some(field)) => write!(f, "line {l}, {field}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            (None, Some(field)) => write!(f, "{field}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// One mapped row of an export: what `map` makes of a CSV record or a JSON line.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// 1-based line where the record starts.
    pub line: u64,
    pub hash: LineHash,
    /// Order-level values found on this row (empty cells are absent).
    pub order: FieldSet,
    /// Items on this row: none or one for CSV, any number for JSON with nested item arrays.
    pub items: Vec<FieldSet>,
    /// Problems found while reading or mapping this row (bad bytes, ragged row, …). They
    /// make the whole order invalid: an order is never sent without one of its rows.
    pub problems: Vec<Problem>,
}

/// A line of a file and its content hash, as the ledger records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRef {
    pub line: u64,
    pub hash: LineHash,
}

/// The identity of a conversion at impact: `(CampaignId, event id, OrderId)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ConversionKey {
    pub campaign_id: String,
    /// The event identifier's field name (`ActionTrackerId`, `EventTypeId`, `EventTypeCode`).
    pub event_field: String,
    pub event_id: String,
    pub order_id: String,
}

impl fmt::Display for ConversionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OrderId {} (CampaignId {}, {} {})",
            self.order_id, self.campaign_id, self.event_field, self.event_id
        )
    }
}

/// An order as `group` assembled it from its rows, before validation.
#[derive(Clone, Debug)]
pub struct OrderDraft {
    pub order_id: String,
    /// The key parts as resolved from the rows or the defaults (`None` when neither has them).
    pub campaign_id: Option<String>,
    pub event: Option<(Field, String)>,
    /// The order-level values merged from every row of the order.
    pub order: FieldSet,
    /// Items in file order, with the line each came from.
    pub items: Vec<(u64, FieldSet)>,
    /// Every row of the order, in file order.
    pub lines: Vec<LineRef>,
    /// Problems from reading, mapping and grouping (e.g. rows that disagree).
    pub problems: Vec<Problem>,
}

impl OrderDraft {
    pub fn first_line(&self) -> u64 {
        self.lines.first().map_or(0, |l| l.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_order_matches_the_seed_body() {
        assert_eq!(Field::CAMPAIGN_ID.name(), "CampaignId");
        assert_eq!(Field::ACTION_TRACKER_ID.name(), "ActionTrackerId");
        assert_eq!(Field::MEDIA_PARTNER_ID.name(), "MediaPartnerId");
        assert_eq!(Field::ORDER_ID.name(), "OrderId");
        assert_eq!(Field::EVENT_DATE.name(), "EventDate");
        assert_eq!(Field::CURRENCY_CODE.name(), "CurrencyCode");
        assert_eq!(Field::AMOUNT.name(), "Amount");
        assert!(Field::CAMPAIGN_ID < Field::ORDER_ID && Field::ORDER_ID < Field::EVENT_DATE);
        assert_eq!(Field::ITEM_SKU.name(), "ItemSku");
        assert_eq!(Field::ITEM_QUANTITY.name(), "ItemQuantity");
        assert_eq!(Field::ITEM_PRICE.name(), "ItemPrice");
        assert_eq!(Field::ITEM_SUBTOTAL.name(), "ItemSubTotal");
        assert_eq!(Field::GROUP_KEY.name(), "(group key)");
        assert_eq!(Field::filter(MAX_FILTERS - 1).name(), "(filter column 16)");
        assert!(!Field::all().any(|f| f == Field::GROUP_KEY || f == Field::filter(0)));
        assert_eq!(Field::lookup("(group key)"), None);
    }

    #[test]
    fn lookup_is_loose_and_families_exist() {
        assert_eq!(Field::lookup("item_sku"), Field::lookup("ItemSku"));
        assert_eq!(Field::lookup("Order Id"), Some(Field::ORDER_ID));
        assert_eq!(Field::lookup("Text50").map(Field::name), Some("Text50"));
        assert_eq!(Field::lookup("Date15").map(Field::kind), Some(Kind::Date));
        assert_eq!(Field::lookup("Text51"), None);
        assert_eq!(
            Field::lookup("ItemDiscountRate"),
            Some(Field::ITEM_DISCOUNT_RATE)
        );
        assert_eq!(
            Field::lookup("ItemTotalDiscount"),
            Some(Field::ITEM_TOTAL_DISCOUNT)
        );
        assert_eq!(Field::item("Sku").map(Field::name), Some("ItemSku"));
        assert_eq!(Field::named("orderid"), None);
        use crate::settings::Endpoint;
        let text7 = Field::lookup("Text7").unwrap();
        assert_eq!(text7.limit(Endpoint::Partner), Some(255));
        assert_eq!(text7.limit(Endpoint::Brand), Some(64));
        let date11 = Field::lookup("Date11").unwrap();
        assert!(date11.defined_on(Endpoint::Partner) && !date11.defined_on(Endpoint::Brand));
        let item_text = Field::item("Text_3").unwrap();
        assert_eq!(Field::lookup("ItemText[i]_3"), Some(item_text));
        assert_eq!(item_text.item_param(12), "ItemText12_3");
        assert_eq!(Field::ITEM_SKU.item_param(2), "ItemSku2");
        assert_eq!(Field::CUSTOMER_EMAIL.name(), "CustomerEmail");
        assert_eq!(
            Field::ORDER_SUBTOTAL_POST_DISCOUNT.name(),
            "OrderSubTotalPostDiscount"
        );
    }

    #[test]
    fn field_set_round_trips_long_and_unicode_values() {
        let long = "x".repeat(100_000);
        let set = FieldSet::from_pairs([
            (Field::ORDER_ID, "A-1"),
            (Field::CURRENCY_CODE, ""),
            (Field::EVENT_DATE, "ünï 😀"),
            (Field::AMOUNT, long.as_str()),
            (Field(300), "a field past 255"),
        ]);
        let got: Vec<_> = set.iter().collect();
        assert_eq!(
            got,
            vec![
                (Field::ORDER_ID, "A-1"),
                (Field::EVENT_DATE, "ünï 😀"),
                (Field::AMOUNT, long.as_str()),
                (Field(300), "a field past 255"),
            ]
        );
        assert_eq!(set.get(Field::CURRENCY_CODE), None);
    }
}
