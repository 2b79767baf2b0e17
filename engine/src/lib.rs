//! The ACS three-party secure computation engine (sans-IO).
//!
//! Three exchange servers hold 2-out-of-3 replicated boolean shares (Araki et al., CCS
//! 2016). This crate holds everything they compute over those shares; it never performs
//! network I/O itself and talks through the [`channel::Channel`] trait.

pub mod channel;
