//! Monte-Carlo simulation of the mechanisms behind the closed forms: users pick relays
//! (and, in the paper's design, exchange servers) for their shares and a target; an
//! adversary corrupts `n'_e` entry and `n'_x` exchange servers, chosen at random each
//! trial; a user counts as traced when the adversary holds every link from its address to
//! its target's address. The empirical traced fraction is compared with the formula.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::designs::{observer_anonymity_set, paper_shares_p_trace, AcsDesign, ACS_THRESHOLD};
use super::metrics::degree_of_anonymity;
use super::paper::p_trace;
use super::Params;

/// Largest `users × trials × mechanisms` a run may simulate (a few minutes at most).
pub const MAX_WORK: u64 = 3_000_000_000;
/// Largest population simulated (one byte of state per user and mechanism).
pub const MAX_USERS: u64 = 10_000_000;

/// Which share-routing mechanism a simulation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// Eq. 4's own event: one share; the sender's entry server, one exchange server and
    /// the target's entry server, each uniform, all corrupted.
    Eq4Path,
    /// The paper's design with `n_m` shares: [`super::designs::paper_shares_p_trace`].
    PaperShares,
    /// This system: [`super::designs::AcsDesign`].
    AcsDesign,
}

/// Why a simulation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McError {
    #[error("--trials must be at least 2 to give a confidence interval (got {0})")]
    TooFewTrials(u64),
    #[error("the simulation needs at least 2 users, so that every user has a target (got {0})")]
    TooFewUsers(u64),
    #[error("--users {0} is above the simulation's maximum {MAX_USERS}")]
    TooManyUsers(u64),
    #[error("users × trials × mechanisms = {0} is above the simulation's budget {MAX_WORK}")]
    TooMuchWork(u64),
}

/// One mechanism's simulation against its formula.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McResult {
    pub mechanism: Mechanism,
    pub trials: u64,
    /// The closed form this mechanism should match.
    pub formula_p_trace: f64,
    /// Mean over trials of the fraction of users traced.
    pub empirical_traced_fraction: f64,
    /// 95 % confidence interval of that mean (normal approximation over trials).
    pub ci95: [f64; 2],
    /// Whether the formula lies in the interval.
    pub formula_in_ci95: bool,
    /// (empirical − formula) / standard error; `None` when the standard error is 0.
    pub z_score: Option<f64>,
    /// Empirical variance of the traced count over `n p (1-p)`: 1 if Eq. 5's binomial
    /// holds; above 1 when tracing is correlated between users (shared targets, and the
    /// adversary's corrupted set is common to all users of a round).
    pub count_variance_over_binomial: Option<f64>,
    /// Mean over trials of the Díaz degree of anonymity, with the adversary's belief
    /// uniform over the untraced users (as in [`degree_of_anonymity`]).
    pub empirical_degree_of_anonymity: f64,
    /// [`degree_of_anonymity`] at `formula_p_trace`.
    pub formula_degree_of_anonymity: Option<f64>,
    /// [`Mechanism::AcsDesign`] with `n'_x ≥ 2` only: the global observer's anonymity set
    /// (see [`observer_anonymity_set`]), simulated over [`OBSERVER_CHECK_ROUNDS`] rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub global_observer: Vec<ObserverCheck>,
}

/// Rounds over which the global-observer intersection is simulated.
pub const OBSERVER_CHECK_ROUNDS: u32 = 3;
/// Trials (the first ones) on which it is simulated: it costs `3^rounds` table entries per
/// user, far more than the tracing itself.
pub const OBSERVER_CHECK_TRIALS: u64 = 200;

/// Mean anonymity-set size after `rounds` rounds, simulated and by formula.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObserverCheck {
    pub rounds: u32,
    /// Trials it was simulated on.
    pub trials: u64,
    pub formula: f64,
    /// Mean over trials and users of the number of users (the user included) whose relays
    /// for the corrupted servers' shares matched the user's in every round so far.
    pub empirical: f64,
}

/// Runs every mechanism that applies to `params` for `trials` trials from `seed`.
/// [`Mechanism::AcsDesign`] runs only where [`AcsDesign::new`] accepts the parameters.
pub fn run(params: &Params, trials: u64, seed: u64) -> Result<Vec<McResult>, McError> {
    if trials < 2 {
        return Err(McError::TooFewTrials(trials));
    }
    if params.users < 2 {
        return Err(McError::TooFewUsers(params.users));
    }
    if params.users > MAX_USERS {
        return Err(McError::TooManyUsers(params.users));
    }
    let mut mechanisms = vec![Mechanism::Eq4Path, Mechanism::PaperShares];
    if AcsDesign::new(params).is_ok() {
        mechanisms.push(Mechanism::AcsDesign);
    }
    let work = params
        .users
        .saturating_mul(trials)
        .saturating_mul(mechanisms.len() as u64);
    if work > MAX_WORK {
        return Err(McError::TooMuchWork(work));
    }
    // One stream per mechanism, so adding a mechanism does not change the others' draws.
    Ok(mechanisms
        .into_iter()
        .enumerate()
        .map(|(i, m)| simulate(params, m, trials, seed.wrapping_add(i as u64)))
        .collect())
}

/// The closed form for `mechanism`.
pub fn formula(params: &Params, mechanism: Mechanism) -> f64 {
    match mechanism {
        Mechanism::Eq4Path => p_trace(params),
        Mechanism::PaperShares => paper_shares_p_trace(params),
        Mechanism::AcsDesign => AcsDesign::new(params)
            .map(|d| d.p_trace)
            .unwrap_or(f64::NAN),
    }
}

/// Simulates one mechanism; `params.users ≥ 2` and `trials ≥ 2`.
pub fn simulate(params: &Params, mechanism: Mechanism, trials: u64, seed: u64) -> McResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = params.users as usize;
    let (ne, nx) = (params.entries as usize, params.exchanges as usize);
    let mut picker = Picker::default();
    let mut corrupt_e = vec![false; ne];
    let mut corrupt_x = vec![false; nx];
    // Per user: bit 0 = address linked by an entry server, bit 1 = exchange link held.
    let mut state = vec![0u8; n];
    // AcsDesign: the global-observer check, on the first OBSERVER_CHECK_TRIALS trials.
    // Keys are base-n_e digits in a u128 (exact; skipped where they would not fit).
    let digits = params.corrupt_exchanges as u32 * OBSERVER_CHECK_ROUNDS;
    let observe = mechanism == Mechanism::AcsDesign
        && params.corrupt_exchanges >= ACS_THRESHOLD
        && (params.entries as f64).powi(digits as i32) < 1e38;
    let observed_trials = if observe {
        trials.min(OBSERVER_CHECK_TRIALS)
    } else {
        0
    };
    // Relays of every user in every round, share l (to MS_l) at index l.
    let mut relays_seen: Vec<[usize; 3]> = Vec::new();
    let mut sum_obs = [0.0f64; OBSERVER_CHECK_ROUNDS as usize];

    let (mut sum_f, mut sum_f2, mut sum_k, mut sum_k2, mut sum_d) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for trial in 0..trials {
        corrupt(&mut rng, &mut corrupt_e, params.corrupt_entries as usize);
        corrupt(&mut rng, &mut corrupt_x, params.corrupt_exchanges as usize);
        let observing = trial < observed_trials;
        relays_seen.clear();
        for s in state.iter_mut() {
            *s = match mechanism {
                Mechanism::Eq4Path => {
                    let e = corrupt_e[rng.gen_range(0..ne)];
                    let x = corrupt_x[rng.gen_range(0..nx)];
                    u8::from(e) | (u8::from(x) << 1)
                }
                Mechanism::PaperShares => {
                    let s = params.shares as usize;
                    let e = picker.pick(&mut rng, ne, s).iter().any(|&r| corrupt_e[r]);
                    let x = picker.pick(&mut rng, nx, s).iter().any(|&r| corrupt_x[r]);
                    u8::from(e) | (u8::from(x) << 1)
                }
                Mechanism::AcsDesign => {
                    // Share l goes to MS_l through the l-th relay picked.
                    let relays = picker.pick(&mut rng, ne, nx);
                    let linked = relays
                        .iter()
                        .enumerate()
                        .any(|(l, &r)| corrupt_x[l] && corrupt_e[r]);
                    if observing {
                        relays_seen.push([relays[0], relays[1], relays[2]]);
                    }
                    u8::from(linked)
                }
            };
        }
        let graph_exposed =
            corrupt_x.iter().filter(|&&c| c).count() as u64 >= super::designs::ACS_THRESHOLD;
        let mut traced = 0u64;
        for u in 0..n {
            let mut t = rng.gen_range(0..n - 1);
            if t >= u {
                t += 1;
            }
            let (su, st) = (state[u], state[t]);
            let hit = match mechanism {
                Mechanism::Eq4Path => su & 1 == 1 && su & 2 == 2 && st & 1 == 1,
                Mechanism::PaperShares => su & 1 == 1 && st & 1 == 1 && (su | st) & 2 == 2,
                Mechanism::AcsDesign => graph_exposed && su & 1 == 1 && st & 1 == 1,
            };
            traced += u64::from(hit);
        }
        let k = traced as f64;
        let f = k / n as f64;
        sum_f += f;
        sum_f2 += f * f;
        sum_k += k;
        sum_k2 += k * k;
        let left = n as f64 - k;
        sum_d += if left >= 1.0 {
            (left / n as f64) * left.ln() / (n as f64).ln()
        } else {
            0.0
        };
        if observing {
            // Further rounds: fresh relays, same adversary, same pseudonyms.
            for _ in 1..OBSERVER_CHECK_ROUNDS {
                for _ in 0..n {
                    let r = picker.pick(&mut rng, ne, nx);
                    relays_seen.push([r[0], r[1], r[2]]);
                }
            }
            for (r, sum) in sum_obs.iter_mut().enumerate() {
                *sum += observer_set_size(&relays_seen, n, r + 1, &corrupt_x, ne);
            }
        }
    }

    let t = trials as f64;
    let mean = sum_f / t;
    let var_f = ((sum_f2 - t * mean * mean) / (t - 1.0)).max(0.0);
    let se = (var_f / t).sqrt();
    let p = formula(params, mechanism);
    let mean_k = sum_k / t;
    let var_k = ((sum_k2 - t * mean_k * mean_k) / (t - 1.0)).max(0.0);
    let binom_var = n as f64 * p * (1.0 - p);
    let ci95 = [mean - 1.96 * se, mean + 1.96 * se];
    McResult {
        mechanism,
        trials,
        formula_p_trace: p,
        empirical_traced_fraction: mean,
        ci95,
        formula_in_ci95: ci95[0] <= p && p <= ci95[1],
        z_score: (se > 0.0).then(|| (mean - p) / se),
        count_variance_over_binomial: (binom_var > 0.0).then(|| var_k / binom_var),
        empirical_degree_of_anonymity: sum_d / t,
        formula_degree_of_anonymity: degree_of_anonymity(params.users, p),
        global_observer: if observe {
            (1..=OBSERVER_CHECK_ROUNDS)
                .map(|r| ObserverCheck {
                    rounds: r,
                    formula: observer_anonymity_set(
                        params.users,
                        params.entries,
                        params.corrupt_exchanges,
                        r,
                    )
                    .unwrap_or(f64::NAN),
                    empirical: sum_obs[r as usize - 1] / observed_trials as f64,
                    trials: observed_trials,
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// Mean over users (pseudonyms) of the number of users whose observed relay sets, in each
/// of the first `rounds` rounds, contain the relays through which the pseudonym's envelopes
/// reached the corrupted servers. `relays[round * n + u]` are user `u`'s relays, by server.
fn observer_set_size(
    relays: &[[usize; 3]],
    n: usize,
    rounds: usize,
    corrupt_x: &[bool],
    ne: usize,
) -> f64 {
    let corrupted: Vec<usize> = (0..3).filter(|&l| corrupt_x[l]).collect();
    let k = corrupted.len();
    // Every k-subset of {0, 1, 2}, as positions.
    let subsets: Vec<Vec<usize>> = (0u32..8)
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (0..3).filter(|&i| m & (1 << i) != 0).collect())
        .collect();
    let digits = |key: u128, picked: &mut Vec<usize>| -> u128 {
        picked.sort_unstable();
        picked
            .iter()
            .fold(key, |acc, &r| acc * ne as u128 + r as u128)
    };
    // How many users' relay sets contain each possible observed pattern over the rounds.
    let mut counts: HashMap<u128, u32> = HashMap::new();
    let mut picked = Vec::with_capacity(3);
    let combos = subsets.len().pow(rounds as u32);
    for u in 0..n {
        for mut c in 0..combos {
            let mut key = 0u128;
            for round in 0..rounds {
                let set = &relays[round * n + u];
                picked.clear();
                picked.extend(subsets[c % subsets.len()].iter().map(|&i| set[i]));
                c /= subsets.len();
                key = digits(key, &mut picked);
            }
            *counts.entry(key).or_default() += 1;
        }
    }
    let mut total = 0.0;
    for u in 0..n {
        let mut key = 0u128;
        for round in 0..rounds {
            picked.clear();
            picked.extend(corrupted.iter().map(|&l| relays[round * n + u][l]));
            key = digits(key, &mut picked);
        }
        total += f64::from(counts.get(&key).copied().unwrap_or(0));
    }
    total / n as f64
}

/// Marks a fresh uniformly random `k`-subset of `flags` true.
fn corrupt(rng: &mut StdRng, flags: &mut [bool], k: usize) {
    flags.iter_mut().for_each(|f| *f = false);
    for i in sample(rng, flags.len(), k) {
        flags[i] = true;
    }
}

/// Draws ordered samples without replacement, reusing its buffers.
#[derive(Debug, Default)]
struct Picker {
    out: Vec<usize>,
    perm: Vec<usize>,
}

impl Picker {
    /// `k` distinct values of `0..m`, uniformly random and in uniformly random order
    /// (the order matters to [`Mechanism::AcsDesign`], where position = exchange server).
    fn pick(&mut self, rng: &mut StdRng, m: usize, k: usize) -> &[usize] {
        self.out.clear();
        if 4 * k <= m {
            // Rejection: at most a quarter of the values are taken, so few retries.
            while self.out.len() < k {
                let v = rng.gen_range(0..m);
                if !self.out.contains(&v) {
                    self.out.push(v);
                }
            }
        } else {
            // Partial Fisher–Yates.
            self.perm.clear();
            self.perm.extend(0..m);
            for i in 0..k {
                let j = rng.gen_range(i..m);
                self.perm.swap(i, j);
            }
            self.out.extend_from_slice(&self.perm[..k]);
        }
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picker_is_uniform_over_ordered_pairs() {
        // 4 values, ordered pairs of distinct ones: 12 outcomes, each 1/12.
        let mut rng = StdRng::seed_from_u64(7);
        let mut picker = Picker::default();
        let mut counts = [0u32; 16];
        let draws = 120_000;
        for _ in 0..draws {
            let p = picker.pick(&mut rng, 4, 2);
            assert_ne!(p[0], p[1]);
            counts[p[0] * 4 + p[1]] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            if i / 4 == i % 4 {
                assert_eq!(c, 0);
            } else {
                // Expected 10_000, sd ≈ 96: allow 5 sd.
                assert!((c as i64 - 10_000).abs() < 480, "pair {i}: {c}");
            }
        }
    }

    #[test]
    fn refuses_bad_runs() {
        let p = Params::new(1000, 10, 5, 1, 1, 3).unwrap();
        assert_eq!(run(&p, 1, 0), Err(McError::TooFewTrials(1)));
        let one = Params::new(1, 10, 5, 1, 1, 3).unwrap();
        assert_eq!(run(&one, 10, 0), Err(McError::TooFewUsers(1)));
        let big = Params::new(10_000_000, 10, 5, 1, 1, 3).unwrap();
        assert!(matches!(run(&big, 1000, 0), Err(McError::TooMuchWork(_))));
    }
}
