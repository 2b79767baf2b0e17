//! The oblivious exchange round (paper §4.2–4.3, design §2–3).
//!
//! Every online user sends one block `(role, dst, payload)` per round, XOR-shared over
//! the three parties; its source pseudonym is public (bound by the sealing key). The
//! parties match senders and receivers over shares and return to every online user one
//! output: the status of its own block and at most one incoming item, oldest first.
//! Items that cannot be delivered stay in a fixed-capacity store, secret-shared, until
//! delivered or expired.
//!
//! - [`ideal`]: the plaintext reference round (the oracle for tests);
//! - [`mpc`]: the three-party round;
//! - [`consistency`]: the signed, echoed agreement on the online set;
//! - [`input`]: the users' shares and the checked conversion to replicated shares;
//! - [`outputs`]: output shares users can check;
//! - this module: the word encodings users and parties share.

pub mod consistency;
pub mod ideal;
pub mod input;
pub mod mpc;
pub mod outputs;

use crate::share::{xor_reconstruct, xor_share};
use rand::RngCore;

/// Public configuration of the exchange: the same at all three parties and all users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoundConfig {
    /// Payload size in 64-bit words (payloads are padded to it).
    pub payload_words: usize,
    /// Store capacity `C`: the store always holds exactly this many records, real or dummy.
    pub store_capacity: usize,
    /// A stored item received in round `r` expires at round `r + expiry_rounds`.
    pub expiry_rounds: u32,
}

impl RoundConfig {
    /// Words in a user's block: flags, destination, payload.
    pub fn block_words(&self) -> usize {
        2 + self.payload_words
    }

    /// Words in a user's output: status/role, source, payload.
    pub fn output_words(&self) -> usize {
        2 + self.payload_words
    }

    /// Words in one store record: flags, source, destination, round, payload.
    pub fn store_words(&self) -> usize {
        4 + self.payload_words
    }
}

/// The role of a block (paper §4.2).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// Cover traffic: shows the user online, asks for nothing.
    Cover,
    /// A message for `dst`.
    Send,
    /// A request addressed to `dst` (delivered to it like a message, labelled as a request).
    Request,
}

impl Role {
    /// The two role bits.
    pub fn bits(self) -> u64 {
        match self {
            Role::Cover => 0,
            Role::Send => 1,
            Role::Request => 2,
        }
    }

    /// From the two role bits. The value 3 is never produced by honest clients; the
    /// exchange carries it as an item, and users reading it get `None`.
    pub fn from_bits(bits: u64) -> Option<Role> {
        match bits & 3 {
            0 => Some(Role::Cover),
            1 => Some(Role::Send),
            2 => Some(Role::Request),
            _ => None,
        }
    }
}

/// What happened to a user's own block this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// The block was cover traffic.
    Cover,
    /// The item reached its target this round.
    Delivered,
    /// The target was offline or busy: the item waits in the store.
    Stored,
    /// The store was full: the item was dropped.
    Dropped,
    /// The servers did not agree that this user was online: send the block again.
    Retry,
}

impl Status {
    /// The 3-bit code carried in outputs.
    pub fn code(self) -> u64 {
        match self {
            Status::Cover => 1,
            Status::Delivered => 2,
            Status::Stored => 3,
            Status::Dropped => 4,
            Status::Retry => 5,
        }
    }

    /// From the 3-bit code.
    pub fn from_code(code: u64) -> Option<Status> {
        Some(match code {
            1 => Status::Cover,
            2 => Status::Delivered,
            3 => Status::Stored,
            4 => Status::Dropped,
            5 => Status::Retry,
            _ => return None,
        })
    }
}

/// A user's block for one round, in the clear (on the user's machine only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Cover, send or request.
    pub role: Role,
    /// The target pseudonym (0 for covers).
    pub dst: u64,
    /// The payload, `payload_words` words (zero for covers).
    pub payload: Vec<u64>,
}

impl Block {
    /// A cover block.
    pub fn cover(cfg: &RoundConfig) -> Self {
        Block {
            role: Role::Cover,
            dst: 0,
            payload: vec![0; cfg.payload_words],
        }
    }

    /// The block's words: `[role bits, dst, payload..]`, payload padded with zeros.
    pub fn to_words(&self, cfg: &RoundConfig) -> Vec<u64> {
        let mut w = Vec::with_capacity(cfg.block_words());
        w.push(self.role.bits());
        w.push(self.dst);
        w.extend(self.payload.iter().take(cfg.payload_words));
        w.resize(cfg.block_words(), 0);
        w
    }

    /// Splits the block into three XOR shares, one per exchange server.
    pub fn share<R: RngCore>(&self, cfg: &RoundConfig, rng: &mut R) -> [Vec<u64>; 3] {
        xor_share(&self.to_words(cfg), rng)
    }
}

/// An item delivered to a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// Send or request.
    pub role: Role,
    /// The source pseudonym.
    pub from: u64,
    /// The payload.
    pub payload: Vec<u64>,
}

/// What a user learns from one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The fate of its own block.
    pub status: Status,
    /// At most one item addressed to it.
    pub incoming: Option<Incoming>,
}

/// Why a reconstructed output did not decode.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// A share had the wrong number of words.
    #[error("output share of {got} words, expected {expected}")]
    WrongLength {
        /// Words expected.
        expected: usize,
        /// Words received.
        got: usize,
    },
    /// The reconstructed words are not a valid output: shares from different rounds or
    /// users, or a tampered share.
    #[error("reconstructed output is malformed (status code {0})")]
    Malformed(u64),
}

impl Output {
    /// The output's words: `[status | incoming role << 8, from, payload..]`.
    pub fn to_words(&self, cfg: &RoundConfig) -> Vec<u64> {
        let mut w = vec![0u64; cfg.output_words()];
        w[0] = self.status.code();
        if let Some(inc) = &self.incoming {
            w[0] |= inc.role.bits() << 8;
            w[1] = inc.from;
            for (d, s) in w[2..].iter_mut().zip(&inc.payload) {
                *d = *s;
            }
        }
        w
    }

    /// Decodes an output's words.
    pub fn from_words(words: &[u64], cfg: &RoundConfig) -> Result<Output, OutputError> {
        if words.len() != cfg.output_words() {
            return Err(OutputError::WrongLength {
                expected: cfg.output_words(),
                got: words.len(),
            });
        }
        let head = words[0];
        if head & !0x3ff != 0 || head & 0xf8 != 0 {
            return Err(OutputError::Malformed(head));
        }
        let status = Status::from_code(head & 7).ok_or(OutputError::Malformed(head))?;
        let role_bits = (head >> 8) & 3;
        let incoming = if role_bits == 0 {
            if words[1..].iter().any(|w| *w != 0) {
                return Err(OutputError::Malformed(head));
            }
            None
        } else {
            Some(Incoming {
                role: Role::from_bits(role_bits).ok_or(OutputError::Malformed(head))?,
                from: words[1],
                payload: words[2..].to_vec(),
            })
        };
        Ok(Output { status, incoming })
    }

    /// Rebuilds an output from the three servers' output shares (user side).
    pub fn reconstruct(shares: [&[u64]; 3], cfg: &RoundConfig) -> Result<Output, OutputError> {
        for s in shares {
            if s.len() != cfg.output_words() {
                return Err(OutputError::WrongLength {
                    expected: cfg.output_words(),
                    got: s.len(),
                });
            }
        }
        Output::from_words(&xor_reconstruct(shares), cfg)
    }
}

/// Payload bytes as zero-padded little-endian words (at most `payload_words * 8` bytes).
pub fn payload_to_words(bytes: &[u8], payload_words: usize) -> Option<Vec<u64>> {
    if bytes.len() > payload_words * 8 {
        return None;
    }
    let mut w = vec![0u64; payload_words];
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w[i] = u64::from_le_bytes(b);
    }
    Some(w)
}

/// The inverse of [`payload_to_words`] (all `payload_words * 8` bytes; callers frame
/// their own lengths inside the payload).
pub fn payload_from_words(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}
