//! A user's keys with one exchange server across master-secret epochs (`docs/kgc.md`
//! §11): the key of the newest epoch it has registered under seals its envelopes; the
//! previous epoch's key is kept to open answers to envelopes sent before the move.
//!
//! The first descriptor pins the server's identity key. A later descriptor is taken only
//! if that same key signed it (so a rotation needs no new pin, and nobody else can
//! announce an epoch) and it names a newer epoch; the user then registers under it in
//! the background (through any relay, like the first registration) and moves to it once
//! the answer is in. A registration that is not answered in time (the server does not
//! serve the epoch yet) is dropped and tried again at the next offer.

use acs_kgc::{
    Direction, Envelope, KgcError, LongTermKey, PendingRegistration, RegistrationResponse,
    SignedDescriptor,
};
use rand_core::CryptoRngCore;
use std::time::{Duration, Instant};

/// A registration under a newer epoch, waiting for its answer.
#[derive(Debug)]
struct Move {
    pending: PendingRegistration,
    since: Instant,
}

/// What [`KeyRing::offer`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not newer than the epoch in use (or the one being registered): nothing to do.
    Current,
    /// A newer epoch: register under it.
    Register,
}

/// One server's keys (see the module docs).
#[derive(Debug)]
pub struct KeyRing {
    identity: [u8; 32],
    /// Newest last; at most two (current and previous).
    keys: Vec<LongTermKey>,
    moving: Option<Move>,
}

impl KeyRing {
    /// The ring after the first registration: `key` was agreed under `descriptor`.
    pub fn new(descriptor: &SignedDescriptor, key: LongTermKey) -> Self {
        KeyRing {
            identity: *descriptor.descriptor().identity_key.as_bytes(),
            keys: vec![key],
            moving: None,
        }
    }

    /// The epoch whose key seals this user's envelopes.
    pub fn epoch(&self) -> u32 {
        self.current().epoch()
    }

    fn current(&self) -> &LongTermKey {
        self.keys.last().expect("never empty")
    }

    /// Whether `descriptor` calls for a registration under a newer epoch. A descriptor
    /// signed by another identity key than the pinned one is an error; a registration
    /// left unanswered for `timeout` is given up, so the offer starts it again.
    pub fn offer(
        &mut self,
        descriptor: &SignedDescriptor,
        timeout: Duration,
    ) -> Result<Offer, KgcError> {
        let d = descriptor.descriptor();
        if d.identity_key.as_bytes() != &self.identity {
            return Err(KgcError::BadSignature(
                "server descriptor (identity key is not the pinned one)",
            ));
        }
        if self
            .moving
            .as_ref()
            .is_some_and(|m| m.since.elapsed() > timeout)
        {
            self.moving = None;
        }
        let target = self
            .moving
            .as_ref()
            .map_or(self.epoch(), |m| m.pending.epoch().max(self.epoch()));
        if d.epoch > target {
            Ok(Offer::Register)
        } else {
            Ok(Offer::Current)
        }
    }

    /// Notes the registration sent for a newer epoch.
    pub fn moving(&mut self, pending: PendingRegistration) {
        self.moving = Some(Move {
            pending,
            since: Instant::now(),
        });
    }

    /// Takes a registration answer: when it answers the move in progress, the new key
    /// becomes the current one (one pairing) and its epoch is returned. An answer that
    /// does not open (a stale or foreign one) leaves everything as it was.
    pub fn answered(&mut self, body: &[u8]) -> Result<Option<u32>, KgcError> {
        let Some(m) = self.moving.take() else {
            return Ok(None);
        };
        let response = RegistrationResponse::from_bytes(body)?;
        let epoch = m.pending.epoch();
        match m.pending.finish(&response) {
            Ok(secret) => {
                self.keys.push(secret.agree().in_epoch(epoch));
                if self.keys.len() > 2 {
                    self.keys.remove(0);
                }
                Ok(Some(epoch))
            }
            Err(e) => Err(e),
        }
    }

    /// Seals under the current epoch's key.
    pub fn seal(
        &self,
        round: u64,
        direction: Direction,
        share: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Envelope, KgcError> {
        self.current().seal(round, direction, share, rng)
    }

    /// Opens with the key of the epoch the envelope names.
    pub fn open(
        &self,
        round: u64,
        direction: Direction,
        envelope: &Envelope,
    ) -> Result<Vec<u8>, KgcError> {
        self.keys
            .iter()
            .find(|k| k.epoch() == envelope.epoch())
            .ok_or(KgcError::OpenFailed(
                "envelope (of an epoch this user holds no key of)",
            ))?
            .open(round, direction, envelope)
    }
}
