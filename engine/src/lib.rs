//! The ACS three-party secure computation engine (sans-IO).
//!
//! Three exchange servers hold 2-out-of-3 replicated boolean shares (Araki et al., CCS
//! 2016). This crate holds everything they compute over those shares; it never performs
//! network I/O itself and talks through the [`channel::Channel`] trait.
//!
//! - [`share`]: shares, bitsliced; users' XOR sharing and reconstruction.
//! - [`party`]: one party, its pairwise random streams, the AND gate.
//! - [`circuits`]: batched less-than, equality, multiplexer.
//! - [`declassify`]: the only way to open values, with a reason, checked as they are
//!   opened (a party that lies while opening is caught in that round), logged and
//!   cross-checked.
//! - [`shuffle`]: oblivious shuffle of shared rows.
//! - [`sort`]: oblivious quicksort and the bitonic baseline.
//! - [`verify`]: malicious mode: every AND gate verified (triples, buckets, sacrifice)
//!   before anything depending on it is opened.
//! - [`round`]: the exchange round (matching, store, routing), its ideal version, and
//!   the online-set consistency check.
//! - [`alloc`]: the binaries' allocator (large blocks as transparent huge pages).

pub mod alloc;
pub mod channel;
pub mod circuits;
pub mod compare;
pub mod declassify;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod party;
pub mod prg;
pub mod round;
pub mod share;
pub mod shuffle;
pub mod shuffle_mac;
pub mod simd;
pub mod sort;
pub mod testing;
pub mod transpose;
pub mod verify;

pub use channel::{Channel, ChannelError, PartyId, Peer};
pub use declassify::{resolve_complaint, Blame, OpeningComplaint, Reason, SentRecord};
#[cfg(feature = "fault-injection")]
pub use declassify::{LieKind, OpeningFault};
pub use error::EngineError;
#[cfg(feature = "fault-injection")]
pub use fault::{ComputeFault, ComputeSite};
pub use party::{CommStats, Party, Phase};
pub use share::{Shared, SharedKeys};
pub use verify::{SecurityMode, VerifyStats};
