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
    /// Per workload pair `(a, b)` (indices into the workload list): the mean leaked
    /// value in each world, the larger difference over the rounds, and the fraction of
    /// simulated audits in which that pair alone was flagged.
    pub pairs: Vec<PairPower>,
}

/// How well one pair of worlds is told apart through a modelled leak.
#[derive(Clone, Debug, Serialize)]
pub struct PairPower {
    /// The two workloads (indices).
    pub pair: [usize; 2],
    /// Largest difference over the rounds of the mean leaked value (a bit's
    /// probability, or a count as a fraction).
    pub difference: f64,
    /// Fraction of simulated audits flagging this pair.
    pub power: f64,
}

impl Power {
    /// The pair whose worlds differ least (by at least `min_difference`) in the leaked
    /// value: the hardest to tell apart among those that differ.
    pub fn closest(&self, min_difference: f64) -> Option<&PairPower> {
        self.pairs
            .iter()
            .filter(|p| p.difference >= min_difference)
            .min_by(|x, y| x.difference.total_cmp(&y.difference))
    }
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
            let index: Vec<[usize; 2]> = (0..workloads)
                .flat_map(|a| (a + 1..workloads).map(move |b| [a, b]))
                .collect();
            let mut detected = 0;
            let mut pair_detected = vec![0usize; index.len()];
            let mut sums = vec![vec![0.0f64; rounds]; workloads];
            for _ in 0..trials {
                let mut pair_hit = vec![false; index.len()];
                for r in 0..rounds {
                    let samples: Vec<Vec<f64>> = secrets
                        .iter()
                        .map(|runs| {
                            runs.iter()
                                .map(|run| model.draw(&run[r], users, capacity, &mut rng))
                                .collect()
                        })
                        .collect();
                    for (w, v) in samples.iter().enumerate() {
                        sums[w][r] += v.iter().sum::<f64>() / v.len().max(1) as f64;
                    }
                    for (k, [a, b]) in index.iter().enumerate() {
                        pair_hit[k] |= ks_test(&samples[*a], &samples[*b]).p < threshold;
                    }
                }
                detected += usize::from(pair_hit.contains(&true));
                for (d, h) in pair_detected.iter_mut().zip(&pair_hit) {
                    *d += usize::from(*h);
                }
            }
            let t = trials.max(1) as f64;
            let pairs = index
                .iter()
                .zip(&pair_detected)
                .map(|([a, b], d)| PairPower {
                    pair: [*a, *b],
                    difference: (0..rounds)
                        .map(|r| ((sums[*a][r] - sums[*b][r]) / t).abs())
                        .fold(0.0, f64::max),
                    power: *d as f64 / t,
                })
                .collect();
            Power {
                model,
                description: model.describe(),
                power: detected as f64 / t,
                trials,
                pairs,
            }
        })
        .collect()
}

/// Power of one test between two worlds whose one-bit leak is 1 with probability 0.5 in
/// one and `0.5 + delta` in the other (`runs` samples each, per-test threshold `p`).
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    /// Difference of the bit's probability between the worlds.
    pub delta: f64,
    /// Fraction of simulated tests below the threshold.
    pub power: f64,
}

/// The power curve of a single pairwise test against a one-bit leak (see
/// [`CurvePoint`]); `trials` simulated tests per point.
pub fn bernoulli_curve(runs: usize, threshold: f64, trials: usize, seed: u64) -> Vec<CurvePoint> {
    let mut rng = StdRng::seed_from_u64(seed);
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
        .iter()
        .map(|&delta| {
            let mut hits = 0;
            for _ in 0..trials {
                let x: Vec<f64> = (0..runs)
                    .map(|_| f64::from(u8::from(rng.gen_bool(0.5))))
                    .collect();
                let y: Vec<f64> = (0..runs)
                    .map(|_| f64::from(u8::from(rng.gen_bool(0.5 + delta))))
                    .collect();
                hits += usize::from(ks_test(&x, &y).p < threshold);
            }
            CurvePoint {
                delta,
                power: hits as f64 / trials.max(1) as f64,
            }
        })
        .collect()
}
