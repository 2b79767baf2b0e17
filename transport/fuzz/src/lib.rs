//! Fuzz checks for every ACS parser of untrusted bytes (see docs/fuzzing.md). The fuzz
//! targets are one line each; the checks live in [`checks`] so the replay tests can
//! include the very same code.

pub mod checks;
