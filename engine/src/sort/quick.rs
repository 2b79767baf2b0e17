//! Oblivious quicksort with batched levels.

use super::level_key::{LevelKey, Narrow, Wide, Word, WordAndHalf};
use super::{index_bits, low_mask, Sorted};
use crate::compare::less_than_distinct_blocks;
use crate::declassify::Reason;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::{Shared, SharedKeys};
use crate::transpose::blocks;
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
    sort_records(party, keys, key_bits, payload, payload_words, true)
}

/// [`quicksort`] for keys that are distinct by construction (the caller's invariant, e.g.
/// keys that end in a record's own unique index): no tiebreak is appended, so every
/// comparison is `key_bits` wide instead of `key_bits + ceil(log2 n)`. Equal keys would
/// make the opened bits depend on which keys are equal, so callers must not pass them.
pub fn quicksort_distinct(
    party: &mut Party,
    keys: &SharedKeys,
    key_bits: usize,
    payload: &Shared,
    payload_words: usize,
) -> Result<Sorted, EngineError> {
    sort_records(party, keys, key_bits, payload, payload_words, false)
}

fn sort_records(
    party: &mut Party,
    keys: &SharedKeys,
    key_bits: usize,
    payload: &Shared,
    payload_words: usize,
    tiebreak: bool,
) -> Result<Sorted, EngineError> {
    let n = keys.len();
    check_inputs(n, key_bits, payload, payload_words)?;
    let idx_bits = if tiebreak { index_bits(n) } else { 0 };
    let w = key_bits + idx_bits;
    if w > 128 {
        return Err(EngineError::InvalidInput(format!(
            "{key_bits}-bit keys plus {idx_bits} tiebreak bits exceed 128"
        )));
    }
    // One table, rows of [key lo, key hi, payload..], with unique keys: key << idx_bits
    // | position (the position is public, added to x_0: party 0's `a`, party 2's `b`).
    let row_words = 2 + payload_words;
    let mask = low_mask(key_bits);
    let add_position =
        |share: usize| tiebreak && matches!((party.id().index(), share), (0, 0) | (2, 1));
    let build = |share: usize| -> Vec<u64> {
        let (k, p) = if share == 0 {
            (&keys.a, &payload.a)
        } else {
            (&keys.b, &payload.b)
        };
        let pos = add_position(share);
        let mut out = vec![0u64; n * row_words];
        out.par_chunks_mut(row_words)
            .enumerate()
            .for_each(|(i, row)| {
                let mut key = (k[i] & mask) << idx_bits;
                if pos {
                    key |= i as u128;
                }
                row[0] = key as u64;
                row[1] = (key >> 64) as u64;
                row[2..].copy_from_slice(&p[i * payload_words..(i + 1) * payload_words]);
            });
        out
    };
    let table = Shared {
        a: build(0),
        b: build(1),
    };
    let shuffled = party.shuffle_owned(table, row_words)?;
    let key_of = |t: &[u64], i: usize| -> u128 {
        t[i * row_words] as u128 | (t[i * row_words + 1] as u128) << 64
    };
    // The level list's keys, in the layout of their width.
    fn level_keys<K: LevelKey>(
        n: usize,
        w: usize,
        key: impl Fn(usize) -> [u128; 2] + Sync,
    ) -> Vec<K> {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let [a, b] = key(i);
                K::pack(a, b, w)
            })
            .collect()
    }
    let key = |i: usize| [key_of(&shuffled.a, i), key_of(&shuffled.b, i)];
    let (order, levels) = if w <= Narrow::MAX_WIDTH {
        sort_unique(party, level_keys::<Narrow>(n, w, key), w)?
    } else if w <= Word::MAX_WIDTH {
        sort_unique(party, level_keys::<Word>(n, w, key), w)?
    } else if w <= WordAndHalf::MAX_WIDTH {
        sort_unique(party, level_keys::<WordAndHalf>(n, w, key), w)?
    } else {
        sort_unique(party, level_keys::<Wide>(n, w, key), w)?
    };
    party.check_openings()?;

    // Move each row once, by the now-public order relative to the shuffled table, and
    // drop the tiebreak (a local shift of every share).
    let payload = Shared {
        a: gather_payload(&shuffled.a, row_words, &order),
        b: gather_payload(&shuffled.b, row_words, &order),
    };
    let sorted_keys = |t: &[u64]| -> Vec<u128> {
        order
            .par_iter()
            .map(|&i| key_of(t, i as usize) >> idx_bits)
            .collect()
    };
    let keys = SharedKeys {
        a: sorted_keys(&shuffled.a),
        b: sorted_keys(&shuffled.b),
    };
    Ok(Sorted {
        keys,
        payload,
        levels,
    })
}

/// The payload words of the rows of `table` (rows of `row_words`: two key words, then
/// payload), in the order `order` (`out` row `k` is table row `order[k]`).
fn gather_payload(table: &[u64], row_words: usize, order: &[u32]) -> Vec<u64> {
    let payload_words = row_words - 2;
    let mut out = vec![0u64; order.len() * payload_words];
    if payload_words == 0 {
        return out;
    }
    out.par_chunks_mut(payload_words)
        .zip(order.par_iter())
        .for_each(|(dst, &src)| {
            let s = src as usize * row_words + 2;
            dst.copy_from_slice(&table[s..s + payload_words]);
        });
    out
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

/// A segment of the quicksort recursion: the sorted positions `start .. start + size`
/// belong to its elements; `pivot` is the element the others are compared with.
#[derive(Clone, Copy)]
struct Segment {
    start: u32,
    size: u32,
    pivot: u32,
    /// The ranks `lo .. hi` of the sorted sample that lie in this segment (none when
    /// `lo == hi`). A segment with sample elements takes the middle one as its pivot
    /// and never compares the others: their order is known.
    lo: u32,
    hi: u32,
}

/// Sorts of at least this many elements first sort a sample (see [`sort_unique`]).
const SAMPLE_FROM: usize = 4096;

/// One element in this many is in the sample.
const SAMPLE_DIV: usize = 16;

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
///
/// Pivots come from a sorted sample: for `n ≥ SAMPLE_FROM` the first `n / SAMPLE_DIV`
/// elements (after the shuffle, a uniformly random sample) are sorted first, by plain
/// quicksort; each segment that holds sample elements then pivots on their median, so
/// the first `log2(n / SAMPLE_DIV)` levels split their segments nearly in half and
/// never compare a sample element again. The gaps between consecutive sample elements
/// (about `SAMPLE_DIV` elements each) finish as plain quicksort, pivoting on their first
/// member. This takes about 18 % fewer comparisons than pivoting on a random member
/// throughout (20.0 rather than 24.7 per element at 2^20, in simulation), for about 50 %
/// more levels. Every choice depends on earlier openings alone, so the opened bits
/// remain a function of the shuffled order, as in plain quicksort.
fn sort_unique<K: LevelKey>(
    party: &mut Party,
    keys: Vec<K>,
    w: usize,
) -> Result<(Vec<u32>, usize), EngineError> {
    sort_unique_sampled(party, keys, w, true)
}

/// [`sort_unique`], with a sorted sample or (`sample` false, for the sample itself,
/// whose own sample would save little and add levels) without.
fn sort_unique_sampled<K: LevelKey>(
    party: &mut Party,
    keys: Vec<K>,
    w: usize,
    sample: bool,
) -> Result<(Vec<u32>, usize), EngineError> {
    let n = keys.len();
    let s = if sample && n >= SAMPLE_FROM {
        n / SAMPLE_DIV
    } else {
        0
    };
    // `sample[r]` is the sample element of rank `r`.
    let (sample, mut levels) = if s > 0 {
        sort_unique_sampled(party, keys[..s].to_vec(), w, false)?
    } else {
        (Vec::new(), 0)
    };
    let mut final_pos = vec![UNSET; n];
    let mut segments: Vec<Segment> = Vec::new();
    let mut level = Level::<K>::default();
    match n {
        0 => {}
        1 => final_pos[0] = 0,
        _ => {
            // Without a sample, element 0 is the first pivot (a uniformly random one).
            let (pivot, first, lo, hi) = if s > 0 {
                (sample[s / 2], s, 0, s as u32)
            } else {
                (0, 1, 0, 0)
            };
            segments.push(Segment {
                start: 0,
                size: n as u32,
                pivot,
                lo,
                hi,
            });
            level.pivot_key.push(keys[pivot as usize]);
            level.active = (first as u32..n as u32).collect();
            level.seg = vec![0; n - first];
            level.key = keys[first..].to_vec();
            level.len = n - first;
        }
    }
    let mut next = Level::<K>::default();
    let mut next_segments: Vec<Segment> = Vec::new();
    let mut splits: Vec<Split> = Vec::new();
    while level.len > 0 {
        levels += 1;
        let m = level.len;
        let nb = blocks(m);
        let cur = &level;
        let less = less_than_distinct_blocks(party, nb, w, |blk, xa, xb, da, db| {
            // Lanes past the last element compare zero with zero.
            let lo = blk * 64;
            let len = m.min(lo + 64) - lo;
            let key = &cur.key[lo..lo + len];
            let seg = &cur.seg[lo..lo + len];
            // A block whose lanes all belong to one segment (the list is grouped by
            // segment) compares with one pivot: d's planes are x's planes with the
            // pivot's bits broadcast over the block's lanes, no second transposition.
            if len > 0 && seg[0] == seg[len - 1] {
                let lanes = if len == 64 {
                    u64::MAX
                } else {
                    (1u64 << len) - 1
                };
                let [pa, pb] = cur.pivot_key[seg[0] as usize].unpack(w);
                K::planes(key, w, xa, xb);
                let bit = |p: u128, b: usize| lanes & ((p >> b) as u64 & 1).wrapping_neg();
                for j in 0..w {
                    let b = w - 1 - j;
                    da[j] = xa[j] ^ bit(pa, b);
                    db[j] = xb[j] ^ bit(pb, b);
                }
                return;
            }
            let mut d = [K::default(); 64];
            for (d, (k, &sg)) in d.iter_mut().zip(key.iter().zip(seg)) {
                *d = k.xor(cur.pivot_key[sg as usize]);
            }
            K::planes(key, w, xa, xb);
            K::planes(&d[..len], w, da, db);
        })?;
        // Malicious mode: this level's comparison gates are verified before their
        // outcome is opened (a no-op in semi-honest mode).
        party.verify_pending()?;
        let bits = party.declassify(Reason::SortComparison, &less, m)?;
        let goes_left = |c: usize| (bits[c / 64] >> (c % 64)) & 1 == 1;

        // Each segment's members are one contiguous run of this level's list. Place its
        // pivot, then split the run stably into the left and the right child. A child
        // with sample elements pivots on their median (if it has no other members, its
        // sample elements are placed now, their order being known). Otherwise a child of
        // one element is placed, and a larger one becomes a new segment whose first
        // (lowest-index) member is its pivot, after the shuffle a uniformly random
        // member. The next level's list is again grouped by segment and ascending by
        // index within each.
        next_segments.clear();
        next.pivot_key.clear();
        next.reserve(m);
        let mut c = 0;
        let mut k = 0;
        for sgm in segments.iter() {
            let sampled = sgm.hi > sgm.lo;
            let mid = (sgm.lo + sgm.hi) / 2;
            let members = if sampled {
                sgm.size - (sgm.hi - sgm.lo)
            } else {
                sgm.size - 1
            };
            let run = c..c + members as usize;
            c = run.end;
            let l = count_ones(&bits, run.clone());
            let r = members - l;
            // The child sample ranges: below and above the pivot's rank.
            let (left_ranks, right_ranks) = if sampled {
                ((sgm.lo, mid), (mid + 1, sgm.hi))
            } else {
                ((0, 0), (0, 0))
            };
            let left_size = l + (left_ranks.1 - left_ranks.0);
            let right_size = r + (right_ranks.1 - right_ranks.0);
            final_pos[sgm.pivot as usize] = sgm.start + left_size;
            // A child without sample elements: its first member is its pivot, or the
            // lone element placed now.
            let first_left = (left_ranks.0 == left_ranks.1)
                .then(|| run.clone().find(|&i| goes_left(i)))
                .flatten();
            let first_right = (right_ranks.0 == right_ranks.1)
                .then(|| run.clone().find(|&i| !goes_left(i)))
                .flatten();
            let mut child = |first: Option<usize>,
                             (lo, hi): (u32, u32),
                             others: u32,
                             start: u32,
                             size: u32|
             -> u32 {
                if hi > lo {
                    if others == 0 {
                        for rank in lo..hi {
                            final_pos[sample[rank as usize] as usize] = start + rank - lo;
                        }
                        return UNSET;
                    }
                    let pivot = sample[((lo + hi) / 2) as usize];
                    next_segments.push(Segment {
                        start,
                        size,
                        pivot,
                        lo,
                        hi,
                    });
                    next.pivot_key.push(keys[pivot as usize]);
                    return next_segments.len() as u32 - 1;
                }
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
                            lo: 0,
                            hi: 0,
                        });
                        next.pivot_key.push(level.key[i]);
                        next_segments.len() as u32 - 1
                    }
                    _ => UNSET,
                }
            };
            let id_left = child(first_left, left_ranks, l, sgm.start, left_size);
            let id_right = child(
                first_right,
                right_ranks,
                r,
                sgm.start + left_size + 1,
                right_size,
            );
            // The other members go, in order, to the next list: the left ones from
            // `k`, then the right ones. Moved below, in parallel.
            let listed = |n: u32, first: Option<usize>| n as usize - usize::from(first.is_some());
            let split = Split {
                run,
                dest: k,
                left: listed(l, first_left),
                right: listed(r, first_right),
                skip: [first_right, first_left],
                ids: [id_right, id_left],
            };
            k += split.left + split.right;
            if split.left + split.right > 0 {
                splits.push(split);
            }
        }
        next.len = k;
        move_members(&level, &mut next, &splits, &bits);
        splits.clear();
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
struct Level<K: LevelKey> {
    /// Entries in use; the vectors below may be longer (their tails are stale).
    len: usize,
    active: Vec<u32>,
    seg: Vec<u32>,
    key: Vec<K>,
    pivot_key: Vec<K>,
}

impl<K: LevelKey> Level<K> {
    /// Room for `elements` entries (growing only the first time: the lists shrink).
    fn reserve(&mut self, elements: usize) {
        if self.active.len() < elements {
            self.active.resize(elements, 0);
            self.seg.resize(elements, 0);
            self.key.resize(elements, K::default());
        }
    }
}

/// Where one segment's members go in the next level's list: from `dest`, its `left`
/// members that go left, then its `right` members that go right, each side in list
/// order, without the side's first member when that one was placed or became the
/// child's pivot (`skip`, indexed by side: 0 right, 1 left). `ids` are the children's
/// segment ids, indexed the same way.
struct Split {
    run: std::ops::Range<usize>,
    dest: usize,
    left: usize,
    right: usize,
    skip: [Option<usize>; 2],
    ids: [u32; 2],
}

/// Destinations per parallel task when moving a level's members.
const MOVE_CHUNK: usize = 1 << 13;

/// Moves each member of `level` that stays unplaced to its place in `next` (the first
/// `next.len` entries), following `splits` (in destination order) and the opened
/// comparison bits. Each task fills a range of destinations, finding its first
/// source by counting bits, so the tasks need no shared state.
fn move_members<K: LevelKey>(
    level: &Level<K>,
    next: &mut Level<K>,
    splits: &[Split],
    bits: &[u64],
) {
    let len = next.len;
    let Level {
        active, seg, key, ..
    } = next;
    active[..len]
        .par_chunks_mut(MOVE_CHUNK)
        .zip(seg[..len].par_chunks_mut(MOVE_CHUNK))
        .zip(key[..len].par_chunks_mut(MOVE_CHUNK))
        .enumerate()
        .for_each(|(c, ((act, sg), ky))| {
            let start = c * MOVE_CHUNK;
            let end = start + act.len();
            let mut d = start;
            let mut s = splits.partition_point(|sp| sp.dest + sp.left + sp.right <= d);
            while d < end {
                let sp = &splits[s];
                let mid = sp.dest + sp.left;
                let (side, rank, side_end) = if d < mid {
                    (1, d - sp.dest, mid)
                } else {
                    (0, d - mid, mid + sp.right)
                };
                let rank = rank + usize::from(sp.skip[side].is_some());
                let mut i = select(bits, sp.run.clone(), side == 1, rank);
                let stop = side_end.min(end);
                loop {
                    let o = d - start;
                    act[o] = level.active[i];
                    sg[o] = sp.ids[side];
                    ky[o] = level.key[i];
                    d += 1;
                    if d == stop {
                        break;
                    }
                    i = next_on_side(bits, i + 1, side == 1);
                }
                if d == sp.dest + sp.left + sp.right {
                    s += 1;
                }
            }
        });
}

/// Word `w` of the opened bits with the members on the given side set (left: the bit).
fn side_word(bits: &[u64], w: usize, left: bool) -> u64 {
    if left {
        bits[w]
    } else {
        !bits[w]
    }
}

/// The position of the `rank`-th (from 0) member of `run` on the given side.
fn select(bits: &[u64], run: std::ops::Range<usize>, left: bool, mut rank: usize) -> usize {
    for (w, mask) in word_masks(run) {
        let mut x = side_word(bits, w, left) & mask;
        let count = x.count_ones() as usize;
        if rank < count {
            for _ in 0..rank {
                x &= x - 1;
            }
            return w * 64 + x.trailing_zeros() as usize;
        }
        rank -= count;
    }
    unreachable!("a split lists only members of its run")
}

/// The first position from `from` on the given side (one exists: the caller still has
/// members of its run to place on that side).
fn next_on_side(bits: &[u64], from: usize, left: bool) -> usize {
    let mut w = from / 64;
    let mut x = side_word(bits, w, left) & (u64::MAX << (from % 64));
    while x == 0 {
        w += 1;
        x = side_word(bits, w, left);
    }
    w * 64 + x.trailing_zeros() as usize
}

/// The number of set bits at positions `range` of the bitsliced words `bits`.
fn count_ones(bits: &[u64], range: std::ops::Range<usize>) -> u32 {
    word_masks(range)
        .map(|(w, mask)| (bits[w] & mask).count_ones())
        .sum()
}

/// The bitsliced words that positions `range` cover, in order, each with the mask of
/// the positions in it.
fn word_masks(range: std::ops::Range<usize>) -> impl Iterator<Item = (usize, u64)> {
    let end = range.end;
    let mut i = range.start;
    std::iter::from_fn(move || {
        if i >= end {
            return None;
        }
        let (w, b) = (i / 64, i % 64);
        let take = (64 - b).min(end - i);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << b
        };
        i += take;
        Some((w, mask))
    })
}

#[cfg(test)]
mod tests {
    use super::{count_ones, next_on_side, select};

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

    #[test]
    fn select_and_next_on_side_follow_the_bits() {
        let bits = [0xF0F0_0000_0000_000Fu64, u64::MAX, 0b1011, 0];
        let bit = |i: usize| (bits[i / 64] >> (i % 64)) & 1 == 1;
        for left in [true, false] {
            for start in (0..150).step_by(7) {
                for end in start..=150 {
                    let on_side: Vec<usize> = (start..end).filter(|&i| bit(i) == left).collect();
                    for (rank, &want) in on_side.iter().enumerate() {
                        assert_eq!(select(&bits, start..end, left, rank), want);
                    }
                    for pair in on_side.windows(2) {
                        assert_eq!(next_on_side(&bits, pair[0] + 1, left), pair[1]);
                    }
                }
            }
        }
    }
}
