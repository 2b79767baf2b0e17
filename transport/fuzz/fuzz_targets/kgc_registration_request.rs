#![no_main]
//! Fuzz target `kgc_registration_request`: see `acs_fuzz::checks::kgc_registration_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::kgc_registration_request(data));
