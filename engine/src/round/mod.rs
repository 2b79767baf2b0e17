//! The oblivious exchange round (paper §4.2–4.3, design §2–3).
//!
//! Every online user sends one block `(role, dst, payload)` per round, XOR-shared over
//! the three parties; its source pseudonym is public (bound by the sealing key). The
//! parties match senders and receivers over shares and return to every online user one
//! output: the status of its own block and at most one incoming item, oldest first.
//! Items that cannot be delivered stay in a fixed-capacity store, secret-shared, until
//! delivered or expired; either way the item becomes a receipt in its slot, which goes
//! back to its sender the same way (`docs/leakage.md`, "Receipts").
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
    /// A receipt created in round `r` (its message was delivered from the store or
    /// expired in `r`) expires at round `r + receipt_rounds` if its addressee, the
    /// message's sender, has not been online to take it by then. Long, because an
    /// expired receipt is the one way a sender can still miss a message's fate.
    #[serde(default = "default_receipt_rounds")]
    pub receipt_rounds: u32,
}

/// The default [`RoundConfig::receipt_rounds`]: a day of rounds two seconds apart.
pub const DEFAULT_RECEIPT_ROUNDS: u32 = 43_200;

fn default_receipt_rounds() -> u32 {
    DEFAULT_RECEIPT_ROUNDS
}

/// Bits of a user's *address*: the low bits of its 64-bit pseudonym, which the round
/// matches on. Every key generation center refuses to register a pseudonym whose
/// address is 0 or another registered user's (`acs_kgc::UserPseudonym::address`, the
/// same rule), so among registered users an address names one user, and a block for
/// pseudonym `p` goes to the user whose address is `address(p)`. The first sort then
/// compares `ADDRESS_BITS + 2` key bits instead of 66 (plus its tiebreak): at a
/// million users 56 bits in all instead of 88 (`docs/engine.md`).
pub const ADDRESS_BITS: u32 = 32;

/// The address of pseudonym `p` ([`ADDRESS_BITS`]).
pub fn address(p: u64) -> u64 {
    p & ((1u64 << ADDRESS_BITS) - 1)
}

/// Checks that the online users' addresses are distinct (registration guarantees it;
/// two users with one address would make the round deliver to either).
pub fn check_distinct_addresses(online: &[u64]) -> Result<(), crate::error::EngineError> {
    let mut a: Vec<u64> = online.iter().map(|&p| address(p)).collect();
    a.sort_unstable();
    match a.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(crate::error::EngineError::InvalidInput(format!(
            "two online users share the address {:#010x}",
            w[0]
        ))),
        None => Ok(()),
    }
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

    /// Words in one store record: flags (bit 0 valid, bits 1-2 role, bit 3 receipt,
    /// bit 4 the receipt's fate is `expired`), source, destination, round (low 32 bits:
    /// received, or for a receipt the round it was made; high 32 bits: for a receipt, the
    /// round its message was sent), payload (zero for a receipt).
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
    /// The target pseudonym is registered to nobody, and its address (its low 32 bits)
    /// is that of a registered user who is online this round: the item was dropped and
    /// can never be delivered, so sending it again is pointless. (While that user is
    /// offline such an item is stored and comes back as `expired`.)
    Misaddressed,
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
            Status::Misaddressed => 6,
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
            6 => Status::Misaddressed,
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

/// The final fate of a message that went into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Fate {
    /// Delivered to its target from the store.
    Delivered,
    /// Expired in the store (the target was not online to take it within
    /// `expiry_rounds`): it was never delivered.
    Expired,
}

/// A receipt: the sender of a message that was `stored` learns what became of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The message's role (send or request).
    pub role: Role,
    /// The message's target.
    pub to: u64,
    /// The round the message was sent in: the sender's handle for it (a user sends at
    /// most one block per round).
    pub sent: u32,
    /// What became of it.
    pub fate: Fate,
}

/// What a user learns from one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The fate of its own block.
    pub status: Status,
    /// At most one item addressed to it: a message, or (never both) a receipt.
    pub incoming: Option<Incoming>,
    /// A receipt for one of its earlier stored messages, in the place of an incoming
    /// message: receipts and messages for one user take turns in its one mailbox.
    pub receipt: Option<Receipt>,
}

/// Output header bit: the item is a receipt.
const OUT_RECEIPT: u64 = 1 << 10;
/// Output header bit: the receipt's fate is `expired`.
const OUT_EXPIRED: u64 = 1 << 11;
/// Output header bits that carry a receipt's send round.
const OUT_SENT_SHIFT: u32 = 32;

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
    /// The output's words: `[status | incoming role << 8, from, payload..]`; for a
    /// receipt `[status | role << 8 | 1 << 10 | expired << 11 | sent << 32, to, 0..]`.
    pub fn to_words(&self, cfg: &RoundConfig) -> Vec<u64> {
        let mut w = vec![0u64; cfg.output_words()];
        w[0] = self.status.code();
        if let Some(inc) = &self.incoming {
            w[0] |= inc.role.bits() << 8;
            w[1] = inc.from;
            for (d, s) in w[2..].iter_mut().zip(&inc.payload) {
                *d = *s;
            }
        } else if let Some(r) = &self.receipt {
            w[0] |= (r.role.bits() << 8) | OUT_RECEIPT | ((r.sent as u64) << OUT_SENT_SHIFT);
            if r.fate == Fate::Expired {
                w[0] |= OUT_EXPIRED;
            }
            w[1] = r.to;
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
        let malformed = OutputError::Malformed(head);
        if head & 0xffff_f0f8 != 0 {
            return Err(malformed);
        }
        let status = Status::from_code(head & 7).ok_or(OutputError::Malformed(head))?;
        let role_bits = (head >> 8) & 3;
        if head & OUT_RECEIPT != 0 {
            // A receipt names a real message and never carries its payload.
            let role = match Role::from_bits(role_bits) {
                Some(r @ (Role::Send | Role::Request)) => r,
                _ => return Err(malformed),
            };
            if words[2..].iter().any(|w| *w != 0) {
                return Err(malformed);
            }
            let fate = if head & OUT_EXPIRED != 0 {
                Fate::Expired
            } else {
                Fate::Delivered
            };
            return Ok(Output {
                status,
                incoming: None,
                receipt: Some(Receipt {
                    role,
                    to: words[1],
                    sent: (head >> OUT_SENT_SHIFT) as u32,
                    fate,
                }),
            });
        }
        if head & (OUT_EXPIRED | (u64::MAX << OUT_SENT_SHIFT)) != 0 {
            return Err(malformed);
        }
        let incoming = if role_bits == 0 {
            if words[1..].iter().any(|w| *w != 0) {
                return Err(malformed);
            }
            None
        } else {
            Some(Incoming {
                role: Role::from_bits(role_bits).ok_or(OutputError::Malformed(head))?,
                from: words[1],
                payload: words[2..].to_vec(),
            })
        };
        Ok(Output {
            status,
            incoming,
            receipt: None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: RoundConfig = RoundConfig {
        payload_words: 2,
        store_capacity: 1,
        expiry_rounds: 1,
        receipt_rounds: 1,
    };

    #[test]
    fn receipts_round_trip_and_carry_no_payload() {
        for fate in [Fate::Delivered, Fate::Expired] {
            let out = Output {
                status: Status::Stored,
                incoming: None,
                receipt: Some(Receipt {
                    role: Role::Request,
                    to: 0xfeed,
                    sent: u32::MAX,
                    fate,
                }),
            };
            let w = out.to_words(&CFG);
            assert_eq!(Output::from_words(&w, &CFG), Ok(out));
            let mut with_payload = w.clone();
            with_payload[3] = 1;
            assert!(Output::from_words(&with_payload, &CFG).is_err());
            let mut no_role = w.clone();
            no_role[0] &= !(3 << 8);
            assert!(Output::from_words(&no_role, &CFG).is_err());
        }
        // Receipt fields on an ordinary output are malformed.
        let plain = Output {
            status: Status::Cover,
            incoming: None,
            receipt: None,
        }
        .to_words(&CFG);
        for bad in [OUT_EXPIRED, 1 << OUT_SENT_SHIFT, 1 << 12] {
            let mut w = plain.clone();
            w[0] |= bad;
            assert!(Output::from_words(&w, &CFG).is_err(), "{bad:#x}");
        }
    }
}
