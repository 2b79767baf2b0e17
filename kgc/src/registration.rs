//! Registration: a user proves possession of the key behind its pseudonym and receives
//! its secret key `sk_{i,l}`, through an entry relay that can read neither.
//!
//! The user holds an Ed25519 key (its [`UserIdentity`]); `UN_i` is derived from it. For
//! server `l` (whose [`SignedDescriptor`](crate::SignedDescriptor) the user has pinned) it
//! makes a fresh X25519 key `e` (public `E`) and sends
//!
//! ```text
//! request  = "ACS-RQ\0\x01" || SN_l || E || ChaCha20Poly1305(k_req, nonce 0,
//!                pk_i || UN_i || timestamp || sig_i,  ad = the 48 header bytes)
//! sig_i    = Ed25519(sk_i, "ACS-v1 registration" || UN_i || SN_l || timestamp || E)
//! k_req    = SHA3-256("ACS-v1 registration request key" || DH(e, S_l) || E || S_l || SN_l)
//! ```
//!
//! where `S_l` is the server's static X25519 key. The relay sees only `SN_l` (where the
//! request goes, which it knows anyway) and random-looking bytes. The server checks the
//! timestamp window ([`REGISTRATION_WINDOW_SECS`]), that `UN_i` derives from `pk_i`, the
//! signature (which binds `E`, so nobody can redirect the answer to their own key), and that
//! `UN_i` is free or already `pk_i`'s. It answers with a fresh X25519 key `f` (public `F`):
//!
//! ```text
//! response = "ACS-RS\0\x01" || F || ChaCha20Poly1305(k_resp, nonce 0, sk_{i,l} compressed,
//!                ad = "ACS-RS\0\x01" || SN_l || UN_i || E || F)
//! k_resp   = SHA3-256("ACS-v1 registration response key" || DH(e, S_l) || DH(e, F)
//!                || E || S_l || F || SN_l || UN_i)
//! ```
//!
//! Only the holder of `e` can open it, only the holder of `S_l` can have made it, and it
//! stays secret if `S_l` leaks later (the `DH(e, F)` term; both ephemerals are discarded).
//! Each key encrypts exactly one message, so the fixed nonce is safe. A replay of a request
//! within the window gets a fresh answer that only the original `e` opens: useless to
//! whoever replays it. The user finally checks `sk_{i,l}` against `P_l`.
//!
//! A request for master-secret epoch `e ≥ 1` (`docs/kgc.md` §11) is version 2:
//! `"ACS-RQ\0\x02" || SN_l || e (4) || E || ChaCha20Poly1305(k_req, nonce 0, body, ad = the
//! 52 header bytes)`, signed as `"ACS-v2 registration" || UN_i || SN_l || e || timestamp ||
//! E`, so neither a relay nor anyone else can move it to another epoch. The answer is the
//! same as for epoch 0; the user checks the key against the epoch's `P_l`.

use core::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use sha3::{Digest, Sha3_256};
use x25519_dalek::{PublicKey as X25519Public, SharedSecret, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::descriptor::{ServerDescriptor, SignedDescriptor};
use crate::error::{malformed, KgcError, Result};
use crate::ids::{ServerPseudonym, UserPseudonym};
use crate::sok::{MasterPublicKey, UserSecretKey};

/// How far (either side, seconds) a request's timestamp may be from the server's clock.
pub const REGISTRATION_WINDOW_SECS: u64 = 300;

const REQUEST_MAGIC: &[u8; 8] = b"ACS-RQ\x00\x01";
const REQUEST_MAGIC_EPOCH: &[u8; 8] = b"ACS-RQ\x00\x02";
const RESPONSE_MAGIC: &[u8; 8] = b"ACS-RS\x00\x01";
const REQUEST_HEADER: usize = 8 + 8 + 32;
const REQUEST_HEADER_EPOCH: usize = REQUEST_HEADER + 4;
const REQUEST_INNER: usize = 32 + 8 + 8 + 64;
const TAG: usize = 16;
/// Length of an encoded epoch-0 (version 1) [`RegistrationRequest`].
pub const REQUEST_BYTES: usize = REQUEST_HEADER + REQUEST_INNER + TAG;
/// Length of an encoded [`RegistrationRequest`] for epoch 1 or later (version 2).
pub const REQUEST_BYTES_EPOCH: usize = REQUEST_HEADER_EPOCH + REQUEST_INNER + TAG;
/// Length of an encoded [`RegistrationResponse`].
pub const RESPONSE_BYTES: usize = 8 + 32 + 48 + TAG;

/// A user's long-term Ed25519 key, from which its pseudonym is derived. Wiped on drop;
/// `Debug` shows only the pseudonym.
pub struct UserIdentity {
    signing: SigningKey,
    pseudonym: UserPseudonym,
}

impl UserIdentity {
    /// A fresh identity.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        loop {
            let mut seed = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(&mut seed[..]);
            // Fails only for a 2^-64 unlucky key (reserved pseudonym 0): draw again.
            if let Ok(identity) = Self::from_seed(*seed) {
                return identity;
            }
        }
    }

    /// Restores an identity from its 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Result<Self> {
        let seed = Zeroizing::new(seed);
        let signing = SigningKey::from_bytes(&seed);
        let pseudonym = UserPseudonym::derive(&signing.verifying_key())?;
        Ok(UserIdentity { signing, pseudonym })
    }

    /// The 32-byte seed, for the user's own storage. Keep it secret.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// `UN_i`.
    pub fn pseudonym(&self) -> UserPseudonym {
        self.pseudonym
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Builds a registration request for `server` at time `now` (Unix seconds). Keep the
    /// returned [`PendingRegistration`] to open the answer. Taking a [`SignedDescriptor`]
    /// (which exists only verified) makes registering with an unchecked descriptor a
    /// compile error; pin it with [`SignedDescriptor::from_bytes_pinned`].
    pub fn register(
        &self,
        server: &SignedDescriptor,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(PendingRegistration, RegistrationRequest)> {
        let server = server.descriptor();
        let ephemeral = StaticSecret::random_from_rng(&mut *rng);
        let ephemeral_public = X25519Public::from(&ephemeral);
        let signature = self.signing.sign(&pop_message(
            self.pseudonym,
            server.server,
            server.epoch,
            now,
            &ephemeral_public,
        ));
        let inner = encode_inner(
            &self.signing.verifying_key(),
            self.pseudonym,
            now,
            &signature,
        );
        let (static_shared, bytes) = encrypt_request(server, &ephemeral, &inner)?;

        let pending = PendingRegistration {
            user: self.pseudonym,
            server: server.server,
            epoch: server.epoch,
            server_x25519: server.x25519_public,
            master_public: server.master_public,
            ephemeral,
            ephemeral_public,
            static_shared,
        };
        Ok((pending, RegistrationRequest { bytes }))
    }
}

fn encode_inner(
    public_key: &VerifyingKey,
    user: UserPseudonym,
    timestamp: u64,
    signature: &Signature,
) -> [u8; REQUEST_INNER] {
    let mut inner = [0u8; REQUEST_INNER];
    inner[..32].copy_from_slice(public_key.as_bytes());
    inner[32..40].copy_from_slice(&user.to_bytes());
    inner[40..48].copy_from_slice(&timestamp.to_be_bytes());
    inner[48..].copy_from_slice(&signature.to_bytes());
    inner
}

/// Encrypts the request body to the server's X25519 key under the user's ephemeral key.
fn encrypt_request(
    server: &ServerDescriptor,
    ephemeral: &StaticSecret,
    inner: &[u8; REQUEST_INNER],
) -> Result<(SharedSecret, Vec<u8>)> {
    let ephemeral_public = X25519Public::from(ephemeral);
    let static_shared = contributory(ephemeral.diffie_hellman(&server.x25519_public))?;
    let mut header = Vec::with_capacity(REQUEST_HEADER_EPOCH);
    if server.epoch == 0 {
        header.extend_from_slice(REQUEST_MAGIC);
        header.extend_from_slice(&server.server.to_bytes());
    } else {
        header.extend_from_slice(REQUEST_MAGIC_EPOCH);
        header.extend_from_slice(&server.server.to_bytes());
        header.extend_from_slice(&server.epoch.to_be_bytes());
    }
    header.extend_from_slice(ephemeral_public.as_bytes());
    let key = request_key(
        &static_shared,
        &ephemeral_public,
        &server.x25519_public,
        server.server,
    );
    let ciphertext = seal_once(&key, inner, &header);
    let mut bytes = header;
    bytes.extend_from_slice(&ciphertext);
    Ok((static_shared, bytes))
}

impl fmt::Debug for UserIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserIdentity")
            .field("pseudonym", &self.pseudonym)
            .finish_non_exhaustive()
    }
}

/// The user's state between sending a request and reading the answer: holds the
/// ephemeral X25519 secret (wiped on drop). Single use.
pub struct PendingRegistration {
    user: UserPseudonym,
    server: ServerPseudonym,
    epoch: u32,
    server_x25519: X25519Public,
    master_public: MasterPublicKey,
    ephemeral: StaticSecret,
    ephemeral_public: X25519Public,
    static_shared: SharedSecret,
}

impl PendingRegistration {
    /// The server this request went to.
    pub fn server(&self) -> ServerPseudonym {
        self.server
    }

    /// The master-secret epoch it asked a key of (the descriptor's): the caller marks the
    /// agreed key with it ([`LongTermKey::in_epoch`](crate::LongTermKey::in_epoch)).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Opens the server's answer and checks the key against the server's master public key.
    pub fn finish(self, response: &RegistrationResponse) -> Result<UserSecretKey> {
        let bytes = &response.bytes;
        let server_ephemeral =
            X25519Public::from(<[u8; 32]>::try_from(&bytes[8..40]).expect("32 bytes"));
        let ephemeral_shared = contributory(self.ephemeral.diffie_hellman(&server_ephemeral))?;
        let key = response_key(
            &self.static_shared,
            &ephemeral_shared,
            &self.ephemeral_public,
            &self.server_x25519,
            &server_ephemeral,
            self.server,
            self.user,
        );
        let ad = response_ad(
            self.server,
            self.user,
            &self.ephemeral_public,
            &server_ephemeral,
        );
        let plain = open_once(&key, &bytes[40..], &ad, "registration response")?;
        let mut secret = Zeroizing::new([0u8; 48]);
        if plain.len() != 48 {
            return Err(malformed("registration response", "wrong key length"));
        }
        secret.copy_from_slice(&plain);
        let mut encoded = Zeroizing::new([0u8; 64]);
        encoded[..8].copy_from_slice(&self.user.to_bytes());
        encoded[8..16].copy_from_slice(&self.server.to_bytes());
        encoded[16..].copy_from_slice(&secret[..]);
        let user_key = UserSecretKey::from_bytes(&encoded[..])?;
        user_key.verify(&self.master_public)?;
        Ok(user_key)
    }
}

impl fmt::Debug for PendingRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRegistration")
            .field("user", &self.user)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// An encoded registration request ([`REQUEST_BYTES`] bytes for epoch 0,
/// [`REQUEST_BYTES_EPOCH`] for later epochs; layout in the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationRequest {
    bytes: Vec<u8>,
}

impl RegistrationRequest {
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Checks the length, magic and epoch field; everything else is checked by the server
    /// that can decrypt it ([`Kgc::register`](crate::Kgc::register)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "registration request";
        match bytes.get(..8) {
            Some(m) if m == REQUEST_MAGIC && bytes.len() == REQUEST_BYTES => {}
            Some(m) if m == REQUEST_MAGIC_EPOCH && bytes.len() == REQUEST_BYTES_EPOCH => {
                if bytes[16..20] == [0; 4] {
                    return Err(malformed(WHAT, "version 2 naming epoch 0"));
                }
            }
            Some(m) if m == REQUEST_MAGIC || m == REQUEST_MAGIC_EPOCH => {
                return Err(malformed(WHAT, "wrong length"))
            }
            Some(_) => return Err(malformed(WHAT, "bad magic or version")),
            None => return Err(malformed(WHAT, "wrong length")),
        }
        ServerPseudonym::from_bytes(bytes[8..16].try_into().expect("8 bytes"))?;
        Ok(RegistrationRequest {
            bytes: bytes.to_vec(),
        })
    }

    /// The master-secret epoch it asks a key of (visible to relays).
    pub fn epoch(&self) -> u32 {
        if self.bytes.len() == REQUEST_BYTES_EPOCH {
            u32::from_be_bytes(self.bytes[16..20].try_into().expect("4 bytes"))
        } else {
            0
        }
    }

    fn header_len(&self) -> usize {
        if self.bytes.len() == REQUEST_BYTES_EPOCH {
            REQUEST_HEADER_EPOCH
        } else {
            REQUEST_HEADER
        }
    }

    /// The server it is addressed to (visible to relays, which route by it anyway).
    pub fn server(&self) -> ServerPseudonym {
        ServerPseudonym::from_bytes(self.bytes[8..16].try_into().expect("8 bytes"))
            .expect("checked when built or decoded")
    }
}

impl fmt::Debug for RegistrationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationRequest")
            .field("server", &self.server())
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

/// An encoded registration response ([`RESPONSE_BYTES`] bytes; layout in the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationResponse {
    bytes: [u8; RESPONSE_BYTES],
}

impl RegistrationResponse {
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; RESPONSE_BYTES] {
        &self.bytes
    }

    /// Checks the length and magic; [`PendingRegistration::finish`] checks the rest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes: [u8; RESPONSE_BYTES] = bytes
            .try_into()
            .map_err(|_| malformed("registration response", "wrong length"))?;
        if &bytes[..8] != RESPONSE_MAGIC {
            return Err(malformed("registration response", "bad magic or version"));
        }
        Ok(RegistrationResponse { bytes })
    }
}

impl fmt::Debug for RegistrationResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrationResponse(..)")
    }
}

/// A request the server has decrypted and fully checked, except against its registry.
pub(crate) struct VerifiedRequest {
    pub user: UserPseudonym,
    pub public_key: VerifyingKey,
    ephemeral_public: X25519Public,
    static_shared: SharedSecret,
}

/// Server side: decrypts and checks a request (everything but the registry).
pub(crate) fn verify_request(
    request: &RegistrationRequest,
    server: ServerPseudonym,
    server_x25519: &StaticSecret,
    now: u64,
) -> Result<VerifiedRequest> {
    let bytes = &request.bytes;
    let addressed = request.server();
    if addressed != server {
        return Err(KgcError::WrongServer {
            expected: server,
            got: addressed,
        });
    }
    let header = request.header_len();
    let ephemeral_public =
        X25519Public::from(<[u8; 32]>::try_from(&bytes[header - 32..header]).expect("32 bytes"));
    let static_shared = contributory(server_x25519.diffie_hellman(&ephemeral_public))?;
    let key = request_key(
        &static_shared,
        &ephemeral_public,
        &X25519Public::from(server_x25519),
        server,
    );
    let inner = open_once(
        &key,
        &bytes[header..],
        &bytes[..header],
        "registration request",
    )?;
    if inner.len() != REQUEST_INNER {
        return Err(malformed("registration request", "wrong inner length"));
    }
    let public_key =
        crate::ids::parse_ed25519(inner[..32].try_into().expect("32"), "user identity")?;
    let claimed = UserPseudonym::from_bytes(inner[32..40].try_into().expect("8"))?;
    let timestamp = u64::from_be_bytes(inner[40..48].try_into().expect("8"));
    let signature = Signature::from_bytes(inner[48..].try_into().expect("64"));

    if timestamp.abs_diff(now) > REGISTRATION_WINDOW_SECS {
        return Err(KgcError::StaleRequest {
            timestamp,
            now,
            window_secs: REGISTRATION_WINDOW_SECS,
        });
    }
    if UserPseudonym::derive(&public_key)? != claimed {
        return Err(KgcError::PseudonymMismatch { claimed });
    }
    public_key
        .verify_strict(
            &pop_message(
                claimed,
                server,
                request.epoch(),
                timestamp,
                &ephemeral_public,
            ),
            &signature,
        )
        .map_err(|_| KgcError::BadSignature("proof of possession"))?;
    Ok(VerifiedRequest {
        user: claimed,
        public_key,
        ephemeral_public,
        static_shared,
    })
}

/// Server side: encrypts the user's secret key to the request's ephemeral key.
pub(crate) fn build_response(
    request: &VerifiedRequest,
    server: ServerPseudonym,
    server_x25519_public: &X25519Public,
    user_key: &UserSecretKey,
    rng: &mut impl CryptoRngCore,
) -> Result<RegistrationResponse> {
    let ephemeral = StaticSecret::random_from_rng(&mut *rng);
    let ephemeral_public = X25519Public::from(&ephemeral);
    let ephemeral_shared = contributory(ephemeral.diffie_hellman(&request.ephemeral_public))?;
    let key = response_key(
        &request.static_shared,
        &ephemeral_shared,
        &request.ephemeral_public,
        server_x25519_public,
        &ephemeral_public,
        server,
        request.user,
    );
    let ad = response_ad(
        server,
        request.user,
        &request.ephemeral_public,
        &ephemeral_public,
    );
    let encoded = user_key.to_bytes();
    let ciphertext = seal_once(&key, &encoded[16..], &ad);
    let mut bytes = [0u8; RESPONSE_BYTES];
    bytes[..8].copy_from_slice(RESPONSE_MAGIC);
    bytes[8..40].copy_from_slice(ephemeral_public.as_bytes());
    bytes[40..].copy_from_slice(&ciphertext);
    Ok(RegistrationResponse { bytes })
}

fn pop_message(
    user: UserPseudonym,
    server: ServerPseudonym,
    epoch: u32,
    timestamp: u64,
    ephemeral: &X25519Public,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + 8 + 8 + 4 + 8 + 32);
    if epoch == 0 {
        out.extend_from_slice(b"ACS-v1 registration");
        out.extend_from_slice(&user.to_bytes());
        out.extend_from_slice(&server.to_bytes());
    } else {
        // Its own label: a version-1 signature never verifies as a version-2 one.
        out.extend_from_slice(b"ACS-v2 registration");
        out.extend_from_slice(&user.to_bytes());
        out.extend_from_slice(&server.to_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
    }
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(ephemeral.as_bytes());
    out
}

fn contributory(shared: SharedSecret) -> Result<SharedSecret> {
    if shared.was_contributory() {
        Ok(shared)
    } else {
        Err(KgcError::NonContributory)
    }
}

fn request_key(
    static_shared: &SharedSecret,
    ephemeral: &X25519Public,
    server_static: &X25519Public,
    server: ServerPseudonym,
) -> Zeroizing<[u8; 32]> {
    let mut digest = Sha3_256::new()
        .chain_update(b"ACS-v1 registration request key")
        .chain_update(static_shared.as_bytes())
        .chain_update(ephemeral.as_bytes())
        .chain_update(server_static.as_bytes())
        .chain_update(server.to_bytes())
        .finalize();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&digest);
    digest.zeroize();
    key
}

fn response_key(
    static_shared: &SharedSecret,
    ephemeral_shared: &SharedSecret,
    user_ephemeral: &X25519Public,
    server_static: &X25519Public,
    server_ephemeral: &X25519Public,
    server: ServerPseudonym,
    user: UserPseudonym,
) -> Zeroizing<[u8; 32]> {
    let mut digest = Sha3_256::new()
        .chain_update(b"ACS-v1 registration response key")
        .chain_update(static_shared.as_bytes())
        .chain_update(ephemeral_shared.as_bytes())
        .chain_update(user_ephemeral.as_bytes())
        .chain_update(server_static.as_bytes())
        .chain_update(server_ephemeral.as_bytes())
        .chain_update(server.to_bytes())
        .chain_update(user.to_bytes())
        .finalize();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&digest);
    digest.zeroize();
    key
}

fn response_ad(
    server: ServerPseudonym,
    user: UserPseudonym,
    user_ephemeral: &X25519Public,
    server_ephemeral: &X25519Public,
) -> [u8; 8 + 8 + 8 + 32 + 32] {
    let mut ad = [0u8; 88];
    ad[..8].copy_from_slice(RESPONSE_MAGIC);
    ad[8..16].copy_from_slice(&server.to_bytes());
    ad[16..24].copy_from_slice(&user.to_bytes());
    ad[24..56].copy_from_slice(user_ephemeral.as_bytes());
    ad[56..].copy_from_slice(server_ephemeral.as_bytes());
    ad
}

/// Encrypts one message under a key used for nothing else (hence the all-zero nonce).
fn seal_once(key: &[u8; 32], plaintext: &[u8], ad: &[u8]) -> Vec<u8> {
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &Default::default(),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .expect("ChaCha20Poly1305 encrypts any message shorter than 256 GiB")
}

fn open_once(
    key: &[u8; 32],
    ciphertext: &[u8],
    ad: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(
            &Default::default(),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| KgcError::OpenFailed(what))
}

#[cfg(test)]
mod tests {
    //! Forged proofs of possession: these need to build requests with chosen contents,
    //! which only this module can encrypt.

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::{Kgc, MasterSecret, Registry};

    const NOW: u64 = 1_790_000_000;

    struct Setup {
        kgc: Kgc,
        other: Kgc,
        alice: UserIdentity,
        mallory: UserIdentity,
        rng: StdRng,
    }

    fn setup() -> Setup {
        Setup {
            kgc: Kgc::new(MasterSecret::from_seed([1; 32])),
            other: Kgc::new(MasterSecret::from_seed([2; 32])),
            alice: UserIdentity::from_seed([10; 32]).unwrap(),
            mallory: UserIdentity::from_seed([11; 32]).unwrap(),
            rng: StdRng::seed_from_u64(1),
        }
    }

    /// Builds and submits a request with the given contents; returns the server's verdict.
    fn submit(
        s: &mut Setup,
        public_key: &VerifyingKey,
        claimed: UserPseudonym,
        timestamp: u64,
        sign: impl FnOnce(&X25519Public) -> Signature,
    ) -> Result<()> {
        let descriptor = s.kgc.descriptor([0; 32], NOW);
        let ephemeral = StaticSecret::random_from_rng(&mut s.rng);
        let signature = sign(&X25519Public::from(&ephemeral));
        let inner = encode_inner(public_key, claimed, timestamp, &signature);
        let (_, bytes) = encrypt_request(descriptor.descriptor(), &ephemeral, &inner)?;
        let request = RegistrationRequest::from_bytes(&bytes)?;
        let mut registry = Registry::new(s.kgc.server());
        s.kgc
            .register(&mut registry, &request, NOW, &mut s.rng)
            .map(|_| ())
    }

    #[test]
    fn honest_request_built_here_is_accepted() {
        let mut s = setup();
        let (pk, un, sn) = (s.alice.public_key(), s.alice.pseudonym(), s.kgc.server());
        let signing = s.alice.signing.clone();
        submit(&mut s, &pk, un, NOW, |e| {
            signing.sign(&pop_message(un, sn, 0, NOW, e))
        })
        .unwrap();
    }

    #[test]
    fn signature_by_another_key_is_refused() {
        let mut s = setup();
        let (pk, un, sn) = (s.alice.public_key(), s.alice.pseudonym(), s.kgc.server());
        let forger = s.mallory.signing.clone();
        let verdict = submit(&mut s, &pk, un, NOW, |e| {
            forger.sign(&pop_message(un, sn, 0, NOW, e))
        });
        assert!(
            matches!(verdict, Err(KgcError::BadSignature(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn signature_over_other_ephemeral_key_is_refused() {
        // A relay that swaps in its own ephemeral key to read the answer.
        let mut s = setup();
        let (pk, un, sn) = (s.alice.public_key(), s.alice.pseudonym(), s.kgc.server());
        let signing = s.alice.signing.clone();
        let honest_ephemeral = X25519Public::from([9u8; 32]);
        let verdict = submit(&mut s, &pk, un, NOW, |_| {
            signing.sign(&pop_message(un, sn, 0, NOW, &honest_ephemeral))
        });
        assert!(
            matches!(verdict, Err(KgcError::BadSignature(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn signature_for_another_server_or_time_is_refused() {
        let mut s = setup();
        let (pk, un) = (s.alice.public_key(), s.alice.pseudonym());
        let other = s.other.server();
        let signing = s.alice.signing.clone();
        let verdict = submit(&mut s, &pk, un, NOW, |e| {
            signing.sign(&pop_message(un, other, 0, NOW, e))
        });
        assert!(
            matches!(verdict, Err(KgcError::BadSignature(_))),
            "{verdict:?}"
        );
        let sn = s.kgc.server();
        let signing = s.alice.signing.clone();
        let verdict = submit(&mut s, &pk, un, NOW, |e| {
            signing.sign(&pop_message(un, sn, 0, NOW - 1, e))
        });
        assert!(
            matches!(verdict, Err(KgcError::BadSignature(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn claiming_a_pseudonym_of_another_key_is_refused() {
        let mut s = setup();
        let (pk, sn) = (s.mallory.public_key(), s.kgc.server());
        let victim = s.alice.pseudonym();
        let signing = s.mallory.signing.clone();
        let verdict = submit(&mut s, &pk, victim, NOW, |e| {
            signing.sign(&pop_message(victim, sn, 0, NOW, e))
        });
        assert!(
            matches!(verdict, Err(KgcError::PseudonymMismatch { claimed }) if claimed == victim),
            "{verdict:?}"
        );
    }

    #[test]
    fn weak_public_key_is_refused() {
        let mut s = setup();
        // The identity point: a small-order key whose "signatures" are trivial.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        let un = UserPseudonym::derive(&weak).unwrap();
        let verdict = submit(&mut s, &weak, un, NOW, |_| Signature::from_bytes(&[0; 64]));
        assert!(
            matches!(verdict, Err(KgcError::InvalidPublicKey(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn low_order_ephemeral_key_is_refused() {
        let s = setup();
        let mut bytes = [0u8; REQUEST_BYTES];
        bytes[..8].copy_from_slice(REQUEST_MAGIC);
        bytes[8..16].copy_from_slice(&s.kgc.server().to_bytes());
        // bytes[16..48] = 0: the X25519 point of order 1/4.
        let request = RegistrationRequest::from_bytes(&bytes).unwrap();
        let mut registry = Registry::new(s.kgc.server());
        let verdict = s
            .kgc
            .register(&mut registry, &request, NOW, &mut StdRng::seed_from_u64(2));
        assert!(
            matches!(verdict, Err(KgcError::NonContributory)),
            "{verdict:?}"
        );
    }
}
