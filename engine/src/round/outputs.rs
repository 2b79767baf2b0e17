//! Outputs users can check (design §3: "users receive both copies of each output
//! component and name a liar").
//!
//! A user's output `o = x_0 ^ x_1 ^ x_2` is replicated: component `x_j` is held by
//! party `j` (as its `a`) and party `j-1` (as its `b`). Party `i` sends the user both
//! components it holds, each with a 128-bit nonce `r_j` that only the two holders of
//! `x_j` know (drawn from their shared mask stream), and a commitment
//! `c_j = SHA-256(domain ‖ round ‖ user ‖ j ‖ r_j ‖ x_j)` to the component it does
//! *not* hold. The commitment reaches the third party from both holders before
//! anything is released (one round: the full vector from one holder, a hash of it
//! from the other), so with at most one dishonest server it is the commitment to the
//! true component, or the round aborts.
//!
//! So the user has, for each component, two copies and a commitment from three
//! different servers. A dishonest server can corrupt at most one of the three; the user
//! takes the copy that matches the commitment, names the server whose message
//! contradicts the other two ([`reconstruct_checked`]), and still reconstructs the right
//! output. The nonce keeps the commitment hiding: the third party knows the other two
//! components, so without it a commitment to a low-entropy output could be brute-forced.

use super::{Output, OutputError, RoundConfig};
use crate::channel::{PartyId, Peer};
use crate::error::EngineError;
use crate::party::Party;
use rayon::prelude::*;
use sha2::Digest;
use sha3::Sha3_256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of a component's commitment nonce.
pub const NONCE_BYTES: usize = 16;

/// What party `i` sends one user for one round.
#[derive(Clone, PartialEq, Eq)]
pub struct OutputShare {
    /// `x_i`: the component this party holds as `a`.
    pub own: Vec<u64>,
    /// `x_{i+1}`: the component this party holds as `b`.
    pub next: Vec<u64>,
    /// The nonce of `x_i` (shared with party `i-1`).
    pub own_nonce: [u8; NONCE_BYTES],
    /// The nonce of `x_{i+1}` (shared with party `i+1`).
    pub next_nonce: [u8; NONCE_BYTES],
    /// The commitment to `x_{i+2}`, the component this party does not hold, as both of
    /// its holders reported it.
    pub other_commit: [u8; 32],
}

impl std::fmt::Debug for OutputShare {
    // Shares are secret-shared data: sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputShare({} words)", self.own.len())
    }
}

/// The commitment to component `component` of `user`'s output in `round`:
/// `SHA-256("acs/output-commit/v1" ‖ round ‖ user ‖ component ‖ nonce ‖ words)`.
/// SHA-256 rather than SHA3 because every party hashes every user's two components
/// each round, and SHA-256 runs on the SHA extensions where the CPU has them (several
/// times SHA3's speed on this machine kind); both are collision resistant, which is all
/// binding needs, and the 128-bit nonce makes it hiding.
pub fn commit(
    round: u32,
    user: u64,
    component: PartyId,
    nonce: &[u8; NONCE_BYTES],
    words: &[u64],
) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(b"acs/output-commit/v1");
    h.update(round.to_le_bytes());
    h.update(user.to_le_bytes());
    h.update([component.index() as u8]);
    h.update(nonce);
    crate::declassify::update_words(&mut h, words);
    h.finalize().into()
}

/// `n` commitment nonces, the next `2n` words of `stream`.
fn nonces(stream: &mut crate::prg::Prg, n: usize) -> Vec<[u8; NONCE_BYTES]> {
    let mut w = zeroize::Zeroizing::new(vec![0u64; 2 * n]);
    stream.fill_par(&mut w);
    w.chunks_exact(2)
        .map(|w| {
            let mut n = [0u8; NONCE_BYTES];
            n[..8].copy_from_slice(&w[0].to_le_bytes());
            n[8..].copy_from_slice(&w[1].to_le_bytes());
            n
        })
        .collect()
}

impl Party {
    /// Builds this party's [`OutputShare`] for each online user from its two components
    /// (user `k`'s `x_i` at `own[k * words ..]`, its `x_{i+1}` at `next[k * words ..]`,
    /// users in the order of `online`), and checks with the other two that the
    /// commitments to the component it lacks agree. One round. On disagreement returns
    /// [`EngineError::Deviation`] naming both peers: nothing may be released.
    pub fn commit_outputs(
        &mut self,
        round: u32,
        online: &[u64],
        own: Vec<u64>,
        next: Vec<u64>,
        words: usize,
    ) -> Result<RoundOutputs, EngineError> {
        let u = online.len();
        if own.len() != u * words || next.len() != u * words {
            return Err(EngineError::InvalidInput(
                "one output of the configured width per online user".into(),
            ));
        }
        let me = self.id();
        // Component x_i is shared with i-1 (this party's `prev` stream), x_{i+1} with
        // i+1 (`next`); both holders draw the same words at the same protocol step.
        let own_nonces = nonces(&mut self.mask.prev, u);
        let next_nonces = nonces(&mut self.mask.next, u);
        let commits: Vec<([u8; 32], [u8; 32])> = (0..u)
            .into_par_iter()
            .map(|k| {
                let at = k * words..(k + 1) * words;
                (
                    commit(round, online[k], me, &own_nonces[k], &own[at.clone()]),
                    commit(round, online[k], me.next(), &next_nonces[k], &next[at]),
                )
            })
            .with_min_len(64)
            .collect();
        // Party i+1 lacks x_i: it gets the full vector. Party i-1 lacks x_{i+1}: it gets
        // a hash of the vector, which it compares with the vector from i+2 = its prev.
        let mut to_next = Vec::with_capacity(32 * u);
        let mut for_prev = Sha3_256::new();
        for_prev.update(b"acs/output-commit-list/v1");
        for (a, b) in &commits {
            to_next.extend_from_slice(a);
            for_prev.update(b);
        }
        self.send_bytes(Peer::Next, to_next)?;
        self.send_bytes(Peer::Prev, for_prev.finalize().to_vec())?;
        let got = self.recv_bytes(Peer::Prev, 32 * u)?;
        let check = self.recv_bytes(Peer::Next, 32)?;
        self.count_round();
        let mut h = Sha3_256::new();
        h.update(b"acs/output-commit-list/v1");
        h.update(&got);
        if h.finalize()[..] != check[..] {
            return Err(EngineError::Deviation {
                what: "the two holders of a component committed to different output components"
                    .into(),
                suspects: [me.prev(), me.next()],
            });
        }
        let other_commits = got
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        Ok(RoundOutputs {
            words,
            own,
            next,
            own_nonces,
            next_nonces,
            other_commits,
        })
    }
}

/// What party `i` sends every user of a round ([`OutputShare`] for each), held as one
/// table per field: a round at scale builds no vector per user (it built two per user,
/// two million allocations a party at a million users).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct RoundOutputs {
    words: usize,
    /// User `k`'s `x_i` at words `k * words ..`.
    own: Vec<u64>,
    /// User `k`'s `x_{i+1}`, likewise.
    next: Vec<u64>,
    own_nonces: Vec<[u8; NONCE_BYTES]>,
    next_nonces: Vec<[u8; NONCE_BYTES]>,
    other_commits: Vec<[u8; 32]>,
}

impl std::fmt::Debug for RoundOutputs {
    // Shares are secret-shared data: sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RoundOutputs({} users of {} words)",
            self.len(),
            self.words
        )
    }
}

/// One user's [`OutputShare`] inside a [`RoundOutputs`], borrowed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OutputShareRef<'a> {
    /// `x_i`.
    pub own: &'a [u64],
    /// `x_{i+1}`.
    pub next: &'a [u64],
    /// The nonce of `x_i`.
    pub own_nonce: &'a [u8; NONCE_BYTES],
    /// The nonce of `x_{i+1}`.
    pub next_nonce: &'a [u8; NONCE_BYTES],
    /// The commitment to `x_{i+2}`.
    pub other_commit: &'a [u8; 32],
}

/// One user's [`OutputShare`] inside a [`RoundOutputs`], to alter (cheating harnesses
/// and fault injection: what a dishonest server could send).
pub struct OutputShareMut<'a> {
    /// `x_i`.
    pub own: &'a mut [u64],
    /// `x_{i+1}`.
    pub next: &'a mut [u64],
    /// The commitment to `x_{i+2}`.
    pub other_commit: &'a mut [u8; 32],
}

impl std::fmt::Debug for OutputShareRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputShareRef({} words)", self.own.len())
    }
}

impl std::fmt::Debug for OutputShareMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputShareMut({} words)", self.own.len())
    }
}

impl OutputShareRef<'_> {
    /// An owned copy (what the transport encodes, what a user decodes).
    pub fn to_share(&self) -> OutputShare {
        OutputShare {
            own: self.own.to_vec(),
            next: self.next.to_vec(),
            own_nonce: *self.own_nonce,
            next_nonce: *self.next_nonce,
            other_commit: *self.other_commit,
        }
    }
}

impl RoundOutputs {
    /// No users (a round over an empty online set).
    pub fn empty(words: usize) -> Self {
        RoundOutputs {
            words,
            own: Vec::new(),
            next: Vec::new(),
            own_nonces: Vec::new(),
            next_nonces: Vec::new(),
            other_commits: Vec::new(),
        }
    }

    /// Users answered.
    pub fn len(&self) -> usize {
        self.own_nonces.len()
    }

    /// Whether no user is answered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer to user `k` (the `k`-th of the round's online users). Panics if `k` is
    /// out of range, like indexing.
    pub fn get(&self, k: usize) -> OutputShareRef<'_> {
        let at = k * self.words..(k + 1) * self.words;
        OutputShareRef {
            own: &self.own[at.clone()],
            next: &self.next[at],
            own_nonce: &self.own_nonces[k],
            next_nonce: &self.next_nonces[k],
            other_commit: &self.other_commits[k],
        }
    }

    /// [`RoundOutputs::get`], to alter.
    pub fn get_mut(&mut self, k: usize) -> OutputShareMut<'_> {
        let at = k * self.words..(k + 1) * self.words;
        OutputShareMut {
            own: &mut self.own[at.clone()],
            next: &mut self.next[at],
            other_commit: &mut self.other_commits[k],
        }
    }

    /// An owned copy of the answer to user `k`.
    pub fn share(&self, k: usize) -> OutputShare {
        self.get(k).to_share()
    }

    /// The answers in user order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = OutputShareRef<'_>> + '_ {
        (0..self.len()).map(|k| self.get(k))
    }
}

/// A user's output, reconstructed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedOutput {
    /// The output.
    pub output: Output,
    /// The server whose message contradicted the other two, if any (it was outvoted;
    /// the output is right all the same).
    pub liar: Option<PartyId>,
}

/// Why a user could not reconstruct a checked output.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The words do not decode.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The messages contradict each other in a way no single dishonest server explains
    /// (for example two servers' answers disagree with the third's in two components):
    /// nothing is accepted.
    #[error("the three servers' answers are inconsistent beyond one liar")]
    Inconsistent,
}

/// Rebuilds `user`'s output for `round` from the three servers' answers (`shares[i]`
/// from server `i`), checking every component against its second copy and its
/// commitment. With at most one dishonest server the output is always right and that
/// server, if it lied to this user, is named.
pub fn reconstruct_checked(
    round: u32,
    user: u64,
    shares: [&OutputShare; 3],
    cfg: &RoundConfig,
) -> Result<CheckedOutput, CheckError> {
    let ow = cfg.output_words();
    for s in shares {
        if s.own.len() != ow || s.next.len() != ow {
            return Err(OutputError::WrongLength {
                expected: ow,
                got: s.own.len().min(s.next.len()),
            }
            .into());
        }
    }
    let mut words = vec![0u64; ow];
    let mut liar: Option<PartyId> = None;
    let mut name = |p: PartyId| -> Result<(), CheckError> {
        match liar {
            Some(q) if q != p => Err(CheckError::Inconsistent),
            _ => {
                liar = Some(p);
                Ok(())
            }
        }
    };
    for j in PartyId::ALL {
        // Component j: from server j (own), from server j-1 (next), commitment from j+1.
        let (holder, other_holder, committer) = (j, j.prev(), j.next());
        let first = (
            &shares[holder.index()].own,
            &shares[holder.index()].own_nonce,
        );
        let second = (
            &shares[other_holder.index()].next,
            &shares[other_holder.index()].next_nonce,
        );
        let c = &shares[committer.index()].other_commit;
        let opens = |(w, n): (&Vec<u64>, &[u8; NONCE_BYTES])| commit(round, user, j, n, w) == *c;
        let value = if first == second {
            if !opens(first) {
                // Both holders agree, so at least one honest holder vouches for it.
                name(committer)?;
            }
            first.0
        } else {
            match (opens(first), opens(second)) {
                (true, false) => {
                    name(other_holder)?;
                    first.0
                }
                (false, true) => {
                    name(holder)?;
                    second.0
                }
                _ => return Err(CheckError::Inconsistent),
            }
        };
        for (o, v) in words.iter_mut().zip(value) {
            *o ^= v;
        }
    }
    Ok(CheckedOutput {
        output: Output::from_words(&words, cfg)?,
        liar,
    })
}

/// Rebuilds `user`'s output from the answers of two servers only (`a` from server `ia`,
/// `b` from server `ib`), for when the third answer is lost on the way (a relay died).
/// Any two servers hold all three components between them, and every component is then
/// covered twice: by two copies, or by a copy from one server and the other server's
/// commitment. So a single dishonest server among the two cannot make a wrong output
/// pass: any disagreement refuses the output ([`CheckError::Inconsistent`]), since with
/// only two voices the liar cannot be told apart.
pub fn reconstruct_from_two(
    round: u32,
    user: u64,
    (ia, a): (PartyId, &OutputShare),
    (ib, b): (PartyId, &OutputShare),
    cfg: &RoundConfig,
) -> Result<Output, CheckError> {
    let ow = cfg.output_words();
    for s in [a, b] {
        if s.own.len() != ow || s.next.len() != ow {
            return Err(OutputError::WrongLength {
                expected: ow,
                got: s.own.len().min(s.next.len()),
            }
            .into());
        }
    }
    // Name them so that `first` is followed by `second` (j, j+1).
    let (j, first, second) = if ib == ia.next() {
        (ia, a, b)
    } else if ia == ib.next() {
        (ib, b, a)
    } else {
        return Err(CheckError::Inconsistent);
    };
    let opens = |c: PartyId, n: &[u8; NONCE_BYTES], w: &[u64], commitment: &[u8; 32]| {
        commit(round, user, c, n, w) == *commitment
    };
    // x_j: first's own, committed to by second (x_{(j+1)+2} = x_j).
    // x_{j+1}: first's next and second's own, two copies.
    // x_{j+2}: second's next, committed to by first.
    let consistent = opens(j, &first.own_nonce, &first.own, &second.other_commit)
        && first.next == second.own
        && first.next_nonce == second.own_nonce
        && opens(
            j.next().next(),
            &second.next_nonce,
            &second.next,
            &first.other_commit,
        );
    if !consistent {
        return Err(CheckError::Inconsistent);
    }
    let mut words = vec![0u64; ow];
    for part in [&first.own, &first.next, &second.next] {
        for (o, v) in words.iter_mut().zip(part.iter()) {
            *o ^= v;
        }
    }
    Ok(Output::from_words(&words, cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{Incoming, Role, Status};
    use rand::{RngCore, SeedableRng};

    const CFG: RoundConfig = RoundConfig {
        payload_words: 3,
        store_capacity: 1,
        expiry_rounds: 1,
        receipt_rounds: crate::round::DEFAULT_RECEIPT_ROUNDS,
    };

    /// Honest answers for `out`, built as three parties would.
    fn answers(out: &Output, user: u64, round: u32, seed: u64) -> [OutputShare; 3] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let x = crate::share::xor_share(&out.to_words(&CFG), &mut rng);
        let mut nonces = [[0u8; NONCE_BYTES]; 3];
        for n in &mut nonces {
            rng.fill_bytes(n);
        }
        let c: Vec<[u8; 32]> = PartyId::ALL
            .iter()
            .map(|j| commit(round, user, *j, &nonces[j.index()], &x[j.index()]))
            .collect();
        PartyId::ALL.map(|i| OutputShare {
            own: x[i.index()].clone(),
            next: x[i.next().index()].clone(),
            own_nonce: nonces[i.index()],
            next_nonce: nonces[i.next().index()],
            other_commit: c[i.next().next().index()],
        })
    }

    fn sample() -> Output {
        Output {
            status: Status::Delivered,
            incoming: Some(Incoming {
                role: Role::Send,
                from: 77,
                payload: vec![1, 2, 3],
            }),
            receipt: None,
        }
    }

    fn check(a: &[OutputShare; 3]) -> Result<CheckedOutput, CheckError> {
        reconstruct_checked(4, 9, [&a[0], &a[1], &a[2]], &CFG)
    }

    #[test]
    fn honest_answers_reconstruct_with_nobody_named() {
        let a = answers(&sample(), 9, 4, 1);
        assert_eq!(
            check(&a),
            Ok(CheckedOutput {
                output: sample(),
                liar: None
            })
        );
    }

    #[test]
    fn every_single_server_lie_is_outvoted_and_named() {
        // Each server, each of its three fields, and all of them at once.
        for liar in PartyId::ALL {
            for what in 0..5 {
                let mut a = answers(&sample(), 9, 4, 2 + what);
                let s = &mut a[liar.index()];
                match what {
                    0 => s.own[1] ^= 4,
                    1 => s.next[0] ^= 1,
                    2 => s.other_commit[3] ^= 1,
                    3 => s.own_nonce[0] ^= 1,
                    _ => {
                        s.own[2] ^= 8;
                        s.next[2] ^= 8;
                        s.other_commit[0] ^= 1;
                    }
                }
                let got = check(&a).unwrap_or_else(|e| panic!("{liar} lie {what}: {e}"));
                assert_eq!(got.output, sample(), "{liar} lie {what}");
                assert_eq!(got.liar, Some(liar), "{liar} lie {what}");
            }
        }
    }

    #[test]
    fn two_colluding_liars_are_still_flagged() {
        // Beyond the threat model: servers 0 and 1 both alter component 1 the same way.
        // The output cannot be saved, but the user is not silent about it: the honest
        // commitment from server 2 contradicts them, so somebody is named.
        let mut a = answers(&sample(), 9, 4, 9);
        a[1].own[0] ^= 1;
        a[0].next[0] ^= 1;
        assert!(matches!(
            check(&a),
            Err(_) | Ok(CheckedOutput { liar: Some(_), .. })
        ));
        // Two liars in different components are inconsistent beyond one liar.
        let mut a = answers(&sample(), 9, 4, 10);
        a[0].own[0] ^= 1;
        a[1].own[0] ^= 1;
        assert_eq!(check(&a), Err(CheckError::Inconsistent));
    }

    #[test]
    fn any_two_honest_answers_reconstruct_and_any_single_lie_among_them_is_refused() {
        let a = answers(&sample(), 9, 4, 11);
        for (x, y) in [(0, 1), (1, 2), (2, 0), (1, 0)] {
            let (px, py) = (PartyId::ALL[x], PartyId::ALL[y]);
            assert_eq!(
                reconstruct_from_two(4, 9, (px, &a[x]), (py, &a[y]), &CFG),
                Ok(sample())
            );
            for liar in [x, y] {
                for what in 0..4 {
                    let mut bad = a.clone();
                    let s = &mut bad[liar];
                    match what {
                        0 => s.own[0] ^= 1,
                        1 => s.next[2] ^= 1,
                        2 => s.other_commit[0] ^= 1,
                        _ => s.next_nonce[3] ^= 1,
                    }
                    assert_eq!(
                        reconstruct_from_two(4, 9, (px, &bad[x]), (py, &bad[y]), &CFG),
                        Err(CheckError::Inconsistent),
                        "liar {liar}, field {what}"
                    );
                }
            }
        }
        // The same server twice is no pair.
        let p0 = PartyId::ALL[0];
        assert!(reconstruct_from_two(4, 9, (p0, &a[0]), (p0, &a[0]), &CFG).is_err());
    }

    #[test]
    fn commitments_bind_round_user_and_component() {
        let n = [5u8; NONCE_BYTES];
        let w = [1u64, 2];
        let c = commit(1, 2, PartyId::ALL[0], &n, &w);
        assert_ne!(c, commit(2, 2, PartyId::ALL[0], &n, &w));
        assert_ne!(c, commit(1, 3, PartyId::ALL[0], &n, &w));
        assert_ne!(c, commit(1, 2, PartyId::ALL[1], &n, &w));
        assert_ne!(c, commit(1, 2, PartyId::ALL[0], &[6; NONCE_BYTES], &w));
    }
}
