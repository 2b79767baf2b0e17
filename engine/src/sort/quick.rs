//! Oblivious quicksort with batched levels.

use super::{index_bits, low_mask, Sorted};
use crate::circuits::less_than_from_diff;
use crate::declassify::Reason;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::{Shared, SharedKeys};
use crate::shuffle::apply_permutation;
use crate::transpose::{blocks, rows_to_planes};
use rayon::prelude::*;

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
    let mut keys = SharedKeys::from_words(&key_words);

    let (order, levels) = sort_unique(party, &mut keys, w)?;
    party.check_openings()?;

    // Move each payload once, by the now-public order relative to the shuffled table.
    let payload = Shared {
        a: apply_permutation(&payload.a, payload_words, &order),
        b: apply_permutation(&payload.b, payload_words, &order),
    };
    // Drop the tiebreak: a local shift of every share.
    keys.a.iter_mut().for_each(|k| *k >>= idx_bits);
    keys.b.iter_mut().for_each(|k| *k >>= idx_bits);
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

/// Quicksort over unique, shuffled `w`-bit keys, in place. Returns, for each sorted
/// position, the row's index in the input order, and the number of levels.
fn sort_unique(
    party: &mut Party,
    keys: &mut SharedKeys,
    w: usize,
) -> Result<(Vec<u32>, usize), EngineError> {
    let n = keys.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Active segments [start, end) of length >= 2, in increasing order.
    let mut segments: Vec<(usize, usize)> = if n >= 2 { vec![(0, n)] } else { vec![] };
    let mut scratch_a = vec![0u128; n];
    let mut scratch_b = vec![0u128; n];
    let mut scratch_o = vec![0u32; n];
    let mut levels = 0;
    while !segments.is_empty() {
        levels += 1;
        // Every non-pivot element of every segment against its pivot (the segment's
        // first element), as one batch.
        let m: usize = segments.iter().map(|(s, e)| e - s - 1).sum();
        let mut xa = Vec::with_capacity(m);
        let mut xb = Vec::with_capacity(m);
        let mut da = Vec::with_capacity(m);
        let mut db = Vec::with_capacity(m);
        for &(s, e) in &segments {
            let (pa, pb) = (keys.a[s], keys.b[s]);
            for t in s + 1..e {
                xa.push(keys.a[t]);
                xb.push(keys.b[t]);
                da.push(keys.a[t] ^ pa);
                db.push(keys.b[t] ^ pb);
            }
        }
        let nb = blocks(m);
        let x = Shared {
            a: rows_to_planes(&xa, w),
            b: rows_to_planes(&xb, w),
        };
        let d = Shared {
            a: rows_to_planes(&da, w),
            b: rows_to_planes(&db, w),
        };
        let less = less_than_from_diff(party, &x, &d, w, nb)?;
        let bits = party.declassify(Reason::SortComparison, &less, m)?;

        // Stable partition of each segment: smaller than the pivot, pivot, larger.
        let mut next = Vec::with_capacity(2 * segments.len());
        let mut offset = 0;
        for &(s, e) in &segments {
            let mut left = s;
            for t in s + 1..e {
                let c = offset + (t - s - 1);
                if (bits[c / 64] >> (c % 64)) & 1 == 1 {
                    scratch_a[left] = keys.a[t];
                    scratch_b[left] = keys.b[t];
                    scratch_o[left] = order[t];
                    left += 1;
                }
            }
            let pivot_at = left;
            scratch_a[pivot_at] = keys.a[s];
            scratch_b[pivot_at] = keys.b[s];
            scratch_o[pivot_at] = order[s];
            let mut right = pivot_at + 1;
            for t in s + 1..e {
                let c = offset + (t - s - 1);
                if (bits[c / 64] >> (c % 64)) & 1 == 0 {
                    scratch_a[right] = keys.a[t];
                    scratch_b[right] = keys.b[t];
                    scratch_o[right] = order[t];
                    right += 1;
                }
            }
            keys.a[s..e].copy_from_slice(&scratch_a[s..e]);
            keys.b[s..e].copy_from_slice(&scratch_b[s..e]);
            order[s..e].copy_from_slice(&scratch_o[s..e]);
            if pivot_at - s >= 2 {
                next.push((s, pivot_at));
            }
            if e - (pivot_at + 1) >= 2 {
                next.push((pivot_at + 1, e));
            }
            offset += e - s - 1;
        }
        segments = next;
    }
    Ok((order, levels))
}
