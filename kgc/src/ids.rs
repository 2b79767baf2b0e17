//! Pseudonyms: 64-bit names derived from Ed25519 public keys (paper §4.1).
//!
//! A user's pseudonym `UN_i` is the first 8 bytes (big-endian) of
//! `SHA3-256("ACS-v1 user pseudonym" || ed25519_public_key)`; a server's `SN_l` is the same
//! with the tag `"ACS-v1 server pseudonym"` over the server's Ed25519 identity key. Because
//! the name is bound to a key, registering a pseudonym needs proof of possession of that
//! key, and nobody can claim a name whose key they do not hold (short of a 2^64 preimage
//! search, which first-come registration also defeats for names already taken).
//! Pseudonym 0 is reserved: the exchange computation uses it for "no target" (covers).

use std::fmt;

use ed25519_dalek::VerifyingKey;
use sha3::{Digest, Sha3_256};

use crate::error::{malformed, KgcError, Result};

const USER_TAG: &[u8] = b"ACS-v1 user pseudonym";
const SERVER_TAG: &[u8] = b"ACS-v1 server pseudonym";

/// A user's 64-bit pseudonym `UN_i`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserPseudonym(u64);

/// An exchange server's 64-bit pseudonym `SN_l`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerPseudonym(u64);

fn derive(tag: &[u8], key: &[u8; 32]) -> Option<u64> {
    let digest = Sha3_256::new()
        .chain_update(tag)
        .chain_update(key)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    match u64::from_be_bytes(first) {
        0 => None,
        v => Some(v),
    }
}

macro_rules! pseudonym_common {
    ($t:ident, $tag:expr, $what:literal) => {
        impl $t {
            /// Derives the pseudonym of an Ed25519 public key.
            ///
            /// Fails only for the (2^-64 likely) key whose digest gives the reserved 0.
            pub fn derive(public_key: &VerifyingKey) -> Result<Self> {
                derive($tag, public_key.as_bytes())
                    .map(Self)
                    .ok_or_else(|| malformed($what, "public key derives the reserved pseudonym 0"))
            }

            /// The pseudonym as a number (nonzero).
            pub fn get(self) -> u64 {
                self.0
            }

            /// Rebuilds a pseudonym from its number, refusing the reserved 0.
            pub fn from_u64(value: u64) -> Result<Self> {
                if value == 0 {
                    Err(malformed($what, "pseudonym 0 is reserved"))
                } else {
                    Ok(Self(value))
                }
            }

            /// Big-endian bytes: the encoding used in every hash, signature and wire format.
            pub fn to_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }

            /// Inverse of [`to_bytes`](Self::to_bytes), refusing the reserved 0.
            pub fn from_bytes(bytes: [u8; 8]) -> Result<Self> {
                Self::from_u64(u64::from_be_bytes(bytes))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:016x})"), self.0)
            }
        }
    };
}

pseudonym_common!(UserPseudonym, USER_TAG, "user pseudonym");
pseudonym_common!(ServerPseudonym, SERVER_TAG, "server pseudonym");

/// Bits of a user's address: the low bits of its pseudonym, on which the exchange round
/// matches senders with receivers (`acs_engine::round::ADDRESS_BITS`, the same rule; a
/// test in `acs-transport` checks that the two agree). Registration keeps addresses
/// unique and refuses address 0 ([`crate::Registry::check_address`]), so an address
/// names one registered user. 32 bits: at a million users a new key's address is taken
/// with probability 2^-12, and the user makes another key.
pub const ADDRESS_BITS: u32 = 32;

impl UserPseudonym {
    /// The user's address ([`ADDRESS_BITS`]): the low 32 bits of the pseudonym.
    pub fn address(self) -> u32 {
        self.0 as u32
    }

    /// Derives the pseudonym of raw public-key bytes without validating the key (for
    /// decoding stored records whose key was validated when it registered).
    pub(crate) fn derive_from_bytes(public_key: &[u8; 32]) -> Option<Self> {
        derive(USER_TAG, public_key).map(Self)
    }
}

/// Which way a sealed share travels. Each direction has its own key and tag, so an
/// envelope cannot be reflected back to its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    /// From a user to an exchange server.
    UserToServer = 1,
    /// From an exchange server back to a user.
    ServerToUser = 2,
}

impl Direction {
    pub(crate) fn byte(self) -> u8 {
        self as u8
    }
}

/// Parses a 32-byte Ed25519 public key, refusing invalid and small-order ("weak") keys.
pub(crate) fn parse_ed25519(bytes: &[u8; 32], what: &'static str) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| KgcError::InvalidPublicKey(what))?;
    if key.is_weak() {
        return Err(KgcError::InvalidPublicKey(what));
    }
    Ok(key)
}
