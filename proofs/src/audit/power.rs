//! The power of the two-world test, by simulation.
//!
//! A leak adds openings whose values depend on the secret pattern. We model the leaks
//! the audit must catch, from the weakest (one opened bit per round) to the plain ones
//! (a whole count), and simulate their opened values on the audit's own runs: each
//! run's secret quantities (number of real messages, the receiver's in-degree, stored
//! items) are known from the ideal round. A simulated audit then applies exactly the
//! real audit's test — pairwise two-sample KS per round and workload pair, at the real
//! audit's Bonferroni threshold counting these extra tests too — and the power is the
//! fraction of simulated audits that flag the leak. The deterministic check (routing
//! multisets must be identical) is left out, so these figures are lower bounds for
//! leaks opened as routing values.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::stats::ks_test;
use super::workload::Secrets;

/// A modelled leak: what one round opens besides the real openings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeakModel {
    /// One opened bit: the real/cover flag of a uniformly random block (after a
    /// shuffle). `P(1) = real / users`: the weakest leak of the number of real messages.
    OneRealFlag,
    /// One opened bit: whether a uniformly random block is addressed to the receiver.
    /// `P(1) = in-degree / users`: the weakest leak of a receiver's in-degree.
    OneReceiverBit,
    /// One opened bit: the valid flag of a uniformly random store record.
    /// `P(1) = stored / C`: the weakest leak of the number of stored items.
    OneStoreFlag,
    /// Every real/cover flag, shuffled: the number of real messages itself.
    RealCount,
    /// Every store valid flag, shuffled: the number of stored items itself.
    StoreCount,
}

impl LeakModel {
    /// All models, weakest first.
    pub const ALL: [LeakModel; 5] = [
        LeakModel::OneRealFlag,
        LeakModel::OneReceiverBit,
        LeakModel::OneStoreFlag,
        LeakModel::RealCount,
        LeakModel::StoreCount,
    ];

    /// What the report calls it.
    pub fn describe(self) -> &'static str {
        match self {
            LeakModel::OneRealFlag => "one real/cover flag per round (number of real messages)",
            LeakModel::OneReceiverBit => {
                "one 'is it for the receiver' bit per round (receiver's in-degree)"
            }
            LeakModel::OneStoreFlag => "one store valid flag per round (number of stored items)",
            LeakModel::RealCount => "all real/cover flags (the number of real messages)",
            LeakModel::StoreCount => "all store valid flags (the number of stored items)",
        }
    }

    fn draw(self, s: &Secrets, users: usize, capacity: usize, rng: &mut StdRng) -> f64 {
        let ratio = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f64 / of as f64 };
        let bit = |p: f64, rng: &mut StdRng| f64::from(u8::from(rng.gen_bool(p.clamp(0.0, 1.0))));
        match self {
            LeakModel::OneRealFlag => bit(ratio(s.real, users), rng),
            LeakModel::OneReceiverBit => bit(ratio(s.receiver_in_degree, users), rng),
            LeakModel::OneStoreFlag => bit(ratio(s.stored, capacity), rng),
            LeakModel::RealCount => ratio(s.real, users),
            LeakModel::StoreCount => ratio(s.stored, capacity),
        }
    }
}

/// The power against one model.
#[derive(Clone, Debug, Serialize)]
pub struct Power {
    /// The model.
    pub model: LeakModel,
    /// What it is.
    pub description: &'static str,
    /// Fraction of simulated audits that flagged it.
    pub power: f64,
    /// Simulated audits.
    pub trials: usize,
}

/// Simulates `trials` audits per model. `secrets[w][k][r]`: workload `w`, run `k`,
/// round `r`. `base_tests` is the number of tests of the real audit; the threshold is
/// `alpha / (base_tests + extra)`, with `extra` the tests a leak's feature adds.
pub fn simulate(
    secrets: &[Vec<Vec<Secrets>>],
    users: usize,
    capacity: usize,
    alpha: f64,
    base_tests: usize,
    trials: usize,
    seed: u64,
) -> Vec<Power> {
    let workloads = secrets.len();
    let rounds = secrets
        .first()
        .and_then(|w| w.first())
        .map_or(0, |r| r.len());
    let pairs = workloads * workloads.saturating_sub(1) / 2;
    let extra = rounds * pairs;
    let threshold = alpha / (base_tests + extra).max(1) as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    LeakModel::ALL
        .iter()
        .map(|&model| {
            let mut detected = 0;
            for _ in 0..trials {
                let mut hit = false;
                for r in 0..rounds {
                    let samples: Vec<Vec<f64>> = secrets
                        .iter()
                        .map(|runs| {
                            runs.iter()
                                .map(|run| model.draw(&run[r], users, capacity, &mut rng))
                                .collect()
                        })
                        .collect();
                    for a in 0..workloads {
                        for b in a + 1..workloads {
                            hit |= ks_test(&samples[a], &samples[b]).p < threshold;
                        }
                    }
                }
                detected += usize::from(hit);
            }
            Power {
                model,
                description: model.describe(),
                power: detected as f64 / trials.max(1) as f64,
                trials,
            }
        })
        .collect()
}
