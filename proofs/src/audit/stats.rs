//! The two-sample Kolmogorov–Smirnov test, with a Bonferroni correction.
//!
//! KS compares whole distributions (any shift, spread or shape change), needs no model
//! of the feature, and its p-value comes from the limiting Kolmogorov distribution with
//! Stephens' small-sample correction (Numerical Recipes, 3rd ed., §14.3.3). For
//! features with ties (counts, fractions of a few bits) that p-value is conservative:
//! the real false-alarm rate is at most the stated one.

/// The KS statistic `D = sup |F_x - F_y|` of two samples (ties handled: both empirical
/// distribution functions step past every copy of a value at once).
pub fn ks_statistic(x: &[f64], y: &[f64]) -> f64 {
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    let mut x = x.to_vec();
    let mut y = y.to_vec();
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < x.len() && j < y.len() {
        let v = if x[i].total_cmp(&y[j]).is_le() {
            x[i]
        } else {
            y[j]
        };
        while i < x.len() && x[i].total_cmp(&v).is_eq() {
            i += 1;
        }
        while j < y.len() && y[j].total_cmp(&v).is_eq() {
            j += 1;
        }
        d = d.max((i as f64 / nx - j as f64 / ny).abs());
    }
    d
}

/// `P(K > z)` for the Kolmogorov distribution `K`.
pub fn kolmogorov_q(z: f64) -> f64 {
    if z <= 0.0 {
        return 1.0;
    }
    if z < 1.18 {
        // The CDF's theta-function form converges fast for small z.
        let y = (-std::f64::consts::PI * std::f64::consts::PI / (8.0 * z * z)).exp();
        let cdf =
            (2.0 * std::f64::consts::PI).sqrt() / z * (y + y.powi(9) + y.powi(25) + y.powi(49));
        (1.0 - cdf).clamp(0.0, 1.0)
    } else {
        let x = (-2.0 * z * z).exp();
        (2.0 * (x - x.powi(4) + x.powi(9))).clamp(0.0, 1.0)
    }
}

fn effective_scale(nx: usize, ny: usize) -> f64 {
    let ne = (nx * ny) as f64 / (nx + ny) as f64;
    let s = ne.sqrt();
    s + 0.12 + 0.11 / s
}

/// The asymptotic p-value of `D` for samples of sizes `nx`, `ny`.
pub fn ks_p_value(d: f64, nx: usize, ny: usize) -> f64 {
    if nx == 0 || ny == 0 {
        return 1.0;
    }
    kolmogorov_q(effective_scale(nx, ny) * d)
}

/// The smallest `D` whose p-value is below `p` for samples of sizes `nx`, `ny`.
pub fn ks_critical_d(p: f64, nx: usize, ny: usize) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 10.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if kolmogorov_q(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (hi / effective_scale(nx, ny)).min(1.0)
}

/// One two-sample test.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KsTest {
    /// `D`.
    pub d: f64,
    /// Its p-value.
    pub p: f64,
}

/// Runs the test.
pub fn ks_test(x: &[f64], y: &[f64]) -> KsTest {
    let d = ks_statistic(x, y);
    KsTest {
        d,
        p: ks_p_value(d, x.len(), y.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kolmogorov_tail_matches_known_quantiles() {
        // Classical critical values: P(K > 1.3581) = 0.05, P(K > 1.6276) = 0.01.
        assert!((kolmogorov_q(1.3581) - 0.05).abs() < 1e-4);
        assert!((kolmogorov_q(1.6276) - 0.01).abs() < 1e-4);
        assert!((kolmogorov_q(0.8276) - 0.5).abs() < 1e-3);
        // Both branches agree where they meet.
        let below = kolmogorov_q(1.18 - 1e-9);
        let above = kolmogorov_q(1.18);
        assert!((below - above).abs() < 1e-9, "{below} {above}");
    }

    #[test]
    fn statistic_with_ties_and_disjoint_samples() {
        assert_eq!(ks_statistic(&[1.0, 1.0, 2.0], &[1.0, 1.0, 2.0]), 0.0);
        assert_eq!(ks_statistic(&[0.0; 5], &[1.0; 7]), 1.0);
        // At 1.0 both are at 1/2; at 2.0 F_x = 3/4 and F_y = 1: D = 1/4.
        let d = ks_statistic(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0]);
        assert!((d - 0.25).abs() < 1e-12, "{d}");
    }

    #[test]
    fn false_alarm_rate_is_at_most_the_level() {
        // Same distribution on both sides: continuous (close to the level) and a fair
        // bit (ties: conservative).
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let trials = 2000;
        let rate = |rng: &mut rand::rngs::StdRng, draw: &dyn Fn(&mut rand::rngs::StdRng) -> f64| {
            let mut hits = 0;
            for _ in 0..trials {
                let x: Vec<f64> = (0..100).map(|_| draw(rng)).collect();
                let y: Vec<f64> = (0..100).map(|_| draw(rng)).collect();
                hits += usize::from(ks_test(&x, &y).p < 0.05);
            }
            hits as f64 / trials as f64
        };
        let continuous = rate(&mut rng, &|r| r.gen::<f64>());
        let bit = rate(&mut rng, &|r| f64::from(u8::from(r.gen_bool(0.5))));
        assert!(continuous > 0.025 && continuous < 0.065, "{continuous}");
        assert!(bit < 0.05, "{bit}");
    }

    #[test]
    fn critical_d_inverts_the_p_value() {
        let d = ks_critical_d(1e-4, 200, 200);
        assert!((ks_p_value(d, 200, 200) - 1e-4).abs() < 1e-6);
        assert!(ks_p_value(d * 0.99, 200, 200) > 1e-4);
    }
}
