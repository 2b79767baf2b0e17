//! One configuration's numbers: the paper's metrics, the sound ones, both designs, and
//! optionally the Monte-Carlo check. Serialised as the `trace-model --json` object.

use std::fmt::Write as _;

use serde::Serialize;

use super::designs::{AcsDesign, PaperShares};
use super::metrics::{
    degree_of_anonymity, expected_traced_fraction, median_rounds_until_traced, p_any_traced,
};
use super::montecarlo::McResult;
use super::paper::{count_entropy, p_c_as_printed, p_c_shares, p_trace, r_trace};
use super::{LogBase, Params};

/// `trace-model` output for one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub params: Params,
    /// 2 or "e": the base of every entropy below (not of the degree, which has none).
    pub log_base: serde_json::Value,
    /// Eq. 2 as printed (`null` outside its domain `1 ≤ n_c ≤ n_e`).
    pub p_c: Option<f64>,
    /// Eq. 2 with upper bound `n_m`: all of a user's shares through corrupted entries.
    pub p_c_shares: f64,
    /// Eq. 4.
    pub p_trace: f64,
    /// Eq. 6 (entropy of Eq. 5's distribution, `k` from 1).
    pub r_trace: f64,
    /// Eq. 3 applied to Eq. 5's distribution with `k` from 0.
    pub count_entropy: f64,
    /// `E[X]/n` under Eq. 4–5.
    pub expected_traced_fraction: f64,
    /// `E[X]` under Eq. 4–5.
    pub expected_traced_users: f64,
    /// `P{X ≥ 1}` under Eq. 4–5.
    pub p_any_traced: f64,
    /// Díaz et al. degree of anonymity under Eq. 4–5.
    pub degree_of_anonymity: Option<f64>,
    /// Rounds until a user is traced at least once with probability ≥ ½, under Eq. 4.
    pub median_rounds_until_traced: Option<u64>,
    /// The paper's design with `n_m` shares, from first principles.
    pub paper_shares: PaperShares,
    /// This system's design, or `null` where the configuration is not its (see
    /// `acs_design_note`).
    pub acs_design: Option<AcsDesign>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acs_design_note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monte_carlo: Option<MonteCarlo>,
}

/// The simulation part of a report.
#[derive(Clone, Debug, Serialize)]
pub struct MonteCarlo {
    pub seed: u64,
    pub results: Vec<McResult>,
}

impl Report {
    pub fn new(params: Params, base: LogBase) -> Self {
        let p = p_trace(&params);
        let (acs_design, acs_design_note) = match AcsDesign::new(&params) {
            Ok(d) => (Some(d), None),
            Err(why) => (None, Some(why)),
        };
        Report {
            params,
            log_base: base.json(),
            p_c: p_c_as_printed(params.entries, params.corrupt_entries),
            p_c_shares: p_c_shares(&params),
            p_trace: p,
            r_trace: r_trace(params.users, p, base),
            count_entropy: count_entropy(params.users, p, base),
            expected_traced_fraction: expected_traced_fraction(p),
            expected_traced_users: p * params.users as f64,
            p_any_traced: p_any_traced(params.users, p),
            degree_of_anonymity: degree_of_anonymity(params.users, p),
            median_rounds_until_traced: median_rounds_until_traced(p),
            paper_shares: PaperShares::new(&params),
            acs_design,
            acs_design_note,
            monte_carlo: None,
        }
    }

    /// The readable summary printed without `--json`.
    pub fn to_text(&self, base: LogBase) -> String {
        let unit = match base {
            LogBase::Two => "bits",
            LogBase::E => "nats",
        };
        let p = &self.params;
        let opt = |x: Option<f64>| x.map_or_else(|| "undefined".to_string(), |v| format!("{v:.6}"));
        let rounds = |r: Option<u64>| r.map_or_else(|| "never".to_string(), |r| r.to_string());
        let mut s = String::new();
        let _ = writeln!(
            s,
            "configuration: {} users, {} entry servers ({} corrupted), {} exchange servers ({} corrupted), {} shares",
            p.users, p.entries, p.corrupt_entries, p.exchanges, p.corrupt_exchanges, p.shares
        );
        let _ = writeln!(s, "\nthe paper's model (§5.1, §6.2), as printed:");
        let _ = writeln!(s, "  P_c     (Eq. 2 as printed)        {}", opt(self.p_c));
        let _ = writeln!(
            s,
            "  P_c     (Eq. 2, product to n_m)   {:.6}",
            self.p_c_shares
        );
        let _ = writeln!(s, "  P_trace (Eq. 4)                   {:.6}", self.p_trace);
        let _ = writeln!(
            s,
            "  R_trace (Eq. 6)                   {:.6} {unit}",
            self.r_trace
        );
        let _ = writeln!(
            s,
            "  entropy of Eq. 5 with k = 0       {:.6} {unit}",
            self.count_entropy
        );
        let _ = writeln!(s, "\nsound metrics under Eq. 4-5:");
        let _ = writeln!(
            s,
            "  expected traced fraction          {:.6}",
            self.expected_traced_fraction
        );
        let _ = writeln!(
            s,
            "  expected traced users             {:.3}",
            self.expected_traced_users
        );
        let _ = writeln!(
            s,
            "  P(at least one user traced)       {:.6}",
            self.p_any_traced
        );
        let _ = writeln!(
            s,
            "  degree of anonymity (Diaz et al.) {}",
            opt(self.degree_of_anonymity)
        );
        let _ = writeln!(
            s,
            "  median rounds until traced        {}",
            rounds(self.median_rounds_until_traced)
        );
        let _ = writeln!(
            s,
            "\nthe paper's design with {} shares (relays see pseudonyms):",
            p.shares
        );
        let _ = writeln!(
            s,
            "  P(user traced)                    {:.6}",
            self.paper_shares.p_trace
        );
        let _ = writeln!(
            s,
            "  degree of anonymity               {}",
            opt(self.paper_shares.degree_of_anonymity)
        );
        let _ = writeln!(
            s,
            "  median rounds until traced        {}",
            rounds(self.paper_shares.median_rounds_until_traced)
        );
        let _ = writeln!(
            s,
            "\nthis system (sealed envelopes, 3 exchange servers, honest majority):"
        );
        match (&self.acs_design, &self.acs_design_note) {
            (Some(d), _) => {
                let _ = writeln!(
                    s,
                    "  who-talks-to-whom exposed         {}",
                    d.pseudonym_graph_exposed
                );
                let _ = writeln!(
                    s,
                    "  P(address linked to pseudonym)    {:.6}",
                    d.p_address_link
                );
                let _ = writeln!(s, "  P(user traced)                    {:.6}", d.p_trace);
                let _ = writeln!(
                    s,
                    "  degree of anonymity               {}",
                    opt(d.degree_of_anonymity)
                );
                let _ = writeln!(
                    s,
                    "  median rounds until traced        {}",
                    rounds(d.median_rounds_until_traced)
                );
                for (r, set) in d.global_observer_anonymity_set.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "  anonymity set vs global observer  {set:.3} users after {} round(s)",
                        r + 1
                    );
                }
            }
            (None, note) => {
                let _ = writeln!(s, "  not applicable: {}", note.as_deref().unwrap_or(""));
            }
        }
        if let Some(mc) = &self.monte_carlo {
            let _ = writeln!(s, "\nMonte-Carlo (seed {}):", mc.seed);
            let _ = writeln!(
                s,
                "  {:<13} {:>7} {:>10} {:>10} {:>23} {:>7} {:>8} {:>8} {:>8}",
                "mechanism",
                "trials",
                "formula",
                "empirical",
                "95% CI",
                "z",
                "var/bin",
                "d emp",
                "d form"
            );
            for r in &mc.results {
                let name = serde_json::to_value(r.mechanism)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from));
                let _ = writeln!(
                    s,
                    "  {:<13} {:>7} {:>10.6} {:>10.6} [{:>10.6}, {:>10.6}] {:>7} {:>8} {:>8.4} {:>8}",
                    name.unwrap_or_default(),
                    r.trials,
                    r.formula_p_trace,
                    r.empirical_traced_fraction,
                    r.ci95[0],
                    r.ci95[1],
                    r.z_score.map_or_else(|| "-".into(), |z| format!("{z:.2}")),
                    r.count_variance_over_binomial.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                    r.empirical_degree_of_anonymity,
                    r.formula_degree_of_anonymity.map_or_else(|| "-".into(), |v| format!("{v:.4}")),
                );
            }
            for r in &mc.results {
                for o in &r.global_observer {
                    let _ = writeln!(
                        s,
                        "  global observer, {} round(s): anonymity set {:.4} simulated ({} trials), {:.4} by formula",
                        o.rounds, o.empirical, o.trials, o.formula
                    );
                }
            }
        }
        s
    }
}
