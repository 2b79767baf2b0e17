//! Log-space binomial arithmetic (Eq. 5) and entropy sums (Eq. 3, Eq. 6).
//!
//! Everything is computed from `ln C(n, k)` via `lgamma`, so `n` up to 10^6 (and well
//! beyond) neither overflows nor underflows: a probability whose logarithm is below
//! `f64`'s range contributes exactly zero to a sum, which is also its true contribution
//! to within `1e-300`.

use super::LogBase;

/// `ln C(n, k)`; `-inf` when `k > n` (the coefficient is zero).
pub fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    if k == 0 || k == n {
        return 0.0;
    }
    // lgamma is accurate to a few ulps; for small arguments the sum of logs is exact
    // enough too, but one code path keeps the behaviour uniform.
    let (n, k) = (n as f64, k as f64);
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `C(n, k)` as a float: a direct product for `k ≤ 64` (exact while `n·C(n, k) < 2^53`,
/// correctly rounded to a few ulps beyond), `exp(ln C)` above. 0 when `k > n`.
pub fn choose(n: u64, k: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    if k <= 64 {
        // Multiply then divide: every partial product C(n, i+1) is an integer.
        return (0..k).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64);
    }
    ln_choose(n, k).exp()
}

/// `C(n, k) / C(m, k)` = probability that a uniformly random `k`-subset of an `m`-set
/// falls entirely inside a fixed `n`-subset. Exact 0 when `k > n`.
pub fn choose_ratio(n: u64, m: u64, k: u64) -> f64 {
    debug_assert!(n <= m && k <= m);
    if k > n {
        return 0.0;
    }
    if k <= 64 {
        // The product Π (n - i)/(m - i) directly: each factor is in [0, 1], so no
        // overflow, and small cases come out exact to the last bit or two.
        return (0..k).map(|i| (n - i) as f64 / (m - i) as f64).product();
    }
    (ln_choose(n, k) - ln_choose(m, k)).exp()
}

/// `ln P{X = k}` for `X ~ Binomial(n, p)` (Eq. 5), with the conventions `0·ln 0 = 0`
/// so that `p = 0` and `p = 1` give point masses.
pub fn ln_pmf(n: u64, p: f64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let kf = k as f64;
    let rest = (n - k) as f64;
    let a = if k == 0 {
        0.0
    } else if p == 0.0 {
        return f64::NEG_INFINITY;
    } else {
        kf * p.ln()
    };
    let b = if n == k {
        0.0
    } else if p == 1.0 {
        return f64::NEG_INFINITY;
    } else {
        rest * (-p).ln_1p()
    };
    ln_choose(n, k) + a + b
}

/// `P{X = k}` for `X ~ Binomial(n, p)` (Eq. 5).
///
/// Eq. 5 assumes users are traced independently. They are not (a user and everyone
/// writing to the same target share that target's links); the mean `n p` survives, the
/// variance does not: [`super::montecarlo::McResult::count_variance_over_binomial`].
pub fn pmf(n: u64, p: f64, k: u64) -> f64 {
    ln_pmf(n, p, k).exp()
}

/// Below this, `exp(ln P)` is 0 in `f64`: such terms contribute nothing to any sum here.
const LN_UNDERFLOW: f64 = -745.2;

/// Calls `visit(k, ln P{X=k})` for every `k` in `from..=n` whose probability is
/// representable, and for no other.
///
/// The binomial pmf is log-concave, so it decreases monotonically away from its mode: we
/// walk outwards from the mode and stop on each side at the first term that underflows.
/// The result is the same as a sum over all `k` (the skipped terms are exact zeros in
/// `f64`) at a cost of O(σ) instead of O(n): about 40σ terms in all.
fn for_each_significant(n: u64, p: f64, from: u64, mut visit: impl FnMut(u64, f64)) {
    // floor((n + 1) p) is a mode; clamp for p = 1 and rounding.
    let mode = (((n + 1) as f64 * p).floor() as u64).min(n);
    let start = mode.max(from);
    for k in start..=n {
        let l = ln_pmf(n, p, k);
        if l < LN_UNDERFLOW {
            break;
        }
        visit(k, l);
    }
    for k in (from..start).rev() {
        let l = ln_pmf(n, p, k);
        if l < LN_UNDERFLOW {
            break;
        }
        visit(k, l);
    }
}

/// Kahan summation: up to millions of terms of very different sizes.
#[derive(Default)]
struct Kahan {
    sum: f64,
    comp: f64,
}

impl Kahan {
    fn add(&mut self, x: f64) {
        let y = x - self.comp;
        let t = self.sum + y;
        self.comp = (t - self.sum) - y;
        self.sum = t;
    }
}

/// `-Σ_{k=from}^{n} P{X=k} log P{X=k}` for `X ~ Binomial(n, p)`, in `base`.
///
/// `from = 1` is Eq. 6 as printed; `from = 0` is the full Shannon entropy (Eq. 3) of the
/// binomial. Each term is `-exp(l)·l` with `l = ln P`, so a term never sees `0·log 0`.
pub fn entropy_from(n: u64, p: f64, from: u64, base: LogBase) -> f64 {
    let mut acc = Kahan::default();
    for_each_significant(n, p, from, |_, l| acc.add(-l.exp() * l));
    // Rounding can leave -0.0 or a -1e-17 for point masses.
    base.from_nats(acc.sum.max(0.0))
}

/// `E[f(X)]` for `X ~ Binomial(n, p)`, `f` of moderate size (terms with `P{X=k}` below
/// `e^-745` are dropped).
pub fn expect(n: u64, p: f64, mut f: impl FnMut(u64) -> f64) -> f64 {
    let mut acc = Kahan::default();
    for_each_significant(n, p, 0, |k, l| acc.add(l.exp() * f(k)));
    acc.sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact `C(n, k)` in integers, for cross-checking the log-space value.
    fn exact_choose(n: u64, k: u64) -> u128 {
        let k = k.min(n - k);
        let mut c: u128 = 1;
        for i in 0..k {
            // c * (n - i) is divisible by (i + 1) at every step.
            c = c * u128::from(n - i) / u128::from(i + 1);
        }
        c
    }

    #[test]
    fn ln_choose_matches_exact_integers() {
        for n in 0..=120u64 {
            for k in 0..=n {
                let exact = (exact_choose(n, k) as f64).ln();
                let got = ln_choose(n, k);
                assert!(
                    (got - exact).abs() <= 1e-12 * exact.abs().max(1.0),
                    "n={n} k={k}: {got} vs {exact}"
                );
            }
        }
        assert_eq!(ln_choose(3, 4), f64::NEG_INFINITY);
    }

    #[test]
    fn pmf_matches_exact_small_cases() {
        // n = 4, p = 1/4: P{X=k} = C(4,k) 3^(4-k) / 4^4 = {81, 108, 54, 12, 1} / 256.
        let want = [81.0, 108.0, 54.0, 12.0, 1.0].map(|x| x / 256.0);
        for (k, w) in want.iter().enumerate() {
            assert!((pmf(4, 0.25, k as u64) - w).abs() < 1e-15);
        }
        // Point masses at the ends.
        assert_eq!(pmf(7, 0.0, 0), 1.0);
        assert_eq!(pmf(7, 0.0, 1), 0.0);
        assert_eq!(pmf(7, 1.0, 7), 1.0);
        assert_eq!(pmf(7, 1.0, 6), 0.0);
    }

    #[test]
    fn windowed_sums_equal_full_sums() {
        // The walk from the mode must visit exactly the representable terms.
        for &(n, p) in &[
            (0u64, 0.3),
            (1, 0.5),
            (50, 0.001),
            (1000, 0.002),
            (1000, 0.81),
            (1000, 0.999),
            (5000, 0.5),
        ] {
            for from in [0u64, 1] {
                let mut full = 0.0;
                for k in from..=n {
                    let l = ln_pmf(n, p, k);
                    if l >= LN_UNDERFLOW {
                        full += -l.exp() * l;
                    }
                }
                let got = entropy_from(n, p, from, LogBase::E);
                assert!(
                    (got - full.max(0.0)).abs() < 1e-12,
                    "n={n} p={p} from={from}: {got} vs {full}"
                );
            }
        }
    }

    #[test]
    fn pmf_sums_to_one_at_a_million() {
        let n = 1_000_000;
        let total = expect(n, 0.3, |_| 1.0);
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let mean = expect(n, 0.3, |k| k as f64);
        assert!((mean - 300_000.0).abs() < 1e-3, "{mean}");
    }

    #[test]
    fn entropy_at_a_million_matches_normal_approximation() {
        // H(Bin(n,p)) = ½ log2(2πe n p (1-p)) + O(1/n).
        let (n, p) = (1_000_000u64, 0.3);
        let h = entropy_from(n, p, 0, LogBase::Two);
        let approx = 0.5
            * (2.0 * std::f64::consts::PI * std::f64::consts::E * n as f64 * p * (1.0 - p)).log2();
        assert!(
            h.is_finite() && (h - approx).abs() < 1e-4,
            "{h} vs {approx}"
        );
    }

    #[test]
    fn entropy_hand_computed() {
        // n = 2, p = 1/2: pmf {1/4, 1/2, 1/4}. Full entropy = 1/4·2 + 1/2·1 + 1/4·2 = 1.5 bits;
        // from k = 1 (Eq. 6): 1/2·1 + 1/4·2 = 1.0 bit.
        assert!((entropy_from(2, 0.5, 0, LogBase::Two) - 1.5).abs() < 1e-14);
        assert!((entropy_from(2, 0.5, 1, LogBase::Two) - 1.0).abs() < 1e-14);
        // In nats the same sum is 1.0 · ln 2.
        assert!((entropy_from(2, 0.5, 1, LogBase::E) - std::f64::consts::LN_2).abs() < 1e-14);
    }

    #[test]
    fn choose_matches_exact_integers() {
        // Exact while n·C(n, k) < 2^53 (n ≤ 50); a few ulps beyond.
        for n in 0..=120u64 {
            for k in 0..=n {
                let exact = exact_choose(n, k) as f64;
                let got = choose(n, k);
                if n <= 50 {
                    assert_eq!(got, exact, "n={n} k={k}");
                } else {
                    assert!((got / exact - 1.0).abs() < 1e-13, "n={n} k={k}");
                }
            }
        }
        assert_eq!(choose(3, 4), 0.0);
    }

    #[test]
    fn choose_ratio_hand_computed() {
        // C(5,3)/C(10,3) = 10/120.
        assert!((choose_ratio(5, 10, 3) - 10.0 / 120.0).abs() < 1e-15);
        assert_eq!(choose_ratio(2, 10, 3), 0.0);
        assert_eq!(choose_ratio(10, 10, 3), 1.0);
        // The log-space branch (k > 64) agrees with the product branch.
        let direct: f64 = (0..100u64)
            .map(|i| (900 - i) as f64 / (1000 - i) as f64)
            .product();
        assert!((choose_ratio(900, 1000, 100) / direct - 1.0).abs() < 1e-11);
    }
}
