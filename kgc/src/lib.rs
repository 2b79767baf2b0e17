//! ACS key generation centres (paper §4.1, design §4).
//!
//! Each of the three exchange servers is a key generation centre with its own master
//! secret. Users and servers know each other only by 64-bit pseudonyms and derive shared
//! keys without interaction (Sakai–Ohgishi–Kasahara on BLS12-381). This crate is pure: no
//! I/O except reading and writing the master-secret file. `docs/kgc.md` walks through the
//! key schedule, the encodings and what each party learns.
//!
//! # Exchange server
//! ```no_run
//! # use acs_kgc::*;
//! # fn demo(path: &std::path::Path, tls_fp: [u8; 32], now: u64, request_bytes: &[u8],
//! #         envelope_bytes: &[u8]) -> Result<()> {
//! let mut rng = rand_core::OsRng;
//! let kgc = Kgc::new(MasterSecret::load(path)?);          // once at start-up
//! let descriptor = kgc.descriptor(tls_fp, now).to_bytes(); // publish; clients pin it
//! let mut registry = Registry::new(kgc.server());          // or Registry::from_bytes(..)
//!
//! // Registration (through an entry relay):
//! let request = RegistrationRequest::from_bytes(request_bytes)?;
//! let registered = kgc.register(&mut registry, &request, now, &mut rng)?;
//! // persist registry.get(registered.user), send registered.response back.
//!
//! // Each round: index tags once, then open each arriving envelope.
//! let round = 7;
//! let index = registry.tag_index(round, Direction::UserToServer);
//! let envelope = Envelope::from_bytes(envelope_bytes)?;
//! let user = index.lookup(&envelope.tag()).ok_or(KgcError::OpenFailed("envelope"))?;
//! let key = registry.long_term_key(user)?;
//! let share = key.open(round, Direction::UserToServer, &envelope)?;
//! let reply = key.seal(round, Direction::ServerToUser, &share, &mut rng)?;
//! # Ok(()) }
//! ```
//!
//! # User
//! ```no_run
//! # use acs_kgc::*;
//! # fn demo(descriptor_bytes: &[u8], pin: [u8; 32], now: u64, response_bytes: &[u8])
//! #        -> Result<()> {
//! let mut rng = rand_core::OsRng;
//! let me = UserIdentity::generate(&mut rng);
//! let server = SignedDescriptor::from_bytes_pinned(descriptor_bytes, &pin)?;
//! let (pending, request) = me.register(&server, now, &mut rng)?;
//! // send request.as_bytes() through an entry relay; receive the response
//! let secret = pending.finish(&RegistrationResponse::from_bytes(response_bytes)?)?;
//! let key = secret.agree(); // one pairing; cache it
//! let envelope = key.seal(7, Direction::UserToServer, b"share", &mut rng)?;
//! # Ok(()) }
//! ```

mod descriptor;
mod error;
mod gt;
mod ids;
mod master;
mod registration;
mod registry;
mod seal;
mod server;
mod sok;

pub use descriptor::{
    ServerDescriptor, SignedDescriptor, DESCRIPTOR_BYTES, DESCRIPTOR_BYTES_EPOCH,
};
pub use error::{KgcError, Result};
pub use gt::{gt_to_bytes, GT_BYTES};
pub use ids::{Direction, ServerPseudonym, UserPseudonym, ADDRESS_BITS};
pub use master::{EpochSecret, MasterSecret, EPOCH_FILE_BYTES, MASTER_FILE_BYTES};
pub use registration::{
    PendingRegistration, RegistrationRequest, RegistrationResponse, UserIdentity,
    REGISTRATION_WINDOW_SECS, REQUEST_BYTES, REQUEST_BYTES_EPOCH, RESPONSE_BYTES,
};
pub use registry::{
    Inserted, Registry, RegistryEntry, TagIndex, ENTRY_BYTES, MAX_REGISTRY_ENTRIES,
};
pub use seal::{Envelope, RoundTag, ENVELOPE_OVERHEAD, ENVELOPE_OVERHEAD_EPOCH, MAX_SHARE_BYTES};
pub use server::{Kgc, Registered};
pub use sok::{
    hash_server, hash_user, LongTermKey, MasterPublicKey, UserSecretKey, G1_DST, G2_DST,
    USER_SECRET_KEY_BYTES,
};

/// Re-exported so callers name the same versions this crate's API uses.
pub use bls12_381;
pub use ed25519_dalek;
pub use x25519_dalek;
