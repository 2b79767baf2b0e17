//! The paper's equations, as printed (§5.1 Eq. 2, §6.2 Eq. 4 and Eq. 6; Eq. 5 is
//! [`super::binomial::pmf`]).

use super::binomial::{choose_ratio, entropy_from};
use super::{LogBase, Params};

/// Eq. 2 exactly as printed: `P_c = Π_{i=1}^{n_c} (n_c - (i-1)) / (n_e - (i-1))`.
///
/// The product telescopes to `n_c! (n_e - n_c)! / n_e! = 1 / C(n_e, n_c)`: the chance that
/// a uniformly random `n_c`-subset of the entry servers *is* the corrupted set. It is not
/// monotone in `n_c` (for `n_e = 10`: 1/10 at `n_c = 1`, 1/252 at 5, 1/10 at 9, 1 at 10),
/// so it cannot be what the text around it claims ("all chosen entry servers are
/// corrupted", "only `n_c ≈ n_e`, then `P_c ≈ 1`"). See [`p_c_shares`] for the reading that
/// fits the text. `None` outside the paper's stated domain `1 ≤ n_c ≤ n_e` (at `n_c = 0` the
/// empty product would give 1, the opposite of the truth, 0).
pub fn p_c_as_printed(entries: u64, corrupt_entries: u64) -> Option<f64> {
    if corrupt_entries == 0 || corrupt_entries > entries {
        return None;
    }
    Some(choose_ratio(corrupt_entries, entries, corrupt_entries))
}

/// Eq. 2 with the upper bound the text implies, `n_m` (shares per message) instead of
/// `n_c`: `Π_{i=1}^{n_m} (n_c - (i-1)) / (n_e - (i-1)) = C(n_c, n_m) / C(n_e, n_m)`, the
/// probability that all `n_m` distinct entry servers a user picks are corrupted. This is
/// the event the text describes and the only reading under which the factors
/// `(n_c - (i-1)) / (n_e - (i-1))` (drawing without replacement) make sense.
pub fn p_c_shares(params: &Params) -> f64 {
    choose_ratio(params.corrupt_entries, params.entries, params.shares)
}

/// Eq. 4 exactly as printed: `P_trace = (n'_e / n_e)^2 · n'_x / n_x`.
///
/// The paper's path `v_e → v_x → v_e`: the sender's entry server, one exchange server and
/// the receiver's entry server, each picked uniformly and independently, all corrupted.
/// It describes one share's path; `n_m` and Eq. 2 play no part in it. In the paper's own
/// design a user's `n_m` shares give `n_m` chances to meet a corrupted entry server, and
/// every exchange server sees both pseudonyms of every block, so this underestimates
/// tracing (38× at Fig. 6's smallest point): see
/// [`super::designs::paper_shares_p_trace`].
pub fn p_trace(params: &Params) -> f64 {
    let e = params.corrupt_entries as f64 / params.entries as f64;
    let x = params.corrupt_exchanges as f64 / params.exchanges as f64;
    e * e * x
}

/// Eq. 6 exactly as printed: `R_trace = -Σ_{k=1}^{n} P{X=k} log P{X=k}` with
/// `X ~ Binomial(n, p_trace)` (Eq. 5).
///
/// This is the Shannon entropy of the *number* of traced users, without the `k = 0` term.
/// It measures how uncertain that number is, not how many users are traced: it is 0 both
/// when nobody can be traced (`p = 0`) and when everybody is (`p = 1`), peaks near
/// `p = 1/2` at about `½ log(2πe·n/4)`, and grows with `n` like `½ log n`.
pub fn r_trace(users: u64, p_trace: f64, base: LogBase) -> f64 {
    entropy_from(users, p_trace, 1, base)
}

/// The full entropy of Eq. 5's distribution (Eq. 3 with `k` from 0), reported beside
/// [`r_trace`] to show what dropping the `k = 0` term changes.
pub fn count_entropy(users: u64, p_trace: f64, base: LogBase) -> f64 {
    entropy_from(users, p_trace, 0, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: u64, ne: u64, nx: u64, ce: u64, cx: u64) -> Params {
        Params::new(n, ne, nx, ce, cx, 3).unwrap()
    }

    #[test]
    fn eq2_as_printed_hand_computed() {
        // n_e = 4, n_c = 2: (2/4)·(1/3) = 1/6.
        assert!((p_c_as_printed(4, 2).unwrap() - 1.0 / 6.0).abs() < 1e-15);
        // n_e = 10: 1/C(10, n_c) = 1/10, 1/252, 1/10, 1: not monotone.
        assert!((p_c_as_printed(10, 1).unwrap() - 0.1).abs() < 1e-15);
        assert!((p_c_as_printed(10, 5).unwrap() - 1.0 / 252.0).abs() < 1e-15);
        assert!((p_c_as_printed(10, 9).unwrap() - 0.1).abs() < 1e-14);
        assert_eq!(p_c_as_printed(10, 10), Some(1.0));
        assert_eq!(p_c_as_printed(10, 0), None);
        assert_eq!(p_c_as_printed(10, 11), None);
    }

    #[test]
    fn eq2_with_shares_hand_computed() {
        // n_e = 10, n_c = 5, n_m = 3: (5/10)(4/9)(3/8) = 60/720 = 1/12.
        assert!((p_c_shares(&params(10, 10, 5, 5, 0)) - 1.0 / 12.0).abs() < 1e-15);
        // Fewer corrupted servers than shares: impossible to hold them all.
        assert_eq!(p_c_shares(&params(10, 10, 5, 2, 0)), 0.0);
        assert_eq!(p_c_shares(&params(10, 10, 5, 0, 0)), 0.0);
        assert_eq!(p_c_shares(&params(10, 10, 5, 10, 0)), 1.0);
    }

    #[test]
    fn eq4_hand_computed_and_edges() {
        // (5/10)^2 · 1/5 = 0.25 · 0.2 = 0.05.
        assert!((p_trace(&params(1000, 10, 5, 5, 1)) - 0.05).abs() < 1e-15);
        // (1/10)^2 · 1/5 = 0.002, the smallest point of Fig. 6.
        assert!((p_trace(&params(1000, 10, 5, 1, 1)) - 0.002).abs() < 1e-15);
        assert_eq!(p_trace(&params(1000, 10, 5, 0, 5)), 0.0);
        assert_eq!(p_trace(&params(1000, 10, 5, 10, 0)), 0.0);
        assert_eq!(p_trace(&params(1000, 10, 5, 10, 5)), 1.0);
    }

    #[test]
    fn eq6_hand_computed() {
        // n = 3, p = 1/2: pmf {1,3,3,1}/8. Eq. 6 drops k = 0:
        // R = 2·(3/8)·log2(8/3) + (1/8)·log2 8 = (3/4)(3 - log2 3) + 3/8.
        let want = 0.75 * (3.0 - 3f64.log2()) + 0.375;
        assert!((r_trace(3, 0.5, LogBase::Two) - want).abs() < 1e-14);
        // Point masses: nothing traced, or everyone traced, both give 0.
        assert_eq!(r_trace(1000, 0.0, LogBase::Two), 0.0);
        assert_eq!(r_trace(1000, 1.0, LogBase::Two), 0.0);
        // n = 1, p: only k = 1 counts: -p log2 p; p = 1/4 gives 1/2.
        assert!((r_trace(1, 0.25, LogBase::Two) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn eq6_is_not_monotone() {
        // The misbehaviour the docs describe: past p = 1/2 more tracing lowers R_trace.
        let r = |p| r_trace(1000, p, LogBase::Two);
        assert!(r(0.5) > r(0.81));
        assert!(r(0.81) > r(0.99));
        assert!(r(0.99) > r(1.0));
    }
}
