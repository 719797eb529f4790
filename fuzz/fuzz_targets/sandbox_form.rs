//! Fuzz: the sandbox's contract checks on arbitrary form bodies.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    impact_drop_core::fuzzing::run_sandbox_form(data);
});
