//! Fuzz: arbitrary bytes as a CSV export through every CSV preset (read → map → group →
//! validate → encode). Any panic is a bug: bad input must become a problem, never a crash.
#![no_main]
use impact_drop_core::fuzzing::run_pipeline;
use impact_drop_core::read::FileKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for preset in ["impact", "shopify-csv", "woocommerce", "custom"] {
        run_pipeline(preset, FileKind::Csv, data);
    }
});
