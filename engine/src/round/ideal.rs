//! The ideal exchange round: the same semantics as [`super::mpc`], computed in the clear.
//! It is the oracle the three-party round is tested against, and it is the definition:
//!
//! 1. Candidates are the stored items that have not expired (`round - received <
//!    expiry_rounds` for messages, `< receipt_rounds` for receipts), in store order,
//!    then this round's send and request blocks by source pseudonym. The store is kept
//!    in (received round, source) order, and a receipt takes its message's place in it,
//!    so candidates are ranked oldest first.
//! 2. Every online user receives the best-ranked candidate addressed to it, if any: a
//!    message, or a receipt (addressed to the message's sender).
//! 3. The new store, in order: for each stored item, a message that was delivered or
//!    has expired becomes its receipt (same place, no payload; fate `delivered` or
//!    `expired`); a live undelivered item stays; a receipt that was delivered or expired
//!    leaves. Then the undelivered new candidates fill the store up to its capacity; the
//!    rest are dropped. Stored items map one to one onto stored items, so nothing stored
//!    is ever dropped for lack of space.
//! 4. A user's status: `cover` for a cover block; otherwise `delivered`, `stored` or
//!    `dropped` by what happened to its item. A `stored` message's sender later gets its
//!    receipt: nothing it handed over is lost without its sender being told, unless the
//!    sender itself stays away for `receipt_rounds` rounds.

use super::{Block, Fate, Incoming, Output, Receipt, Role, RoundConfig, Status};

/// What a stored receipt records about its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    /// What became of the message.
    pub fate: Fate,
    /// The round the message was sent in.
    pub sent: u32,
}

/// An item held in the store, in the clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredItem {
    /// Send or request (of a receipt: its message's).
    pub role_bits: u64,
    /// Source pseudonym (of a receipt: its message's target).
    pub src: u64,
    /// Target pseudonym (of a receipt: its message's sender).
    pub dst: u64,
    /// The round it was received in (of a receipt: the round it was made).
    pub received: u32,
    /// Payload words (zero for a receipt).
    pub payload: Vec<u64>,
    /// `Some` for a receipt.
    pub receipt: Option<StoredReceipt>,
}

impl StoredItem {
    /// The receipt this message becomes in round `round`.
    fn receipt_of(&self, fate: Fate, round: u32) -> StoredItem {
        StoredItem {
            role_bits: self.role_bits,
            src: self.dst,
            dst: self.src,
            received: round,
            payload: vec![0; self.payload.len()],
            receipt: Some(StoredReceipt {
                fate,
                sent: self.received,
            }),
        }
    }
}

/// The real items of a store, from its reconstructed words (`store_capacity` records of
/// `[flags (bit 0 valid, bits 1-2 role, bit 3 receipt, bit 4 expired), src, dst,
/// received | sent << 32, payload..]`), in store order. For checking the three-party
/// store against [`ideal_round`]'s.
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
            receipt: (r[0] >> 3 & 1 == 1).then(|| StoredReceipt {
                fate: if r[0] >> 4 & 1 == 1 {
                    Fate::Expired
                } else {
                    Fate::Delivered
                },
                sent: (r[3] >> 32) as u32,
            }),
        })
        .collect()
}

/// Where a candidate came from.
#[derive(Clone, Copy)]
enum From {
    /// Position in the previous store.
    Store(usize),
    /// Index of the user who sent it this round.
    Block(usize),
}

/// Runs one round. `blocks` are this round's `(source, block)` for every online user,
/// sources' addresses ([`super::address`]) distinct. Items for one address queue in
/// candidate order; the first goes to the online user with that address when its target
/// is that user's pseudonym, and is *misaddressed* otherwise (a target nobody registered
/// that shares a registered user's address): never delivered, dropped if it came this
/// round, expired now (its receipt says so) if it came from the store; `store` is the previous store, best-ranked first. Returns each
/// user's output in the order of `blocks`, and the new store (best-ranked first, at most
/// `store_capacity` items).
pub fn ideal_round(
    cfg: &RoundConfig,
    round: u32,
    blocks: &[(u64, Block)],
    store: &[StoredItem],
) -> (Vec<Output>, Vec<StoredItem>) {
    let live = |it: &StoredItem| {
        let lifetime = if it.receipt.is_some() {
            cfg.receipt_rounds
        } else {
            cfg.expiry_rounds
        };
        round.saturating_sub(it.received) < lifetime
    };
    let mut candidates: Vec<(StoredItem, From)> = store
        .iter()
        .enumerate()
        .filter(|(_, it)| live(it))
        .map(|(t, it)| (it.clone(), From::Store(t)))
        .collect();
    let mut fresh: Vec<(StoredItem, From)> = blocks
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
                    receipt: None,
                },
                From::Block(i),
            )
        })
        .collect();
    fresh.sort_by_key(|(it, _)| it.src);
    candidates.append(&mut fresh);

    let mut outputs: Vec<Output> = blocks
        .iter()
        .map(|(_, b)| Output {
            status: if b.role == Role::Cover {
                Status::Cover
            } else {
                Status::Dropped
            },
            incoming: None,
            receipt: None,
        })
        .collect();
    let mut delivered = vec![false; candidates.len()];
    let mut misaddressed = vec![false; candidates.len()];
    let mut store_delivered = vec![false; store.len()];
    let mut store_misaddressed = vec![false; store.len()];
    // The best-ranked candidate for each target address (sources' addresses are
    // distinct, so each target receives at most once and no candidate is claimed twice).
    let mut first_for: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (c, (it, _)) in candidates.iter().enumerate() {
        first_for.entry(super::address(it.dst)).or_insert(c);
    }
    for (u, (src, _)) in blocks.iter().enumerate() {
        let Some(&c) = first_for.get(&super::address(*src)) else {
            continue;
        };
        // The first candidate for this address is for another pseudonym (one nobody
        // registered: registration keeps addresses unique): never delivered; dropped
        // (status `misaddressed`) if it came this round, expired now if it came from the
        // store.
        if candidates[c].0.dst != *src {
            misaddressed[c] = true;
            match candidates[c].1 {
                From::Store(t) => store_misaddressed[t] = true,
                From::Block(sender) => outputs[sender].status = Status::Misaddressed,
            }
            continue;
        }
        delivered[c] = true;
        let it = &candidates[c].0;
        let role = Role::from_bits(it.role_bits).unwrap_or(Role::Request);
        match it.receipt {
            Some(r) => {
                outputs[u].receipt = Some(Receipt {
                    role,
                    to: it.src,
                    sent: r.sent,
                    fate: r.fate,
                })
            }
            None => {
                outputs[u].incoming = Some(Incoming {
                    role,
                    from: it.src,
                    payload: it.payload.clone(),
                })
            }
        }
        match candidates[c].1 {
            From::Block(sender) => outputs[sender].status = Status::Delivered,
            From::Store(t) => store_delivered[t] = true,
        }
    }
    let mut new_store = Vec::new();
    for (t, it) in store.iter().enumerate() {
        let fate = if store_delivered[t] {
            Some(Fate::Delivered)
        } else if !live(it) || store_misaddressed[t] {
            Some(Fate::Expired)
        } else {
            None
        };
        match (fate, it.receipt) {
            (None, _) => new_store.push(it.clone()),
            (Some(f), None) => new_store.push(it.receipt_of(f, round)),
            (Some(_), Some(_)) => {}
        }
    }
    for (c, (it, from)) in candidates.into_iter().enumerate() {
        let From::Block(sender) = from else {
            continue;
        };
        if !delivered[c] && !misaddressed[c] && new_store.len() < cfg.store_capacity {
            new_store.push(it);
            outputs[sender].status = Status::Stored;
        }
    }
    (outputs, new_store)
}
