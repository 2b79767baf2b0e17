//! The ideal exchange round: the same semantics as [`super::mpc`], computed in the clear.
//! It is the oracle the three-party round is tested against, and it is the definition:
//!
//! 1. Candidates are the stored items that have not expired (`round - received <
//!    expiry_rounds`), then this round's send and request blocks; candidates are ranked
//!    oldest first by `(received round, source pseudonym)`.
//! 2. Every online user receives the best-ranked candidate addressed to it, if any.
//! 3. The undelivered candidates, best-ranked first, fill the store up to its capacity;
//!    the rest are dropped.
//! 4. A user's status: `cover` for a cover block; otherwise `delivered`, `stored` or
//!    `dropped` by what happened to its item. Expired items leave the store silently.

use super::{Block, Incoming, Output, Role, RoundConfig, Status};

/// An item held in the store, in the clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredItem {
    /// Send or request.
    pub role_bits: u64,
    /// Source pseudonym.
    pub src: u64,
    /// Target pseudonym.
    pub dst: u64,
    /// The round it was received in.
    pub received: u32,
    /// Payload words.
    pub payload: Vec<u64>,
}

/// The real items of a store, from its reconstructed words (`store_capacity` records of
/// `[flags (bit 0 valid, bits 1-2 role), src, dst, received, payload..]`), in store order.
/// For checking the three-party store against [`ideal_round`]'s.
pub fn stored_items(words: &[u64], cfg: &RoundConfig) -> Vec<StoredItem> {
    words
        .chunks(cfg.store_words())
        .filter(|r| r[0] & 1 == 1)
        .map(|r| StoredItem {
            role_bits: (r[0] >> 1) & 3,
            src: r[1],
            dst: r[2],
            received: r[3] as u32,
            payload: r[4..].to_vec(),
        })
        .collect()
}

/// Runs one round. `blocks` are this round's `(source, block)` for every online user,
/// sources distinct; `store` is the previous store, best-ranked first. Returns each
/// user's output in the order of `blocks`, and the new store (best-ranked first, at most
/// `store_capacity` items).
pub fn ideal_round(
    cfg: &RoundConfig,
    round: u32,
    blocks: &[(u64, Block)],
    store: &[StoredItem],
) -> (Vec<Output>, Vec<StoredItem>) {
    // Candidates: (item, Some(index of the user who sent it this round)).
    let mut candidates: Vec<(StoredItem, Option<usize>)> = store
        .iter()
        .filter(|it| round.saturating_sub(it.received) < cfg.expiry_rounds)
        .map(|it| (it.clone(), None))
        .collect();
    let mut fresh: Vec<(StoredItem, Option<usize>)> = blocks
        .iter()
        .enumerate()
        .filter(|(_, (_, b))| b.role != Role::Cover)
        .map(|(i, (src, b))| {
            let mut payload = b.payload.clone();
            payload.resize(cfg.payload_words, 0);
            (
                StoredItem {
                    role_bits: b.role.bits(),
                    src: *src,
                    dst: b.dst,
                    received: round,
                    payload,
                },
                Some(i),
            )
        })
        .collect();
    candidates.append(&mut fresh);
    candidates.sort_by_key(|(it, _)| (it.received, it.src));

    let mut outputs: Vec<Output> = blocks
        .iter()
        .map(|(_, b)| Output {
            status: if b.role == Role::Cover {
                Status::Cover
            } else {
                Status::Dropped
            },
            incoming: None,
        })
        .collect();
    let mut delivered = vec![false; candidates.len()];
    // The best-ranked candidate for each target (sources are distinct, so each target
    // receives at most once and no candidate is claimed twice).
    let mut first_for: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (c, (it, _)) in candidates.iter().enumerate() {
        first_for.entry(it.dst).or_insert(c);
    }
    for (u, (src, _)) in blocks.iter().enumerate() {
        if let Some(&c) = first_for.get(src) {
            delivered[c] = true;
            let it = &candidates[c].0;
            outputs[u].incoming = Some(Incoming {
                role: Role::from_bits(it.role_bits).unwrap_or(Role::Request),
                from: it.src,
                payload: it.payload.clone(),
            });
            if let Some(sender) = candidates[c].1 {
                outputs[sender].status = Status::Delivered;
            }
        }
    }
    let mut new_store = Vec::new();
    for (c, (it, sender)) in candidates.into_iter().enumerate() {
        if delivered[c] {
            continue;
        }
        if new_store.len() < cfg.store_capacity {
            new_store.push(it);
            if let Some(s) = sender {
                outputs[s].status = Status::Stored;
            }
        }
    }
    (outputs, new_store)
}
