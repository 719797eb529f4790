//! Profiles: which export column (or JSON path) feeds which API field, defined as data.
//!
//! A profile is a table of [`ColumnRule`]s plus constants. Presets (`impact`, later Shopify and
//! WooCommerce) are tables built here; `[mapping]` in the config adds to or overrides any of
//! them, and `custom` is an empty preset plus `[mapping]`. `map` applies a profile to rows.

pub mod map;

use crate::config::{Config, Source};
use crate::model::{Field, Level};

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
}

/// A complete input profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub rules: Vec<ColumnRule>,
    /// Order-level values every conversion gets (they win over `[defaults]`).
    pub constants: Vec<(Field, String)>,
    /// Item-level values every item gets.
    pub item_constants: Vec<(Field, String)>,
    /// JSON keys whose value is an array of item objects.
    pub item_arrays: Vec<String>,
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

impl Profile {
    /// The `impact` preset: every API field under its own name (items un-indexed) and the
    /// FTP-template aliases.
    pub fn impact() -> Profile {
        let mut rules: Vec<ColumnRule> = Field::all()
            .filter(|f| *f != Field::AMOUNT)
            .map(|field| ColumnRule {
                source: field.name().to_owned(),
                field,
                with_items: None,
                required: false,
            })
            .collect();
        for &(source, field, with_items) in IMPACT_ALIASES {
            let (Some(field), with_items) =
                (Field::named(field), with_items.and_then(Field::named))
            else {
                continue;
            };
            rules.push(ColumnRule {
                source: source.to_owned(),
                field,
                with_items,
                required: false,
            });
        }
        Profile {
            name: "impact".into(),
            rules,
            constants: Vec::new(),
            item_constants: Vec::new(),
            item_arrays: vec!["Items".into(), "LineItems".into()],
        }
    }

    /// An empty preset: only `[mapping]` counts.
    pub fn custom() -> Profile {
        Profile {
            name: "custom".into(),
            rules: Vec::new(),
            constants: Vec::new(),
            item_constants: Vec::new(),
            item_arrays: Vec::new(),
        }
    }

    /// The profile the config selects, with its `[mapping]` applied.
    pub fn from_config(config: &Config) -> Profile {
        let mut p = match config.source.format.as_str() {
            "custom" => Profile::custom(),
            _ => Profile::impact(),
        };
        p.apply_mapping(&config.mapping);
        p
    }

    /// Applies `[mapping]`: a mapped field drops the preset's rules for it.
    pub fn apply_mapping(&mut self, mapping: &[(Field, Source)]) {
        for (field, source) in mapping {
            self.rules
                .retain(|r| r.field != *field && r.with_items != Some(*field));
            self.constants.retain(|(f, _)| f != field);
            self.item_constants.retain(|(f, _)| f != field);
            match source {
                Source::Column(c) => self.rules.push(ColumnRule {
                    source: c.clone(),
                    field: *field,
                    with_items: None,
                    required: true,
                }),
                Source::Value(v) if field.level() == Level::Item => {
                    self.item_constants.push((*field, v.clone()))
                }
                Source::Value(v) => self.constants.push((*field, v.clone())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
