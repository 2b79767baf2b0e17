#![no_main]
//! Fuzz target `engine_output`: see `acs_fuzz::checks::engine_output`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::engine_output(data));
