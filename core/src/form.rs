//! The exact `application/x-www-form-urlencoded` body of a conversion, fields in a stable order.
//!
//! Order-level fields come first in catalog order (CampaignId, ActionTrackerId, …, OrderId,
//! EventDate, CurrencyCode, …), then each item's fields with its 1-based index (`ItemSku1`,
//! `ItemQuantity1`, `ItemPrice1`, `ItemSku2`, …). Values are percent-encoded as UTF-8; letters,
//! digits, `-._~` and `:` are left as they are, so dates stay readable
//! (`EventDate=2023-02-15T22:55:32-08:00`), while `+` (as in `+01:00`), `&`, `=`, `%` and
//! spaces are always encoded and can never be misread.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::model::Field;
use crate::validate::Conversion;

const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

/// Encodes the conversion as impact receives it.
pub fn encode(conversion: &Conversion) -> String {
    let mut out = String::with_capacity(256);
    let mut pair = |field: Field, index: Option<usize>, value: &str| {
        if !out.is_empty() {
            out.push('&');
        }
        match index {
            Some(i) => field.push_item_param(i, &mut out),
            None => out.push_str(field.name()),
        }
        out.push('=');
        out.extend(utf8_percent_encode(value, VALUE));
    };
    for (field, value) in conversion.fields().filter(|(f, _)| f.is_api()) {
        pair(field, None, value);
    }
    for (i, item) in conversion.items().iter().enumerate() {
        for (field, value) in item.iter() {
            pair(field, Some(i + 1), value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Field, FieldSet, LineHash, LineRef, OrderDraft};
    use crate::settings::Endpoint;
    use crate::validate::{validate, Rules};

    /// The seed's example: "2 toy sets at $40 USD each and 1 doll at $6.99 USD".
    pub const SEED_BODY: &str = "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000\
        &OrderId=TOYS-1001&EventDate=2023-02-15T22:55:32-08:00&CurrencyCode=USD\
        &ItemSku1=TOYSET&ItemQuantity1=2&ItemPrice1=40.00\
        &ItemSku2=DOLL&ItemQuantity2=1&ItemPrice2=6.99";

    fn conversion(order: &[(&str, &str)], items: &[&[(&str, &str)]]) -> Conversion {
        let set = |pairs: &[(&str, &str)]| {
            FieldSet::from_pairs(pairs.iter().map(|(k, v)| (Field::lookup(k).unwrap(), *v)))
        };
        let mut rules = Rules::new(Endpoint::Partner);
        rules.defaults = vec![
            (Field::CAMPAIGN_ID, "1000".into()),
            (Field::ACTION_TRACKER_ID, "2000".into()),
            (Field::MEDIA_PARTNER_ID, "3000".into()),
            (Field::CURRENCY_CODE, "USD".into()),
        ];
        let draft = OrderDraft {
            order_id: "x".into(),
            campaign_id: Some("1000".into()),
            event: Some((Field::ACTION_TRACKER_ID, "2000".into())),
            order: set(order),
            items: items.iter().map(|i| (2, set(i))).collect(),
            lines: vec![LineRef {
                line: 2,
                hash: LineHash::default(),
            }],
            problems: vec![],
        };
        validate(draft, &rules).unwrap()
    }

    #[test]
    fn golden_seed_body() {
        let c = conversion(
            &[
                ("OrderId", "TOYS-1001"),
                ("EventDate", "2023-02-15T22:55:32-08:00"),
            ],
            &[
                &[
                    ("ItemQuantity", "2"),
                    ("ItemSku", "TOYSET"),
                    ("ItemPrice", "40.00"),
                ],
                &[
                    ("ItemPrice", "6.99"),
                    ("ItemSku", "DOLL"),
                    ("ItemQuantity", "1"),
                ],
            ],
        );
        assert_eq!(encode(&c), SEED_BODY);
    }

    #[test]
    fn reserved_characters_are_encoded() {
        let c = conversion(
            &[
                ("OrderId", "A&B=C+D 100%"),
                ("EventDate", "2023-02-15T22:55:32+01:00"),
                ("Note", "café/ü\n#1"),
                ("Amount", "5"),
            ],
            &[],
        );
        assert_eq!(
            encode(&c),
            "CampaignId=1000&ActionTrackerId=2000&MediaPartnerId=3000\
             &OrderId=A%26B%3DC%2BD%20100%25&EventDate=2023-02-15T22:55:32%2B01:00\
             &CurrencyCode=USD&Amount=5&Note=caf%C3%A9%2F%C3%BC%0A%231"
        );
    }
}
