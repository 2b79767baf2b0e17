//! Verified computation: security with abort against one malicious party.
//!
//! In [`SecurityMode::Malicious`] every AND gate a party computes is recorded (its two
//! input shares and its output share, word by word) and checked by
//! [`Party::verify_pending`] before anything that depends on it is opened: the quicksort
//! verifies before each level's opening, the shuffle before it starts, and callers must
//! verify before they release a result. In [`SecurityMode::SemiHonest`] nothing is
//! recorded and nothing is checked.
//!
//! # Technique
//!
//! Multiplication triples with cut-and-choose and bucketing, then one sacrifice per gate:
//! Furukawa, Lindell, Nof and Weinstein (Eurocrypt 2017) as optimized by Araki, Barak,
//! Furukawa, Lichter, Lindell, Nof, Ohara, Watzman and Weinstein ("Optimized
//! honest-majority MPC for malicious adversaries", IEEE S&P 2017), applied word-wise to
//! bitsliced replicated shares.
//!
//! 1. **Triples.** The parties draw random replicated sharings `a`, `b` from their
//!    pairwise streams (no communication) and compute `c = a & b` with the semi-honest
//!    AND (one round). A corrupt party can make `c` wrong only by an additive error of its
//!    choice.
//! 2. **Coin.** Commit (SHA3-256 of a fresh 32-byte seed), then reveal, with each party
//!    echoing the commitment it got from the third: the joint seed is fixed only after
//!    every gate and triple of the batch is, and no party can bias it or give the two
//!    others different views of it without being caught.
//! 3. **Cut-and-choose and buckets.** The gates are split into chunks of at most 2^14
//!    buckets (the triples of a chunk, staged in one sequential pass into 3.1 MB of
//!    64-byte lines, stay in cache while they are permuted), `B = 3` for full chunks,
//!    more for small ones. Per chunk of `N` buckets
//!    of `B` triples (`B` and `N` from [`plan_chunks`]), a uniformly random permutation
//!    of its `NB + B` triple words, drawn from the coin (one per chunk size, shared by
//!    the chunks of that size; see Soundness), orders them: the first `B` are opened and checked (`c = a & b`), the
//!    rest form buckets. In each bucket the first triple is checked against each of the
//!    others by sacrifice, and then checks gate `k` of the chunk by sacrifice.
//! 4. **Sacrifice** of `(a, b, c)` to check `(x, y, z)`: open `ρ = x ^ a`, `σ = y ^ b`
//!    (one-time padded by the fresh triple), then `v = z ^ c ^ (σ & a) ^ (ρ & b) ^ (ρ & σ)`
//!    is a sharing of `e_z ^ e_c`, the XOR of the two additive errors; it must be zero.
//! 5. **Checked openings** of `ρ`, `σ` and the opened triples: the share a party misses
//!    comes from its next party, and a keyed hash of it from its previous party (who
//!    holds it too), keyed from the seed of the receiver and the hash sender, unknown to
//!    the value sender.
//! 6. **Zero check** of all `v` at once: each party sends `h(v_i ^ v_{i+1})` to each peer,
//!    keyed with the seed of that pair; the peer compares with `h` of its own copy of
//!    `v_{i+2}`. With one corrupt party, both honest parties compare honest data with
//!    each other, so both detect any non-zero `v`. Each message carries a status byte and
//!    the first bytes of the coin, so a party that saw any failure earlier in the batch
//!    (an opening whose hash did not match, a bad opened triple, a coin-toss
//!    inconsistency) makes every honest party fail here too: all honest parties return
//!    [`EngineError::VerificationFailed`] in the same round.
//!
//! The keyed hash is a two-level NH tree (Black, Halevi, Krawczyk, Krovetz and Rogaway,
//! "UMAC", CRYPTO 1999) over 64-bit words with a 128-bit result, its key drawn from the
//! pair's stream ([`crate::prg::Purpose::Check`]); one key per pair per batch (8 KB plus
//! two words per 1024 hashed) serves every comparison of the batch. The openings here are not declassifications: every opened word is a
//! fresh random triple word or is one-time padded by one, so they are not in the audit
//! log and not in `docs/leakage.md`.
//!
//! Rounds per verification: 4 (triples with commitments, reveal, openings, zero check) for
//! each group of up to 2^19 gate words; a larger batch (the first levels of a 2^20
//! sort, the payload multiplexers of a round) is verified in equal groups, which bounds
//! the memory at about 0.3 GB per party.
//!
//! # Soundness
//!
//! Everything a corrupt party does to the computation is an additive error on the AND
//! shares it sends (it sends nothing else that the honest parties use without a check:
//! openings are checked by the keyed hash, the zero check only compares honest data, and
//! its own stored shares are never used by the honest parties). Bits are independent
//! under word-wise bucketing, so consider one bit position (lane) where some gate is
//! wrong. A chunk passes only if (i) none of the `B` opened triples is wrong, (ii) every
//! bucket is all-wrong or all-right, and (iii) the bucket of each wrong gate is
//! all-wrong (a right triple catches a wrong gate). The wrong triples, fixed before the
//! coin, land in a uniformly random set of slots, so the probability that they fill
//! exactly the required slots is `1 / C(NB + B, t)` for `t` wrong triples; it is largest
//! at `t = B` and at `t = NB` (both `1 / C(NB + B, B)`), and wrong padding buckets
//! (buckets past the last gate) add only lower-order terms. Hence per chunk
//! `ε_chunk ≤ 2 / C(NB + B, B)`, and [`plan_chunks`] picks `N ≥ K` and `B` with
//! `ε_chunk ≤ 2^-41`: a full chunk (`N = 2^14`, `B = 3`) gives `2^-43.2`. Buckets of two
//! would need `2 / C(2N + 2, 2) ≈ 1/N² ≤ 2^-41`, that is one chunk of `N ≥ 1 482 910`
//! (about 2^20.5): tried, and slower at a 2^20 sort than chunks of 2^14 with `B = 3`,
//! because that chunk's permutation and gather leave the cache. (This bound is a
//! factor `N` better than the `N^-(B-1)` of Furukawa et al., whose buckets supply the
//! triples that *compute* the gates, so any all-wrong bucket wins there; here a bucket
//! only *checks* an already computed gate, and an all-wrong bucket at a right gate is
//! caught, so the wrong triples must land exactly on the wrong gates' buckets.)
//!
//! A round runs many chunks, but the adversary gains only if the *first* chunk that
//! holds a wrong gate passes: order the chunks by verification, then by index, and let
//! `c*` be the first with a wrong gate. Whether a chunk holds a wrong gate is fixed when
//! its verification starts, before the coin that permutes it, and that coin is fresh,
//! so conditioned on everything before it, the permutation is uniform and `c*` passes
//! with probability at most `ε_{c*}` over it; an undetected wrong gate needs `c*` to
//! pass. The chunks of one verification that have the same size share one permutation
//! (a hash of the coin and the size): the bound on `c*` uses its own permutation alone,
//! and an undetected wrong gate needs *every* chunk to pass, which is no more likely
//! than `c*` passing, however the chunks' outcomes correlate. Hence the chunk term of a
//! round's error is `max_c ε_c ≤ 2^-41`, however many chunks the round runs (a union
//! bound over chunks, as the previous version used, is needlessly loose). The NH tree
//! collides with probability `≤ 2^-63` for data fixed independently of its key, which
//! is never seen by the corrupt party; these we sum (4 comparisons per verification).
//! A round's soundness error is thus at most `2^-41 + 2^22 · 2^-63 < 2^-40` for up to
//! `2^20` verifications (a 2^20-element sort runs a few hundred). [`VerifyStats`] keeps
//! the largest chunk bound and the sum of the hash bounds (`error_bound` is their sum),
//! so a caller can check it.
//!
//! # Cost
//!
//! For `K` gate words (each 64 AND gates) with buckets of `B`: `BK` triple words (one
//! AND each), `2(B - 1)K + 2K = 2BK` opened words, and NH over those and over `BK` words
//! of `v`. Per gate word a party sends about `3B` words (9 for `B = 3`),
//! against 1 for the gate itself, and draws `10B` stream words (random sharings twice
//! and zero-sharings of the triples) against 2. The triples are generated in one pass
//! (streams, AND and message bytes) that keeps only this party's `c_i`; each chunk's
//! `a` and `b` are drawn again from the streams as it is staged (as fast as writing and
//! reading back 48 bytes a triple, measured, and 40 bytes a triple less memory), bucketed and
//! its shares of ρ and σ computed in one parallel task while it is in cache, and the zero shares run
//! in parallel over ranges of buckets. Large comparison batches reach this with half
//! the gates they would have as prefix trees (`crate::compare`: borrow chains in
//! malicious mode).

use crate::channel::{PartyId, Peer};
use crate::error::EngineError;
use crate::party::{bytes_into_words, words_into_bytes, Party};
use crate::prg::{Prg, Purpose, Seed};
use crate::share::{x0_masks, Shared};
use rayon::prelude::*;
use sha3::{Digest, Sha3_256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Which adversary the computation is secure against.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityMode {
    /// Correct and private if every party follows the protocol; openings are still
    /// cross-checked, but computations are not verified.
    #[default]
    SemiHonest,
    /// Security with abort against one malicious party: every AND gate is verified
    /// before anything that depends on it is opened ([`Party::verify_pending`]).
    Malicious,
}

impl SecurityMode {
    /// `"semi-honest"` or `"malicious"`.
    pub fn name(self) -> &'static str {
        match self {
            SecurityMode::SemiHonest => "semi-honest",
            SecurityMode::Malicious => "malicious",
        }
    }
}

impl std::fmt::Display for SecurityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SecurityMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "semi-honest" => Ok(SecurityMode::SemiHonest),
            "malicious" => Ok(SecurityMode::Malicious),
            _ => Err(format!(
                "unknown security mode {s:?} (semi-honest or malicious)"
            )),
        }
    }
}

/// What the verification has done so far at one party.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct VerifyStats {
    /// Calls of [`Party::verify_pending`] that had gates to verify.
    pub verifications: u64,
    /// AND gate words verified (64 gates each).
    pub gate_words: u64,
    /// Triple words generated (cut-and-choose, buckets and padding).
    pub triple_words: u64,
    /// Bucketing chunks.
    pub chunks: u64,
    /// Keyed-hash comparisons (openings and zero checks, per pair).
    pub hash_checks: u64,
    /// Upper bound on the probability that a wrong gate or shuffle went undetected so
    /// far: `chunk_error_max + hash_error + mac_error` (see the module documentation).
    pub error_bound: f64,
    /// The largest per-chunk bound `2 / C(NB + B, B)` so far.
    pub chunk_error_max: f64,
    /// The sum of the keyed-hash collision bounds so far.
    pub hash_error: f64,
    /// Shuffles checked by their MAC (`shuffle_mac`).
    pub shuffle_checks: u64,
    /// The sum of the shuffle checks' bounds so far (see `shuffle_mac`).
    pub mac_error: f64,
    /// Wall-clock seconds this party spent on shuffle MACs: tags, the check and its
    /// rounds (waiting for the peers included), not the shuffle itself.
    pub mac_seconds: f64,
    /// Wall-clock seconds spent in each phase at this party: triples (generation and
    /// their AND round), coin and bucketing (with each chunk's shares of ρ and σ), openings
    /// (their round and checks, ρ, σ and the cut-and-choose),
    /// zero shares `v`, zero check (these include waiting for the peers).
    pub phase_seconds: [f64; 5],
}

/// Shares of a batch of AND gates, word by word: inputs `x`, `y` and output `z`, each as
/// this party's two replicated shares (`a` = `x_i`, `b` = `x_{i+1}`). The first `len()`
/// words of each column are the batch; the columns keep their full length between
/// batches (stale shares past `len()`), so recording the next batch writes into memory
/// that is already mapped and initialized instead of zero-filling it again. Wiped on
/// drop.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Gates {
    pub(crate) xa: Vec<u64>,
    pub(crate) xb: Vec<u64>,
    pub(crate) ya: Vec<u64>,
    pub(crate) yb: Vec<u64>,
    pub(crate) za: Vec<u64>,
    pub(crate) zb: Vec<u64>,
    n: usize,
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gates({} words)", self.len())
    }
}

impl Gates {
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn cols_mut(&mut self) -> [&mut Vec<u64>; 6] {
        [
            &mut self.xa,
            &mut self.xb,
            &mut self.ya,
            &mut self.yb,
            &mut self.za,
            &mut self.zb,
        ]
    }

    /// Appends gates given as slices of equal length.
    pub(crate) fn push(&mut self, x: (&[u64], &[u64]), y: (&[u64], &[u64]), z: (&[u64], &[u64])) {
        let src = [x.0, x.1, y.0, y.1, z.0, z.1];
        for (dst, s) in self.grow(x.0.len()).into_iter().zip(src) {
            dst.copy_from_slice(s);
        }
    }

    /// Grows the batch by `n` words and returns the new tails of the columns, to be
    /// filled in parallel (their contents are unspecified until then).
    pub(crate) fn grow(&mut self, n: usize) -> [&mut [u64]; 6] {
        let old = self.n;
        self.n += n;
        let new = self.n;
        for c in self.cols_mut() {
            if c.len() < new {
                c.resize(new, 0);
            }
        }
        let [xa, xb, ya, yb, za, zb] = self.cols_mut();
        [
            &mut xa[old..new],
            &mut xb[old..new],
            &mut ya[old..new],
            &mut yb[old..new],
            &mut za[old..new],
            &mut zb[old..new],
        ]
    }

    /// Empties the batch, keeping the memory and its stale contents (wiped when the
    /// party is dropped).
    pub(crate) fn clear(&mut self) {
        self.n = 0;
    }
}

/// Verification buffers a party keeps between verifications, so that each batch reuses
/// memory that is already mapped (fresh allocations cost more in page faults than the
/// verification's arithmetic). Contents left by earlier batches are stale shares, all
/// overwritten before use; everything is wiped when the party is dropped.
#[derive(Default)]
pub(crate) struct VerifyBuffers {
    /// This party's share `c_i` of each of the batch's triples, in generation order
    /// (their `a` and `b` shares are drawn again from the streams when bucketed).
    triples: Vec<u64>,
    rows: Vec<Row>,
    open: Shared,
    values: Vec<u64>,
    v: Shared,
    key_next: Vec<u64>,
    key_prev: Vec<u64>,
}

impl VerifyBuffers {
    /// Bytes held (capacity).
    fn bytes(&self) -> usize {
        let words = self.triples.capacity()
            + self.open.a.capacity()
            + self.open.b.capacity()
            + self.values.capacity()
            + self.v.a.capacity()
            + self.v.b.capacity()
            + self.key_next.capacity()
            + self.key_prev.capacity();
        8 * words + std::mem::size_of::<Row>() * self.rows.capacity()
    }
}

impl Drop for VerifyBuffers {
    fn drop(&mut self) {
        self.triples.zeroize();
        self.rows.zeroize();
        self.values.zeroize();
        self.key_next.zeroize();
        self.key_prev.zeroize();
    }
}

/// Makes `v` exactly `n` long (new words zero, old ones stale).
fn fit(v: &mut Vec<u64>, n: usize) {
    if v.len() < n {
        v.resize(n, 0);
    } else {
        v.truncate(n);
    }
}

/// The shape of one bucketing chunk: `gates` gate words checked with `buckets` buckets
/// of `bucket` triples each (`buckets ≥ gates`; the rest is padding), plus `bucket`
/// opened triples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Gate words checked by this chunk.
    pub gates: usize,
    /// Buckets (at least `gates`).
    pub buckets: usize,
    /// Triples per bucket, and triples opened by the cut-and-choose.
    pub bucket: usize,
}

impl ChunkPlan {
    /// Triple words the chunk consumes.
    pub fn words(&self) -> usize {
        self.buckets * self.bucket + self.bucket
    }

    /// `log2` of the chunk's soundness error bound, `2 / C(NB + B, B)`.
    pub fn log2_error(&self) -> f64 {
        1.0 - log2_binomial(self.words(), self.bucket)
    }
}

/// `log2 C(n, k)`.
fn log2_binomial(n: usize, k: usize) -> f64 {
    (0..k)
        .map(|j| ((n - j) as f64).log2() - ((j + 1) as f64).log2())
        .sum()
}

/// Soundness target per chunk: `ε_chunk ≤ 2^-41`. A round's error is the largest chunk
/// bound plus the hash terms (module documentation), so this leaves `2^-41` for those.
pub const CHUNK_SECURITY_BITS: f64 = 41.0;

/// Largest number of buckets in one chunk: a chunk's triples (about 3.1 MB staged at
/// `B = 3`) stay in cache while they are permuted and sacrificed.
const MAX_CHUNK_BUCKETS: usize = 1 << 14;

/// Gate words verified in one batch at most (32 full chunks; about 0.3 GB of triples and
/// buffers per party). A larger batch is verified in equal groups.
const MAX_GROUP_WORDS: usize = 32 * MAX_CHUNK_BUCKETS;

/// Bucket sizes considered for chunks of at most [`MAX_CHUNK_BUCKETS`] buckets.
const BUCKET_SIZES: std::ops::RangeInclusive<usize> = 3..=12;

/// The fewest buckets of size `b` for which a chunk meets [`CHUNK_SECURITY_BITS`].
fn min_buckets(b: usize) -> usize {
    let ok = |n: usize| {
        ChunkPlan {
            gates: 0,
            buckets: n,
            bucket: b,
        }
        .log2_error()
            <= -CHUNK_SECURITY_BITS
    };
    let (mut lo, mut hi) = (1usize, 1usize);
    while !ok(hi) {
        lo = hi;
        hi *= 2;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// How `k` gate words are verified: chunks of at most [`MAX_CHUNK_BUCKETS`] buckets,
/// each with the bucket size (three or more) that needs the fewest triples while meeting
/// [`CHUNK_SECURITY_BITS`].
pub fn plan_chunks(k: usize) -> Vec<ChunkPlan> {
    if k == 0 {
        return Vec::new();
    }
    let chunks = k.div_ceil(MAX_CHUNK_BUCKETS);
    let base = k / chunks;
    let extra = k % chunks;
    (0..chunks)
        .map(|c| {
            let gates = base + usize::from(c < extra);
            BUCKET_SIZES
                .map(|b| ChunkPlan {
                    gates,
                    buckets: gates.max(min_buckets(b)),
                    bucket: b,
                })
                .min_by_key(|p| p.words())
                .expect("bucket sizes")
        })
        .collect()
}

/// Words per first-level NH block (the first-level key, 8 KB, stays in L1).
const HASH_BLOCK: usize = 1 << 10;

/// Key words [`hash_with`] needs for inputs of up to `n` words: one first-level key, and
/// two second-level words per block.
pub(crate) fn hash_key_words(n: usize) -> usize {
    HASH_BLOCK + 2 * n.div_ceil(HASH_BLOCK)
}

/// The keyed hashes of `xs` (equal lengths) under the stream words from block `start` of
/// `prg`; see [`hash_with`].
#[cfg(test)]
fn keyed_hashes<const M: usize>(prg: &Prg, start: u64, xs: [&[u64]; M]) -> [u128; M] {
    let mut keys = Vec::new();
    hash_keys(prg, start, hash_key_words(xs[0].len()), &mut keys);
    hash_with(&keys, xs)
}

/// `n` key words from block `start` of `prg`, into `out`. A verification draws one key
/// per pair and uses it for every comparison of the batch (each compares data fixed
/// before, and independently of, the key).
pub(crate) fn hash_keys(prg: &Prg, start: u64, n: usize, out: &mut Vec<u64>) {
    fit(out, n);
    prg.fill_at(start, out);
}

/// NH (Black, Halevi, Krawczyk, Krovetz and Rogaway, "UMAC", CRYPTO 1999) of `x` under
/// `k` (at least as long as `x`, rounded up to even):
/// `Σ_i (x_{2i} + k_{2i}) · (x_{2i+1} + k_{2i+1}) mod 2^128`, the additions mod 2^64, an
/// odd last word paired with zero. NH is `2^-64`-almost-universal on inputs of equal
/// length. One multiplication per two words.
#[inline]
fn nh(k: &[u64], x: &[u64]) -> u128 {
    let mut a = 0u128;
    let mut it = x.chunks_exact(2);
    for (p, kk) in (&mut it).zip(k.chunks_exact(2)) {
        let l = p[0].wrapping_add(kk[0]);
        let r = p[1].wrapping_add(kk[1]);
        a = a.wrapping_add(l as u128 * r as u128);
    }
    if let [last] = it.remainder() {
        let j = x.len() - 1;
        a = a.wrapping_add(last.wrapping_add(k[j]) as u128 * k[j + 1] as u128);
    }
    a
}

/// The keyed hashes of `xs` (equal lengths) under `keys` ([`hash_key_words`] of them):
/// a two-level NH tree as in UMAC. Each block of [`HASH_BLOCK`] words is hashed under the
/// first-level key, and the blocks' 128-bit results, as word pairs, are hashed by NH
/// under the second-level key. Two different inputs of the same length collide only if
/// some differing block collides at the first level, or the sequences of block results
/// differ and collide at the second: probability `≤ 2^-64 + 2^-64 = 2^-63` over the key.
fn hash_with<const M: usize>(keys: &[u64], xs: [&[u64]; M]) -> [u128; M] {
    let (k1, k2) = keys.split_at(HASH_BLOCK);
    sum_blocks(xs[0].len(), |b, r| {
        xs.map(|x| block_hash(k1, k2, b, &x[r.clone()]))
    })
}

/// Hash blocks per parallel task: a block is only 8 KiB of work.
const HASH_TASK_BLOCKS: usize = 16;

/// The hashes whose block terms `f(b, words of block b)` gives, over the
/// [`HASH_BLOCK`]-word blocks of an input of `n` words, computed in parallel.
fn sum_blocks<const M: usize>(
    n: usize,
    f: impl Fn(usize, std::ops::Range<usize>) -> [u128; M] + Sync + Send,
) -> [u128; M] {
    (0..n.div_ceil(HASH_BLOCK))
        .into_par_iter()
        .with_min_len(HASH_TASK_BLOCKS)
        .map(|b| f(b, b * HASH_BLOCK..n.min((b + 1) * HASH_BLOCK)))
        .reduce(|| [0; M], add_hashes)
}

/// Block `b`'s term of [`hash_with`]: the block's NH under the first-level key, hashed
/// as a word pair under the block's second-level key words. A hash is the sum (mod
/// 2^128) of its blocks' terms, so callers that produce a block on the fly (and never
/// store the whole input) hash it block by block.
#[inline]
fn block_hash(k1: &[u64], k2: &[u64], b: usize, x: &[u64]) -> u128 {
    let h = nh(k1, x);
    let (lo, hi) = (h as u64, (h >> 64) as u64);
    lo.wrapping_add(k2[2 * b]) as u128 * hi.wrapping_add(k2[2 * b + 1]) as u128
}

/// Sums block terms of [`block_hash`], hash by hash.
fn add_hashes<const M: usize>(mut x: [u128; M], y: [u128; M]) -> [u128; M] {
    for (a, b) in x.iter_mut().zip(y) {
        *a = a.wrapping_add(b);
    }
    x
}

/// Log2 of the keyed hash's collision bound.
pub(crate) const HASH_LOG2_ERROR: f64 = -63.0;

/// The coin toss in progress: this party's seed and what it has received.
struct Coin {
    seed: [u8; 32],
    commitment: [u8; 32],
}

const COIN_DOMAIN: &[u8] = b"acs/verify/coin/v1";

fn commit(party: PartyId, seed: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update(COIN_DOMAIN);
    h.update(b"commit");
    h.update([party.index() as u8]);
    h.update(seed);
    h.finalize().into()
}

/// A failure found during a verification batch, reported to the peers in the zero check.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    what: String,
    culprit: Option<PartyId>,
}

fn fail(what: &str) -> Option<Failure> {
    Some(Failure {
        what: what.to_owned(),
        culprit: None,
    })
}

/// One triple (or gate) as a row: `[a_i, a_{i+1}, b_i, b_{i+1}, c_i, c_{i+1}]`.
type Row = [u64; 6];
const XA: usize = 0;
const XB: usize = 1;
const YA: usize = 2;
const YB: usize = 3;
const ZA: usize = 4;
const ZB: usize = 5;

/// A triple staged for bucketing: its row and the received share `c_{i+1}`, in one
/// cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Staged([u64; 8]);

/// Triple words drawn again per step of the staging pass: the scratch of four columns
/// stays in the first-level cache.
const STAGE_WORDS: usize = 1 << 10;

/// Where a batch's random triples lie in the pairwise random streams: word `k` of `a_i`
/// (`a_{i+1}`) is word `k` from block `prev` of the stream shared with the previous
/// (`next` with the next) party, word `k` of `b_i` (`b_{i+1}`) word `k` from block
/// `prev + half` (`next + half`).
#[derive(Clone, Copy)]
struct TripleStreams {
    prev: u64,
    next: u64,
    half: u64,
}

impl TripleStreams {
    /// The shares `[a_i, a_{i+1}, b_i, b_{i+1}]` of the triple words `at .. at + len`
    /// (`len <= STAGE_WORDS`), drawn into `scratch` (`4 * (STAGE_WORDS + 1)` words).
    fn triples_at<'s>(
        &self,
        prev: &Prg,
        next: &Prg,
        at: usize,
        len: usize,
        scratch: &'s mut [u64],
    ) -> [&'s [u64]; 4] {
        debug_assert!(len <= STAGE_WORDS);
        // Streams give whole blocks of two words: an odd start takes one word more.
        let (block, skip) = ((at / 2) as u64, at % 2);
        let mut cols = scratch.chunks_exact_mut(STAGE_WORDS + 1);
        let mut col = |prg: &Prg, first: u64| -> &'s [u64] {
            let c = cols.next().expect("four columns");
            prg.fill_at(first + block, &mut c[..len + skip]);
            &c[skip..skip + len]
        };
        [
            col(prev, self.prev),
            col(next, self.next),
            col(prev, self.prev + self.half),
            col(next, self.next + self.half),
        ]
    }
}

/// Sacrifices of one chunk: `B - 1` per bucket, one per gate.
fn sacrifices(ch: &ChunkPlan) -> usize {
    ch.buckets * (ch.bucket - 1) + ch.gates
}

/// Gate `g` of `gates` as a row.
fn gate_row(gates: &Gates, g: usize) -> Row {
    [
        gates.xa[g],
        gates.xb[g],
        gates.ya[g],
        gates.yb[g],
        gates.za[g],
        gates.zb[g],
    ]
}

/// Buckets per parallel work item in the zero shares.
const WORK_BUCKETS: usize = 1 << 12;

/// A range of buckets of one chunk: the unit of parallel work after bucketing. Its
/// sacrifices are contiguous: bucket `k` has its first triple against each of the
/// others, then (if `k` is below the chunk's gate count) gate `k` against its first
/// triple.
#[derive(Clone, Copy)]
struct Work {
    chunk: usize,
    lo: usize,
    hi: usize,
}

impl Work {
    /// Sacrifices of the buckets `lo..hi` of `ch`.
    fn sacrifices(&self, ch: &ChunkPlan) -> usize {
        (self.hi - self.lo) * (ch.bucket - 1) + ch.gates.min(self.hi).saturating_sub(self.lo)
    }
}

/// The work items of a plan, in chunk order and bucket order within each chunk.
fn work_items(plan: &[ChunkPlan]) -> Vec<Work> {
    let mut out = Vec::new();
    for (chunk, ch) in plan.iter().enumerate() {
        let mut lo = 0;
        while lo < ch.buckets {
            let hi = ch.buckets.min(lo + WORK_BUCKETS);
            out.push(Work { chunk, lo, hi });
            lo = hi;
        }
    }
    out
}

/// Calls `f(first, second)` for every sacrifice of the buckets of `w`, in the order of
/// [`Work`]: `rows` are the chunk's triples in bucket order (the first `B` opened, then
/// bucket after bucket), its gates are `gates[gate_off..]`.
#[inline(always)]
fn for_each_sacrifice(
    ch: &ChunkPlan,
    w: &Work,
    rows: &[Row],
    gates: &Gates,
    gate_off: usize,
    mut f: impl FnMut(&Row, &Row),
) {
    let b = ch.bucket;
    let buckets = &rows[b..];
    for k in w.lo..w.hi {
        let bucket = &buckets[k * b..(k + 1) * b];
        for other in &bucket[1..] {
            f(&bucket[0], other);
        }
        if k < ch.gates {
            f(&gate_row(gates, gate_off + k), &bucket[0]);
        }
    }
}

/// This party's shares of `ρ = x ^ a`, `σ = y ^ b` for every sacrifice of `w` (`(x, y,
/// z)` checked with `(a, b, c)`), as `(ρ, σ)` pairs.
fn open_work(
    ch: &ChunkPlan,
    w: &Work,
    rows: &[Row],
    gates: &Gates,
    gate_off: usize,
    out_a: &mut [u64],
    out_b: &mut [u64],
) {
    let mut o = 0;
    for_each_sacrifice(ch, w, rows, gates, gate_off, |f, s| {
        out_a[o] = f[XA] ^ s[XA];
        out_b[o] = f[XB] ^ s[XB];
        out_a[o + 1] = f[YA] ^ s[YA];
        out_b[o + 1] = f[YB] ^ s[YB];
        o += 2;
    });
}

/// This party's shares of `v = z ^ c ^ (σ & a) ^ (ρ & b) ^ (ρ & σ)` for every sacrifice
/// of `w`, in the order of [`open_work`]; `opened` holds the opened `(ρ, σ)` pairs.
#[allow(clippy::too_many_arguments)]
fn zero_shares_work(
    me: PartyId,
    ch: &ChunkPlan,
    w: &Work,
    rows: &[Row],
    gates: &Gates,
    gate_off: usize,
    opened: &[u64],
    va: &mut [u64],
    vb: &mut [u64],
) {
    let [pub_a, pub_b] = x0_masks(me);
    let mut o = 0;
    for_each_sacrifice(ch, w, rows, gates, gate_off, |f, s| {
        let (r, sg) = (opened[2 * o], opened[2 * o + 1]);
        let rsg = r & sg;
        va[o] = f[ZA] ^ s[ZA] ^ (sg & s[XA]) ^ (r & s[YA]) ^ (pub_a & rsg);
        vb[o] = f[ZB] ^ s[ZB] ^ (sg & s[XB]) ^ (r & s[YB]) ^ (pub_b & rsg);
        o += 1;
    });
}

/// Splits `v` into consecutive pieces of the given lengths.
fn split_lengths<T>(mut v: &mut [T], lens: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for len in lens {
        let (head, tail) = std::mem::take(&mut v).split_at_mut(len);
        out.push(head);
        v = tail;
    }
    out
}

impl Party {
    /// The security mode.
    pub fn security(&self) -> SecurityMode {
        self.mode
    }

    /// Sets the security mode. All three parties must use the same mode for the same
    /// computation. Leaving malicious mode first verifies the gates still pending.
    pub fn set_security(&mut self, mode: SecurityMode) -> Result<(), EngineError> {
        if self.mode == SecurityMode::Malicious && mode != SecurityMode::Malicious {
            self.verify_pending()?;
        }
        self.mode = mode;
        Ok(())
    }

    /// What the verification has done so far.
    pub fn verify_stats(&self) -> VerifyStats {
        self.vstats
    }

    /// AND gate words computed but not yet verified.
    pub fn pending_gate_words(&self) -> usize {
        self.pending.len()
    }

    /// Bytes the verification keeps between batches (its batch buffers and the pending
    /// gates' columns).
    pub(crate) fn verify_buffer_bytes(&self) -> usize {
        self.vbuf.bytes() + 48 * self.pending.xa.capacity()
    }

    /// Gives back the memory the verification keeps between batches (the batch buffers,
    /// and the pending gates' columns when no gate is pending), wiped: for a phase that
    /// needs the memory more than the next verification needs it already mapped.
    pub(crate) fn release_verify_buffers(&mut self) {
        if self.pending.is_empty() {
            self.pending = Gates::default();
        }
        self.vbuf = VerifyBuffers::default();
    }

    /// In malicious mode, records gates for [`Party::verify_pending`].
    pub(crate) fn record_gates(
        &mut self,
        x: (&[u64], &[u64]),
        y: (&[u64], &[u64]),
        z: (&[u64], &[u64]),
    ) {
        if self.mode == SecurityMode::Malicious {
            self.pending.push(x, y, z);
        }
    }

    /// A joint random seed no party can bias or predict before it is fixed (two rounds):
    /// commit, then reveal with echoes, as in a verification. A disagreement found on
    /// the way is returned for the caller to report in its zero check.
    pub(crate) fn toss_coin(&mut self) -> Result<([u8; 32], Option<Failure>), EngineError> {
        let mut coin = Coin {
            seed: Seed::random().to_bytes(),
            commitment: [0; 32],
        };
        coin.commitment = commit(self.id(), &coin.seed);
        self.send_bytes(Peer::Next, coin.commitment.to_vec())?;
        self.send_bytes(Peer::Prev, coin.commitment.to_vec())?;
        let from_next = self.recv_bytes(Peer::Next, 32)?;
        let from_prev = self.recv_bytes(Peer::Prev, 32)?;
        self.count_round();
        let mut failure = None;
        let seed = self.coin_reveal(coin, &from_next, &from_prev, &mut failure)?;
        Ok((seed, failure))
    }

    /// The second round of a coin toss: reveal this party's seed with the commitment it
    /// got from the other peer, check the peers' reveals, and hash the three seeds.
    fn coin_reveal(
        &mut self,
        mut coin: Coin,
        from_next: &[u8],
        from_prev: &[u8],
        failure: &mut Option<Failure>,
    ) -> Result<[u8; 32], EngineError> {
        for (to, echo) in [(Peer::Next, from_prev), (Peer::Prev, from_next)] {
            let mut msg = coin.seed.to_vec();
            msg.extend_from_slice(echo);
            self.send_bytes(to, msg)?;
        }
        let reveal_next = self.recv_bytes(Peer::Next, 64)?;
        let reveal_prev = self.recv_bytes(Peer::Prev, 64)?;
        self.count_round();
        let me = self.id();
        let mut seeds = [[0u8; 32]; 3];
        seeds[me.index()] = coin.seed;
        for (peer, reveal, committed, other_commit) in [
            (me.next(), &reveal_next, from_next, from_prev),
            (me.prev(), &reveal_prev, from_prev, from_next),
        ] {
            let seed: [u8; 32] = reveal[..32].try_into().expect("32 bytes");
            if commit(peer, &seed)[..] != committed[..] {
                failure.get_or_insert(Failure {
                    what: format!("{peer}'s coin-toss seed does not open its commitment"),
                    culprit: Some(peer),
                });
            }
            if reveal[32..] != other_commit[..] && failure.is_none() {
                *failure = fail("the coin-toss commitments the two peers report disagree");
            }
            seeds[peer.index()] = seed;
        }
        let mut h = Sha3_256::new();
        h.update(COIN_DOMAIN);
        for s in &seeds {
            h.update(s);
        }
        coin.seed.zeroize();
        Ok(h.finalize().into())
    }

    /// Whether AND gates must be recorded.
    pub(crate) fn malicious(&self) -> bool {
        self.mode == SecurityMode::Malicious
    }

    /// Verifies every AND gate computed since the last verification (malicious mode; a
    /// no-op otherwise or when nothing is pending). Four rounds; see the module
    /// documentation. On failure every honest party returns
    /// [`EngineError::VerificationFailed`] and the computation must be abandoned: nothing
    /// computed since the last successful verification may be opened or released.
    pub fn verify_pending(&mut self) -> Result<(), EngineError> {
        if self.mode != SecurityMode::Malicious || self.pending.is_empty() {
            return Ok(());
        }
        let mut gates = std::mem::take(&mut self.pending);
        let mut buf = std::mem::take(&mut self.vbuf);
        // Large batches (the multiplexers over whole payloads) are verified in groups, so
        // that the triples and buffers of one group bound the memory; each group is a
        // complete verification with its own coin.
        let mut result = Ok(());
        let groups = gates.len().div_ceil(MAX_GROUP_WORDS);
        let per_group = gates.len().div_ceil(groups);
        let mut start = 0;
        while start < gates.len() && result.is_ok() {
            let end = gates.len().min(start + per_group);
            result = self.verify_batch(&gates, start..end, &mut buf);
            start = end;
        }
        gates.clear();
        self.pending = gates;
        self.vbuf = buf;
        result
    }

    /// [`Party::verify_pending`] of `gates`, in the buffers `buf`.
    fn verify_batch(
        &mut self,
        gates: &Gates,
        range: std::ops::Range<usize>,
        buf: &mut VerifyBuffers,
    ) -> Result<(), EngineError> {
        let plan = plan_chunks(range.len());
        let total: usize = plan.iter().map(ChunkPlan::words).sum();
        if total > u32::MAX as usize {
            return Err(EngineError::InvalidInput(format!(
                "{} gate words pending: verify more often",
                range.len()
            )));
        }
        let mut failure: Option<Failure> = None;
        let mut clock = std::time::Instant::now();
        let mut lap = |stats: &mut VerifyStats, phase: usize| {
            let now = std::time::Instant::now();
            stats.phase_seconds[phase] += (now - clock).as_secs_f64();
            clock = now;
        };

        // Round 1: random triples, and the coin commitments.
        let mut coin = Coin {
            seed: Seed::random().to_bytes(),
            commitment: [0; 32],
        };
        coin.commitment = commit(self.id(), &coin.seed);
        let (msg, streams) = self.random_triples(&mut buf.triples, total);
        self.send_message(Peer::Prev, msg)?;
        self.send_bytes(Peer::Next, coin.commitment.to_vec())?;
        self.send_bytes(Peer::Prev, coin.commitment.to_vec())?;
        // The received shares `c_{i+1}` stay in their message until bucketing reads
        // them (one pass over the rows fewer).
        let got = self.recv_message(Peer::Next, total)?;
        let from_next = self.recv_bytes(Peer::Next, 32)?;
        let from_prev = self.recv_bytes(Peer::Prev, 32)?;
        lap(&mut self.vstats, 0);

        // Round 2: reveal, echoing the commitment of the other peer.
        let coin_seed = self.coin_reveal(coin, &from_next, &from_prev, &mut failure)?;
        let me = self.id();

        // Bucketing, chunk by chunk in parallel: each chunk's triples in the order of a
        // permutation from the coin, gathered into rows. A chunk's staged triples fit in
        // cache, so the random accesses stay cheap.
        // One permutation per chunk size, shared by the chunks of that size: soundness
        // needs only that the first chunk holding a wrong gate passes with probability
        // at most its bound over a permutation fixed after its gates and triples (module
        // documentation), not that chunks are permuted independently of each other. A
        // plan has at most two sizes; drawing one permutation per chunk was 7 % of a
        // malicious sort's CPU.
        let mut perms: Vec<(usize, Vec<u32>)> = Vec::new();
        for ch in &plan {
            let len = ch.words();
            if perms.iter().all(|(l, _)| *l != len) {
                let mut hc = Sha3_256::new();
                hc.update(b"acs/verify/bucketing/v2");
                hc.update(coin_seed);
                hc.update((len as u64).to_le_bytes());
                let seed: [u8; 32] = hc.finalize().into();
                let mut prg = Prg::new(&Seed::from_bytes(seed), Purpose::Bucketing);
                perms.push((len, prg.permutation(len)));
            }
        }
        let max_chunk = plan.iter().map(ChunkPlan::words).max().unwrap_or(0);
        let perm_of = |len: usize| -> &[u32] {
            &perms
                .iter()
                .find(|(l, _)| *l == len)
                .expect("drawn above")
                .1
        };
        let mut word_off = Vec::with_capacity(plan.len());
        let mut gate_off = Vec::with_capacity(plan.len());
        let (mut w, mut g, mut q) = (0usize, range.start, 0usize);
        for ch in &plan {
            word_off.push(w);
            gate_off.push(g);
            w += ch.words();
            g += ch.gates;
            q += sacrifices(ch);
        }
        let n_sac = q;
        let n_cc: usize = plan.iter().map(|c| c.bucket).sum();
        let work = work_items(&plan);
        buf.rows.resize(total, [0; 6]);
        buf.rows.truncate(total);
        // Round 3's values are computed in the same pass, while the chunk is in cache:
        // the cut-and-choose triples (the first `B` of each chunk, copied out below) and
        // ρ, σ of every sacrifice: per bucket its first triple against each of the
        // others, then gate `k` of the chunk against bucket `k`'s first triple.
        let open = &mut buf.open;
        fit(&mut open.a, 3 * n_cc + 2 * n_sac);
        fit(&mut open.b, 3 * n_cc + 2 * n_sac);
        {
            let t = &buf.triples[..];
            let (rp, rn) = (&self.rand.prev, &self.rand.next);
            let (_, rest_a) = open.a.split_at_mut(3 * n_cc);
            let (_, rest_b) = open.b.split_at_mut(3 * n_cc);
            let lens = || plan.iter().map(|ch| 2 * sacrifices(ch));
            split_lengths(&mut buf.rows, plan.iter().map(ChunkPlan::words))
                .into_par_iter()
                .zip(split_lengths(rest_a, lens()))
                .zip(split_lengths(rest_b, lens()))
                .enumerate()
                .for_each_init(
                    || {
                        let scratch = zeroize::Zeroizing::new(vec![0u64; 4 * (STAGE_WORDS + 1)]);
                        // Sized once: growing a vector of 64-byte-aligned lines goes
                        // through the system allocator's copying fallback at every
                        // doubling (a tenth of the bucketing's time).
                        (Vec::with_capacity(max_chunk), scratch)
                    },
                    |(stage, scratch), (c, ((dst, oa), ob))| {
                        let perm = perm_of(dst.len());
                        // The batch's triples are far larger than the cache, so the chunk
                        // is first staged in one sequential pass (at memory bandwidth),
                        // each triple with its received share in one cache line; the
                        // random accesses of the permutation then hit the cache, one
                        // line each.
                        let off = word_off[c];
                        let cb = &got[8 * off..8 * (off + dst.len())];
                        stage.clear();
                        let mut at = off;
                        for (zs, cs) in t[off..off + dst.len()]
                            .chunks(STAGE_WORDS)
                            .zip(cb.chunks(8 * STAGE_WORDS))
                        {
                            let [xa, xb, ya, yb] =
                                streams.triples_at(rp, rn, at, zs.len(), scratch);
                            stage.extend((0..zs.len()).map(|k| {
                                let c = u64::from_le_bytes(
                                    cs[8 * k..8 * k + 8].try_into().expect("8 bytes"),
                                );
                                Staged([xa[k], xb[k], ya[k], yb[k], zs[k], c, 0, 0])
                            }));
                            at += zs.len();
                        }
                        for (d, &p) in dst.iter_mut().zip(perm.iter()) {
                            let s = &stage[p as usize].0;
                            *d = [s[0], s[1], s[2], s[3], s[4], s[5]];
                        }
                        let ch = &plan[c];
                        let all = Work {
                            chunk: c,
                            lo: 0,
                            hi: ch.buckets,
                        };
                        open_work(ch, &all, dst, gates, gate_off[c], oa, ob);
                    },
                );
        }
        self.recycle_message(got);
        let rows_all = &buf.rows;
        let chunk_rows = |c: usize| &rows_all[word_off[c]..word_off[c] + plan[c].words()];
        {
            let (cc_a, _) = open.a.split_at_mut(3 * n_cc);
            let (cc_b, _) = open.b.split_at_mut(3 * n_cc);
            let mut k = 0;
            for c in 0..plan.len() {
                for row in &chunk_rows(c)[..plan[c].bucket] {
                    for (m, (ia, ib)) in [(XA, XB), (YA, YB), (ZA, ZB)].into_iter().enumerate() {
                        cc_a[m * n_cc + k] = row[ia];
                        cc_b[m * n_cc + k] = row[ib];
                    }
                    k += 1;
                }
            }
        }
        lap(&mut self.vstats, 1);
        // One set of hash keys per pair for the batch, as long as the longest vector
        // compared (the opened values).
        let n_keys = hash_key_words(buf.open.len());
        let start_next = self.check.next.reserve(n_keys);
        let start_prev = self.check.prev.reserve(n_keys);
        hash_keys(&self.check.next, start_next, n_keys, &mut buf.key_next);
        hash_keys(&self.check.prev, start_prev, n_keys, &mut buf.key_prev);
        let open_ok =
            self.open_checked(&buf.open, &mut buf.values, &buf.key_next, &buf.key_prev)?;
        let values = &buf.values;
        if !open_ok {
            failure = failure.or(fail("an opened value and its keyed hash disagree"));
        }
        let (cc_a, rest) = values.split_at(n_cc);
        let (cc_b, rest) = rest.split_at(n_cc);
        let (cc_c, opened) = rest.split_at(n_cc);
        if cc_a
            .iter()
            .zip(cc_b)
            .zip(cc_c)
            .any(|((a, b), c)| a & b != *c)
        {
            failure = failure.or(fail("an opened triple is wrong (cut-and-choose)"));
        }

        lap(&mut self.vstats, 2);
        // v = z ^ c ^ (σ & a) ^ (ρ & b) ^ (ρ & σ) for each sacrifice: a sharing of zero.
        let v = &mut buf.v;
        fit(&mut v.a, n_sac);
        fit(&mut v.b, n_sac);
        {
            let lens = || work.iter().map(|w| w.sacrifices(&plan[w.chunk]));
            let offsets: Vec<usize> = lens()
                .scan(0, |acc, n| {
                    let at = *acc;
                    *acc += n;
                    Some(at)
                })
                .collect();
            split_lengths(&mut v.a, lens())
                .into_par_iter()
                .zip(split_lengths(&mut v.b, lens()))
                .zip(work.par_iter().zip(&offsets))
                .for_each(|((va, vb), (w, &at))| {
                    let c = w.chunk;
                    let o = &opened[2 * at..2 * (at + va.len())];
                    zero_shares_work(
                        me,
                        &plan[c],
                        w,
                        chunk_rows(c),
                        gates,
                        gate_off[c],
                        o,
                        va,
                        vb,
                    )
                });
        }

        lap(&mut self.vstats, 3);
        // Round 4: the zero check, carrying every failure seen so far.
        let result = self.zero_check(
            &buf.v,
            [&buf.key_next, &buf.key_prev],
            &coin_seed,
            failure,
            "an AND gate or a triple is wrong (sacrifice check)",
        );
        lap(&mut self.vstats, 4);
        let chunk_error = plan
            .iter()
            .map(|c| c.log2_error().exp2())
            .fold(0f64, f64::max);
        self.vstats.verifications += 1;
        self.vstats.gate_words += plan.iter().map(|c| c.gates as u64).sum::<u64>();
        self.vstats.triple_words += total as u64;
        self.vstats.chunks += plan.len() as u64;
        self.vstats.hash_checks += 4;
        self.vstats.chunk_error_max = self.vstats.chunk_error_max.max(chunk_error);
        self.vstats.hash_error += 4.0 * HASH_LOG2_ERROR.exp2();
        self.vstats.error_bound =
            self.vstats.chunk_error_max + self.vstats.hash_error + self.vstats.mac_error;
        result
    }

    /// `n` random triple words: this party's share `c_i` of each `c = a & b` into `t`,
    /// and the message carrying them to the previous party. Random sharings `a`, `b`
    /// come from the pairwise streams (where [`TripleStreams`] finds them again) and are
    /// multiplied by the semi-honest AND, all in one parallel pass (streams, AND and
    /// message bytes per block of words). Only `c_i` is stored: bucketing draws `a` and
    /// `b` again, which takes no longer than writing and reading back 48 bytes a triple
    /// and keeps 40 bytes a triple less in memory.
    fn random_triples(&mut self, t: &mut Vec<u64>, n: usize) -> (Vec<u8>, TripleStreams) {
        const BLOCK: usize = 512;
        t.resize(n, 0);
        t.truncate(n);
        let mut msg = self.take_message(n);
        // `a` and then `b` from each random stream (each range a whole number of blocks),
        // the zero-sharing of `c` from the zero-sharing streams, as in the AND gate.
        let half = n.div_ceil(2) as u64;
        let streams = TripleStreams {
            prev: self.rand.prev.reserve(4 * half as usize),
            next: self.rand.next.reserve(4 * half as usize),
            half,
        };
        let z_prev = self.zero.prev.reserve(n);
        let z_next = self.zero.next.reserve(n);
        let (rp, rn) = (&self.rand.prev, &self.rand.next);
        let (zp, zn) = (&self.zero.prev, &self.zero.next);
        // Each task's scratch is wiped once, when rayon drops it, not after every block.
        t.par_chunks_mut(BLOCK)
            .zip(msg.par_chunks_mut(8 * BLOCK))
            .enumerate()
            .for_each_init(
                || zeroize::Zeroizing::new(vec![0u64; 6 * BLOCK]),
                |w, (c, (zs, bytes))| {
                    let blk = (c * BLOCK / 2) as u64;
                    let len = zs.len();
                    let mut cols = w.chunks_exact_mut(BLOCK);
                    let mut col = || cols.next().expect("six columns");
                    let (xa, xb, ya, yb, r, s) = (col(), col(), col(), col(), col(), col());
                    rp.fill_at(streams.prev + blk, &mut xa[..len]);
                    rn.fill_at(streams.next + blk, &mut xb[..len]);
                    rp.fill_at(streams.prev + half + blk, &mut ya[..len]);
                    rn.fill_at(streams.next + half + blk, &mut yb[..len]);
                    zp.fill_at(z_prev + blk, &mut r[..len]);
                    zn.fill_at(z_next + blk, &mut s[..len]);
                    for (k, (z, b)) in zs.iter_mut().zip(bytes.chunks_exact_mut(8)).enumerate() {
                        *z = (xa[k] & ya[k]) ^ (xa[k] & yb[k]) ^ (xb[k] & ya[k]) ^ r[k] ^ s[k];
                        b.copy_from_slice(&z.to_le_bytes());
                    }
                },
            );
        #[cfg(feature = "fault-injection")]
        {
            self.corrupt_words(crate::fault::ComputeSite::Triple, t);
            for (b, z) in msg.chunks_exact_mut(8).zip(t.iter()) {
                b.copy_from_slice(&z.to_le_bytes());
            }
        }
        (msg, streams)
    }

    /// Opens `x` inside a verification (the values are one-time padded by fresh triples,
    /// or are triples sacrificed by the cut-and-choose): the value from the next party,
    /// a keyed hash of it from the previous one. One round. Returns the values and
    /// whether the hash matched.
    fn open_checked(
        &mut self,
        x: &Shared,
        out: &mut Vec<u64>,
        key_next: &[u64],
        key_prev: &[u64],
    ) -> Result<bool, EngineError> {
        let n = x.len();
        let mut msg = self.take_message(n);
        words_into_bytes(&x.b, &mut msg);
        #[cfg(feature = "fault-injection")]
        self.corrupt_bytes(crate::fault::ComputeSite::VerifyOpening, &mut msg);
        self.send_message(Peer::Prev, msg)?;
        let [check] = hash_with(key_next, [&x.a]);
        self.send_bytes(Peer::Next, check.to_le_bytes().to_vec())?;
        let got = self.recv_bytes(Peer::Next, 8 * n)?;
        let got_check = self.recv_bytes(Peer::Prev, 16)?;
        self.count_round();
        fit(out, n);
        // One pass, a hash block at a time while it is in L1: the received words, their
        // keyed hash, then the opened value (over `out`'s own blocks, which it writes, so
        // not through `sum_blocks`).
        let (k1, k2) = key_prev.split_at(HASH_BLOCK);
        let [arrived] = out
            .par_chunks_mut(HASH_BLOCK)
            .enumerate()
            .with_min_len(HASH_TASK_BLOCKS)
            .map(|(blk, o)| {
                let at = blk * HASH_BLOCK;
                bytes_into_words(&got[8 * at..8 * (at + o.len())], o);
                let h = block_hash(k1, k2, blk, o);
                for ((w, a), b) in o.iter_mut().zip(&x.a[at..]).zip(&x.b[at..]) {
                    *w ^= a ^ b;
                }
                [h]
            })
            .reduce(|| [0], add_hashes);
        self.recycle_message(got);
        let ok = arrived.to_le_bytes()[..] == got_check[..];
        Ok(ok)
    }

    /// Checks that `v` is a sharing of zero and that both peers saw the same coin and no
    /// failure; `wrong` says what a non-zero `v` means. One round.
    pub(crate) fn zero_check(
        &mut self,
        v: &Shared,
        [key_next, key_prev]: [&[u64]; 2],
        coin: &[u8; 32],
        failure: Option<Failure>,
        wrong: &str,
    ) -> Result<(), EngineError> {
        // `v_i ^ v_{i+1}` a hash block at a time, never stored: one pass over `v`.
        let (kn1, kn2) = key_next.split_at(HASH_BLOCK);
        let (kp1, kp2) = key_prev.split_at(HASH_BLOCK);
        let [t_next, mine_next, t_prev, mine_prev] = sum_blocks(v.a.len(), |blk, r| {
            let (a, b) = (&v.a[r.clone()], &v.b[r]);
            let mut t = [0u64; HASH_BLOCK];
            let t = &mut t[..a.len()];
            for ((t, a), b) in t.iter_mut().zip(a).zip(b) {
                *t = a ^ b;
            }
            [
                block_hash(kn1, kn2, blk, t),
                block_hash(kn1, kn2, blk, a),
                block_hash(kp1, kp2, blk, t),
                block_hash(kp1, kp2, blk, b),
            ]
        });
        let status = u8::from(failure.is_none());
        let msg = |h: u128| {
            let mut m = vec![status];
            m.extend_from_slice(&coin[..8]);
            m.extend_from_slice(&h.to_le_bytes());
            m
        };
        self.send_bytes(Peer::Next, msg(t_next))?;
        self.send_bytes(Peer::Prev, msg(t_prev))?;
        let from_next = self.recv_bytes(Peer::Next, 25)?;
        let from_prev = self.recv_bytes(Peer::Prev, 25)?;
        self.count_round();
        if let Some(f) = failure {
            return Err(EngineError::VerificationFailed {
                what: f.what,
                culprit: f.culprit,
            });
        }
        for (got, mine) in [(&from_next, mine_next), (&from_prev, mine_prev)] {
            if got[0] != 1 {
                return Err(EngineError::VerificationFailed {
                    what: "a peer reports a failed check".into(),
                    culprit: None,
                });
            }
            if got[1..9] != coin[..8] {
                return Err(EngineError::VerificationFailed {
                    what: "the parties hold different coins".into(),
                    culprit: None,
                });
            }
            if got[9..] != mine.to_le_bytes()[..] {
                return Err(EngineError::VerificationFailed {
                    what: wrong.into(),
                    culprit: None,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_runs_again_after_its_buffers_are_given_back() {
        let out = crate::testing::run_three(|p| {
            p.set_security(SecurityMode::Malicious)?;
            // All-ones (NOT of the zero sharing, which every party holds), so each AND
            // gate's output is one and its triples are checked against real values.
            let mut ones = Shared::zeros(1 << 12);
            ones.not_assign(p.id());
            p.and(&ones, &ones)?;
            p.verify_pending()?;
            let held = p.verify_buffer_bytes();
            p.release_verify_buffers();
            let released = p.verify_buffer_bytes();
            p.and(&ones, &ones)?;
            p.verify_pending()?;
            Ok((held, released, p.verify_stats().verifications))
        });
        for r in out {
            let (held, released, verifications) = r.expect("verified");
            assert!(held > 0 && released == 0, "{held} {released}");
            assert_eq!(verifications, 2);
        }
    }

    #[test]
    fn plans_meet_the_soundness_target_and_cover_every_gate() {
        for k in [
            1usize,
            2,
            100,
            5_000,
            70_000,
            1 << 19,
            (1 << 19) + 1,
            3_000_000,
        ] {
            let plan = plan_chunks(k);
            assert_eq!(plan.iter().map(|c| c.gates).sum::<usize>(), k);
            for c in &plan {
                assert!(c.buckets >= c.gates && c.bucket >= 3);
                assert!(c.log2_error() <= -CHUNK_SECURITY_BITS, "{c:?}");
                assert!(c.buckets <= MAX_CHUNK_BUCKETS.max(min_buckets(c.bucket)));
            }
        }
        // Large batches use full chunks with buckets of three.
        assert!(plan_chunks(3_000_000)
            .iter()
            .all(|c| c.bucket == 3 && c.log2_error() < -43.0));
    }

    #[test]
    fn binomial_bound_matches_a_direct_count() {
        // C(10, 3) = 120.
        assert!((log2_binomial(10, 3) - 120f64.log2()).abs() < 1e-9);
    }

    #[test]
    fn keyed_hash_is_deterministic_and_separates_one_bit_flips() {
        let prg = Prg::new(&Seed::from_bytes([4; 32]), Purpose::Check);
        let x: Vec<u64> = (0..20_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut y = x.clone();
        let [hx] = keyed_hashes(&prg, 0, [&x]);
        let [hx2, hy] = keyed_hashes(&prg, 0, [&x, &y]);
        assert_eq!(hx, hx2);
        assert_eq!(hx, hy);
        for k in [0usize, 1, 8191, 8192, 19_999] {
            for bit in [0u32, 31, 32, 63] {
                y[k] ^= 1 << bit;
                let [hy] = keyed_hashes(&prg, 0, [&y]);
                assert_ne!(hx, hy, "word {k} bit {bit}");
                y[k] ^= 1 << bit;
            }
        }
    }

    #[test]
    fn security_mode_parses_and_prints() {
        for m in [SecurityMode::SemiHonest, SecurityMode::Malicious] {
            assert_eq!(m.name().parse::<SecurityMode>().unwrap(), m);
        }
        assert!("honest".parse::<SecurityMode>().is_err());
        assert_eq!(SecurityMode::default(), SecurityMode::SemiHonest);
    }
}
