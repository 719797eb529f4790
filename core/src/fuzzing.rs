//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`) and their regression
//! tests: each runs one stage on arbitrary bytes and must never panic. Not in the shipped
//! binary.

use std::path::Path;

use crate::group::Keying;
use crate::intake::{process_reader, Stages};
use crate::model::Field;
use crate::profile::Profile;
use crate::read::{decode, Decoding, FileKind};
use crate::settings::Endpoint;
use crate::validate::Rules;
use crate::{contract, form, response};

fn stages(preset: &str) -> Stages {
    let mut profile = Profile::preset(preset).unwrap_or_else(Profile::impact);
    if preset == "custom" {
        profile.apply_mapping(&[
            (
                Field::ORDER_ID,
                crate::settings::Source::Column("order.id".into()),
            ),
            (
                Field::EVENT_DATE,
                crate::settings::Source::Column("Date".into()),
            ),
            (
                Field::ITEM_SKU,
                crate::settings::Source::Column("items[].sku".into()),
            ),
            (
                Field::ITEM_PRICE,
                crate::settings::Source::Column("price".into()),
            ),
            (
                Field::ITEM_QUANTITY,
                crate::settings::Source::Value("1".into()),
            ),
        ]);
    }
    let mut rules = Rules::new(Endpoint::Partner);
    rules.defaults = vec![
        (Field::CAMPAIGN_ID, "1".into()),
        (Field::ACTION_TRACKER_ID, "2".into()),
        (Field::MEDIA_PARTNER_ID, "3".into()),
        (Field::CURRENCY_CODE, "USD".into()),
    ];
    rules.timezone = Some(chrono_tz::Europe::Paris);
    rules.date_formats = vec!["%d/%m/%Y %H:%M".into()];
    rules.decimal_comma = preset == "woocommerce";
    rules.strip_currency_symbols = preset == "custom";
    Stages {
        keying: Keying {
            event_fields: rules.event_fields(),
            default_campaign: Some("1".into()),
            default_event: Some((Field::ACTION_TRACKER_ID, "2".into())),
        },
        profile,
        rules,
        decoding: Decoding::default(),
        delimiter: None,
        sale: Default::default(),
    }
}

/// The whole pipeline for one file's bytes with one preset; every body is encoded.
pub fn run_pipeline(preset: &str, kind: FileKind, data: &[u8]) {
    let stages = stages(preset);
    let Ok(input) = decode(std::io::Cursor::new(data.to_vec()), stages.decoding) else {
        return;
    };
    let mut sink = |c: crate::validate::Conversion| {
        let _ = form::encode(&c);
    };
    let _ = process_reader(&stages, Path::new("fuzz"), kind, input, &mut sink);
}

/// impact's answer: 2 bytes of status, then `name: value` header lines up to a blank line,
/// then the body.
pub fn run_response(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let status = 100 + u16::from_le_bytes([data[0], data[1]]) % 500;
    let rest = &data[2..];
    let split = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(rest.len());
    let head = String::from_utf8_lossy(&rest[..split]).into_owned();
    let body = rest.get(split + 2..).unwrap_or_default();
    let lookup = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let _ = response::interpret(status, &lookup, body, 1_700_000_000);
}

/// The sandbox's contract checks on a form body.
pub fn run_sandbox_form(data: &[u8]) {
    let fields: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    let _ = contract::check("partner", &fields);
    let _ = contract::check("brand", &fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs that once crashed a fuzz target, or that probe the corners they explore.
    const CORPUS: &[&[u8]] = &[
        b"",
        b"\n\n\n",
        b"OrderId\n\"",
        b"OrderId,EventDate\nA,\"2025-01-01T00:00:00Z",
        b"\xEF\xBB\xBF\xFF\xFE\x00",
        b"sep=",
        b"sep=\n",
        b"OrderId,ItemSku,ItemQuantity,ItemPrice\nA,X,99999999999999999999999999999999,1e400\n",
        b"OrderId,EventDate,ItemPrice,ItemQuantity\nA,2025-03-30 02:30,1.234,56,1\n",
        b"{\"id\":1,\"__parentId\":{\"a\":[1,2]}}\n{\"__parentId\":\"1\",\"sku\":[[]]}",
        b"{\"Items\":[1,{\"ItemSku\":{}}],\"OrderId\":[\"A\",\"B\"]}",
        b"{\"order\":{\"id\":null},\"items\":[{\"sku\":\"\\u0000\"}]}",
    ];

    #[test]
    fn the_regression_corpus_never_panics() {
        for data in CORPUS {
            for preset in ["impact", "shopify-csv", "woocommerce", "custom"] {
                run_pipeline(preset, FileKind::Csv, data);
            }
            for preset in ["impact", "shopify-jsonl", "custom"] {
                run_pipeline(preset, FileKind::Jsonl, data);
            }
            run_response(data);
            run_sandbox_form(data);
        }
    }
}
