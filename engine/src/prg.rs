//! Pairwise pseudo-random streams: AES-128 in counter mode over a key derived from a seed
//! that exactly two parties hold.
//!
//! AES-128 with AES-NI or VAES (detected at run time by the `aes` crate) produces several
//! GB/s per core; SHAKE runs ~400 MB/s here, far too slow for the AND gates, which need 16
//! bytes of stream per 64 gates. The stream is addressed by block counter, so disjoint
//! counter ranges can be generated on different threads and still match bit for bit
//! what the other holder of the seed generates.

use aes::cipher::consts::U16;
use aes::cipher::{
    Array, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser,
    KeyInit, ParBlocks,
};
use aes::Aes128;
use sha3::{Digest, Sha3_256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte seed shared by two parties. Wiped on drop; `Debug` does not show it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Seed(pub(crate) [u8; 32]);

impl Seed {
    /// A fresh seed from the operating system's generator.
    pub fn random() -> Self {
        let mut s = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
        Seed(s)
    }

    /// A seed from bytes received from the other holder.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Seed(bytes)
    }

    /// The seed's bytes, to send to the other holder.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// What a stream is used for; each purpose gets its own AES key from the seed, so that
/// two sub-protocols never consume the same key stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Zero-sharings for AND gates.
    ZeroSharing,
    /// Permutations of the oblivious shuffle.
    Permutation,
    /// Fresh share masks (shuffle re-sharing).
    Mask,
    /// Random sharings for verification triples (malicious mode).
    TripleShares,
    /// Keys of the keyed hashes that check verification openings and zero tests.
    Check,
    /// Public bucketing permutations, from a jointly tossed coin.
    Bucketing,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ZeroSharing => b"acs-engine/prg/zero-sharing/v1",
            Purpose::Permutation => b"acs-engine/prg/permutation/v1",
            Purpose::Mask => b"acs-engine/prg/mask/v1",
            Purpose::TripleShares => b"acs-engine/prg/triple-shares/v1",
            Purpose::Check => b"acs-engine/prg/check/v1",
            Purpose::Bucketing => b"acs-engine/prg/bucketing/v1",
        }
    }
}

/// Counter-mode generation inside the cipher's backend: the round keys are loaded once
/// per call, and blocks always go through the backend's widest parallel path (64 blocks
/// with VAES-512, 8 with AES-NI), including the last, partial batch, whose unused blocks
/// are discarded. (A batch smaller than the parallel width would otherwise be encrypted
/// one block at a time, several times slower per block.)
struct CtrFill<'a> {
    start: u64,
    out: &'a mut [u64],
}

impl BlockSizeUser for CtrFill<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for CtrFill<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let mut blocks = ParBlocks::<B>::default();
        let per_batch = 2 * blocks.len();
        let mut counter = self.start;
        for chunk in self.out.chunks_mut(per_batch) {
            // Whole 16-byte stores and loads: per-byte copies here cost as much as the
            // cipher itself.
            for b in blocks.iter_mut() {
                b.copy_from_slice(&u128::from(counter).to_le_bytes());
                counter += 1;
            }
            backend.encrypt_par_blocks_inplace(&mut blocks);
            let tail = (chunk.len() - 1) / 2;
            let mut pairs = chunk.chunks_exact_mut(2);
            for (pair, b) in (&mut pairs).zip(blocks.iter()) {
                let v = u128::from_le_bytes(b.0);
                pair[0] = v as u64;
                pair[1] = (v >> 64) as u64;
            }
            if let [last] = pairs.into_remainder() {
                let b = &blocks[tail];
                *last = u128::from_le_bytes(b.0) as u64;
            }
        }
    }
}

/// A counter-mode stream. Both holders of a seed create it with the same purpose and
/// consume it in the same order, so they see the same bits.
pub struct Prg {
    cipher: Aes128,
    /// Next unused block counter.
    next_block: u64,
}

impl std::fmt::Debug for Prg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prg")
            .field("next_block", &self.next_block)
            .finish_non_exhaustive()
    }
}

impl Prg {
    /// The stream for `purpose` under `seed`.
    pub fn new(seed: &Seed, purpose: Purpose) -> Self {
        let mut h = Sha3_256::new();
        h.update(purpose.label());
        h.update(seed.0);
        let mut digest = h.finalize();
        let key: [u8; 16] = digest[..16].try_into().expect("16 bytes");
        let cipher = Aes128::new(&Array::from(key));
        digest.as_mut_slice().zeroize();
        Prg {
            cipher,
            next_block: 0,
        }
    }

    /// Reserves the next `words` 64-bit words of the stream and returns the block
    /// counter they start at; generate them with [`Prg::fill_at`].
    pub fn reserve(&mut self, words: usize) -> u64 {
        let start = self.next_block;
        self.next_block += words.div_ceil(2) as u64;
        start
    }

    /// Writes the stream starting at block `start` into `out` (two words per block).
    /// Stateless, so threads may fill disjoint ranges of one reservation.
    pub fn fill_at(&self, start: u64, out: &mut [u64]) {
        if !out.is_empty() {
            self.cipher.encrypt_with_backend(CtrFill { start, out });
        }
    }

    /// Fills `out` with the next words of the stream.
    pub fn fill(&mut self, out: &mut [u64]) {
        let start = self.reserve(out.len());
        self.fill_at(start, out);
    }

    /// Fills `out` with the next words of the stream, on all rayon threads.
    pub fn fill_par(&mut self, out: &mut [u64]) {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        let start = self.reserve(out.len());
        let this = &*self;
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| this.fill_at(start + (c * CHUNK / 2) as u64, chunk));
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates), as `perm[new] = old`.
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut perm = Vec::new();
        self.permutation_into(n, &mut perm, &mut Vec::new());
        perm
    }

    /// [`Prg::permutation`] into `perm`, with `words` as scratch (both reused, so a caller
    /// drawing many permutations allocates once).
    pub fn permutation_into(&mut self, n: usize, perm: &mut Vec<u32>, words: &mut Vec<u64>) {
        assert!(n <= u32::MAX as usize, "permutation too large");
        perm.clear();
        perm.extend(0..n as u32);
        if n < 2 {
            return;
        }
        // Draw all randomness in one go: each index i uses a 64-bit word and Lemire's
        // method with rejection. The division that sets the rejection threshold is only
        // needed when the low half falls below the bound (rarely, for bounds far below
        // 2^64); the decisions are exactly those of always computing it.
        words.clear();
        words.resize(n, 0);
        self.fill(words);
        for i in (1..n).rev() {
            let bound = (i + 1) as u64;
            let mut m = (words[i] as u128) * (bound as u128);
            if (m as u64) < bound {
                let threshold = bound.wrapping_neg() % bound;
                while (m as u64) < threshold {
                    let mut w = [0u64; 1];
                    self.fill(&mut w);
                    m = (w[0] as u128) * (bound as u128);
                }
            }
            let j = (m >> 64) as usize;
            perm.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_purpose_give_the_same_stream() {
        let seed = Seed::from_bytes([7; 32]);
        let mut a = Prg::new(&seed, Purpose::ZeroSharing);
        let mut b = Prg::new(&seed, Purpose::ZeroSharing);
        let mut x = vec![0u64; 1001];
        let mut y = vec![0u64; 1001];
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x[0], x[1]);
        let mut c = Prg::new(&seed, Purpose::Mask);
        let mut z = vec![0u64; 1001];
        c.fill(&mut z);
        assert_ne!(x, z);
    }

    #[test]
    fn split_fills_match_one_fill() {
        let seed = Seed::from_bytes([9; 32]);
        let mut a = Prg::new(&seed, Purpose::Mask);
        let mut whole = vec![0u64; 300];
        a.fill(&mut whole);
        let b = Prg::new(&seed, Purpose::Mask);
        let mut left = vec![0u64; 100];
        let mut right = vec![0u64; 200];
        b.fill_at(0, &mut left);
        b.fill_at(50, &mut right);
        assert_eq!(&whole[..100], &left[..]);
        assert_eq!(&whole[100..], &right[..]);
    }

    #[test]
    fn stream_is_aes_of_the_block_counter() {
        // The definition, one block at a time: word 2c + k is bytes 8k.. of AES(c), with
        // the counter little-endian in the first 8 bytes and zeros after.
        let seed = Seed::from_bytes([5; 32]);
        let prg = Prg::new(&seed, Purpose::ZeroSharing);
        for (start, len) in [
            (0u64, 1usize),
            (0, 2),
            (3, 7),
            (10, 128),
            (1, 129),
            (77, 1000),
        ] {
            let mut got = vec![0u64; len];
            prg.fill_at(start, &mut got);
            for (i, w) in got.iter().enumerate() {
                let mut block = Array::<u8, U16>::default();
                block[..8].copy_from_slice(&(start + (i / 2) as u64).to_le_bytes());
                prg.cipher.encrypt_block(&mut block);
                let off = 8 * (i % 2);
                let want = u64::from_le_bytes(block[off..off + 8].try_into().unwrap());
                assert_eq!(*w, want, "start {start} len {len} word {i}");
            }
        }
    }

    #[test]
    fn permutation_is_a_permutation_and_matches_between_holders() {
        let seed = Seed::from_bytes([3; 32]);
        let mut a = Prg::new(&seed, Purpose::Permutation);
        let mut b = Prg::new(&seed, Purpose::Permutation);
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let p = a.permutation(n);
            assert_eq!(p, b.permutation(n));
            let mut s = p.clone();
            s.sort_unstable();
            assert_eq!(s, (0..n as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn seed_debug_is_opaque() {
        assert_eq!(format!("{:?}", Seed::from_bytes([1; 32])), "Seed(..)");
    }
}
