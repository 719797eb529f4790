//! Fuzz: impact's answers (status, headers, body) → what the submitter does.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    impact_drop_core::fuzzing::run_response(data);
});
