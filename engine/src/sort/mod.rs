//! Sorting secret-shared records by a secret-shared key.
//!
//! - [`quicksort`]: the oblivious quicksort of Hamada et al. (ICISC 2012) as engineered by
//!   Bogdanov et al. (2014): make keys unique, shuffle obliviously, then quicksort with
//!   every recursion level's pivot comparisons as one batched circuit, opening only the
//!   comparison bits. Payloads move once, by the public permutation the sort reveals
//!   relative to the shuffled order.
//! - [`bitonic_sort`]: Batcher's bitonic network, fully data-oblivious (opens nothing),
//!   as the baseline.

mod bitonic;
mod level_key;
mod quick;

pub use bitonic::bitonic_sort;
pub use quick::{quicksort, quicksort_distinct};

use crate::share::{Shared, SharedKeys};

/// A sorted table.
#[derive(Debug)]
pub struct Sorted {
    /// Keys, ascending.
    pub keys: SharedKeys,
    /// Payload rows (`payload_words` each), following their keys.
    pub payload: Shared,
    /// Levels of quicksort recursion, or stages of the bitonic network.
    pub levels: usize,
}

/// Bits needed to tell `n` positions apart (at least 1).
pub fn index_bits(n: usize) -> usize {
    if n <= 2 {
        1
    } else {
        (usize::BITS - (n - 1).leading_zeros()) as usize
    }
}

/// Mask of the low `w` bits.
pub(crate) fn low_mask(w: usize) -> u128 {
    if w >= 128 {
        u128::MAX
    } else {
        (1u128 << w) - 1
    }
}
