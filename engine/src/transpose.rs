//! Moving between row layout (one `u128` per element) and bitsliced planes (one `u64`
//! per 64 elements per bit), which the circuits need.
//!
//! Planes are stored plane-major: plane `j` (bit `w-1-j` of the key: most significant
//! first) occupies words `j*blocks .. (j+1)*blocks`, and element `r` sits in lane `r % 64`
//! of word `r / 64`.

use rayon::prelude::*;

/// Transposes a 64×64 bit matrix in place: afterwards bit `r` of word `c` is what bit `c`
/// of word `r` was. (Hacker's Delight §7-3, recursive block swap.) Runs the AVX2 build of
/// [`transpose64_portable`] where the CPU has AVX2 ([`crate::simd`]).
pub fn transpose64(a: &mut [u64; 64]) {
    crate::simd::transpose64(a)
}

/// [`transpose64`] in plain Rust, for any CPU (the baseline x86-64 build uses SSE2).
#[inline(always)]
pub fn transpose64_portable(a: &mut [u64; 64]) {
    // One function per stage with a constant shift, so each stage is a fixed pattern of
    // independent word pairs that the compiler unrolls and vectorizes.
    swap_stage::<32>(a, 0x0000_0000_FFFF_FFFF);
    swap_stage::<16>(a, 0x0000_FFFF_0000_FFFF);
    swap_stage::<8>(a, 0x00FF_00FF_00FF_00FF);
    swap_stage::<4>(a, 0x0F0F_0F0F_0F0F_0F0F);
    swap_stage::<2>(a, 0x3333_3333_3333_3333);
    swap_stage::<1>(a, 0x5555_5555_5555_5555);
}

/// Swaps the off-diagonal `J`×`J` bit blocks of each `2J`×`2J` block.
#[inline(always)]
fn swap_stage<const J: usize>(a: &mut [u64; 64], m: u64) {
    for base in (0..64).step_by(2 * J) {
        for k in base..base + J {
            let t = ((a[k] >> J) ^ a[k + J]) & m;
            a[k] ^= t << J;
            a[k + J] ^= t;
        }
    }
}

/// Bitslices two blocks of 64 rows of `w`-bit values, `64 < w <= 96`, given as the low
/// 64 bits of each row (`lo_a`, `lo_b`) and both blocks' high parts packed into one
/// word per row (`hi[r]` = high part of row `r` of block a | that of block b << 32,
/// each already cut to `w - 64` bits). Planes go to `dst_a`, `dst_b`, most
/// significant first. Three 64×64 transpositions for two blocks.
pub(crate) fn transpose_packed(
    mut lo_a: [u64; 64],
    mut lo_b: [u64; 64],
    mut hi: [u64; 64],
    w: usize,
    dst_a: &mut [u64],
    dst_b: &mut [u64],
) {
    debug_assert!(w > 64 && w <= 96);
    transpose64(&mut lo_a);
    transpose64(&mut lo_b);
    transpose64(&mut hi);
    for b in 0..64 {
        dst_a[w - 1 - b] = lo_a[b];
        dst_b[w - 1 - b] = lo_b[b];
    }
    for b in 64..w {
        dst_a[w - 1 - b] = hi[b - 64];
        dst_b[w - 1 - b] = hi[b - 32];
    }
}

/// Bitslices two 64-row blocks of `w`-bit values at once, most significant bit first
/// (`dst_x[0]` is bit `w-1` of every row of `rows_x`). When the part above bit 64 is at
/// most 32 bits wide, both blocks' high parts share one 64×64 transposition (the high
/// half of a 84-bit sort key is 20 bits), so two blocks cost three transpositions.
pub(crate) fn transpose_pair(
    rows_a: &[u128; 64],
    rows_b: &[u128; 64],
    w: usize,
    dst_a: &mut [u64],
    dst_b: &mut [u64],
) {
    debug_assert!(w <= 128 && dst_a.len() >= w && dst_b.len() >= w);
    let low_bits = w.min(64);
    for (rows, dst) in [(rows_a, &mut *dst_a), (rows_b, &mut *dst_b)] {
        let mut lo: [u64; 64] = std::array::from_fn(|r| rows[r] as u64);
        transpose64(&mut lo);
        for b in 0..low_bits {
            dst[w - 1 - b] = lo[b];
        }
    }
    if w <= 64 {
        return;
    }
    if w <= 96 {
        // Bits at and above `w` may be set (shares of narrower values need not be
        // narrow); only the low `w - 64` of each high part are kept.
        let keep = (1u64 << (w - 64)) - 1;
        let mut hi: [u64; 64] = std::array::from_fn(|r| {
            ((rows_a[r] >> 64) as u64 & keep) | (((rows_b[r] >> 64) as u64 & keep) << 32)
        });
        transpose64(&mut hi);
        for b in 64..w {
            dst_a[w - 1 - b] = hi[b - 64];
            dst_b[w - 1 - b] = hi[b - 32];
        }
    } else {
        for (rows, dst) in [(rows_a, dst_a), (rows_b, dst_b)] {
            let mut hi: [u64; 64] = std::array::from_fn(|r| (rows[r] >> 64) as u64);
            transpose64(&mut hi);
            for b in 64..w {
                dst[w - 1 - b] = hi[b - 64];
            }
        }
    }
}

/// Number of 64-lane blocks for `n` elements.
pub fn blocks(n: usize) -> usize {
    n.div_ceil(64)
}

/// Bitslices the low `w` bits of `rows` into `w` planes (most significant first), each
/// of `blocks(rows.len())` words. Lanes past the end are zero.
pub fn rows_to_planes(rows: &[u128], w: usize) -> Vec<u64> {
    assert!(w <= 128);
    let nb = blocks(rows.len());
    let mut out = vec![0u64; w * nb];
    if nb == 0 || w == 0 {
        return out;
    }
    // Transpose block by block into a block-major scratch, then scatter to planes.
    let mut scratch = vec![0u64; w * nb];
    scratch
        .par_chunks_mut(w)
        .zip(rows.par_chunks(64))
        .for_each(|(dst, src)| transpose_block(src, w, dst));
    // scratch[blk*w + j] -> out[j*nb + blk]
    out.par_chunks_mut(nb).enumerate().for_each(|(j, plane)| {
        for (blk, word) in plane.iter_mut().enumerate() {
            *word = scratch[blk * w + j];
        }
    });
    out
}

/// Transposes up to 64 rows into `w` words, most significant bit first (`dst[0]` is
/// bit `w-1` of every row; lanes past `src.len()` are zero).
pub fn transpose_block(src: &[u128], w: usize, dst: &mut [u64]) {
    let mut lo = [0u64; 64];
    for (r, x) in src.iter().enumerate() {
        lo[r] = *x as u64;
    }
    transpose64(&mut lo);
    // Bit b (b < 64) of each row is now word b of `lo`.
    let low_bits = w.min(64);
    for b in 0..low_bits {
        dst[w - 1 - b] = lo[b];
    }
    if w > 64 {
        let mut hi = [0u64; 64];
        for (r, x) in src.iter().enumerate() {
            hi[r] = (*x >> 64) as u64;
        }
        transpose64(&mut hi);
        for b in 64..w {
            dst[w - 1 - b] = hi[b - 64];
        }
    }
}

/// The inverse of [`rows_to_planes`]: `n` rows from `w` planes.
pub fn planes_to_rows(planes: &[u64], w: usize, n: usize) -> Vec<u128> {
    let nb = blocks(n);
    assert_eq!(planes.len(), w * nb);
    let mut rows = vec![0u128; n];
    rows.par_chunks_mut(64).enumerate().for_each(|(blk, dst)| {
        let mut lo = [0u64; 64];
        let mut hi = [0u64; 64];
        for b in 0..w {
            let word = planes[(w - 1 - b) * nb + blk];
            if b < 64 {
                lo[b] = word;
            } else {
                hi[b - 64] = word;
            }
        }
        transpose64(&mut lo);
        if w > 64 {
            transpose64(&mut hi);
        }
        for (r, row) in dst.iter_mut().enumerate() {
            *row = lo[r] as u128 | ((hi[r] as u128) << 64);
        }
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn transpose64_matches_naive() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut a = [0u64; 64];
        a.iter_mut().for_each(|w| *w = rng.gen());
        let orig = a;
        transpose64(&mut a);
        for r in 0..64 {
            for c in 0..64 {
                assert_eq!((a[c] >> r) & 1, (orig[r] >> c) & 1);
            }
        }
    }

    #[test]
    fn transpose_pair_matches_transpose_block() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for w in [1usize, 20, 63, 64, 65, 84, 96, 97, 128] {
            // Bits above `w` are set too: they must be ignored.
            let a: [u128; 64] = std::array::from_fn(|_| rng.gen::<u128>());
            let b: [u128; 64] = std::array::from_fn(|_| rng.gen::<u128>());
            let (mut pa, mut pb) = (vec![0u64; w], vec![0u64; w]);
            transpose_pair(&a, &b, w, &mut pa, &mut pb);
            let (mut qa, mut qb) = (vec![0u64; w], vec![0u64; w]);
            transpose_block(&a, w, &mut qa);
            transpose_block(&b, w, &mut qb);
            assert_eq!((pa, pb), (qa, qb), "w = {w}");
        }
    }

    #[test]
    fn rows_planes_round_trip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for (n, w) in [(0, 8), (1, 1), (63, 64), (64, 65), (200, 84), (130, 128)] {
            let mask = if w == 128 {
                u128::MAX
            } else {
                (1u128 << w) - 1
            };
            let rows: Vec<u128> = (0..n).map(|_| rng.gen::<u128>() & mask).collect();
            let planes = rows_to_planes(&rows, w);
            // Plane 0 is the most significant bit.
            for (r, x) in rows.iter().enumerate() {
                for j in 0..w {
                    let bit = (planes[j * blocks(n) + r / 64] >> (r % 64)) & 1;
                    assert_eq!(bit as u128, (x >> (w - 1 - j)) & 1);
                }
            }
            assert_eq!(planes_to_rows(&planes, w, n), rows);
        }
    }
}
