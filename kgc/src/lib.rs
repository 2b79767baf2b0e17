//! ACS key generation centres (paper §4.1, design §4).
//!
//! Will hold: per-server master secrets, Sakai–Ohgishi–Kasahara identity-based key
//! agreement on BLS12-381, pseudonym registration with proof of possession, per-round
//! key derivation and AEAD sealing of shares, and server descriptors. No I/O.
