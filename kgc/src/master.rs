//! An exchange server's master secret and its file.
//!
//! Everything secret a server holds long-term comes from one 32-byte seed, split by SHA3
//! with distinct labels (so a leak of one derived key reveals nothing about the others):
//!
//! * `s_l = Scalar::from_bytes_wide(SHA3-512("ACS-v1 master scalar" || seed))`, the KGC's
//!   master secret for Sakai–Ohgishi–Kasahara;
//! * the Ed25519 identity key (seed `SHA3-256("ACS-v1 server identity key" || seed)`), which
//!   signs the server descriptor and from which `SN_l` is derived;
//! * the X25519 static key (`SHA3-256("ACS-v1 server x25519 key" || seed)`), to which users
//!   encrypt registration requests.
//!
//! File format (48 bytes): `"ACS-MSK\x01" || seed || SHA3-256("ACS-MSK\x01" || seed)[..8]`.
//! The checksum catches a corrupted file before it silently becomes a different server.

use core::fmt;
use std::io::{Read, Write};
use std::path::Path;

use bls12_381::Scalar;
use ed25519_dalek::SigningKey;
use rand_core::CryptoRngCore;
use sha3::{Digest, Sha3_256, Sha3_512};
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{malformed, KgcError, Result};

const MAGIC: &[u8; 8] = b"ACS-MSK\x01";
/// Length of a master-secret file.
pub const MASTER_FILE_BYTES: usize = 8 + 32 + 8;

/// One exchange server's long-term secrets (see the module docs). Wiped on drop; `Debug`
/// shows nothing.
pub struct MasterSecret {
    seed: Zeroizing<[u8; 32]>,
    scalar: Zeroizing<Scalar>,
    signing: SigningKey,
    x25519: StaticSecret,
}

fn label_hash(label: &[u8], seed: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut digest = Sha3_256::new()
        .chain_update(label)
        .chain_update(seed)
        .finalize();
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&digest);
    digest.zeroize();
    out
}

/// The first 8 bytes of SHA3-256 over `parts`: a file's checksum.
fn checksum_of(parts: &[&[u8]]) -> [u8; 8] {
    let mut h = Sha3_256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn checksum(seed: &[u8; 32]) -> [u8; 8] {
    checksum_of(&[MAGIC, seed])
}

impl MasterSecret {
    /// A fresh random master secret.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        Self::from_seed(*seed)
    }

    /// Builds the master secret from its 32-byte seed (known-answer tests, restores).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        let mut wide = Zeroizing::new([0u8; 64]);
        let mut digest = Sha3_512::new()
            .chain_update(b"ACS-v1 master scalar")
            .chain_update(&seed[..])
            .finalize();
        wide.copy_from_slice(&digest);
        digest.zeroize();
        let scalar = Zeroizing::new(Scalar::from_bytes_wide(&wide));
        let signing = SigningKey::from_bytes(&label_hash(b"ACS-v1 server identity key", &seed));
        let x25519 = StaticSecret::from(*label_hash(b"ACS-v1 server x25519 key", &seed));
        MasterSecret {
            seed,
            scalar,
            signing,
            x25519,
        }
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.scalar
    }

    /// A copy of the server's Ed25519 identity key (the one its descriptor names), for
    /// signing the exchange servers' protocol statements to each other. Every kind of
    /// signed message starts with its own 8-byte prefix (`ACS-SD` for descriptors,
    /// `ACS-OS` for online-set statements), so no signature serves two purposes. The
    /// copy is wiped on drop.
    pub fn identity_signing_key(&self) -> SigningKey {
        self.signing.clone()
    }

    pub(crate) fn x25519(&self) -> &StaticSecret {
        &self.x25519
    }

    fn encode(&self) -> Zeroizing<[u8; MASTER_FILE_BYTES]> {
        let mut out = Zeroizing::new([0u8; MASTER_FILE_BYTES]);
        out[..8].copy_from_slice(MAGIC);
        out[8..40].copy_from_slice(&self.seed[..]);
        out[40..].copy_from_slice(&checksum(&self.seed));
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "master secret file";
        if bytes.len() != MASTER_FILE_BYTES {
            return Err(malformed(WHAT, "wrong length"));
        }
        if &bytes[..8] != MAGIC {
            return Err(malformed(WHAT, "bad magic or version"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[8..40]);
        if checksum(&seed) != bytes[40..] {
            return Err(malformed(WHAT, "checksum mismatch (corrupted file)"));
        }
        Ok(Self::from_seed(*seed))
    }

    /// Writes the master secret to a new file readable and writable by its owner only
    /// (mode 0600). Refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| KgcError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = open_new_private(path).map_err(io)?;
        file.write_all(&self.encode()[..]).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads a master secret, refusing a file that group or others can access in any way.
    pub fn load(path: &Path) -> Result<Self> {
        let io = |source| KgcError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // Permissions of the file we opened (fstat), not of whatever the path names later.
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            return Err(malformed("master secret file", "not a regular file"));
        }
        check_private(path, &metadata)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(MASTER_FILE_BYTES + 1));
        file.take(MASTER_FILE_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        Self::decode(&buf)
    }
}

#[cfg(unix)]
fn open_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_new_private(_path: &Path) -> std::io::Result<std::fs::File> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "master secret files need Unix permissions",
    ))
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KgcError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &std::fs::Metadata) -> Result<()> {
    Err(KgcError::UnsupportedPlatform)
}

const EPOCH_MAGIC: &[u8; 8] = b"ACS-ESK\x01";
/// Length of an epoch-secret file.
pub const EPOCH_FILE_BYTES: usize = 8 + 4 + 32 + 8;

/// The SOK master secret `s_l` of one master-secret epoch `e ≥ 1` of a server
/// (`docs/kgc.md` §11). Epoch 0's `s_l` comes from the [`MasterSecret`] itself; later
/// epochs each have their own random seed, so deleting an epoch's file deletes everything
/// that derives its users' keys. The server's identity (Ed25519 and X25519 keys, `SN_l`)
/// stays with the [`MasterSecret`] and does not change with the epoch, so clients keep
/// their pin.
///
/// `s_l^(e) = Scalar::from_bytes_wide(SHA3-512("ACS-v1 epoch master scalar" || e || seed))`.
/// File (52 bytes): `"ACS-ESK\x01" || e (4) || seed (32) || SHA3-256("ACS-ESK\x01" || e
/// || seed)[..8]`, created 0600, never overwritten, refused when group or others may read
/// it. Wiped on drop; `Debug` shows the epoch only.
pub struct EpochSecret {
    epoch: u32,
    seed: Zeroizing<[u8; 32]>,
    scalar: Zeroizing<Scalar>,
}

fn epoch_checksum(epoch: u32, seed: &[u8; 32]) -> [u8; 8] {
    checksum_of(&[EPOCH_MAGIC, &epoch.to_be_bytes(), seed])
}

impl EpochSecret {
    /// A fresh random secret for `epoch` (1 or later: epoch 0 is the master secret's).
    pub fn generate(epoch: u32, rng: &mut impl CryptoRngCore) -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        Self::from_seed(epoch, *seed)
    }

    /// Builds the secret of `epoch` from its seed (known-answer tests, restores).
    pub fn from_seed(epoch: u32, seed: [u8; 32]) -> Result<Self> {
        if epoch == 0 {
            return Err(malformed(
                "epoch secret",
                "epoch 0 is the master secret's own; epoch secrets start at 1",
            ));
        }
        let seed = Zeroizing::new(seed);
        let mut wide = Zeroizing::new([0u8; 64]);
        let mut digest = Sha3_512::new()
            .chain_update(b"ACS-v1 epoch master scalar")
            .chain_update(epoch.to_be_bytes())
            .chain_update(&seed[..])
            .finalize();
        wide.copy_from_slice(&digest);
        digest.zeroize();
        Ok(EpochSecret {
            epoch,
            seed,
            scalar: Zeroizing::new(Scalar::from_bytes_wide(&wide)),
        })
    }

    /// The epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.scalar
    }

    /// Writes the secret to a new owner-only file (0600); refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| KgcError::Io {
            path: path.to_owned(),
            source,
        };
        let mut out = Zeroizing::new([0u8; EPOCH_FILE_BYTES]);
        out[..8].copy_from_slice(EPOCH_MAGIC);
        out[8..12].copy_from_slice(&self.epoch.to_be_bytes());
        out[12..44].copy_from_slice(&self.seed[..]);
        out[44..].copy_from_slice(&epoch_checksum(self.epoch, &self.seed));
        let mut file = open_new_private(path).map_err(io)?;
        file.write_all(&out[..]).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads an epoch secret, refusing a file that group or others can access.
    pub fn load(path: &Path) -> Result<Self> {
        const WHAT: &str = "epoch secret file";
        let io = |source| KgcError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            return Err(malformed(WHAT, "not a regular file"));
        }
        check_private(path, &metadata)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(EPOCH_FILE_BYTES + 1));
        file.take(EPOCH_FILE_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() != EPOCH_FILE_BYTES {
            return Err(malformed(WHAT, "wrong length"));
        }
        if &buf[..8] != EPOCH_MAGIC {
            return Err(malformed(WHAT, "bad magic or version"));
        }
        let epoch = u32::from_be_bytes(buf[8..12].try_into().expect("4"));
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&buf[12..44]);
        if epoch_checksum(epoch, &seed) != buf[44..] {
            return Err(malformed(WHAT, "checksum mismatch (corrupted file)"));
        }
        Self::from_seed(epoch, *seed)
    }
}

impl fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochSecret")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}
