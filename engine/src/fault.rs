//! TEST INSTRUMENT (cargo feature `fault-injection`, off by default; never enable it in a
//! server build): makes a party deviate inside the computation, not in an opening, to
//! test that malicious mode catches it (and to show what semi-honest mode misses).
//! [`crate::declassify::OpeningFault`] covers lies told while opening.

use crate::party::Party;

/// Where a faulty party deviates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComputeSite {
    /// The share of an AND layer's output it sends (any circuit: sorts, matching,
    /// multiplexers, expiry). Counted per AND layer (one message each).
    AndGate,
    /// The share of a verification triple's product it sends.
    Triple,
    /// A value it sends while opening inside a verification.
    VerifyOpening,
    /// Its message in a step of the oblivious shuffle (a wrong re-share).
    Reshare,
    /// The input share it passes on in the XOR-to-replicated conversion.
    Input,
}

impl ComputeSite {
    /// Every site.
    pub const ALL: [ComputeSite; 5] = [
        ComputeSite::AndGate,
        ComputeSite::Triple,
        ComputeSite::VerifyOpening,
        ComputeSite::Reshare,
        ComputeSite::Input,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Flip bit 0 of the first word of this party's `nth` message (from 0, counted from when
/// the fault is injected) at `site`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComputeFault {
    /// Where.
    pub site: ComputeSite,
    /// Which message at that site.
    pub nth: u64,
}

/// A party's injected computation fault and its message counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Faults {
    fault: Option<ComputeFault>,
    seen: [u64; 5],
}

impl Faults {
    /// Counts one message at `site`; whether to corrupt it.
    fn now(&mut self, site: ComputeSite) -> bool {
        let k = self.seen[site.index()];
        self.seen[site.index()] += 1;
        matches!(self.fault, Some(f) if f.site == site && f.nth == k)
    }
}

impl Party {
    /// TEST INSTRUMENT (feature `fault-injection`): from now on this party deviates once,
    /// as `f` says, replacing any earlier computation fault. Honest parties never call
    /// this.
    pub fn inject_compute_fault(&mut self, f: ComputeFault) {
        self.faults = Faults {
            fault: Some(f),
            seen: [0; 5],
        };
    }

    /// Messages this party has sent at `site` since the last injected fault.
    pub fn messages_at(&self, site: ComputeSite) -> u64 {
        self.faults.seen[site.index()]
    }

    /// Corrupts an outgoing message given as words, if the fault says so.
    pub(crate) fn corrupt_words(&mut self, site: ComputeSite, msg: &mut [u64]) {
        if self.faults.now(site) {
            if let Some(w) = msg.first_mut() {
                *w ^= 1;
            }
        }
    }

    /// Corrupts an outgoing message given as bytes, if the fault says so, and returns
    /// whether it did: the caller then flips bit 0 of its own copy of the first word
    /// too, so the liar's shares stay consistent with what it sent (a careless liar
    /// would be caught by the opening cross-check instead).
    pub(crate) fn corrupt_bytes(&mut self, site: ComputeSite, msg: &mut [u8]) -> bool {
        if self.faults.now(site) {
            if let Some(b) = msg.first_mut() {
                *b ^= 1;
                return true;
            }
        }
        false
    }
}
