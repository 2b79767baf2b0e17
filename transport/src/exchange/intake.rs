//! What an exchange server does with what arrives through the relays, using `acs-kgc`:
//! registration (verify, extract, answer, persist) and, each round, opening the
//! envelopes: tag → pseudonym through the round's tag index, then the per-round AEAD.
//! One envelope per tag (so per user) per round is accepted; the rest are rejected with a
//! reason. Output shares are sealed back to their users the same way.
//!
//! The registry lives in memory (kgc's [`Registry`], with each user's long-term key
//! cached) and in the database (`registry` table, kgc's entry encoding); a registration
//! is answered only after it is durable.
//!
//! A server that rotates its master secret serves more than one epoch at once
//! (`docs/kgc.md` §11): one key centre and one registry per epoch. A registration names
//! its epoch and goes to that epoch's registry (a pseudonym stays bound to one public key
//! across all of them); an envelope names its epoch and is looked up in that epoch's tag
//! index; an envelope of an epoch this server no longer serves is refused as
//! [`Rejection::RetiredEpoch`]. A user's output goes back under the epoch its envelope
//! used.

use super::collect::Inbound;
use crate::db::{Db, DbError, Registered as DbRegistered};
use acs_kgc::{
    Direction, Envelope, Inserted, Kgc, KgcError, RegistrationRequest, Registry, RegistryEntry,
    RoundTag, UserPseudonym,
};
use rand_core::CryptoRngCore;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
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
    /// A registration for a master-secret epoch this server does not serve (retired, or
    /// not loaded yet).
    #[error("registration for master-secret epoch {asked}; this server serves epochs {served:?}")]
    Epoch {
        /// The epoch the request names.
        asked: u32,
        /// The epochs served.
        served: Vec<u32>,
    },
    /// The key configuration cannot be served (no epoch, or one twice).
    #[error("master-secret epochs: {0}")]
    Epochs(String),
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
    /// Sealed under a master-secret epoch older than every epoch this server serves: the
    /// epoch was retired, and its keys are gone (the user must register again, under a
    /// current descriptor).
    RetiredEpoch,
    /// Sealed under a master-secret epoch newer than any this server serves, or one
    /// between them that it does not serve.
    UnknownEpoch,
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

/// One master-secret epoch's key centre and registry.
struct Epoch {
    kgc: Kgc,
    registry: Registry,
}

/// Rounds whose users' epochs are remembered for sealing their outputs.
const EPOCH_ROUNDS_KEPT: usize = 4;

/// An exchange server's kgc state and registries, one per master-secret epoch served.
pub struct Intake {
    /// Ascending by epoch; never empty.
    epochs: Vec<Epoch>,
    db: Arc<Db>,
    /// For the last few rounds opened: the epoch each user's envelope used, so its
    /// output is sealed under the same epoch's key.
    used: Mutex<VecDeque<(u64, HashMap<UserPseudonym, u32>)>>,
    /// Addresses of retired registrations and the pseudonym each stays reserved to
    /// ([`Db::reserved_addresses`]): nobody else may take them (`docs/kgc.md`,
    /// "Addresses").
    reserved: HashMap<u32, UserPseudonym>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("epochs", &self.served_epochs())
            .field("registry", self.registry())
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// Loads the registry from `db` (every record must be kgc's entry for this server),
    /// serving `kgc`'s epoch alone.
    pub fn load(kgc: Kgc, db: Arc<Db>) -> Result<Self, IntakeError> {
        Self::load_epochs(vec![kgc], db)
    }

    /// Loads one registry per key centre (one per master-secret epoch served), after
    /// deleting from `db` the registrations of every epoch not served (their long-term
    /// keys are what a retired epoch leaves behind).
    pub fn load_epochs(mut kgcs: Vec<Kgc>, db: Arc<Db>) -> Result<Self, IntakeError> {
        kgcs.sort_by_key(Kgc::epoch);
        let served: Vec<u32> = kgcs.iter().map(Kgc::epoch).collect();
        if served.is_empty() {
            return Err(IntakeError::Epochs("none served".into()));
        }
        if served.windows(2).any(|w| w[0] == w[1]) {
            return Err(IntakeError::Epochs(format!("an epoch twice in {served:?}")));
        }
        if kgcs.iter().any(|k| k.server() != kgcs[0].server()) {
            return Err(IntakeError::Epochs(
                "epoch secrets of different servers".into(),
            ));
        }
        for (epoch, rows) in db.retire_epochs(&served)? {
            tracing::warn!(
                epoch,
                registrations = rows,
                ?served,
                "master-secret epoch retired: its registrations and cached keys are deleted from the database"
            );
        }
        let mut epochs = Vec::with_capacity(kgcs.len());
        for kgc in kgcs {
            let mut registry = Registry::new(kgc.server());
            for (pseudonym, bytes) in db.epoch_registrations(kgc.epoch())? {
                let entry = RegistryEntry::from_bytes_in_epoch(kgc.server(), kgc.epoch(), &bytes)?;
                if entry.user().get() != pseudonym {
                    return Err(IntakeError::Conflict(pseudonym));
                }
                registry.insert(entry)?;
            }
            epochs.push(Epoch { kgc, registry });
        }
        let mut reserved = HashMap::new();
        for (address, pseudonym) in db.reserved_addresses()? {
            reserved.insert(address, UserPseudonym::from_u64(pseudonym)?);
        }
        Ok(Intake {
            epochs,
            db,
            used: Mutex::new(VecDeque::new()),
            reserved,
        })
    }

    /// The newest epoch's kgc (for the descriptor the server shows its peers).
    pub fn kgc(&self) -> &Kgc {
        &self.newest().kgc
    }

    /// The newest epoch's registry.
    pub fn registry(&self) -> &Registry {
        &self.newest().registry
    }

    /// The master-secret epochs served, ascending.
    pub fn served_epochs(&self) -> Vec<u32> {
        self.epochs.iter().map(|e| e.kgc.epoch()).collect()
    }

    /// How many users are registered in each epoch served: during a rotation the old
    /// epoch's count stays and the new one's grows as clients move.
    pub fn registered_per_epoch(&self) -> Vec<(u32, usize)> {
        self.epochs
            .iter()
            .map(|e| (e.kgc.epoch(), e.registry.len()))
            .collect()
    }

    fn newest(&self) -> &Epoch {
        self.epochs.last().expect("never empty")
    }

    fn epoch(&self, epoch: u32) -> Option<&Epoch> {
        self.epochs.iter().find(|e| e.kgc.epoch() == epoch)
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
        let asked = request.epoch();
        let served = self.served_epochs();
        let Some(at) = self.epochs.iter().position(|e| e.kgc.epoch() == asked) else {
            return Err(IntakeError::Epoch { asked, served });
        };
        let registered = {
            let e = &mut self.epochs[at];
            e.kgc.register(&mut e.registry, &request, now, rng)?
        };
        let user = registered.user;
        let key = *self.epochs[at]
            .registry
            .get(user)
            .ok_or(IntakeError::Conflict(user.get()))?
            .public_key();
        // One pseudonym, one public key, and one address, one pseudonym, whatever the
        // epoch: first come keeps it.
        let refused = if self
            .epochs
            .iter()
            .any(|e| e.registry.get(user).is_some_and(|o| *o.public_key() != key))
        {
            Some(KgcError::PseudonymTaken(user))
        } else {
            self.address_refusal(user)
        };
        if let Some(refusal) = refused {
            if registered.inserted == Inserted::New {
                self.epochs[at].registry.remove(user);
            }
            return Err(refusal.into());
        }
        if registered.inserted == Inserted::New {
            let registry = &mut self.epochs[at].registry;
            let record = match registry.get(user) {
                Some(entry) => entry.to_bytes(),
                None => return Err(IntakeError::Conflict(user.get())),
            };
            let outcome = self
                .db
                .register_in_epoch(asked, user.get(), record.as_slice());
            match outcome {
                Ok(DbRegistered::New) | Ok(DbRegistered::Same) => {}
                Ok(DbRegistered::Conflict) => {
                    registry.remove(user);
                    return Err(IntakeError::Conflict(user.get()));
                }
                Err(e) => {
                    // Not durable: forget it, so memory and disk agree; the user retries.
                    registry.remove(user);
                    return Err(e.into());
                }
            }
        }
        Ok(registered.response.as_bytes().to_vec())
    }

    /// Every registration's public part (public key, registration time), for a peer
    /// that rejoins (see [`super::rejoin`]): the users of every epoch served, once each
    /// (epochs are this server's own; the peer derives its keys for its own epochs).
    pub fn public_registrations(&self) -> Vec<([u8; 32], u64)> {
        let mut by_user: std::collections::BTreeMap<UserPseudonym, ([u8; 32], u64)> =
            Default::default();
        for e in &self.epochs {
            for r in e.registry.iter() {
                let at = by_user
                    .entry(r.user())
                    .or_insert((*r.public_key(), r.registered_at()));
                at.1 = at.1.min(r.registered_at());
            }
        }
        by_user.into_values().collect()
    }

    /// The registry entries, per epoch served, for the fetched registrations this
    /// server lacks: each public key is validated, its pseudonym derived, and its
    /// long-term key agreed with this server's own secret of each epoch (one pairing per
    /// user and epoch). [`Intake::adopt`] takes them in once the database has them.
    pub fn entries_for(
        &self,
        fetched: &[([u8; 32], u64)],
    ) -> Result<Vec<(u32, RegistryEntry)>, KgcError> {
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
            if !seen.insert(user) {
                continue;
            }
            // A registration this server would refuse stays out (the peer took it in a
            // race with another user of the same address here).
            if let Some(refusal) = self.address_refusal(user) {
                tracing::warn!(%user, error = %refusal, "a peer's registration left out");
                continue;
            }
            for e in &self.epochs {
                if e.registry.get(user).is_none() {
                    out.push((
                        e.kgc.epoch(),
                        RegistryEntry::new(&vk, *at, e.kgc.agree(user)),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Why `user` may not hold its address, if it may not: the address is 0, or
    /// another user's in some epoch served, or reserved to another retired user.
    fn address_refusal(&self, user: UserPseudonym) -> Option<KgcError> {
        if let Some(e) = self
            .epochs
            .iter()
            .find_map(|e| e.registry.check_address(user).err())
        {
            return Some(e);
        }
        match self.reserved.get(&user.address()) {
            Some(&holder) if holder != user => Some(KgcError::AddressTaken { user, holder }),
            _ => None,
        }
    }

    /// Takes in entries from [`Intake::entries_for`] (after the database has them).
    pub fn adopt(&mut self, entries: Vec<(u32, RegistryEntry)>) -> Result<(), KgcError> {
        for (epoch, entry) in entries {
            if let Some(refusal) = self.address_refusal(entry.user()) {
                return Err(refusal);
            }
            if let Some(e) = self.epochs.iter_mut().find(|e| e.kgc.epoch() == epoch) {
                e.registry.insert(entry)?;
            }
        }
        Ok(())
    }

    /// Opens `round`'s envelopes.
    pub fn open_round(&self, round: u64, envelopes: Vec<Inbound>) -> Opened {
        // One tag index per epoch served; an epoch that nobody used this round costs
        // one hash per registered user all the same, so build them only when needed.
        let mut indexes: Vec<Option<acs_kgc::TagIndex>> =
            self.epochs.iter().map(|_| None).collect();
        let oldest = self.epochs[0].kgc.epoch();
        let mut seen: HashSet<(u32, RoundTag)> = HashSet::with_capacity(envelopes.len());
        let mut heard: HashMap<UserPseudonym, u32> = HashMap::with_capacity(envelopes.len());
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
            let epoch = env.epoch();
            let Some(at) = self.epochs.iter().position(|x| x.kgc.epoch() == epoch) else {
                out.rejected.push(reject(if epoch < oldest {
                    Rejection::RetiredEpoch
                } else {
                    Rejection::UnknownEpoch
                }));
                continue;
            };
            let registry = &self.epochs[at].registry;
            let index = indexes[at]
                .get_or_insert_with(|| registry.tag_index(round, Direction::UserToServer));
            let tag = env.tag();
            let Some(user) = index.lookup(&tag) else {
                out.rejected.push(reject(Rejection::UnknownTag));
                continue;
            };
            // One share per user and round, whichever epochs its envelopes use.
            if heard.contains_key(&user) || !seen.insert((epoch, tag)) {
                out.rejected.push(reject(Rejection::Replay));
                continue;
            }
            let opened = registry
                .long_term_key(user)
                .and_then(|k| k.open(round, Direction::UserToServer, &env));
            match opened {
                Ok(share) => {
                    heard.insert(user, epoch);
                    out.shares.push(OpenedShare {
                        user,
                        share: Zeroizing::new(share),
                        relay: e.relay,
                        slot: e.slot,
                    })
                }
                Err(_) => {
                    // A tampered copy must not block the genuine one.
                    seen.remove(&(epoch, tag));
                    out.rejected.push(reject(Rejection::OpenFailed));
                }
            }
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|(r, _)| *r != round);
        used.push_back((round, heard));
        while used.len() > EPOCH_ROUNDS_KEPT {
            used.pop_front();
        }
        out
    }

    /// The epoch to seal `user`'s output of `round` under: the one its envelope used, or
    /// (a round opened before a restart) the newest epoch it is registered in.
    fn output_epoch(&self, round: u64, user: UserPseudonym) -> Option<&Epoch> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let known = used
            .iter()
            .find(|(r, _)| *r == round)
            .and_then(|(_, m)| m.get(&user).copied());
        drop(used);
        match known {
            Some(epoch) => self.epoch(epoch),
            None => self
                .epochs
                .iter()
                .rev()
                .find(|e| e.registry.get(user).is_some()),
        }
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
        let key = self
            .output_epoch(round, user)
            .ok_or(KgcError::UnknownPseudonym(user))?
            .registry
            .long_term_key(user)?;
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

    /// Server 3's key centres of epochs 0 and 1 (the same identity).
    fn epochs(which: &[u32]) -> Vec<Kgc> {
        let master = MasterSecret::from_seed([3; 32]);
        which
            .iter()
            .map(|&e| match e {
                0 => Kgc::epoch_zero(&master),
                e => Kgc::for_epoch(
                    &master,
                    &acs_kgc::EpochSecret::from_seed(e, [40; 32]).unwrap(),
                ),
            })
            .collect()
    }

    /// Registers `who` under `kgc`'s epoch; returns its key of that epoch.
    fn register_in(
        intake: &mut Intake,
        kgc: &Kgc,
        who: &UserIdentity,
        seed: u64,
    ) -> acs_kgc::LongTermKey {
        let mut rng = StdRng::seed_from_u64(seed);
        let (pending, request) = who
            .register(&kgc.descriptor([9; 32], NOW), NOW, &mut rng)
            .unwrap();
        let response = intake
            .register(request.as_bytes(), NOW + 1, &mut rng)
            .unwrap();
        let epoch = pending.epoch();
        pending
            .finish(&RegistrationResponse::from_bytes(&response).unwrap())
            .unwrap()
            .agree()
            .in_epoch(epoch)
    }

    /// Two identities with different pseudonyms and one address (`acs-kgc`'s tests).
    fn address_twins() -> (UserIdentity, UserIdentity) {
        let seed = |i: u32| {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&i.to_le_bytes());
            s[8] = 0xad;
            UserIdentity::from_seed(s).unwrap()
        };
        (seed(40_541), seed(74_045))
    }

    #[test]
    fn an_address_stays_its_users_across_epochs_and_after_retirement() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("x.redb")).unwrap());
        let [k0, k1] = <[Kgc; 2]>::try_from(epochs(&[0, 1])).unwrap();
        let (first, second) = address_twins();
        assert_eq!(first.pseudonym().address(), second.pseudonym().address());
        let refused = |intake: &mut Intake, kgc: &Kgc| {
            let mut rng = StdRng::seed_from_u64(5);
            let (_, request) = second
                .register(&kgc.descriptor([9; 32], NOW), NOW, &mut rng)
                .unwrap();
            let err = intake
                .register(request.as_bytes(), NOW + 1, &mut rng)
                .unwrap_err();
            assert!(
                matches!(err, IntakeError::Kgc(KgcError::AddressTaken { holder, .. })
                    if holder == first.pseudonym()),
                "{err}"
            );
        };
        let mut intake = Intake::load_epochs(epochs(&[0, 1]), db.clone()).unwrap();
        register_in(&mut intake, &k0, &first, 1);
        // Taken in epoch 0, so refused in epoch 1 too.
        refused(&mut intake, &k1);
        refused(&mut intake, &k0);
        assert_eq!(intake.registered_per_epoch(), vec![(0, 1), (1, 0)]);
        // Epoch 0 retired: the registration is gone, the address stays reserved, and
        // stays so after another restart.
        drop(intake);
        let mut intake = Intake::load_epochs(epochs(&[1]), db.clone()).unwrap();
        assert_eq!(intake.registered_per_epoch(), vec![(1, 0)]);
        refused(&mut intake, &k1);
        drop(intake);
        let mut intake = Intake::load_epochs(epochs(&[1]), db.clone()).unwrap();
        refused(&mut intake, &k1);
        assert_eq!(
            db.reserved_addresses().unwrap(),
            vec![(first.pseudonym().address(), first.pseudonym().get())]
        );
        // Its own user takes it back.
        register_in(&mut intake, &k1, &first, 2);
        assert_eq!(intake.registered_per_epoch(), vec![(1, 1)]);
        // A peer's registration with the reserved address is left out of a rejoin.
        let mut fresh = Intake::load_epochs(epochs(&[1]), db.clone()).unwrap();
        let entries = fresh
            .entries_for(&[(*second.public_key().as_bytes(), NOW)])
            .unwrap();
        assert!(entries.is_empty());
        fresh.adopt(entries).unwrap();
    }

    #[test]
    fn the_kgc_and_the_round_agree_on_addresses() {
        assert_eq!(acs_kgc::ADDRESS_BITS, acs_engine::round::ADDRESS_BITS);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let p = rand::Rng::gen::<u64>(&mut rng) | 1;
            let user = UserPseudonym::from_u64(p).unwrap();
            assert_eq!(u64::from(user.address()), acs_engine::round::address(p));
        }
    }

    #[test]
    fn two_epochs_are_served_side_by_side_and_a_retired_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("x.redb")).unwrap());
        let mut intake = Intake::load_epochs(epochs(&[1, 0]), db.clone()).unwrap();
        assert_eq!(intake.served_epochs(), vec![0, 1]);
        let [k0, k1] = <[Kgc; 2]>::try_from(epochs(&[0, 1])).unwrap();
        let alice = UserIdentity::from_seed([20; 32]).unwrap();
        let bob = UserIdentity::from_seed([21; 32]).unwrap();
        let carol = UserIdentity::from_seed([22; 32]).unwrap();
        let a0 = register_in(&mut intake, &k0, &alice, 1);
        let b0 = register_in(&mut intake, &k0, &bob, 2);
        let b1 = register_in(&mut intake, &k1, &bob, 3);
        let c1 = register_in(&mut intake, &k1, &carol, 4);
        assert_eq!(intake.registered_per_epoch(), vec![(0, 2), (1, 2)]);

        let mut rng = StdRng::seed_from_u64(9);
        let round = 7;
        let seal = |k: &acs_kgc::LongTermKey, what: &[u8], rng: &mut StdRng| {
            k.seal(round, Direction::UserToServer, what, rng)
                .unwrap()
                .into_bytes()
        };
        let future = Kgc::for_epoch(
            &MasterSecret::from_seed([3; 32]),
            &acs_kgc::EpochSecret::from_seed(5, [41; 32]).unwrap(),
        )
        .agree(carol.pseudonym());
        let inbound = |slot: u32, sealed: Vec<u8>| Inbound {
            relay: 0,
            slot,
            sealed,
        };
        let opened = intake.open_round(
            round,
            vec![
                inbound(0, seal(&a0, b"alice, epoch 0", &mut rng)),
                inbound(1, seal(&b1, b"bob, epoch 1", &mut rng)),
                // Bob's second share this round, under the old epoch: one per user.
                inbound(2, seal(&b0, b"bob, epoch 0", &mut rng)),
                inbound(3, seal(&c1, b"carol, epoch 1", &mut rng)),
                inbound(4, seal(&future, b"from epoch 5", &mut rng)),
            ],
        );
        let shares: Vec<(u32, &[u8])> = opened
            .shares
            .iter()
            .map(|s| (s.slot, s.share.as_slice()))
            .collect();
        assert_eq!(
            shares,
            vec![
                (0, b"alice, epoch 0".as_slice()),
                (1, b"bob, epoch 1".as_slice()),
                (3, b"carol, epoch 1".as_slice()),
            ]
        );
        let why: Vec<(u32, Rejection)> = opened.rejected.iter().map(|r| (r.slot, r.why)).collect();
        assert_eq!(
            why,
            vec![(2, Rejection::Replay), (4, Rejection::UnknownEpoch)]
        );
        // Each answer goes back under the epoch its envelope used.
        for (who, key, other) in [(&alice, &a0, None), (&bob, &b1, Some(&b0))] {
            let out = intake
                .seal_output(round, who.pseudonym(), b"answer", 0, 0, &mut rng)
                .unwrap();
            let env = Envelope::from_bytes(&out.sealed).unwrap();
            assert_eq!(env.epoch(), key.epoch());
            assert_eq!(
                key.open(round, Direction::ServerToUser, &env).unwrap(),
                b"answer"
            );
            if let Some(o) = other {
                assert!(o.open(round, Direction::ServerToUser, &env).is_err());
            }
        }

        // Retire epoch 0: restart serving epoch 1 alone.
        drop(intake);
        let mut intake = Intake::load_epochs(epochs(&[1]), db.clone()).unwrap();
        assert_eq!(intake.served_epochs(), vec![1]);
        assert_eq!(
            db.registrations().unwrap(),
            vec![],
            "epoch 0's keys are deleted"
        );
        assert_eq!(intake.registered_per_epoch(), vec![(1, 2)]);
        let opened = intake.open_round(
            round + 1,
            vec![
                inbound(
                    0,
                    a0.seal(round + 1, Direction::UserToServer, b"old", &mut rng)
                        .unwrap()
                        .into_bytes(),
                ),
                inbound(
                    1,
                    b1.seal(round + 1, Direction::UserToServer, b"new", &mut rng)
                        .unwrap()
                        .into_bytes(),
                ),
            ],
        );
        assert_eq!(opened.online(), vec![bob.pseudonym().get()]);
        let why: Vec<(u32, Rejection)> = opened.rejected.iter().map(|r| (r.slot, r.why)).collect();
        assert_eq!(why, vec![(0, Rejection::RetiredEpoch)]);
        // A registration under the retired epoch is refused by name.
        let mut r = StdRng::seed_from_u64(11);
        let (_, request) = alice
            .register(&k0.descriptor([9; 32], NOW), NOW, &mut r)
            .unwrap();
        let err = intake
            .register(request.as_bytes(), NOW, &mut r)
            .unwrap_err();
        assert!(
            matches!(err, IntakeError::Epoch { asked: 0, ref served } if served == &vec![1]),
            "{err}"
        );
        // Alice registers again under epoch 1 and is served with the same pseudonym.
        let a1 = register_in(&mut intake, &k1, &alice, 12);
        assert_eq!(a1.user(), a0.user());
        // A rejoining peer is sent every user once, whatever the epochs.
        assert_eq!(intake.public_registrations().len(), 3);
        // A server of epochs 1 and 2 that rejoins derives keys for both.
        let dir2 = tempfile::tempdir().unwrap();
        let db2 = Arc::new(Db::open(&dir2.path().join("y.redb")).unwrap());
        let fresh = Intake::load_epochs(epochs(&[1, 2]), db2).unwrap();
        let entries = fresh.entries_for(&intake.public_registrations()).unwrap();
        for epoch in [1, 2] {
            assert_eq!(entries.iter().filter(|(e, _)| *e == epoch).count(), 3);
        }
        assert_eq!(entries.len(), 6);
        assert!(entries
            .iter()
            .any(|(e, r)| *e == 1 && r.long_term_key() == &b1));
    }
}
