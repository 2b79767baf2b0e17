//! Kernels with a SIMD build chosen at run time: the one module of the engine allowed
//! `unsafe`, which it needs only to call a function compiled for a CPU feature after
//! checking that the CPU has it.
//!
//! Each kernel here is the portable code of its home module, compiled a second time with
//! `#[target_feature(enable = "avx2")]` so that the compiler's vectorizer uses 256-bit
//! registers (the default x86-64 target allows SSE2 only, and the committed build
//! settings name no `target-cpu`). The binary runs on any x86-64: without AVX2, or on
//! another architecture, the portable build runs. `tests` compares both builds on random
//! inputs.
#![allow(unsafe_code)]

use crate::transpose::transpose64_portable;

/// [`crate::transpose::transpose64`]: the AVX2 build where the CPU has AVX2.
#[inline]
pub fn transpose64(a: &mut [u64; 64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: `transpose64_avx2` is safe code compiled with AVX2 enabled; its only
            // requirement is that the CPU running it supports AVX2, checked just above
            // (the standard library caches the CPUID result).
            unsafe { transpose64_avx2(a) };
            return;
        }
    }
    transpose64_portable(a)
}

/// [`transpose64_portable`] compiled for AVX2. Callers must make sure the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose64_avx2(a: &mut [u64; 64]) {
    transpose64_portable(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn simd_and_portable_transposes_agree_on_random_matrices() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let m: [u64; 64] = std::array::from_fn(|_| rng.gen());
            let (mut fast, mut slow) = (m, m);
            transpose64(&mut fast);
            transpose64_portable(&mut slow);
            assert_eq!(fast, slow);
            // And it is a transposition: bit r of word c is bit c of word r.
            for r in 0..64 {
                for c in 0..64 {
                    assert_eq!((fast[c] >> r) & 1, (m[r] >> c) & 1);
                }
            }
        }
    }
}
