//! The exchange server's side: one [`Kgc`] per server, built from its master secret.

use core::fmt;

use bls12_381::{G1Affine, G1Projective, G2Affine, G2Projective, Scalar};
use ed25519_dalek::SigningKey;
use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::descriptor::{ServerDescriptor, SignedDescriptor};
use crate::error::Result;
use crate::ids::{ServerPseudonym, UserPseudonym};
use crate::master::{EpochSecret, MasterSecret};
use crate::registration::{
    build_response, verify_request, RegistrationRequest, RegistrationResponse,
};
use crate::registry::{Inserted, Registry, RegistryEntry};
use crate::sok::{
    hash_server, hash_user, server_agree, LongTermKey, MasterPublicKey, UserSecretKey,
};

/// An exchange server as key generation centre for one master-secret epoch: its
/// identity keys, the epoch's `s_l`, and what it derives from them once (`SN_l`,
/// `sk_{MS_l} = s_l·H2(SN_l)`, `P_l = s_l·g2`). A server that rotates holds one per epoch
/// it serves (`docs/kgc.md` §11). Secrets are wiped on drop; `Debug` shows only `SN_l`
/// and the epoch.
pub struct Kgc {
    signing: SigningKey,
    x25519: StaticSecret,
    scalar: zeroize::Zeroizing<Scalar>,
    epoch: u32,
    server: ServerPseudonym,
    server_key: Zeroizing<G2Affine>,
    master_public: MasterPublicKey,
    x25519_public: X25519Public,
}

/// What [`Kgc::register`] did, for the caller to persist and answer.
#[derive(Debug)]
pub struct Registered {
    /// The user who registered.
    pub user: UserPseudonym,
    /// New pseudonym, or a repeat registration under the same key.
    pub inserted: Inserted,
    /// The answer to send back through the entry relay.
    pub response: RegistrationResponse,
}

impl Kgc {
    /// Derives the server's identity and keys from its master secret, for epoch 0 (one
    /// G2 hash and two G2 scalar multiplications: do it once at start-up).
    pub fn new(master: MasterSecret) -> Self {
        Self::epoch_zero(&master)
    }

    /// [`Kgc::new`] from a borrowed master secret (a server that also serves later
    /// epochs keeps the master secret for them).
    pub fn epoch_zero(master: &MasterSecret) -> Self {
        Self::build(master, Zeroizing::new(*master.scalar()), 0)
    }

    /// The key centre of master-secret epoch `secret.epoch()` (1 or later): the same
    /// identity (`SN_l`, signing and X25519 keys) as `master`, the epoch's own `s_l`.
    pub fn for_epoch(master: &MasterSecret, secret: &EpochSecret) -> Self {
        Self::build(master, Zeroizing::new(*secret.scalar()), secret.epoch())
    }

    fn build(master: &MasterSecret, scalar: Zeroizing<Scalar>, epoch: u32) -> Self {
        let signing = master.identity_signing_key();
        let server = ServerPseudonym::derive(&signing.verifying_key())
            .expect("a server identity key that derives pseudonym 0 (probability 2^-64)");
        // By reference: a copy of the secret scalar would not be wiped.
        let s: &Scalar = &scalar;
        let mut product = G2Projective::from(hash_server(server)) * s;
        let server_key = Zeroizing::new(G2Affine::from(&product));
        product.zeroize();
        let master_public = MasterPublicKey(G2Affine::from(G2Projective::generator() * s));
        let x25519 = master.x25519().clone();
        let x25519_public = X25519Public::from(&x25519);
        Kgc {
            signing,
            x25519,
            scalar,
            epoch,
            server,
            server_key,
            master_public,
            x25519_public,
        }
    }

    /// The master-secret epoch this key centre serves.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// `SN_l`.
    pub fn server(&self) -> ServerPseudonym {
        self.server
    }

    /// `P_l = s_l·g2`.
    pub fn master_public_key(&self) -> MasterPublicKey {
        self.master_public
    }

    /// Extracts user `UN_i`'s secret key `s_l·H1(UN_i)`.
    pub fn extract(&self, user: UserPseudonym) -> UserSecretKey {
        let s: &Scalar = &self.scalar;
        let mut product = G1Projective::from(hash_user(user)) * s;
        let secret = UserSecretKey::new(user, self.server, G1Affine::from(&product));
        product.zeroize();
        secret
    }

    /// Server-side agreement: `e(H1(UN_i), sk_{MS_l})` hashed into the long-term key. One
    /// pairing: call once per user and cache (the registry does).
    pub fn agree(&self, user: UserPseudonym) -> LongTermKey {
        server_agree(self.server, &self.server_key, user).in_epoch(self.epoch)
    }

    /// The signed descriptor clients pin, naming the server's TLS certificate by its
    /// SHA-256 fingerprint (of the DER encoding) and this key centre's epoch. `issued_at`
    /// is Unix seconds.
    pub fn descriptor(&self, tls_cert_sha256: [u8; 32], issued_at: u64) -> SignedDescriptor {
        SignedDescriptor::sign(
            ServerDescriptor {
                server: self.server,
                identity_key: self.signing.verifying_key(),
                x25519_public: self.x25519_public,
                master_public: self.master_public,
                tls_cert_sha256,
                issued_at,
                epoch: self.epoch,
            },
            &self.signing,
        )
    }

    /// Handles a registration request at server time `now` (Unix seconds): decrypts it,
    /// checks freshness, pseudonym derivation and proof of possession, records the user in
    /// `registry` (refusing a pseudonym taken by another key), and encrypts the user's
    /// secret key to the request's ephemeral key. The registry is changed only on success.
    pub fn register(
        &self,
        registry: &mut Registry,
        request: &RegistrationRequest,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Registered> {
        if registry.server() != self.server {
            return Err(crate::KgcError::WrongServer {
                expected: self.server,
                got: registry.server(),
            });
        }
        if request.epoch() != self.epoch {
            return Err(crate::KgcError::WrongEpoch {
                expected: self.epoch,
                got: request.epoch(),
            });
        }
        let verified = verify_request(request, self.server, &self.x25519, now)?;
        let user = verified.user;
        let inserted = match registry.get(user) {
            Some(entry) if entry.public_key() == verified.public_key.as_bytes() => {
                Inserted::AlreadyRegistered
            }
            Some(_) => return Err(crate::KgcError::PseudonymTaken(user)),
            None => {
                registry.check_address(user)?;
                Inserted::New
            }
        };
        let user_key = self.extract(user);
        let response = build_response(&verified, self.server, &self.x25519_public, &user_key, rng)?;
        if inserted == Inserted::New {
            registry.insert(RegistryEntry::new(
                &verified.public_key,
                now,
                self.agree(user),
            ))?;
        }
        Ok(Registered {
            user,
            inserted,
            response,
        })
    }
}

impl fmt::Debug for Kgc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kgc")
            .field("server", &self.server)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}
