//! The engine's one error type.

use crate::channel::{ChannelError, PartyId};
use crate::declassify::OpeningComplaint;
use crate::round::consistency::{EquivocationProof, SignedStatement};

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
    /// The parties' digests of everything opened disagree. Every opening was already
    /// cross-checked, so honest parties' digests are equal: a peer whose digest differs
    /// from this party's while the other peer's agrees misreported it (`suspect`, seen
    /// over its authenticated link); when both peers differ, nobody is named.
    #[error("opened values disagree across parties (suspect: {suspect:?})")]
    OpeningMismatch {
        /// The peer whose reported digest contradicts the other two, if exactly one does.
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
    /// A peer signed two different statements about its online set for one round: a
    /// proof anyone holding its identity key can check.
    #[error("equivocation: {0}")]
    Equivocation(Box<EquivocationProof>),
    /// A peer signed a final online set other than the intersection of the three agreed
    /// sets (a signed, checkable claim that contradicts the peer's own signed set).
    #[error("{} signed a final online set that is not the intersection of the agreed sets", .0.statement.signer)]
    WrongFinalSet(Box<SignedStatement>),
    /// The shares are inconsistent in a way that shows one of two parties deviated,
    /// without showing which: both are named as suspects and neither is blamed alone.
    #[error("{what}: {} or {} deviated", .suspects[0], .suspects[1])]
    Deviation {
        /// What was found.
        what: String,
        /// The two parties, one of which deviated.
        suspects: [PartyId; 2],
    },
    /// The caller passed inputs that do not fit the protocol (sizes, widths).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Malicious mode: a check of the computation failed (an AND gate or triple, an
    /// opened value inside the verification, the coin toss, or a peer's report of a
    /// failure), so some party deviated. Every honest party returns this in the same
    /// round; nothing computed since the last successful verification may be opened or
    /// released. `culprit` is set only where this party holds proof (a peer's message
    /// that contradicts that peer's own commitment); a failed sacrifice shows only that
    /// someone deviated.
    #[error("verification failed: {what}")]
    VerificationFailed {
        /// Which check failed.
        what: String,
        /// The party proven to have deviated, if any.
        culprit: Option<PartyId>,
    },
}
