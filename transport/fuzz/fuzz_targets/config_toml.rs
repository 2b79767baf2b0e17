#![no_main]
//! Fuzz target `config_toml`: see `acs_fuzz::checks::config_toml`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_fuzz::checks::config_toml(data));
