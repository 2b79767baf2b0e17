//! The one way to open a shared value, and the record of everything opened.
//!
//! Every opening names a [`Reason`] from a closed list; each reason is a value the design
//! (§1) allows to become public, and `docs/leakage.md` says why each is simulatable. Each
//! party logs what it opened and keeps a running SHA3-256 digest of all opened values;
//! [`Party::check_openings`] compares the digests across the three parties, so a party
//! that sends wrong shares while opening is detected, not obeyed.

use crate::channel::{PartyId, Peer};
use crate::error::EngineError;
use crate::party::Party;
use crate::share::Shared;
use sha3::{Digest, Sha3_256};

/// Why a value is opened. Closed: adding a variant means adding its justification to
/// `docs/leakage.md` (a test checks that every variant is listed there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum Reason {
    /// Quicksort: the outcome of comparing an element with its segment's pivot, after an
    /// oblivious shuffle over unique keys. Depends only on a uniformly random permutation.
    SortComparison,
    /// Routing: a destination index opened after a fresh oblivious shuffle, where every
    /// online user owns the same number of records. A uniformly random permutation of a
    /// public multiset.
    RouteAfterShuffle,
}

impl Reason {
    /// Every variant, for audits.
    pub const ALL: [Reason; 2] = [Reason::SortComparison, Reason::RouteAfterShuffle];

    /// The name used in logs and in `docs/leakage.md`.
    pub fn name(self) -> &'static str {
        match self {
            Reason::SortComparison => "SortComparison",
            Reason::RouteAfterShuffle => "RouteAfterShuffle",
        }
    }
}

/// One opening.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Why it was opened.
    pub reason: Reason,
    /// How many bits (lanes) were opened.
    pub bits: usize,
    /// The opened words, when the party records values (see
    /// [`Party::record_opened_values`]).
    pub values: Option<Vec<u64>>,
}

/// Everything one party opened, in order.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
    digest: Sha3_256,
    pub(crate) record_values: bool,
}

impl AuditLog {
    /// The openings, in order.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }

    /// Total bits opened per reason.
    pub fn bits_by_reason(&self) -> Vec<(Reason, usize)> {
        Reason::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    self.entries
                        .iter()
                        .filter(|e| e.reason == r)
                        .map(|e| e.bits)
                        .sum(),
                )
            })
            .collect()
    }

    /// The running digest of every value opened so far.
    pub fn digest(&self) -> [u8; 32] {
        self.digest.clone().finalize().into()
    }

    fn record(&mut self, reason: Reason, bits: usize, values: &[u64]) {
        self.digest.update([reason as u8]);
        self.digest.update((bits as u64).to_le_bytes());
        for w in values {
            self.digest.update(w.to_le_bytes());
        }
        self.entries.push(AuditEntry {
            reason,
            bits,
            values: self.record_values.then(|| values.to_vec()),
        });
    }
}

impl Party {
    /// Opens the first `lanes` bits of the bitsliced words `x` (lane `k` is bit `k % 64`
    /// of word `k / 64`) to all three parties, for `reason`. Bits past `lanes` come back
    /// zero. One round: party `i` sends `x_{i+1}` to `i-1` and learns `x_{i+2}` from `i+1`.
    pub fn declassify(
        &mut self,
        reason: Reason,
        x: &Shared,
        lanes: usize,
    ) -> Result<Vec<u64>, EngineError> {
        if lanes > x.len() * 64 {
            return Err(EngineError::InvalidInput(format!(
                "opening {lanes} lanes of {} words",
                x.len()
            )));
        }
        let words = lanes.div_ceil(64);
        let third = self.exchange_words(Peer::Prev, &x.b[..words], Peer::Next)?;
        let mut out: Vec<u64> = (0..words).map(|k| x.a[k] ^ x.b[k] ^ third[k]).collect();
        if !lanes.is_multiple_of(64) {
            if let Some(last) = out.last_mut() {
                *last &= (1u64 << (lanes % 64)) - 1;
            }
        }
        self.audit.record(reason, lanes, &out);
        Ok(out)
    }

    /// Opens whole words (64 bits each) for `reason`: [`Party::declassify`] over every
    /// lane of `x`.
    pub fn declassify_words(
        &mut self,
        reason: Reason,
        x: &Shared,
    ) -> Result<Vec<u64>, EngineError> {
        self.declassify(reason, x, x.len() * 64)
    }

    /// Compares this party's digest of everything opened so far with the other two
    /// (one round). On disagreement returns [`EngineError::OpeningMismatch`]; nothing
    /// computed from those openings may be released.
    pub fn check_openings(&mut self) -> Result<(), EngineError> {
        let mine = self.audit.digest();
        self.send_bytes(Peer::Next, mine.to_vec())?;
        self.send_bytes(Peer::Prev, mine.to_vec())?;
        let from_next = self.recv_bytes(Peer::Next, 32)?;
        let from_prev = self.recv_bytes(Peer::Prev, 32)?;
        self.count_round();
        let agree_next = from_next == mine;
        let agree_prev = from_prev == mine;
        if agree_next && agree_prev {
            return Ok(());
        }
        Err(EngineError::OpeningMismatch {
            suspect: suspect(self.id(), agree_next, agree_prev, from_next == from_prev),
        })
    }
}

/// Who to blame, from this party's view of the digests. Party `j` learns its missing
/// share from `j+1`, so when exactly one party's digest is the odd one out, its `next`
/// fed it the wrong share.
fn suspect(me: PartyId, agree_next: bool, agree_prev: bool, others_agree: bool) -> Option<PartyId> {
    match (agree_next, agree_prev, others_agree) {
        // I am the odd one out: my next lied to me.
        (false, false, true) => Some(me.next()),
        // Next is the odd one out: next's next (my prev) lied to it.
        (false, true, _) => Some(me.prev()),
        // Prev is the odd one out: prev's next is me, so I can only blame myself... which
        // an honest party knows is false; the dishonest party is prev (lying about its
        // digest) or its input source. Name prev.
        (true, false, _) => Some(me.prev()),
        _ => None,
    }
}
