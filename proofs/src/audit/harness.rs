//! Runs one planned run through the three parties (in-process) and keeps what each
//! party opened.
//!
//! Each run is a fresh set of parties (fresh pairwise seeds, so fresh shuffles) that
//! runs the online-set consistency check and then the round, for every round, with the
//! store carried over. Every party records every opened value. The harness checks that
//! the three parties opened the same values in the same order (openings go to all
//! three), that the online sets agreed, and that the outputs are the ideal round's: an
//! audit of a round that computes the wrong thing would prove nothing.

use std::sync::Arc;

use acs_engine::declassify::AuditEntry;
use acs_engine::round::consistency::KeyNotary;
use acs_engine::round::input::PartyInputs;
use acs_engine::round::mpc::{exchange_round, SharedStore};
use acs_engine::round::Output;
use acs_engine::testing::run_three;
use acs_engine::EngineError;
use rand::rngs::StdRng;

use super::leaky::{leaky_round, Leak};
use super::workload::{Plan, Public};

/// Which round implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The engine's round, unchanged.
    Real,
    /// The engine's round plus a deliberate leak.
    Leaky(Leak),
}

/// What one party opened in one run, split by round.
#[derive(Clone, Debug)]
pub struct RunTrace {
    /// `rounds[r]`: the openings of round `r + 1`, in order.
    pub rounds: Vec<Vec<AuditEntry>>,
}

/// Why a run could not be audited.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The engine failed.
    #[error("party {party} failed: {source}")]
    Engine {
        /// Which party.
        party: usize,
        /// Its error.
        source: EngineError,
    },
    /// The three parties did not open the same values.
    #[error("parties 0 and {0} recorded different openings")]
    PartiesDisagree(usize),
    /// The servers did not agree on the online set (they were given the same one).
    #[error("the online-set consistency check failed on identical sets in round {0}")]
    Inconsistent(u32),
    /// An output differs from the ideal round's.
    #[error("round {round}, user {user}: output {got} differs from the ideal round's")]
    WrongOutput {
        /// Round number.
        round: u32,
        /// Index in the online set.
        user: usize,
        /// What came out (or why it did not decode).
        got: String,
    },
}

type PartyRun = (Vec<AuditEntry>, Vec<usize>, Vec<Vec<Vec<u64>>>);

/// Runs `plan` through three fresh parties with `variant`.
pub fn run_plan(
    public: &Public,
    plan: &Plan,
    variant: Variant,
    rng: &mut StdRng,
) -> Result<RunTrace, HarnessError> {
    let cfg = public.cfg;
    // shares[r][i]: what party i receives from every user in round r + 1, in online order.
    let shares: Vec<[PartyInputs; 3]> = plan
        .blocks
        .iter()
        .enumerate()
        .map(|(r, blocks)| PartyInputs::share_all(&cfg, r as u64 + 1, &public.online, blocks, rng))
        .collect();
    let shares = Arc::new(shares);
    let online = Arc::new(public.online.clone());
    let notaries = Arc::new(KeyNotary::three_random([0; 32]));
    let results = run_three(move |p| -> Result<(PartyRun, Option<u32>), EngineError> {
        let i = p.id().index();
        p.record_opened_values(true);
        let mut store = SharedStore::empty(&cfg);
        let mut marks = Vec::new();
        let mut outputs = Vec::new();
        let mut inconsistent = None;
        for (r, round_shares) in shares.iter().enumerate() {
            let round = r as u32 + 1;
            if !p.agree_online(round, &online, &notaries[i])?.consistent {
                inconsistent.get_or_insert(round);
            }
            let blocks = round_shares[i].clone();
            let result = match variant {
                Variant::Real => {
                    exchange_round(p, &cfg, round, &online, blocks, &store, &notaries[i])?
                }
                Variant::Leaky(leak) => {
                    leaky_round(p, &cfg, round, &online, blocks, &store, &notaries[i], leak)?
                }
            };
            marks.push(p.audit_log().entries().len());
            outputs.push(result.outputs.iter().map(|o| o.own.to_vec()).collect());
            store = result.store;
        }
        Ok((
            (p.audit_log().entries().to_vec(), marks, outputs),
            inconsistent,
        ))
    });
    let mut runs: Vec<PartyRun> = Vec::with_capacity(3);
    for (party, r) in results.into_iter().enumerate() {
        let (run, inconsistent) = r.map_err(|source| HarnessError::Engine { party, source })?;
        if let Some(round) = inconsistent {
            return Err(HarnessError::Inconsistent(round));
        }
        runs.push(run);
    }
    for (i, run) in runs.iter().enumerate().skip(1) {
        if run.0 != runs[0].0 || run.1 != runs[0].1 {
            return Err(HarnessError::PartiesDisagree(i));
        }
    }
    for (r, want) in plan.expected.iter().enumerate() {
        for (u, want_out) in want.iter().enumerate() {
            let got =
                Output::reconstruct([&runs[0].2[r][u], &runs[1].2[r][u], &runs[2].2[r][u]], &cfg);
            if got.as_ref() != Ok(want_out) {
                return Err(HarnessError::WrongOutput {
                    round: r as u32 + 1,
                    user: u,
                    got: format!("{got:?}"),
                });
            }
        }
    }
    let (entries, marks, _) = runs.swap_remove(0);
    let mut rounds = Vec::with_capacity(marks.len());
    let mut start = 0;
    for end in marks {
        rounds.push(entries[start..end].to_vec());
        start = end;
    }
    Ok(RunTrace { rounds })
}
