//! The engine's one error type.

use crate::channel::{ChannelError, PartyId};
use crate::declassify::OpeningComplaint;

/// Why a three-party computation stopped. Any error aborts the whole computation: no
/// partial output is ever returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The link to a peer failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A peer sent a message of the wrong size for the current protocol step.
    #[error("{from} sent {got} bytes where {expected} were expected")]
    WrongLength {
        /// The sender.
        from: PartyId,
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The parties opened different values: some party sent wrong shares while opening.
    /// `suspect` is the party whose shares explain the disagreement, when the pattern of
    /// digests names one.
    #[error("opened values disagree across parties (suspect: {suspect:?})")]
    OpeningMismatch {
        /// The party that most likely sent wrong values.
        suspect: Option<PartyId>,
    },
    /// In an opening, the value from this party's next party and the check from its
    /// previous party disagree: one of the two lied. Nothing was opened. The complaint
    /// is meant for the other two parties, who settle it with
    /// [`crate::declassify::resolve_complaint`].
    #[error("opening check failed: {0}")]
    OpeningCheckFailed(OpeningComplaint),
    /// A peer sent something that contradicts what it committed to or what the protocol
    /// allows.
    #[error("{peer} misbehaved: {what}")]
    PeerMisbehaved {
        /// The peer.
        peer: PartyId,
        /// What it did.
        what: String,
    },
    /// The caller passed inputs that do not fit the protocol (sizes, widths).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
