//! What an exchange server does with what arrives through the relays, using `acs-kgc`:
//! registration (verify, extract, answer, persist) and, each round, opening the
//! envelopes: tag → pseudonym through the round's tag index, then the per-round AEAD.
//! One envelope per tag (so per user) per round is accepted; the rest are rejected with a
//! reason. Output shares are sealed back to their users the same way.
//!
//! The registry lives in memory (kgc's [`Registry`], with each user's long-term key
//! cached) and in the database (`registry` table, kgc's entry encoding); a registration
//! is answered only after it is durable.

use super::collect::Inbound;
use crate::db::{Db, DbError, Registered as DbRegistered};
use acs_kgc::{
    Direction, Envelope, Inserted, Kgc, KgcError, RegistrationRequest, Registry, RegistryEntry,
    RoundTag, UserPseudonym,
};
use rand_core::CryptoRngCore;
use std::collections::HashSet;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Why intake failed.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// kgc refused (bad request, stale timestamp, pseudonym taken, ...).
    #[error(transparent)]
    Kgc(#[from] KgcError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The database holds another record for this pseudonym than kgc's registry.
    #[error("pseudonym {0} is registered differently in the database")]
    Conflict(u64),
}

/// One envelope that opened: whose it is, the share inside, and where the answer goes.
pub struct OpenedShare {
    /// The sender, bound by the sealing key.
    pub user: UserPseudonym,
    /// This server's share of the user's block (wiped on drop).
    pub share: Zeroizing<Vec<u8>>,
    /// The relay it came through.
    pub relay: u32,
    /// Its slot in that relay's batch.
    pub slot: u32,
}

impl std::fmt::Debug for OpenedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedShare")
            .field("user", &self.user)
            .field("share_len", &self.share.len())
            .field("relay", &self.relay)
            .field("slot", &self.slot)
            .finish()
    }
}

/// Why an envelope was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a kgc envelope.
    Malformed,
    /// No registered user has this tag this round (unknown pseudonym, another round or
    /// direction, or random bytes).
    UnknownTag,
    /// A second envelope with the same tag this round (a replay, or a retry through
    /// another relay): the first one counts.
    Replay,
    /// The tag matched but the AEAD did not open (tampered).
    OpenFailed,
}

/// One rejected envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The relay it came through.
    pub relay: u32,
    /// Its slot.
    pub slot: u32,
    /// Why.
    pub why: Rejection,
}

/// A round's opened envelopes.
#[derive(Debug, Default)]
pub struct Opened {
    /// Accepted shares, in arrival (relay, slot) order.
    pub shares: Vec<OpenedShare>,
    /// Everything else.
    pub rejected: Vec<Rejected>,
}

impl Opened {
    /// The pseudonyms heard from this round, ascending: the input of the consistency check.
    pub fn online(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.shares.iter().map(|s| s.user.get()).collect();
        v.sort_unstable();
        v
    }
}

/// An exchange server's kgc state and registry.
pub struct Intake {
    kgc: Kgc,
    registry: Registry,
    db: Arc<Db>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("kgc", &self.kgc)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// Loads the registry from `db` (every record must be kgc's entry for this server).
    pub fn load(kgc: Kgc, db: Arc<Db>) -> Result<Self, IntakeError> {
        let mut registry = Registry::new(kgc.server());
        for (pseudonym, bytes) in db.registrations()? {
            let entry = RegistryEntry::from_bytes(kgc.server(), &bytes)?;
            if entry.user().get() != pseudonym {
                return Err(IntakeError::Conflict(pseudonym));
            }
            registry.insert(entry)?;
        }
        Ok(Intake { kgc, registry, db })
    }

    /// The kgc (for the descriptor).
    pub fn kgc(&self) -> &Kgc {
        &self.kgc
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Handles a registration request at `now` (Unix seconds); returns the response bytes
    /// to send back, after the new entry (if any) is durable.
    pub fn register(
        &mut self,
        request: &[u8],
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, IntakeError> {
        let request = RegistrationRequest::from_bytes(request)?;
        let registered = self.kgc.register(&mut self.registry, &request, now, rng)?;
        if registered.inserted == Inserted::New {
            let user = registered.user;
            let record = match self.registry.get(user) {
                Some(entry) => entry.to_bytes(),
                None => return Err(IntakeError::Conflict(user.get())),
            };
            let outcome = self.db.register(user.get(), record.as_slice());
            match outcome {
                Ok(DbRegistered::New) | Ok(DbRegistered::Same) => {}
                Ok(DbRegistered::Conflict) => {
                    self.registry.remove(user);
                    return Err(IntakeError::Conflict(user.get()));
                }
                Err(e) => {
                    // Not durable: forget it, so memory and disk agree; the user retries.
                    self.registry.remove(user);
                    return Err(e.into());
                }
            }
        }
        Ok(registered.response.as_bytes().to_vec())
    }

    /// Every registration's public part (public key, registration time), for a peer
    /// that rejoins (see [`super::rejoin`]).
    pub fn public_registrations(&self) -> Vec<([u8; 32], u64)> {
        self.registry
            .iter()
            .map(|e| (*e.public_key(), e.registered_at()))
            .collect()
    }

    /// The registry entries for the fetched registrations this server lacks: each
    /// public key is validated, its pseudonym derived, and its long-term key agreed with
    /// this server's own master secret (one pairing each). [`Intake::adopt`] takes them
    /// in once the database has them.
    pub fn entries_for(&self, fetched: &[([u8; 32], u64)]) -> Result<Vec<RegistryEntry>, KgcError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (key, at) in fetched {
            let vk = acs_kgc::ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| {
                KgcError::Malformed {
                    what: "fetched registration",
                    reason: "not an Ed25519 public key",
                }
            })?;
            let user = UserPseudonym::derive(&vk)?;
            if self.registry.get(user).is_some() || !seen.insert(user) {
                continue;
            }
            out.push(RegistryEntry::new(&vk, *at, self.kgc.agree(user)));
        }
        Ok(out)
    }

    /// Takes in entries from [`Intake::entries_for`] (after the database has them).
    pub fn adopt(&mut self, entries: Vec<RegistryEntry>) -> Result<(), KgcError> {
        for e in entries {
            self.registry.insert(e)?;
        }
        Ok(())
    }

    /// Opens `round`'s envelopes.
    pub fn open_round(&self, round: u64, envelopes: Vec<Inbound>) -> Opened {
        let index = self.registry.tag_index(round, Direction::UserToServer);
        let mut seen: HashSet<RoundTag> = HashSet::with_capacity(envelopes.len());
        let mut out = Opened::default();
        for e in envelopes {
            let reject = |why| Rejected {
                relay: e.relay,
                slot: e.slot,
                why,
            };
            let env = match Envelope::from_vec(e.sealed) {
                Ok(env) => env,
                Err(_) => {
                    out.rejected.push(reject(Rejection::Malformed));
                    continue;
                }
            };
            let tag = env.tag();
            let Some(user) = index.lookup(&tag) else {
                out.rejected.push(reject(Rejection::UnknownTag));
                continue;
            };
            if !seen.insert(tag) {
                out.rejected.push(reject(Rejection::Replay));
                continue;
            }
            let opened = self
                .registry
                .long_term_key(user)
                .and_then(|k| k.open(round, Direction::UserToServer, &env));
            match opened {
                Ok(share) => out.shares.push(OpenedShare {
                    user,
                    share: Zeroizing::new(share),
                    relay: e.relay,
                    slot: e.slot,
                }),
                Err(_) => {
                    // A tampered copy must not block the genuine one.
                    seen.remove(&tag);
                    out.rejected.push(reject(Rejection::OpenFailed));
                }
            }
        }
        out
    }

    /// Seals `share` (this server's output share) for `user` in `round`, addressed back to
    /// the (relay, slot) its envelope came from.
    pub fn seal_output(
        &self,
        round: u64,
        user: UserPseudonym,
        share: &[u8],
        relay: u32,
        slot: u32,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Inbound, IntakeError> {
        let key = self.registry.long_term_key(user)?;
        let env = key.seal(round, Direction::ServerToUser, share, rng)?;
        Ok(Inbound {
            relay,
            slot,
            sealed: env.into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acs_kgc::{MasterSecret, RegistrationResponse, UserIdentity};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const NOW: u64 = 1_790_000_000;

    fn setup(dir: &std::path::Path) -> (Intake, Arc<Db>) {
        let db = Arc::new(Db::open(&dir.join("x.redb")).unwrap());
        let kgc = Kgc::new(MasterSecret::from_seed([3; 32]));
        (Intake::load(kgc, db.clone()).unwrap(), db)
    }

    fn register(intake: &mut Intake, who: &UserIdentity, seed: u64) -> acs_kgc::UserSecretKey {
        let mut rng = StdRng::seed_from_u64(seed);
        let descriptor = intake.kgc().descriptor([9; 32], NOW);
        let (pending, request) = who.register(&descriptor, NOW, &mut rng).unwrap();
        let response = intake
            .register(request.as_bytes(), NOW + 1, &mut rng)
            .unwrap();
        pending
            .finish(&RegistrationResponse::from_bytes(&response).unwrap())
            .unwrap()
    }

    #[test]
    fn registration_persists_and_envelopes_open_once_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let (mut intake, db) = setup(dir.path());
        let alice = UserIdentity::from_seed([10; 32]).unwrap();
        let bob = UserIdentity::from_seed([11; 32]).unwrap();
        let stranger = UserIdentity::from_seed([12; 32]).unwrap();
        let ka = register(&mut intake, &alice, 1).agree();
        let kb = register(&mut intake, &bob, 2).agree();
        // Registering again under the same key is answered and changes nothing.
        let _ = register(&mut intake, &alice, 3);
        assert_eq!(db.registered_count().unwrap(), 2);

        // The registry survives a restart.
        drop(intake);
        let kgc = Kgc::new(MasterSecret::from_seed([3; 32]));
        let intake = Intake::load(kgc, db.clone()).unwrap();
        assert_eq!(intake.registry().len(), 2);

        let mut rng = StdRng::seed_from_u64(9);
        let round = 42;
        let sa = ka
            .seal(round, Direction::UserToServer, b"alice share", &mut rng)
            .unwrap();
        let sa_retry = ka
            .seal(round, Direction::UserToServer, b"alice again", &mut rng)
            .unwrap();
        let sb_old = kb
            .seal(round - 1, Direction::UserToServer, b"old", &mut rng)
            .unwrap();
        let sb = kb
            .seal(round, Direction::UserToServer, b"bob share", &mut rng)
            .unwrap();
        let mut tampered = sb.as_bytes().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        // A stranger registered elsewhere seals with a key this server does not know.
        let elsewhere = Kgc::new(MasterSecret::from_seed([4; 32]));
        let ks = elsewhere.agree(stranger.pseudonym());
        let ss = ks
            .seal(round, Direction::UserToServer, b"hi", &mut rng)
            .unwrap();
        let inbound = |slot: u32, sealed: Vec<u8>| Inbound {
            relay: slot % 2,
            slot,
            sealed,
        };
        let opened = intake.open_round(
            round,
            vec![
                inbound(0, tampered),
                inbound(1, sa.as_bytes().to_vec()),
                inbound(2, sa_retry.as_bytes().to_vec()),
                inbound(3, sb_old.as_bytes().to_vec()),
                inbound(4, vec![1, 2, 3]),
                inbound(5, sb.as_bytes().to_vec()),
                inbound(6, sb.as_bytes().to_vec()),
                inbound(7, ss.as_bytes().to_vec()),
            ],
        );
        let shares: Vec<(u64, &[u8], u32)> = opened
            .shares
            .iter()
            .map(|s| (s.user.get(), s.share.as_slice(), s.slot))
            .collect();
        assert_eq!(
            shares,
            vec![
                (alice.pseudonym().get(), b"alice share".as_slice(), 1),
                (bob.pseudonym().get(), b"bob share".as_slice(), 5),
            ]
        );
        let why: Vec<(u32, Rejection)> = opened.rejected.iter().map(|r| (r.slot, r.why)).collect();
        assert_eq!(
            why,
            vec![
                (0, Rejection::OpenFailed),
                (2, Rejection::Replay),
                (3, Rejection::UnknownTag),
                (4, Rejection::Malformed),
                (6, Rejection::Replay),
                (7, Rejection::UnknownTag),
            ]
        );
        let mut online = vec![alice.pseudonym().get(), bob.pseudonym().get()];
        online.sort_unstable();
        assert_eq!(opened.online(), online);

        // Outputs go back sealed to their user, for this round, server to user.
        let out = intake
            .seal_output(round, alice.pseudonym(), b"output", 1, 1, &mut rng)
            .unwrap();
        let env = Envelope::from_bytes(&out.sealed).unwrap();
        assert_eq!(
            ka.open(round, Direction::ServerToUser, &env).unwrap(),
            b"output"
        );
        assert!(kb.open(round, Direction::ServerToUser, &env).is_err());
    }
}
