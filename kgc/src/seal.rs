//! Per-round keys and sealed shares.
//!
//! From a [`LongTermKey`] `K` shared by user `UN` and server `SN`, each round `r` and
//! direction `d` (1 = user→server, 2 = server→user) get
//!
//! ```text
//! k_{r,d} || tag_{r,d} = SHAKE256("ACS-v1 round keys" || K || r || d || SN || UN, 48 bytes)
//! ```
//!
//! (`r` as 8 bytes big-endian, `d` one byte; every input has a fixed length, so the
//! encoding is unambiguous, and the input fits one Keccak block, so deriving both costs one
//! permutation. Keyed by `K`, SHAKE256 is a PRF; the 16 public tag bytes say nothing about
//! the 32 key bytes beside them.)
//!
//! An [`Envelope`] is `0x01 || tag (16) || nonce (24) || XChaCha20Poly1305(k_{r,d}, nonce,
//! share, ad)` with `ad = "ACS-v1 share" || 0x01 || r || d || SN || UN || tag`. The nonce is
//! random, so sealing twice in one round (a retry) never reuses a nonce.
//!
//! **Why a tag and not the pseudonym**: an entry relay must never learn pseudonyms
//! (design §1), yet the server must know which key opens an envelope. The tag changes every
//! round and direction and looks random to anyone without `K`, so the relay cannot link it
//! to a pseudonym or to the same user's envelopes in other rounds. The server builds a
//! [`TagIndex`](crate::TagIndex) for the round from its registry and looks tags up there.
//!
//! A key of master-secret epoch `e ≥ 1` (`docs/kgc.md` §11) seals version 2 instead:
//! `0x02 || e (4) || tag || nonce || ciphertext`, with `ad = "ACS-v1 share" || 0x02 || e
//! || r || d || SN || UN || tag`, so the server knows which epoch's tag index to look in
//! (and can name a retired epoch) before it knows whose envelope it is. Epoch 0 keeps
//! version 1 byte for byte.
//!
//! Opening fails ([`KgcError::OpenFailed`]) for an envelope sealed for another round,
//! direction, user or server, under another key, or changed in any byte. Replays within
//! one round carry the same tag: the caller accepts one envelope per tag per round.

use core::fmt;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::CryptoRngCore;
use sha3::digest::{ExtendableOutput, Update, XofReader};
use sha3::Shake256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{malformed, KgcError, Result};
use crate::ids::Direction;
use crate::sok::LongTermKey;

const VERSION: u8 = 1;
const VERSION_EPOCH: u8 = 2;
const TAG_BYTES: usize = 16;
const NONCE_BYTES: usize = 24;
const HEADER_BYTES: usize = 1 + TAG_BYTES + NONCE_BYTES;
/// Bytes an envelope adds to its share (epoch 0, version 1).
pub const ENVELOPE_OVERHEAD: usize = HEADER_BYTES + 16;
/// Bytes an envelope of a key of epoch 1 or later adds to its share (version 2: the
/// epoch, 4 bytes, follows the version byte).
pub const ENVELOPE_OVERHEAD_EPOCH: usize = ENVELOPE_OVERHEAD + 4;

/// Where the tag starts: after the version byte, and after the epoch in version 2.
fn tag_at(version: u8) -> usize {
    if version == VERSION_EPOCH {
        5
    } else {
        1
    }
}
/// The largest share [`LongTermKey::seal`] accepts and [`Envelope::from_bytes`] admits.
pub const MAX_SHARE_BYTES: usize = 1 << 20;

/// The per-round, per-direction routing tag of an envelope (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoundTag(pub [u8; TAG_BYTES]);

impl fmt::Debug for RoundTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoundTag(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A sealed share, as it travels (layout in the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    bytes: Vec<u8>,
}

impl Envelope {
    /// Checks version and length (at most [`MAX_SHARE_BYTES`] of share); the AEAD checks
    /// everything else when the envelope is opened.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::check(bytes)?;
        Ok(Envelope {
            bytes: bytes.to_vec(),
        })
    }

    /// Like [`from_bytes`](Self::from_bytes), taking ownership of the buffer (no copy).
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self> {
        Self::check(&bytes)?;
        Ok(Envelope { bytes })
    }

    fn check(bytes: &[u8]) -> Result<()> {
        let overhead = match bytes.first() {
            Some(&VERSION) => ENVELOPE_OVERHEAD,
            Some(&VERSION_EPOCH) => ENVELOPE_OVERHEAD_EPOCH,
            Some(_) => return Err(malformed("envelope", "unknown version")),
            None => return Err(malformed("envelope", "shorter than its header")),
        };
        if bytes.len() > MAX_SHARE_BYTES + overhead {
            return Err(KgcError::TooLarge {
                what: "envelope",
                len: bytes.len(),
                max: MAX_SHARE_BYTES + overhead,
            });
        }
        if bytes.len() < overhead {
            return Err(malformed("envelope", "shorter than its header"));
        }
        if bytes[0] == VERSION_EPOCH && epoch_field(bytes) == 0 {
            // Epoch 0 has exactly one encoding (version 1).
            return Err(malformed("envelope", "version 2 naming epoch 0"));
        }
        Ok(())
    }

    /// The master-secret epoch of the key that sealed it (public; 0 for version 1).
    pub fn epoch(&self) -> u32 {
        if self.bytes[0] == VERSION_EPOCH {
            epoch_field(&self.bytes)
        } else {
            0
        }
    }

    fn header_bytes(&self) -> usize {
        tag_at(self.bytes[0]) + TAG_BYTES + NONCE_BYTES
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the envelope, returning its wire bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The routing tag (public).
    pub fn tag(&self) -> RoundTag {
        let at = tag_at(self.bytes[0]);
        RoundTag(self.bytes[at..at + TAG_BYTES].try_into().expect("16 bytes"))
    }

    /// Length of the share inside.
    pub fn share_len(&self) -> usize {
        self.bytes.len() - self.header_bytes() - 16
    }
}

fn epoch_field(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[1..5].try_into().expect("checked length"))
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("epoch", &self.epoch())
            .field("tag", &self.tag())
            .field("share_len", &self.share_len())
            .finish()
    }
}

/// `k_{r,d} || tag_{r,d}`, wiped on drop.
fn derive(key: &LongTermKey, round: u64, direction: Direction) -> Zeroizing<[u8; 48]> {
    let mut xof = Shake256::default();
    xof.update(b"ACS-v1 round keys");
    xof.update(key.secret());
    xof.update(&round.to_be_bytes());
    xof.update(&[direction.byte()]);
    xof.update(&key.server().to_bytes());
    xof.update(&key.user().to_bytes());
    let mut out = Zeroizing::new([0u8; 48]);
    xof.finalize_xof().read(&mut out[..]);
    out
}

fn split(derived: &[u8; 48]) -> (XChaCha20Poly1305, RoundTag) {
    let cipher = XChaCha20Poly1305::new(derived[..32].into());
    let tag = RoundTag(derived[32..].try_into().expect("16 bytes"));
    (cipher, tag)
}

fn associated_data(key: &LongTermKey, round: u64, direction: Direction, tag: &RoundTag) -> Vec<u8> {
    let mut ad = Vec::with_capacity(12 + 1 + 4 + 8 + 1 + 8 + 8 + TAG_BYTES);
    ad.extend_from_slice(b"ACS-v1 share");
    if key.epoch() == 0 {
        ad.push(VERSION);
    } else {
        ad.push(VERSION_EPOCH);
        ad.extend_from_slice(&key.epoch().to_be_bytes());
    }
    ad.extend_from_slice(&round.to_be_bytes());
    ad.push(direction.byte());
    ad.extend_from_slice(&key.server().to_bytes());
    ad.extend_from_slice(&key.user().to_bytes());
    ad.extend_from_slice(&tag.0);
    ad
}

impl LongTermKey {
    /// The routing tag of this (user, server) pair for `round` and `direction`.
    pub fn round_tag(&self, round: u64, direction: Direction) -> RoundTag {
        let derived = derive(self, round, direction);
        RoundTag(derived[32..].try_into().expect("16 bytes"))
    }

    /// Seals one share for `round` travelling in `direction`.
    pub fn seal(
        &self,
        round: u64,
        direction: Direction,
        share: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Envelope> {
        if share.len() > MAX_SHARE_BYTES {
            return Err(KgcError::TooLarge {
                what: "share",
                len: share.len(),
                max: MAX_SHARE_BYTES,
            });
        }
        let (cipher, tag) = split(&derive(self, round, direction));
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let ad = associated_data(self, round, direction, &tag);
        // Encrypt in place inside the envelope buffer: one allocation, no copy.
        let mut bytes = Vec::with_capacity(ENVELOPE_OVERHEAD_EPOCH + share.len());
        if self.epoch() == 0 {
            bytes.push(VERSION);
        } else {
            bytes.push(VERSION_EPOCH);
            bytes.extend_from_slice(&self.epoch().to_be_bytes());
        }
        bytes.extend_from_slice(&tag.0);
        bytes.extend_from_slice(&nonce);
        let header = bytes.len();
        bytes.extend_from_slice(share);
        let auth = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &ad, &mut bytes[header..])
            .map_err(|_| KgcError::TooLarge {
                what: "share",
                len: share.len(),
                max: MAX_SHARE_BYTES,
            })?;
        bytes.extend_from_slice(&auth);
        Ok(Envelope { bytes })
    }

    /// Opens an envelope sealed for `round` and `direction` under this key (and so of
    /// this key's epoch).
    pub fn open(&self, round: u64, direction: Direction, envelope: &Envelope) -> Result<Vec<u8>> {
        if envelope.epoch() != self.epoch() {
            return Err(KgcError::OpenFailed("envelope"));
        }
        let (cipher, expected) = split(&derive(self, round, direction));
        let tag = envelope.tag();
        if !bool::from(tag.0.ct_eq(&expected.0)) {
            return Err(KgcError::OpenFailed("envelope"));
        }
        let bytes = &envelope.bytes;
        let header = envelope.header_bytes();
        let nonce = XNonce::from_slice(&bytes[header - NONCE_BYTES..header]);
        let ad = associated_data(self, round, direction, &tag);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &bytes[header..],
                    aad: &ad,
                },
            )
            .map_err(|_| KgcError::OpenFailed("envelope"))
    }
}
