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
use crate::party::{words_into_bytes, Party};
use crate::share::{xor_into, Shared};
use rayon::prelude::*;
use zeroize::Zeroize;

/// `out[k] = a[perm[k]] ^ b[perm[k]]` for rows of `row_words` words.
fn permute_xor(a: &[u64], b: &[u64], row_words: usize, perm: &[u32], out: &mut [u64]) {
    if row_words == 0 {
        return;
    }
    out.par_chunks_mut(row_words)
        .zip(perm.par_iter())
        .for_each(|(dst, &src)| {
            let s = src as usize * row_words;
            for ((d, x), y) in dst
                .iter_mut()
                .zip(&a[s..s + row_words])
                .zip(&b[s..s + row_words])
            {
                *d = x ^ y;
            }
        });
}

/// `out[k] = rows[perm[k]]` for rows of `row_words` words, into `out`.
fn permute_into(rows: &[u64], row_words: usize, perm: &[u32], out: &mut [u64]) {
    if row_words == 0 {
        return;
    }
    out.par_chunks_mut(row_words)
        .zip(perm.par_iter())
        .for_each(|(dst, &src)| {
            let s = src as usize * row_words;
            dst.copy_from_slice(&rows[s..s + row_words]);
        });
}

/// Tables at least this large (words per vector, 256 MiB) do not keep an idle spare
/// vector while their messages are in flight: at a million users that vector is 0.6 GB
/// per party, and faulting a fresh one in for the next step is the cheaper way to keep
/// peak memory down.
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
}

impl StepInput<'_> {
    fn get(&self) -> &Shared {
        match self {
            StepInput::Borrowed(t) => t,
            StepInput::Owned(t) => t,
        }
    }

    /// Hands an owned input's buffers to `spare` (stale shares: every taker overwrites
    /// them completely).
    fn release(self, spare: &mut Vec<Vec<u64>>) {
        if let StepInput::Owned(mut t) = self {
            spare.push(std::mem::take(&mut t.a));
            spare.push(std::mem::take(&mut t.b));
        }
    }
}

impl Party {
    /// Shuffles the `n = table.len() / row_words` rows of `table` with a permutation no
    /// single party knows, re-randomizing every share.
    pub fn shuffle(&mut self, table: &Shared, row_words: usize) -> Result<Shared, EngineError> {
        self.shuffle_with(table, None, row_words)
    }

    /// [`Party::shuffle`] of a table the caller no longer needs: its buffers become the
    /// later steps' outputs, so no table-sized vector is faulted in at all.
    pub(crate) fn shuffle_owned(
        &mut self,
        table: Shared,
        row_words: usize,
    ) -> Result<Shared, EngineError> {
        self.shuffle_with(&Shared::default(), Some(table), row_words)
    }

    /// Shuffles `owned` if given, else `table`.
    fn shuffle_with(
        &mut self,
        table: &Shared,
        mut owned: Option<Shared>,
        row_words: usize,
    ) -> Result<Shared, EngineError> {
        // Malicious mode: the table's gates are verified before it is shuffled, so the
        // openings that follow a shuffle (the routing tags) never depend on an
        // unverified gate, whatever the caller does.
        self.verify_pending()?;
        let words = owned.as_ref().unwrap_or(table).len();
        if row_words == 0 || !words.is_multiple_of(row_words) {
            return Err(EngineError::InvalidInput(format!(
                "table of {words} words is not whole rows of {row_words}"
            )));
        }
        let n = words / row_words;
        // Each step's input buffers become its own output buffers as soon as it has read
        // them, so a party holds three table-sized vectors at most (two at the party that
        // only draws masks), and a large table is faulted in once, not three times.
        let mut spare = Vec::new();
        let first = match owned.take() {
            Some(t) => StepInput::Owned(t),
            None => StepInput::Borrowed(table),
        };
        let mut cur = self.shuffle_step(first, row_words, n, 0, &mut spare)?;
        for j in 1..3 {
            let old = std::mem::take(&mut cur);
            cur = self.shuffle_step(StepInput::Owned(old), row_words, n, j, &mut spare)?;
        }
        for mut v in spare {
            v.zeroize();
        }
        Ok(cur)
    }

    fn shuffle_step(
        &mut self,
        x: StepInput<'_>,
        row_words: usize,
        n: usize,
        j: usize,
        spare: &mut Vec<Vec<u64>>,
    ) -> Result<Shared, EngineError> {
        let me = self.id().index();
        let len = n * row_words;
        if me == j {
            // A: u = x_j ^ x_{j+1}; permutation shared with B (next); y_j with C (prev).
            let perm = self.perm.next.permutation(n);
            let mut sent = buffer(spare, len);
            permute_xor(&x.get().a, &x.get().b, row_words, &perm, &mut sent);
            x.release(spare);
            let mut y_j = buffer(spare, len);
            trim_spare(spare, len);
            self.mask.prev.fill_par(&mut y_j);
            xor_into_par(&mut sent, &y_j);
            self.swap_rows(&mut sent, Peer::Next)?;
            Ok(Shared { a: y_j, b: sent })
        } else if me == (j + 1) % 3 {
            // B: v = x_{j+2}; permutation shared with A (prev); y_{j+2} with C (next).
            let perm = self.perm.prev.permutation(n);
            let mut sent = buffer(spare, len);
            permute_into(&x.get().b, row_words, &perm, &mut sent);
            x.release(spare);
            let mut y_j2 = buffer(spare, len);
            trim_spare(spare, len);
            self.mask.next.fill_par(&mut y_j2);
            xor_into_par(&mut sent, &y_j2);
            self.swap_rows(&mut sent, Peer::Prev)?;
            Ok(Shared { a: sent, b: y_j2 })
        } else {
            // C: draws y_j (with A, its next) and y_{j+2} (with B, its prev).
            x.release(spare);
            let mut y_j = buffer(spare, len);
            self.mask.next.fill_par(&mut y_j);
            let mut y_j2 = buffer(spare, len);
            self.mask.prev.fill_par(&mut y_j2);
            self.count_round();
            Ok(Shared { a: y_j2, b: y_j })
        }
    }

    /// Sends `sent` to `peer`, receives as many words from it, and XORs them into
    /// `sent`, reading them straight from the received message.
    fn swap_rows(&mut self, sent: &mut [u64], peer: Peer) -> Result<(), EngineError> {
        let mut msg = self.take_message(sent.len());
        words_into_bytes(sent, &mut msg);
        #[cfg(feature = "fault-injection")]
        if self.corrupt_bytes(crate::fault::ComputeSite::Reshare, &mut msg) {
            sent[0] ^= 1;
        }
        self.send_message(peer, msg)?;
        let got = self.recv_message(peer, sent.len())?;
        const CHUNK: usize = 1 << 14;
        sent.par_chunks_mut(CHUNK)
            .zip(got.par_chunks(8 * CHUNK))
            .for_each(|(d, b)| {
                for (x, w) in d.iter_mut().zip(b.chunks_exact(8)) {
                    *x ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
                }
            });
        self.recycle_message(got);
        Ok(())
    }
}
