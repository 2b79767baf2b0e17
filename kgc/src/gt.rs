//! Canonical byte encoding of pairing values (elements of `Gt`).
//!
//! bls12_381 0.9.0 gives `Gt` no byte encoding (upstream issue #10) and keeps its `Fp12`
//! private. The only public view of its coordinates is `Debug`, which prints each of the
//! twelve `Fp` coefficients as `0x` + 96 hex digits of its canonical big-endian bytes
//! (`Fp::to_bytes`, i.e. out of Montgomery form and fully reduced). We stream that output
//! into a fixed buffer (no heap copy of the secret) and check the surrounding text against
//! the exact shape 0.9.0 prints, so a change in the dependency fails loudly instead of
//! silently changing every derived key. The version is pinned with `=0.9.0` in the
//! workspace `Cargo.toml`, and `tests/known_answers.rs` pins the bytes of `e(g1, g2)`.
//!
//! **The encoding** (576 bytes): with `Fp12 = Fp6[w]/(w^2 - v)`, `Fp6 = Fp2[v]/(v^3 - (u+1))`,
//! `Fp2 = Fp[u]/(u^2 + 1)`, an element `a = a0 + a1·w`, `ai = ai0 + ai1·v + ai2·v^2`,
//! `aij = aij0 + aij1·u` is written as the twelve 48-byte big-endian integers
//! `a000 a001 a010 a011 a020 a021 a100 a101 a110 a111 a120 a121`.
//!
//! Timing: formatting hex digits in `core` is close to, but not provably, constant-time.
//! The value is encoded once per (user, server) pair when the long-term key is derived, not
//! per message, so an observer gets at most one timing sample per secret.

use core::fmt::{self, Write};

use bls12_381::Gt;
use zeroize::{Zeroize, Zeroizing};

/// Length of the canonical encoding of a `Gt` element.
pub const GT_BYTES: usize = 576;

/// What `format!("{:?}", gt)` looks like in bls12_381 0.9.0, each coefficient shown as `#`.
const SHAPE: &[u8] =
    b"Gt(# + #*u + (# + #*u)*v + (# + #*u)*v^2 + (# + #*u + (# + #*u)*v + (# + #*u)*v^2)*w)";

struct Sink {
    out: [u8; GT_BYTES],
    /// Hex digits written into `out` so far.
    digits: usize,
    /// Inside a coefficient: hex digits still expected for it.
    pending: usize,
    /// Saw a `0` that may start `0x`.
    zero: bool,
    shape: [u8; SHAPE.len()],
    shape_len: usize,
    bad: bool,
}

impl Sink {
    fn push_shape(&mut self, c: u8) {
        if self.shape_len < self.shape.len() {
            self.shape[self.shape_len] = c;
            self.shape_len += 1;
        } else {
            self.bad = true;
        }
    }

    fn byte(&mut self, c: u8) {
        if self.pending > 0 {
            let nibble = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => {
                    self.bad = true;
                    return;
                }
            };
            if self.digits >= 2 * GT_BYTES {
                self.bad = true;
                return;
            }
            let i = self.digits / 2;
            self.out[i] = (self.out[i] << 4) | nibble;
            self.digits += 1;
            self.pending -= 1;
            return;
        }
        if self.zero {
            self.zero = false;
            if c == b'x' {
                self.pending = 96;
                self.push_shape(b'#');
                return;
            }
            self.push_shape(b'0');
        }
        if c == b'0' {
            self.zero = true;
        } else {
            self.push_shape(c);
        }
    }
}

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|c| self.byte(c));
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.out.zeroize();
    }
}

/// Encodes a `Gt` element canonically (see the module docs). The result is wiped on drop.
///
/// # Panics
/// Only if the pinned bls12_381 version's `Debug` output changed shape, a build
/// configuration error that the known-answer tests catch.
pub fn gt_to_bytes(value: &Gt) -> Zeroizing<[u8; GT_BYTES]> {
    let mut sink = Sink {
        out: [0; GT_BYTES],
        digits: 0,
        pending: 0,
        zero: false,
        shape: [0; SHAPE.len()],
        shape_len: 0,
        bad: false,
    };
    // Writing into `Sink` never fails; a formatting error would show up as a bad shape.
    let _ = write!(sink, "{value:?}");
    let well_formed = !sink.bad
        && !sink.zero
        && sink.pending == 0
        && sink.digits == 2 * GT_BYTES
        && sink.shape[..sink.shape_len] == *SHAPE;
    assert!(
        well_formed,
        "bls12_381 Gt Debug output changed shape: the canonical Gt encoding needs bls12_381 =0.9.0"
    );
    Zeroizing::new(sink.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bls12_381::{G1Affine, G2Affine, Scalar};

    #[test]
    fn identity_is_one_then_zeros() {
        let bytes = gt_to_bytes(&Gt::identity());
        assert_eq!(bytes[47], 1);
        assert!(bytes[..47].iter().all(|&b| b == 0));
        assert!(bytes[48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn equal_values_encode_equal_and_distinct_differ() {
        let g = bls12_381::pairing(&G1Affine::generator(), &G2Affine::generator());
        let a = g * Scalar::from(6u64);
        let b = (g * Scalar::from(2u64)) * Scalar::from(3u64);
        assert_eq!(*gt_to_bytes(&a), *gt_to_bytes(&b));
        assert_ne!(*gt_to_bytes(&a), *gt_to_bytes(&g));
    }
}
