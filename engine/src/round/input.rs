//! The checked input conversion: users' XOR shares become replicated shares, and a
//! server that alters a share it passes on is caught (`docs/security.md`, "Input
//! conversion").
//!
//! A user sends server `i` its XOR share `x_i`. The conversion has party `i` pass `x_i`
//! to party `i-1`; nobody else holds `x_i`, so neither redundancy nor the AND
//! verification can check that message. The user therefore also sends server `i-1`,
//! inside the same sealed envelope as `x_{i-1}`, the hash `H(round, user, i, x_i)`
//! ([`input_hash`]). It tells server `i-1` nothing it does not learn in the conversion
//! anyway. After the conversion each party checks every `x_{i+1}` it received against
//! the hash its user sent it.
//!
//! A mismatch is caused by server `i+1` or by the user, and the checking server cannot
//! tell which. Aborting the round would let any user stop every round, so the round goes
//! on without those users: each server signs the set of users whose check failed at it
//! ([`StatementKind::InputRejected`]) and sends it with the set to both peers; each
//! forwards each peer's signed statement to the other (the echo, as in the online-set
//! agreement), so that every honest server holds the same three sets, or a proof that a
//! server signed two. The users in the union of the three sets are removed from the
//! online set and told to `retry`. A malicious server gains nothing it did not have: it
//! could already leave any user out by claiming it did not hear from it.
//!
//! The check runs in malicious mode only. Semi-honest mode promises nothing against a
//! server that deviates in the computation (it could flip an unverified AND gate as
//! easily as an input bit), and a user gains nothing by sending inconsistent shares (any
//! three shares are some block), so there the check would cost time and two rounds for
//! no promise; semi-honest servers ignore the hashes and convert exactly as before.

use super::consistency::{
    check_statement, online_digest, EquivocationProof, Notary, SignedStatement, Statement,
    StatementKind, SIGNED_BYTES,
};
use super::{Block, RoundConfig};
use crate::channel::{PartyId, Peer};
use crate::error::EngineError;
use crate::party::Party;
use crate::share::Shared;
use rand::RngCore;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of an [`input_hash`].
pub const INPUT_HASH_BYTES: usize = 32;

/// Users per parallel task when checking hashes (one hash is about 0.2 µs per 272-byte
/// share with SHA-NI; fewer than this are checked on one thread).
const CHECK_CHUNK: usize = 1024;

/// `H(round, user, component, share)`: SHA-256 over a domain tag, the round, the user's
/// pseudonym, the index of the server the share was sent to, the word count and the
/// share's words (little-endian). Binding the round, the user and the index means a hash
/// checks exactly one share: it cannot be moved to another round, user or component.
pub fn input_hash(round: u64, user: u64, component: PartyId, share: &[u64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"acs/input-share/v1");
    h.update(round.to_le_bytes());
    h.update(user.to_le_bytes());
    h.update([component.index() as u8]);
    h.update((share.len() as u64).to_le_bytes());
    crate::declassify::update_words(&mut h, share);
    h.finalize().into()
}

/// What a user sends server `i` for one round: its XOR share `x_i` of the block and the
/// hash of `x_{i+1}`, the share server `i+1` will pass to server `i` in the conversion.
/// Wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ServerInput {
    /// `x_i`, `block_words` words.
    pub share: Vec<u64>,
    /// [`input_hash`] of `x_{i+1}`.
    pub next_hash: [u8; INPUT_HASH_BYTES],
}

impl std::fmt::Debug for ServerInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerInput({} words)", self.share.len())
    }
}

impl ServerInput {
    /// Bytes of [`ServerInput::to_bytes`] for shares of `block_words` words.
    pub fn wire_len(block_words: usize) -> usize {
        8 * block_words + INPUT_HASH_BYTES
    }

    /// What the user seals for the server: the share's words (little-endian), then the
    /// hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::wire_len(self.share.len()));
        out.extend(self.share.iter().flat_map(|w| w.to_le_bytes()));
        out.extend_from_slice(&self.next_hash);
        out
    }

    /// Parses [`ServerInput::to_bytes`]; `None` unless it is exactly the length that
    /// shares of `block_words` words give.
    pub fn from_bytes(bytes: &[u8], block_words: usize) -> Option<ServerInput> {
        if bytes.len() != Self::wire_len(block_words) {
            return None;
        }
        let (words, hash) = bytes.split_at(8 * block_words);
        Some(ServerInput {
            share: words
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            next_hash: hash.try_into().expect("length checked"),
        })
    }
}

impl Block {
    /// Splits the block into three XOR shares and gives each server its share and the
    /// hash of the share its next peer receives (user side).
    pub fn share_checked<R: RngCore>(
        &self,
        cfg: &RoundConfig,
        round: u64,
        user: u64,
        rng: &mut R,
    ) -> [ServerInput; 3] {
        let mut shares = self.share(cfg, rng);
        let hashes = PartyId::ALL.map(|p| input_hash(round, user, p, &shares[p.index()]));
        std::array::from_fn(|i| ServerInput {
            share: std::mem::take(&mut shares[i]),
            next_hash: hashes[(i + 1) % 3],
        })
    }
}

/// One party's inputs for a round: the users' shares and hashes, in the order of the
/// online set. Wiped on drop.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PartyInputs {
    /// Each user's `x_i`, `block_words` words each, concatenated.
    pub shares: Vec<u64>,
    /// Each user's hash of `x_{i+1}`.
    pub next_hashes: Vec<[u8; INPUT_HASH_BYTES]>,
}

impl std::fmt::Debug for PartyInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartyInputs({} users)", self.next_hashes.len())
    }
}

impl PartyInputs {
    /// Room for `users` users of `cfg`.
    pub fn with_capacity(cfg: &RoundConfig, users: usize) -> Self {
        PartyInputs {
            shares: Vec::with_capacity(users * cfg.block_words()),
            next_hashes: Vec::with_capacity(users),
        }
    }

    /// Appends one user's input.
    pub fn push(&mut self, input: &ServerInput) {
        self.shares.extend_from_slice(&input.share);
        self.next_hashes.push(input.next_hash);
    }

    /// What the three servers receive when `blocks[k]` is the block of `users[k]`
    /// (every user's side at once, for harnesses that play users and servers in one
    /// process).
    pub fn share_all<R: RngCore>(
        cfg: &RoundConfig,
        round: u64,
        users: &[u64],
        blocks: &[Block],
        rng: &mut R,
    ) -> [PartyInputs; 3] {
        let mut out: [PartyInputs; 3] =
            std::array::from_fn(|_| PartyInputs::with_capacity(cfg, users.len()));
        for (&user, b) in users.iter().zip(blocks) {
            let s = b.share_checked(cfg, round, user, rng);
            for i in 0..3 {
                out[i].push(&s[i]);
            }
        }
        out
    }

    /// The inputs of the users at `rows` (indices into this list, ascending), in that
    /// order.
    pub fn select(&self, cfg: &RoundConfig, rows: &[usize]) -> PartyInputs {
        let bw = cfg.block_words();
        let mut out = PartyInputs::with_capacity(cfg, rows.len());
        for &k in rows {
            out.shares
                .extend_from_slice(&self.shares[k * bw..(k + 1) * bw]);
            out.next_hashes.push(self.next_hashes[k]);
        }
        out
    }
}

/// What the conversion check found, the same at all three parties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputCheck {
    /// Users removed from the online set because a check failed at some server,
    /// ascending: they get `retry`.
    pub removed: Vec<u64>,
    /// For each party `j` (by index), how many users' `x_j` did not match its hash at
    /// party `j-1`: server `j`'s conversion message or those users' hashes were wrong.
    /// Public (the removed users are); logged so that a server whose conversion keeps
    /// failing stands out.
    pub failed_at: [usize; 3],
}

impl Party {
    /// Converts the online users' XOR shares to replicated shares and, in malicious mode,
    /// checks every share received against its user's hash (see the module docs).
    /// Returns the users the round runs over (ascending), their replicated shares in that
    /// order, and what the check found. One round in semi-honest mode; three in malicious
    /// mode: the conversion, the signed sets, the echo.
    pub(crate) fn convert_inputs_checked(
        &mut self,
        cfg: &RoundConfig,
        round: u32,
        online: &[u64],
        mut input: PartyInputs,
        notary: &dyn Notary,
    ) -> Result<(Vec<u64>, Shared, InputCheck), EngineError> {
        let u = online.len();
        let bw = cfg.block_words();
        if input.shares.len() != u * bw || input.next_hashes.len() != u {
            return Err(EngineError::InvalidInput(format!(
                "inputs of {} words and {} hashes for {u} users of {bw} words",
                input.shares.len(),
                input.next_hashes.len()
            )));
        }
        let me = self.id();
        let mut blocks = self.input_from_xor(std::mem::take(&mut input.shares))?;
        if !self.malicious() {
            return Ok((online.to_vec(), blocks, InputCheck::default()));
        }

        // The shares received are x_{i+1}, each to match the hash its user sent here.
        let component = me.next();
        let check = |(k, (share, hash)): (usize, (&[u64], &[u8; 32]))| {
            (input_hash(round as u64, online[k], component, share) != *hash).then_some(online[k])
        };
        let pairs = blocks.b.chunks_exact(bw).zip(&input.next_hashes);
        let failed: Vec<u64> = if u <= CHECK_CHUNK {
            pairs.enumerate().filter_map(check).collect()
        } else {
            blocks
                .b
                .par_chunks_exact(bw)
                .zip(input.next_hashes.par_iter())
                .enumerate()
                .with_min_len(CHECK_CHUNK)
                .filter_map(check)
                .collect()
        };

        // Every party must remove the same users: signed sets, echoed.
        let claim = Statement {
            context: notary.context(),
            kind: StatementKind::InputRejected,
            round,
            signer: me,
            count: failed.len() as u64,
            digest: online_digest(round, &failed),
        };
        for to in [Peer::Next, Peer::Prev] {
            let mut msg = notary.sign(to, &claim).to_bytes().to_vec();
            msg.extend(failed.iter().flat_map(|p| p.to_le_bytes()));
            self.send_bytes(to, msg)?;
        }
        let (from_next, next_set) = self.recv_rejected(Peer::Next, round, online, notary)?;
        let (from_prev, prev_set) = self.recv_rejected(Peer::Prev, round, online, notary)?;
        self.count_round();
        self.send_bytes(Peer::Next, from_prev.to_bytes().to_vec())?;
        self.send_bytes(Peer::Prev, from_next.to_bytes().to_vec())?;
        let prev_via_next = self.recv_statement(
            Peer::Next,
            me.prev(),
            StatementKind::InputRejected,
            round,
            notary,
        )?;
        let next_via_prev = self.recv_statement(
            Peer::Prev,
            me.next(),
            StatementKind::InputRejected,
            round,
            notary,
        )?;
        self.count_round();
        for (direct, echoed) in [(&from_prev, &prev_via_next), (&from_next, &next_via_prev)] {
            if direct.statement != echoed.statement {
                return Err(EngineError::Equivocation(Box::new(EquivocationProof {
                    first: *direct,
                    second: *echoed,
                })));
            }
        }

        // The set signed by checker `c` is about `x_{c+1}`.
        let mut failed_at = [0usize; 3];
        failed_at[me.next().index()] = failed.len();
        failed_at[me.next().next().index()] = next_set.len();
        failed_at[me.index()] = prev_set.len();
        let mut removed: Vec<u64> = [failed, next_set, prev_set].concat();
        removed.sort_unstable();
        removed.dedup();
        if removed.is_empty() {
            return Ok((online.to_vec(), blocks, InputCheck::default()));
        }
        let mut kept_online = Vec::with_capacity(u - removed.len());
        let mut kept = Shared {
            a: Vec::with_capacity((u - removed.len()) * bw),
            b: Vec::with_capacity((u - removed.len()) * bw),
        };
        for (k, &user) in online.iter().enumerate() {
            if removed.binary_search(&user).is_err() {
                kept_online.push(user);
                kept.a.extend_from_slice(&blocks.a[k * bw..(k + 1) * bw]);
                kept.b.extend_from_slice(&blocks.b[k * bw..(k + 1) * bw]);
            }
        }
        blocks.zeroize();
        Ok((kept_online, kept, InputCheck { removed, failed_at }))
    }

    /// A peer's signed set of users whose check failed at it, followed by the set:
    /// strictly ascending, within the online set, matching the signed digest.
    fn recv_rejected(
        &mut self,
        from: Peer,
        round: u32,
        online: &[u64],
        notary: &dyn Notary,
    ) -> Result<(SignedStatement, Vec<u64>), EngineError> {
        let peer = self.id().peer(from);
        let bytes = self.recv_any(from, SIGNED_BYTES + 8 * online.len())?;
        let bad = |what: String| EngineError::PeerMisbehaved {
            peer,
            what: format!("its signed set of rejected inputs: {what}"),
        };
        if bytes.len() < SIGNED_BYTES || !(bytes.len() - SIGNED_BYTES).is_multiple_of(8) {
            return Err(bad(format!("{} bytes", bytes.len())));
        }
        let signed = check_statement(
            &bytes[..SIGNED_BYTES],
            peer,
            StatementKind::InputRejected,
            round,
            notary,
        )
        .map_err(|e| bad(e.into()))?;
        let set: Vec<u64> = bytes[SIGNED_BYTES..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if !set.windows(2).all(|w| w[0] < w[1]) {
            return Err(bad("not strictly ascending".into()));
        }
        if set.iter().any(|p| online.binary_search(p).is_err()) {
            return Err(bad("names a user outside the online set".into()));
        }
        if set.len() as u64 != signed.statement.count
            || online_digest(round, &set) != signed.statement.digest
        {
            return Err(bad("the set does not match the signed digest".into()));
        }
        Ok((signed, set))
    }
}
