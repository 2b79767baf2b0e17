#![no_main]
//! Fuzz target `kgc_user_secret_key`: see `acs_fuzz::checks::kgc_user_secret_key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::kgc_user_secret_key(data));
