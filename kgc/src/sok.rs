//! Sakai–Ohgishi–Kasahara identity-based key agreement on BLS12-381 (paper §4.1,
//! design §4).
//!
//! * `H1(UN) ∈ G1` and `H2(SN) ∈ G2` are the RFC 9380 random-oracle suites
//!   `BLS12381G1_XMD:SHA-256_SSWU_RO_` and `BLS12381G2_XMD:SHA-256_SSWU_RO_` with our own
//!   domain-separation tags [`G1_DST`] and [`G2_DST`], over the 8-byte big-endian pseudonym.
//! * Server `l` holds `s_l`; user `i`'s key is `sk_{i,l} = s_l·H1(UN_i)`, the server's own key
//!   is `sk_{MS_l} = s_l·H2(SN_l)`, and its master public key is `P_l = s_l·g2`.
//! * Both sides reach `e(sk_{i,l}, H2(SN_l)) = e(H1(UN_i), H2(SN_l))^{s_l} = e(H1(UN_i), sk_{MS_l})`
//!   and hash it into the 32-byte [`LongTermKey`]:
//!   `SHA3-256("ACS-v1 SOK long-term key" || UN || SN || gt_to_bytes(shared))`.
//!
//! A pairing costs about a millisecond: derive the long-term key once per (user, server),
//! cache it (the server's [`Registry`](crate::Registry) does), and never pair per message.

use core::fmt;

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{pairing, G1Affine, G1Projective, G2Affine, G2Projective, Gt};
use sha2::Sha256;
use sha3::{Digest, Sha3_256};
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{malformed, KgcError, Result};
use crate::gt::gt_to_bytes;
use crate::ids::{ServerPseudonym, UserPseudonym};

/// Domain-separation tag of `H1` (user pseudonyms to G1), RFC 9380 §3.1 format.
pub const G1_DST: &[u8] = b"ACS-V01-CS01-with-BLS12381G1_XMD:SHA-256_SSWU_RO_";
/// Domain-separation tag of `H2` (server pseudonyms to G2), RFC 9380 §3.1 format.
pub const G2_DST: &[u8] = b"ACS-V01-CS01-with-BLS12381G2_XMD:SHA-256_SSWU_RO_";

const LONG_TERM_TAG: &[u8] = b"ACS-v1 SOK long-term key";

/// `H1(UN)`: hashes a user pseudonym to G1.
pub fn hash_user(user: UserPseudonym) -> G1Affine {
    let point = <G1Projective as HashToCurve<ExpandMsgXmd<Sha256>>>::hash_to_curve(
        [&user.to_bytes()[..]],
        G1_DST,
    );
    G1Affine::from(point)
}

/// `H2(SN)`: hashes a server pseudonym to G2.
pub fn hash_server(server: ServerPseudonym) -> G2Affine {
    let point = <G2Projective as HashToCurve<ExpandMsgXmd<Sha256>>>::hash_to_curve(
        [&server.to_bytes()[..]],
        G2_DST,
    );
    G2Affine::from(point)
}

/// The 32-byte key a user and an exchange server share, derived once from the pairing and
/// cached by both. It is bound to its (user, server) pair, which every per-round key and
/// envelope built from it also names. Wiped on drop; `Debug` shows only the pair.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LongTermKey {
    #[zeroize(skip)]
    user: UserPseudonym,
    #[zeroize(skip)]
    server: ServerPseudonym,
    #[zeroize(skip)]
    epoch: u32,
    key: [u8; 32],
}

impl LongTermKey {
    /// Hashes a pairing value into the long-term key of (`user`, `server`).
    pub(crate) fn from_shared(user: UserPseudonym, server: ServerPseudonym, shared: &Gt) -> Self {
        let encoded = gt_to_bytes(shared);
        let mut hash = Sha3_256::new()
            .chain_update(LONG_TERM_TAG)
            .chain_update(user.to_bytes())
            .chain_update(server.to_bytes())
            .chain_update(&encoded[..])
            .finalize();
        let mut key = [0u8; 32];
        key.copy_from_slice(&hash);
        hash.zeroize();
        LongTermKey {
            user,
            server,
            epoch: 0,
            key,
        }
    }

    /// Rebuilds a cached key (for example one the transport persisted).
    pub fn from_bytes(user: UserPseudonym, server: ServerPseudonym, key: [u8; 32]) -> Self {
        LongTermKey {
            user,
            server,
            epoch: 0,
            key,
        }
    }

    /// The same key, marked as derived under the server's master secret of `epoch`
    /// (`docs/kgc.md` §11): envelopes sealed with it name that epoch, and it opens only
    /// envelopes that name it. Keys come out of the agreement as epoch 0.
    pub fn in_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// The master-secret epoch this key was derived under.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The raw 32 bytes, for the caller's own cache. Keep them secret.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key)
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.key
    }

    /// The user this key is shared with.
    pub fn user(&self) -> UserPseudonym {
        self.user
    }

    /// The exchange server this key is shared with.
    pub fn server(&self) -> ServerPseudonym {
        self.server
    }
}

impl ConstantTimeEq for LongTermKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.key.ct_eq(&other.key)
            & Choice::from(u8::from(
                self.user == other.user && self.server == other.server && self.epoch == other.epoch,
            ))
    }
}

impl PartialEq for LongTermKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for LongTermKey {}

impl fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongTermKey")
            .field("user", &self.user)
            .field("server", &self.server)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// An exchange server's master public key `P_l = s_l·g2`, published in its descriptor so a
/// user can check the secret key it was sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterPublicKey(pub(crate) G2Affine);

impl MasterPublicKey {
    /// Compressed encoding (96 bytes).
    pub fn to_bytes(&self) -> [u8; 96] {
        self.0.to_compressed()
    }

    /// Decodes and validates (on the curve, in the prime-order subgroup, not the identity).
    pub fn from_bytes(bytes: &[u8; 96]) -> Result<Self> {
        let point = Option::<G2Affine>::from(G2Affine::from_compressed(bytes))
            .ok_or(KgcError::InvalidPublicKey("master"))?;
        if bool::from(point.is_identity()) {
            return Err(KgcError::InvalidPublicKey("master"));
        }
        Ok(MasterPublicKey(point))
    }
}

impl fmt::Debug for MasterPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        write!(f, "MasterPublicKey(")?;
        for b in &bytes[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A user's secret key from one exchange server, `sk_{i,l} = s_l·H1(UN_i) ∈ G1`, together
/// with the (user, server) pair it belongs to. Wiped on drop; opaque `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct UserSecretKey {
    #[zeroize(skip)]
    user: UserPseudonym,
    #[zeroize(skip)]
    server: ServerPseudonym,
    point: G1Affine,
}

/// Length of [`UserSecretKey::to_bytes`].
pub const USER_SECRET_KEY_BYTES: usize = 8 + 8 + 48;

impl UserSecretKey {
    pub(crate) fn new(user: UserPseudonym, server: ServerPseudonym, point: G1Affine) -> Self {
        UserSecretKey {
            user,
            server,
            point,
        }
    }

    /// The user it was extracted for.
    pub fn user(&self) -> UserPseudonym {
        self.user
    }

    /// The exchange server that extracted it.
    pub fn server(&self) -> ServerPseudonym {
        self.server
    }

    /// User-side agreement: `e(sk_{i,l}, H2(SN_l))` hashed into the long-term key.
    /// One pairing plus one hash to G2: call once per server and cache the result.
    pub fn agree(&self) -> LongTermKey {
        let mut shared = pairing(&self.point, &hash_server(self.server));
        let key = LongTermKey::from_shared(self.user, self.server, &shared);
        shared.zeroize();
        key
    }

    /// Checks the key against the server's master public key:
    /// `e(sk, g2) == e(H1(UN), P_l)`.
    pub fn verify(&self, master: &MasterPublicKey) -> Result<()> {
        let lhs = pairing(&self.point, &G2Affine::generator());
        let rhs = pairing(&hash_user(self.user), &master.0);
        if bool::from(self.point.is_identity()) || lhs != rhs {
            return Err(KgcError::InvalidUserKey);
        }
        Ok(())
    }

    /// `UN || SN || compressed point`, for the user's own storage. Keep it secret.
    pub fn to_bytes(&self) -> Zeroizing<[u8; USER_SECRET_KEY_BYTES]> {
        let mut out = Zeroizing::new([0u8; USER_SECRET_KEY_BYTES]);
        out[..8].copy_from_slice(&self.user.to_bytes());
        out[8..16].copy_from_slice(&self.server.to_bytes());
        out[16..].copy_from_slice(&self.point.to_compressed());
        out
    }

    /// Inverse of [`to_bytes`](Self::to_bytes); validates the point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "user secret key";
        if bytes.len() != USER_SECRET_KEY_BYTES {
            return Err(malformed(WHAT, "wrong length"));
        }
        let user = UserPseudonym::from_bytes(bytes[..8].try_into().expect("8 bytes"))?;
        let server = ServerPseudonym::from_bytes(bytes[8..16].try_into().expect("8 bytes"))?;
        let mut compressed = Zeroizing::new([0u8; 48]);
        compressed.copy_from_slice(&bytes[16..]);
        let point = Option::<G1Affine>::from(G1Affine::from_compressed(&compressed))
            .ok_or_else(|| malformed(WHAT, "not a point of the G1 subgroup"))?;
        if bool::from(point.is_identity()) {
            return Err(malformed(WHAT, "identity point"));
        }
        Ok(UserSecretKey {
            user,
            server,
            point,
        })
    }
}

impl fmt::Debug for UserSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSecretKey")
            .field("user", &self.user)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Server-side agreement with a known server key `sk_{MS_l}`: `e(H1(UN_i), sk_{MS_l})`.
pub(crate) fn server_agree(
    server: ServerPseudonym,
    server_key: &G2Affine,
    user: UserPseudonym,
) -> LongTermKey {
    let mut shared = pairing(&hash_user(user), server_key);
    let key = LongTermKey::from_shared(user, server, &shared);
    shared.zeroize();
    key
}
