#![no_main]
//! Fuzz target `kgc_descriptor`: see `acs_fuzz::checks::kgc_descriptor`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::kgc_descriptor(data));
