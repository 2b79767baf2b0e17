//! The signed server descriptor that clients pin.
//!
//! Each exchange server publishes, signed with its Ed25519 identity key:
//! its pseudonym `SN_l` (derived from that identity key), its X25519 public key (users
//! encrypt registration requests to it), its master public key `P_l = s_l·g2` (users check
//! the secret key they are sent against it), the SHA-256 fingerprint of its TLS certificate
//! (DER), and the time it was issued. Clients pin the identity key (or the whole
//! descriptor); a new TLS certificate or descriptor then needs no new pin.
//!
//! Layout (280 bytes, integers big-endian):
//! `"ACS-SD\x00\x01" || SN (8) || identity key (32) || X25519 key (32) || P_l compressed (96)
//! || TLS certificate SHA-256 (32) || issued_at Unix seconds (8) || Ed25519 signature (64)`,
//! the signature covering every byte before it.
//!
//! A descriptor of master-secret epoch `e ≥ 1` (`docs/kgc.md` §11) is version 2, 284
//! bytes: magic `"ACS-SD\x00\x02"`, the same fields, then `e` (4) before the signature.
//! Epoch 0 keeps version 1 byte for byte (a version-1 descriptor *is* epoch 0's), so
//! every descriptor names its epoch under the identity key's signature.

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use x25519_dalek::PublicKey as X25519Public;

use crate::error::{malformed, KgcError, Result};
use crate::ids::{parse_ed25519, ServerPseudonym};
use crate::sok::MasterPublicKey;

const MAGIC: &[u8; 8] = b"ACS-SD\x00\x01";
const MAGIC_EPOCH: &[u8; 8] = b"ACS-SD\x00\x02";
const BODY_BYTES: usize = 8 + 8 + 32 + 32 + 96 + 32 + 8;
const BODY_BYTES_EPOCH: usize = BODY_BYTES + 4;
/// Length of an encoded epoch-0 (version 1) [`SignedDescriptor`].
pub const DESCRIPTOR_BYTES: usize = BODY_BYTES + 64;
/// Length of an encoded [`SignedDescriptor`] of epoch 1 or later (version 2).
pub const DESCRIPTOR_BYTES_EPOCH: usize = BODY_BYTES_EPOCH + 64;

/// What an exchange server publishes about itself (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerDescriptor {
    /// `SN_l`, derived from `identity_key`.
    pub server: ServerPseudonym,
    /// The Ed25519 key that signs the descriptor; what clients pin.
    pub identity_key: VerifyingKey,
    /// The X25519 key registration requests are encrypted to.
    pub x25519_public: X25519Public,
    /// `P_l = s_l·g2`.
    pub master_public: MasterPublicKey,
    /// SHA-256 of the server's TLS certificate (DER).
    pub tls_cert_sha256: [u8; 32],
    /// When the descriptor was issued (Unix seconds); a client keeps the newest.
    pub issued_at: u64,
    /// The master-secret epoch whose `P_l` this is; a client registers under the newest
    /// epoch its server serves.
    pub epoch: u32,
}

/// A [`ServerDescriptor`] with a signature that has been checked (decoding verifies it,
/// and only the server's own key can make one), so holding one proves it is authentic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedDescriptor {
    descriptor: ServerDescriptor,
    signature: Signature,
}

impl ServerDescriptor {
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BODY_BYTES_EPOCH);
        let magic = if self.epoch == 0 { MAGIC } else { MAGIC_EPOCH };
        for part in [
            &magic[..],
            &self.server.to_bytes(),
            self.identity_key.as_bytes(),
            self.x25519_public.as_bytes(),
            &self.master_public.to_bytes(),
            &self.tls_cert_sha256,
            &self.issued_at.to_be_bytes(),
        ] {
            out.extend_from_slice(part);
        }
        if self.epoch != 0 {
            out.extend_from_slice(&self.epoch.to_be_bytes());
        }
        out
    }
}

impl SignedDescriptor {
    /// Signs a descriptor (the server side; see [`Kgc::descriptor`](crate::Kgc::descriptor)).
    pub(crate) fn sign(descriptor: ServerDescriptor, key: &ed25519_dalek::SigningKey) -> Self {
        debug_assert_eq!(descriptor.identity_key, key.verifying_key());
        let signature = key.sign(&descriptor.body());
        SignedDescriptor {
            descriptor,
            signature,
        }
    }

    /// The verified contents.
    pub fn descriptor(&self) -> &ServerDescriptor {
        &self.descriptor
    }

    /// The encoding: [`DESCRIPTOR_BYTES`] (280) for epoch 0, [`DESCRIPTOR_BYTES_EPOCH`]
    /// (284) for later epochs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.descriptor.body();
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Decodes and verifies: exact length, magic, valid keys, `SN_l` derived from the
    /// identity key, and the signature (strict Ed25519 verification).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "server descriptor";
        let body = match bytes.get(..8) {
            Some(m) if m == MAGIC && bytes.len() == DESCRIPTOR_BYTES => BODY_BYTES,
            Some(m) if m == MAGIC_EPOCH && bytes.len() == DESCRIPTOR_BYTES_EPOCH => {
                BODY_BYTES_EPOCH
            }
            Some(m) if m == MAGIC || m == MAGIC_EPOCH => {
                return Err(malformed(WHAT, "wrong length"))
            }
            Some(_) => return Err(malformed(WHAT, "bad magic or version")),
            None => return Err(malformed(WHAT, "wrong length")),
        };
        let field = |from: usize, len: usize| &bytes[from..from + len];
        let epoch = if body == BODY_BYTES_EPOCH {
            let e = u32::from_be_bytes(field(BODY_BYTES, 4).try_into().expect("4"));
            if e == 0 {
                return Err(malformed(WHAT, "version 2 naming epoch 0"));
            }
            e
        } else {
            0
        };
        let server = ServerPseudonym::from_bytes(field(8, 8).try_into().expect("8 bytes"))?;
        let identity_key = parse_ed25519(field(16, 32).try_into().expect("32"), "server identity")?;
        let x: [u8; 32] = field(48, 32).try_into().expect("32");
        let x25519_public = X25519Public::from(x);
        let master_public = MasterPublicKey::from_bytes(field(80, 96).try_into().expect("96"))?;
        let tls_cert_sha256 = field(176, 32).try_into().expect("32");
        let issued_at = u64::from_be_bytes(field(208, 8).try_into().expect("8"));
        let signature = Signature::from_bytes(field(body, 64).try_into().expect("64"));
        if ServerPseudonym::derive(&identity_key)? != server {
            return Err(malformed(
                WHAT,
                "server pseudonym not derived from identity key",
            ));
        }
        identity_key
            .verify_strict(&bytes[..body], &signature)
            .map_err(|_| KgcError::BadSignature("server descriptor"))?;
        Ok(SignedDescriptor {
            descriptor: ServerDescriptor {
                server,
                identity_key,
                x25519_public,
                master_public,
                tls_cert_sha256,
                issued_at,
                epoch,
            },
            signature,
        })
    }

    /// Decodes, verifies, and checks the identity key against the client's pin.
    pub fn from_bytes_pinned(bytes: &[u8], pinned_identity_key: &[u8; 32]) -> Result<Self> {
        let signed = Self::from_bytes(bytes)?;
        if signed.descriptor.identity_key.as_bytes() != pinned_identity_key {
            return Err(KgcError::BadSignature(
                "server descriptor (identity key is not the pinned one)",
            ));
        }
        Ok(signed)
    }
}
