//! Oblivious shuffle of a table of shared rows: three re-sharing steps, each applying a
//! permutation known to one pair of parties and unknown to the third. With at most one
//! corrupt party, at least one permutation is unknown to it, so the composition is a
//! uniformly random permutation it cannot see.
//!
//! Step `j` (pair `A = j`, `B = j+1`, outsider `C = j+2`), following the standard 3-party
//! reshuffle (e.g. Araki et al. 2021, Asharov et al. 2022):
//! - `A` and `B` turn the replicated share into a 2-out-of-2 one for free:
//!   `u = x_j ^ x_{j+1}` at `A`, `v = x_{j+2}` at `B`;
//! - both apply `π_j`, drawn from the seed they share;
//! - fresh `y_j` (seed of `A`,`C`) and `y_{j+2}` (seed of `B`,`C`) are drawn;
//!   `A` sends `π(u) ^ y_j` to `B`, `B` sends `π(v) ^ y_{j+2}` to `A`, and both set
//!   `y_{j+1} = π(u) ^ π(v) ^ y_j ^ y_{j+2}`. `C` only draws its two masks.
//!
//! Each party sends `2n` rows in all, in three rounds, for any `n` (no padding).

use crate::channel::Peer;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::{xor_into, Shared};
use crate::shuffle_mac::MAC_WORDS;
use rayon::prelude::*;
use std::borrow::Cow;
use zeroize::Zeroize;

/// What a shuffle step permutes at `A` or `B`: one vector (the step's own, handed to the
/// spare buffers afterwards, or the caller's), or `A`'s `x_j ^ x_{j+1}` read from the
/// caller's two shares row by row.
enum Source<'a> {
    Rows(Cow<'a, [u64]>),
    Xor(&'a [u64], &'a [u64]),
}

impl Source<'_> {
    /// Row `src` (of `rw` words) into `out`.
    #[inline(always)]
    fn row_into(&self, src: usize, rw: usize, out: &mut [u64]) {
        let at = src * rw..(src + 1) * rw;
        match self {
            Source::Rows(v) => out.copy_from_slice(&v[at]),
            Source::Xor(a, b) => {
                for ((o, x), y) in out.iter_mut().zip(&a[at.clone()]).zip(&b[at]) {
                    *o = x ^ y;
                }
            }
        }
    }
}

/// Words per parallel task of a shuffle step's message pass (128 KiB of the output: its
/// mask and message bytes are written while its words are in cache), and the least
/// work per task of the permutation.
const STEP_TASK_WORDS: usize = 1 << 14;

/// The number of rows of `row_words` words in a table of `words` words.
fn whole_rows(words: usize, row_words: usize) -> Result<usize, EngineError> {
    if row_words == 0 || !words.is_multiple_of(row_words) {
        return Err(EngineError::InvalidInput(format!(
            "table of {words} words is not whole rows of {row_words}"
        )));
    }
    Ok(words / row_words)
}

/// Words per message piece of a shuffle step's exchange (16 MiB).
const SWAP_PIECE_WORDS: usize = 1 << 21;

/// Tables at least this large (words per vector, 256 MiB) do not keep an idle spare
/// vector while their messages are in flight: at a million users that vector is 0.6 GB
/// per party. An owned step's output reuses the vector it no longer reads, so only a
/// step that starts from a borrowed or reduced input faults a fresh one in.
const KEEP_SPARE_BELOW: usize = 1 << 25;

/// Frees the spare vectors of a large table (see [`KEEP_SPARE_BELOW`]).
fn trim_spare(spare: &mut Vec<Vec<u64>>, len: usize) {
    if len >= KEEP_SPARE_BELOW {
        for mut v in spare.drain(..) {
            v.zeroize();
        }
    }
}

/// A buffer of `len` words: a spare one (stale contents, all overwritten by the
/// caller) or a fresh one.
fn buffer(spare: &mut Vec<Vec<u64>>, len: usize) -> Vec<u64> {
    match spare.pop() {
        Some(mut v) => {
            v.resize(len, 0);
            v
        }
        None => vec![0u64; len],
    }
}

/// `dst ^= src`, on all rayon threads.
fn xor_into_par(dst: &mut [u64], src: &[u64]) {
    const CHUNK: usize = 1 << 14;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| xor_into(d, s));
}

/// A shuffle step's input: the caller's table (read only) or one the shuffle owns, whose
/// buffers the step reuses once it has read them.
enum StepInput<'a> {
    Borrowed(&'a Shared),
    Owned(Shared),
    /// Step 0's input already reduced to the one vector this party's role in it reads:
    /// `x_0 ^ x_1` at party 0 (`A`), `x_2` at party 1 (`B`), nothing at party 2 (`C`).
    Reduced(Vec<u64>),
}

impl StepInput<'_> {
    fn get(&self) -> &Shared {
        match self {
            StepInput::Borrowed(t) => t,
            StepInput::Owned(t) => t,
            StepInput::Reduced(_) => unreachable!("a reduced input is only read by step 0"),
        }
    }

    /// Hands an owned input's buffers to `spare` (stale shares: every taker overwrites
    /// them completely).
    fn release(self, spare: &mut Vec<Vec<u64>>) {
        match self {
            StepInput::Owned(mut t) => {
                spare.push(std::mem::take(&mut t.a));
                spare.push(std::mem::take(&mut t.b));
            }
            StepInput::Reduced(v) if v.capacity() > 0 => spare.push(v),
            _ => {}
        }
    }
}

/// One table a shuffle moves: its current rows, their width, and the spare buffers its
/// steps reuse. All tables of one shuffle move under the same permutations.
struct Part<'a> {
    input: StepInput<'a>,
    row_words: usize,
    spare: Vec<Vec<u64>>,
}

impl<'a> Part<'a> {
    fn new(input: StepInput<'a>, row_words: usize) -> Self {
        Part {
            input,
            row_words,
            spare: Vec::new(),
        }
    }
}

impl Drop for Part<'_> {
    fn drop(&mut self) {
        for v in &mut self.spare {
            v.zeroize();
        }
    }
}

impl Party {
    /// Shuffles the `n = table.len() / row_words` rows of `table` with a permutation no
    /// single party knows, re-randomizing every share.
    pub fn shuffle(&mut self, table: &Shared, row_words: usize) -> Result<Shared, EngineError> {
        let n = whole_rows(table.len(), row_words)?;
        self.shuffle_with(StepInput::Borrowed(table), n, row_words)
    }

    /// [`Party::shuffle`] of a table the caller no longer needs: its buffers become the
    /// later steps' outputs, so no table-sized vector is faulted in at all.
    pub(crate) fn shuffle_owned(
        &mut self,
        table: Shared,
        row_words: usize,
    ) -> Result<Shared, EngineError> {
        let n = whole_rows(table.len(), row_words)?;
        self.shuffle_with(StepInput::Owned(table), n, row_words)
    }

    /// [`Party::shuffle_owned`] of an `n`-row table given only as what the first step
    /// reads at this party: `x_0 ^ x_1` at party 0, `x_2` at party 1, an empty vector at
    /// party 2 (see the module documentation). A caller that builds its table for the
    /// shuffle alone never holds both shares of it: at a million users that halves the
    /// table's memory. Semi-honest mode only: the shuffle's MAC (malicious mode) is
    /// computed from both shares.
    pub(crate) fn shuffle_reduced(
        &mut self,
        first: Vec<u64>,
        n: usize,
        row_words: usize,
    ) -> Result<Shared, EngineError> {
        let expected = if self.id().index() == 2 {
            0
        } else {
            n * row_words
        };
        if self.malicious() || first.len() != expected {
            return Err(EngineError::InvalidInput(format!(
                "a reduced shuffle input of {} words (expected {expected}) in {} mode",
                first.len(),
                self.security()
            )));
        }
        self.shuffle_with(StepInput::Reduced(first), n, row_words)
    }

    fn shuffle_with(
        &mut self,
        table: StepInput<'_>,
        n: usize,
        row_words: usize,
    ) -> Result<Shared, EngineError> {
        // Malicious mode: the table's gates are verified before it is shuffled, so the
        // openings that follow a shuffle (the routing tags) never depend on an
        // unverified gate, whatever the caller does.
        self.verify_pending()?;
        // Malicious mode: each row gets a MAC tag that the shuffle moves with it, and the
        // tags are checked before anyone can open a shuffled value (`shuffle_mac`).
        let mac = if self.malicious() {
            let key = self.mac_key();
            let tags = self.mac_tags(&key, table.get(), row_words)?;
            Some((key, tags))
        } else {
            None
        };
        let mut parts = vec![Part::new(table, row_words)];
        let key = mac.map(|(key, tags)| {
            parts.push(Part::new(StepInput::Owned(tags), MAC_WORDS));
            key
        });
        for j in 0..3 {
            self.shuffle_step(&mut parts, n, j)?;
        }
        let mut out: Vec<Shared> = parts
            .iter_mut()
            .map(
                |p| match std::mem::replace(&mut p.input, StepInput::Owned(Shared::default())) {
                    StepInput::Owned(t) => t,
                    StepInput::Borrowed(_) | StepInput::Reduced(_) => {
                        unreachable!("every step's output is owned")
                    }
                },
            )
            .collect();
        drop(parts);
        if let Some(key) = key {
            let tags = out.pop().expect("the tags are the last part");
            self.mac_check(key, &out[0], &tags, row_words)?;
        }
        Ok(out.pop().expect("the table is the first part"))
    }

    /// Step `j` of the shuffle, on every part: each part's input is replaced by its
    /// output.
    fn shuffle_step(
        &mut self,
        parts: &mut [Part<'_>],
        n: usize,
        j: usize,
    ) -> Result<(), EngineError> {
        let me = self.id().index();
        if me == j || me == (j + 1) % 3 {
            let is_a = me == j;
            // A: u = x_j ^ x_{j+1}, permutation shared with B (next), y_j with C (prev).
            // B: v = x_{j+2}, permutation shared with A (prev), y_{j+2} with C (next).
            let perm = if is_a {
                self.perm.next.permutation(n)
            } else {
                self.perm.prev.permutation(n)
            };
            let peer = if is_a { Peer::Next } else { Peer::Prev };
            #[cfg(feature = "fault-injection")]
            let mut first = true;
            for p in parts.iter_mut() {
                let len = n * p.row_words;
                let x = std::mem::replace(&mut p.input, StepInput::Owned(Shared::default()));
                // What the step permutes, and the buffer its output share goes into.
                let (source, mut s) = match x {
                    StepInput::Reduced(v) => {
                        (Source::Rows(Cow::Owned(v)), buffer(&mut p.spare, len))
                    }
                    // An owned table is reduced to the one vector the step permutes
                    // (A folds x_{j+1} into x_j, B needs x_{j+2} only), and the vector
                    // it no longer reads becomes the output (the permutation overwrites
                    // all of it): a step holds two vectors, not three, and faults in no
                    // fresh memory for its output (at a million users 0.65 GB a vector,
                    // about 0.35 s of page faults on this machine kind).
                    StepInput::Owned(mut t) => {
                        if is_a {
                            xor_into_par(&mut t.a, &t.b);
                        }
                        let (read, mut other) = if is_a {
                            (std::mem::take(&mut t.a), std::mem::take(&mut t.b))
                        } else {
                            (std::mem::take(&mut t.b), std::mem::take(&mut t.a))
                        };
                        other.resize(len, 0);
                        (Source::Rows(Cow::Owned(read)), other)
                    }
                    StepInput::Borrowed(t) => {
                        let src = if is_a {
                            Source::Xor(&t.a, &t.b)
                        } else {
                            Source::Rows(Cow::Borrowed(&t.b))
                        };
                        (src, buffer(&mut p.spare, len))
                    }
                };
                // The permutation first, over the whole table, so that an owned input
                // is free (and becomes the mask's buffer) before the mask is drawn: a
                // step holds two table-sized vectors, not three.
                let rw = p.row_words;
                if rw > 0 {
                    s.par_chunks_mut(rw)
                        .zip(perm.par_iter())
                        .with_min_len(STEP_TASK_WORDS / rw)
                        .for_each(|(dst, &src)| source.row_into(src as usize, rw, dst));
                }
                if let Source::Rows(Cow::Owned(v)) = source {
                    p.spare.push(v);
                }
                let mut y = buffer(&mut p.spare, len);
                trim_spare(&mut p.spare, len);
                let start = if is_a {
                    self.mask.prev.reserve(len)
                } else {
                    self.mask.next.reserve(len)
                };
                // Then, a message piece at a time while it is in cache: the mask, the
                // masked rows and their bytes in one pass (pieces and tasks start on a
                // whole block of the mask stream: even word offsets).
                for w0 in (0..len).step_by(SWAP_PIECE_WORDS) {
                    let w1 = len.min(w0 + SWAP_PIECE_WORDS);
                    let mut msg = self.take_message(w1 - w0);
                    {
                        let stream = if is_a {
                            &self.mask.prev
                        } else {
                            &self.mask.next
                        };
                        s[w0..w1]
                            .par_chunks_mut(STEP_TASK_WORDS)
                            .zip(y[w0..w1].par_chunks_mut(STEP_TASK_WORDS))
                            .zip(msg.par_chunks_mut(8 * STEP_TASK_WORDS))
                            .enumerate()
                            .for_each(|(t, ((s, y), m))| {
                                let at = w0 + t * STEP_TASK_WORDS;
                                stream.fill_at(start + (at / 2) as u64, y);
                                for ((w, m), y) in
                                    s.iter_mut().zip(m.chunks_exact_mut(8)).zip(y.iter())
                                {
                                    *w ^= y;
                                    m.copy_from_slice(&w.to_le_bytes());
                                }
                            });
                    }
                    #[cfg(feature = "fault-injection")]
                    if std::mem::take(&mut first)
                        && self.corrupt_bytes(crate::fault::ComputeSite::Reshare, &mut msg)
                    {
                        // The liar keeps its own copy equal to what it sent (consistent
                        // shares).
                        s[w0] ^= 1;
                    }
                    self.send_message(peer, msg)?;
                    let got = self.recv_bytes(peer, 8 * (w1 - w0))?;
                    s[w0..w1]
                        .par_chunks_mut(STEP_TASK_WORDS)
                        .zip(got.par_chunks(8 * STEP_TASK_WORDS))
                        .for_each(|(d, b)| {
                            for (x, w) in d.iter_mut().zip(b.chunks_exact(8)) {
                                *x ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
                            }
                        });
                    self.recycle_message(got);
                }
                p.input = StepInput::Owned(if is_a {
                    Shared { a: y, b: s }
                } else {
                    Shared { a: s, b: y }
                });
            }
            self.count_round();
        } else {
            // C: draws y_j (with A, its next) and y_{j+2} (with B, its prev).
            for p in parts.iter_mut() {
                let len = n * p.row_words;
                std::mem::replace(&mut p.input, StepInput::Owned(Shared::default()))
                    .release(&mut p.spare);
                let mut y_j = buffer(&mut p.spare, len);
                self.mask.next.fill_par(&mut y_j);
                let mut y_j2 = buffer(&mut p.spare, len);
                self.mask.prev.fill_par(&mut y_j2);
                p.input = StepInput::Owned(Shared { a: y_j2, b: y_j });
            }
            self.count_round();
        }
        Ok(())
    }
}
