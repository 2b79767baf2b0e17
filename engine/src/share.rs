//! Replicated 2-out-of-3 boolean shares (Araki et al., CCS 2016), held bitsliced.
//!
//! A secret word vector `x` is split as `x = x_0 ^ x_1 ^ x_2`; party `i` holds
//! `(x_i, x_{i+1})` as [`Shared::a`] and [`Shared::b`]. In a bitsliced layout one `u64`
//! word carries one bit of 64 different elements, so every word operation below serves
//! 64 elements. XOR and NOT are local; AND needs one round (see [`crate::party`]).
//!
//! Users use [`xor_share`] to split their inputs three ways and [`xor_reconstruct`] to
//! rebuild outputs; those run on the user's machine, never inside a party.

use crate::channel::PartyId;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// One party's replicated share of a vector of 64-bit words. Wiped on drop.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Shared {
    /// `x_i`.
    pub a: Vec<u64>,
    /// `x_{i+1}`.
    pub b: Vec<u64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({} words)", self.a.len())
    }
}

impl Shared {
    /// `words` zero words (a valid sharing of zero).
    pub fn zeros(words: usize) -> Self {
        Shared {
            a: vec![0; words],
            b: vec![0; words],
        }
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.a.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    /// This party's share of the public words `c` (`x_0 = c`, `x_1 = x_2 = 0`).
    pub fn public(party: PartyId, c: &[u64]) -> Self {
        let z = vec![0u64; c.len()];
        match party.index() {
            0 => Shared {
                a: c.to_vec(),
                b: z,
            },
            1 => Shared { a: z.clone(), b: z },
            _ => Shared {
                a: z,
                b: c.to_vec(),
            },
        }
    }

    /// `self ^= other`.
    pub fn xor_assign(&mut self, other: &Shared) {
        xor_into(&mut self.a, &other.a);
        xor_into(&mut self.b, &other.b);
    }

    /// `self ^ other`.
    pub fn xor(&self, other: &Shared) -> Shared {
        let mut s = self.clone();
        s.xor_assign(other);
        s
    }

    /// Bitwise complement of the shared value.
    pub fn not(&self, party: PartyId) -> Shared {
        let mut s = self.clone();
        s.not_assign(party);
        s
    }

    /// In-place bitwise complement.
    pub fn not_assign(&mut self, party: PartyId) {
        match party.index() {
            0 => self.a.iter_mut().for_each(|w| *w = !*w),
            2 => self.b.iter_mut().for_each(|w| *w = !*w),
            _ => {}
        }
    }

    /// Words `range` as a new share.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Shared {
        Shared {
            a: self.a[range.clone()].to_vec(),
            b: self.b[range].to_vec(),
        }
    }

    /// Appends `other`'s words.
    pub fn extend(&mut self, other: &Shared) {
        self.a.extend_from_slice(&other.a);
        self.b.extend_from_slice(&other.b);
    }
}

/// The words `party` XORs into its two shares (`a`, `b`) to add a public all-ones word:
/// it lands on `x_0`, which party 0 holds as `a` and party 2 as `b` (a NOT, or a public
/// term of a product).
pub(crate) fn x0_masks(party: PartyId) -> [u64; 2] {
    [
        if party.index() == 0 { u64::MAX } else { 0 },
        if party.index() == 2 { u64::MAX } else { 0 },
    ]
}

/// `dst ^= src`, word by word.
pub fn xor_into(dst: &mut [u64], src: &[u64]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

/// Splits `words` into three XOR shares, for a user to send one to each party.
pub fn xor_share<R: RngCore>(words: &[u64], rng: &mut R) -> [Vec<u64>; 3] {
    let s0: Vec<u64> = words.iter().map(|_| rng.next_u64()).collect();
    let s1: Vec<u64> = words.iter().map(|_| rng.next_u64()).collect();
    let s2 = words
        .iter()
        .zip(s0.iter().zip(&s1))
        .map(|(w, (x, y))| w ^ x ^ y)
        .collect();
    [s0, s1, s2]
}

/// Rebuilds words from the three XOR shares.
pub fn xor_reconstruct(shares: [&[u64]; 3]) -> Vec<u64> {
    shares[0]
        .iter()
        .zip(shares[1].iter().zip(shares[2]))
        .map(|(x, (y, z))| x ^ y ^ z)
        .collect()
}

/// Rebuilds words from the three parties' replicated shares (`x_i` is party `i`'s `a`),
/// checking that the redundant copies agree. For tests, benches and reference checks:
/// no party ever holds all three.
pub fn reconstruct(parts: [&Shared; 3]) -> Vec<u64> {
    for i in 0..3 {
        assert_eq!(
            parts[i].b,
            parts[(i + 1) % 3].a,
            "replicated shares of P{i} and P{} disagree",
            (i + 1) % 3
        );
    }
    xor_reconstruct([&parts[0].a, &parts[1].a, &parts[2].a])
}

/// One party's replicated share of a vector of keys of up to 128 bits, one per element
/// (row layout). Wiped on drop.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SharedKeys {
    /// `x_i`.
    pub a: Vec<u128>,
    /// `x_{i+1}`.
    pub b: Vec<u128>,
}

impl std::fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedKeys({} keys)", self.a.len())
    }
}

impl SharedKeys {
    /// The number of keys.
    pub fn len(&self) -> usize {
        self.a.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    /// Keys as two words each (low, high), row-major.
    pub fn to_words(&self) -> Shared {
        let split = |v: &[u128]| -> Vec<u64> {
            v.iter()
                .flat_map(|k| [*k as u64, (*k >> 64) as u64])
                .collect()
        };
        Shared {
            a: split(&self.a),
            b: split(&self.b),
        }
    }

    /// The inverse of [`SharedKeys::to_words`].
    pub fn from_words(s: &Shared) -> Self {
        let join = |v: &[u64]| -> Vec<u128> {
            v.chunks_exact(2)
                .map(|c| c[0] as u128 | ((c[1] as u128) << 64))
                .collect()
        };
        SharedKeys {
            a: join(&s.a),
            b: join(&s.b),
        }
    }
}

/// Rebuilds keys from the three parties' shares (tests and reference checks only).
pub fn reconstruct_keys(parts: [&SharedKeys; 3]) -> Vec<u128> {
    for i in 0..3 {
        assert_eq!(
            parts[i].b,
            parts[(i + 1) % 3].a,
            "replicated key shares disagree"
        );
    }
    parts[0]
        .a
        .iter()
        .zip(parts[1].a.iter().zip(&parts[2].a))
        .map(|(x, (y, z))| x ^ y ^ z)
        .collect()
}
