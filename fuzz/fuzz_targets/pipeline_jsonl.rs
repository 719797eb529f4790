//! Fuzz: arbitrary bytes as a JSONL export through the JSONL presets (including the Shopify
//! bulk parent/child join).
#![no_main]
use impact_drop_core::fuzzing::run_pipeline;
use impact_drop_core::read::FileKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for preset in ["impact", "shopify-jsonl", "custom"] {
        run_pipeline(preset, FileKind::Jsonl, data);
    }
});
