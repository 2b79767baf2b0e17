//! Batcher's bitonic sorting network: the fully data-oblivious baseline.

use super::quick::check_inputs;
use super::{low_mask, Sorted};
use crate::circuits::less_than_from_diff;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::{Shared, SharedKeys};
use crate::transpose::{blocks, rows_to_planes};

/// Sorts like [`super::quicksort`] but opens nothing: every compare-exchange of the
/// network is a secret comparison followed by a secret swap of keys and payloads.
///
/// The input is padded to a power of two with public dummy rows whose extra top key bit
/// is set, so they sort after every real row and are dropped at the end (the padding
/// depends only on the public `n`). Each stage of the network is one batch.
pub fn bitonic_sort(
    party: &mut Party,
    keys: &SharedKeys,
    key_bits: usize,
    payload: &Shared,
    payload_words: usize,
) -> Result<Sorted, EngineError> {
    let n = keys.len();
    check_inputs(n, key_bits, payload, payload_words)?;
    if key_bits >= 128 {
        return Err(EngineError::InvalidInput(
            "bitonic sort needs one spare key bit for padding".into(),
        ));
    }
    let w = key_bits + 1;
    let padded = n.next_power_of_two().max(1);
    let id = party.id();
    let mask = low_mask(key_bits);
    let mut ka: Vec<u128> = keys.a.iter().map(|k| k & mask).collect();
    let mut kb: Vec<u128> = keys.b.iter().map(|k| k & mask).collect();
    let mut pa = payload.a.clone();
    let mut pb = payload.b.clone();
    // Dummies: the public key 1 << key_bits, carried in x_0.
    let dummy = 1u128 << key_bits;
    let (da, db) = match id.index() {
        0 => (dummy, 0),
        2 => (0, dummy),
        _ => (0, 0),
    };
    ka.resize(padded, da);
    kb.resize(padded, db);
    pa.resize(padded * payload_words, 0);
    pb.resize(padded * payload_words, 0);

    let mut stages = 0;
    let mut k = 2;
    while k <= padded {
        let mut j = k / 2;
        while j >= 1 {
            stages += 1;
            // Pairs (first, second): swap when second < first.
            let pairs: Vec<(usize, usize)> = (0..padded)
                .filter(|&i| (i ^ j) > i)
                .map(|i| {
                    let l = i ^ j;
                    if i & k == 0 {
                        (i, l)
                    } else {
                        (l, i)
                    }
                })
                .collect();
            compare_exchange(
                party,
                &pairs,
                w,
                (&mut ka, &mut kb),
                (&mut pa, &mut pb),
                payload_words,
            )?;
            j /= 2;
        }
        k *= 2;
    }
    ka.truncate(n);
    kb.truncate(n);
    pa.truncate(n * payload_words);
    pb.truncate(n * payload_words);
    // Clear the padding bit (zero for every real row).
    ka.iter_mut().for_each(|x| *x &= mask);
    kb.iter_mut().for_each(|x| *x &= mask);
    // Malicious mode: the network's gates are verified before the result is returned.
    party.verify_pending()?;
    Ok(Sorted {
        keys: SharedKeys { a: ka, b: kb },
        payload: Shared { a: pa, b: pb },
        levels: stages,
    })
}

/// One stage: for every pair, `c = [second < first]`, then both rows swap under `c`.
fn compare_exchange(
    party: &mut Party,
    pairs: &[(usize, usize)],
    w: usize,
    keys: (&mut Vec<u128>, &mut Vec<u128>),
    payload: (&mut Vec<u64>, &mut Vec<u64>),
    payload_words: usize,
) -> Result<(), EngineError> {
    let (ka, kb) = keys;
    let (pa, pb) = payload;
    let m = pairs.len();
    let second_a: Vec<u128> = pairs.iter().map(|&(_, s)| ka[s]).collect();
    let second_b: Vec<u128> = pairs.iter().map(|&(_, s)| kb[s]).collect();
    let diff_a: Vec<u128> = pairs.iter().map(|&(f, s)| ka[f] ^ ka[s]).collect();
    let diff_b: Vec<u128> = pairs.iter().map(|&(f, s)| kb[f] ^ kb[s]).collect();
    let x = Shared {
        a: rows_to_planes(&second_a, w),
        b: rows_to_planes(&second_b, w),
    };
    let d = Shared {
        a: rows_to_planes(&diff_a, w),
        b: rows_to_planes(&diff_b, w),
    };
    let swap = less_than_from_diff(party, &x, &d, w, blocks(m))?;

    // Row-form swap: every word of a pair's (key, payload) XOR difference, ANDed with
    // that pair's swap bit broadcast to a full word (a valid sharing of the broadcast).
    let row = 2 + payload_words;
    let expand = |bits: &[u64]| -> Vec<u64> {
        let mut out = Vec::with_capacity(m * row);
        for t in 0..m {
            let bit = (bits[t / 64] >> (t % 64)) & 1;
            out.extend(std::iter::repeat_n(bit.wrapping_neg(), row));
        }
        out
    };
    let diff_rows = |k: &[u128], p: &[u64]| -> Vec<u64> {
        let mut out = Vec::with_capacity(m * row);
        for &(f, s) in pairs {
            let dk = k[f] ^ k[s];
            out.push(dk as u64);
            out.push((dk >> 64) as u64);
            for q in 0..payload_words {
                out.push(p[f * payload_words + q] ^ p[s * payload_words + q]);
            }
        }
        out
    };
    let c = Shared {
        a: expand(&swap.a),
        b: expand(&swap.b),
    };
    let diff = Shared {
        a: diff_rows(ka, pa),
        b: diff_rows(kb, pb),
    };
    let delta = party.and(&c, &diff)?;
    for (share_keys, share_payload, dl) in [(ka, pa, &delta.a), (kb, pb, &delta.b)] {
        for (t, &(f, s)) in pairs.iter().enumerate() {
            let r = &dl[t * row..(t + 1) * row];
            let dk = r[0] as u128 | ((r[1] as u128) << 64);
            share_keys[f] ^= dk;
            share_keys[s] ^= dk;
            for q in 0..payload_words {
                share_payload[f * payload_words + q] ^= r[2 + q];
                share_payload[s * payload_words + q] ^= r[2 + q];
            }
        }
    }
    Ok(())
}
