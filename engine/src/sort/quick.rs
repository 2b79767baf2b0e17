//! Oblivious quicksort with batched levels.

use super::{index_bits, low_mask, Sorted};
use crate::compare::less_than_blocks;
use crate::declassify::Reason;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::{Shared, SharedKeys};
use crate::shuffle::apply_permutation;
use crate::transpose::{blocks, transpose_pair};
use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Sorts `n` records by `key_bits`-bit keys (`keys`, one per record) carrying
/// `payload_words` words each (`payload`, row-major).
///
/// Keys are made unique by appending each record's input position (`ceil(log2 n)` bits;
/// `key_bits` plus those must fit 128), the records are shuffled, and quicksort runs with
/// the first element of each segment as pivot. Each level compares every non-pivot
/// element with its segment's pivot in one batched less-than and opens only those bits
/// ([`Reason::SortComparison`]). Because the keys are unique and their order was
/// randomized, the opened bits are a function of a uniformly random permutation alone.
/// The openings are cross-checked before anything is returned.
pub fn quicksort(
    party: &mut Party,
    keys: &SharedKeys,
    key_bits: usize,
    payload: &Shared,
    payload_words: usize,
) -> Result<Sorted, EngineError> {
    let n = keys.len();
    check_inputs(n, key_bits, payload, payload_words)?;
    let idx_bits = index_bits(n);
    let w = key_bits + idx_bits;
    if w > 128 {
        return Err(EngineError::InvalidInput(format!(
            "{key_bits}-bit keys plus {idx_bits} tiebreak bits exceed 128"
        )));
    }
    // Unique keys: key << idx_bits | position (the position is public, added to x_0).
    let id = party.id();
    let mask = low_mask(key_bits);
    let shift = |v: &[u128]| -> Vec<u128> { v.iter().map(|k| (k & mask) << idx_bits).collect() };
    let mut unique = SharedKeys {
        a: shift(&keys.a),
        b: shift(&keys.b),
    };
    match id.index() {
        0 => unique
            .a
            .iter_mut()
            .enumerate()
            .for_each(|(i, k)| *k |= i as u128),
        2 => unique
            .b
            .iter_mut()
            .enumerate()
            .for_each(|(i, k)| *k |= i as u128),
        _ => {}
    }

    // Shuffle keys and payloads together: one table, rows of [key lo, key hi, payload..].
    let row_words = 2 + payload_words;
    let table = interleave(&unique.to_words(), payload, payload_words);
    let shuffled = party.shuffle(&table, row_words)?;
    let (key_words, payload) = split(&shuffled, payload_words);
    let keys = SharedKeys::from_words(&key_words);

    let (order, levels) = sort_unique(party, &keys, w)?;
    party.check_openings()?;

    // Move each row once, by the now-public order relative to the shuffled table, and
    // drop the tiebreak (a local shift of every share).
    let payload = Shared {
        a: apply_permutation(&payload.a, payload_words, &order),
        b: apply_permutation(&payload.b, payload_words, &order),
    };
    let keys = SharedKeys {
        a: order
            .iter()
            .map(|&t| keys.a[t as usize] >> idx_bits)
            .collect(),
        b: order
            .iter()
            .map(|&t| keys.b[t as usize] >> idx_bits)
            .collect(),
    };
    Ok(Sorted {
        keys,
        payload,
        levels,
    })
}

pub(super) fn check_inputs(
    n: usize,
    key_bits: usize,
    payload: &Shared,
    payload_words: usize,
) -> Result<(), EngineError> {
    if !(1..=128).contains(&key_bits) {
        return Err(EngineError::InvalidInput(format!(
            "key width {key_bits} not in 1..=128"
        )));
    }
    if payload.len() != n * payload_words {
        return Err(EngineError::InvalidInput(format!(
            "payload of {} words for {n} rows of {payload_words}",
            payload.len()
        )));
    }
    if n > u32::MAX as usize {
        return Err(EngineError::InvalidInput("too many rows".into()));
    }
    Ok(())
}

/// Rows `[key words (2), payload words]`.
pub(super) fn interleave(keys: &Shared, payload: &Shared, payload_words: usize) -> Shared {
    let n = keys.len() / 2;
    let row = 2 + payload_words;
    let build = |k: &[u64], p: &[u64]| -> Vec<u64> {
        let mut out = vec![0u64; n * row];
        if n == 0 {
            return out;
        }
        out.par_chunks_mut(row).enumerate().for_each(|(i, dst)| {
            dst[..2].copy_from_slice(&k[2 * i..2 * i + 2]);
            dst[2..].copy_from_slice(&p[i * payload_words..(i + 1) * payload_words]);
        });
        out
    };
    Shared {
        a: build(&keys.a, &payload.a),
        b: build(&keys.b, &payload.b),
    }
}

/// The inverse of [`interleave`].
pub(super) fn split(table: &Shared, payload_words: usize) -> (Shared, Shared) {
    let row = 2 + payload_words;
    let n = table.len() / row;
    let part = |t: &[u64]| -> (Vec<u64>, Vec<u64>) {
        let mut k = Vec::with_capacity(2 * n);
        let mut p = Vec::with_capacity(n * payload_words);
        for r in t.chunks_exact(row) {
            k.extend_from_slice(&r[..2]);
            p.extend_from_slice(&r[2..]);
        }
        (k, p)
    };
    let (ka, pa) = part(&table.a);
    let (kb, pb) = part(&table.b);
    (Shared { a: ka, b: kb }, Shared { a: pa, b: pb })
}

/// A segment of the quicksort recursion: the sorted positions `start .. start + size`
/// belong to its elements; `pivot` is the element the others are compared with.
#[derive(Clone, Copy)]
struct Segment {
    start: u32,
    size: u32,
    pivot: u32,
}

const UNSET: u32 = u32::MAX;

/// Marks a child segment id (in the per-level child table) whose pivot is chosen. Segment
/// ids stay below it: every segment holds at least two of the `n < 2^32` elements.
const HAS_PIVOT: u32 = 1 << 31;

/// Quicksort over unique, shuffled `w`-bit keys. Each level works on the list of
/// still-unplaced elements in index order, with their segment ids and a compact copy of
/// their keys (so the comparison input is read sequentially, and each segment's pivot
/// key is read from a small per-segment table instead of from anywhere in the whole key
/// array); every element's final position is fixed as soon as it is a pivot or alone in
/// a segment. Returns, for each sorted position, the element's index, and the number of
/// levels.
fn sort_unique(
    party: &mut Party,
    keys: &SharedKeys,
    w: usize,
) -> Result<(Vec<u32>, usize), EngineError> {
    let n = keys.len();
    let mut final_pos = vec![UNSET; n];
    let mut segments: Vec<Segment> = Vec::new();
    let mut level = Level::default();
    match n {
        0 => {}
        1 => final_pos[0] = 0,
        _ => {
            segments.push(Segment {
                start: 0,
                size: n as u32,
                pivot: 0,
            });
            level.pivot_key.push([keys.a[0], keys.b[0]]);
            level.active = (1..n as u32).collect();
            level.seg = vec![0; n - 1];
            level.key = (1..n).map(|t| [keys.a[t], keys.b[t]]).collect();
        }
    }
    let mut next = Level::default();
    let mut left: Vec<u32> = Vec::new();
    let mut child: Vec<(u32, u32)> = Vec::new();
    let mut next_segments: Vec<Segment> = Vec::new();
    let mut levels = 0;
    while !level.active.is_empty() {
        levels += 1;
        let m = level.active.len();
        let nb = blocks(m);
        let cur = &level;
        let less = less_than_blocks(party, nb, w, |blk, xa, xb, da, db| {
            // Lanes past the last element compare zero with zero.
            let lo = blk * 64;
            let len = m.min(lo + 64) - lo;
            let key = &cur.key[lo..lo + len];
            let seg = &cur.seg[lo..lo + len];
            let x = |s: usize, r: usize| if r < len { key[r][s] } else { 0 };
            let d = |s: usize, r: usize| {
                if r < len {
                    key[r][s] ^ cur.pivot_key[seg[r] as usize][s]
                } else {
                    0
                }
            };
            let xa_rows: [u128; 64] = std::array::from_fn(|r| x(0, r));
            let xb_rows: [u128; 64] = std::array::from_fn(|r| x(1, r));
            transpose_pair(&xa_rows, &xb_rows, w, xa, xb);
            let da_rows: [u128; 64] = std::array::from_fn(|r| d(0, r));
            let db_rows: [u128; 64] = std::array::from_fn(|r| d(1, r));
            transpose_pair(&da_rows, &db_rows, w, da, db);
        })?;
        let bits = party.declassify(Reason::SortComparison, &less, m)?;
        let goes_left = |c: usize| (bits[c / 64] >> (c % 64)) & 1 == 1;

        // Place every pivot; open children of two or more elements as new segments.
        left.clear();
        left.resize(segments.len(), 0);
        for (c, &g) in level.seg.iter().enumerate() {
            left[g as usize] += u32::from(goes_left(c));
        }
        next_segments.clear();
        // Per old segment and side: the new segment id (UNSET for a lone element) and
        // the first sorted position of that side.
        child.clear();
        child.resize(2 * segments.len(), (UNSET, 0));
        for (g, sgm) in segments.iter().enumerate() {
            let l = left[g];
            let r = sgm.size - 1 - l;
            final_pos[sgm.pivot as usize] = sgm.start + l;
            for (side, start, size) in [(0, sgm.start, l), (1, sgm.start + l + 1, r)] {
                if size >= 2 {
                    child[2 * g + side] = (next_segments.len() as u32, start);
                    next_segments.push(Segment {
                        start,
                        size,
                        pivot: UNSET,
                    });
                } else {
                    child[2 * g + side] = (UNSET, start);
                }
            }
        }
        next.clear(next_segments.len(), m);
        for c in 0..m {
            let t = level.active[c];
            let side = usize::from(!goes_left(c));
            let slot = &mut child[2 * level.seg[c] as usize + side];
            let (id, start) = *slot;
            if id == UNSET {
                final_pos[t as usize] = start;
            } else if id & HAS_PIVOT == 0 {
                // The first (lowest-index) element of a new segment is its pivot: after
                // the shuffle that is a uniformly random member.
                next_segments[id as usize].pivot = t;
                next.pivot_key[id as usize] = level.key[c];
                slot.0 |= HAS_PIVOT;
            } else {
                next.active.push(t);
                next.seg.push(id & !HAS_PIVOT);
                next.key.push(level.key[c]);
            }
        }
        std::mem::swap(&mut segments, &mut next_segments);
        std::mem::swap(&mut level, &mut next);
    }
    let mut order = vec![0u32; n];
    for (t, &p) in final_pos.iter().enumerate() {
        debug_assert_ne!(p, UNSET);
        order[p as usize] = t as u32;
    }
    Ok((order, levels))
}

/// The elements still being compared at one level, ascending by index: their indices,
/// segment ids and key shares, and each segment's pivot key shares. Two of these are
/// swapped level by level, so their memory is reused.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct Level {
    active: Vec<u32>,
    seg: Vec<u32>,
    key: Vec<[u128; 2]>,
    pivot_key: Vec<[u128; 2]>,
}

impl Level {
    fn clear(&mut self, segments: usize, elements: usize) {
        self.active.clear();
        self.seg.clear();
        self.key.clear();
        self.active.reserve(elements);
        self.seg.reserve(elements);
        self.key.reserve(elements);
        self.pivot_key.clear();
        self.pivot_key.resize(segments, [0; 2]);
    }
}
