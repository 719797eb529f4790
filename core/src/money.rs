//! The sale amount (pure): what impact will compute from a body, lines that are not a sale,
//! discounts carried per line, and reconciliation with the export's own figure.
//!
//! One rule for every preset and endpoint: the sale amount impact computes from the body,
//! with only the fields *that endpoint* defines, equals the shop's merchandise after
//! discounts, without shipping, taxes, duties and tips.
//!
//! - Discounts travel per line as `ItemTotalDiscountN`, which both endpoints define. Where
//!   the export gives each line's discount (Shopify `Lineitem discount`), it is sent as is;
//!   where the export's figure (`Subtotal`) holds more discount than the lines do (no line
//!   discounts, or an order-level code the lines do not carry), the difference is allocated
//!   over the lines in proportion to their remaining amounts, to the currency's minor unit,
//!   deterministically (largest remainder, earlier lines first on ties), never more than a
//!   line's amount.
//! - `OrderDiscount` counts only on the brand endpoint (the partner endpoint ignores it).
//! - Where the export states the figure, the computed amount must equal it; otherwise the
//!   order is invalid with both figures. A sale is never negative.
//! - Tip lines are not items; gift-card lines are left out of items and amount; an order
//!   whose sale is zero is filtered as "zero sale" (each configurable).

use rust_decimal::Decimal;

use crate::model::{Field, FieldSet, LineRef, OrderDraft};
use crate::settings::Endpoint;

/// Which lines and orders are not a sale (`[sale]` in the config).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SaleRules {
    /// Item names (case-insensitive, exact) that are tips when the line has no SKU.
    pub tip_names: Vec<String>,
    /// Leave gift-card lines out of items and amount.
    pub exclude_gift_cards: bool,
    /// Item names that are gift cards (case-insensitive; `*` and `?` wildcards), besides
    /// lines the export marks (`isGiftCard`).
    pub gift_card_names: Vec<String>,
    /// Send orders whose sale is zero (exchanges, 100 % discounts) instead of filtering them.
    pub send_zero_sales: bool,
}

impl Default for SaleRules {
    fn default() -> SaleRules {
        SaleRules {
            tip_names: vec!["Tip".into()],
            exclude_gift_cards: true,
            gift_card_names: vec!["Gift Card*".into(), "Gift Certificate*".into()],
            send_zero_sales: false,
        }
    }
}

/// Lines taken out of an order because they are not a sale, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotSale {
    pub lines: Vec<LineRef>,
    pub reason: String,
}

/// `*` any run, `?` any one character; case-insensitive (per character, without
/// allocating: it runs for every item of every order).
fn wildcard(pattern: &str, text: &str) -> bool {
    let same = |a: char, b: char| {
        a == b
            || if a.is_ascii() && b.is_ascii() {
                a.eq_ignore_ascii_case(&b)
            } else {
                a.to_lowercase().eq(b.to_lowercase())
            }
    };
    let first = |s: &str, at: usize| s.get(at..).and_then(|r| r.chars().next());
    // Byte offsets into `pattern` and `text`; `star` is where the last `*` was seen and
    // `mark` where in the text it currently starts matching.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while let Some(tc) = first(text, ti) {
        match first(pattern, pi) {
            Some(pc) if pc == '?' || same(pc, tc) => {
                pi += pc.len_utf8();
                ti += tc.len_utf8();
            }
            Some('*') => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += first(text, mark).map_or(1, char::len_utf8);
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    pattern[pi..].chars().all(|c| c == '*')
}

/// Why an item is not a sale, if it is not.
fn not_a_sale(item: &FieldSet, rules: &SaleRules) -> Option<&'static str> {
    let name = item.get(Field::ITEM_NAME).unwrap_or("").trim();
    let sku = item.get(Field::ITEM_SKU).unwrap_or("").trim();
    if sku.is_empty() && rules.tip_names.iter().any(|t| t.eq_ignore_ascii_case(name)) {
        return Some("tip line: not an item of the sale");
    }
    if rules.exclude_gift_cards {
        let marked = item.get(Field::GIFT_CARD).is_some_and(|v| {
            matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
        });
        if marked || rules.gift_card_names.iter().any(|p| wildcard(p, name)) {
            return Some("gift card: left out of the sale amount");
        }
    }
    None
}

/// Takes tip and gift-card items out of the draft. A line goes with its items when no
/// other item of the order is on it and it is not the order's first line (which carries
/// the order's own fields); the amount of excluded gift cards is noted in
/// [`Field::EXCLUDED_AMOUNT`] so the export's subtotal can be reconciled without them.
/// Returns the lines taken out, with why; an order left with no item is returned whole.
pub fn split_not_sales(
    draft: &mut OrderDraft,
    rules: &SaleRules,
    number: &dyn Fn(&str) -> Option<Decimal>,
) -> Vec<NotSale> {
    if draft.items.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<NotSale> = Vec::new();
    let mut excluded = Decimal::ZERO;
    let mut kept = Vec::with_capacity(draft.items.len());
    let mut removed_lines: Vec<(u64, &'static str)> = Vec::new();
    for (line, item) in std::mem::take(&mut draft.items) {
        let Some(reason) = not_a_sale(&item, rules) else {
            kept.push((line, item));
            continue;
        };
        if reason.starts_with("gift card") {
            // Its amount comes off the export's subtotal. Unreadable: kept as an item, so
            // validation names the bad value.
            match line_net(&item, number) {
                Some(net) => excluded += net,
                None => {
                    kept.push((line, item));
                    continue;
                }
            }
        }
        removed_lines.push((line, reason));
    }
    if kept.is_empty() {
        // Nothing of the order is a sale: the whole order is left out.
        let reason = removed_lines
            .first()
            .map_or("not a sale", |(_, r)| r)
            .to_owned();
        draft.items = Vec::new();
        return vec![NotSale {
            lines: std::mem::take(&mut draft.lines),
            reason: format!("the whole order is not a sale ({reason})"),
        }];
    }
    let first = draft.first_line();
    for (line, reason) in removed_lines {
        if line == first || kept.iter().any(|(l, _)| *l == line) {
            continue;
        }
        let Some(pos) = draft.lines.iter().position(|l| l.line == line) else {
            continue;
        };
        let lref = draft.lines.remove(pos);
        match out.iter_mut().find(|n| n.reason == reason) {
            Some(n) => n.lines.push(lref),
            None => out.push(NotSale {
                lines: vec![lref],
                reason: reason.to_owned(),
            }),
        }
    }
    draft.items = kept;
    if excluded > Decimal::ZERO {
        let prior = draft
            .order
            .get(Field::EXCLUDED_AMOUNT)
            .and_then(|v| Decimal::from_str_exact(v).ok())
            .unwrap_or_default();
        let mut pairs: Vec<(Field, String)> = draft
            .order
            .iter()
            .filter(|(f, _)| *f != Field::EXCLUDED_AMOUNT)
            .map(|(f, v)| (f, v.to_owned()))
            .collect();
        pairs.push((
            Field::EXCLUDED_AMOUNT,
            (prior + excluded).normalize().to_string(),
        ));
        pairs.sort_by_key(|(f, _)| *f);
        draft.order = FieldSet::from_pairs(pairs.iter().map(|(f, v)| (*f, v.as_str())));
    }
    out
}

/// An item's amount after its own discounts, from raw export values.
fn line_net(item: &FieldSet, number: &dyn Fn(&str) -> Option<Decimal>) -> Option<Decimal> {
    let get = |f: Field| item.get(f).map(number);
    let gross = match (get(Field::ITEM_SUBTOTAL), get(Field::ITEM_PRICE)) {
        (Some(s), _) => s?,
        (None, Some(p)) => {
            let q = get(Field::ITEM_QUANTITY).unwrap_or(Some(Decimal::ONE))?;
            p? * q
        }
        (None, None) => return None,
    };
    let discount = get(Field::ITEM_TOTAL_DISCOUNT).unwrap_or(Some(Decimal::ZERO))?;
    Some(gross - discount)
}

/// Digits after the decimal point in the currency's minor unit (ISO 4217).
pub fn minor_digits(currency: Option<&str>) -> u32 {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    match currency {
        Some(c) if ZERO.contains(&c) => 0,
        Some(c) if THREE.contains(&c) => 3,
        _ => 2,
    }
}

/// One item's money, as validated values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemMoney {
    /// `ItemSubTotal`, or `ItemPrice × ItemQuantity`.
    pub gross: Decimal,
    /// `ItemTotalDiscount`, plus `ItemDiscount × ItemQuantity`, plus the rate's share.
    pub discount: Decimal,
}

fn dec(set: &FieldSet, f: Field) -> Option<Decimal> {
    set.get(f)
        .and_then(|v| Decimal::from_str_exact(v.trim()).ok())
}

/// The money of a validated item.
pub fn item_money(item: &FieldSet) -> ItemMoney {
    let quantity = dec(item, Field::ITEM_QUANTITY).unwrap_or(Decimal::ONE);
    let gross = match dec(item, Field::ITEM_SUBTOTAL) {
        Some(s) => s,
        None => dec(item, Field::ITEM_PRICE).unwrap_or_default() * quantity,
    };
    let mut discount = dec(item, Field::ITEM_TOTAL_DISCOUNT).unwrap_or_default();
    discount += dec(item, Field::ITEM_DISCOUNT).unwrap_or_default() * quantity;
    if let Some(rate) = item
        .get(Field::ITEM_DISCOUNT_RATE)
        .and_then(|v| Decimal::from_str_exact(v.trim()).ok())
    {
        discount += gross * rate / Decimal::ONE_HUNDRED;
    }
    ItemMoney { gross, discount }
}

/// The sale amount impact computes from a conversion's fields on `endpoint`: Σ items
/// (subtotal or price × quantity, less line and unit discounts), less `OrderDiscount` on the
/// brand endpoint; `Amount` when there are no items.
pub fn sale_amount(endpoint: Endpoint, order: &FieldSet, items: &[FieldSet]) -> Decimal {
    if items.is_empty() {
        return dec(order, Field::AMOUNT).unwrap_or_default();
    }
    let mut sum: Decimal = items
        .iter()
        .map(item_money)
        .map(|m| m.gross - m.discount)
        .sum();
    if endpoint == Endpoint::Brand {
        sum -= dec(order, Field::ORDER_DISCOUNT).unwrap_or_default();
    }
    sum
}

/// Splits `amount` over `weights` in proportion, in steps of `unit`, never more than a
/// weight: largest remainder, ties to the earlier index. `amount` must not exceed the sum of
/// the weights.
pub fn allocate(amount: Decimal, weights: &[Decimal], unit: Decimal) -> Vec<Decimal> {
    let total: Decimal = weights.iter().copied().filter(|w| *w > Decimal::ZERO).sum();
    if total <= Decimal::ZERO || amount <= Decimal::ZERO || unit <= Decimal::ZERO {
        return vec![Decimal::ZERO; weights.len()];
    }
    let mut shares: Vec<Decimal> = Vec::with_capacity(weights.len());
    let mut fractions: Vec<(Decimal, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let w = (*w).max(Decimal::ZERO);
        let exact = amount * w / total / unit;
        let floor = exact.floor();
        shares.push((floor * unit).min(w));
        fractions.push((exact - floor, i));
    }
    let mut left = amount - shares.iter().copied().sum::<Decimal>();
    // Largest fraction first; ties go to the earlier line.
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut round = 0;
    while left >= unit && round < 4 {
        for &(_, i) in &fractions {
            if left < unit {
                break;
            }
            if shares[i] + unit <= weights[i] {
                shares[i] += unit;
                left -= unit;
            }
        }
        round += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn allocation_is_proportional_exact_and_deterministic() {
        let a = allocate(d("10.00"), &[d("30.00"), d("30.00"), d("30.00")], d("0.01"));
        assert_eq!(a, vec![d("3.34"), d("3.33"), d("3.33")]);
        assert_eq!(a.iter().copied().sum::<Decimal>(), d("10.00"));
        let a = allocate(d("5"), &[d("1000"), d("1")], d("1"));
        assert_eq!(a, vec![d("5"), d("0")]);
        // A 100 % discount takes each line to exactly zero, never below.
        let a = allocate(d("46.99"), &[d("40.00"), d("6.99")], d("0.01"));
        assert_eq!(a, vec![d("40.00"), d("6.99")]);
    }

    #[test]
    fn wildcards_are_case_insensitive() {
        assert!(wildcard("Gift Card*", "gift card - $50"));
        assert!(wildcard("Gift Card*", "Gift Card"));
        assert!(!wildcard("Gift Card*", "Giftcard holder"));
        assert!(wildcard("t?p", "TIP"));
        assert!(wildcard("*card*", "Ünï GIFT CARD 😀"));
        assert!(wildcard("gift*ç?rd", "GIFT - ÇÄRD"));
        assert!(!wildcard("gift*card", "gift card x"));
        assert!(wildcard("a*b*c", "aXbYbZc"));
        assert!(!wildcard("a?", "a"));
        assert!(wildcard("**", ""));
        assert!(!wildcard("x", ""));
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        assert_eq!(minor_digits(Some("JPY")), 0);
        assert_eq!(minor_digits(Some("USD")), 2);
        assert_eq!(minor_digits(Some("KWD")), 3);
        assert_eq!(minor_digits(None), 2);
    }
}
