#![no_main]
//! Fuzz target `wire_body`: see `acs_fuzz::checks::wire_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::wire_body(data));
