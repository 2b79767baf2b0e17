//! The three-party exchange round: matching, store and routing over replicated shares.
//!
//! Records (one row each, secret-shared):
//! - a *mailbox* per online user `u` (public: the online set is leakage), key
//!   `(0, u, 0)`;
//! - an *item* per online user's block, key `(dummy, dst, 1)`, where covers are dummies;
//! - the `C` store records, key `(dummy, dst, 1)`, where empty and expired ones are dummies.
//!
//! 1. Sort all records by key with the oblivious quicksort. Its tiebreak is the input
//!    position, and the input lists store records (kept oldest first) before this
//!    round's items (in pseudonym order), so items for one target follow its mailbox
//!    oldest first.
//! 2. Match by adjacent equality: record `k` receives record `k+1` exactly when
//!    `key_k ^ 1 == key_{k+1}` (a mailbox followed by a live item for the same target);
//!    the item moves into the mailbox with an oblivious multiplexer and is marked delivered.
//! 3. Route: shuffle, then open each record's routing tag. Each online user owns exactly
//!    two records (tags `2i`, `2i+1`) and the store `C` (one sentinel tag), so the opened
//!    tags are a uniformly random arrangement of a public multiset.
//! 4. Sort the `U + C` items by `(not kept, received round, source)`: the first `C` are the
//!    new store (the number of real ones is never opened); each item's status follows
//!    from its public position.
//! 5. Route the statuses back the same way, and assemble each user's output share.
//!
//! Openings: quicksort comparison bits (twice) and routing tags after a fresh shuffle
//! (twice), all through [`Party::declassify`], cross-checked at the end.

use super::outputs::OutputShare;
use super::RoundConfig;
use crate::channel::PartyId;
use crate::circuits::equal;
use crate::declassify::Reason;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::{Shared, SharedKeys};
use crate::sort::quicksort;
use crate::transpose::{blocks, rows_to_planes};
use rayon::prelude::*;

/// The routing tag of store records.
const SENTINEL: u64 = u64::MAX;

// Columns of the working rows.
const ORIGIN: usize = 0;
const FLAGS: usize = 1;
const SRC: usize = 2; // then DST = 3
const RECEIVED: usize = 4;
const PAYLOAD: usize = 5;

// Bits of the FLAGS column.
const ROLE_MASK: u64 = 0b11;
const DELIVERED_BIT: u32 = 2;
const DUMMY_BIT: u32 = 3;

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
    /// This party's answer to each online user, in the order of `online`: what it sends
    /// to that user (both components it holds, checkable by the user).
    pub outputs: Vec<OutputShare>,
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
/// `online` is the agreed online set, strictly ascending; `blocks` is this party's XOR
/// share of each online user's block, concatenated in the order of `online`
/// (`block_words` each); `store` is the previous store.
pub fn exchange_round(
    party: &mut Party,
    cfg: &RoundConfig,
    round: u32,
    online: &[u64],
    blocks: Vec<u64>,
    store: &SharedStore,
) -> Result<RoundResult, EngineError> {
    let u = online.len();
    let c = cfg.store_capacity;
    let p = cfg.payload_words;
    let row = PAYLOAD + p;
    if !online.windows(2).all(|w| w[0] < w[1]) {
        return Err(EngineError::InvalidInput(
            "online set not strictly ascending".into(),
        ));
    }
    if blocks.len() != u * cfg.block_words() {
        return Err(EngineError::InvalidInput(format!(
            "{} block words for {u} users of {}",
            blocks.len(),
            cfg.block_words()
        )));
    }
    if store.rows.len() != c * cfg.store_words() {
        return Err(EngineError::InvalidInput("store of the wrong size".into()));
    }
    if u as u64 >= (1u64 << 62) {
        return Err(EngineError::InvalidInput("too many users".into()));
    }
    let id = party.id();
    let mut clock = PhaseClock::start();
    let blocks = party.input_from_xor(blocks)?;

    // Per-record bits, bitsliced: role bits of blocks, validity of store records.
    let bw = cfg.block_words();
    let sw = cfg.store_words();
    let r0 = column_bits(&blocks, bw, 0, 0, u);
    let r1 = column_bits(&blocks, bw, 0, 1, u);
    let store_valid = column_bits(&store.rows, sw, 0, 0, c);
    let expired = expired_bits(party, cfg, round, store)?;
    // Normalize role 3 to request (r0 & r1 cleared from r0); live = r0 | r1;
    // store record live = valid & !expired.
    let not_expired = expired.not(id);
    let prods = party.and_many(&[(&r0, &r1), (&store_valid, &not_expired)])?;
    let both = &prods[0];
    let store_live = &prods[1];
    let role0 = r0.xor(both);
    let block_live = r0.xor(&r1).xor(both);

    // Sort-1 records: store (C), items (U), mailboxes (U).
    let n1 = c + 2 * u;
    let mut keys = SharedKeys {
        a: Vec::with_capacity(n1),
        b: Vec::with_capacity(n1),
    };
    let mut rows = Shared {
        a: Vec::with_capacity(n1 * row),
        b: Vec::with_capacity(n1 * row),
    };
    let store_dead = store_live.not(id);
    let block_dead = block_live.not(id);
    for (share, out_keys, out_rows) in [
        (Share::A, &mut keys.a, &mut rows.a),
        (Share::B, &mut keys.b, &mut rows.b),
    ] {
        let public = |v: u64| public_word(id, share, v);
        let srows = share.of(&store.rows);
        let dead = share.of(&store_dead);
        for t in 0..c {
            let r = &srows[t * sw..(t + 1) * sw];
            out_keys.push(key_item(lane(dead, t), r[2]));
            out_rows.push(public(SENTINEL));
            out_rows.push((r[0] >> 1) & ROLE_MASK);
            out_rows.extend_from_slice(&r[1..4]);
            out_rows.extend_from_slice(&r[4..]);
        }
        let brows = share.of(&blocks);
        let dead = share.of(&block_dead);
        let (ro0, ro1) = (share.of(&role0), share.of(&r1));
        for (i, &src) in online.iter().enumerate() {
            let r = &brows[i * bw..(i + 1) * bw];
            out_keys.push(key_item(lane(dead, i), r[1]));
            out_rows.push(public(2 * i as u64 + 1));
            out_rows.push(lane(ro0, i) ^ (lane(ro1, i) << 1));
            out_rows.push(public(src));
            out_rows.push(r[1]);
            out_rows.push(public(round as u64));
            out_rows.extend_from_slice(&r[2..]);
        }
        for (i, &owner) in online.iter().enumerate() {
            out_keys.push(public_key(id, share, (owner as u128) << 1));
            out_rows.push(public(2 * i as u64));
            out_rows.extend(std::iter::repeat_n(0, row - 1));
        }
    }
    // Peak memory is the sorts' (three parties in one process at 10^6 users come close to
    // 24 GB): release every input as soon as its last reader is done.
    drop(blocks);
    clock.lap("prepare");
    let sorted = quicksort(party, &keys, 66, &rows, row)?;
    drop((keys, rows));
    clock.lap("sort records");
    let matched = match_adjacent(party, &sorted.keys, &sorted.payload, row, p)?;
    drop(sorted);
    clock.lap("match");

    // Route A: mailboxes to their users, items on to the store sort.
    let routed = party.shuffle(&matched, row)?;
    drop(matched);
    let tags = party.declassify_words(Reason::RouteAfterShuffle, &column(&routed, row, ORIGIN))?;
    let mut mailbox_at = vec![usize::MAX; u];
    let mut items = Vec::with_capacity(u + c);
    let mut sentinels = 0usize;
    for (k, &tag) in tags.iter().enumerate() {
        if tag == SENTINEL {
            sentinels += 1;
            items.push(k);
        } else if tag < 2 * u as u64 {
            let i = (tag / 2) as usize;
            if tag % 2 == 1 {
                items.push(k);
            } else if mailbox_at[i] == usize::MAX {
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

    // Store sort: (not kept, received, src); not kept = dummy ^ delivered (exclusive).
    let item_rows = gather_rows(&routed, row, &items);
    // Each user's two output components without the status, which comes back after the
    // store sort: [incoming role << 8, from, payload]. Component x_i (this party's `a`)
    // and x_{i+1} (its `b`) both go to the user, so that it can check them
    // (`outputs::reconstruct_checked`).
    let assemble = |v: &[u64]| -> Vec<Vec<u64>> {
        mailbox_at
            .iter()
            .map(|&k| {
                let m = &v[k * row..(k + 1) * row];
                let mut out = Vec::with_capacity(cfg.output_words());
                out.push((m[FLAGS] & ROLE_MASK) << 8);
                out.push(m[SRC]);
                out.extend_from_slice(&m[PAYLOAD..]);
                out
            })
            .collect()
    };
    let mut outputs_a = assemble(&routed.a);
    let mut outputs_b = assemble(&routed.b);
    drop(routed);
    let mut keys2 = SharedKeys::default();
    for (share, out) in [(Share::A, &mut keys2.a), (Share::B, &mut keys2.b)] {
        let r = share.of(&item_rows);
        for t in 0..items.len() {
            let f = r[t * row + FLAGS];
            let not_kept = ((f >> DUMMY_BIT) ^ (f >> DELIVERED_BIT)) & 1;
            out.push(
                ((not_kept as u128) << 96)
                    | (((r[t * row + RECEIVED] & 0xffff_ffff) as u128) << 64)
                    | r[t * row + SRC] as u128,
            );
        }
    }
    clock.lap("route to mailboxes");
    let sorted2 = quicksort(party, &keys2, 97, &item_rows, row)?;
    drop((keys2, item_rows));
    clock.lap("sort store candidates");

    // New store: the first C rows; statuses of all items by position.
    let mut new_store = Shared {
        a: Vec::with_capacity(c * sw),
        b: Vec::with_capacity(c * sw),
    };
    let mut status_rows = Shared {
        a: Vec::with_capacity(2 * items.len()),
        b: Vec::with_capacity(2 * items.len()),
    };
    for (share, st, out) in [
        (Share::A, &mut new_store.a, &mut status_rows.a),
        (Share::B, &mut new_store.b, &mut status_rows.b),
    ] {
        let r = share.of(&sorted2.payload);
        let holds_x0 = public_word(id, share, u64::MAX);
        for t in 0..items.len() {
            let rr = &r[t * row..(t + 1) * row];
            let f = rr[FLAGS];
            let delivered = (f >> DELIVERED_BIT) & 1;
            let dummy = (f >> DUMMY_BIT) & 1;
            if t < c {
                // valid = !(dummy ^ delivered): NOT lands on the x_0 share.
                let valid = (dummy ^ delivered) ^ (holds_x0 & 1);
                st.push(valid ^ ((f & ROLE_MASK) << 1));
                st.extend_from_slice(&rr[SRC..=RECEIVED]);
                st.extend_from_slice(&rr[PAYLOAD..]);
            }
            // status = s ^ delivered·(2 ^ s) ^ dummy·(1 ^ s), with s = stored or dropped
            // by public position: a share-wise product of shared bits and constants.
            let s = if t < c { 3 } else { 4 };
            let status = (holds_x0 & s) ^ (delivered * (2 ^ s)) ^ (dummy * (1 ^ s));
            out.push(rr[ORIGIN]);
            out.push(status);
        }
    }

    // Route B: statuses back to this round's senders.
    let routed_status = party.shuffle(&status_rows, 2)?;
    let tags = party.declassify_words(Reason::RouteAfterShuffle, &column(&routed_status, 2, 0))?;
    let mut status_at = vec![usize::MAX; u];
    for (k, &tag) in tags.iter().enumerate() {
        if tag == SENTINEL {
            continue;
        }
        if tag >= 2 * u as u64 || tag % 2 == 0 || status_at[(tag / 2) as usize] != usize::MAX {
            return Err(route_mismatch(id));
        }
        status_at[(tag / 2) as usize] = k;
    }
    if status_at.contains(&usize::MAX) {
        return Err(route_mismatch(id));
    }
    party.check_openings()?;
    clock.lap("statuses and route back");

    // Status into word 0. XOR, never OR: shares of a value have random high bits.
    for (k, &at) in status_at.iter().enumerate() {
        outputs_a[k][0] ^= routed_status.a[2 * at + 1];
        outputs_b[k][0] ^= routed_status.b[2 * at + 1];
    }
    // Malicious mode: nothing computed in this round leaves before every gate is verified.
    party.verify_pending()?;
    let outputs = party.commit_outputs(round, online, outputs_a, outputs_b)?;
    clock.lap("assemble and commit outputs");
    Ok(RoundResult {
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

/// Sort key of an item: `(dummy, dst, 1)`.
fn key_item(dummy_bit: u64, dst: u64) -> u128 {
    ((dummy_bit as u128) << 65) | ((dst as u128) << 1) | 1
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

/// Rows at `idx`, in that order.
fn gather_rows(rows: &Shared, row: usize, idx: &[usize]) -> Shared {
    let g = |v: &[u64]| -> Vec<u64> {
        let mut out = vec![0u64; idx.len() * row];
        if row > 0 {
            out.par_chunks_mut(row)
                .zip(idx.par_iter())
                .for_each(|(d, &k)| d.copy_from_slice(&v[k * row..(k + 1) * row]));
        }
        out
    };
    Shared {
        a: g(&rows.a),
        b: g(&rows.b),
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

/// `[received < round + 1 - expiry]` for each store record: expired, so not deliverable
/// and not kept.
fn expired_bits(
    party: &mut Party,
    cfg: &RoundConfig,
    round: u32,
    store: &SharedStore,
) -> Result<Shared, EngineError> {
    let c = cfg.store_capacity;
    let sw = cfg.store_words();
    let threshold = (round as u64 + 1).saturating_sub(cfg.expiry_rounds as u64);
    if c == 0 || threshold == 0 {
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
    let t = vec![threshold as u128; c];
    let y = Shared::public(party.id(), &rows_to_planes(&t, 33));
    crate::circuits::less_than(party, &x, &y, 33, blocks(c))
}

/// Step 2: for each adjacent pair, `m_k = [key_k ^ 1 == key_{k+1}]`; record `k` (a
/// mailbox) takes record `k+1`'s role, source and payload under `m_k`, and record
/// `k+1` is marked delivered. Also writes each record's dummy bit into its flags.
fn match_adjacent(
    party: &mut Party,
    keys: &SharedKeys,
    rows: &Shared,
    row: usize,
    p: usize,
) -> Result<Shared, EngineError> {
    let n = keys.len();
    let id = party.id();
    let mut out = rows.clone();
    // Dummy bit (key bit 65) into FLAGS, share by share (linear).
    for (k, f) in [(&keys.a, &mut out.a), (&keys.b, &mut out.b)] {
        for t in 0..n {
            f[t * row + FLAGS] ^= (((k[t] >> 65) & 1) as u64) << DUMMY_BIT;
        }
    }
    if n < 2 {
        return Ok(out);
    }
    let pairs = n - 1;
    let left = |k: &[u128]| -> Vec<u128> { k[..pairs].iter().map(|x| x ^ 1).collect() };
    let right = |k: &[u128]| -> Vec<u128> { k[1..].to_vec() };
    // Flipping the kind bit of every left key is XOR with a public 1: only x_0 changes.
    let (la, lb) = match id.index() {
        0 => (left(&keys.a), keys.b[..pairs].to_vec()),
        2 => (keys.a[..pairs].to_vec(), left(&keys.b)),
        _ => (keys.a[..pairs].to_vec(), keys.b[..pairs].to_vec()),
    };
    let x = Shared {
        a: rows_to_planes(&la, 66),
        b: rows_to_planes(&lb, 66),
    };
    let y = Shared {
        a: rows_to_planes(&right(&keys.a), 66),
        b: rows_to_planes(&right(&keys.b), 66),
    };
    let m = equal(party, &x, &y, 66, blocks(pairs))?;

    // Mailbox k takes [role, src, payload] of k+1 under m_k: AND with the broadcast bit.
    let take = 2 + p;
    let masks = |bits: &[u64]| -> Vec<u64> {
        let mut v = vec![0u64; pairs * take];
        v.par_chunks_mut(take)
            .enumerate()
            .for_each(|(t, c)| c.fill(lane(bits, t).wrapping_neg()));
        v
    };
    let next_fields = |r: &[u64]| -> Vec<u64> {
        let mut v = vec![0u64; pairs * take];
        v.par_chunks_mut(take).enumerate().for_each(|(t, c)| {
            let rr = &r[(t + 1) * row..(t + 2) * row];
            c[0] = rr[FLAGS] & ROLE_MASK;
            c[1] = rr[SRC];
            c[2..].copy_from_slice(&rr[PAYLOAD..]);
        });
        v
    };
    let moved = party.and(
        &Shared {
            a: masks(&m.a),
            b: masks(&m.b),
        },
        &Shared {
            a: next_fields(&rows.a),
            b: next_fields(&rows.b),
        },
    )?;
    for (o, mv, mb) in [(&mut out.a, &moved.a, &m.a), (&mut out.b, &moved.b, &m.b)] {
        o.par_chunks_mut(row)
            .zip(mv.par_chunks(take))
            .for_each(|(dst, src)| {
                dst[FLAGS] ^= src[0];
                dst[SRC] ^= src[1];
                for (d, s) in dst[PAYLOAD..].iter_mut().zip(&src[2..]) {
                    *d ^= s;
                }
            });
        // The item after a matched mailbox is delivered.
        for t in 0..pairs {
            o[(t + 1) * row + FLAGS] ^= lane(mb, t) << DELIVERED_BIT;
        }
    }
    Ok(out)
}
