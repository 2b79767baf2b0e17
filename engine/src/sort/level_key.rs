//! How the quicksort's level list stores a key's two shares: in the layout its
//! comparison width bitslices from, as few bytes as that width needs.
//!
//! Every level moves each unplaced element's key to its next place and lays the keys of
//! each block of 64 out as bit-planes, so the bytes a key takes are read and written
//! about twenty times per element in a sort. A `[u128; 2]` for every width cost 32
//! bytes; the layouts here take 8 (both shares of a key of up to 32 bits in one word), 16
//! (up to 64 bits), 24 (up to 96 bits: the low words, and both high parts in one word)
//! or 32. Each layout is linear (a share's bits go to fixed bits of the layout), so
//! `x ^ pivot` on layouts is the layout of `x ^ pivot`.

use crate::transpose::{transpose64, transpose_packed, transpose_pair};

/// A key's two shares in one of the level list's layouts.
pub(super) trait LevelKey: Copy + Default + Send + Sync + zeroize::DefaultIsZeroes {
    /// The widest key (in bits) the layout holds.
    const MAX_WIDTH: usize;

    /// The layout of the shares `a`, `b` of a `w`-bit key (`w <= MAX_WIDTH`; bits above
    /// `w` are dropped).
    fn pack(a: u128, b: u128, w: usize) -> Self;

    /// The shares back as `[a, b]`.
    fn unpack(self, w: usize) -> [u128; 2];

    /// The layout of the XOR of two keys.
    fn xor(self, other: Self) -> Self;

    /// The `w` planes of `keys` (at most 64, the block's lanes; lanes past the end are
    /// zero), most significant first, into `pa` (share `a`) and `pb` (share `b`).
    fn planes(keys: &[Self], w: usize, pa: &mut [u64], pb: &mut [u64]);
}

fn keep(bits: usize) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Keys of up to 32 bits: share `a` in the low half of the word, `b` in the high half,
/// so one transposition bitslices both.
#[derive(Clone, Copy, Default)]
pub(super) struct Narrow(u64);

impl zeroize::DefaultIsZeroes for Narrow {}

impl LevelKey for Narrow {
    const MAX_WIDTH: usize = 32;

    fn pack(a: u128, b: u128, w: usize) -> Self {
        let k = keep(w);
        Narrow((a as u64 & k) | ((b as u64 & k) << 32))
    }

    fn unpack(self, _w: usize) -> [u128; 2] {
        [(self.0 & 0xffff_ffff) as u128, (self.0 >> 32) as u128]
    }

    fn xor(self, other: Self) -> Self {
        Narrow(self.0 ^ other.0)
    }

    fn planes(keys: &[Self], w: usize, pa: &mut [u64], pb: &mut [u64]) {
        let mut rows = [0u64; 64];
        for (r, k) in rows.iter_mut().zip(keys) {
            *r = k.0;
        }
        transpose64(&mut rows);
        for b in 0..w {
            pa[w - 1 - b] = rows[b];
            pb[w - 1 - b] = rows[32 + b];
        }
    }
}

/// Keys of up to 64 bits: one word per share.
#[derive(Clone, Copy, Default)]
pub(super) struct Word([u64; 2]);

impl zeroize::DefaultIsZeroes for Word {}

impl LevelKey for Word {
    const MAX_WIDTH: usize = 64;

    fn pack(a: u128, b: u128, w: usize) -> Self {
        let k = keep(w);
        Word([a as u64 & k, b as u64 & k])
    }

    fn unpack(self, _w: usize) -> [u128; 2] {
        [self.0[0] as u128, self.0[1] as u128]
    }

    fn xor(self, other: Self) -> Self {
        Word([self.0[0] ^ other.0[0], self.0[1] ^ other.0[1]])
    }

    fn planes(keys: &[Self], w: usize, pa: &mut [u64], pb: &mut [u64]) {
        let (mut ra, mut rb) = ([0u64; 64], [0u64; 64]);
        for (r, k) in keys.iter().enumerate() {
            ra[r] = k.0[0];
            rb[r] = k.0[1];
        }
        for (rows, p) in [(&mut ra, pa), (&mut rb, pb)] {
            transpose64(rows);
            for b in 0..w {
                p[w - 1 - b] = rows[b];
            }
        }
    }
}

/// Keys of 65 to 96 bits (the usual case: 64-bit keys and a tiebreak of up to 32
/// bits): the low words of both shares, then both high parts in one word, so three
/// transpositions bitslice both shares.
#[derive(Clone, Copy, Default)]
pub(super) struct WordAndHalf([u64; 3]);

impl zeroize::DefaultIsZeroes for WordAndHalf {}

impl LevelKey for WordAndHalf {
    const MAX_WIDTH: usize = 96;

    fn pack(a: u128, b: u128, w: usize) -> Self {
        let k = keep(w - 64);
        WordAndHalf([
            a as u64,
            b as u64,
            ((a >> 64) as u64 & k) | (((b >> 64) as u64 & k) << 32),
        ])
    }

    fn unpack(self, _w: usize) -> [u128; 2] {
        let [lo_a, lo_b, hi] = self.0;
        [
            lo_a as u128 | ((hi & 0xffff_ffff) as u128) << 64,
            lo_b as u128 | ((hi >> 32) as u128) << 64,
        ]
    }

    fn xor(self, other: Self) -> Self {
        let ([a, b, c], [d, e, f]) = (self.0, other.0);
        WordAndHalf([a ^ d, b ^ e, c ^ f])
    }

    fn planes(keys: &[Self], w: usize, pa: &mut [u64], pb: &mut [u64]) {
        let (mut lo_a, mut lo_b, mut hi) = ([0u64; 64], [0u64; 64], [0u64; 64]);
        for (r, k) in keys.iter().enumerate() {
            lo_a[r] = k.0[0];
            lo_b[r] = k.0[1];
            hi[r] = k.0[2];
        }
        transpose_packed(lo_a, lo_b, hi, w, pa, pb);
    }
}

/// Keys of 97 to 128 bits: both shares whole.
#[derive(Clone, Copy, Default)]
pub(super) struct Wide([u128; 2]);

impl zeroize::DefaultIsZeroes for Wide {}

impl LevelKey for Wide {
    const MAX_WIDTH: usize = 128;

    fn pack(a: u128, b: u128, _w: usize) -> Self {
        Wide([a, b])
    }

    fn unpack(self, _w: usize) -> [u128; 2] {
        self.0
    }

    fn xor(self, other: Self) -> Self {
        Wide([self.0[0] ^ other.0[0], self.0[1] ^ other.0[1]])
    }

    fn planes(keys: &[Self], w: usize, pa: &mut [u64], pb: &mut [u64]) {
        let mut ra = [0u128; 64];
        let mut rb = [0u128; 64];
        for (r, k) in keys.iter().enumerate() {
            ra[r] = k.0[0];
            rb[r] = k.0[1];
        }
        transpose_pair(&ra, &rb, w, pa, pb);
    }
}

#[cfg(test)]
mod tests {
    use super::{LevelKey, Narrow, Wide, Word, WordAndHalf};
    use rand::{Rng, SeedableRng};

    /// Planes and packing of every layout agree with the plain definition: plane `j`
    /// (most significant first) holds bit `w - 1 - j` of each lane's share.
    fn check<K: LevelKey>(w: usize, rng: &mut impl Rng) {
        let mask = if w == 128 {
            u128::MAX
        } else {
            (1u128 << w) - 1
        };
        for len in [0usize, 1, 17, 63, 64] {
            let shares: Vec<[u128; 2]> = (0..len)
                .map(|_| [rng.gen::<u128>() & mask, rng.gen::<u128>() & mask])
                .collect();
            let keys: Vec<K> = shares.iter().map(|&[a, b]| K::pack(a, b, w)).collect();
            for (k, s) in keys.iter().zip(&shares) {
                assert_eq!(k.unpack(w), *s, "w {w}");
            }
            let (mut pa, mut pb) = (vec![0u64; w], vec![0u64; w]);
            K::planes(&keys, w, &mut pa, &mut pb);
            for j in 0..w {
                let bit = w - 1 - j;
                let want = |s: usize| {
                    (0..len).fold(0u64, |acc, r| {
                        acc | (((shares[r][s] >> bit) & 1) as u64) << r
                    })
                };
                assert_eq!(pa[j], want(0), "w {w} plane {j} share a");
                assert_eq!(pb[j], want(1), "w {w} plane {j} share b");
            }
            if len > 1 {
                let x = keys[0].xor(keys[1]).unpack(w);
                assert_eq!(
                    x,
                    [shares[0][0] ^ shares[1][0], shares[0][1] ^ shares[1][1]]
                );
            }
        }
    }

    #[test]
    fn every_layout_bitslices_and_packs_like_the_definition() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for w in 1..=32 {
            check::<Narrow>(w, &mut rng);
        }
        for w in 1..=64 {
            check::<Word>(w, &mut rng);
        }
        for w in 65..=96 {
            check::<WordAndHalf>(w, &mut rng);
        }
        for w in 97..=128 {
            check::<Wide>(w, &mut rng);
        }
    }
}
