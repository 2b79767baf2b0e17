//! The crate's one error type.

use std::path::PathBuf;

use crate::ids::{ServerPseudonym, UserPseudonym};

/// Everything that can go wrong in `acs-kgc`.
///
/// Variants that describe bad input from the network (`Malformed`, `BadSignature`,
/// `StaleRequest`, `OpenFailed`, ...) are safe to report to the peer as a short reason
/// before closing the connection; none of them carries secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KgcError {
    /// Reading or writing the master-secret file failed.
    #[error("master secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The master-secret file can be read by group or others (mode shown in octal).
    #[error("master secret file {path} has mode {mode:o}; it must be readable by its owner only (chmod 600)")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Master-secret files are only supported where Unix permissions can be enforced.
    #[error("master secret files need Unix file permissions, which this platform lacks")]
    UnsupportedPlatform,
    /// A byte encoding was malformed: wrong magic, version, length or field.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure was being decoded.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// An encoding announced or carried more than the cap allows.
    #[error("{what} too large: {len} > {max}")]
    TooLarge {
        /// Which structure.
        what: &'static str,
        /// The length found.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A public key (Ed25519, X25519 or a group element) was not valid.
    #[error("invalid {0} public key")]
    InvalidPublicKey(&'static str),
    /// A signature (proof of possession or descriptor signature) did not verify.
    #[error("{0} signature does not verify")]
    BadSignature(&'static str),
    /// A registration request's timestamp lies outside the accepted window.
    #[error("stale registration request: timestamp {timestamp}, server time {now}, window {window_secs} s")]
    StaleRequest {
        /// The request's timestamp (Unix seconds).
        timestamp: u64,
        /// The server's clock (Unix seconds).
        now: u64,
        /// The accepted distance either side.
        window_secs: u64,
    },
    /// A message addressed to another exchange server.
    #[error("message for server {got}, this is server {expected}")]
    WrongServer {
        /// This server.
        expected: ServerPseudonym,
        /// The server named in the message.
        got: ServerPseudonym,
    },
    /// A registration request for a master-secret epoch this key centre does not hold.
    #[error("request for master-secret epoch {got}, this key centre serves epoch {expected}")]
    WrongEpoch {
        /// The epoch this key centre serves.
        expected: u32,
        /// The epoch the request names.
        got: u32,
    },
    /// The pseudonym in a request is not the one derived from the public key it carries.
    #[error("pseudonym {claimed} is not derived from the presented public key")]
    PseudonymMismatch {
        /// The pseudonym the request claimed.
        claimed: UserPseudonym,
    },
    /// The pseudonym is already registered under a different public key.
    #[error("pseudonym {0} is already registered under another key")]
    PseudonymTaken(UserPseudonym),
    /// The pseudonym's address (its low 32 bits, `ids::ADDRESS_BITS`) is another
    /// registered user's: the user must make a new identity key.
    #[error("the address {:08x} of pseudonym {user} is already {holder}'s: make a new identity key", user.address())]
    AddressTaken {
        /// The pseudonym that asked to register.
        user: UserPseudonym,
        /// The registered user who holds the address.
        holder: UserPseudonym,
    },
    /// No registry entry for this pseudonym.
    #[error("unknown pseudonym {0}")]
    UnknownPseudonym(UserPseudonym),
    /// An AEAD envelope or encrypted message failed to open: tampered, replayed from
    /// another round, misrouted, wrong direction, or under the wrong key.
    #[error("{0} failed to open (wrong key, round, direction, party, or tampered)")]
    OpenFailed(&'static str),
    /// An X25519 exchange produced a non-contributory (low-order) shared secret.
    #[error("non-contributory X25519 key exchange")]
    NonContributory,
    /// A delivered user secret key does not match the server's master public key.
    #[error("delivered user secret key does not verify against the server's master public key")]
    InvalidUserKey,
}

/// Shorthand for results in this crate.
pub type Result<T, E = KgcError> = std::result::Result<T, E>;

pub(crate) fn malformed(what: &'static str, reason: &'static str) -> KgcError {
    KgcError::Malformed { what, reason }
}
