//! The whole audit: runs, checks, tests, verdict.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::doc_check::{missing_sections, ReasonTally, LEAKAGE_DOC};
use super::features::{features, invariant, public_bits, Invariant};
use super::harness::{run_plan, HarnessError, Variant};
use super::power::{bernoulli_curve, simulate, CurvePoint, Power};
use super::stats::{ks_critical_d, ks_test};
use super::workload::{Plan, Public, Secrets, Workload, ROUNDS};

/// Value of a feature a run does not have (a group or level that did not occur).
const ABSENT: f64 = -2.0;

/// What to audit, and how hard.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Online users.
    pub users: usize,
    /// Store capacity `C`.
    pub store: usize,
    /// Payload words.
    pub payload_words: usize,
    /// Runs per workload.
    pub runs: usize,
    /// Family-wise significance level.
    pub alpha: f64,
    /// Seed of the workloads' secret choices (the parties' randomness is always fresh).
    pub seed: u64,
    /// The round under audit.
    pub variant: Variant,
    /// Simulated audits per leak model for the power figures (0: skip).
    pub power_trials: usize,
}

/// One pairwise test that came out smallest.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Feature name.
    pub feature: String,
    /// The two workloads.
    pub workloads: [Workload; 2],
    /// KS statistic.
    pub d: f64,
    /// p-value.
    pub p: f64,
}

/// The deterministic check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Deterministic {
    /// Runs whose public part of the openings differed from the first run's.
    pub mismatched_runs: usize,
    /// The first few differences, described.
    pub differences: Vec<String>,
    /// Per round: bits opened per reason with a public count (the same in every run
    /// when `mismatched_runs` is 0).
    pub public_bits: Vec<Vec<(String, usize)>>,
    /// Per round: distinct routing tags opened (size of the multiset).
    pub routing_tags: Vec<usize>,
}

/// The statistical check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Statistical {
    /// The test.
    pub test: &'static str,
    /// Features compared.
    pub features: usize,
    /// Workload pairs per feature.
    pub pairs: usize,
    /// Tests in all.
    pub tests: usize,
    /// Family-wise significance level.
    pub alpha: f64,
    /// Bonferroni per-test threshold `alpha / tests`.
    pub threshold: f64,
    /// The KS distance a pair of samples must reach to be flagged.
    pub critical_d: f64,
    /// Tests below the threshold.
    pub rejections: usize,
    /// The smallest p-values (all rejections, or the five smallest).
    pub smallest: Vec<Finding>,
}

/// The audit's report.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// `real` or a description of the leak.
    pub variant: String,
    /// Online users.
    pub users: usize,
    /// Store capacity.
    pub store: usize,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Rounds per run.
    pub rounds: u32,
    /// Workloads compared.
    pub workloads: Vec<Workload>,
    /// Runs per workload.
    pub runs: usize,
    /// Reasons missing a section in `docs/leakage.md`.
    pub doc_missing: Vec<&'static str>,
    /// Every opening's reason.
    pub reasons: ReasonTally,
    /// Exact checks.
    pub deterministic: Deterministic,
    /// Distribution checks.
    pub statistical: Statistical,
    /// Simulated power against modelled leaks.
    pub power: Vec<Power>,
    /// Simulated power of one pairwise test against a one-bit leak, by effect size.
    pub power_curve: Vec<CurvePoint>,
    /// Mean secrets per workload and round (what differs between the worlds).
    pub secrets: Vec<(Workload, Vec<[f64; 3]>)>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether a leak (or a missing explanation) was found.
    pub leak: bool,
}

/// Why the audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Bad configuration.
    #[error("invalid audit configuration: {0}")]
    Config(String),
    /// A run failed.
    #[error("{workload} run {run}: {source}")]
    Run {
        /// The workload.
        workload: &'static str,
        /// The run.
        run: usize,
        /// What failed.
        source: HarnessError,
    },
}

struct Collected {
    features: Vec<Vec<BTreeMap<String, f64>>>,
    secrets: Vec<Vec<Vec<Secrets>>>,
    reasons: ReasonTally,
    deterministic: Deterministic,
}

/// Runs the audit.
pub fn audit(cfg: &AuditConfig) -> Result<AuditReport, AuditError> {
    if cfg.users < 2 || cfg.store == 0 || cfg.runs < 2 {
        return Err(AuditError::Config(
            "need at least 2 users, a store of 1 and 2 runs per workload".into(),
        ));
    }
    if !(cfg.alpha > 0.0 && cfg.alpha < 1.0) {
        return Err(AuditError::Config("alpha must be in (0, 1)".into()));
    }
    let started = std::time::Instant::now();
    let public = Public::new(cfg.users, cfg.store, cfg.payload_words);
    let collected = collect(cfg, &public)?;
    let statistical = test_features(&collected.features, cfg.alpha);
    let power = if cfg.power_trials > 0 {
        simulate(
            &collected.secrets,
            cfg.users,
            cfg.store,
            cfg.alpha,
            statistical.tests,
            cfg.power_trials,
            cfg.seed ^ 0x0070_6f77_6572,
        )
    } else {
        Vec::new()
    };
    let power_curve = if cfg.power_trials > 0 {
        bernoulli_curve(
            cfg.runs,
            statistical.threshold,
            cfg.power_trials,
            cfg.seed ^ 0x0063_7572_7665,
        )
    } else {
        Vec::new()
    };
    let doc_missing = missing_sections(LEAKAGE_DOC);
    let leak = !doc_missing.is_empty()
        || !collected.reasons.ok()
        || collected.deterministic.mismatched_runs > 0
        || statistical.rejections > 0;
    let secrets = Workload::ALL
        .iter()
        .zip(&collected.secrets)
        .map(|(w, runs)| (*w, mean_secrets(runs)))
        .collect();
    Ok(AuditReport {
        variant: match cfg.variant {
            Variant::Real => "real".into(),
            Variant::Leaky(leak) => match leak.kind {
                super::leaky::LeakKind::UnshuffledRoute => {
                    "leaky (routing tags of the sorted mailboxes and items, unshuffled)".into()
                }
                kind => format!(
                    "leaky ({}, {} flag(s) per round)",
                    if kind == super::leaky::LeakKind::RealFlags {
                        "real/cover flags"
                    } else {
                        "store valid flags"
                    },
                    leak.flags.map_or("all".to_string(), |k| k.to_string())
                ),
            },
        },
        users: cfg.users,
        store: cfg.store,
        payload_bytes: cfg.payload_words * 8,
        rounds: ROUNDS,
        workloads: Workload::ALL.to_vec(),
        runs: cfg.runs,
        doc_missing,
        reasons: collected.reasons,
        deterministic: collected.deterministic,
        statistical,
        power,
        power_curve,
        secrets,
        seconds: started.elapsed().as_secs_f64(),
        leak,
    })
}

fn collect(cfg: &AuditConfig, public: &Public) -> Result<Collected, AuditError> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let nw = Workload::ALL.len();
    let mut out = Collected {
        features: vec![Vec::with_capacity(cfg.runs); nw],
        secrets: vec![Vec::with_capacity(cfg.runs); nw],
        reasons: ReasonTally::new(),
        deterministic: Deterministic {
            mismatched_runs: 0,
            differences: Vec::new(),
            public_bits: Vec::new(),
            routing_tags: Vec::new(),
        },
    };
    let mut reference: Option<(Workload, Vec<Invariant>)> = None;
    // Interleaved, so that anything drifting over time hits every workload alike.
    for run in 0..cfg.runs {
        for (w, &workload) in Workload::ALL.iter().enumerate() {
            let plan = Plan::draw(public, workload, &mut rng);
            let trace = run_plan(public, &plan, cfg.variant, &mut rng).map_err(|source| {
                AuditError::Run {
                    workload: workload.name(),
                    run,
                    source,
                }
            })?;
            let mut feats = BTreeMap::new();
            let mut invariants = Vec::with_capacity(trace.rounds.len());
            for (r, entries) in trace.rounds.iter().enumerate() {
                out.reasons.add(entries);
                feats.extend(features(r + 1, entries));
                invariants.push(invariant(entries));
            }
            match &reference {
                None => {
                    out.deterministic.public_bits =
                        trace.rounds.iter().map(|e| public_bits(e)).collect();
                    out.deterministic.routing_tags = invariants
                        .iter()
                        .map(|inv| {
                            inv.groups
                                .iter()
                                .map(|g| match g {
                                    super::features::GroupInvariant::Route { tags, .. } => {
                                        tags.len()
                                    }
                                    _ => 0,
                                })
                                .sum()
                        })
                        .collect();
                    reference = Some((workload, invariants));
                }
                Some((first, want)) => {
                    if *want != invariants {
                        out.deterministic.mismatched_runs += 1;
                        if out.deterministic.differences.len() < 3 {
                            out.deterministic.differences.push(describe_difference(
                                *first,
                                want,
                                workload,
                                run,
                                &invariants,
                            ));
                        }
                    }
                }
            }
            out.features[w].push(feats);
            out.secrets[w].push(plan.secrets);
        }
    }
    Ok(out)
}

fn describe_difference(
    first: Workload,
    want: &[Invariant],
    workload: Workload,
    run: usize,
    got: &[Invariant],
) -> String {
    for (r, (a, b)) in want.iter().zip(got).enumerate() {
        if a.groups.len() != b.groups.len() {
            return format!(
                "{} run {run}, round {}: {} opening groups, {} run 0 had {}",
                workload.name(),
                r + 1,
                b.groups.len(),
                first.name(),
                a.groups.len()
            );
        }
        for (g, (x, y)) in a.groups.iter().zip(&b.groups).enumerate() {
            if x != y {
                let brief = |v: &super::features::GroupInvariant| match v {
                    super::features::GroupInvariant::Sort { first_level } => {
                        format!("sort, {first_level} first-level comparisons")
                    }
                    super::features::GroupInvariant::Route {
                        reason,
                        openings,
                        bits,
                        tags,
                    } => {
                        let distinct: BTreeSet<u64> = tags.iter().copied().collect();
                        let ones: u64 = tags.iter().map(|t| u64::from(t.count_ones())).sum();
                        format!(
                            "{reason}, {openings} opening(s), {bits} bits, {} distinct values, {ones} one bits",
                            distinct.len()
                        )
                    }
                };
                return format!(
                    "{} run {run}, round {}, group {g}: {} — {} run 0: {}",
                    workload.name(),
                    r + 1,
                    brief(y),
                    first.name(),
                    brief(x)
                );
            }
        }
    }
    format!("{} run {run}: rounds differ", workload.name())
}

fn test_features(per_workload: &[Vec<BTreeMap<String, f64>>], alpha: f64) -> Statistical {
    let names: BTreeSet<&String> = per_workload
        .iter()
        .flatten()
        .flat_map(|f| f.keys())
        .collect();
    let nw = per_workload.len();
    let pairs = nw * (nw - 1) / 2;
    let tests = names.len() * pairs;
    let threshold = alpha / tests.max(1) as f64;
    let mut all: Vec<Finding> = Vec::with_capacity(tests);
    for name in &names {
        let samples: Vec<Vec<f64>> = per_workload
            .iter()
            .map(|runs| {
                runs.iter()
                    .map(|f| f.get(*name).copied().unwrap_or(ABSENT))
                    .collect()
            })
            .collect();
        for a in 0..nw {
            for b in a + 1..nw {
                let t = ks_test(&samples[a], &samples[b]);
                all.push(Finding {
                    feature: (*name).clone(),
                    workloads: [Workload::ALL[a], Workload::ALL[b]],
                    d: t.d,
                    p: t.p,
                });
            }
        }
    }
    all.sort_by(|x, y| x.p.total_cmp(&y.p));
    let rejections = all.iter().filter(|f| f.p < threshold).count();
    let runs = per_workload.first().map_or(0, Vec::len);
    Statistical {
        test: "two-sample Kolmogorov-Smirnov (asymptotic p-value, Stephens' correction), every feature x every workload pair, Bonferroni",
        features: names.len(),
        pairs,
        tests,
        alpha,
        threshold,
        critical_d: ks_critical_d(threshold, runs, runs),
        rejections,
        smallest: all.into_iter().take(rejections.max(5)).collect(),
    }
}

fn mean_secrets(runs: &[Vec<Secrets>]) -> Vec<[f64; 3]> {
    let rounds = runs.first().map_or(0, Vec::len);
    let n = runs.len().max(1) as f64;
    (0..rounds)
        .map(|r| {
            let sum =
                |f: fn(&Secrets) -> usize| runs.iter().map(|s| f(&s[r]) as f64).sum::<f64>() / n;
            [
                sum(|s| s.real),
                sum(|s| s.receiver_in_degree),
                sum(|s| s.stored),
            ]
        })
        .collect()
}

impl AuditReport {
    /// The readable summary.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "acs-proofs audit: {} round; workloads {} x {} runs; {} online users, C = {}, payload {} B, rounds 1..{} (store carried over); {:.1} s",
            self.variant,
            self.workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(", "),
            self.runs,
            self.users,
            self.store,
            self.payload_bytes,
            self.rounds,
            self.seconds
        );
        let _ = writeln!(s, "\nsecret patterns (mean per round: real messages / receiver in-degree / stored after):");
        for (w, rounds) in &self.secrets {
            let cells: Vec<String> = rounds
                .iter()
                .enumerate()
                .map(|(r, m)| format!("r{}: {:.1} / {:.1} / {:.1}", r + 1, m[0], m[1], m[2]))
                .collect();
            let _ = writeln!(s, "  {:<16} {}", w.name(), cells.join("   "));
        }
        let _ = writeln!(s, "\n1. static");
        let tally: Vec<String> = self
            .reasons
            .per_reason
            .iter()
            .map(|(n, o, b)| format!("{n}: {o} openings, {b} bits"))
            .collect();
        let _ = writeln!(
            s,
            "  reasons: {}; unknown reason: {}, malformed: {}  [{}]",
            tally.join("; "),
            self.reasons.unknown_reason,
            self.reasons.malformed,
            ok(self.reasons.ok())
        );
        let _ = writeln!(
            s,
            "  docs/leakage.md explains every Reason::ALL variant{}  [{}]",
            if self.doc_missing.is_empty() {
                String::new()
            } else {
                format!(" — missing: {}", self.doc_missing.join(", "))
            },
            ok(self.doc_missing.is_empty())
        );
        let d = &self.deterministic;
        let _ = writeln!(
            s,
            "\n2a. deterministic (must be identical in every run of every workload)"
        );
        let _ = writeln!(
            s,
            "  opening groups, first-level comparisons, routing openings/bits and the multiset of opened routing values; per round: {}",
            d.public_bits
                .iter()
                .zip(&d.routing_tags)
                .enumerate()
                .map(|(r, (b, t))| format!(
                    "r{}: {} routing values, {}",
                    r + 1,
                    t,
                    b.iter().map(|(n, v)| format!("{n} {v} bits")).collect::<Vec<_>>().join(", ")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let _ = writeln!(
            s,
            "  runs differing from the first: {}  [{}]",
            d.mismatched_runs,
            ok(d.mismatched_runs == 0)
        );
        for diff in &d.differences {
            let _ = writeln!(s, "    {diff}");
        }
        let st = &self.statistical;
        let _ = writeln!(s, "\n2b. statistical: {}", st.test);
        let _ = writeln!(
            s,
            "  {} features x {} pairs = {} tests; family-wise alpha = {} => per-test p < {:.2e}; flags KS distance >= {:.3} at {} runs per workload",
            st.features, st.pairs, st.tests, st.alpha, st.threshold, st.critical_d, self.runs
        );
        let _ = writeln!(
            s,
            "  rejections: {}  [{}]; smallest p-values:",
            st.rejections,
            ok(st.rejections == 0)
        );
        for f in st.smallest.iter().take(8) {
            let _ = writeln!(
                s,
                "    p = {:.2e}  D = {:.3}  {} ({} vs {})",
                f.p,
                f.d,
                f.feature,
                f.workloads[0].name(),
                f.workloads[1].name()
            );
        }
        if !self.power.is_empty() {
            let _ = writeln!(
                s,
                "\n3. power (simulated leaks on these runs' secrets, same test and threshold, {} trials each)",
                self.power[0].trials
            );
            let _ = writeln!(
                s,
                "  power = P(the audit flags it); closest pair = the two worlds whose mean leaked value differs least (by >= 0.01), and how often that pair alone is flagged"
            );
            for p in &self.power {
                let closest = p.closest(0.01).map_or(String::new(), |h| {
                    format!(
                        "; closest pair {} vs {} (differ by {:.3}): {:.3}",
                        self.workloads[h.pair[0]].name(),
                        self.workloads[h.pair[1]].name(),
                        h.difference,
                        h.power
                    )
                });
                let _ = writeln!(s, "  {:.3}  {}{closest}", p.power, p.description);
            }
            let curve: Vec<String> = self
                .power_curve
                .iter()
                .map(|c| format!("{:.1}: {:.2}", c.delta, c.power))
                .collect();
            let _ = writeln!(
                s,
                "  one pairwise test, one-bit leak P(1) = 0.5 vs 0.5 + delta, {} runs each, p < {:.2e} — delta: power = {}",
                self.runs,
                self.statistical.threshold,
                curve.join(", ")
            );
        }
        let _ = write!(
            s,
            "\nverdict: {}",
            if self.leak {
                "LEAK FOUND (exit 2)"
            } else {
                "no leak found (exit 0)"
            }
        );
        s
    }
}

fn ok(b: bool) -> &'static str {
    if b {
        "ok"
    } else {
        "FAIL"
    }
}
