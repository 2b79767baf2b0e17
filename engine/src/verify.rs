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
//! 3. **Cut-and-choose and buckets.** Per chunk of `N` buckets of `B` triples (`B` and
//!    `N` from [`plan_chunks`]), the coin picks a uniformly random permutation of the
//!    `NB + B` triple words: the first `B` are opened and checked (`c = a & b`), the rest
//!    form buckets. In each bucket the first triple is checked against each of the others
//!    by sacrifice, and then checks gate `k` of the chunk by sacrifice.
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
//!    each other, so both detect any non-zero `v`. Each message carries a status byte, so
//!    a party that saw any failure earlier in the batch (an opening whose hash did not
//!    match, a bad opened triple, a coin-toss inconsistency) makes every honest party
//!    fail here too: all honest parties return [`EngineError::VerificationFailed`] in
//!    the same round.
//!
//! Rounds per verification: 4 (triples with commitments, reveal, openings, zero check).
//!
//! # Soundness
//!
//! Everything a corrupt party does to the computation is an additive error on the AND
//! shares it sends (it sends nothing else that the honest parties use without a check:
//! openings are checked by the keyed hash, the zero check only compares honest data).
//! Bits are independent under word-wise bucketing, so consider one bit position (lane)
//! where some gate is wrong. The batch passes only if (i) none of the `B` opened triples
//! is wrong, (ii) every bucket is all-wrong or all-right, and (iii) the bucket of each
//! wrong gate is all-wrong (a right triple catches a wrong gate). The wrong triples,
//! fixed before the coin, land in a uniformly random set of slots, so the probability
//! that they fill exactly the required slots is `1 / C(NB + B, t)` for `t` wrong
//! triples; it is largest at `t = B` and at `t = NB` (both `1 / C(NB + B, B)`), and
//! wrong padding buckets (buckets past the last gate) add only lower-order terms. Hence
//! per chunk `ε ≤ 2 / C(NB + B, B)`, and [`plan_chunks`] picks `N ≥ K` and `B ≥ 3` with
//! `ε_chunk ≤ 2^-56`. The keyed hash is a linear map over `GF(2^61 - 1)` with
//! coefficients from a PRG keyed by a seed the corrupt party lacks: a collision needs a
//! non-zero difference to vanish under a random degree-2 polynomial, probability `≤ 2^-59`.
//! A round of 10^6 users runs far fewer than `2^15` chunks and hash checks
//! ([`VerifyStats`] counts them and sums the bound), so the soundness error per round is
//! below `2^15 · 2^-56 + 2^15 · 2^-59 < 2^-40`.
//!
//! # Cost
//!
//! For `K` gate words (each 64 AND gates) in large batches, `B = 3`: `3K + 3` triple
//! words (one AND each), `2(B - 1)K + 2K = 6K` opened words, and hashing of those and
//! of `3K` words of `v`. Per gate word a party sends about `3 + 6 = 9` words, against 1
//! for the gate itself.

use crate::channel::{PartyId, Peer};
use crate::error::EngineError;
use crate::party::{bytes_into_words, words_into_bytes, Party};
use crate::prg::{Prg, Purpose, Seed};
use crate::share::Shared;
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
    /// Upper bound on the probability that a wrong gate went undetected so far: the sum
    /// of the per-chunk and per-hash bounds (see the module documentation).
    pub error_bound: f64,
}

/// Shares of a batch of AND gates, word by word: inputs `x`, `y` and output `z`, each as
/// this party's two replicated shares (`a` = `x_i`, `b` = `x_{i+1}`). Also used for
/// triples `(a, b, c)`. Wiped on drop.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Gates {
    pub(crate) xa: Vec<u64>,
    pub(crate) xb: Vec<u64>,
    pub(crate) ya: Vec<u64>,
    pub(crate) yb: Vec<u64>,
    pub(crate) za: Vec<u64>,
    pub(crate) zb: Vec<u64>,
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gates({} words)", self.len())
    }
}

impl Gates {
    pub(crate) fn len(&self) -> usize {
        self.xa.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.xa.is_empty()
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

    fn cols(&self) -> [&Vec<u64>; 6] {
        [&self.xa, &self.xb, &self.ya, &self.yb, &self.za, &self.zb]
    }

    /// Appends gates given as slices of equal length.
    pub(crate) fn push(&mut self, x: (&[u64], &[u64]), y: (&[u64], &[u64]), z: (&[u64], &[u64])) {
        let src = [x.0, x.1, y.0, y.1, z.0, z.1];
        for (dst, s) in self.cols_mut().into_iter().zip(src) {
            dst.extend_from_slice(s);
        }
    }

    /// Grows every column by `n` zero words and returns the new tails, to be filled in
    /// parallel.
    pub(crate) fn grow(&mut self, n: usize) -> [&mut [u64]; 6] {
        let old = self.len();
        for c in self.cols_mut() {
            c.resize(old + n, 0);
        }
        let [xa, xb, ya, yb, za, zb] = self.cols_mut();
        [
            &mut xa[old..],
            &mut xb[old..],
            &mut ya[old..],
            &mut yb[old..],
            &mut za[old..],
            &mut zb[old..],
        ]
    }

    /// The gates at `idx`, in that order.
    fn gather(&self, idx: &[u32]) -> Gates {
        let pick = |c: &Vec<u64>| -> Vec<u64> { idx.par_iter().map(|&i| c[i as usize]).collect() };
        let [xa, xb, ya, yb, za, zb] = self.cols();
        Gates {
            xa: pick(xa),
            xb: pick(xb),
            ya: pick(ya),
            yb: pick(yb),
            za: pick(za),
            zb: pick(zb),
        }
    }

    /// Gates `range`, as a new batch.
    fn slice(&self, range: std::ops::Range<usize>) -> Gates {
        let [xa, xb, ya, yb, za, zb] = self.cols();
        let s = |c: &Vec<u64>| c[range.clone()].to_vec();
        Gates {
            xa: s(xa),
            xb: s(xb),
            ya: s(ya),
            yb: s(yb),
            za: s(za),
            zb: s(zb),
        }
    }

    fn append(&mut self, other: &Gates) {
        for (dst, src) in self.cols_mut().into_iter().zip(other.cols()) {
            dst.extend_from_slice(src);
        }
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

/// Soundness target per chunk: `ε_chunk ≤ 2^-56`.
pub const CHUNK_SECURITY_BITS: f64 = 56.0;

/// Largest number of buckets in one chunk (bounds the memory and the permutation).
const MAX_CHUNK_BUCKETS: usize = 1 << 19;

/// Bucket sizes considered.
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

/// How `k` gate words are verified: chunks of at most `2^19` buckets, each with the
/// bucket size that needs the fewest triples while meeting [`CHUNK_SECURITY_BITS`].
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

const P61: u64 = (1u64 << 61) - 1;

#[inline(always)]
fn reduce(x: u128) -> u64 {
    let x = (x & P61 as u128) + (x >> 61);
    let x = (x & P61 as u128) + (x >> 61);
    let x = x as u64;
    if x >= P61 {
        x - P61
    } else {
        x
    }
}

/// Words hashed per parallel task.
const HASH_CHUNK: usize = 1 << 13;

/// The keyed linear hashes of `xs` (each as long as the reservation) under the stream
/// words from block `start` of `prg`: `Σ_k r_k·lo(w_k) + r_k²·hi(w_k) mod 2^61 - 1`,
/// `r_k` the stream's word `k` shifted to 61 bits. Two inputs that differ hash equal for
/// at most a `2/p` fraction of keys (a non-zero polynomial of degree 2 in one `r_k`).
fn keyed_hashes<const M: usize>(prg: &Prg, start: u64, xs: [&[u64]; M]) -> [u64; M] {
    let n = xs[0].len();
    let parts: Vec<[u64; M]> = (0..n.div_ceil(HASH_CHUNK))
        .into_par_iter()
        .map(|c| {
            let lo = c * HASH_CHUNK;
            let hi = n.min(lo + HASH_CHUNK);
            let mut r = vec![0u64; hi - lo];
            prg.fill_at(start + (lo / 2) as u64, &mut r);
            let mut acc = [0u128; M];
            for (k, &rk) in r.iter().enumerate() {
                let r1 = rk >> 3;
                let r2 = reduce(r1 as u128 * r1 as u128);
                for (m, x) in xs.iter().enumerate() {
                    let w = x[lo + k];
                    acc[m] +=
                        r1 as u128 * (w & 0xffff_ffff) as u128 + r2 as u128 * (w >> 32) as u128;
                }
            }
            acc.map(reduce)
        })
        .collect();
    let mut out = [0u64; M];
    for p in parts {
        for m in 0..M {
            out[m] = reduce(out[m] as u128 + p[m] as u128);
        }
    }
    out
}

/// Log2 of the keyed hash's collision bound.
const HASH_LOG2_ERROR: f64 = -59.0;

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
struct Failure {
    what: String,
    culprit: Option<PartyId>,
}

fn fail(what: &str) -> Option<Failure> {
    Some(Failure {
        what: what.to_owned(),
        culprit: None,
    })
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
        let gates = std::mem::take(&mut self.pending);
        let plan = plan_chunks(gates.len());
        let total: usize = plan.iter().map(ChunkPlan::words).sum();
        if total > u32::MAX as usize {
            return Err(EngineError::InvalidInput(format!(
                "{} gate words pending: verify more often",
                gates.len()
            )));
        }
        let mut failure: Option<Failure> = None;

        // Round 1: random triples, and the coin commitments.
        let mut coin = Coin {
            seed: Seed::random().to_bytes(),
            commitment: [0; 32],
        };
        coin.commitment = commit(self.id(), &coin.seed);
        let (mut triples, z) = self.random_triples(total);
        let mut msg = self.take_message(total);
        words_into_bytes(&z, &mut msg);
        self.send_message(Peer::Prev, msg)?;
        self.send_bytes(Peer::Next, coin.commitment.to_vec())?;
        self.send_bytes(Peer::Prev, coin.commitment.to_vec())?;
        let got = self.recv_message(Peer::Next, total)?;
        triples.zb = vec![0u64; total];
        bytes_into_words(&got, &mut triples.zb);
        self.recycle_message(got);
        triples.za = z;
        let from_next = self.recv_bytes(Peer::Next, 32)?;
        let from_prev = self.recv_bytes(Peer::Prev, 32)?;

        // Round 2: reveal, echoing the commitment of the other peer.
        for (to, echo) in [(Peer::Next, &from_prev), (Peer::Prev, &from_next)] {
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
            (me.next(), &reveal_next, &from_next, &from_prev),
            (me.prev(), &reveal_prev, &from_prev, &from_next),
        ] {
            let seed: [u8; 32] = reveal[..32].try_into().expect("32 bytes");
            if commit(peer, &seed)[..] != committed[..] {
                failure.get_or_insert(Failure {
                    what: format!("{peer}'s coin-toss seed does not open its commitment"),
                    culprit: Some(peer),
                });
            }
            if reveal[32..] != other_commit[..] {
                failure = failure.or(fail(
                    "the coin-toss commitments the two peers report disagree",
                ));
            }
            seeds[peer.index()] = seed;
        }
        let mut h = Sha3_256::new();
        h.update(COIN_DOMAIN);
        for s in &seeds {
            h.update(s);
        }
        let coin_seed: [u8; 32] = h.finalize().into();
        coin.seed.zeroize();

        // Bucketing: per chunk, a permutation of its triples from the coin.
        let mut opened_triples = Gates::default();
        let mut firsts = Gates::default();
        let mut seconds = Gates::default();
        let mut outputs = Gates::default();
        let mut off = 0usize;
        for (c, ch) in plan.iter().enumerate() {
            let mut hc = Sha3_256::new();
            hc.update(b"acs/verify/chunk/v1");
            hc.update(coin_seed);
            hc.update((c as u64).to_le_bytes());
            let chunk_seed: [u8; 32] = hc.finalize().into();
            let mut prg = Prg::new(&Seed::from_bytes(chunk_seed), Purpose::Bucketing);
            let words = ch.words();
            let mut perm = prg.permutation(words);
            perm.iter_mut().for_each(|p| *p += off as u32);
            off += words;
            let b = ch.bucket;
            opened_triples.append(&triples.gather(&perm[..b]));
            let slots = &perm[b..];
            let first_idx: Vec<u32> = slots.iter().step_by(b).copied().collect();
            let first = triples.gather(&first_idx);
            for j in 1..b {
                let idx: Vec<u32> = slots.iter().skip(j).step_by(b).copied().collect();
                firsts.append(&first);
                seconds.append(&triples.gather(&idx));
            }
            outputs.append(&first.slice(0..ch.gates));
        }
        drop(triples);
        // The gates are checked against their buckets' first triples.
        firsts.append(&gates);
        seconds.append(&outputs);
        drop((gates, outputs));

        // Round 3: open the cut-and-choose triples, and ρ, σ of every sacrifice.
        let n_cc = opened_triples.len();
        let n_sac = firsts.len();
        let mut open = Shared {
            a: Vec::with_capacity(3 * n_cc + 2 * n_sac),
            b: Vec::with_capacity(3 * n_cc + 2 * n_sac),
        };
        for (a, b) in [
            (&opened_triples.xa, &opened_triples.xb),
            (&opened_triples.ya, &opened_triples.yb),
            (&opened_triples.za, &opened_triples.zb),
        ] {
            open.a.extend_from_slice(a);
            open.b.extend_from_slice(b);
        }
        for (f, s) in [
            ((&firsts.xa, &firsts.xb), (&seconds.xa, &seconds.xb)),
            ((&firsts.ya, &firsts.yb), (&seconds.ya, &seconds.yb)),
        ] {
            open.a
                .par_extend(f.0.par_iter().zip(s.0).map(|(x, y)| x ^ y));
            open.b
                .par_extend(f.1.par_iter().zip(s.1).map(|(x, y)| x ^ y));
        }
        let (values, open_ok) = self.open_checked(&open)?;
        drop(open);
        if !open_ok {
            failure = failure.or(fail("an opened value and its keyed hash disagree"));
        }
        let (cc_a, rest) = values.split_at(n_cc);
        let (cc_b, rest) = rest.split_at(n_cc);
        let (cc_c, rest) = rest.split_at(n_cc);
        let (rho, sigma) = rest.split_at(n_sac);
        if cc_a
            .iter()
            .zip(cc_b)
            .zip(cc_c)
            .any(|((a, b), c)| a & b != *c)
        {
            failure = failure.or(fail("an opened triple is wrong (cut-and-choose)"));
        }

        // v = z ^ c ^ (σ & a) ^ (ρ & b) ^ (ρ & σ) for each sacrifice: a sharing of zero.
        let id = me.index();
        let pub_a = if id == 0 { u64::MAX } else { 0 };
        let pub_b = if id == 2 { u64::MAX } else { 0 };
        let v = |z: &[u64], c: &[u64], a: &[u64], b: &[u64], public: u64| -> Vec<u64> {
            (0..n_sac)
                .into_par_iter()
                .map(|k| {
                    let (r, s) = (rho[k], sigma[k]);
                    z[k] ^ c[k] ^ (s & a[k]) ^ (r & b[k]) ^ (public & r & s)
                })
                .collect()
        };
        let v = Shared {
            a: v(&firsts.za, &seconds.za, &seconds.xa, &seconds.ya, pub_a),
            b: v(&firsts.zb, &seconds.zb, &seconds.xb, &seconds.yb, pub_b),
        };
        drop((firsts, seconds, values));

        // Round 4: the zero check, carrying every failure seen so far.
        let result = self.zero_check(&v, &coin_seed, failure);
        let chunk_error: f64 = plan.iter().map(|c| c.log2_error().exp2()).sum();
        self.vstats.verifications += 1;
        self.vstats.gate_words += plan.iter().map(|c| c.gates as u64).sum::<u64>();
        self.vstats.triple_words += total as u64;
        self.vstats.chunks += plan.len() as u64;
        self.vstats.hash_checks += 4;
        self.vstats.error_bound += chunk_error + 4.0 * HASH_LOG2_ERROR.exp2();
        result
    }

    /// `n` random triple words, without `c` yet: random sharings `a`, `b` from the
    /// pairwise streams, and this party's share of `a & b` to send (semi-honest AND).
    fn random_triples(&mut self, n: usize) -> (Gates, Vec<u64>) {
        let mut t = Gates::default();
        for (a, b) in [(&mut t.xa, &mut t.xb), (&mut t.ya, &mut t.yb)] {
            *a = vec![0u64; n];
            *b = vec![0u64; n];
            self.rand.prev.fill_par(a);
            self.rand.next.fill_par(b);
        }
        #[allow(unused_mut)]
        let mut z = self.and_local(&t.xa, &t.xb, &t.ya, &t.yb);
        #[cfg(feature = "fault-injection")]
        self.corrupt_words(crate::fault::ComputeSite::Triple, &mut z);
        (t, z)
    }

    /// Opens `x` inside a verification (the values are one-time padded by fresh triples,
    /// or are triples sacrificed by the cut-and-choose): the value from the next party,
    /// a keyed hash of it from the previous one. One round. Returns the values and
    /// whether the hash matched.
    fn open_checked(&mut self, x: &Shared) -> Result<(Vec<u64>, bool), EngineError> {
        let n = x.len();
        let mut msg = self.take_message(n);
        words_into_bytes(&x.b, &mut msg);
        #[cfg(feature = "fault-injection")]
        self.corrupt_bytes(crate::fault::ComputeSite::VerifyOpening, &mut msg);
        self.send_message(Peer::Prev, msg)?;
        let start_next = self.check.next.reserve(n);
        let start_prev = self.check.prev.reserve(n);
        let [check] = keyed_hashes(&self.check.next, start_next, [&x.a]);
        self.send_bytes(Peer::Next, check.to_le_bytes().to_vec())?;
        let got = self.recv_bytes(Peer::Next, 8 * n)?;
        let got_check = self.recv_bytes(Peer::Prev, 8)?;
        self.count_round();
        let mut out = vec![0u64; n];
        bytes_into_words(&got, &mut out);
        self.recycle_message(got);
        let [arrived] = keyed_hashes(&self.check.prev, start_prev, [&out]);
        let ok = arrived.to_le_bytes()[..] == got_check[..];
        out.par_iter_mut()
            .zip(x.a.par_iter().zip(&x.b))
            .for_each(|(o, (a, b))| *o ^= a ^ b);
        Ok((out, ok))
    }

    /// Checks that `v` is a sharing of zero and that both peers saw the same coin and no
    /// failure. One round.
    fn zero_check(
        &mut self,
        v: &Shared,
        coin: &[u8; 32],
        failure: Option<Failure>,
    ) -> Result<(), EngineError> {
        let n = v.len();
        let t: Vec<u64> = v.a.par_iter().zip(&v.b).map(|(a, b)| a ^ b).collect();
        let start_next = self.check.next.reserve(n);
        let start_prev = self.check.prev.reserve(n);
        let [t_next, mine_next] = keyed_hashes(&self.check.next, start_next, [&t, &v.a]);
        let [t_prev, mine_prev] = keyed_hashes(&self.check.prev, start_prev, [&t, &v.b]);
        let status = u8::from(failure.is_none());
        let msg = |h: u64| {
            let mut m = vec![status];
            m.extend_from_slice(&coin[..8]);
            m.extend_from_slice(&h.to_le_bytes());
            m
        };
        self.send_bytes(Peer::Next, msg(t_next))?;
        self.send_bytes(Peer::Prev, msg(t_prev))?;
        let from_next = self.recv_bytes(Peer::Next, 17)?;
        let from_prev = self.recv_bytes(Peer::Prev, 17)?;
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
                    what: "an AND gate or a triple is wrong (sacrifice check)".into(),
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
        // Large batches use buckets of three.
        assert!(plan_chunks(3_000_000).iter().all(|c| c.bucket == 3));
    }

    #[test]
    fn binomial_bound_matches_a_direct_count() {
        // C(10, 3) = 120.
        assert!((log2_binomial(10, 3) - 120f64.log2()).abs() < 1e-9);
    }

    #[test]
    fn keyed_hash_is_linear_and_separates() {
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
