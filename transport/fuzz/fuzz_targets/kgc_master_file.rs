#![no_main]
//! Fuzz target `kgc_master_file`: see `acs_fuzz::checks::kgc_master_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::kgc_master_file(data));
