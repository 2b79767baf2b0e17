//! Metrics that say how much tracing happens, beside the paper's `R_trace`.
//!
//! All of them take the per-user trace probability `p` of some model and the paper's
//! independence assumption (Eq. 5: the number of traced users is `Binomial(n, p)`).

use super::binomial::expect;

/// Expected fraction of traced users, `E[X] / n` with `X ~ Binomial(n, p)`: simply `p`.
/// Monotone, in `[0, 1]`, independent of `n` and of any log base: the quantity Fig. 6
/// should have plotted.
pub fn expected_traced_fraction(p: f64) -> f64 {
    p
}

/// Probability that at least one of `n` users is traced, `1 - (1 - p)^n`, computed
/// without cancellation.
pub fn p_any_traced(users: u64, p: f64) -> f64 {
    if p >= 1.0 {
        return 1.0;
    }
    -((users as f64) * (-p).ln_1p()).exp_m1()
}

/// Rounds after which a given user has been traced at least once with probability at
/// least 1/2: the least `R` with `1 - (1 - p)^R ≥ 1/2`, i.e. `⌈ln ½ / ln(1 - p)⌉`.
///
/// Eq. 4–6 describe one round. With a static adversary and fresh relay choices every
/// round (each user "randomly chooses" its entry servers, §5.1), rounds are independent
/// trials for a user, so a small per-round `p` still traces everyone eventually. `None`
/// where `p = 0` (never).
pub fn median_rounds_until_traced(p: f64) -> Option<u64> {
    if p <= 0.0 {
        return None;
    }
    if p >= 0.5 {
        return Some(1);
    }
    Some((0.5f64.ln() / (-p).ln_1p()).ceil() as u64)
}

/// Expected degree of anonymity of a sender, after Díaz, Seys, Claessens and Preneel,
/// "Towards measuring anonymity" (PET 2002, the paper's ref. 38):
/// `d = H(X) / H_M`, where `H(X)` is the entropy of the adversary's probability
/// distribution over which of the `N = n` users sent a given message and `H_M = log N`
/// its maximum. `d` does not depend on the log base.
///
/// The adversary's distribution, under the paper's model (each user is traced or not,
/// independently with probability `p`, and every online user sends exactly one block per
/// round, §4.2): for a traced message the sender is known, `H = 0`; for an untraced one
/// the adversary can still rule out the `K` users it has traced, and, knowing nothing else
/// (the model's assumption), spreads its belief uniformly over the other `n - K`:
/// `H = log(n - K)`. Averaging over messages, with `K ~ Binomial(n - 1, p)` for the others:
///
/// `E[d] = (1 - p) · E[log(n - K)] / log n`.
///
/// 1 when nobody can be traced, 0 when everyone can, monotone in between; the last
/// untraced user is identified by elimination (`log 1 = 0`), which `p` alone misses.
/// `None` for `n < 2`, where `H_M = 0` and the degree is undefined.
pub fn degree_of_anonymity(users: u64, p: f64) -> Option<f64> {
    if users < 2 {
        return None;
    }
    let h_max = (users as f64).ln();
    let e_ln = expect(users - 1, p, |k| ((users - k) as f64).ln());
    Some(((1.0 - p) * e_ln / h_max).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degree_hand_computed() {
        // n = 2, p = 1/2: the other user is traced with prob. 1/2 (then H = log 1 = 0),
        // so E[d] = (1/2)·(1/2·ln 2 + 1/2·0)/ln 2 = 1/4.
        assert!((degree_of_anonymity(2, 0.5).unwrap() - 0.25).abs() < 1e-15);
        // n = 3, p = 1/2: K ~ Bin(2, 1/2) = {1/4, 1/2, 1/4} over n-K = {3, 2, 1}:
        // E[d] = 1/2 · (1/4·ln 3 + 1/2·ln 2) / ln 3 = 1/8 + (1/4)·ln 2/ln 3.
        let want = 0.125 + 0.25 * 2f64.ln() / 3f64.ln();
        assert!((degree_of_anonymity(3, 0.5).unwrap() - want).abs() < 1e-15);
    }

    #[test]
    fn degree_edges() {
        assert_eq!(degree_of_anonymity(1000, 0.0), Some(1.0));
        assert_eq!(degree_of_anonymity(1000, 1.0), Some(0.0));
        assert_eq!(degree_of_anonymity(1, 0.3), None);
        // Monotone where R_trace is not.
        let d: Vec<f64> = [0.1, 0.5, 0.81, 0.99]
            .iter()
            .map(|&p| degree_of_anonymity(1000, p).unwrap())
            .collect();
        assert!(d.windows(2).all(|w| w[0] > w[1]), "{d:?}");
    }

    #[test]
    fn degree_at_a_million_users() {
        // For large n, log(n - K) ≈ log(n(1-p)), so d ≈ (1-p)(1 + ln(1-p)/ln n).
        let (n, p) = (1_000_000u64, 0.2);
        let approx = 0.8 * (1.0 + 0.8f64.ln() / (n as f64).ln());
        let got = degree_of_anonymity(n, p).unwrap();
        assert!((got - approx).abs() < 1e-6, "{got} vs {approx}");
    }

    #[test]
    fn median_rounds_hand_computed() {
        // p = 0.002 (Fig. 6, CE = CX = 1): ln ½ / ln 0.998 = 346.23… → 347 rounds;
        // check: 0.998^346 = 0.5004 > ½, 0.998^347 = 0.4994 < ½.
        assert_eq!(median_rounds_until_traced(0.002), Some(347));
        // p = 0.3: 0.7^1 = 0.7, 0.7^2 = 0.49 → 2 rounds.
        assert_eq!(median_rounds_until_traced(0.3), Some(2));
        assert_eq!(median_rounds_until_traced(0.5), Some(1));
        assert_eq!(median_rounds_until_traced(0.0), None);
    }

    #[test]
    fn any_traced() {
        // 1 - (1 - 1/2)^3 = 7/8.
        assert!((p_any_traced(3, 0.5) - 0.875).abs() < 1e-15);
        assert_eq!(p_any_traced(10, 0.0), 0.0);
        assert_eq!(p_any_traced(10, 1.0), 1.0);
    }
}
