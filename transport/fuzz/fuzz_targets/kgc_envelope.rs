#![no_main]
//! Fuzz target `kgc_envelope`: see `acs_fuzz::checks::kgc_envelope`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::kgc_envelope(data));
