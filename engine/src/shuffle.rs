//! Oblivious shuffle of a table of shared rows: three steps, each applying a permutation
//! known to one pair of parties and unknown to the third. With at most one corrupt
//! party, at least one permutation is unknown to it, so the composition is a uniformly
//! random permutation it cannot see.
//!
//! Between steps the table is held as a 2-out-of-2 sharing by the pair of the next step
//! (a relay of that sharing, as in the 3-party shuffles of Araki et al., CCS 2021, and
//! Asharov et al., CCS 2022):
//! - before step 0, pair `(0, 1)` turns the replicated share into one for free:
//!   `u = x_0 ^ x_1` at party 0, `v = x_2` at party 1;
//! - in step `j`, both parties of pair `(j, j+1)` apply `π_j`, drawn from the seed they
//!   share; in steps 0 and 1 a fresh `r` is drawn from the same seed, party `j` sends
//!   `π_j(u) ^ r` to party `j+2` (one message, which `r` makes uniform to it) and party
//!   `j+1` keeps `π_j(v) ^ r`: pair `(j+1, j+2)` now holds a 2-out-of-2 sharing of the
//!   permuted table;
//! - after step 2 the pair `(2, 0)` re-shares the result as a replicated sharing: party
//!   1's two components are drawn from its two seeds (`z_1` with party 0, `z_2` with party
//!   2), party 2 sends `π_2(u) ^ z_2` to party 0, party 0 sends `π_2(v) ^ z_1` to party 2,
//!   and both set `z_0` to the XOR of the two messages.
//!
//! Every message is one-time padded by a stream word its receiver lacks. Per `n` rows,
//! party 0 sends `2n`, parties 1 and 2 `n` each (`4n` in all, against `6n` for
//! re-sharing a replicated sharing at every step), in three rounds, for any `n` (no
//! padding).

use crate::channel::Peer;
use crate::declassify::Reason;
use crate::error::EngineError;
use crate::party::{bytes_into_words, Party, PIECE_WORDS};
use crate::prg::Prg;
use crate::share::{xor_into, Shared};
use crate::shuffle_mac::MAC_WORDS;
use rayon::prelude::*;
use std::borrow::Cow;
use zeroize::{Zeroize, Zeroizing};

/// What a party of a step's pair permutes: one vector (its half, handed to the spare
/// buffers afterwards, or the caller's `x_2` at party 1 in step 0), or party 0's
/// `x_0 ^ x_1` in step 0, read from the caller's two shares row by row.
enum Source<'a> {
    Rows(Cow<'a, [u64]>),
    Xor(&'a [u64], &'a [u64]),
}

impl Source<'_> {
    /// Row `src` (of `rw` words) into `out`.
    #[inline(always)]
    fn row_into(&self, src: usize, rw: usize, out: &mut [u64]) {
        self.part_into(src, rw, 0, out);
    }

    /// Words `col .. col + out.len()` of row `src` (of `rw` words) into `out`.
    #[inline(always)]
    fn part_into(&self, src: usize, rw: usize, col: usize, out: &mut [u64]) {
        let at = src * rw + col..src * rw + col + out.len();
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

/// Pieces of a handoff (one-way message of a shuffle step) its sender may have in flight
/// before the receiver acknowledges one: without this a sender on a fast thread queues
/// the whole table in the channel (at a million users 0.67 GB more per party).
const HANDOFF_WINDOW: usize = 2;

/// A handoff receiver's acknowledgement of one piece.
const HANDOFF_ACK: u8 = 0xac;

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

/// What one part of a shuffle holds at this party between steps.
enum Held<'a> {
    /// The caller's table (read by step 0 only).
    Borrowed(&'a Shared),
    /// Both shares of a table the shuffle owns: the caller's, before step 0 (its buffers
    /// are reused once read), or the result, after step 2.
    Owned(Shared),
    /// This party's half of the 2-out-of-2 sharing held by the pair of the next step;
    /// empty at the party outside that pair.
    Half(Vec<u64>),
}

impl Held<'_> {
    /// Both shares of the caller's table (before step 0).
    fn shares(&self) -> &Shared {
        match self {
            Held::Borrowed(t) => t,
            Held::Owned(t) => t,
            Held::Half(_) => unreachable!("a reduced input has one vector"),
        }
    }

    /// Hands every buffer to `spare` (stale shares: every taker overwrites them).
    fn release(self, spare: &mut Vec<Vec<u64>>) {
        match self {
            Held::Owned(mut t) => {
                spare.push(std::mem::take(&mut t.a));
                spare.push(std::mem::take(&mut t.b));
            }
            Held::Half(v) if v.capacity() > 0 => spare.push(v),
            _ => {}
        }
    }
}

/// One table a shuffle moves: what this party holds of it, the rows' width, and the
/// spare buffers its steps reuse. All tables of one shuffle move under the same
/// permutations.
struct Part<'a> {
    held: Held<'a>,
    row_words: usize,
    spare: Vec<Vec<u64>>,
}

impl<'a> Part<'a> {
    fn new(held: Held<'a>, row_words: usize) -> Self {
        Part {
            held,
            row_words,
            spare: Vec::new(),
        }
    }

    /// This party's half of the step's pair as rows to read (`first`: it is the pair's
    /// first party), and the vector of an owned table that the half no longer needs. An
    /// owned table is reduced to the one vector the step permutes (the first party folds
    /// x_1 into x_0), and the other can take the output: a step holds two table-sized
    /// vectors, not three.
    fn source(&mut self, first: bool) -> (Source<'a>, Option<Vec<u64>>) {
        match std::mem::replace(&mut self.held, Held::Half(Vec::new())) {
            Held::Half(v) => (Source::Rows(Cow::Owned(v)), None),
            Held::Owned(mut t) => {
                if first {
                    xor_into_par(&mut t.a, &t.b);
                    (
                        Source::Rows(Cow::Owned(std::mem::take(&mut t.a))),
                        Some(std::mem::take(&mut t.b)),
                    )
                } else {
                    (
                        Source::Rows(Cow::Owned(std::mem::take(&mut t.b))),
                        Some(std::mem::take(&mut t.a)),
                    )
                }
            }
            Held::Borrowed(t) => {
                let src = if first {
                    Source::Xor(&t.a, &t.b)
                } else {
                    Source::Rows(Cow::Borrowed(&t.b))
                };
                (src, None)
            }
        }
    }

    /// Both shares of the part after the last step (which always leaves them owned).
    fn result(&mut self) -> Shared {
        match std::mem::replace(&mut self.held, Held::Half(Vec::new())) {
            Held::Owned(t) => t,
            Held::Borrowed(_) | Held::Half(_) => unreachable!("the last step's output is owned"),
        }
    }

    /// Hands a source's own vector to the spare buffers once it has been read.
    fn release(&mut self, source: Source<'_>) {
        if let Source::Rows(Cow::Owned(v)) = source {
            self.spare.push(v);
        }
    }

    /// This party's half of the step's pair (`first`: it is the pair's first party),
    /// permuted by `perm` into a buffer of `len` words; the vectors it was read from
    /// become spare.
    fn permuted(&mut self, first: bool, perm: &[u32], len: usize) -> Vec<u64> {
        let (source, free) = self.source(first);
        let mut out = match free {
            Some(v) => v,
            None => buffer(&mut self.spare, len),
        };
        out.resize(len, 0);
        let rw = self.row_words;
        if rw > 0 {
            out.par_chunks_mut(rw)
                .zip(perm.par_iter())
                .with_min_len(STEP_TASK_WORDS / rw)
                .for_each(|(dst, &src)| source.row_into(src as usize, rw, dst));
        }
        self.release(source);
        out
    }
}

impl Drop for Part<'_> {
    fn drop(&mut self) {
        for v in &mut self.spare {
            v.zeroize();
        }
    }
}

/// Words `start .. start + out.len()` of the table whose row `k` is row `perm[k]` of
/// `source` (rows of `rw` words), without building that table.
fn gather_words(source: &Source<'_>, perm: &[u32], rw: usize, start: usize, out: &mut [u64]) {
    let (mut w, mut o) = (start, 0);
    while o < out.len() {
        let (row, col) = (w / rw, w % rw);
        let take = (rw - col).min(out.len() - o);
        source.part_into(perm[row] as usize, rw, col, &mut out[o..o + take]);
        w += take;
        o += take;
    }
}

/// `s ^=` the mask stream's words reserved at block `start`, on all rayon threads.
fn mask_in_place(stream: &Prg, start: u64, s: &mut [u64]) {
    s.par_chunks_mut(STEP_TASK_WORDS).enumerate().for_each_init(
        || Zeroizing::new(vec![0u64; STEP_TASK_WORDS]),
        |y, (t, s)| {
            let y = &mut y[..s.len()];
            stream.fill_at(start + (t * STEP_TASK_WORDS / 2) as u64, y);
            xor_into(s, y);
        },
    );
}

impl Party {
    /// Waits for a handoff receiver's acknowledgement of one piece.
    fn handoff_ack(&mut self, from: Peer) -> Result<(), EngineError> {
        let ack = self.recv_bytes(from, 1)?;
        if ack[0] != HANDOFF_ACK {
            return Err(EngineError::PeerMisbehaved {
                peer: self.id().peer(from),
                what: "malformed acknowledgement of a shuffle handoff".into(),
            });
        }
        Ok(())
    }

    /// Shuffles the `n = table.len() / row_words` rows of `table` with a permutation no
    /// single party knows, re-randomizing every share.
    pub fn shuffle(&mut self, table: &Shared, row_words: usize) -> Result<Shared, EngineError> {
        let n = whole_rows(table.len(), row_words)?;
        self.shuffle_with(Held::Borrowed(table), n, row_words)
    }

    /// [`Party::shuffle`] of a table the caller no longer needs: its buffers become the
    /// steps' outputs.
    pub(crate) fn shuffle_owned(
        &mut self,
        table: Shared,
        row_words: usize,
    ) -> Result<Shared, EngineError> {
        let n = whole_rows(table.len(), row_words)?;
        self.shuffle_with(Held::Owned(table), n, row_words)
    }

    /// Shuffles an `n`-row table given only as what the first step reads at this party
    /// (`x_0 ^ x_1` at party 0, `x_2` at party 1, an empty vector at party 2; see the
    /// module documentation), and routes it: column `dest_col` of each row is its
    /// destination, opened (for [`Reason::RouteAfterShuffle`]) once the shuffle has
    /// permuted it, and `place` maps the opened column (in shuffled order) to the rows
    /// to keep, in the order the caller wants them (`kept[t]`: the shuffled position of
    /// the row to put at `t`). Returns the kept rows only, in that order. Semi-honest
    /// mode only: the shuffle's MAC (malicious mode) is computed from both shares.
    ///
    /// Why reduced: a caller that builds its table for the shuffle alone never holds
    /// both shares of it (at a million users that halves the payload move's table).
    /// Why routed: the destinations are opened before the last step moves the rest of
    /// the table, so that step permutes, masks and sends only the kept rows and writes
    /// them straight into the caller's order. The round's payload move keeps half of its
    /// rows (the other half are blanks and receipts that only pad the destinations to a
    /// public multiset): its last step does half the work and maps half the memory.
    /// What is opened is what a whole shuffle followed by opening the column opens; the
    /// last step's messages are one-time padded as in every step, and which rows it
    /// keeps is a function of the opened column.
    pub(crate) fn shuffle_reduced_routed(
        &mut self,
        first: Vec<u64>,
        n: usize,
        row_words: usize,
        dest_col: usize,
        place: impl FnOnce(&[u64]) -> Result<Vec<u32>, EngineError>,
    ) -> Result<Shared, EngineError> {
        if dest_col >= row_words {
            return Err(EngineError::InvalidInput(format!(
                "destination column {dest_col} of {row_words}-word rows"
            )));
        }
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
        // The destination column travels as a part of its own, ahead of the table.
        let dests: Vec<u64> = first.par_chunks(row_words).map(|r| r[dest_col]).collect();
        let mut parts = vec![
            Part::new(Held::Half(dests), 1),
            Part::new(Held::Half(first), row_words),
        ];
        for j in 0..2 {
            let perm = self.step_permutation(n, j);
            self.shuffle_step(&mut parts, &perm, n, j)?;
        }
        let last = self.step_permutation(n, 2);
        let mut table = parts.pop().expect("two parts");
        self.shuffle_step(&mut parts, &last, n, 2)?;
        let dests = parts[0].result();
        drop(parts);
        let opened = self.declassify_words(Reason::RouteAfterShuffle, &dests)?;
        let kept = place(&opened)?;
        if let Some(&k) = kept.iter().find(|&&k| k as usize >= n) {
            return Err(EngineError::InvalidInput(format!(
                "kept row {k} of a {n}-row shuffle"
            )));
        }
        // The party outside the last step's pair permutes nothing.
        let perm: Vec<u32> = if last.is_empty() {
            Vec::new()
        } else {
            kept.iter().map(|&k| last[k as usize]).collect()
        };
        self.shuffle_step(std::slice::from_mut(&mut table), &perm, kept.len(), 2)?;
        Ok(table.result())
    }

    fn shuffle_with(
        &mut self,
        table: Held<'_>,
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
            let tags = self.mac_tags(&key, table.shares(), row_words)?;
            Some((key, tags))
        } else {
            None
        };
        let mut parts = vec![Part::new(table, row_words)];
        let key = mac.map(|(key, tags)| {
            parts.push(Part::new(Held::Owned(tags), MAC_WORDS));
            key
        });
        for j in 0..3 {
            let perm = self.step_permutation(n, j);
            self.shuffle_step(&mut parts, &perm, n, j)?;
        }
        let mut out: Vec<Shared> = parts.iter_mut().map(Part::result).collect();
        drop(parts);
        if let Some(key) = key {
            let tags = out.pop().expect("the tags are the last part");
            self.mac_check(key, &out[0], &tags, row_words)?;
        }
        Ok(out.pop().expect("the table is the first part"))
    }

    /// This party's permutation of step `j` over `n` rows: `π_j`, drawn from the seed
    /// of the step's pair, or nothing at the party outside the pair.
    fn step_permutation(&mut self, n: usize, j: usize) -> Vec<u32> {
        match (self.id().index() + 3 - j) % 3 {
            0 => self.perm.next.permutation(n),
            1 => self.perm.prev.permutation(n),
            _ => Vec::new(),
        }
    }

    /// Step `j` of the shuffle, on every part (see the module documentation): the pair
    /// `(j, j+1)` permutes its 2-out-of-2 sharing by `perm` (from
    /// [`Party::step_permutation`]; row `k` of the result is row `perm[k]` of the input,
    /// so a `perm` of fewer rows than the input keeps only those), producing `n` rows;
    /// in steps 0 and 1 party `j` hands its masked half to party `j+2`, in step 2 the
    /// pair re-shares the result as a replicated sharing with party 1's two components
    /// drawn from its streams.
    fn shuffle_step(
        &mut self,
        parts: &mut [Part<'_>],
        perm: &[u32],
        n: usize,
        j: usize,
    ) -> Result<(), EngineError> {
        let me = self.id().index();
        // 0: the pair's first party (party j), 1: its second, 2: the party outside it.
        let role = (me + 3 - j) % 3;
        let last = j == 2;
        #[cfg(feature = "fault-injection")]
        let mut first_message = true;
        for p in parts.iter_mut() {
            let len = n * p.row_words;
            match (role, last) {
                // Party j: its permuted half, masked with r (drawn with party j+1), to
                // party j+2, which then holds it as its half of the next pair.
                // The permuted half is never built: each message piece gathers its rows
                // from the half itself (one pass over a table and one table-sized
                // buffer fewer).
                (0, false) => {
                    let (source, free) = p.source(true);
                    p.spare.extend(free);
                    let rw = p.row_words;
                    let start = self.mask.next.reserve(len);
                    let pieces = len.div_ceil(PIECE_WORDS);
                    for (i, w0) in (0..len).step_by(PIECE_WORDS).enumerate() {
                        if i >= HANDOFF_WINDOW {
                            self.handoff_ack(Peer::Prev)?;
                        }
                        let w1 = len.min(w0 + PIECE_WORDS);
                        let mut msg = self.take_message(w1 - w0);
                        let stream = &self.mask.next;
                        let source = &source;
                        msg.par_chunks_mut(8 * STEP_TASK_WORDS)
                            .enumerate()
                            .for_each_init(
                                || Zeroizing::new(vec![0u64; 2 * STEP_TASK_WORDS]),
                                |buf, (t, m)| {
                                    let (x, y) = buf.split_at_mut(STEP_TASK_WORDS);
                                    let words = m.len() / 8;
                                    let (x, y) = (&mut x[..words], &mut y[..words]);
                                    let at = w0 + t * STEP_TASK_WORDS;
                                    gather_words(source, perm, rw, at, x);
                                    stream.fill_at(start + (at / 2) as u64, y);
                                    for ((w, m), y) in
                                        x.iter().zip(m.chunks_exact_mut(8)).zip(y.iter())
                                    {
                                        m.copy_from_slice(&(w ^ y).to_le_bytes());
                                    }
                                },
                            );
                        #[cfg(feature = "fault-injection")]
                        if std::mem::take(&mut first_message) {
                            // Nothing of it stays here, so there is no copy to keep
                            // consistent.
                            self.corrupt_bytes(crate::fault::ComputeSite::Reshare, &mut msg);
                        }
                        self.send_message(Peer::Prev, msg)?;
                    }
                    for _ in 0..pieces.min(HANDOFF_WINDOW) {
                        self.handoff_ack(Peer::Prev)?;
                    }
                    p.release(source);
                }
                // Party j+1: its permuted half, masked with the same r.
                (1, false) => {
                    let mut s = p.permuted(false, perm, len);
                    let start = self.mask.prev.reserve(len);
                    mask_in_place(&self.mask.prev, start, &mut s);
                    p.held = Held::Half(s);
                }
                // Party j+2: receives party j's masked half.
                (_, false) => {
                    std::mem::replace(&mut p.held, Held::Half(Vec::new())).release(&mut p.spare);
                    let mut s = buffer(&mut p.spare, len);
                    let pieces = len.div_ceil(PIECE_WORDS);
                    for w0 in (0..len).step_by(PIECE_WORDS) {
                        let w1 = len.min(w0 + PIECE_WORDS);
                        let got = self.recv_bytes(Peer::Next, 8 * (w1 - w0))?;
                        bytes_into_words(&got, &mut s[w0..w1]);
                        // Pieces of a table larger than the window are not pooled: a
                        // receiver gets the whole table's worth and sends none back, so
                        // over a round its pool would fill with 24 of them (384 MiB a
                        // party at a million users; measured 8.25 GB at the peak against
                        // 7.1 without). Freed, the sender's next piece reuses the block.
                        if pieces <= HANDOFF_WINDOW {
                            self.recycle_message(got);
                        } else {
                            drop(Zeroizing::new(got));
                        }
                        self.send_bytes(Peer::Next, vec![HANDOFF_ACK])?;
                    }
                    p.held = Held::Half(s);
                }
                // Step 2, party 1: its components z_1 (with party 0) and z_2 (with party
                // 2) are pure stream words.
                (_, true) if role == 2 => {
                    std::mem::replace(&mut p.held, Held::Half(Vec::new())).release(&mut p.spare);
                    let mut z1 = buffer(&mut p.spare, len);
                    self.mask.prev.fill_par(&mut z1);
                    let mut z2 = buffer(&mut p.spare, len);
                    self.mask.next.fill_par(&mut z2);
                    p.held = Held::Owned(Shared { a: z1, b: z2 });
                }
                // Step 2, parties 2 (first) and 0: party 2 sends π(u) ^ z_2 to party 0,
                // party 0 sends π(v) ^ z_1 to party 2, and both set
                // z_0 = π(u) ^ π(v) ^ z_1 ^ z_2.
                (_, true) => {
                    let first = role == 0;
                    let mut s = p.permuted(first, perm, len);
                    let mut y = buffer(&mut p.spare, len);
                    let peer = if first { Peer::Next } else { Peer::Prev };
                    let start = if first {
                        self.mask.prev.reserve(len)
                    } else {
                        self.mask.next.reserve(len)
                    };
                    for w0 in (0..len).step_by(PIECE_WORDS) {
                        let w1 = len.min(w0 + PIECE_WORDS);
                        let mut msg = self.take_message(w1 - w0);
                        {
                            let stream = if first {
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
                        if std::mem::take(&mut first_message)
                            && self.corrupt_bytes(crate::fault::ComputeSite::Reshare, &mut msg)
                        {
                            // The liar keeps its own z_0 equal to what the other party
                            // computes from its message (consistent shares).
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
                    // Party 2 holds (z_2, z_0), party 0 (z_0, z_1).
                    p.held = Held::Owned(if first {
                        Shared { a: y, b: s }
                    } else {
                        Shared { a: s, b: y }
                    });
                }
            }
        }
        self.count_round();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` rows of `width` words, column 0 a destination: `0 .. m` once each on random
    /// rows, `u64::MAX` elsewhere.
    fn routed_table(rng: &mut impl Rng, n: usize, m: usize, width: usize) -> Vec<u64> {
        let mut rows: Vec<u64> = (0..n * width).map(|_| rng.gen()).collect();
        let mut at: Vec<usize> = (0..n).collect();
        for i in 0..n {
            at.swap(i, rng.gen_range(i..n));
        }
        for (k, &r) in at.iter().enumerate() {
            rows[r * width] = if k < m { k as u64 } else { u64::MAX };
        }
        rows
    }

    fn run_routed(rows: &[u64], n: usize, width: usize) -> [Result<Shared, EngineError>; 3] {
        let [x0, x1, x2] = crate::share::xor_share(rows, &mut rand::rngs::StdRng::seed_from_u64(7));
        // What the first step reads: x_0 ^ x_1 at party 0, x_2 at party 1, nothing at 2.
        let mut first0 = x0;
        xor_into(&mut first0, &x1);
        let firsts = std::sync::Arc::new([first0, x2, Vec::new()]);
        crate::testing::run_three(move |p| {
            let first = firsts[p.id().index()].clone();
            p.shuffle_reduced_routed(first, n, width, 0, |dests| {
                let mut kept = vec![u32::MAX; dests.iter().filter(|&&d| d != u64::MAX).count()];
                for (k, &d) in dests.iter().enumerate() {
                    if d != u64::MAX {
                        kept[d as usize] = k as u32;
                    }
                }
                Ok(kept)
            })
        })
    }

    #[test]
    fn a_routed_shuffle_returns_the_kept_rows_in_their_destinations_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (n, m, width) in [(1, 1, 1), (2, 0, 3), (1000, 420, 5), (4097, 4097, 2)] {
            let rows = routed_table(&mut rng, n, m, width);
            let out = run_routed(&rows, n, width).map(|r| r.expect("party"));
            let got: Vec<u64> = (0..m * width)
                .map(|i| out[0].a[i] ^ out[0].b[i] ^ out[1].b[i])
                .collect();
            let mut want = vec![0u64; m * width];
            for r in rows.chunks(width).filter(|r| r[0] != u64::MAX) {
                let t = r[0] as usize;
                want[t * width..(t + 1) * width].copy_from_slice(r);
            }
            assert_eq!(got, want, "n {n}, m {m}, width {width}");
            for o in &out {
                assert_eq!((o.a.len(), o.b.len()), (m * width, m * width));
            }
        }
    }

    #[test]
    fn a_routed_shuffle_refuses_a_bad_input_or_a_kept_row_past_the_table() {
        let r = crate::testing::run_three(|p| {
            p.shuffle_reduced_routed(vec![0; 3], 2, 2, 0, |_| Ok(vec![0]))
        });
        assert!(r
            .iter()
            .all(|r| matches!(r, Err(EngineError::InvalidInput(_)))));
        let r = crate::testing::run_three(|p| {
            let first = if p.id().index() == 2 {
                Vec::new()
            } else {
                vec![0; 4]
            };
            p.shuffle_reduced_routed(first, 2, 2, 0, |_| Ok(vec![2]))
        });
        assert!(r
            .iter()
            .all(|r| matches!(r, Err(EngineError::InvalidInput(_)))));
    }
}
