//! TEST INSTRUMENT (cargo feature `fault-injection`, off by default; never enable it in a
//! server build): makes a party deviate inside the computation, not in an opening, to
//! test that malicious mode catches it (and to show what semi-honest mode misses).
//! [`crate::declassify::OpeningFault`] covers lies told while opening.

use crate::party::{Party, Phase};

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
    /// Count (and corrupt) only messages sent in this phase, if set.
    aim: Option<Phase>,
    /// The phase the party is in ([`Party::set_phase`]).
    phase: Phase,
    seen: [u64; 5],
    /// The number of openings this party had begun when the fault fired.
    fired_at: Option<u64>,
}

impl Faults {
    /// Counts one message at `site` (if in the aimed phase); whether to corrupt it.
    fn now(&mut self, site: ComputeSite) -> bool {
        if self.aim.is_some_and(|p| p != self.phase) {
            return false;
        }
        let k = self.seen[site.index()];
        self.seen[site.index()] += 1;
        matches!(self.fault, Some(f) if f.site == site && f.nth == k)
    }

    pub(crate) fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }
}

impl Party {
    /// TEST INSTRUMENT (feature `fault-injection`): from now on this party deviates once,
    /// as `f` says, replacing any earlier computation fault. Honest parties never call
    /// this.
    pub fn inject_compute_fault(&mut self, f: ComputeFault) {
        self.faults = Faults {
            fault: Some(f),
            phase: self.faults.phase,
            ..Faults::default()
        };
    }

    /// [`Party::inject_compute_fault`] counting only the messages this party sends while
    /// in `phase` (as the computation marks it with [`Party::set_phase`]): `f.nth` is then
    /// the `nth` message at `f.site` within that phase.
    pub fn inject_compute_fault_in(&mut self, phase: Phase, f: ComputeFault) {
        self.inject_compute_fault(f);
        self.faults.aim = Some(phase);
    }

    /// Messages this party has sent at `site` since the last injected fault (in the aimed
    /// phase only, if the fault has one).
    pub fn messages_at(&self, site: ComputeSite) -> u64 {
        self.faults.seen[site.index()]
    }

    /// Whether the injected fault has fired, and if so how many openings this party had
    /// begun then: an honest party that begins no more than that many openings in all
    /// stopped before any opening that could depend on the deviation.
    pub fn compute_fault_fired(&self) -> Option<u64> {
        self.faults.fired_at
    }

    /// Notes that the fault fires now.
    fn fire(&mut self) {
        self.faults.fired_at = Some(self.audit.openings_begun());
    }

    /// Corrupts an outgoing message given as words, if the fault says so.
    pub(crate) fn corrupt_words(&mut self, site: ComputeSite, msg: &mut [u64]) {
        if self.faults.now(site) {
            if let Some(w) = msg.first_mut() {
                *w ^= 1;
                self.fire();
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
                self.fire();
                return true;
            }
        }
        false
    }
}
