#![no_main]
//! Fuzz target `kgc_registration_response`: see `acs_fuzz::checks::kgc_registration_response`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::kgc_registration_response(data));
