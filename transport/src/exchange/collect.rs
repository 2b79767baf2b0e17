//! Gathering one round's relay batches, and returning the outputs to the relays.

use crate::relay_port::{PortError, PortEvent, RelayPortHandle};
use crate::wire::{BatchEntry, RelayOutputs, RelayRegisterRequest};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One envelope as it reached this server: which relay, which slot, the sealed bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The relay it came through.
    pub relay: u32,
    /// Its slot in that relay's batch.
    pub slot: u32,
    /// The sealed bytes (a kgc envelope).
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("relay", &self.relay)
            .field("slot", &self.slot)
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

/// What a round's collection produced.
#[derive(Debug, Default)]
pub struct Collected {
    /// The round.
    pub round: u64,
    /// Every envelope, relay by relay in the order of their batches.
    pub envelopes: Vec<Inbound>,
    /// Configured relays whose batch did not arrive in time.
    pub missing: Vec<u32>,
    /// Batches ignored: (relay, why).
    pub ignored: Vec<(u32, String)>,
}

/// Collects the batches for `round` from `relays` until all have arrived or `until`.
/// Registration requests arriving meanwhile go to `on_register` (registration does not
/// wait for rounds); batches for other rounds, second batches and batches from relays not
/// in `relays` are ignored and listed.
pub async fn collect_batches(
    events: &mut mpsc::Receiver<PortEvent>,
    round: u64,
    relays: &[u32],
    until: Instant,
    mut on_register: impl FnMut(u32, RelayRegisterRequest),
) -> Collected {
    let expected: BTreeSet<u32> = relays.iter().copied().collect();
    let mut got: BTreeMap<u32, Vec<BatchEntry>> = BTreeMap::new();
    let mut ignored = Vec::new();
    while got.len() < expected.len() {
        let ev = match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) | Err(_) => break,
        };
        match ev {
            PortEvent::Batch { relay, batch } => {
                let why = if !expected.contains(&relay) {
                    Some("relay not configured".to_string())
                } else if batch.round != round {
                    Some(format!(
                        "batch for round {} during round {round}",
                        batch.round
                    ))
                } else if got.contains_key(&relay) {
                    Some("second batch this round".to_string())
                } else {
                    None
                };
                match why {
                    Some(w) => {
                        tracing::warn!(relay, round, reason = %w, "batch ignored");
                        ignored.push((relay, w));
                    }
                    None => {
                        got.insert(relay, batch.entries);
                    }
                }
            }
            PortEvent::Register { relay, request } => on_register(relay, request),
            PortEvent::Connected { relay } => tracing::debug!(relay, "relay connected"),
            PortEvent::Disconnected { relay, reason } => {
                tracing::info!(relay, %reason, "relay disconnected")
            }
        }
    }
    let missing = expected
        .iter()
        .copied()
        .filter(|r| !got.contains_key(r))
        .collect();
    let envelopes = got
        .into_iter()
        .flat_map(|(relay, entries)| {
            entries.into_iter().map(move |e| Inbound {
                relay,
                slot: e.slot,
                sealed: e.sealed,
            })
        })
        .collect();
    Collected {
        round,
        envelopes,
        missing,
        ignored,
    }
}

/// Sends each relay its outputs for `round` (one [`RelayOutputs`] per relay that has
/// any). Returns the relays that could not be reached; their users will retry.
pub fn send_outputs(
    port: &RelayPortHandle,
    round: u64,
    outputs: impl IntoIterator<Item = Inbound>,
) -> Vec<(u32, PortError)> {
    let mut by_relay: BTreeMap<u32, Vec<BatchEntry>> = BTreeMap::new();
    for o in outputs {
        by_relay.entry(o.relay).or_default().push(BatchEntry {
            slot: o.slot,
            sealed: o.sealed,
        });
    }
    let mut failed = Vec::new();
    for (relay, outputs) in by_relay {
        if let Err(e) = port.send_outputs(relay, &RelayOutputs { round, outputs }) {
            tracing::warn!(relay, round, error = %e, "outputs not delivered to relay");
            failed.push((relay, e));
        }
    }
    failed
}
