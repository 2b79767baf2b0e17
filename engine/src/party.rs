//! One party of the three-party computation: its link to the other two, its pairwise
//! random streams, its communication counters, and the AND gate.
//!
//! AND on replicated shares (Araki et al., CCS 2016): party `i` computes
//! `z_i = x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i ^ α_i`, where `α_0 ^ α_1 ^ α_2 = 0` comes
//! from the pairwise streams (`α_i = F(s_i) ^ F(s_{i+1})`, `s_i` held by `i` and `i-1`),
//! sends `z_i` to party `i-1` and receives `z_{i+1}` from party `i+1`: one bit per gate
//! per party, one round per batch however many gates it holds.

use crate::channel::{Channel, PartyId, Peer};
use crate::declassify::AuditLog;
use crate::error::EngineError;
use crate::prg::{Prg, Purpose, Seed};
use crate::share::Shared;
use crate::verify::{Gates, SecurityMode, VerifyBuffers, VerifyStats};
use rayon::prelude::*;
use zeroize::Zeroize;

/// Which part of a computation a party is in, as the caller marks it with
/// [`Party::set_phase`]. Only the fault-injection test instrument reads it (to aim a
/// deviation at one part of a round, [`crate::fault`]); without that feature marking a
/// phase does nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Unmarked (anything before the first mark).
    #[default]
    Other,
    /// Oblivious sorting (its comparisons and its shuffle).
    Sort,
    /// The equality circuit of the matching.
    Match,
    /// The multiplexer of the matching.
    Mux,
    /// Routing: the shuffles before the routing tags are opened.
    Route,
}

/// Words per parallel work unit in local gate evaluation (even, so each unit starts on a
/// PRG block boundary).
pub(crate) const CHUNK_WORDS: usize = 2048;

/// Communication counters of one party.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommStats {
    /// Payload bytes this party sent.
    pub bytes_sent: u64,
    /// Messages this party sent.
    pub messages_sent: u64,
    /// Communication rounds (synchronous steps) this party took part in.
    pub rounds: u64,
}

/// The pairwise streams of one party: `prev` is shared with party `i-1` (seed `s_i`),
/// `next` with party `i+1` (seed `s_{i+1}`).
#[derive(Debug)]
pub(crate) struct Streams {
    pub(crate) prev: Prg,
    pub(crate) next: Prg,
}

impl Streams {
    fn new(with_prev: &Seed, with_next: &Seed, purpose: Purpose) -> Self {
        Streams {
            prev: Prg::new(with_prev, purpose),
            next: Prg::new(with_next, purpose),
        }
    }
}

/// One party of the computation. Create the three with [`Party::setup`] (one per
/// process or thread), then run the same protocol calls on all three in the same order.
pub struct Party {
    id: PartyId,
    channel: Box<dyn Channel>,
    pub(crate) zero: Streams,
    pub(crate) perm: Streams,
    pub(crate) mask: Streams,
    /// Random sharings for verification triples.
    pub(crate) rand: Streams,
    /// Keys of the keyed hashes that check openings and zero tests in verification.
    pub(crate) check: Streams,
    pub(crate) audit: AuditLog,
    pub(crate) scratch: Scratch,
    stats: CommStats,
    pub(crate) mode: SecurityMode,
    /// AND gates computed in malicious mode and not yet verified.
    pub(crate) pending: Gates,
    pub(crate) vstats: VerifyStats,
    /// Verification buffers, reused from one verification to the next.
    pub(crate) vbuf: VerifyBuffers,
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: crate::fault::Faults,
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Party")
            .field("id", &self.id)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Party {
    /// Agrees pairwise seeds with the other two parties over `channel` (one round: party
    /// `i` draws `s_i` and sends it to `i-1`, receiving `s_{i+1}` from `i+1`), so that each
    /// seed is known to exactly two parties.
    pub fn setup(id: PartyId, channel: Box<dyn Channel>) -> Result<Self, EngineError> {
        let mine = Seed::random();
        let mut party = Party {
            id,
            channel,
            zero: Streams::new(&mine, &mine, Purpose::ZeroSharing),
            perm: Streams::new(&mine, &mine, Purpose::Permutation),
            mask: Streams::new(&mine, &mine, Purpose::Mask),
            rand: Streams::new(&mine, &mine, Purpose::TripleShares),
            check: Streams::new(&mine, &mine, Purpose::Check),
            audit: AuditLog::default(),
            scratch: Scratch::default(),
            stats: CommStats::default(),
            mode: SecurityMode::default(),
            pending: Gates::default(),
            vstats: VerifyStats::default(),
            vbuf: VerifyBuffers::default(),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        };
        let got = party.exchange_bytes(Peer::Prev, mine.to_bytes().to_vec(), Peer::Next)?;
        let bytes: [u8; 32] = got
            .as_slice()
            .try_into()
            .map_err(|_| EngineError::WrongLength {
                from: id.next(),
                expected: 32,
                got: got.len(),
            })?;
        let theirs = Seed::from_bytes(bytes);
        party.zero = Streams::new(&mine, &theirs, Purpose::ZeroSharing);
        party.perm = Streams::new(&mine, &theirs, Purpose::Permutation);
        party.mask = Streams::new(&mine, &theirs, Purpose::Mask);
        party.rand = Streams::new(&mine, &theirs, Purpose::TripleShares);
        party.check = Streams::new(&mine, &theirs, Purpose::Check);
        Ok(party)
    }

    /// [`Party::setup`] in the given security mode (all three parties must use the same).
    pub fn setup_with(
        id: PartyId,
        channel: Box<dyn Channel>,
        mode: SecurityMode,
    ) -> Result<Self, EngineError> {
        let mut party = Party::setup(id, channel)?;
        party.mode = mode;
        Ok(party)
    }

    /// Marks the part of the computation that follows (see [`Phase`]). Costs nothing and
    /// changes nothing unless the `fault-injection` test instrument is compiled in.
    #[inline]
    pub fn set_phase(&mut self, phase: Phase) {
        #[cfg(feature = "fault-injection")]
        self.faults.set_phase(phase);
        #[cfg(not(feature = "fault-injection"))]
        let _ = phase;
    }

    /// This party's index.
    pub fn id(&self) -> PartyId {
        self.id
    }

    /// Communication so far.
    pub fn stats(&self) -> CommStats {
        self.stats
    }

    /// What this party has opened so far.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Keep the opened values themselves in the audit log (for the leakage audit), not
    /// only their reasons, sizes and digests.
    pub fn record_opened_values(&mut self, on: bool) {
        self.audit.record_values = on;
    }

    /// Sends raw bytes to one peer and receives from another, as one round.
    pub(crate) fn exchange_bytes(
        &mut self,
        to: Peer,
        msg: Vec<u8>,
        from: Peer,
    ) -> Result<Vec<u8>, EngineError> {
        self.send_bytes(to, msg)?;
        let got = self.channel.recv(from)?;
        self.stats.rounds += 1;
        Ok(got)
    }

    pub(crate) fn send_bytes(&mut self, to: Peer, msg: Vec<u8>) -> Result<(), EngineError> {
        self.stats.bytes_sent += msg.len() as u64;
        self.stats.messages_sent += 1;
        self.channel.send(to, msg)?;
        Ok(())
    }

    pub(crate) fn recv_bytes(
        &mut self,
        from: Peer,
        expected: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let got = self.channel.recv(from)?;
        if got.len() != expected {
            return Err(EngineError::WrongLength {
                from: self.id.peer(from),
                expected,
                got: got.len(),
            });
        }
        Ok(got)
    }

    /// The next message from `from`, of any length up to `max` bytes.
    pub(crate) fn recv_any(&mut self, from: Peer, max: usize) -> Result<Vec<u8>, EngineError> {
        let got = self.channel.recv(from)?;
        if got.len() > max {
            return Err(EngineError::WrongLength {
                from: self.id.peer(from),
                expected: max,
                got: got.len(),
            });
        }
        Ok(got)
    }

    /// Counts one communication round (for steps that send and receive separately).
    pub(crate) fn count_round(&mut self) {
        self.stats.rounds += 1;
    }

    /// Sends `words` to `to` and receives exactly as many words from `from`, as one round.
    pub(crate) fn exchange_words(
        &mut self,
        to: Peer,
        words: &[u64],
        from: Peer,
    ) -> Result<Vec<u64>, EngineError> {
        // The result leaves the engine's hands, so it gets its own buffer, not a pooled one.
        let mut out = vec![0u64; words.len()];
        self.exchange_words_into(to, words, from, &mut out)?;
        Ok(out)
    }

    /// [`Party::exchange_words`] into `out` (as long as `words`). Message buffers are
    /// recycled: a received message becomes a later outgoing one, so steady-state rounds
    /// allocate nothing.
    pub(crate) fn exchange_words_into(
        &mut self,
        to: Peer,
        words: &[u64],
        from: Peer,
        out: &mut [u64],
    ) -> Result<(), EngineError> {
        self.exchange_pieces_into(to, words, from, out, usize::MAX)
    }

    /// [`Party::exchange_words_into`] as messages of at most `piece` words, each sent
    /// before the matching one is received (one round; at least one message, empty or
    /// not).
    fn exchange_pieces_into(
        &mut self,
        to: Peer,
        words: &[u64],
        from: Peer,
        out: &mut [u64],
        piece: usize,
    ) -> Result<(), EngineError> {
        debug_assert_eq!(words.len(), out.len());
        for i in 0..words.len().div_ceil(piece).max(1) {
            let at = i * piece..words.len().min((i + 1).saturating_mul(piece));
            let mut msg = self.scratch.take_bytes(at.len() * 8);
            words_into_bytes(&words[at.clone()], &mut msg);
            self.send_bytes(to, msg)?;
            let got = self.recv_bytes(from, at.len() * 8)?;
            bytes_into_words(&got, &mut out[at]);
            self.scratch.give_bytes(got);
        }
        self.count_round();
        Ok(())
    }

    /// A pooled message buffer of `words` words (`8 * words` bytes, stale contents), for
    /// a step that writes its outgoing words as bytes while computing them.
    pub(crate) fn take_message(&mut self, words: usize) -> Vec<u8> {
        self.scratch.take_bytes(8 * words)
    }

    /// Sends a message built in a buffer from [`Party::take_message`].
    pub(crate) fn send_message(&mut self, to: Peer, msg: Vec<u8>) -> Result<(), EngineError> {
        self.send_bytes(to, msg)
    }

    /// Receives exactly `words` words' worth of bytes from `from`, completing one
    /// round begun with [`Party::send_message`]. Hand the buffer back with
    /// [`Party::recycle_message`] when done.
    pub(crate) fn recv_message(
        &mut self,
        from: Peer,
        words: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let got = self.recv_bytes(from, 8 * words)?;
        self.count_round();
        Ok(got)
    }

    /// Returns a message buffer to the pool.
    pub(crate) fn recycle_message(&mut self, msg: Vec<u8>) {
        self.scratch.give_bytes(msg);
    }

    /// Converts a user's 3-way XOR share (this party received `x_i`) into a replicated
    /// share: each party passes its `x_i` to party `i-1`. One round.
    ///
    /// Redundancy cannot check this step: `x_i` reached party `i` alone, so no other party
    /// can recompute the message, and on its own it lets a corrupt party XOR a difference
    /// of its choice into a user's input. The round therefore converts through
    /// [`crate::round::input`], which checks each received share against a hash the user
    /// sent its receiver (malicious mode).
    pub fn input_from_xor(
        &mut self,
        #[allow(unused_mut)] // Mutated only under fault injection.
        mut mine: Vec<u64>,
    ) -> Result<Shared, EngineError> {
        // A careful liar keeps its own copy equal to what it sent, so its shares stay
        // consistent: the strongest form of this deviation.
        #[cfg(feature = "fault-injection")]
        self.corrupt_words(crate::fault::ComputeSite::Input, &mut mine);
        // In pieces: a table-sized exchange once a round, whose one message would take a
        // table-sized buffer mapped afresh every time (272 MB a party at a million users,
        // about a second of CPU a round in the kernel clearing its pages on this machine
        // kind), where pieces circulate through the message pools. Not so for the sorts'
        // AND layers: exchanged in lock-step pieces, three parties sharing two cores lost
        // more time waiting for each other than the pages cost (malicious 2^20 sort
        // 8.55–9.56 s against 8.08–8.66 s).
        let mut next = vec![0u64; mine.len()];
        self.exchange_pieces_into(Peer::Prev, &mine, Peer::Next, &mut next, PIECE_WORDS)?;
        Ok(Shared { a: mine, b: next })
    }

    /// Sends this party's AND output share `z` of one layer and receives the next
    /// party's (one round).
    fn and_exchange(&mut self, z: &mut [u64]) -> Result<Vec<u64>, EngineError> {
        #[cfg(feature = "fault-injection")]
        self.corrupt_words(crate::fault::ComputeSite::AndGate, z);
        self.exchange_words(Peer::Prev, z, Peer::Next)
    }

    /// `x & y`, word by word, for any number of words in one round.
    pub fn and(&mut self, x: &Shared, y: &Shared) -> Result<Shared, EngineError> {
        if x.len() != y.len() {
            return Err(EngineError::InvalidInput(format!(
                "AND of {} and {} words",
                x.len(),
                y.len()
            )));
        }
        self.and_slices((&x.a, &x.b), (&y.a, &y.b))
    }

    /// [`Party::and`] of shares given as slices (equal lengths, the caller's invariant),
    /// for callers that AND parts of a table without copying them out.
    pub(crate) fn and_slices(
        &mut self,
        (xa, xb): (&[u64], &[u64]),
        (ya, yb): (&[u64], &[u64]),
    ) -> Result<Shared, EngineError> {
        debug_assert!(xb.len() == xa.len() && ya.len() == xa.len() && yb.len() == xa.len());
        let mut z = self.and_local(xa, xb, ya, yb);
        let b = self.and_exchange(&mut z)?;
        if self.malicious() {
            self.record_gates((xa, xb), (ya, yb), (&z, &b));
        }
        Ok(Shared { a: z, b })
    }

    /// Several independent ANDs in one round: `out[k] = xs[k] & ys[k]`.
    pub fn and_many(&mut self, pairs: &[(&Shared, &Shared)]) -> Result<Vec<Shared>, EngineError> {
        let total: usize = pairs.iter().map(|(x, _)| x.len()).sum();
        let mut xa = Vec::with_capacity(total);
        let mut xb = Vec::with_capacity(total);
        let mut ya = Vec::with_capacity(total);
        let mut yb = Vec::with_capacity(total);
        for (x, y) in pairs {
            if x.len() != y.len() {
                return Err(EngineError::InvalidInput("AND of unequal lengths".into()));
            }
            xa.extend_from_slice(&x.a);
            xb.extend_from_slice(&x.b);
            ya.extend_from_slice(&y.a);
            yb.extend_from_slice(&y.b);
        }
        let mut z = self.and_local(&xa, &xb, &ya, &yb);
        let zb = self.and_exchange(&mut z)?;
        if self.malicious() {
            self.record_gates((&xa, &xb), (&ya, &yb), (&z, &zb));
        }
        let mut out = Vec::with_capacity(pairs.len());
        let mut off = 0;
        for (x, _) in pairs {
            let n = x.len();
            out.push(Shared {
                a: z[off..off + n].to_vec(),
                b: zb[off..off + n].to_vec(),
            });
            off += n;
        }
        Ok(out)
    }

    /// Adds this party's share of a fresh zero-sharing to `z`, as an AND layer does
    /// before re-sharing (the three shares XOR to zero; each is uniform to the others).
    pub(crate) fn add_zero_sharing(&mut self, z: &mut [u64]) {
        let n = z.len();
        let start_prev = self.zero.prev.reserve(n);
        let start_next = self.zero.next.reserve(n);
        let (sp, sn) = (&self.zero.prev, &self.zero.next);
        z.par_chunks_mut(CHUNK_WORDS)
            .enumerate()
            .for_each(|(c, zc)| {
                let off = (c * CHUNK_WORDS / 2) as u64;
                let mut r = [0u64; CHUNK_WORDS];
                let mut s = [0u64; CHUNK_WORDS];
                let len = zc.len();
                sp.fill_at(start_prev + off, &mut r[..len]);
                sn.fill_at(start_next + off, &mut s[..len]);
                for k in 0..len {
                    zc[k] ^= r[k] ^ s[k];
                }
            });
    }

    /// This party's local half of an AND layer: `z_i` before resharing.
    pub(crate) fn and_local(&mut self, xa: &[u64], xb: &[u64], ya: &[u64], yb: &[u64]) -> Vec<u64> {
        let mut z = vec![0u64; xa.len()];
        self.and_local_into(xa, xb, ya, yb, &mut z);
        z
    }

    /// [`Party::and_local`] into `z` (as long as the inputs).
    pub(crate) fn and_local_into(
        &mut self,
        xa: &[u64],
        xb: &[u64],
        ya: &[u64],
        yb: &[u64],
        z: &mut [u64],
    ) {
        let n = xa.len();
        let start_prev = self.zero.prev.reserve(n);
        let start_next = self.zero.next.reserve(n);
        let (sp, sn) = (&self.zero.prev, &self.zero.next);
        let work = |(c, zc): (usize, &mut [u64])| {
            let off = c * CHUNK_WORDS;
            let mut r = [0u64; CHUNK_WORDS];
            let mut s = [0u64; CHUNK_WORDS];
            let len = zc.len();
            sp.fill_at(start_prev + (off / 2) as u64, &mut r[..len]);
            sn.fill_at(start_next + (off / 2) as u64, &mut s[..len]);
            let (xa, xb, ya, yb) = (
                &xa[off..off + len],
                &xb[off..off + len],
                &ya[off..off + len],
                &yb[off..off + len],
            );
            for k in 0..len {
                zc[k] = (xa[k] & ya[k]) ^ (xa[k] & yb[k]) ^ (xb[k] & ya[k]) ^ r[k] ^ s[k];
            }
        };
        if n <= CHUNK_WORDS {
            z.chunks_mut(CHUNK_WORDS).enumerate().for_each(work);
        } else {
            z.par_chunks_mut(CHUNK_WORDS).enumerate().for_each(work);
        }
    }
}

/// Words per message piece of a long exchange (16 MiB): long messages are split so that
/// their buffers come from the pools.
pub(crate) const PIECE_WORDS: usize = 1 << 21;

/// Little-endian bytes of `words` into `out` (exactly `8 * words.len()` bytes).
pub(crate) fn words_into_bytes(words: &[u64], out: &mut [u8]) {
    debug_assert_eq!(out.len(), words.len() * 8);
    let work = |(c, w): (&mut [u8], &[u64])| {
        for (b, x) in c.chunks_exact_mut(8).zip(w) {
            b.copy_from_slice(&x.to_le_bytes());
        }
    };
    if words.len() <= CONVERT_CHUNK {
        work((out, words));
    } else {
        out.par_chunks_mut(8 * CONVERT_CHUNK)
            .zip(words.par_chunks(CONVERT_CHUNK))
            .for_each(work);
    }
}

/// Word `k` of a little-endian message.
#[inline(always)]
pub(crate) fn word_at(bytes: &[u8], k: usize) -> u64 {
    u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().expect("8 bytes"))
}

/// Words from little-endian bytes (`bytes.len() == 8 * out.len()`, checked by the caller).
pub(crate) fn bytes_into_words(bytes: &[u8], out: &mut [u64]) {
    let work = |(w, c): (&mut [u64], &[u8])| {
        for (x, b) in w.iter_mut().zip(c.chunks_exact(8)) {
            *x = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
    };
    if out.len() <= CONVERT_CHUNK {
        work((out, bytes));
    } else {
        out.par_chunks_mut(CONVERT_CHUNK)
            .zip(bytes.par_chunks(8 * CONVERT_CHUNK))
            .for_each(work);
    }
}

/// Words per parallel task when converting messages.
const CONVERT_CHUNK: usize = 1 << 15;

/// Buffers kept by a party between protocol steps, so that large per-step vectors and
/// messages reuse memory that is already mapped instead of faulting in fresh pages each
/// time (at 2^20 elements that was a quarter of the sort's CPU time). Contents left by
/// earlier steps are stale shares: every taker overwrites what it uses, and all of it is
/// wiped when the party is dropped.
#[derive(Default)]
pub(crate) struct Scratch {
    words: Vec<Vec<u64>>,
    bytes: Vec<Vec<u8>>,
}

/// Buffers kept per kind; beyond this, returned buffers are freed.
const POOL_MAX: usize = 24;

impl Scratch {
    /// A buffer of `len` words with unspecified contents.
    pub(crate) fn take_words(&mut self, len: usize) -> Words {
        let mut buf = take_fitting(&mut self.words, len);
        if buf.len() < len {
            buf.resize(len, 0);
        }
        Words { buf, len }
    }

    /// Returns a buffer taken with [`Scratch::take_words`].
    pub(crate) fn give_words(&mut self, w: Words) {
        give(&mut self.words, w.buf);
    }

    fn take_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = take_fitting(&mut self.bytes, len);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0);
        }
        v
    }

    fn give_bytes(&mut self, v: Vec<u8>) {
        give(&mut self.bytes, v);
    }
}

/// A pooled word buffer seen as its first `len` words. The vector underneath keeps its
/// full length, so handing it to a later, longer use needs no re-initialization (a
/// `Vec` once truncated could only grow back by writing every word again).
pub(crate) struct Words {
    buf: Vec<u64>,
    len: usize,
}

impl Words {
    /// Shortens the view to `len` words (no-op if already shorter).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl std::ops::Deref for Words {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for Words {
    fn deref_mut(&mut self) -> &mut [u64] {
        &mut self.buf[..self.len]
    }
}

/// The shortest pooled buffer already at least `len` long; failing that, the one with
/// the most capacity (growing it touches the least new memory); or an empty one.
fn take_fitting<T: Zeroize>(pool: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let long_enough = pool
        .iter()
        .enumerate()
        .filter(|(_, v)| v.len() >= len)
        .min_by_key(|(_, v)| v.len())
        .map(|(i, _)| i);
    let pick = long_enough.or_else(|| {
        pool.iter()
            .enumerate()
            .max_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
    });
    match pick {
        Some(i) => pool.swap_remove(i),
        None => Vec::new(),
    }
}

fn give<T: Zeroize>(pool: &mut Vec<Vec<T>>, mut v: Vec<T>) {
    if v.capacity() == 0 {
        return;
    }
    if pool.len() >= POOL_MAX {
        // Keep the largest buffers: they are the expensive ones to fault in.
        let (i, smallest) = pool
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, b)| (i, b.capacity()))
            .expect("pool is full");
        if smallest >= v.capacity() {
            v.zeroize();
            return;
        }
        pool.swap_remove(i).zeroize();
    }
    pool.push(v);
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.words.iter_mut().for_each(|v| v.zeroize());
        self.bytes.iter_mut().for_each(|v| v.zeroize());
    }
}
