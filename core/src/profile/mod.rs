//! Profiles: which export column (or JSON path) feeds which API field, defined as data.
//!
//! A profile is a table of [`ColumnRule`]s plus constants, filters and, for JSONL exports
//! that put line items on their own lines (Shopify bulk operations), a parent/child join.
//! The presets (`impact`, `impact-batch`, `shopify-csv`, `shopify-jsonl`, `woocommerce`) are
//! tables in this file. `[mapping]` and `[[filter]]` in the config adjust any of them.
//! `custom` is an empty preset plus `[mapping]`. `map` applies a profile to rows.

pub mod map;

use crate::model::{Field, Level, MAX_FILTERS};
use crate::settings::{FilterConfig, Source};

/// A change applied to a value as it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// `'2759` → `2759`: Excel's marker for "keep this as text".
    StripLeadingApostrophe,
    /// `SAVE10, FREESHIP` → `SAVE10`: the first of a comma-separated list.
    FirstOfList,
}

/// One source → field rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnRule {
    /// Column name (matched loosely: case, spaces, `_`, `-` ignored) or, for JSON, a key or a
    /// path (`a.b`, `items[].sku`).
    pub source: String,
    pub field: Field,
    /// When the file (CSV) or line (JSON) also has item columns, the column means this item
    /// field instead. impact's FTP template uses `Amount` as the *line* amount next to `Sku`.
    pub with_items: Option<Field>,
    /// Set by `[mapping]`: the column must exist, or the file is refused (schema drift).
    pub required: bool,
    pub transform: Option<Transform>,
}

impl ColumnRule {
    pub fn new(source: &str, field: Field) -> ColumnRule {
        ColumnRule {
            source: source.to_owned(),
            field,
            with_items: None,
            required: false,
            transform: None,
        }
    }
}

/// Skip whole orders by the value of a column (a status), counted and listed as filtered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Columns or JSON paths that hold the value; the first present one is used.
    pub sources: Vec<String>,
    /// Values that make an order skipped (compared case-insensitively).
    pub skip: Vec<String>,
    /// Skip the order whenever the column has any value (e.g. `cancelledAt`).
    pub when_present: bool,
    /// Skip single rows (a gift-card line) instead of whole orders.
    pub rows: bool,
    /// The internal slot carrying the value through grouping.
    pub slot: Field,
}

/// JSONL exports whose items are lines of their own, pointing at their order line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// The key holding a line's own id (`id`).
    pub id_key: String,
    /// The key holding a child's parent id (`__parentId`).
    pub parent_key: String,
}

/// A complete input profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub rules: Vec<ColumnRule>,
    /// Rules for child lines when `join` is set (their keys mean item fields).
    pub child_rules: Vec<ColumnRule>,
    /// Order-level values every conversion gets (they win over `[defaults]`).
    pub constants: Vec<(Field, String)>,
    /// Item-level values every item gets.
    pub item_constants: Vec<(Field, String)>,
    /// JSON keys whose value is an array of item objects.
    pub item_arrays: Vec<String>,
    pub join: Option<Join>,
    pub filters: Vec<Filter>,
    /// The export's dates carry no offset: `[source] timezone` is required.
    pub needs_timezone: bool,
    /// Fields a file must give from one of its columns (or a default), each group one of:
    /// a file without them is refused, naming the preset's column.
    pub needs: Vec<Vec<Field>>,
}

/// A preset as data: `(column, API field)` pairs and the rest.
struct Preset {
    name: &'static str,
    rules: &'static [(&'static str, &'static str)],
    child_rules: &'static [(&'static str, &'static str)],
    /// `(columns, values to skip, skip when present)`.
    filters: &'static [(&'static [&'static str], &'static [&'static str], bool)],
    join: Option<(&'static str, &'static str)>,
    /// The column rows of one order share, when OrderId may come from a first-row-only one.
    group_by: Option<&'static str>,
    apostrophe_columns: &'static [&'static str],
    /// Columns holding a comma-separated list of which the first is taken.
    first_of_list_columns: &'static [&'static str],
    needs_timezone: bool,
    /// Field groups the file cannot do without (one of each group).
    needs: &'static [&'static [&'static str]],
}

/// What every export needs to make a sale: the order, its date and currency, and an amount
/// (item quantity and price, or a line or order amount).
const SALE_NEEDS: &[&[&str]] = &[
    &["OrderId"],
    &["EventDate"],
    &["CurrencyCode"],
    &["ItemPrice", "ItemSubTotal", "Amount"],
];

/// Shopify admin "Export orders" CSV (any header generation: columns are matched by name).
/// Money: `Lineitem price` is the unit price before discounts and `Lineitem discount` the
/// discount allocated to the line, sent as `ItemTotalDiscountN`; the sale amount impact
/// computes (Σ price × quantity − line discounts) must equal `Subtotal` (after discounts,
/// without shipping, taxes and tips). `Discount Amount` is not sent: it includes shipping
/// discounts. Cancelled orders (`Cancelled at` set) are filtered.
const SHOPIFY_CSV: Preset = Preset {
    name: "shopify-csv",
    rules: &[
        ("Name", "OrderId"),
        ("Created at", "EventDate"),
        ("Currency", "CurrencyCode"),
        ("Discount Code", "OrderPromoCode"),
        ("Subtotal", "(export subtotal)"),
        ("Discount Amount", "(order discount)"),
        ("Lineitem sku", "ItemSku"),
        ("Lineitem name", "ItemName"),
        ("Lineitem quantity", "ItemQuantity"),
        ("Lineitem price", "ItemPrice"),
        ("Lineitem discount", "ItemTotalDiscount"),
        ("Vendor", "ItemBrand"),
        ("Billing City", "CustomerCity"),
        ("Billing Country", "CustomerCountry"),
        ("Billing Zip", "CustomerPostCode"),
    ],
    child_rules: &[],
    filters: &[
        (&["Financial Status"], &["voided", "refunded"], false),
        (&["Cancelled at"], &[], true),
    ],
    join: None,
    // `Id` is on an order's first row only; `Name` is on every row, so rows group by Name
    // even when OrderId is mapped to Id.
    group_by: Some("Name"),
    apostrophe_columns: &["Billing Zip"],
    first_of_list_columns: &["Discount Code"],
    needs_timezone: false,
    needs: &[
        &["OrderId"],
        &["EventDate"],
        &["CurrencyCode"],
        &["ItemQuantity"],
        &["ItemPrice"],
    ],
};

/// Shopify Bulk Operations JSONL: order lines, and line-item lines joined by `__parentId`
/// (right under their order or anywhere later). Money as in `shopify-csv`: the line's
/// `totalDiscountSet` is its `ItemTotalDiscount`, the sale must equal `subtotalPriceSet`,
/// lines with `isGiftCard` are left out; the first discount code is the promo code.
const SHOPIFY_JSONL: Preset = Preset {
    name: "shopify-jsonl",
    rules: &[
        ("name", "OrderId"),
        ("createdAt", "EventDate"),
        ("currencyCode", "CurrencyCode"),
        ("discountCodes", "OrderPromoCode"),
        ("subtotalPriceSet.shopMoney.amount", "(export subtotal)"),
        ("totalDiscountsSet.shopMoney.amount", "(order discount)"),
    ],
    child_rules: &[
        ("sku", "ItemSku"),
        ("name", "ItemName"),
        ("quantity", "ItemQuantity"),
        ("originalUnitPriceSet.shopMoney.amount", "ItemPrice"),
        ("totalDiscountSet.shopMoney.amount", "ItemTotalDiscount"),
        ("isGiftCard", "(gift card)"),
        ("vendor", "ItemBrand"),
    ],
    filters: &[
        (&["displayFinancialStatus"], &["VOIDED", "REFUNDED"], false),
        (&["cancelledAt"], &[], true),
        (&["test"], &["true"], false),
    ],
    join: Some(("id", "__parentId")),
    group_by: None,
    apostrophe_columns: &[],
    first_of_list_columns: &[],
    needs_timezone: false,
    needs: &[],
};

/// WooCommerce exports, one row per item: "Advanced Order Export For WooCommerce" default
/// columns and SkyVerge "Customer/Order/Coupon Export" (names match loosely, so
/// `Order Number` and `order_number` are one rule). Dates carry no zone. Only unambiguous
/// product columns give ItemName: a bare `Name` is the customer's name in a store's own
/// export.
const WOOCOMMERCE: Preset = Preset {
    name: "woocommerce",
    rules: &[
        ("Order Number", "OrderId"),
        ("Order Date", "EventDate"),
        ("date", "EventDate"),
        ("Order Currency", "CurrencyCode"),
        ("Currency", "CurrencyCode"),
        ("Coupon Code", "OrderPromoCode"),
        ("SKU", "ItemSku"),
        ("Item SKU", "ItemSku"),
        ("Item Name", "ItemName"),
        ("Product Name", "ItemName"),
        ("Quantity", "ItemQuantity"),
        ("Item Quantity", "ItemQuantity"),
        ("Item Cost", "ItemPrice"),
        ("Item Price", "ItemPrice"),
        ("Billing City", "CustomerCity"),
        ("Billing Country", "CustomerCountry"),
        ("Billing Postcode", "CustomerPostCode"),
    ],
    child_rules: &[],
    filters: &[(
        &["Order Status", "status"],
        &["cancelled", "refunded", "failed", "trash"],
        false,
    )],
    join: None,
    group_by: None,
    apostrophe_columns: &["Billing Postcode"],
    first_of_list_columns: &["Coupon Code"],
    needs_timezone: true,
    needs: SALE_NEEDS,
};

/// The presets' names, for `[source] format`.
pub const FORMATS: &[&str] = &[
    "impact",
    "impact-batch",
    "shopify-csv",
    "shopify-jsonl",
    "woocommerce",
    "custom",
];

/// The preset whose columns a header fits best, among the CSV presets (`impact`,
/// `shopify-csv`, `woocommerce`): the one that recognises the most of the header's columns,
/// if it recognises at least three. For "without a config, which format is this?".
pub fn fitting_preset(header: &[String]) -> Option<&'static str> {
    let folded: std::collections::HashSet<String> =
        header.iter().map(|n| crate::model::fold_name(n)).collect();
    ["impact", "shopify-csv", "woocommerce"]
        .into_iter()
        .filter_map(|name| {
            let p = Profile::preset(name)?;
            let hits = p
                .rules
                .iter()
                .filter(|r| folded.contains(&crate::model::fold_name(&r.source)))
                .count();
            (hits >= 3).then_some((hits, name))
        })
        .max_by_key(|(hits, _)| *hits)
        .map(|(_, name)| name)
}

/// impact's FTP batch template names, so a file made for impact's own import works as is.
/// `(column, field, field when the file has item columns)`.
const IMPACT_ALIASES: &[(&str, &str, Option<&str>)] = &[
    ("Sku", "ItemSku", None),
    ("Category", "ItemCategory", None),
    ("SubCategory", "ItemSubCategory", None),
    ("Quantity", "ItemQuantity", None),
    ("ItemAmount", "ItemSubTotal", None),
    ("Amount", "Amount", Some("ItemSubTotal")),
];

fn field(name: &str) -> Field {
    // The preset tables are written against the catalog; a typo there is caught by the
    // `presets_name_real_fields` test. Internal slots are named in parentheses.
    match name {
        "(export subtotal)" => Field::EXPORT_SUBTOTAL,
        "(gift card)" => Field::GIFT_CARD,
        "(order discount)" => Field::ORDER_DISCOUNT_INFO,
        _ => Field::named(name).unwrap_or(Field::GROUP_KEY),
    }
}

impl Profile {
    fn empty(name: &str) -> Profile {
        Profile {
            name: name.into(),
            rules: Vec::new(),
            child_rules: Vec::new(),
            constants: Vec::new(),
            item_constants: Vec::new(),
            item_arrays: Vec::new(),
            join: None,
            filters: Vec::new(),
            needs_timezone: false,
            needs: Vec::new(),
        }
    }

    /// The `impact` preset: every API field under its own name (items un-indexed) and the
    /// FTP-template aliases.
    pub fn impact() -> Profile {
        let mut p = Profile::empty("impact");
        p.rules = Field::all()
            .filter(|f| *f != Field::AMOUNT)
            .map(|f| ColumnRule::new(f.name(), f))
            .collect();
        for &(source, target, with_items) in IMPACT_ALIASES {
            let mut rule = ColumnRule::new(source, field(target));
            rule.with_items = with_items.map(field);
            p.rules.push(rule);
        }
        p.item_arrays = vec!["Items".into(), "LineItems".into()];
        p
    }

    /// An empty preset: only `[mapping]` counts.
    pub fn custom() -> Profile {
        Profile::empty("custom")
    }

    fn from_preset(preset: &Preset) -> Profile {
        let mut p = Profile::empty(preset.name);
        let rule = |&(source, target): &(&str, &str)| {
            let mut r = ColumnRule::new(source, field(target));
            if preset.apostrophe_columns.contains(&source) {
                r.transform = Some(Transform::StripLeadingApostrophe);
            }
            if preset.first_of_list_columns.contains(&source) {
                r.transform = Some(Transform::FirstOfList);
            }
            r
        };
        p.rules = preset.rules.iter().map(rule).collect();
        p.child_rules = preset.child_rules.iter().map(rule).collect();
        if let Some(column) = preset.group_by {
            p.rules.push(ColumnRule::new(column, Field::GROUP_KEY));
        }
        p.join = preset.join.map(|(id, parent)| Join {
            id_key: id.into(),
            parent_key: parent.into(),
        });
        p.filters = preset
            .filters
            .iter()
            .enumerate()
            .map(|(i, (sources, skip, when_present))| Filter {
                sources: sources.iter().map(|s| s.to_string()).collect(),
                skip: skip.iter().map(|s| s.to_string()).collect(),
                when_present: *when_present,
                rows: false,
                slot: Field::filter(i),
            })
            .collect();
        p.needs_timezone = preset.needs_timezone;
        p.needs = preset
            .needs
            .iter()
            .map(|group| group.iter().map(|f| field(f)).collect())
            .collect();
        p
    }

    /// A preset by name (`None` for an unknown name).
    pub fn preset(name: &str) -> Option<Profile> {
        Some(match name {
            "impact" => Profile::impact(),
            "impact-batch" => {
                let mut p = Profile::impact();
                p.name = "impact-batch".into();
                p
            }
            "shopify-csv" => Profile::from_preset(&SHOPIFY_CSV),
            "shopify-jsonl" => Profile::from_preset(&SHOPIFY_JSONL),
            "woocommerce" => Profile::from_preset(&WOOCOMMERCE),
            "custom" => Profile::custom(),
            _ => return None,
        })
    }

    /// The profile for a format (an unknown name falls back to `impact`), with `[mapping]`
    /// and `[[filter]]` applied (`None` keeps the preset's filters).
    pub fn build(
        format: &str,
        mapping: &[(Field, Source)],
        filters: Option<&[FilterConfig]>,
    ) -> Profile {
        let mut p = Profile::preset(format).unwrap_or_else(Profile::impact);
        p.apply_mapping(mapping);
        if let Some(filters) = filters {
            p.set_filters(filters);
        }
        p
    }

    /// Replaces the preset's filters with the configured ones (an empty list turns them off).
    pub fn set_filters(&mut self, filters: &[FilterConfig]) {
        self.filters = filters
            .iter()
            .take(MAX_FILTERS)
            .enumerate()
            .map(|(i, f)| Filter {
                sources: vec![f.column.clone()],
                skip: f.skip.clone(),
                when_present: f.when_present,
                rows: f.rows,
                slot: Field::filter(i),
            })
            .collect();
    }

    /// Applies `[mapping]`: a mapped field drops the preset's rules for it.
    pub fn apply_mapping(&mut self, mapping: &[(Field, Source)]) {
        for (field, source) in mapping {
            for rules in [&mut self.rules, &mut self.child_rules] {
                rules.retain(|r| r.field != *field && r.with_items != Some(*field));
            }
            self.constants.retain(|(f, _)| f != field);
            self.item_constants.retain(|(f, _)| f != field);
            match source {
                Source::Column(c) => {
                    let mut rule = ColumnRule::new(c, *field);
                    rule.required = true;
                    // In a join, item fields are read from the child lines.
                    if self.join.is_some() && field.level() == Level::Item {
                        self.child_rules.push(rule);
                    } else {
                        self.rules.push(rule);
                    }
                }
                Source::Value(v) if field.level() == Level::Item => {
                    self.item_constants.push((*field, v.clone()))
                }
                Source::Value(v) => self.constants.push((*field, v.clone())),
            }
        }
    }

    /// Where each API field comes from, for `check --show` (CSV columns are resolved per file).
    pub fn describe_source(&self, field: Field) -> Option<String> {
        self.rules
            .iter()
            .chain(&self.child_rules)
            .find(|r| r.field == field)
            .map(|r| r.source.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_names_the_preset_it_fits() {
        let h = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            fitting_preset(&h("Name,Email,Financial Status,Paid at,Currency,Subtotal,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Created at")),
            Some("shopify-csv")
        );
        assert_eq!(
            fitting_preset(&h(
                "OrderId,EventDate,CurrencyCode,ItemSku,ItemQuantity,ItemPrice"
            )),
            Some("impact")
        );
        assert_eq!(fitting_preset(&h("a,b,c")), None);
    }

    #[test]
    fn presets_name_real_fields() {
        for preset in [&SHOPIFY_CSV, &SHOPIFY_JSONL, &WOOCOMMERCE] {
            for (source, target) in preset.rules.iter().chain(preset.child_rules) {
                assert!(
                    field(target) != Field::GROUP_KEY,
                    "{}: {source} → {target}",
                    preset.name
                );
            }
        }
        for name in FORMATS {
            assert!(Profile::preset(name).is_some(), "{name}");
        }
    }

    #[test]
    fn impact_preset_has_ftp_template_aliases() {
        let p = Profile::impact();
        let find = |s: &str| p.rules.iter().find(|r| r.source == s).cloned();
        assert_eq!(find("Sku").map(|r| r.field.name()), Some("ItemSku"));
        assert_eq!(find("ItemPrice").map(|r| r.field.name()), Some("ItemPrice"));
        let amount = find("Amount").unwrap();
        assert_eq!(amount.field, Field::AMOUNT);
        assert_eq!(amount.with_items.map(Field::name), Some("ItemSubTotal"));
    }

    #[test]
    fn mapping_replaces_preset_rules_for_its_field() {
        let mut p = Profile::impact();
        p.apply_mapping(&[
            (Field::ORDER_ID, Source::Column("Order Number".into())),
            (Field::CURRENCY_CODE, Source::Value("EUR".into())),
            (
                Field::named("ItemCategory").unwrap(),
                Source::Value("Toys".into()),
            ),
        ]);
        let order_rules: Vec<_> = p
            .rules
            .iter()
            .filter(|r| r.field == Field::ORDER_ID)
            .collect();
        assert_eq!(order_rules.len(), 1);
        assert_eq!(order_rules[0].source, "Order Number");
        assert!(order_rules[0].required);
        assert!(!p.rules.iter().any(|r| r.field == Field::CURRENCY_CODE));
        assert_eq!(p.constants, vec![(Field::CURRENCY_CODE, "EUR".into())]);
        assert_eq!(p.item_constants.len(), 1);
    }

    #[test]
    fn shopify_order_id_can_be_the_numeric_id() {
        let mut p = Profile::preset("shopify-csv").unwrap();
        p.apply_mapping(&[(Field::ORDER_ID, Source::Column("Id".into()))]);
        assert_eq!(p.describe_source(Field::ORDER_ID).as_deref(), Some("Id"));
    }
}
