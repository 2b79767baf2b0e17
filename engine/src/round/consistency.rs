//! The cross-server consistency check of the online set (paper §4.2, design §3).
//!
//! Each exchange server opens the envelopes relayed to it, so it knows which pseudonyms
//! it heard from this round; that set is public leakage. Each server hashes its sorted
//! set (SHA3-256, bound to the round number) and compares with the other two. If all
//! agree, the round proceeds; otherwise the servers exchange their sets and proceed with
//! the intersection, and the users outside it are told to retry.

use crate::channel::Peer;
use crate::error::EngineError;
use crate::party::Party;
use sha3::{Digest, Sha3_256};

/// Most pseudonyms a peer may send in one online set (2^26: far above any round).
pub const MAX_ONLINE: usize = 1 << 26;

/// The outcome of the check at one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The agreed online set, ascending: the round runs over exactly these users.
    pub online: Vec<u64>,
    /// Pseudonyms this server heard from that are not in the agreed set: they get
    /// `retry`.
    pub retry: Vec<u64>,
    /// Whether all three sets were equal.
    pub consistent: bool,
}

/// The digest each server publishes for its online set.
pub fn online_digest(round: u32, sorted: &[u64]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update(b"acs/online-set/v1");
    h.update(round.to_le_bytes());
    h.update((sorted.len() as u64).to_le_bytes());
    for p in sorted {
        h.update(p.to_le_bytes());
    }
    h.finalize().into()
}

impl Party {
    /// Runs the check for `round` over the pseudonyms this server heard from. One round
    /// when the sets agree, two when they do not.
    pub fn agree_online(&mut self, round: u32, heard: &[u64]) -> Result<Agreement, EngineError> {
        let mut mine = heard.to_vec();
        mine.sort_unstable();
        mine.dedup();
        let digest = online_digest(round, &mine);
        self.send_bytes(Peer::Next, digest.to_vec())?;
        self.send_bytes(Peer::Prev, digest.to_vec())?;
        let from_next = self.recv_bytes(Peer::Next, 32)?;
        let from_prev = self.recv_bytes(Peer::Prev, 32)?;
        self.count_round();
        // All three servers reach the same verdict: each sees all three digests.
        if from_next == digest && from_prev == digest {
            return Ok(Agreement {
                online: mine,
                retry: Vec::new(),
                consistent: true,
            });
        }
        let bytes: Vec<u8> = mine.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.send_bytes(Peer::Next, bytes.clone())?;
        self.send_bytes(Peer::Prev, bytes)?;
        let next_set = self.recv_set(Peer::Next, round, &from_next)?;
        let prev_set = self.recv_set(Peer::Prev, round, &from_prev)?;
        self.count_round();
        let online: Vec<u64> = mine
            .iter()
            .copied()
            .filter(|p| next_set.binary_search(p).is_ok() && prev_set.binary_search(p).is_ok())
            .collect();
        let retry = mine
            .iter()
            .copied()
            .filter(|p| online.binary_search(p).is_err())
            .collect();
        Ok(Agreement {
            online,
            retry,
            consistent: false,
        })
    }

    /// A peer's online set, checked against the digest it committed to.
    fn recv_set(&mut self, from: Peer, round: u32, digest: &[u8]) -> Result<Vec<u64>, EngineError> {
        let bytes = self.recv_any(from, MAX_ONLINE * 8)?;
        let peer = self.id().peer(from);
        if bytes.len() % 8 != 0 {
            return Err(EngineError::WrongLength {
                from: peer,
                expected: bytes.len() / 8 * 8,
                got: bytes.len(),
            });
        }
        let set: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let well_formed = set.windows(2).all(|w| w[0] < w[1]);
        if !well_formed || online_digest(round, &set)[..] != *digest {
            return Err(EngineError::PeerMisbehaved {
                peer,
                what: "online set does not match its digest or is not strictly ascending".into(),
            });
        }
        Ok(set)
    }
}
