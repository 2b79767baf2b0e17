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

/// Quicksort over unique, shuffled `w`-bit keys. Each level works on the list of
/// still-unplaced elements, grouped by segment (segments in sorted-position order) and
/// ascending by index within a segment, with their segment ids and a copy of their keys
/// (so the comparison input and all bookkeeping are read sequentially, and each
/// segment's pivot key comes from a small per-segment table); lane `c` of a level's
/// comparison and opening is list entry `c`, an order fixed by earlier openings alone.
/// Every element's final position is fixed as soon as it is a pivot or alone in a
/// segment. Returns, for each sorted position, the element's index, and the number of
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
            level.len = n - 1;
        }
    }
    let mut next = Level::default();
    let mut next_segments: Vec<Segment> = Vec::new();
    let mut levels = 0;
    while level.len > 0 {
        levels += 1;
        let m = level.len;
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

        // Each segment's members are one contiguous run of this level's list. Place its
        // pivot, then split the run stably into the left and the right child: a child of
        // one element is placed; a larger one becomes a new segment whose first (lowest-
        // index) member is its pivot, after the shuffle a uniformly random member. So
        // every pass is sequential, and the next level's list is again grouped by
        // segment and ascending by index within each.
        next_segments.clear();
        next.pivot_key.clear();
        next.reserve(m);
        let mut c = 0;
        let mut k = 0;
        for sgm in segments.iter() {
            let run = c..c + (sgm.size - 1) as usize;
            c = run.end;
            let l = count_ones(&bits, run.clone());
            let r = sgm.size - 1 - l;
            final_pos[sgm.pivot as usize] = sgm.start + l;
            // Each side's first member: its pivot, or the lone element placed now.
            let first_left = run.clone().find(|&i| goes_left(i));
            let first_right = run.clone().find(|&i| !goes_left(i));
            let mut child = |first: Option<usize>, start: u32, size: u32| -> u32 {
                match (first, size) {
                    (Some(i), 1) => {
                        final_pos[level.active[i] as usize] = start;
                        UNSET
                    }
                    (Some(i), 2..) => {
                        next_segments.push(Segment {
                            start,
                            size,
                            pivot: level.active[i],
                        });
                        next.pivot_key.push(level.key[i]);
                        next_segments.len() as u32 - 1
                    }
                    _ => UNSET,
                }
            };
            let id_left = child(first_left, sgm.start, l);
            let id_right = child(first_right, sgm.start + l + 1, r);
            // The other members go, in order, to the next list: left ones at `kl`,
            // right ones at `kr` (branch-free: the side is a coin flip per element).
            let mut kl = k;
            let mut kr = k + l.saturating_sub(1) as usize;
            k = kr + r.saturating_sub(1) as usize;
            for i in run {
                if Some(i) == first_left || Some(i) == first_right {
                    continue;
                }
                let left = goes_left(i);
                let dst = if left { kl } else { kr };
                next.active[dst] = level.active[i];
                next.seg[dst] = if left { id_left } else { id_right };
                next.key[dst] = level.key[i];
                kl += usize::from(left);
                kr += usize::from(!left);
            }
        }
        next.len = k;
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

/// The elements still being compared at one level, grouped by segment: their indices,
/// segment ids and key shares, and each segment's pivot key shares. Two of these are
/// swapped level by level, so their memory is reused.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct Level {
    /// Entries in use; the vectors below may be longer (their tails are stale).
    len: usize,
    active: Vec<u32>,
    seg: Vec<u32>,
    key: Vec<[u128; 2]>,
    pivot_key: Vec<[u128; 2]>,
}

impl Level {
    /// Room for `elements` entries (growing only the first time: the lists shrink).
    fn reserve(&mut self, elements: usize) {
        if self.active.len() < elements {
            self.active.resize(elements, 0);
            self.seg.resize(elements, 0);
            self.key.resize(elements, [0; 2]);
        }
    }
}

/// The number of set bits at positions `range` of the bitsliced words `bits`.
fn count_ones(bits: &[u64], range: std::ops::Range<usize>) -> u32 {
    let (mut i, end) = (range.start, range.end);
    let mut n = 0;
    while i < end {
        let (w, b) = (i / 64, i % 64);
        let take = (64 - b).min(end - i);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << b
        };
        n += (bits[w] & mask).count_ones();
        i += take;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::count_ones;

    #[test]
    fn count_ones_over_any_range() {
        let bits = [0xF0F0_0000_0000_000Fu64, u64::MAX, 0b1011];
        for start in 0..150 {
            for end in start..=150 {
                let want = (start..end)
                    .filter(|&i| (bits[i / 64] >> (i % 64)) & 1 == 1)
                    .count() as u32;
                assert_eq!(count_ones(&bits, start..end), want, "{start}..{end}");
            }
        }
    }
}
