//! The master-secret epochs an exchange server serves (`docs/kgc.md` §11,
//! `docs/operators.md` §9 "Master-secret rotation").
//!
//! The `master` file holds the server's identity (the Ed25519 key its descriptors are
//! signed with, from which `SN_l` derives, and the X25519 key registrations are encrypted
//! to) and epoch 0's `s_l`; each later epoch has its own secret file
//! ([`acs_kgc::EpochSecret`]). The configuration's `[[epochs]]` list says which epochs
//! are served; without it, epoch 0 alone. Serving two at once is the transition: users
//! move to the newer one at their own pace, and the older one is retired by taking it out
//! of the list and restarting.

use crate::config::ExchangeFile;
use acs_kgc::{EpochSecret, Kgc, MasterSecret};
use std::sync::{Arc, Mutex};

/// Epochs loaded on SIGHUP, waiting for the round loop to take them up between two
/// rounds (a round never sees its epochs change under it).
#[derive(Clone, Debug, Default)]
pub struct EpochReload(Arc<Mutex<Option<ServerKeys>>>);

impl EpochReload {
    /// Hands over the keys to serve from the next round (replacing any not taken yet).
    pub fn offer(&self, keys: ServerKeys) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(keys);
    }

    /// The keys handed over since the last call, if any.
    pub fn take(&self) -> Option<ServerKeys> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The most epochs served at once: a transition needs two; a third (the next one made
/// ready early) is allowed, more would only multiply the per-round tag indexes.
pub const MAX_EPOCHS_SERVED: usize = 3;

/// A server's key material: its master secret (identity and epoch 0) and the secrets of
/// the later epochs it serves. Every secret is wiped on drop.
#[derive(Debug)]
pub struct ServerKeys {
    /// The identity, and epoch 0's `s_l`.
    pub master: MasterSecret,
    /// Whether epoch 0 (the master secret's own `s_l`) is served.
    pub serve_epoch_zero: bool,
    /// The later epochs served.
    pub epochs: Vec<EpochSecret>,
}

impl From<MasterSecret> for ServerKeys {
    /// Epoch 0 alone: a server that has never rotated.
    fn from(master: MasterSecret) -> Self {
        ServerKeys {
            master,
            serve_epoch_zero: true,
            epochs: Vec::new(),
        }
    }
}

impl ServerKeys {
    /// Loads the master secret and every epoch secret the configuration names, checking
    /// that each file holds the epoch it is listed under.
    pub fn load(file: &ExchangeFile) -> Result<Self, String> {
        let master = MasterSecret::load(&file.master).map_err(|e| e.to_string())?;
        if file.epochs.is_empty() {
            return Ok(master.into());
        }
        let mut keys = ServerKeys {
            master,
            serve_epoch_zero: false,
            epochs: Vec::new(),
        };
        for e in &file.epochs {
            match &e.secret {
                None => keys.serve_epoch_zero = true,
                Some(path) => {
                    let secret = EpochSecret::load(path).map_err(|err| err.to_string())?;
                    if secret.epoch() != e.epoch {
                        return Err(format!(
                            "epochs: {} holds the secret of epoch {}, listed as epoch {}",
                            path.display(),
                            secret.epoch(),
                            e.epoch
                        ));
                    }
                    keys.epochs.push(secret);
                }
            }
        }
        Ok(keys)
    }

    /// One key centre per epoch served, ascending (each costs a G2 hash and two G2
    /// scalar multiplications).
    pub fn key_centres(&self) -> Vec<Kgc> {
        let mut out = Vec::with_capacity(1 + self.epochs.len());
        if self.serve_epoch_zero {
            out.push(Kgc::epoch_zero(&self.master));
        }
        for e in &self.epochs {
            out.push(Kgc::for_epoch(&self.master, e));
        }
        out.sort_by_key(Kgc::epoch);
        out
    }
}
