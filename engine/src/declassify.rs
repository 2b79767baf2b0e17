//! The one way to open a shared value, and the record of everything opened.
//!
//! Every opening names a [`Reason`] from a closed list; each reason is a value the design
//! (§1) allows to become public, and `docs/leakage.md` says why each is simulatable.
//!
//! Each opening is checked as it happens: the share a party misses is held by both other
//! parties, one sends it as the value and the other sends a hash of it as a check, in the
//! same round. A party whose value and check disagree stops with
//! [`EngineError::OpeningCheckFailed`] before using the value, so with at most one
//! dishonest party no honest party ever proceeds on a wrong opening; the
//! [`OpeningComplaint`] it carries names the two senders, and [`resolve_complaint`] lets
//! the third party say which of them its own record contradicts. Each party also logs
//! what it opened and keeps a running SHA-256 digest of all opened values, which
//! [`Party::check_openings`] compares across the three parties.
//!
//! SHA-256 rather than SHA3-256 for these hashes: every opened word is hashed four times
//! per party (the check it sends, the record of the value it sends, the check of the
//! value it gets, the running digest), and SHA-256 runs on the CPU's SHA extensions
//! where it has them (several times SHA3's speed on this machine kind; at 10^6 users the
//! openings' SHA3 was about 6 % of all CPU samples of an `acs-bench round` run).
//! Collision resistance is all the checks need, and both have it.

use crate::channel::{PartyId, Peer};
use crate::error::EngineError;
use crate::party::{bytes_into_words, words_into_bytes, Party};
use crate::share::Shared;
use sha2::{Digest, Sha256};

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

/// What a party itself sent in one opening, for settling a complaint about it later
/// ([`resolve_complaint`]). Both hashes are in the check's format
/// (`SHA-256(domain ‖ opening index ‖ words)`), so they compare directly with the
/// hashes in an [`OpeningComplaint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SentRecord {
    /// The check this party sent to its next party: the hash of its `a` words.
    pub check: [u8; 32],
    /// The hash of the value this party sent to its previous party (its `b` words, as
    /// they went on the wire).
    pub value_hash: [u8; 32],
}

/// Everything one party opened, in order.
#[derive(Clone, Debug, Default)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
    sent: Vec<SentRecord>,
    digest: Sha256,
    pub(crate) record_values: bool,
    #[cfg(feature = "fault-injection")]
    fault: Option<OpeningFault>,
}

impl AuditLog {
    /// The openings, in order.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }

    /// What this party sent in opening `k` (counted from 0), if it got that far.
    pub fn sent(&self, k: u64) -> Option<SentRecord> {
        usize::try_from(k)
            .ok()
            .and_then(|k| self.sent.get(k))
            .copied()
    }

    /// The number of openings this party has begun: the index of its next opening. The
    /// same as `entries().len()` unless an opening failed (which aborts the computation).
    pub fn openings_begun(&self) -> u64 {
        self.sent.len() as u64
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
        update_words(&mut self.digest, values);
        self.entries.push(AuditEntry {
            reason,
            bits,
            values: self.record_values.then(|| values.to_vec()),
        });
    }
}

/// A party's complaint that, in one opening, the value from its next party and the check
/// from its previous party disagree. One of the two senders lied (or, with a dishonest
/// accuser, neither did); the accuser cannot tell which. The other two parties settle
/// it as far as they can with [`resolve_complaint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpeningComplaint {
    /// The opening's index (counted from 0 over the computation's openings).
    pub opening: u64,
    /// The party that found the disagreement.
    pub accuser: PartyId,
    /// Who sent the value: the accuser's next party.
    pub value_from: PartyId,
    /// Who sent the check: the accuser's previous party.
    pub check_from: PartyId,
    /// The hash, in the check's format, of the value that arrived.
    pub value_hash: [u8; 32],
    /// The check that arrived.
    pub check: [u8; 32],
}

impl std::fmt::Display for OpeningComplaint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} found that in opening {} the value from {} and the check from {} disagree",
            self.accuser, self.opening, self.value_from, self.check_from
        )
    }
}

/// What a party concludes about a complaint from its own record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Blame {
    /// Certain: the complaint contradicts what this party itself sent, so the accuser
    /// misreports (it sent the complaint over its own authenticated link). Certain for
    /// this party; not a proof it can show others.
    Party(PartyId),
    /// One of these two lied; this party's record cannot tell which.
    Pair(PartyId, PartyId),
    /// This party cannot tell: it is the accuser, or it has no record of that opening.
    Unknown,
}

/// Settles `c` as far as party `me` can, from what `me` itself sent (`log`).
///
/// For the party that sent the value: if the value hash in the complaint is not the hash
/// of what it sent, the accuser misreports what arrived (certain: blame the accuser);
/// if it is, either the check's sender sent a wrong check or the accuser misreports the
/// check, and this party cannot tell which (a pair). Symmetrically for the party that
/// sent the check. A complaint whose roles do not fit its accuser, or whose value and
/// check agree, cannot come from an honest party: blame the accuser.
///
/// The caller must have received `c` over `c.accuser`'s authenticated link. An honest
/// accuser knows only that one of `{value_from, check_from}` lied; with an honest
/// accuser, the honest one of those two answers with a pair holding the liar and the
/// accuser, so the two honest parties' pairs intersect in the liar. With a dishonest
/// accuser, no honest party is ever blamed alone (see `docs/security.md`).
pub fn resolve_complaint(me: PartyId, log: &AuditLog, c: &OpeningComplaint) -> Blame {
    if c.value_from != c.accuser.next()
        || c.check_from != c.accuser.prev()
        || c.value_hash == c.check
    {
        return Blame::Party(c.accuser);
    }
    if me == c.accuser {
        return Blame::Unknown;
    }
    let Some(mine) = log.sent(c.opening) else {
        return Blame::Unknown;
    };
    if me == c.value_from {
        if c.value_hash == mine.value_hash {
            Blame::Pair(c.check_from, c.accuser)
        } else {
            Blame::Party(c.accuser)
        }
    } else if c.check == mine.check {
        Blame::Pair(c.value_from, c.accuser)
    } else {
        Blame::Party(c.accuser)
    }
}

/// Which message a faulty party corrupts (see [`OpeningFault`]).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LieKind {
    /// Flip one bit of the value sent to the previous party.
    Value,
    /// Flip one bit of the check sent to the next party.
    Check,
}

/// TEST INSTRUMENT (cargo feature `fault-injection`, off by default; never enable it in
/// a server build): makes a party lie in one opening, to test that the cross-check
/// catches it and names it. Set with [`Party::inject_fault`].
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpeningFault {
    /// Which opening to lie in, counted from 0: over all openings when `reason` is
    /// `None`, else over the openings for `reason` only.
    pub at_opening: u64,
    /// What to corrupt.
    pub kind: LieKind,
    /// Count only openings for this reason (for a target whose global index depends on
    /// a random number of quicksort levels before it).
    pub reason: Option<Reason>,
}

#[cfg(feature = "fault-injection")]
impl OpeningFault {
    /// A lie of `kind` in opening `at_opening`, counted over all openings.
    pub fn new(at_opening: u64, kind: LieKind) -> Self {
        OpeningFault {
            at_opening,
            kind,
            reason: None,
        }
    }

    /// A lie of `kind` in the `nth` opening (from 0) for `reason`.
    pub fn nth(reason: Reason, nth: u64, kind: LieKind) -> Self {
        OpeningFault {
            at_opening: nth,
            kind,
            reason: Some(reason),
        }
    }
}

#[cfg(feature = "fault-injection")]
impl AuditLog {
    /// Openings for `reason` begun so far in this session: with [`OpeningFault::nth`],
    /// a test aims a lie at an opening still to come (e.g. the first of the next round).
    pub fn openings_for(&self, reason: Reason) -> u64 {
        self.entries.iter().filter(|e| e.reason == reason).count() as u64
    }

    /// The lie to tell in the opening about to begin, if any.
    fn fault_now(&self, reason: Reason) -> Option<LieKind> {
        let f = self.fault?;
        let count = match f.reason {
            None => self.openings_begun(),
            Some(r) if r == reason => self.entries.iter().filter(|e| e.reason == r).count() as u64,
            Some(_) => return None,
        };
        (count == f.at_opening).then_some(f.kind)
    }
}

/// Domain tag of the per-opening hashes (checks and the records of sent values).
const CHECK_DOMAIN: &[u8] = b"acs/opening-check/v2";

/// `SHA-256(domain ‖ index ‖ bytes)`, `bytes` being words in little-endian order.
fn check_of_bytes(index: u64, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHECK_DOMAIN);
    h.update(index.to_le_bytes());
    h.update(bytes);
    h.finalize().into()
}

/// [`check_of_bytes`] over words.
fn check_of_words(index: u64, words: &[u64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHECK_DOMAIN);
    h.update(index.to_le_bytes());
    update_words(&mut h, words);
    h.finalize().into()
}

/// Feeds `words` to `h` as little-endian bytes, a block at a time (one `update` per
/// word costs more than the hashing). The buffer is small because it is zeroed on
/// every call, and most calls hash a few dozen words (an output component's
/// commitment: with 4 KB here, zeroing the buffer took a tenth of the commitments'
/// time).
pub(crate) fn update_words(h: &mut impl sha3::digest::Update, words: &[u64]) {
    const WORDS: usize = 64;
    let mut buf = [0u8; 8 * WORDS];
    for chunk in words.chunks(WORDS) {
        let bytes = &mut buf[..8 * chunk.len()];
        for (b, w) in bytes.chunks_exact_mut(8).zip(chunk) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        h.update(&*bytes);
    }
}

impl Party {
    /// Opens the first `lanes` bits of the bitsliced words `x` (lane `k` is bit `k % 64`
    /// of word `k / 64`) to all three parties, for `reason`. Bits past `lanes` come back
    /// zero.
    ///
    /// One round: party `i` sends its `b = x_{i+1}` to `i-1` as the value, and the check
    /// `SHA-256(domain ‖ k ‖ a)` of its `a = x_i` to `i+1`, `k` being the opening's
    /// index. It receives `x_{i+2}` from `i+1` (whose `b` it is) and a check of it from
    /// `i-1` (whose `a` it is), and verifies the one against the other over whole words
    /// before using or recording anything. On disagreement returns
    /// [`EngineError::OpeningCheckFailed`].
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
        // Malicious mode: every AND gate this opening could depend on is verified first
        // (a no-op in semi-honest mode and when nothing is pending).
        self.verify_pending()?;
        let words = lanes.div_ceil(64);
        let index = self.audit.openings_begun();
        #[cfg(feature = "fault-injection")]
        let lie = self.audit.fault_now(reason);

        // The value first, so the previous party can start receiving it while this one
        // hashes.
        let mut msg = self.take_message(words);
        words_into_bytes(&x.b[..words], &mut msg);
        #[cfg(feature = "fault-injection")]
        if lie == Some(LieKind::Value) {
            if let Some(byte) = msg.first_mut() {
                *byte ^= 1;
            }
        }
        #[cfg(feature = "fault-injection")]
        let sent_value = (lie == Some(LieKind::Value)).then(|| check_of_bytes(index, &msg));
        self.send_message(Peer::Prev, msg)?;

        #[allow(unused_mut)] // Mutated only under fault injection.
        let mut check = check_of_words(index, &x.a[..words]);
        #[cfg(feature = "fault-injection")]
        if lie == Some(LieKind::Check) {
            check[0] ^= 1;
        }
        self.send_bytes(Peer::Next, check.to_vec())?;

        let value_hash = check_of_words(index, &x.b[..words]);
        #[cfg(feature = "fault-injection")]
        let value_hash = sent_value.unwrap_or(value_hash);
        self.audit.sent.push(SentRecord { check, value_hash });

        let got = self.recv_bytes(Peer::Next, 8 * words)?;
        let got_check = self.recv_bytes(Peer::Prev, 32)?;
        self.count_round();
        let arrived = check_of_bytes(index, &got);
        if arrived[..] != got_check[..] {
            self.recycle_message(got);
            let me = self.id();
            let mut check = [0u8; 32];
            check.copy_from_slice(&got_check);
            return Err(EngineError::OpeningCheckFailed(OpeningComplaint {
                opening: index,
                accuser: me,
                value_from: me.next(),
                check_from: me.prev(),
                value_hash: arrived,
                check,
            }));
        }
        let mut out = vec![0u64; words];
        bytes_into_words(&got, &mut out);
        self.recycle_message(got);
        for (o, (a, b)) in out.iter_mut().zip(x.a.iter().zip(&x.b)) {
            *o ^= a ^ b;
        }
        if !lanes.is_multiple_of(64) {
            if let Some(last) = out.last_mut() {
                *last &= (1u64 << (lanes % 64)) - 1;
            }
        }
        self.audit.record(reason, lanes, &out);
        Ok(out)
    }

    /// TEST INSTRUMENT (feature `fault-injection`): from now on, this party lies once, as
    /// `f` says, replacing any earlier fault. Honest parties never call this.
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&mut self, f: OpeningFault) {
        self.audit.fault = Some(f);
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
            suspect: suspect(self.id(), agree_next, agree_prev),
        })
    }
}

/// Who to blame, from this party's view of the digests. Every opening was cross-checked
/// as it happened (value from one peer, check from the other), so the honest parties'
/// digests are equal: with at most one dishonest party, a peer whose digest differs from
/// this party's while the other peer's agrees is that party (it misreported its digest).
/// When both peers differ from this party, nothing singles one out.
fn suspect(me: PartyId, agree_next: bool, agree_prev: bool) -> Option<PartyId> {
    match (agree_next, agree_prev) {
        (false, true) => Some(me.next()),
        (true, false) => Some(me.prev()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: [PartyId; 3] = PartyId::ALL;

    /// A log whose only record is `rec`, for opening 0.
    fn log_with(rec: SentRecord) -> AuditLog {
        AuditLog {
            sent: vec![rec],
            ..AuditLog::default()
        }
    }

    /// P0 complains about opening 0: the value came from P1, the check from P2. The true
    /// share hashes to `truth`.
    fn complaint(value_hash: [u8; 32], check: [u8; 32]) -> OpeningComplaint {
        OpeningComplaint {
            opening: 0,
            accuser: P[0],
            value_from: P[1],
            check_from: P[2],
            value_hash,
            check,
        }
    }

    const TRUTH: [u8; 32] = [7; 32];
    const LIE: [u8; 32] = [9; 32];
    const OTHER: [u8; 32] = [1; 32];

    fn value_sender_log(sent_value: [u8; 32]) -> AuditLog {
        log_with(SentRecord {
            check: OTHER,
            value_hash: sent_value,
        })
    }

    fn check_sender_log(sent_check: [u8; 32]) -> AuditLog {
        log_with(SentRecord {
            check: sent_check,
            value_hash: OTHER,
        })
    }

    #[test]
    fn a_lying_value_sender_is_in_the_check_senders_pair() {
        // P1 sent LIE as the value, P2 the true check; P0 reports both truthfully. P2
        // cannot tell P1's lie from P0 misreporting: a pair, which meets P0's own pair
        // {P1, P2} in the liar.
        let c = complaint(LIE, TRUTH);
        assert_eq!(
            resolve_complaint(P[2], &check_sender_log(TRUTH), &c),
            Blame::Pair(P[1], P[0])
        );
    }

    #[test]
    fn a_lying_check_sender_is_in_the_value_senders_pair() {
        let c = complaint(TRUTH, LIE);
        assert_eq!(
            resolve_complaint(P[1], &value_sender_log(TRUTH), &c),
            Blame::Pair(P[2], P[0])
        );
    }

    #[test]
    fn digest_suspects_are_only_ever_the_odd_peer() {
        for me in P {
            assert_eq!(suspect(me, false, true), Some(me.next()));
            assert_eq!(suspect(me, true, false), Some(me.prev()));
            assert_eq!(suspect(me, false, false), None);
            assert_eq!(suspect(me, true, true), None);
        }
    }

    #[test]
    fn a_misreported_message_is_blamed_on_the_accuser() {
        // P0 claims a value arrived that P1 never sent.
        let c = complaint(LIE, TRUTH);
        assert_eq!(
            resolve_complaint(P[1], &value_sender_log(TRUTH), &c),
            Blame::Party(P[0])
        );
        let c = complaint(TRUTH, LIE);
        assert_eq!(
            resolve_complaint(P[2], &check_sender_log(TRUTH), &c),
            Blame::Party(P[0])
        );
    }

    #[test]
    fn a_dishonest_accuser_never_gets_an_honest_party_blamed_alone() {
        // P0 reports P2's check truthfully and fabricates P1's value. P1's record
        // contradicts P0 (certain); P2's record agrees with P0, so P2 names the pair
        // {P1, P0}, which holds the liar: no honest party is blamed alone.
        let c = complaint(LIE, TRUTH);
        assert_eq!(
            resolve_complaint(P[1], &value_sender_log(TRUTH), &c),
            Blame::Party(P[0])
        );
        assert_eq!(
            resolve_complaint(P[2], &check_sender_log(TRUTH), &c),
            Blame::Pair(P[1], P[0])
        );
    }

    #[test]
    fn complaints_no_honest_party_sends_blame_the_accuser() {
        let log = value_sender_log(TRUTH);
        // The value and the check agree: nothing to complain about.
        assert_eq!(
            resolve_complaint(P[1], &log, &complaint(TRUTH, TRUTH)),
            Blame::Party(P[0])
        );
        // Roles that do not fit the accuser.
        let mut c = complaint(TRUTH, LIE);
        std::mem::swap(&mut c.value_from, &mut c.check_from);
        assert_eq!(resolve_complaint(P[1], &log, &c), Blame::Party(P[0]));
    }

    #[test]
    fn the_accuser_and_a_party_without_a_record_cannot_tell() {
        let c = complaint(LIE, TRUTH);
        assert_eq!(
            resolve_complaint(P[0], &value_sender_log(TRUTH), &c),
            Blame::Unknown
        );
        assert_eq!(
            resolve_complaint(P[1], &AuditLog::default(), &c),
            Blame::Unknown
        );
        let late = OpeningComplaint {
            opening: u64::MAX,
            ..c
        };
        assert_eq!(
            resolve_complaint(P[2], &check_sender_log(TRUTH), &late),
            Blame::Unknown
        );
    }
}
