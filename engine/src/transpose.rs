//! Moving between row layout (one `u128` per element) and bitsliced planes (one `u64`
//! per 64 elements per bit), which the circuits need.
//!
//! Planes are stored plane-major: plane `j` (bit `w-1-j` of the key: most significant
//! first) occupies words `j*blocks .. (j+1)*blocks`, and element `r` sits in lane `r % 64`
//! of word `r / 64`.

use rayon::prelude::*;

/// Transposes a 64×64 bit matrix in place: afterwards bit `r` of word `c` is what bit `c`
/// of word `r` was. (Hacker's Delight §7-3, recursive block swap.)
pub fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32usize;
    let mut m: u64 = 0x0000_0000_FFFF_FFFF;
    while j != 0 {
        let mut k = 0usize;
        while k < 64 {
            // Swap the off-diagonal j×j blocks of each 2j×2j block.
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k] ^= t << j;
            a[k + j] ^= t;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        m ^= m << j;
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
