//! Validation (pure): an order draft → a sendable [`Conversion`], or every reason it is not one.
//!
//! The rules are impact's contract (`shared/docs/impact-api.md`): required fields per endpoint,
//! digits-only ids, OrderId ≤ 64, EventDate normalised to RFC 3339 with an explicit offset,
//! exact non-negative decimals with a `.`, three-letter currency, items indexed from 1, never
//! `Amount` with items, never `ItemPrice` with `ItemSubTotal`, text length limits. This module
//! is the only place a `Conversion` is made: holding one means it passed.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{
    DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone,
};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use crate::model::{ConversionKey, Field, FieldSet, Kind, LineRef, OrderDraft, Problem};
use crate::money;
use crate::settings::Endpoint;

/// What validation needs to know besides the draft.
#[derive(Clone, Debug)]
pub struct Rules {
    pub endpoint: Endpoint,
    /// Order-level values for fields the export lacks (`[defaults]`, then profile constants,
    /// which win).
    pub defaults: Vec<(Field, String)>,
    /// Item-level values every item gets.
    pub item_constants: Vec<(Field, String)>,
    pub timezone: Option<Tz>,
    pub date_formats: Vec<String>,
    pub allow_event_date_now: bool,
    /// `[source] decimal_separator = ","`: amounts are written `1.234,56`.
    pub decimal_comma: bool,
    /// `[source] strip_currency_symbols = true`: `$1,234.56` is read as `1234.56`.
    pub strip_currency_symbols: bool,
}

impl Rules {
    pub fn new(endpoint: Endpoint) -> Rules {
        Rules {
            endpoint,
            defaults: Vec::new(),
            item_constants: Vec::new(),
            timezone: None,
            date_formats: Vec::new(),
            allow_event_date_now: false,
            decimal_comma: false,
            strip_currency_symbols: false,
        }
    }

    pub fn default_for(&self, field: Field) -> Option<&str> {
        self.defaults
            .iter()
            .rev()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }

    /// The fields that identify the event, in order of preference.
    pub fn event_fields(&self) -> Vec<Field> {
        match self.endpoint {
            Endpoint::Partner => vec![Field::ACTION_TRACKER_ID],
            Endpoint::Brand => vec![
                Field::ACTION_TRACKER_ID,
                Field::EVENT_TYPE_ID,
                Field::EVENT_TYPE_CODE,
            ],
        }
    }

    /// Required fields as groups: each group needs at least one of its fields.
    pub fn required(&self) -> &'static [Vec<Field>] {
        static PARTNER: OnceLock<Vec<Vec<Field>>> = OnceLock::new();
        static BRAND: OnceLock<Vec<Vec<Field>>> = OnceLock::new();
        let one = |f: Field| vec![f];
        match self.endpoint {
            Endpoint::Partner => PARTNER.get_or_init(|| {
                vec![
                    one(Field::CAMPAIGN_ID),
                    one(Field::ACTION_TRACKER_ID),
                    one(Field::EVENT_DATE),
                    one(Field::ORDER_ID),
                    vec![Field::MEDIA_PARTNER_ID, Field::MEDIA_ID],
                ]
            }),
            Endpoint::Brand => BRAND.get_or_init(|| {
                vec![
                    one(Field::CAMPAIGN_ID),
                    vec![
                        Field::ACTION_TRACKER_ID,
                        Field::EVENT_TYPE_ID,
                        Field::EVENT_TYPE_CODE,
                    ],
                    one(Field::EVENT_DATE),
                    one(Field::ORDER_ID),
                    ATTRIBUTION_KEYS
                        .iter()
                        .filter_map(|n| Field::named(n))
                        .collect(),
                ]
            }),
        }
    }
}

/// Brand conversions need at least one of these to attribute the conversion to a partner:
/// the brand spec's list (`CustomerEmail` and `OrderPromoCode` are not in it).
pub const ATTRIBUTION_KEYS: &[&str] = &[
    "ClickId",
    "CustomerId",
    "CustomProfileId",
    "CustomClickId",
    "PromoCode",
    "MediaId",
    "MediaPartnerId",
    "UniqueUrl",
    "CallerId",
    "GoogAId",
    "AndroidId",
    "AppleIfa",
    "AppleIfv",
];

/// A conversion that passed validation: normalised values, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    key: ConversionKey,
    fields: FieldSet,
    items: Vec<FieldSet>,
    /// The line each item came from.
    item_lines: Vec<u64>,
    lines: Vec<LineRef>,
    warnings: Vec<Problem>,
    /// The sale amount impact will compute from the body on the endpoint in use.
    sale: Decimal,
    /// The export's own figure for it (e.g. Shopify `Subtotal`), when the export states one.
    stated: Option<Decimal>,
}

impl Conversion {
    /// The sale amount impact will compute from the body, on the endpoint validated for.
    pub fn sale_amount(&self) -> Decimal {
        self.sale
    }

    /// The export's own figure for the sale (less lines left out of it), when it states one;
    /// the sale amount equals it.
    pub fn stated_amount(&self) -> Option<Decimal> {
        self.stated
    }

    /// The line each item came from, in item order.
    pub fn item_lines(&self) -> &[u64] {
        &self.item_lines
    }

    pub fn key(&self) -> &ConversionKey {
        &self.key
    }

    /// Order-level fields in encoding order.
    pub fn fields(&self) -> impl Iterator<Item = (Field, &str)> {
        self.fields.iter()
    }

    /// Items in file order; each item's fields in encoding order.
    pub fn items(&self) -> &[FieldSet] {
        &self.items
    }

    /// Every line of the export this conversion was made from.
    pub fn lines(&self) -> &[LineRef] {
        &self.lines
    }

    /// Things worth knowing that do not stop the conversion (e.g. an ambiguous local time).
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    pub fn get(&self, field: Field) -> Option<&str> {
        self.fields.get(field)
    }
}

/// An order that cannot be sent, with every reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Invalid {
    pub order_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<ConversionKey>,
    #[serde(serialize_with = "serialize_lines")]
    pub lines: Vec<LineRef>,
    pub problems: Vec<Problem>,
}

fn serialize_lines<S: serde::Serializer>(lines: &[LineRef], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(lines.iter().map(|l| l.line))
}

/// Validates one draft.
pub fn validate(draft: OrderDraft, rules: &Rules) -> Result<Conversion, Box<Invalid>> {
    let OrderDraft {
        order_id,
        campaign_id,
        event,
        order,
        items,
        lines,
        mut problems,
    } = draft;
    let first = lines.first().map(|l| l.line);
    let mut warnings = Vec::new();

    // Order-level values: the export's, then constants/defaults for what it lacks, then the
    // key parts as `group` resolved them (a blank cell that took another row's value).
    // Internal slots (group key, filter columns) are never sent.
    // Fields the endpoint does not define are never sent (impact would ignore them); `intake`
    // and the start-up checks say so once per file rather than once per order.
    let endpoint = rules.endpoint;
    let sent = |f: Field| f.is_api() && f.defined_on(endpoint);
    let mut raw: Vec<(Field, &str, Option<u64>)> = order
        .iter()
        .filter(|(f, _)| sent(*f))
        .map(|(f, v)| (f, v, first))
        .collect();
    let resolved = campaign_id
        .as_deref()
        .map(|c| (Field::CAMPAIGN_ID, c))
        .into_iter()
        .chain(event.as_ref().map(|(f, v)| (*f, v.as_str())));
    let defaults = rules
        .defaults
        .iter()
        .rev()
        .filter(|(f, _)| sent(*f))
        .map(|(f, v)| (*f, v.as_str()));
    let fallbacks = resolved.chain(defaults);
    for (f, v) in fallbacks {
        if !raw.iter().any(|(g, _, _)| *g == f) {
            raw.push((f, v, None));
        }
    }

    let mut fields: Vec<(Field, Cow<str>)> = Vec::with_capacity(raw.len());
    for (field, value, line) in raw {
        match check_value(field, value, rules) {
            Ok(Checked::Value(v)) => fields.push((field, v)),
            Ok(Checked::Warned(v, w)) => {
                warnings.push(Problem::new(line, Some(field.name()), w));
                fields.push((field, v));
            }
            Err(msg) => problems.push(Problem::new(line, Some(field.name()), msg)),
        }
    }
    fields.sort_by_key(|(f, _)| *f);
    let given = |f: Field| fields.iter().any(|(g, _)| *g == f);
    if endpoint == Endpoint::Brand && given(Field::MEDIA_ID) && given(Field::MEDIA_PARTNER_ID) {
        problems.push(Problem::new(
            first,
            Some("MediaId"),
            "is given together with MediaPartnerId: impact's brand endpoint takes one of the              two, never both; map only one",
        ));
    }
    if !items.is_empty() && given(Field::ORDER_SUBTOTAL_POST_DISCOUNT) {
        problems.push(Problem::new(
            first,
            Some("OrderSubTotalPostDiscount"),
            "is given together with items: impact uses it only for conversions without items;              leave it out when the item columns are mapped",
        ));
    }

    for group in rules.required() {
        let present = group.iter().any(|f| fields.iter().any(|(g, _)| g == f))
            || group.iter().any(|f| {
                problems
                    .iter()
                    .any(|p| p.field.as_deref() == Some(f.name()))
            });
        if !present {
            problems.push(missing(first, group));
        }
    }

    // Items.
    let mut out_items: Vec<FieldSet> = Vec::with_capacity(items.len());
    for (line, set) in &items {
        match check_item(*line, set, rules) {
            Ok(item) => out_items.push(item),
            Err(mut ps) => problems.append(&mut ps),
        }
    }
    if !items.is_empty() && fields.iter().any(|(f, _)| *f == Field::AMOUNT) {
        problems.push(Problem::new(
            first,
            Some("Amount"),
            "is given together with items: impact ignores Amount once items are present, so \
             the sale amount would be ambiguous; map either the order Amount or the item \
             columns, not both",
        ));
    }
    let has_money = fields.iter().any(|(f, _)| f.kind() == Kind::Money)
        || out_items
            .iter()
            .any(|item| item.iter().any(|(f, _)| f.kind() == Kind::Money));
    if has_money
        && !fields.iter().any(|(f, _)| *f == Field::CURRENCY_CODE)
        && !problems
            .iter()
            .any(|p| p.field.as_deref() == Some("CurrencyCode"))
    {
        problems.push(Problem::new(
            first,
            Some("CurrencyCode"),
            "is missing: impact needs the currency of every amount; add a CurrencyCode column \
             or set [defaults] CurrencyCode = \"USD\"",
        ));
    }

    let (sale, stated) = reconcile(
        &order,
        &fields,
        &mut out_items,
        &items,
        first,
        rules,
        &mut problems,
    );

    let value_of = |f: Field| {
        fields
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, v)| v.to_string())
    };
    let key = match (
        value_of(Field::CAMPAIGN_ID),
        &event,
        value_of(Field::ORDER_ID),
    ) {
        (Some(c), Some((ef, _)), Some(o)) => value_of(*ef).map(|e| ConversionKey {
            campaign_id: c,
            event_field: ef.name().to_owned(),
            event_id: e,
            order_id: o,
        }),
        _ => None,
    };
    if !problems.is_empty() {
        return Err(Box::new(Invalid {
            order_id,
            key,
            lines,
            problems,
        }));
    }
    let Some(key) = key else {
        // Unreachable when the required checks above passed; kept as an error, not a panic.
        return Err(Box::new(Invalid {
            order_id,
            key: None,
            lines,
            problems: vec![missing(first, &[Field::CAMPAIGN_ID])],
        }));
    };
    Ok(Conversion {
        key,
        fields: FieldSet::from_pairs(fields.iter().map(|(f, v)| (*f, v.as_ref()))),
        items: out_items,
        item_lines: items.iter().map(|(l, _)| *l).collect(),
        lines,
        warnings,
        sale,
        stated,
    })
}

/// A money value as the export writes it (decimal comma, currency symbols as configured).
pub fn parse_money(value: &str, rules: &Rules) -> Option<Decimal> {
    let v = messy_number(value, rules).unwrap_or_else(|| value.trim().to_owned());
    Decimal::from_str(&v).ok()
}

/// The sale amount (see `money`): every sale has an amount; no line goes negative; where the
/// export states its figure, an unexplained gap is allocated over the lines as
/// `ItemTotalDiscount` when the export gave no line discounts, and the result must equal the
/// figure. Returns the sale amount and the export's figure.
fn reconcile(
    order: &FieldSet,
    fields: &[(Field, Cow<str>)],
    out_items: &mut [FieldSet],
    items: &[(u64, FieldSet)],
    first: Option<u64>,
    rules: &Rules,
    problems: &mut Vec<Problem>,
) -> (Decimal, Option<Decimal>) {
    let order_now = FieldSet::from_pairs(fields.iter().map(|(f, v)| (*f, v.as_ref())));
    let has_amount = fields.iter().any(|(f, _)| *f == Field::AMOUNT)
        || problems
            .iter()
            .any(|p| p.field.as_deref() == Some("Amount"));
    if items.is_empty() && !has_amount {
        problems.push(Problem::new(
            first,
            Some("Amount"),
            "is missing, and so are item prices: nothing gives the sale amount; map the item \
             columns (ItemPrice and ItemQuantity, or ItemSubTotal) or the order Amount",
        ));
        return (Decimal::ZERO, None);
    }
    if out_items.len() != items.len() {
        // Some items are invalid and already reported: no amount to reconcile.
        return (Decimal::ZERO, None);
    }
    let monies: Vec<money::ItemMoney> = out_items.iter().map(money::item_money).collect();
    for ((line, _), m) in items.iter().zip(&monies) {
        if m.discount > m.gross {
            problems.push(Problem::at(
                *line,
                "ItemTotalDiscount",
                format!(
                    "the line's discounts ({}) are larger than the line ({}): a line never \
                     goes negative; check the export's discount columns",
                    m.discount.normalize(),
                    m.gross.normalize()
                ),
            ));
        }
    }
    let stated = order
        .get(Field::EXPORT_SUBTOTAL)
        .map(|v| (v, parse_money(v, rules)));
    let excluded = order
        .get(Field::EXCLUDED_AMOUNT)
        .and_then(|v| Decimal::from_str(v).ok())
        .unwrap_or_default();
    let target = match stated {
        None => None,
        Some((raw, None)) => {
            problems.push(Problem::new(
                first,
                None,
                format!(
                    "the export's subtotal \"{}\" is not an amount: the sale cannot be checked \
                     against it; fix the column",
                    crate::model::excerpt(raw)
                ),
            ));
            return (Decimal::ZERO, None);
        }
        Some((_, Some(v))) => Some(v - excluded),
    };
    let endpoint = rules.endpoint;
    let mut sale = money::sale_amount(endpoint, &order_now, out_items);
    let lines_text = || {
        let ls: Vec<String> = items.iter().map(|(l, _)| l.to_string()).collect();
        ls.join(", ")
    };
    if let Some(target) = target {
        let gap = sale - target;
        let order_discount =
            endpoint == Endpoint::Brand && order_now.get(Field::ORDER_DISCOUNT).is_some();
        // The export's figure is the shop's own: a discount it holds that the lines do not
        // (an order-level code, or no line discounts at all) is allocated over the lines'
        // remaining amounts, added to their own discounts. Only a gap the other way (the
        // lines come to less than the figure) is an error.
        if gap > Decimal::ZERO && !out_items.is_empty() && !order_discount {
            // impact keeps money to two decimals, whatever the currency's minor unit.
            let digits = money::minor_digits(order_now.get(Field::CURRENCY_CODE)).min(2);
            let unit = Decimal::new(1, digits);
            let weights: Vec<Decimal> = monies.iter().map(|m| m.gross - m.discount).collect();
            let shares = money::allocate(gap, &weights, unit);
            for (item, share) in out_items.iter_mut().zip(shares) {
                if share > Decimal::ZERO {
                    let own = item
                        .get(Field::ITEM_TOTAL_DISCOUNT)
                        .and_then(|v| Decimal::from_str(v).ok())
                        .unwrap_or_default();
                    let mut v = own + share;
                    v.rescale(digits.max(own.scale()));
                    let text = v.to_string();
                    let mut pairs: Vec<(Field, &str)> = item
                        .iter()
                        .filter(|(f, _)| *f != Field::ITEM_TOTAL_DISCOUNT)
                        .collect();
                    pairs.push((Field::ITEM_TOTAL_DISCOUNT, &text));
                    pairs.sort_by_key(|(f, _)| *f);
                    *item = FieldSet::from_pairs(pairs);
                }
            }
            sale = money::sale_amount(endpoint, &order_now, out_items);
        }
        if target < Decimal::ZERO {
            problems.push(Problem::new(
                first,
                None,
                format!(
                    "the export's subtotal less the lines left out of the sale is {}: a sale is \
                     never negative; check the export",
                    target.normalize()
                ),
            ));
        } else if sale != target {
            problems.push(Problem::new(
                first,
                None,
                format!(
                    "the sale amount impact would compute from these lines ({}) does not match \
                     the export's subtotal ({}) (lines {}): the order is not sent; check its \
                     prices, quantities and discounts",
                    sale.normalize(),
                    target.normalize(),
                    lines_text()
                ),
            ));
        }
    }
    let order_discount_info = order
        .get(Field::ORDER_DISCOUNT_INFO)
        .and_then(|v| parse_money(v, rules))
        .unwrap_or_default();
    if target.is_none()
        && order_discount_info > Decimal::ZERO
        && !monies.iter().any(|m| m.discount > Decimal::ZERO)
        && !(endpoint == Endpoint::Brand && order_now.get(Field::ORDER_DISCOUNT).is_some())
    {
        problems.push(Problem::new(
            first,
            None,
            format!(
                "the export gives the order's total discount ({}) but no subtotal and no line \
                 discounts: the discount cannot be placed (it may include shipping), so the \
                 sale amount is unknown; export the order's subtotal (Shopify: Subtotal, or \
                 subtotalPriceSet in a bulk query) or each line's discount",
                order_discount_info.normalize()
            ),
        ));
    }
    if sale < Decimal::ZERO && target.is_none() {
        problems.push(Problem::new(
            first,
            None,
            format!(
                "the sale amount impact would compute is negative ({}): a sale never is; check \
                 the discounts (lines {})",
                sale.normalize(),
                lines_text()
            ),
        ));
    }
    (sale, target)
}

fn missing(line: Option<u64>, group: &[Field]) -> Problem {
    let names: Vec<&str> = group.iter().map(|f| f.name()).collect();
    let message = match names.as_slice() {
        [one] => format!("is missing: add a column named {one} or set [defaults] {one}"),
        [a, b] => {
            format!("is missing (and so is {b}): add a column named {a} or set [defaults] {a}")
        }
        many => format!(
            "is missing, and so are {}: impact needs one of them; add a column for one",
            many[1..].join(", ")
        ),
    };
    Problem::new(line, Some(names[0]), message)
}

fn check_item(line: u64, set: &FieldSet, rules: &Rules) -> Result<FieldSet, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut item: Vec<(Field, Cow<str>)> = Vec::new();
    let constants = rules
        .item_constants
        .iter()
        .filter(|(f, _)| set.get(*f).is_none())
        .map(|(f, v)| (*f, v.as_str()));
    for (field, value) in set
        .iter()
        .chain(constants)
        .filter(|(f, _)| f.is_api() && f.defined_on(rules.endpoint))
    {
        match check_value(field, value, rules) {
            // A zero discount says nothing: it is not sent.
            Ok(Checked::Value(v)) | Ok(Checked::Warned(v, _))
                if matches!(field, Field::ITEM_TOTAL_DISCOUNT | Field::ITEM_DISCOUNT)
                    && Decimal::from_str(&v).is_ok_and(|d| d.is_zero()) => {}
            Ok(Checked::Value(v)) | Ok(Checked::Warned(v, _)) => item.push((field, v)),
            Err(msg) => problems.push(Problem::at(line, field, msg)),
        }
    }
    // Present in the row or as a constant, valid or not (an invalid one is reported already).
    let has = |f: Field| set.get(f).is_some() || rules.item_constants.iter().any(|(g, _)| *g == f);
    let (price, subtotal, quantity) = (
        has(Field::ITEM_PRICE),
        has(Field::ITEM_SUBTOTAL),
        has(Field::ITEM_QUANTITY),
    );
    if price && subtotal {
        problems.push(Problem::at(
            line,
            "ItemPrice",
            "is given together with ItemSubTotal: impact would use the subtotal and ignore the \
             price, so the amount would be ambiguous; give one of them",
        ));
    } else if price && !quantity {
        problems.push(Problem::at(
            line,
            "ItemQuantity",
            "is missing: an item with ItemPrice needs ItemQuantity (or give ItemSubTotal, the \
             line amount, instead)",
        ));
    } else if !price && !subtotal {
        problems.push(Problem::at(
            line,
            "ItemPrice",
            "is missing: every item needs ItemPrice and ItemQuantity, or ItemSubTotal",
        ));
    }
    if let Some((_, v)) = item.iter().find(|(f, _)| *f == Field::ITEM_QUANTITY) {
        if v.trim_start_matches('0').is_empty() {
            problems.push(Problem::at(
                line,
                Field::ITEM_QUANTITY,
                "is 0: an item needs a quantity of at least 1 (leave items that were removed \
                 out of the export)",
            ));
        }
    }
    if problems.is_empty() {
        item.sort_by_key(|(f, _)| *f);
        Ok(FieldSet::from_pairs(
            item.iter().map(|(f, v)| (*f, v.as_ref())),
        ))
    } else {
        Err(problems)
    }
}

enum Checked<'a> {
    Value(Cow<'a, str>),
    /// Accepted, with something the operator should know.
    Warned(Cow<'a, str>, String),
}

/// Checks and normalises one value by its field's kind. The error is a sentence saying what
/// is wrong and what to do.
fn check_value<'a>(field: Field, value: &'a str, rules: &Rules) -> Result<Checked<'a>, String> {
    let value = value.trim();
    match field.kind() {
        Kind::Internal => Ok(Checked::Value(Cow::Borrowed(value))),
        Kind::Int => check_int(value).map(Checked::Value),
        Kind::Money | Kind::Decimal => {
            let negative_ok = field.kind() == Kind::Decimal;
            let checked = match messy_number(value, rules) {
                Some(cleaned) => check_decimal(&cleaned, negative_ok)
                    .map(|v| Cow::Owned(v.into_owned()))
                    .map_err(|e| format!("{e} (read as \"{cleaned}\" from \"{value}\")")),
                None => check_decimal(value, negative_ok),
            }?;
            if field.kind() == Kind::Money {
                cents(checked).map(Checked::Value)
            } else {
                Ok(Checked::Value(checked))
            }
        }
        Kind::Currency => {
            if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(Checked::Value(Cow::Borrowed(value)))
            } else if value.len() == 3 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(Checked::Value(Cow::Owned(value.to_ascii_uppercase())))
            } else {
                Err(format!(
                    "\"{value}\" is not a three-letter ISO 4217 currency code (USD, EUR, GBP, …)"
                ))
            }
        }
        Kind::Country => {
            if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(Checked::Value(Cow::Owned(value.to_ascii_uppercase())))
            } else {
                Err(format!(
                    "\"{}\" is not a two-letter ISO 3166-1 country code (US, GB, DE, …)",
                    crate::model::excerpt(value)
                ))
            }
        }
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Ok(Checked::Value(Cow::Borrowed("true"))),
            "false" | "no" | "n" | "0" => Ok(Checked::Value(Cow::Borrowed("false"))),
            _ => Err(format!(
                "\"{}\" is not true or false (yes/no and 1/0 are read too)",
                crate::model::excerpt(value)
            )),
        },
        Kind::Url => {
            let ok = value.split_once("://").is_some_and(|(scheme, rest)| {
                scheme.len() > 1
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    && scheme.as_bytes()[0].is_ascii_alphabetic()
                    && !rest.is_empty()
            }) && !value.chars().any(char::is_whitespace);
            if !ok {
                return Err(format!(
                    "\"{}\" is not an absolute URL (https://partner.example/…)",
                    crate::model::excerpt(value)
                ));
            }
            text_within(field, value, rules)
        }
        Kind::HashedEmail => hashed_email(value).map(Checked::Value),
        Kind::Digits(a, b) => {
            let n = value.len();
            if value.bytes().all(|c| c.is_ascii_digit())
                && (n == usize::from(a) || n == usize::from(b))
            {
                Ok(Checked::Value(Cow::Borrowed(value)))
            } else if a == b {
                Err(format!(
                    "\"{}\" must be exactly {a} digits",
                    crate::model::excerpt(value)
                ))
            } else {
                Err(format!(
                    "\"{}\" must be exactly {a} or {b} digits",
                    crate::model::excerpt(value)
                ))
            }
        }
        Kind::OneOf(values) => match values.iter().find(|v| v.eq_ignore_ascii_case(value)) {
            Some(v) => Ok(Checked::Value(Cow::Borrowed(v))),
            None => Err(format!(
                "\"{}\" is not one of {}: impact would ignore it",
                crate::model::excerpt(value),
                values.join(", ")
            )),
        },
        Kind::Date => {
            if field == Field::EVENT_DATE && value.eq_ignore_ascii_case("NOW") {
                return if rules.endpoint == Endpoint::Brand {
                    Err(
                        "is NOW: impact's brand endpoint takes only a date-time; export the \
                         order's real time"
                            .into(),
                    )
                } else if rules.allow_event_date_now {
                    Ok(Checked::Value(Cow::Borrowed("NOW")))
                } else {
                    Err(
                        "is NOW: impact would date the sale when it receives it, which is wrong \
                         after any delay; export the order's real time (or set [source] \
                         allow_event_date_now = true)"
                            .into(),
                    )
                };
            }
            let (dt, warning) = parse_date(value, rules.timezone, &rules.date_formats)?;
            let text = Cow::Owned(dt.to_rfc3339_opts(SecondsFormat::AutoSi, false));
            Ok(match warning {
                Some(w) => Checked::Warned(text, w),
                None => Checked::Value(text),
            })
        }
        Kind::Text(_) => {
            if field == Field::ORDER_ID {
                excel_number(value)?;
            }
            text_within(field, value, rules)
        }
    }
}

/// A text value within the endpoint's length limit for the field.
fn text_within<'a>(field: Field, value: &'a str, rules: &Rules) -> Result<Checked<'a>, String> {
    let limit = field.limit(rules.endpoint).unwrap_or(255);
    let chars = value.chars().count();
    if chars > limit {
        return Err(format!(
            "is {chars} characters long; impact accepts at most {limit}: shorten it"
        ));
    }
    Ok(Checked::Value(Cow::Borrowed(value)))
}

/// impact keeps money as decimal(18,2): trailing zeros past the cent are dropped, any other
/// third decimal is refused rather than rounded (a rounded amount is a wrong payment).
fn cents(value: Cow<'_, str>) -> Result<Cow<'_, str>, String> {
    let (int, frac) = value.split_once('.').unwrap_or((&value, ""));
    if int.trim_start_matches('-').len() > 16 {
        return Err(format!(
            "\"{value}\" has more than 16 digits before the decimal point: impact keeps amounts \
             as decimal(18,2)"
        ));
    }
    if frac.len() <= 2 {
        return Ok(value);
    }
    if frac[2..].bytes().all(|b| b == b'0') {
        let keep = value.len() - (frac.len() - 2);
        return Ok(Cow::Owned(value[..keep].to_owned()));
    }
    Err(format!(
        "\"{value}\" has {} decimals: impact keeps amounts to two (decimal(18,2)); round it in \
         the export",
        frac.len()
    ))
}

/// The brand endpoint takes `CustomerEmail` only as a SHA-1 or SHA-256 digest: an address is
/// sent as the SHA-256 of its trimmed, lower-cased form; a digest passes unchanged. Messages
/// never quote the value.
fn hashed_email(value: &str) -> Result<Cow<'_, str>, String> {
    use sha2::Digest;
    let hex = value.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && (value.len() == 40 || value.len() == 64) {
        return Ok(Cow::Borrowed(value));
    }
    let address = value.trim().to_lowercase();
    let valid = address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !address.chars().any(char::is_whitespace);
    if !valid {
        return Err(
            "is neither an e-mail address nor a SHA-1/SHA-256 digest of one: check the column \
             (its value is not shown, as it may be personal data)"
                .into(),
        );
    }
    Ok(Cow::Owned(hex::encode(sha2::Sha256::digest(
        address.as_bytes(),
    ))))
}

/// `1.21286E+13`: Excel turned a long number into scientific notation and lost its digits.
fn excel_number(value: &str) -> Result<(), String> {
    let upper = value.to_ascii_uppercase();
    if let Some((mantissa, exp)) = upper.split_once("E+") {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let mantissa_ok = match mantissa.split_once('.') {
            Some((a, b)) => digits(a) && digits(b),
            None => digits(mantissa),
        };
        if mantissa_ok && digits(exp) {
            return Err(format!(
                "\"{value}\" is a number Excel turned into scientific notation, and its last \
                 digits are lost: the file was re-saved in Excel. Export it again from the \
                 shop, or import the column as Text in Excel"
            ));
        }
    }
    Ok(())
}

/// Applies the configured number conventions: `1.234,56` (decimal comma) and `$1,234.56`
/// (currency symbols and thousands separators). `None` when nothing applies or changes.
fn messy_number(value: &str, rules: &Rules) -> Option<String> {
    if !rules.decimal_comma && !rules.strip_currency_symbols {
        return None;
    }
    // The sign is set aside so "-$5.00" and "$-5.00" stay negative (and are then refused).
    let trimmed = value.trim();
    let (negative, body) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let mut v: String = body.to_owned();
    if rules.strip_currency_symbols {
        let symbol = |c: char| c.is_alphabetic() || "$€£¥ \u{a0}".contains(c);
        v = v.trim_matches(symbol).to_owned();
        v.retain(|c| c != ' ' && c != '\u{a0}' && c != '\'');
        if !rules.decimal_comma {
            v.retain(|c| c != ',');
        }
    }
    let negative = negative || v.starts_with('-');
    let mut v: String = v.trim_start_matches('-').to_owned();
    if rules.decimal_comma {
        v.retain(|c| c != '.' && c != ' ' && c != '\u{a0}');
        v = v.replace(',', ".");
    }
    if negative {
        v.insert(0, '-');
    }
    (v != value).then_some(v)
}

fn check_int(value: &str) -> Result<Cow<'_, str>, String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Cow::Borrowed(value));
    }
    excel_number(value)?;
    if let Some(whole) = value
        .strip_suffix(".0")
        .or_else(|| value.strip_suffix(".00"))
    {
        if !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "\"{value}\" must be a whole number written without decimals: write {whole}"
            ));
        }
    }
    Err(format!("\"{value}\" must be a whole number (digits only)"))
}

fn check_decimal(value: &str, allow_negative: bool) -> Result<Cow<'_, str>, String> {
    let body = value.strip_prefix('-').unwrap_or(value);
    let negative = body.len() != value.len();
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let plain = !(int.is_empty() && frac.is_empty())
        && digits(int)
        && digits(frac)
        && !(body.contains('.') && frac.is_empty());
    if !plain {
        let hint = if value.chars().any(|c| "$€£¥".contains(c)) {
            "write the number without a currency symbol (19.99), or set [source] \
             strip_currency_symbols = true"
        } else if value.contains(',') {
            "use a . as the decimal separator and no thousands separators (1234.56), or set \
             [source] decimal_separator = \",\" for exports written 1.234,56"
        } else {
            "write a plain number such as 19.99"
        };
        return Err(format!(
            "\"{value}\" is not an amount impact accepts: {hint}"
        ));
    }
    if negative && !allow_negative && (int.bytes().chain(frac.bytes())).any(|b| b != b'0') {
        return Err(format!(
            "\"{value}\" is negative: impact does not accept negative amounts (returns and \
             refunds are made by adjusting the action in impact, not by a conversion); leave \
             the row out or fix the amount"
        ));
    }
    // Already canonical (no sign, no leading zero, within Decimal's 28 digits): as written.
    let canonical = !negative
        && !int.is_empty()
        && (int == "0" || !int.starts_with('0'))
        && int.len() + frac.len() <= 28;
    if canonical {
        return Ok(Cow::Borrowed(value));
    }
    let d = Decimal::from_str(value)
        .map_err(|_| format!("\"{value}\" has too many digits for an amount"))?;
    let d = if d.is_zero() { d.abs() } else { d };
    Ok(Cow::Owned(d.to_string()))
}

/// Offset-carrying shapes real exports use, tried after RFC 3339 itself.
const WITH_OFFSET: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f %z", // Shopify: 2025-12-07 19:08:24 +0000
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%d %H:%M%:z",
    "%Y-%m-%d %H:%M %z",
];

/// Shapes without an offset: they need `[source] timezone`.
const NAIVE: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
];

/// Parses a date-time as exports write it. Returns the instant with its offset, and a warning
/// when a local time was ambiguous (a DST change).
pub fn parse_date(
    value: &str,
    tz: Option<Tz>,
    formats: &[String],
) -> Result<(DateTime<FixedOffset>, Option<String>), String> {
    let z_fixed;
    let v = match value.strip_suffix(['Z', 'z']) {
        Some(rest) if !formats.iter().any(|f| f.ends_with('Z')) => {
            z_fixed = format!("{rest}+00:00");
            z_fixed.as_str()
        }
        _ => value,
    };
    for f in formats {
        if let Ok(dt) = DateTime::parse_from_str(v, f) {
            return Ok((dt, None));
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(v, f) {
            return localize(value, naive, tz);
        }
        if let Ok(date) = NaiveDate::parse_from_str(v, f) {
            return localize(value, date.and_time(chrono::NaiveTime::MIN), tz);
        }
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(v) {
        return Ok((dt, None));
    }
    for f in WITH_OFFSET {
        if let Ok(dt) = DateTime::parse_from_str(v, f) {
            return Ok((dt, None));
        }
    }
    for f in NAIVE {
        if let Ok(naive) = NaiveDateTime::parse_from_str(v, f) {
            return localize(value, naive, tz);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return localize(value, date.and_time(chrono::NaiveTime::MIN), tz);
    }
    Err(format!(
        "\"{value}\" is not a date-time impact-drop recognises: write it as \
         2023-02-15T22:55:32-08:00, or set [source] date_format (and timezone) to this export's \
         format"
    ))
}

fn localize(
    original: &str,
    naive: NaiveDateTime,
    tz: Option<Tz>,
) -> Result<(DateTime<FixedOffset>, Option<String>), String> {
    let Some(tz) = tz else {
        return Err(format!(
            "\"{original}\" has no time zone: set [source] timezone to the zone the shop \
             exports in (e.g. \"America/New_York\"), or export dates with an offset"
        ));
    };
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Ok((dt.fixed_offset(), None)),
        LocalResult::Ambiguous(early, late) => Ok((
            early.fixed_offset(),
            Some(format!(
                "\"{original}\" happened twice in {tz} (clocks went back); the earlier one ({}) \
                 was used, not {}",
                early.fixed_offset().to_rfc3339(),
                late.fixed_offset().to_rfc3339()
            )),
        )),
        LocalResult::None => Err(format!(
            "\"{original}\" does not exist in {tz} (clocks went forward at that time): check \
             the export's time zone"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LineHash;

    fn rules() -> Rules {
        let mut r = Rules::new(Endpoint::Partner);
        r.defaults = vec![
            (Field::CAMPAIGN_ID, "1000".into()),
            (Field::ACTION_TRACKER_ID, "2000".into()),
            (Field::MEDIA_PARTNER_ID, "3000".into()),
            (Field::CURRENCY_CODE, "USD".into()),
        ];
        r
    }

    fn draft(order: &[(&str, &str)], items: &[&[(&str, &str)]]) -> OrderDraft {
        let set = |pairs: &[(&str, &str)]| {
            FieldSet::from_pairs(pairs.iter().map(|(k, v)| (Field::lookup(k).unwrap(), *v)))
        };
        let order = set(order);
        OrderDraft {
            order_id: order.get(Field::ORDER_ID).unwrap_or("").to_owned(),
            campaign_id: Some("1000".into()),
            event: Some((Field::ACTION_TRACKER_ID, "2000".into())),
            order,
            items: items
                .iter()
                .enumerate()
                .map(|(i, it)| (i as u64 + 2, set(it)))
                .collect(),
            lines: (0..items.len().max(1))
                .map(|i| LineRef {
                    line: i as u64 + 2,
                    hash: LineHash::default(),
                })
                .collect(),
            problems: vec![],
        }
    }

    const OK_ORDER: &[(&str, &str)] = &[
        ("OrderId", "A-1"),
        ("EventDate", "2023-02-15T22:55:32-08:00"),
    ];
    const OK_ITEM: &[(&str, &str)] = &[
        ("ItemSku", "X"),
        ("ItemQuantity", "1"),
        ("ItemPrice", "6.99"),
    ];

    /// The problems of an order that should be invalid: `(line, field, message)`.
    fn problems(
        order: &[(&str, &str)],
        items: &[&[(&str, &str)]],
        rules: &Rules,
    ) -> Vec<(Option<u64>, String, String)> {
        match validate(draft(order, items), rules) {
            Ok(c) => panic!("expected invalid, got {c:?}"),
            Err(inv) => inv
                .problems
                .into_iter()
                .map(|p| (p.line, p.field.unwrap_or_default(), p.message))
                .collect(),
        }
    }

    fn one_problem(
        order: &[(&str, &str)],
        items: &[&[(&str, &str)]],
    ) -> (Option<u64>, String, String) {
        let mut ps = problems(order, items, &rules());
        assert_eq!(ps.len(), 1, "{ps:?}");
        ps.remove(0)
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = OK_ORDER
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn a_good_order_passes_with_defaults_applied() {
        let c = validate(draft(OK_ORDER, &[OK_ITEM]), &rules()).unwrap();
        assert_eq!(c.key().order_id, "A-1");
        assert_eq!(c.get(Field::MEDIA_PARTNER_ID), Some("3000"));
        assert_eq!(c.items().len(), 1);
    }

    #[test]
    fn rule_required_fields_partner() {
        let mut r = rules();
        r.defaults.retain(|(f, _)| *f != Field::MEDIA_PARTNER_ID);
        let ps = problems(OK_ORDER, &[OK_ITEM], &r);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].1, "MediaPartnerId");
        assert!(ps[0].2.contains("is missing (and so is MediaId)"), "{ps:?}");
        let no_date = one_problem(&[("OrderId", "A")], &[OK_ITEM]);
        assert_eq!(no_date.1, "EventDate");
    }

    #[test]
    fn rule_required_fields_brand_need_an_attribution_key() {
        let mut r = rules();
        r.endpoint = Endpoint::Brand;
        r.defaults.retain(|(f, _)| *f != Field::MEDIA_PARTNER_ID);
        let ps = problems(OK_ORDER, &[OK_ITEM], &r);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].1, "ClickId");
        assert!(ps[0].2.contains("CustomerId"), "{ps:?}");
        assert!(validate(draft(&with(&[("ClickId", "abc")]), &[OK_ITEM]), &r).is_ok());
    }

    #[test]
    fn rule_integers_are_digits_only() {
        let p = one_problem(&with(&[("CampaignId", "10a")]), &[OK_ITEM]);
        assert_eq!(p.1, "CampaignId");
        assert!(p.2.contains("whole number"));
        let p = one_problem(&with(&[("ActionTrackerId", "2000.0")]), &[OK_ITEM]);
        assert!(p.2.contains("write 2000"), "{p:?}");
        let p = one_problem(
            OK_ORDER,
            &[&[
                ("ItemSku", "X"),
                ("ItemQuantity", "1.5"),
                ("ItemPrice", "1"),
            ]],
        );
        assert_eq!((p.0, p.1.as_str()), (Some(2), "ItemQuantity"));
    }

    #[test]
    fn rule_quantity_at_least_one() {
        let p = one_problem(
            OK_ORDER,
            &[&[("ItemSku", "X"), ("ItemQuantity", "0"), ("ItemPrice", "1")]],
        );
        assert!(p.2.contains("at least 1"));
    }

    #[test]
    fn rule_order_id_at_most_64() {
        let long = "x".repeat(65);
        let order = with(&[("OrderId", Box::leak(long.into_boxed_str()))]);
        let p = one_problem(&order, &[OK_ITEM]);
        assert_eq!(p.1, "OrderId");
        assert!(p.2.contains("65 characters") && p.2.contains("at most 64"));
        let ok = with(&[("OrderId", Box::leak("y".repeat(64).into_boxed_str()))]);
        assert!(validate(draft(&ok, &[OK_ITEM]), &rules()).is_ok());
    }

    #[test]
    fn rule_excel_mangled_ids_are_named() {
        let p = one_problem(&with(&[("OrderId", "1.21286E+13")]), &[OK_ITEM]);
        assert!(p.2.contains("Excel"), "{p:?}");
        let p = one_problem(&with(&[("CampaignId", "1.5E+4")]), &[OK_ITEM]);
        assert!(p.2.contains("Excel"), "{p:?}");
    }

    #[test]
    fn rule_event_date_normalised_with_offset() {
        let cases = [
            ("2023-02-15T22:55:32-08:00", "2023-02-15T22:55:32-08:00"),
            ("2025-06-15T10:30:00Z", "2025-06-15T10:30:00+00:00"),
            ("2025-12-07 19:08:24 +0000", "2025-12-07T19:08:24+00:00"),
            ("2025-12-07 19:08:24 -0500", "2025-12-07T19:08:24-05:00"),
            ("2025-12-07 19:08:24+02:00", "2025-12-07T19:08:24+02:00"),
            ("2025-12-07T19:08:24.123Z", "2025-12-07T19:08:24.123+00:00"),
        ];
        for (input, want) in cases {
            let c = validate(draft(&with(&[("EventDate", input)]), &[OK_ITEM]), &rules()).unwrap();
            assert_eq!(c.get(Field::EVENT_DATE), Some(want), "{input}");
        }
    }

    #[test]
    fn rule_naive_dates_need_a_zone() {
        let p = one_problem(&with(&[("EventDate", "2023-02-15 22:55")]), &[OK_ITEM]);
        assert!(p.2.contains("[source] timezone"), "{p:?}");
        let mut r = rules();
        r.timezone = Some(chrono_tz::America::Los_Angeles);
        let c = validate(
            draft(&with(&[("EventDate", "2023-02-15 22:55")]), &[OK_ITEM]),
            &r,
        )
        .unwrap();
        assert_eq!(c.get(Field::EVENT_DATE), Some("2023-02-15T22:55:00-08:00"));
        let c = validate(
            draft(&with(&[("EventDate", "2023-07-15 22:55:10")]), &[OK_ITEM]),
            &r,
        )
        .unwrap();
        assert_eq!(c.get(Field::EVENT_DATE), Some("2023-07-15T22:55:10-07:00"));
    }

    #[test]
    fn rule_custom_date_format_and_dst() {
        let mut r = rules();
        r.timezone = Some(chrono_tz::Europe::Berlin);
        r.date_formats = vec!["%d/%m/%Y %H:%M".into()];
        let c = validate(
            draft(&with(&[("EventDate", "15/02/2023 22:55")]), &[OK_ITEM]),
            &r,
        )
        .unwrap();
        assert_eq!(c.get(Field::EVENT_DATE), Some("2023-02-15T22:55:00+01:00"));
        // 02:30 on the night clocks go back happens twice: accepted, with a warning.
        let c = validate(
            draft(&with(&[("EventDate", "29/10/2023 02:30")]), &[OK_ITEM]),
            &r,
        )
        .unwrap();
        assert_eq!(c.get(Field::EVENT_DATE), Some("2023-10-29T02:30:00+02:00"));
        assert_eq!(c.warnings().len(), 1);
        // 02:30 on the night clocks go forward never happened.
        let p = problems(&with(&[("EventDate", "26/03/2023 02:30")]), &[OK_ITEM], &r);
        assert!(p[0].2.contains("does not exist"), "{p:?}");
    }

    #[test]
    fn rule_never_now_unless_configured() {
        let p = one_problem(&with(&[("EventDate", "NOW")]), &[OK_ITEM]);
        assert!(p.2.contains("allow_event_date_now"));
        let mut r = rules();
        r.allow_event_date_now = true;
        let c = validate(draft(&with(&[("EventDate", "now")]), &[OK_ITEM]), &r).unwrap();
        assert_eq!(c.get(Field::EVENT_DATE), Some("NOW"));
    }

    #[test]
    fn rule_bad_dates_are_explained() {
        let p = one_problem(&with(&[("EventDate", "yesterday")]), &[OK_ITEM]);
        assert!(p.2.contains("2023-02-15T22:55:32-08:00"));
    }

    #[test]
    fn rule_money_exact_dot_non_negative() {
        let c = validate(
            draft(
                OK_ORDER,
                &[&[
                    ("ItemSku", "X"),
                    ("ItemQuantity", "1"),
                    ("ItemPrice", "19.9900"),
                ]],
            ),
            &rules(),
        )
        .unwrap();
        assert_eq!(
            c.items()[0]
                .iter()
                .find(|(f, _)| f.name() == "ItemPrice")
                .unwrap()
                .1,
            "19.99"
        );
        for (bad, hint) in [
            ("0.1000000000000000000000000001", "28 decimals"),
            ("19.995", "3 decimals"),
            ("-5.00", "negative"),
            ("1,50", "decimal separator"),
            ("$12.00", "currency symbol"),
            ("1.2.3", "plain number"),
            ("12.", "plain number"),
            ("1e3", "plain number"),
        ] {
            let p = one_problem(
                OK_ORDER,
                &[&[("ItemSku", "X"), ("ItemQuantity", "1"), ("ItemPrice", bad)]],
            );
            assert_eq!(p.1, "ItemPrice");
            assert!(p.2.contains(hint), "{bad}: {p:?}");
        }
        let p = one_problem(&with(&[("Amount", "-1")]), &[]);
        assert_eq!(p.1, "Amount");
        assert!(validate(draft(&with(&[("Amount", "-0.00")]), &[]), &rules()).is_ok());
    }

    #[test]
    fn rule_messy_numbers_only_when_configured() {
        let price = |v: &'static str, r: &Rules| {
            validate(
                draft(
                    OK_ORDER,
                    &[&[("ItemSku", "X"), ("ItemQuantity", "1"), ("ItemPrice", v)]],
                ),
                r,
            )
            .map(|c| c.items()[0].get(Field::ITEM_PRICE).unwrap().to_owned())
            .map_err(|e| e.problems[0].message.clone())
        };
        let mut r = rules();
        assert!(price("1.234,56", &r)
            .unwrap_err()
            .contains("decimal_separator"));
        assert!(price("$1,234.56", &r)
            .unwrap_err()
            .contains("strip_currency_symbols"));
        r.decimal_comma = true;
        assert_eq!(price("1.234,56", &r).unwrap(), "1234.56");
        assert_eq!(price("19,9", &r).unwrap(), "19.9");
        r.decimal_comma = false;
        r.strip_currency_symbols = true;
        assert_eq!(price("$1,234.56", &r).unwrap(), "1234.56");
        assert_eq!(price("USD 12.00", &r).unwrap(), "12.00");
        assert_eq!(price("€ 7.5", &r).unwrap(), "7.5");
        assert!(
            price("-$5.00", &r).unwrap_err().contains("negative"),
            "still never negative"
        );
        r.decimal_comma = true;
        assert_eq!(price("1.234,56 €", &r).unwrap(), "1234.56");
    }

    #[test]
    fn internal_slots_are_never_part_of_a_conversion() {
        let mut d = draft(OK_ORDER, &[OK_ITEM]);
        let mut pairs: Vec<(Field, &str)> = d.order.iter().collect();
        pairs.push((Field::GROUP_KEY, "gid://shopify/Order/1"));
        pairs.push((Field::filter(0), "paid"));
        let owned: Vec<(Field, String)> = pairs.iter().map(|(f, v)| (*f, v.to_string())).collect();
        d.order = FieldSet::from_pairs(owned.iter().map(|(f, v)| (*f, v.as_str())));
        let c = validate(d, &rules()).unwrap();
        assert!(
            c.fields().all(|(f, _)| f.is_api()),
            "{:?}",
            c.fields().collect::<Vec<_>>()
        );
        assert!(!crate::form::encode(&c).contains("filter"));
    }

    #[test]
    fn rule_numeric_fields_may_be_negative() {
        assert!(validate(draft(&with(&[("Numeric1", "-2.5")]), &[OK_ITEM]), &rules()).is_ok());
    }

    #[test]
    fn rule_currency_three_letters() {
        let p = one_problem(&with(&[("CurrencyCode", "US")]), &[OK_ITEM]);
        assert_eq!(p.1, "CurrencyCode");
        let c = validate(
            draft(&with(&[("CurrencyCode", "eur")]), &[OK_ITEM]),
            &rules(),
        )
        .unwrap();
        assert_eq!(c.get(Field::CURRENCY_CODE), Some("EUR"));
        let mut r = rules();
        r.defaults.retain(|(f, _)| *f != Field::CURRENCY_CODE);
        let ps = problems(OK_ORDER, &[OK_ITEM], &r);
        assert!(ps[0].2.contains("[defaults] CurrencyCode"), "{ps:?}");
    }

    #[test]
    fn rule_never_amount_with_items() {
        let p = one_problem(&with(&[("Amount", "10")]), &[OK_ITEM]);
        assert_eq!(p.1, "Amount");
        assert!(p.2.contains("together with items"));
    }

    #[test]
    fn rule_never_price_with_subtotal_and_price_needs_quantity() {
        let p = one_problem(
            OK_ORDER,
            &[&[
                ("ItemSku", "X"),
                ("ItemQuantity", "1"),
                ("ItemPrice", "1"),
                ("ItemSubTotal", "1"),
            ]],
        );
        assert!(p.2.contains("together with ItemSubTotal"));
        let p = one_problem(OK_ORDER, &[&[("ItemSku", "X"), ("ItemPrice", "1")]]);
        assert_eq!(p.1, "ItemQuantity");
        let p = one_problem(OK_ORDER, &[&[("ItemSku", "X")]]);
        assert!(p
            .2
            .contains("needs ItemPrice and ItemQuantity, or ItemSubTotal"));
        assert!(validate(
            draft(OK_ORDER, &[&[("ItemSku", "X"), ("ItemSubTotal", "3")]]),
            &rules()
        )
        .is_ok());
    }

    #[test]
    fn rule_text_length_limits() {
        let long = Box::leak("n".repeat(256).into_boxed_str());
        let p = one_problem(&with(&[("Note", long)]), &[OK_ITEM]);
        assert!(p.2.contains("at most 255"));
        let mut r = rules();
        r.endpoint = Endpoint::Brand;
        let long_click = Box::leak("c".repeat(65).into_boxed_str());
        let ps = problems(&with(&[("ClickId", long_click)]), &[OK_ITEM], &r);
        assert!(ps[0].2.contains("at most 64"), "{ps:?}");
        let text = Box::leak("t".repeat(65).into_boxed_str());
        assert!(validate(draft(&with(&[("Text1", text)]), &[OK_ITEM]), &rules()).is_ok());
        let ps = problems(&with(&[("Text1", text), ("ClickId", "c")]), &[OK_ITEM], &r);
        assert!(ps[0].2.contains("at most 64"), "{ps:?}");
    }

    #[test]
    fn rule_each_endpoint_gets_only_its_fields() {
        let email = "  Jane.Doe@Example.COM ";
        let order = with(&[
            ("CustomerEmail", email),
            ("CustomerId", "C-9"),
            ("Date11", "2023-02-15T22:55:32-08:00"),
            ("Date10", "2023-02-15T22:55:32-08:00"),
            ("GiftPurchase", "Yes"),
            ("CountryCode", "us"),
            ("CardBin", "411111"),
        ]);
        // Partner: brand-only fields are not sent; Date11 and CardBin are.
        let c = validate(draft(&order, &[OK_ITEM]), &rules()).unwrap();
        let names: Vec<&str> = c.fields().map(|(f, _)| f.name()).collect();
        for absent in ["CustomerEmail", "CustomerId", "GiftPurchase", "CountryCode"] {
            assert!(!names.contains(&absent), "{absent} in {names:?}");
        }
        assert!(names.contains(&"Date11") && names.contains(&"CardBin"));
        // Brand: the address goes as its SHA-256; Date11 and CardBin are not sent.
        let mut r = rules();
        r.endpoint = Endpoint::Brand;
        r.defaults.retain(|(f, _)| *f != Field::MEDIA_PARTNER_ID);
        let mut brand = order.clone();
        brand.push(("ClickId", "c"));
        let c = validate(draft(&brand, &[OK_ITEM]), &r).unwrap();
        use sha2::Digest;
        let expected = hex::encode(sha2::Sha256::digest(b"jane.doe@example.com"));
        assert_eq!(c.get(Field::CUSTOMER_EMAIL), Some(expected.as_str()));
        assert_eq!(c.get(Field::lookup("GiftPurchase").unwrap()), Some("true"));
        assert_eq!(c.get(Field::lookup("CountryCode").unwrap()), Some("US"));
        assert_eq!(c.get(Field::lookup("Date11").unwrap()), None);
        assert_eq!(c.get(Field::lookup("CardBin").unwrap()), None);
        // A digest passes unchanged; the e-mail alone is no attribution key.
        let sha1 = "4db6c86b5d02c22ab6c5e1b1a0b82a7b5d4ef068";
        let ps = problems(&with(&[("CustomerEmail", sha1)]), &[OK_ITEM], &r);
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert_eq!(ps[0].1, "ClickId");
        assert!(ps[0].2.contains("PromoCode") && !ps[0].2.contains("CustomerEmail"));
        // Not an address: refused without quoting the value.
        let bad = with(&[("CustomerEmail", "jane at example"), ("ClickId", "c")]);
        let ps = problems(&bad, &[OK_ITEM], &r);
        assert_eq!(ps[0].1, "CustomerEmail");
        assert!(!ps[0].2.contains("jane"), "{ps:?}");
        // Both partner ids on brand.
        let both = with(&[("MediaId", "3000"), ("MediaPartnerId", "3000")]);
        let ps = problems(&both, &[OK_ITEM], &r);
        assert_eq!(ps[0].1, "MediaId");
        // Each attribution key of the brand spec, alone.
        for key in [
            "ClickId",
            "CustomClickId",
            "PromoCode",
            "AndroidId",
            "MediaId",
        ] {
            let o = with(&[(key, "1")]);
            assert!(validate(draft(&o, &[OK_ITEM]), &r).is_ok(), "{key}");
        }
    }

    #[test]
    fn rule_items_indexed_in_file_order() {
        let c = validate(
            draft(
                OK_ORDER,
                &[
                    &[("ItemSku", "A"), ("ItemSubTotal", "1")],
                    &[("ItemSku", "B"), ("ItemSubTotal", "2")],
                ],
            ),
            &rules(),
        )
        .unwrap();
        let skus: Vec<_> = c
            .items()
            .iter()
            .map(|i| i.get(Field::ITEM_SKU).unwrap())
            .collect();
        assert_eq!(skus, vec!["A", "B"]);
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let ps = problems(
            &with(&[("CurrencyCode", "X"), ("CampaignId", "x")]),
            &[&[("ItemSku", "X"), ("ItemPrice", "-1")]],
            &rules(),
        );
        assert!(ps.len() >= 3, "{ps:?}");
    }
}
