//! The check of a shuffle in malicious mode: a MAC that moves with the rows.
//!
//! A shuffle step's message is computed by one party alone (see [`crate::shuffle`]), so
//! neither redundancy nor the AND verification covers it: a corrupt party could add an
//! error of its choice to rows it can follow (it knows one or two of the permutations)
//! and, once a column is opened, learn who received whose message. Following the
//! established fix for replicated three-party shuffles (Asharov, Hamada, Ikarashi,
//! Kikuchi, Nof, Pinkas, Takahashi and Tomida, CCS 2022; Araki, Furukawa, Ohara, Pinkas,
//! Rosemarin and Tsuchida, CCS 2021), every row carries a tag under a secret key, the
//! shuffle moves the tags with the rows, and a check after the shuffle, before any
//! shuffled value is opened, aborts unless rows and tags still agree.
//!
//! # Construction
//!
//! Work in GF(2^128) as POLYVAL (RFC 8452) defines it, through the `polyval` crate, so
//! that the hashing runs on CLMUL where the CPU has it. XOR shares of 128-bit blocks are
//! additive shares of field elements, and a field product is bilinear, so a product of
//! two replicated sharings costs what an AND gate costs: local cross terms and one
//! re-shared value.
//!
//! - **Key.** `κ` is a replicated sharing of a POLYVAL key: component `κ_j` is drawn
//!   from the stream of the two parties that hold component `j` of every sharing (free).
//!   A row of `w` words is `m = ⌈w/2⌉` blocks `X_1..X_m`, and `P_H(X) = Σ_b X_b·H'^(m-b+1)`
//!   is POLYVAL under `H` (`H' = H·x^-128`, RFC 8452). The MAC of a row is
//!   `t = Σ_j P_{κ_j}(X)`, linear in `X` with the secret coefficients
//!   `c_b = Σ_j κ_j'^(m-b+1)`.
//! - **Tags** (one round). Party `i` holds `X_i, X_{i+1}` and `κ_i, κ_{i+1}`; it computes
//!   `P_{κ_i}(X_i ^ X_{i+1}) ^ P_{κ_{i+1}}(X_i)` (its three cross terms of the product),
//!   adds a zero-sharing and passes it to party `i-1`: a replicated sharing of `t` per
//!   row, two words, which the shuffle moves under the same permutations as the rows.
//! - **Check** (four rounds). After the shuffle a coin is tossed (the coin of
//!   [`crate::verify`]: commit, reveal with echoes); it gives a public key `R_c` per chunk
//!   of rows, hence public coefficients `ρ_k = R_c'^(n_c-k+1)` for the rows `k` of chunk
//!   `c`. With `Y_b = Σ_k ρ_k·X_{k,b}` (local, per component) the parties compute shares
//!   of `D = Σ_k ρ_k·t_k ^ Σ_b c_b·Y_b`: the first sum locally from the first tag
//!   component, the second as the product above, one value per party. `D` is re-shared
//!   (one round) and tested for zero with the keyed-hash zero check of
//!   [`crate::verify`], which also carries any coin failure: every honest party aborts
//!   in the same round. `D` itself is never opened.
//!
//! # Soundness
//!
//! Whatever a corrupt party sends in the shuffle (or in the tag and check rounds), the
//! honest parties end with rows `Y_k = X_{π(k)} ^ e_k` and tags `t_{π(k)} ^ f_k` for
//! errors `e`, `f` fixed before the coin, independent of `κ`: `κ` never leaves its shares,
//! and the component the corrupt party lacks is uniform to it. Its deviation in the
//! check itself is a further error `δ` on `D`, chosen after the coin. Then
//! `D = Σ_k ρ_k (f_k ^ Σ_b c_b e_{k,b}) ^ δ`. If some row is wrong (`e ≠ 0`):
//! (i) `E_b = Σ_k ρ_k e_{k,b}` is non-zero for some `b` except with probability at most
//! `n_c / 2^128` over the chunk's `R_c` (a non-zero polynomial of degree `≤ n_c`);
//! (ii) given `E ≠ 0`, `D = 0` needs `Σ_b c_b E_b` to equal a value the corrupt party
//! knows; as a function of the unknown component `κ_u` this is a non-zero polynomial
//! of degree `≤ m`, so it holds with probability at most `m / 2^128`. The zero check adds
//! the keyed hash's `2^-63` for each of its two comparisons. A wrong tag with right rows
//! (`e = 0`) may pass: harmless, the rows are right. So a wrong shuffle passes a check
//! with probability at most `2^-62 + (n_c + m) / 2^128 < 2^-61`, counted into
//! [`crate::verify::VerifyStats`] as `mac_error`. A permutation the corrupt party applies
//! instead of its own (rows moved, none altered) is not an error at all: the honest
//! party's unknown permutation still makes the composition uniform.
//!
//! # Cost
//!
//! Per shuffle in malicious mode: two tag words per row through the shuffle (for the
//! round's 4-word control rows half as much again, for its 37-word payload rows about
//! 5 %), five rounds (one for the tags, two for the coin, one re-share, one zero
//! check), and per party about `2w` block multiplications per row (two POLYVAL passes
//! before, two column passes after). Semi-honest mode does none of it.

use crate::channel::Peer;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::Shared;
use crate::verify::{hash_key_words, hash_keys};
use polyval::universal_hash::UniversalHash;
use polyval::{Block, Key, Polyval};
use rayon::prelude::*;
use sha3::{Digest, Sha3_256};
use std::ops::Range;
use zeroize::Zeroize;

/// Words of a row's tag (one GF(2^128) element).
pub(crate) const MAC_WORDS: usize = 2;

/// Rows per chunk of the check: each chunk has its own public key `R_c`, so the column
/// sums run in parallel over chunks.
const CHECK_CHUNK_ROWS: usize = 1 << 12;

/// This party's two components of the MAC key: `κ_i` (shared with the previous party)
/// and `κ_{i+1}` (with the next). `Polyval` wipes its key on drop.
pub(crate) struct MacKey {
    a: Polyval,
    b: Polyval,
}

fn polyval_key(words: &mut [u64; 2]) -> Polyval {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&words[0].to_le_bytes());
    bytes[8..].copy_from_slice(&words[1].to_le_bytes());
    let p = Polyval::new(&Key::from(bytes));
    bytes.zeroize();
    words.zeroize();
    p
}

/// Block `b` of a row: words `2b` and `2b + 1` (zero past the row's end), each through
/// `f`.
fn block(row: &[u64], b: usize, f: impl Fn(usize) -> u64) -> Block {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&f(2 * b).to_le_bytes());
    if 2 * b + 1 < row.len() {
        bytes[8..].copy_from_slice(&f(2 * b + 1).to_le_bytes());
    }
    Block::from(bytes)
}

fn to_u128(tag: Block) -> u128 {
    let bytes: [u8; 16] = tag.into();
    u128::from_le_bytes(bytes)
}

/// `P_{κ_i}(X_i ^ X_{i+1}) ^ P_{κ_{i+1}}(X_i)` for one row given as its two components,
/// with `buf` as scratch. Each hash takes all of the row's blocks in one call, so POLYVAL
/// runs its four-block parallel path (a chain of one-block calls is several times slower).
fn cross_terms(key: &MacKey, a: &[u64], b: &[u64], buf: &mut Vec<Block>) -> u128 {
    let m = a.len().div_ceil(2);
    buf.clear();
    buf.extend((0..m).map(|k| block(a, k, |w| a[w] ^ b[w])));
    let mut pa = key.a.clone();
    pa.update(buf);
    buf.clear();
    buf.extend((0..m).map(|k| block(a, k, |w| a[w])));
    let mut pb = key.b.clone();
    pb.update(buf);
    buf.zeroize_blocks();
    to_u128(pa.finalize()) ^ to_u128(pb.finalize())
}

/// Wiping a scratch vector of blocks (rows of shares pass through it).
trait ZeroizeBlocks {
    fn zeroize_blocks(&mut self);
}

impl ZeroizeBlocks for Vec<Block> {
    fn zeroize_blocks(&mut self) {
        for b in self.iter_mut() {
            b.as_mut_slice().zeroize();
        }
    }
}

/// Bytes of rows that [`column_sums`] reads per tile: the tile stays in L2 while each
/// of its columns is gathered.
const TILE_BYTES: usize = 1 << 16;

/// Columns (blocks) per task of a check's column sums: wide rows give several tasks
/// even when all rows are in one chunk.
const GROUP_BLOCKS: usize = 64;

/// The hashes under `key` of columns `cols` of `rows` (rows of `row_words` words), into
/// `out` (one per column), a tile of rows at a time: each column of the tile is
/// gathered into `buf` and hashed in one call (POLYVAL's four-block parallel path).
/// Gathering a column of all rows at once reads one block per row-length stride, which
/// for wide rows (8 KiB payload rows in the demo) misses the cache and the TLB at every
/// block; narrow rows get tiles of thousands of rows, so their calls stay long.
fn column_sums(
    key: &Polyval,
    rows: &[u64],
    row_words: usize,
    cols: Range<usize>,
    buf: &mut Vec<Block>,
    out: &mut [u128],
) {
    let tile_rows = (TILE_BYTES / (8 * row_words)).max(4);
    let mut acc: Vec<Polyval> = cols.clone().map(|_| key.clone()).collect();
    for tile in rows.chunks(tile_rows * row_words) {
        for (p, b) in acc.iter_mut().zip(cols.clone()) {
            buf.clear();
            buf.extend(
                tile.chunks_exact(row_words)
                    .map(|row| block(row, b, |w| row[w])),
            );
            p.update(buf);
        }
    }
    buf.zeroize_blocks();
    for (o, p) in out.iter_mut().zip(acc) {
        *o = to_u128(p.finalize());
    }
}

/// The public key of chunk `c` of a check, from the coin.
fn chunk_key(coin: &[u8; 32], c: usize) -> Polyval {
    let mut h = Sha3_256::new();
    h.update(b"acs/shuffle-mac/chunk/v1");
    h.update(coin);
    h.update((c as u64).to_le_bytes());
    let d: [u8; 32] = h.finalize().into();
    let bytes: [u8; 16] = d[..16].try_into().expect("16 bytes");
    Polyval::new(&Key::from(bytes))
}

/// Column sums of one chunk: `Y_b` of both components and `Σ ρ_k t_k` of the first
/// tag component.
struct Sums {
    ya: Vec<u128>,
    yb: Vec<u128>,
    tag: u128,
}

impl Sums {
    fn xor(mut self, other: Sums) -> Sums {
        for (x, y) in self.ya.iter_mut().zip(&other.ya) {
            *x ^= y;
        }
        for (x, y) in self.yb.iter_mut().zip(&other.yb) {
            *x ^= y;
        }
        self.tag ^= other.tag;
        self
    }
}

impl Party {
    /// Draws this party's components of a fresh MAC key (no communication).
    pub(crate) fn mac_key(&mut self) -> MacKey {
        let mut a = [0u64; 2];
        let mut b = [0u64; 2];
        self.rand.prev.fill(&mut a);
        self.rand.next.fill(&mut b);
        MacKey {
            a: polyval_key(&mut a),
            b: polyval_key(&mut b),
        }
    }

    /// The rows' tags under `key`, as a replicated sharing of [`MAC_WORDS`] words a row.
    /// One round.
    pub(crate) fn mac_tags(
        &mut self,
        key: &MacKey,
        x: &Shared,
        row_words: usize,
    ) -> Result<Shared, EngineError> {
        let clock = std::time::Instant::now();
        let n = x.len() / row_words;
        let mut z = vec![0u64; MAC_WORDS * n];
        z.par_chunks_mut(MAC_WORDS)
            .zip(x.a.par_chunks(row_words).zip(x.b.par_chunks(row_words)))
            .with_min_len(64)
            .for_each_init(Vec::new, |buf, (t, (a, b))| {
                let h = cross_terms(key, a, b, buf);
                t[0] = h as u64;
                t[1] = (h >> 64) as u64;
            });
        self.add_zero_sharing(&mut z);
        let b = self.exchange_words(Peer::Prev, &z, Peer::Next)?;
        self.vstats.mac_seconds += clock.elapsed().as_secs_f64();
        Ok(Shared { a: z, b })
    }

    /// Checks that the shuffled `rows` still agree with their `tags`; every honest
    /// party returns [`EngineError::VerificationFailed`] in the same round if not. Four
    /// rounds.
    pub(crate) fn mac_check(
        &mut self,
        key: MacKey,
        rows: &Shared,
        tags: &Shared,
        row_words: usize,
    ) -> Result<(), EngineError> {
        let clock = std::time::Instant::now();
        let (coin, failure) = self.toss_coin()?;
        let m = row_words.div_ceil(2);
        let n = rows.len() / row_words;
        let chunks = n.div_ceil(CHECK_CHUNK_ROWS);
        let empty = || Sums {
            ya: vec![0; m],
            yb: vec![0; m],
            tag: 0,
        };
        let groups = m.div_ceil(GROUP_BLOCKS);
        // Tasks over (chunk, group of columns); each fills its columns of the sums.
        let sums = (0..chunks * groups)
            .into_par_iter()
            .map_init(Vec::new, |buf, task| {
                let (c, g) = (task / groups, task % groups);
                let r = chunk_key(&coin, c);
                let lo = c * CHECK_CHUNK_ROWS;
                let hi = n.min(lo + CHECK_CHUNK_ROWS);
                let cols = g * GROUP_BLOCKS..m.min((g + 1) * GROUP_BLOCKS);
                let mut sums = empty();
                let (a, b) = (
                    &rows.a[lo * row_words..hi * row_words],
                    &rows.b[lo * row_words..hi * row_words],
                );
                let (ya, yb) = (&mut sums.ya[cols.clone()], &mut sums.yb[cols.clone()]);
                column_sums(&r, a, row_words, cols.clone(), buf, ya);
                column_sums(&r, b, row_words, cols, buf, yb);
                if g == 0 {
                    let t = &tags.a[lo * MAC_WORDS..hi * MAC_WORDS];
                    column_sums(
                        &r,
                        t,
                        MAC_WORDS,
                        0..1,
                        buf,
                        std::slice::from_mut(&mut sums.tag),
                    );
                }
                sums
            })
            .reduce(empty, Sums::xor);
        // Σ_b c_b·Y_b: this party's cross terms of the product, on the vector Y.
        let ya: Vec<u64> = sums
            .ya
            .iter()
            .flat_map(|y| [*y as u64, (y >> 64) as u64])
            .collect();
        let yb: Vec<u64> = sums
            .yb
            .iter()
            .flat_map(|y| [*y as u64, (y >> 64) as u64])
            .collect();
        // All 2m words: a column sum of padded blocks is a full field element.
        let d = sums.tag ^ cross_terms(&key, &ya, &yb, &mut Vec::new());
        drop(key);
        let mut z = vec![d as u64, (d >> 64) as u64];
        self.add_zero_sharing(&mut z);
        let b = self.exchange_words(Peer::Prev, &z, Peer::Next)?;
        let shared_d = Shared { a: z, b };
        let n_keys = hash_key_words(MAC_WORDS);
        let start_next = self.check.next.reserve(n_keys);
        let start_prev = self.check.prev.reserve(n_keys);
        let (mut key_next, mut key_prev) = (Vec::new(), Vec::new());
        hash_keys(&self.check.next, start_next, n_keys, &mut key_next);
        hash_keys(&self.check.prev, start_prev, n_keys, &mut key_prev);
        let result = self.zero_check(
            &shared_d,
            [&key_next, &key_prev],
            &coin,
            failure,
            "a shuffle step is wrong (MAC check)",
        );
        self.vstats.shuffle_checks += 1;
        self.vstats.mac_seconds += clock.elapsed().as_secs_f64();
        self.vstats.hash_checks += 2;
        self.vstats.mac_error += 2.0 * crate::verify::HASH_LOG2_ERROR.exp2()
            + ((CHECK_CHUNK_ROWS.min(n.max(1)) + m) as f64) * (-128f64).exp2();
        self.vstats.error_bound =
            self.vstats.chunk_error_max + self.vstats.hash_error + self.vstats.mac_error;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u64) -> Polyval {
        polyval_key(&mut [seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), seed ^ 77])
    }

    fn hash(k: &Polyval, xs: &[u128]) -> u128 {
        let mut p = k.clone();
        for x in xs {
            p.update(&[Block::from(x.to_le_bytes())]);
        }
        to_u128(p.finalize())
    }

    #[test]
    fn polyval_is_linear_and_its_keys_commute() {
        // The check relies on both: tags are linear in the rows, and the column sums
        // under R may be taken before or after the tags under κ.
        let (a, b, r) = (key(1), key(2), key(3));
        let (x, y) = (
            0x1234_5678_9abc_def0_1111_2222_3333_4444u128,
            0x9999u128 << 70,
        );
        assert_eq!(hash(&a, &[x ^ y, y]), hash(&a, &[x, y]) ^ hash(&a, &[y, 0]));
        assert_eq!(hash(&a, &[hash(&b, &[x])]), hash(&b, &[hash(&a, &[x])]));
        let rows = [[x, y], [y, x ^ 5]];
        let tags: Vec<u128> = rows.iter().map(|row| hash(&a, row)).collect();
        let columns = [
            hash(&r, &[rows[0][0], rows[1][0]]),
            hash(&r, &[rows[0][1], rows[1][1]]),
        ];
        assert_eq!(hash(&r, &tags), hash(&a, &columns));
    }

    /// `D` of the check, summed over the three parties, for rows given as three
    /// components and tags computed from `tag_rows` (the rows before any error).
    fn difference(comps: &[Vec<u64>], tag_comps: &[Vec<u64>], w: usize) -> u128 {
        let n = comps[0].len() / w;
        let keys: Vec<MacKey> = (0..3)
            .map(|i| MacKey {
                a: key(i as u64 + 1),
                b: key((i as u64 + 1) % 3 + 1),
            })
            .collect();
        let mut tags = vec![0u128; n];
        for i in 0..3 {
            let (a, b) = (&tag_comps[i], &tag_comps[(i + 1) % 3]);
            for (k, t) in tags.iter_mut().enumerate() {
                *t ^= cross_terms(
                    &keys[i],
                    &a[k * w..(k + 1) * w],
                    &b[k * w..(k + 1) * w],
                    &mut Vec::new(),
                );
            }
        }
        let r = key(99);
        let column_sums = |c: &Vec<u64>| -> Vec<u64> {
            let mut acc = vec![r.clone(); w.div_ceil(2)];
            for row in c.chunks(w) {
                for (b, p) in acc.iter_mut().enumerate() {
                    p.update(&[block(row, b, |x| row[x])]);
                }
            }
            acc.into_iter()
                .map(|p| to_u128(p.finalize()))
                .flat_map(|y| [y as u64, (y >> 64) as u64])
                .collect()
        };
        let mut d = hash(&r, &tags);
        for i in 0..3 {
            let (ya, yb) = (column_sums(&comps[i]), column_sums(&comps[(i + 1) % 3]));
            d ^= cross_terms(&keys[i], &ya, &yb, &mut Vec::new());
        }
        d
    }

    #[test]
    fn honest_rows_cancel_and_one_wrong_bit_does_not() {
        let mut s = 1u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            s
        };
        for (n, w) in [(1usize, 1usize), (5, 2), (7, 3), (3, 37)] {
            let comps: Vec<Vec<u64>> = (0..3)
                .map(|_| (0..n * w).map(|_| rnd()).collect())
                .collect();
            assert_eq!(difference(&comps, &comps, w), 0, "{n} rows of {w}");
            for word in [0, n * w - 1] {
                let mut wrong = comps.clone();
                wrong[1][word] ^= 1 << 63;
                assert_ne!(
                    difference(&wrong, &comps, w),
                    0,
                    "{n} rows of {w}, word {word}"
                );
            }
        }
    }
}
