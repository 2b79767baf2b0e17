//! The three-party exchange round: matching, store and routing over replicated shares.
//!
//! The matching runs on narrow rows (a routing tag, flags, a payload index, a
//! destination); each payload moves once, at the end.
//!
//! Records of the first sort (one narrow row each, secret-shared):
//! - a *mailbox* per online user `u` (public: the online set is leakage), key
//!   `(0, address(u), 0)`;
//! - an *item* per online user's block, key `(dummy, address(dst), 1)`, where covers are
//!   dummies;
//! - the `C` store records, key `(dummy, address(dst), 1)`, where empty and expired ones
//!   are dummies.
//!
//! Keys carry the receiver's [`super::address`] (32 bits), not its 64-bit pseudonym:
//! registration keeps addresses unique, and the round checks that the online users'
//! are. A key is 34 bits, 56 with the sort's tiebreak at a million users (was 88).
//!
//! Items carry `j`, the index of their payload row: store record `t` is `j = t`, user
//! `i`'s block `j = C + i`. A store record is a message or a receipt (see
//! [`super::ideal`]): a stored message delivered or expired this round becomes, in its own
//! slot, a receipt to its sender.
//!
//! 0. Convert the users' XOR shares to replicated shares, checking each share passed on
//!    against the hash its user sent the receiving party ([`super::input`]); users whose
//!    check fails anywhere are left out of the round and get `retry`.
//! 1. Sort all records by key with the oblivious quicksort. Its tiebreak is the input
//!    position, and the input lists store records (kept oldest first) before this
//!    round's items (in pseudonym order), so items for one target follow its mailbox
//!    oldest first.
//! 2. Match by adjacent equality: record `k` receives record `k+1` exactly when
//!    `key_k ^ 1 == key_{k+1}` (a mailbox followed by a live item for the same address)
//!    and their pseudonyms' high bits (carried above `j`) are equal too. Only a tag
//!    moves: the item's destination becomes the mailbox's tag `2i`, the item is marked
//!    delivered and the mailbox matched. An item whose address matches but whose high
//!    bits do not is *misaddressed* (its target is a pseudonym nobody registered that
//!    shares the user's address): never delivered; dropped if it came this round,
//!    expired now if it came from the store, so it cannot hold up the address's queue.
//! 3. Route A: shuffle, then open each record's routing tag (`2i` mailbox, `2i + 1` item,
//!    SENTINEL store record): a uniformly random arrangement of a public multiset.
//! 4. Decide over shares which store records keep a slot and which become receipts (`R`),
//!    then sort the `U + C` items by the distinct narrow key `(not kept, delivered, j)`.
//!    The `j` order is (received, source) order, so the first `C` are the new store,
//!    oldest first, each receipt in its message's place (the number of real ones is never
//!    opened), and delivered items that keep no slot come last: at most `U` of `U + C`
//!    are delivered, so no store slot holds one. Each item's status follows from its
//!    public position.
//! 5. Shuffle `[j, status, destination, receipt destination]` and open `j` (a uniformly
//!    random arrangement of `0 .. U + C`): statuses and destinations are now held in
//!    payload order.
//! 6. Move the payloads once: one row per store record and block with its destination
//!    (`2i` user, `2t + 1` store slot, SENTINEL discarded), one blank row per user (to
//!    user `i` when its mailbox stayed empty, else discarded), and one receipt row per
//!    store record (to its message's slot when `R`, else discarded); shuffle and open the
//!    destinations, which are `U` user tags, `C` slot tags and `U + C` SENTINELs: a
//!    public multiset. Assemble each user's output share and the new store.
//!
//! Openings: quicksort comparison bits (twice) and routing tags after a fresh shuffle
//! (three times), all through [`Party::declassify`], cross-checked at the end.

use super::consistency::Notary;
use super::input::{InputCheck, PartyInputs};
use super::outputs::RoundOutputs;
use super::{address, check_distinct_addresses, RoundConfig, ADDRESS_BITS};
use crate::channel::PartyId;
use crate::circuits::equal;
use crate::declassify::Reason;
use crate::error::EngineError;
use crate::party::{Party, Phase};
use crate::share::{Shared, SharedKeys};
use crate::sort::{index_bits, quicksort, quicksort_distinct};
use crate::transpose::{blocks, rows_to_planes};
use rayon::prelude::*;

/// Bits of a first-sort key `(dummy, address, kind)`: kind 0 mailbox, 1 item.
const KEY_BITS: usize = ADDRESS_BITS as usize + 2;
/// The dummy bit of a first-sort key, its highest.
const DUMMY_KEY_BIT: usize = KEY_BITS - 1;

/// The routing tag of store records.
const SENTINEL: u64 = u64::MAX;

// Columns of the narrow rows the matching works on.
const ORIGIN: usize = 0; // routing tag: 2i mailbox of user i, 2i + 1 its item, SENTINEL store
const FLAGS: usize = 1;
// An item's payload index (store record t, or C + i for user i's block) in the low 32
// bits, and above them the high bits of its target's pseudonym (of a mailbox: its user's),
// which the matching compares after the sort ([`high`]).
const J: usize = 2;
const DEST: usize = 3; // where an item's payload goes: 2i to user i, or SENTINEL
const NARROW: usize = 4;
/// Columns of the rows that take statuses back to payload order: j, status, the item's
/// destination, its receipt's destination, and (store records) whether its receipt's
/// fate is "expired" for a reason found this round (bit 0).
const FATE_WIDTH: usize = 5;

// Bits of the FLAGS column. VALID, VR (a valid receipt) and EXPIRED are set on store
// records only.
const DELIVERED_BIT: u32 = 2;
const DUMMY_BIT: u32 = 3;
const MATCHED_BIT: u32 = 4;
const VALID_BIT: u32 = 5;
const VR_BIT: u32 = 6;
const EXPIRED_BIT: u32 = 7;
/// An item first in its address's group whose target is not the pseudonym of the online
/// user with that address (`docs/engine.md`, "Addresses"): never delivered; dropped if
/// it came this round, expired now if it came from the store.
const MISADDRESSED_BIT: u32 = 8;

/// The role bits of a store record's flags word, after the valid bit.
const ROLE_MASK: u64 = 0b11;
/// A store record's flags: the record is a receipt.
const RECEIPT_FLAG: u64 = 1 << 3;
/// A store record's flags: the receipt's fate is `expired`.
const FATE_EXPIRED_SHIFT: u32 = 4;
/// The bits of an output header a stored record's flags word fills: role, receipt, fate.
const ITEM_BITS: u64 = 0b1111;
/// The high half of a store record's round word: a receipt's send round.
const SENT_MASK: u64 = 0xffff_ffff_0000_0000;

/// One party's share of the store: `store_capacity` rows of
/// `[flags (bit 0 valid, bits 1-2 role), src, dst, received round, payload..]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedStore {
    /// Row-major store records.
    pub rows: Shared,
}

impl SharedStore {
    /// The initial store: all records empty (zero is a valid sharing of "empty" at every
    /// party).
    pub fn empty(cfg: &RoundConfig) -> Self {
        SharedStore {
            rows: Shared::zeros(cfg.store_capacity * cfg.store_words()),
        }
    }
}

/// What one party holds after a round.
#[derive(Debug)]
pub struct RoundResult {
    /// The users the round ran over, ascending: the agreed online set less the users
    /// whose input failed its check ([`RoundResult::input_check`]; they get `retry`).
    pub online: Vec<u64>,
    /// What the input conversion's check found (the same at all three parties).
    pub input_check: InputCheck,
    /// This party's answer to each user of [`RoundResult::online`], in that order: what
    /// it sends to that user (both components it holds, checkable by the user).
    pub outputs: RoundOutputs,
    /// The new store.
    pub store: SharedStore,
    /// Wall-clock seconds of each phase at this party, in order, for profiling.
    pub phases: Vec<(&'static str, f64)>,
}

/// Records how long each phase of the round took.
struct PhaseClock {
    last: std::time::Instant,
    phases: Vec<(&'static str, f64)>,
}

impl PhaseClock {
    fn start() -> Self {
        PhaseClock {
            last: std::time::Instant::now(),
            phases: Vec::new(),
        }
    }

    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.phases.push((name, (now - self.last).as_secs_f64()));
        self.last = now;
    }
}

/// Runs one exchange round at this party.
///
/// `online` is the agreed online set, strictly ascending; `inputs` holds what each online
/// user sent this party, in the order of `online`: its XOR share of the block
/// (`block_words` words) and the hash of the share the next party received
/// ([`super::input`]). `store` is the previous store; `notary` signs this party's set of
/// rejected inputs and checks its peers'. Users whose share fails its check at any party
/// are left out ([`RoundResult::online`] is the set the round ran over); when that leaves
/// nobody, nothing is computed and the store stays as it was.
pub fn exchange_round(
    party: &mut Party,
    cfg: &RoundConfig,
    round: u32,
    online: &[u64],
    inputs: PartyInputs,
    store: &SharedStore,
    notary: &dyn Notary,
) -> Result<RoundResult, EngineError> {
    let c = cfg.store_capacity;
    if !online.windows(2).all(|w| w[0] < w[1]) {
        return Err(EngineError::InvalidInput(
            "online set not strictly ascending".into(),
        ));
    }
    if store.rows.len() != c * cfg.store_words() {
        return Err(EngineError::InvalidInput("store of the wrong size".into()));
    }
    // Record indices are 32-bit, and `j` shares its word with a pseudonym's high 32 bits.
    if (c as u64).saturating_add(2 * online.len() as u64) >= 1u64 << 32 {
        return Err(EngineError::InvalidInput(
            "too many users and store records for one round".into(),
        ));
    }
    check_distinct_addresses(online)?;
    let id = party.id();
    let mut clock = PhaseClock::start();
    party.set_phase(Phase::Other);
    let (online, blocks, input_check) =
        party.convert_inputs_checked(cfg, round, online, inputs, notary)?;
    let online = &online[..];
    let u = online.len();
    clock.lap("convert and check inputs");
    if u == 0 {
        return Ok(RoundResult {
            online: Vec::new(),
            input_check,
            outputs: RoundOutputs::empty(cfg.output_words()),
            store: store.clone(),
            phases: clock.phases,
        });
    }

    // Per-record bits, bitsliced: role bits of blocks, validity of store records.
    let bw = cfg.block_words();
    let sw = cfg.store_words();
    let r0 = column_bits(&blocks, bw, 0, 0, u);
    let r1 = column_bits(&blocks, bw, 0, 1, u);
    let store_valid = column_bits(&store.rows, sw, 0, 0, c);
    let store_receipt = column_bits(&store.rows, sw, 0, 3, c);
    let expired = expired_bits(party, cfg, round, store, &store_receipt)?;
    // Normalize role 3 to request (r0 & r1 cleared from r0); live = r0 | r1;
    // store record live = valid & !expired; a valid receipt = valid & receipt.
    let not_expired = expired.not(id);
    let prods = party.and_many(&[
        (&r0, &r1),
        (&store_valid, &not_expired),
        (&store_valid, &store_receipt),
    ])?;
    let both = &prods[0];
    let store_live = &prods[1];
    let store_vr = &prods[2];
    let role0 = r0.xor(both);
    let block_live = r0.xor(&r1).xor(both);

    // Sort-1 records, narrow: store (C), items (U), mailboxes (U). The payload stays
    // where it is until the end; an item carries its payload's index `j` instead.
    // Each record is a function of its index, so both shares' tables are filled in
    // parallel, straight into their final places.
    let n1 = c + 2 * u;
    let store_dead = store_live.not(id);
    let block_dead = block_live.not(id);
    let record = |share: Share, r: usize, row: &mut [u64]| -> u128 {
        let public = |v: u64| public_word(id, share, v);
        if r < c {
            let t = r;
            let flags = (lane(share.of(&store_valid), t) << VALID_BIT)
                ^ (lane(share.of(store_vr), t) << VR_BIT)
                ^ (lane(share.of(&expired), t) << EXPIRED_BIT);
            let dst = share.of(&store.rows)[t * sw + 2];
            row.copy_from_slice(&[
                public(SENTINEL),
                flags,
                public(t as u64) ^ high(dst),
                public(SENTINEL),
            ]);
            key_item(lane(share.of(&store_dead), t), dst)
        } else if r < c + u {
            let i = r - c;
            let dst = share.of(&blocks)[i * bw + 1];
            row.copy_from_slice(&[
                public(2 * i as u64 + 1),
                0,
                public((c + i) as u64) ^ high(dst),
                public(SENTINEL),
            ]);
            key_item(lane(share.of(&block_dead), i), dst)
        } else {
            let i = r - c - u;
            row.copy_from_slice(&[
                public(2 * i as u64),
                0,
                public(high(online[i])),
                public(SENTINEL),
            ]);
            public_key(id, share, (address(online[i]) as u128) << 1)
        }
    };
    let table = |share: Share| keyed_rows(n1, NARROW, |r, row| record(share, r, row));
    let ((ka, ra), (kb, rb)) = (table(Share::A), table(Share::B));
    let keys = SharedKeys { a: ka, b: kb };
    let rows = Shared { a: ra, b: rb };
    clock.lap("prepare");
    party.set_phase(Phase::Sort);
    let sorted = quicksort(party, &keys, KEY_BITS, &rows, NARROW)?;
    drop((keys, rows));
    clock.lap("sort records");
    let matched = match_adjacent(party, &sorted.keys, &sorted.payload)?;
    drop(sorted);
    clock.lap("match");

    // Route A: mailboxes to their users, items on to the store sort.
    party.set_phase(Phase::Route);
    let routed = party.shuffle_owned(matched, NARROW)?;
    let tags =
        party.declassify_words(Reason::RouteAfterShuffle, &column(&routed, NARROW, ORIGIN))?;
    // Exactly the public multiset: each user's mailbox and item tag once, C sentinels.
    let mut mailbox_at = vec![usize::MAX; u];
    let mut item_seen = vec![false; u];
    let mut items = Vec::with_capacity(u + c);
    let mut sentinels = 0usize;
    for (k, &tag) in tags.iter().enumerate() {
        if tag == SENTINEL {
            sentinels += 1;
            items.push(k);
        } else if tag < 2 * u as u64 {
            let i = (tag / 2) as usize;
            if tag % 2 == 1 && !item_seen[i] {
                item_seen[i] = true;
                items.push(k);
            } else if tag % 2 == 0 && mailbox_at[i] == usize::MAX {
                mailbox_at[i] = k;
            } else {
                return Err(route_mismatch(id));
            }
        } else {
            return Err(route_mismatch(id));
        }
    }
    if sentinels != c || items.len() != u + c || mailbox_at.contains(&usize::MAX) {
        return Err(route_mismatch(id));
    }

    // Blank payload row of user i: its output when its mailbox stayed empty, discarded
    // otherwise. Destination 2i ^ matched·(2i ^ SENTINEL): a shared bit times public
    // constants, share by share.
    let blank_dest = |v: &[u64], share: Share| -> Vec<u64> {
        mailbox_at
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let matched = (v[k * NARROW + FLAGS] >> MATCHED_BIT) & 1;
                let own = 2 * i as u64;
                public_word(id, share, own) ^ (matched.wrapping_neg() & (own ^ SENTINEL))
            })
            .collect()
    };
    let blank_dests = Shared {
        a: blank_dest(&routed.a, Share::A),
        b: blank_dest(&routed.b, Share::B),
    };

    // Which store records keep their slot, and which become receipts. A stored message
    // that was delivered or has expired becomes its receipt in its own slot (R); a
    // receipt that was delivered or has expired frees its slot. With x = expired ^
    // delivered (never both: an expired record is dead, so unmatched) and vr = valid &
    // receipt: kept = valid ^ vr·x, R = (valid ^ vr)·x, and a store record sorts with
    // the delivered ones only when it is a delivered receipt, vr·delivered. One AND
    // layer over the C store records, which are the rows route A opened as SENTINEL.
    let store_rows: Vec<usize> = items
        .iter()
        .copied()
        .filter(|&k| tags[k] == SENTINEL)
        .collect();
    let store_bits = |share: Share, bit: u32| -> Vec<u64> {
        let r = share.of(&routed);
        let mut out = vec![0u64; crate::transpose::blocks(c)];
        for (s, &k) in store_rows.iter().enumerate() {
            out[s / 64] |= ((r[k * NARROW + FLAGS] >> bit) & 1) << (s % 64);
        }
        out
    };
    let bits = |bit: u32| Shared {
        a: store_bits(Share::A, bit),
        b: store_bits(Share::B, bit),
    };
    let (s_valid, s_vr) = (bits(VALID_BIT), bits(VR_BIT));
    let s_delivered = bits(DELIVERED_BIT);
    // A misaddressed store record (never delivered, never expired: it was live) expires
    // now.
    let s_misaddressed = bits(MISADDRESSED_BIT);
    let s_x = bits(EXPIRED_BIT).xor(&s_delivered).xor(&s_misaddressed);
    let s_message = s_valid.xor(&s_vr);
    let prods = party.and_many(&[(&s_vr, &s_x), (&s_message, &s_x), (&s_delivered, &s_vr)])?;
    let s_kept = s_valid.xor(&prods[0]);
    let (s_receipt, s_late) = (&prods[1], &prods[2]);

    // Store sort over narrow keys `(not kept, delivered, j)`, distinct through `j`. Input
    // order (store oldest first, then this round's items by source) is (received, source)
    // order, so the kept items come first, oldest first, each receipt in its message's
    // place. Delivered items that keep no slot sort last: at most U of the U + C items
    // are, so the first C positions never hold one. Each item carries its delivery
    // destination and R.
    let jb = index_bits(u + c);
    // Item n's store record index when it is one (route A's SENTINEL rows, in order),
    // so that both shares' tables are filled in parallel.
    let mut next_store = 0usize;
    let store_index: Vec<usize> = items
        .iter()
        .map(|&k| {
            if tags[k] == SENTINEL {
                next_store += 1;
                next_store - 1
            } else {
                usize::MAX
            }
        })
        .collect();
    let candidates = |share: Share| -> (Vec<u128>, Vec<u64>) {
        let r = share.of(&routed);
        let (kept, receipt, late) = (share.of(&s_kept), share.of(s_receipt), share.of(s_late));
        let one = public_word(id, share, 1);
        keyed_rows(items.len(), 2, |n, d| {
            let (k, s) = (items[n], store_index[n]);
            let rr = &r[k * NARROW..(k + 1) * NARROW];
            let misaddressed = (rr[FLAGS] >> MISADDRESSED_BIT) & 1;
            let (not_kept, delivered, becomes_receipt) = if s != usize::MAX {
                (lane(kept, s) ^ one, lane(late, s), lane(receipt, s))
            } else {
                // Kept unless a cover, delivered or misaddressed (at most one of these).
                let delivered = (rr[FLAGS] >> DELIVERED_BIT) & 1;
                let dummy = (rr[FLAGS] >> DUMMY_BIT) & 1;
                (dummy ^ delivered ^ misaddressed, delivered, 0)
            };
            let j = rr[J] & ((1u64 << jb) - 1);
            d.copy_from_slice(&[rr[DEST], becomes_receipt ^ (misaddressed << 1)]);
            ((not_kept as u128) << (jb + 1)) | ((delivered as u128) << jb) | j as u128
        })
    };
    let ((ka, da), (kb, db)) = (candidates(Share::A), candidates(Share::B));
    let keys2 = SharedKeys { a: ka, b: kb };
    let dest2 = Shared { a: da, b: db };
    drop((
        s_valid,
        s_vr,
        s_delivered,
        s_misaddressed,
        s_x,
        s_message,
        s_kept,
        prods,
    ));
    drop(routed);
    clock.lap("route to mailboxes");
    party.set_phase(Phase::Sort);
    let sorted2 = quicksort_distinct(party, &keys2, jb + 2, &dest2, 2)?;
    drop((keys2, dest2));
    clock.lap("sort store candidates");

    // Per sorted position t: [j, status, destination of the item, destination of its
    // receipt], and the new store's valid bits (t < C). The first C positions are store
    // slot t (tag 2t + 1): the item goes there, or, when it becomes a receipt (R), the
    // receipt does and the item goes where matching sent it. The rest go where matching
    // sent them (a mailbox's tag, or SENTINEL: discarded), and make no receipt (every
    // R item keeps a slot: store records come first in `j` order and map one to one
    // onto slots). The item's destination at t < C, R ? matched : slot, is one word AND
    // per slot; the receipt's, R ? slot : SENTINEL, a shared bit times constants.
    let n2 = u + c;
    let pick = |share: Share| -> (Vec<u64>, Vec<u64>) {
        let p = share.of(&sorted2.payload);
        let holds_x0 = public_word(id, share, u64::MAX);
        (0..c)
            .map(|t| {
                let r = p[2 * t + 1] & 1;
                (r.wrapping_neg(), p[2 * t] ^ (holds_x0 & (2 * t as u64 + 1)))
            })
            .unzip()
    };
    let ((ra, da), (rb, db)) = (pick(Share::A), pick(Share::B));
    let routed_away = party.and(&Shared { a: ra, b: rb }, &Shared { a: da, b: db })?;
    // Each record's fate row is a function of its position, so both shares' tables
    // are filled in parallel.
    let fate_table = |share: Share| -> (Vec<u64>, Vec<u64>) {
        let keys = share.of_keys(&sorted2.keys);
        let away = share.of(&routed_away);
        let p = share.of(&sorted2.payload);
        let holds_x0 = public_word(id, share, u64::MAX);
        let out = rows_table(n2, FATE_WIDTH, |t, row| {
            let key = keys[t];
            let delivered = ((key >> jb) & 1) as u64;
            let not_kept = ((key >> (jb + 1)) & 1) as u64;
            let misaddressed = (p[2 * t + 1] >> 1) & 1;
            let dummy = not_kept ^ delivered ^ misaddressed;
            // status = s ^ delivered·(2 ^ s) ^ dummy·(1 ^ s) ^ misaddressed·(6 ^ s),
            // with s = stored or dropped by public position: a share-wise product of
            // shared bits and constants. (Meaningful for this round's blocks only; store
            // records have no sender waiting for a status.)
            let s = if t < c { 3 } else { 4 };
            let status = (holds_x0 & s)
                ^ (delivered * (2 ^ s))
                ^ (dummy * (1 ^ s))
                ^ (misaddressed * (6 ^ s));
            let (dest, receipt_dest) = if t < c {
                let slot = 2 * t as u64 + 1;
                let r = p[2 * t + 1] & 1;
                (
                    (holds_x0 & slot) ^ away[t],
                    (holds_x0 & SENTINEL) ^ (r.wrapping_neg() & (slot ^ SENTINEL)),
                )
            } else {
                (p[2 * t], holds_x0 & SENTINEL)
            };
            row.copy_from_slice(&[
                (key as u64) & ((1u64 << jb) - 1),
                status,
                dest,
                receipt_dest,
                misaddressed,
            ]);
        });
        // valid = !not_kept: NOT lands on the x_0 share.
        let valid = (0..c)
            .map(|t| ((keys[t] >> (jb + 1)) & 1) as u64 ^ (holds_x0 & 1))
            .collect();
        (out, valid)
    };
    let ((fa, va), (fb, vb)) = (fate_table(Share::A), fate_table(Share::B));
    let fates = Shared { a: fa, b: fb };
    let valid = Shared { a: va, b: vb };
    drop((sorted2, routed_away));

    // Back to payload order: shuffle, open each row's j (a uniformly random arrangement
    // of 0 .. U + C), and read statuses and destinations by j.
    party.set_phase(Phase::Route);
    let fates = party.shuffle_owned(fates, FATE_WIDTH)?;
    let js = party.declassify_words(Reason::RouteAfterShuffle, &column(&fates, FATE_WIDTH, 0))?;
    let mut at_j = vec![usize::MAX; n2];
    for (k, &j) in js.iter().enumerate() {
        if j >= n2 as u64 || at_j[j as usize] != usize::MAX {
            return Err(route_mismatch(id));
        }
        at_j[j as usize] = k;
    }
    clock.lap("statuses");

    // The payload moves once: rows [destination, store-format record] for every store
    // record and block (by j), one blank per user, and one receipt per store record;
    // shuffled, destinations opened: U user tags, C store tags and U + C SENTINELs, a
    // public multiset.
    let wide = 1 + sw;
    let n3 = n2 + u + c;
    // Row `j` of one share of the wide table into `w` (zeroed by the caller).
    let wide_row = |share: Share, brows: &[u64], j: usize, w: &mut [u64]| {
        let f = share.of(&fates);
        let srows = share.of(&store.rows);
        let (ro0, ro1) = (share.of(&role0), share.of(&r1));
        let blanks = share.of(&blank_dests);
        let exp = share.of(&expired);
        if j < n2 {
            w[0] = f[at_j[j] * FATE_WIDTH + 2];
        }
        if j < c {
            let r = &srows[j * sw..(j + 1) * sw];
            // Clearing the valid bit is linear: the new one comes from the sort.
            w[1] = r[0] & !1;
            w[2..].copy_from_slice(&r[1..]);
        } else if j < n2 {
            let i = j - c;
            let r = &brows[i * bw..(i + 1) * bw];
            w[1] = (lane(ro0, i) ^ (lane(ro1, i) << 1)) << 1;
            w[2] = public_word(id, share, online[i]);
            w[3] = r[1];
            w[4] = public_word(id, share, round as u64);
            w[5..].copy_from_slice(&r[2..]);
        } else if j < n2 + u {
            w[0] = blanks[j - n2];
        } else {
            // The receipt of store record t, in the store format: the message's
            // sender becomes its addressee and its target its source, the round word
            // holds this round (for the receipt's expiry) and the send round above
            // it, and the payload stays zero (a public zero: no share to clear).
            let t = j - n2 - u;
            let r = &srows[t * sw..(t + 1) * sw];
            w[0] = f[at_j[t] * FATE_WIDTH + 3];
            let expired_now = lane(exp, t) ^ f[at_j[t] * FATE_WIDTH + 4];
            w[1] = (r[0] & (ROLE_MASK << 1))
                ^ public_word(id, share, RECEIPT_FLAG)
                ^ (expired_now << FATE_EXPIRED_SHIFT);
            w[2] = r[2];
            w[3] = r[1];
            w[4] = (r[3] << 32) ^ public_word(id, share, round as u64);
        }
    };
    let build_wide =
        |share: Share, brows: &[u64]| rows_table(n3, wide, |j, w| wide_row(share, brows, j, w));
    let statuses = |share: Share| -> Vec<u64> {
        let f = share.of(&fates);
        (0..u).map(|i| f[at_j[c + i] * FATE_WIDTH + 1]).collect()
    };
    let (status_a, status_b) = (statuses(Share::A), statuses(Share::B));
    // Destinations in shuffled order → where each kept row goes: user `i`'s output
    // (tag 2i) or store slot `t` (tag 2t + 1); U + C SENTINELs are discarded. Returns
    // the shuffled positions of the U outputs, then of the C store slots.
    let place = |dests: &[u64]| -> Result<Vec<u32>, EngineError> {
        let mut kept = vec![u32::MAX; u + c];
        let mut discards = 0usize;
        for (k, &d) in dests.iter().enumerate() {
            let at = if d == SENTINEL {
                discards += 1;
                continue;
            } else if d < 2 * u as u64 && d % 2 == 0 {
                &mut kept[(d / 2) as usize]
            } else if d % 2 == 1 && (d / 2) < c as u64 {
                &mut kept[u + (d / 2) as usize]
            } else {
                return Err(route_mismatch(id));
            };
            if *at != u32::MAX {
                return Err(route_mismatch(id));
            }
            *at = k as u32;
        }
        if discards != u + c {
            return Err(route_mismatch(id));
        }
        Ok(kept)
    };
    // Semi-honest mode builds only what the shuffle's first step reads here (party 0
    // `x_0 ^ x_1`, party 1 `x_2`, party 2 nothing), so no party holds both shares of the
    // table: at a million users it is 0.65 GB per share; and the destinations are opened
    // before the shuffle's last step, which then moves only the U + C kept rows
    // (`Party::shuffle_reduced_routed`). Malicious mode needs
    // both shares for the shuffle's MAC, checked over the whole table before anything
    // is opened. Either way each share of the blocks is wiped and freed as soon as it
    // has been read, and the inputs are gone before the shuffle starts. `moved` holds
    // the kept rows in order: user `i`'s output at row `i`, store slot `t` at row
    // `u + t`.
    let mut blocks = blocks;
    let mut moved = if party.malicious() {
        // At scale the payload move is the round's peak, and the verification's buffers
        // are not used again before the round's end: give them back when they are large
        // and one share of the table outweighs them (10^6 users: 651 MB against 541 MB a
        // party, and the round's peak falls from 8.2 to 7.4 GB). Otherwise they are kept:
        // mapping them again costs every round (0.4 s at 10^5 users, 65 MB against
        // 178 MB; about 0.1 s of the demo's latency at 1000 users of 8 KB).
        let kept = party.verify_buffer_bytes();
        if kept >= RELEASE_VERIFY_BUFFERS_FROM && 8 * n3 * wide >= kept {
            party.release_verify_buffers();
        }
        let a = build_wide(Share::A, &blocks.a);
        zeroize::Zeroize::zeroize(&mut blocks.a);
        blocks.a = Vec::new();
        let b = build_wide(Share::B, &blocks.b);
        drop((blocks, fates, blank_dests, expired));
        let mut moved = party.shuffle_owned(Shared { a, b }, wide)?;
        let dests = party.declassify_words(Reason::RouteAfterShuffle, &column(&moved, wide, 0))?;
        let kept = place(&dests)?;
        let in_order = |v: &[u64]| -> Vec<u64> {
            let mut out = vec![0u64; kept.len() * wide];
            out.par_chunks_mut(wide)
                .zip(kept.par_iter())
                .with_min_len(64)
                .for_each(|(o, &k)| {
                    let k = k as usize;
                    o.copy_from_slice(&v[k * wide..(k + 1) * wide]);
                });
            out
        };
        let a = in_order(&moved.a);
        zeroize::Zeroize::zeroize(&mut moved.a);
        moved.a = Vec::new();
        let b = in_order(&moved.b);
        drop(moved);
        Shared { a, b }
    } else {
        let first = match id.index() {
            2 => Vec::new(),
            1 => build_wide(Share::B, &blocks.b),
            _ => {
                let mut out = vec![0u64; n3 * wide];
                out.par_chunks_mut(wide).enumerate().for_each_init(
                    || zeroize::Zeroizing::new(vec![0u64; wide]),
                    |row, (j, w)| {
                        wide_row(Share::A, &blocks.a, j, w);
                        row.fill(0);
                        wide_row(Share::B, &blocks.b, j, row);
                        for (x, y) in w.iter_mut().zip(row.iter()) {
                            *x ^= y;
                        }
                    },
                );
                out
            }
        };
        drop((blocks, fates, blank_dests, expired));
        party.shuffle_reduced_routed(first, n3, wide, 0, place)?
    };
    party.check_openings()?;
    clock.lap("move payloads");

    // New store: slot t is the record sent to tag 2t + 1 (row u + t), with its valid
    // bit.
    let store_of = |v: &[u64], valid: &[u64]| -> Vec<u64> {
        let mut out = vec![0u64; c * sw];
        out.par_chunks_mut(sw).enumerate().for_each(|(t, s)| {
            let k = u + t;
            s.copy_from_slice(&v[k * wide + 1..(k + 1) * wide]);
            s[0] ^= valid[t];
        });
        out
    };
    let new_store = Shared {
        a: store_of(&moved.a, &valid.a),
        b: store_of(&moved.b, &valid.b),
    };
    // Each user's two output components: [status ^ item bits << 8 ^ send round << 32,
    // from, payload] (item bits: role, receipt, fate; the send round is zero but for a
    // receipt). Component
    // x_i (this party's `a`) and x_{i+1} (its `b`) both go to the user, so that it can
    // check them (`outputs::reconstruct_checked`). XOR, never OR: shares of a value have
    // random high bits.
    let ow = cfg.output_words();
    debug_assert_eq!(ow, wide - 3, "header, source, payload");
    // Written over the moved table itself, row by row from the front (output row `i`
    // ends before moved row `i` starts to be read past its first four words, as
    // `ow < wide`), so the outputs map no memory of their own: at a million users that
    // was 0.56 GB of fresh pages per party. One thread: rows overlap their neighbours'.
    let into_outputs = |mut v: Vec<u64>, status: &[u64]| -> Vec<u64> {
        for (i, &st) in status.iter().enumerate() {
            let (r, o) = (i * wide + 1, i * ow);
            let head = (((v[r] >> 1) & ITEM_BITS) << 8) ^ (v[r + 3] & SENT_MASK) ^ st;
            let from = v[r + 1];
            v[o] = head;
            v[o + 1] = from;
            v.copy_within(r + 4..r + wide - 1, o + 2);
        }
        // The store's rows past the outputs are copied out above: wipe them here.
        zeroize::Zeroize::zeroize(&mut v[u * ow..]);
        v.truncate(u * ow);
        v
    };
    let outputs_a = into_outputs(std::mem::take(&mut moved.a), &status_a);
    let outputs_b = into_outputs(std::mem::take(&mut moved.b), &status_b);
    drop(moved);
    clock.lap("assemble outputs");
    // Malicious mode: nothing computed in this round leaves before every gate is verified.
    party.verify_pending()?;
    let outputs = party.commit_outputs(round, online, outputs_a, outputs_b, ow)?;
    clock.lap("commit outputs");
    Ok(RoundResult {
        online: online.to_vec(),
        input_check,
        outputs,
        store: SharedStore { rows: new_store },
        phases: clock.phases,
    })
}

/// Which of a party's two shares.
#[derive(Clone, Copy)]
enum Share {
    A,
    B,
}

impl Share {
    fn of(self, s: &Shared) -> &[u64] {
        match self {
            Share::A => &s.a,
            Share::B => &s.b,
        }
    }

    fn of_keys(self, s: &SharedKeys) -> &[u128] {
        match self {
            Share::A => &s.a,
            Share::B => &s.b,
        }
    }
}

/// Verification buffers smaller than this are kept through the payload move whatever
/// the table's size (see there).
const RELEASE_VERIFY_BUFFERS_FROM: usize = 256 << 20;

/// Rows per parallel task of the matching's row-wise passes.
const ROW_TASK: usize = 1 << 12;

/// Words per parallel task when a table is filled row by row.
const TABLE_TASK_WORDS: usize = 1 << 14;

/// A table of `n` rows of `width` words, row `r` written by `f(r, row)` into zeros, all
/// rows in parallel.
fn rows_table(n: usize, width: usize, f: impl Fn(usize, &mut [u64]) + Sync) -> Vec<u64> {
    let mut rows = vec![0u64; n * width];
    if width > 0 {
        rows.par_chunks_mut(width)
            .enumerate()
            .with_min_len((TABLE_TASK_WORDS / width).max(1))
            .for_each(|(r, row)| f(r, row));
    }
    rows
}

/// [`rows_table`] with a sort key per row, returned by `f` (`width > 0`).
fn keyed_rows(
    n: usize,
    width: usize,
    f: impl Fn(usize, &mut [u64]) -> u128 + Sync,
) -> (Vec<u128>, Vec<u64>) {
    let mut keys = vec![0u128; n];
    let mut rows = vec![0u64; n * width];
    keys.par_iter_mut()
        .zip(rows.par_chunks_mut(width))
        .enumerate()
        .with_min_len((TABLE_TASK_WORDS / width).max(1))
        .for_each(|(r, (k, row))| *k = f(r, row));
    (keys, rows)
}

/// This share's part of a public word: public values ride in `x_0`, held by party 0 as
/// `a` and by party 2 as `b`.
fn public_word(id: PartyId, share: Share, v: u64) -> u64 {
    match (id.index(), share) {
        (0, Share::A) | (2, Share::B) => v,
        _ => 0,
    }
}

fn public_key(id: PartyId, share: Share, v: u128) -> u128 {
    match (id.index(), share) {
        (0, Share::A) | (2, Share::B) => v,
        _ => 0,
    }
}

/// The bits of pseudonym `p` above its address, in place.
fn high(p: u64) -> u64 {
    p & !((1u64 << ADDRESS_BITS) - 1)
}

/// Sort key of an item: `(dummy, address(dst), 1)`. The address is the low bits of the
/// shared `dst`, so each share is masked alone.
fn key_item(dummy_bit: u64, dst: u64) -> u128 {
    ((dummy_bit as u128) << DUMMY_KEY_BIT) | ((address(dst) as u128) << 1) | 1
}

/// Lane `t` of a bitsliced vector, as 0 or 1.
fn lane(bits: &[u64], t: usize) -> u64 {
    (bits[t / 64] >> (t % 64)) & 1
}

/// Bit `bit` of column `col` of `n` rows, bitsliced (linear, so per share).
fn column_bits(rows: &Shared, row: usize, col: usize, bit: u32, n: usize) -> Shared {
    let pack = |v: &[u64]| -> Vec<u64> {
        let mut out = vec![0u64; blocks(n)];
        for t in 0..n {
            out[t / 64] |= ((v[t * row + col] >> bit) & 1) << (t % 64);
        }
        out
    };
    Shared {
        a: pack(&rows.a),
        b: pack(&rows.b),
    }
}

/// Column `col` of every row.
fn column(rows: &Shared, row: usize, col: usize) -> Shared {
    Shared {
        a: rows.a.iter().skip(col).step_by(row).copied().collect(),
        b: rows.b.iter().skip(col).step_by(row).copied().collect(),
    }
}

/// The opened routing tags are not the public multiset they must be. Every opening was
/// cross-checked, so all honest parties opened these same tags: the shares themselves
/// are wrong, which only a deviation in the computation explains. Without verified
/// computation nothing says which of the two other parties deviated.
fn route_mismatch(id: PartyId) -> EngineError {
    EngineError::Deviation {
        what: "opened routing tags are not the expected multiset".into(),
        suspects: [id.next(), id.prev()],
    }
}

/// `[received < round + 1 - lifetime]` for each store record, where the lifetime is
/// `expiry_rounds` for a message and `receipt_rounds` for a receipt: expired, so not
/// deliverable, and not kept as it is. The threshold is picked per record by its shared
/// receipt bit: bit planes where the two thresholds differ take the receipt bit (or its
/// complement), a shared bit times public constants.
fn expired_bits(
    party: &mut Party,
    cfg: &RoundConfig,
    round: u32,
    store: &SharedStore,
    receipt: &Shared,
) -> Result<Shared, EngineError> {
    let c = cfg.store_capacity;
    let sw = cfg.store_words();
    let threshold = |lifetime: u32| (round as u64 + 1).saturating_sub(lifetime as u64);
    let (message, rct) = (threshold(cfg.expiry_rounds), threshold(cfg.receipt_rounds));
    if c == 0 || (message == 0 && rct == 0) {
        return Ok(Shared::zeros(blocks(c)));
    }
    let received = |v: &[u64]| -> Vec<u128> {
        (0..c)
            .map(|t| (v[t * sw + 3] & 0xffff_ffff) as u128)
            .collect()
    };
    let x = Shared {
        a: rows_to_planes(&received(&store.rows.a), 33),
        b: rows_to_planes(&received(&store.rows.b), 33),
    };
    let t = vec![message as u128; c];
    let mut y = Shared::public(party.id(), &rows_to_planes(&t, 33));
    let nb = blocks(c);
    // Planes are most significant bit first.
    for bit in 0..33 {
        if (message ^ rct) >> bit & 1 == 1 {
            let plane = (32 - bit) * nb..(33 - bit) * nb;
            crate::share::xor_into(&mut y.a[plane.clone()], &receipt.a);
            crate::share::xor_into(&mut y.b[plane], &receipt.b);
        }
    }
    crate::circuits::less_than(party, &x, &y, 33, nb)
}

/// Step 2: for each adjacent pair, `m_k = [key_k ^ 1 == key_{k+1}]` (a mailbox followed
/// by a live item for its owner's address) and `e_k = m_k · [high_k == high_{k+1}]` (the
/// whole pseudonym matches). Under `e_k` the item takes the mailbox's routing tag as its
/// payload's destination (else SENTINEL: not delivered here), is marked delivered, and
/// the mailbox is marked matched; under `m_k ^ e_k` it is marked misaddressed. Only a tag
/// moves, never a payload. Also writes each record's dummy bit into its flags.
fn match_adjacent(
    party: &mut Party,
    keys: &SharedKeys,
    rows: &Shared,
) -> Result<Shared, EngineError> {
    let n = keys.len();
    let id = party.id();
    let mut out = rows.clone();
    // The key's dummy bit into FLAGS, share by share (linear).
    for (k, f) in [(&keys.a, &mut out.a), (&keys.b, &mut out.b)] {
        f.par_chunks_mut(NARROW)
            .zip(k.par_iter())
            .with_min_len(ROW_TASK)
            .for_each(|(r, &k)| r[FLAGS] ^= (((k >> DUMMY_KEY_BIT) & 1) as u64) << DUMMY_BIT);
    }
    if n < 2 {
        return Ok(out);
    }
    let pairs = n - 1;
    let nb = blocks(pairs);
    let lanes = nb * 64;
    // One equality circuit over 2·lanes lanes: lane t < pairs compares record t's key,
    // its kind bit flipped, with record t + 1's (m: a mailbox followed by an item for its
    // address); lane lanes + t their pseudonyms' high bits, carried above j (h).
    let side = |keys: &[u128], rows: &[u64], first: usize, flip: u128| -> Vec<u128> {
        let mut v = vec![0u128; 2 * lanes];
        let (key_lanes, high_lanes) = v.split_at_mut(lanes);
        key_lanes[..pairs]
            .par_iter_mut()
            .zip(high_lanes[..pairs].par_iter_mut())
            .enumerate()
            .with_min_len(ROW_TASK)
            .for_each(|(t, (k, h))| {
                *k = keys[first + t] ^ flip;
                *h = (rows[(first + t) * NARROW + J] >> ADDRESS_BITS) as u128;
            });
        v
    };
    // Flipping the kind bit is XOR with a public 1: only x_0 changes.
    let (flip_a, flip_b) = (u128::from(id.index() == 0), u128::from(id.index() == 2));
    let x = Shared {
        a: rows_to_planes(&side(&keys.a, &rows.a, 0, flip_a), KEY_BITS),
        b: rows_to_planes(&side(&keys.b, &rows.b, 0, flip_b), KEY_BITS),
    };
    let y = Shared {
        a: rows_to_planes(&side(&keys.a, &rows.a, 1, 0), KEY_BITS),
        b: rows_to_planes(&side(&keys.b, &rows.b, 1, 0), KEY_BITS),
    };
    party.set_phase(Phase::Match);
    let mh = equal(party, &x, &y, KEY_BITS, 2 * nb)?;
    drop((x, y));
    // Delivered: the whole pseudonym matches (e = m·h, the two halves of mh).
    // Misaddressed: the address matches but not the rest (m ^ e).
    let (m, h) = (0..nb, nb..2 * nb);
    let e = party.and_slices(
        (&mh.a[m.clone()], &mh.b[m.clone()]),
        (&mh.a[h.clone()], &mh.b[h]),
    )?;
    let mut misaddressed = e.clone();
    crate::share::xor_into(&mut misaddressed.a, &mh.a[m.clone()]);
    crate::share::xor_into(&mut misaddressed.b, &mh.b[m]);

    // DEST_{k+1} = SENTINEL ^ e_k·(ORIGIN_k ^ SENTINEL): one word AND per pair.
    let masks = |bits: &[u64]| -> Vec<u64> {
        (0..pairs)
            .into_par_iter()
            .with_min_len(ROW_TASK)
            .map(|t| lane(bits, t).wrapping_neg())
            .collect()
    };
    let origins = |r: &[u64], share: Share| -> Vec<u64> {
        let sentinel = public_word(id, share, SENTINEL);
        r[..pairs * NARROW]
            .par_chunks(NARROW)
            .with_min_len(ROW_TASK)
            .map(|row| row[ORIGIN] ^ sentinel)
            .collect()
    };
    party.set_phase(Phase::Mux);
    let moved = party.and(
        &Shared {
            a: masks(&e.a),
            b: masks(&e.b),
        },
        &Shared {
            a: origins(&rows.a, Share::A),
            b: origins(&rows.b, Share::B),
        },
    )?;
    // Record r receives from pair r - 1 (it is the item) and, as a mailbox, its matched
    // bit from pair r: one task per range of rows, no two writing one word.
    for (o, mv, eb, mis) in [
        (&mut out.a, &moved.a, &e.a, &misaddressed.a),
        (&mut out.b, &moved.b, &e.b, &misaddressed.b),
    ] {
        o.par_chunks_mut(NARROW)
            .enumerate()
            .with_min_len(ROW_TASK)
            .for_each(|(r, row)| {
                if r >= 1 {
                    let t = r - 1;
                    row[DEST] ^= mv[t];
                    row[FLAGS] ^=
                        (lane(eb, t) << DELIVERED_BIT) ^ (lane(mis, t) << MISADDRESSED_BIT);
                }
                if r < pairs {
                    row[FLAGS] ^= lane(eb, r) << MATCHED_BIT;
                }
            });
    }
    Ok(out)
}
