#![no_main]
//! Fuzz target `kgc_registry`: see `acs_fuzz::checks::kgc_registry`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::kgc_registry(data));
