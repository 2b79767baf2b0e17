#![no_main]
//! Fuzz target `wire_frame`: see `acs_fuzz::checks::wire_frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::wire_frame(data));
