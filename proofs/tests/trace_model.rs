//! The traceability model end to end: the `trace-model` command, the Fig. 6 sweeps, the
//! closed forms against independent computations, and the Monte-Carlo at a fixed seed.

use std::path::PathBuf;
use std::process::Command;

use acs_proofs::trace::figure::Figure;
use acs_proofs::trace::montecarlo::{self, Mechanism};
use acs_proofs::trace::paper::{p_trace, r_trace};
use acs_proofs::trace::report::Report;
use acs_proofs::trace::{LogBase, Params};

fn acs_proofs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_acs-proofs"))
        .args(args)
        .output()
        .expect("run acs-proofs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = acs_proofs(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("acs-proofs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn json_has_the_paper_metrics_and_the_sound_ones() {
    let v = json(&[
        "trace-model",
        "--users",
        "1000",
        "--entries",
        "10",
        "--exchanges",
        "5",
        "--corrupt-entries",
        "5",
        "--corrupt-exchanges",
        "1",
        "--json",
    ]);
    // Eq. 4: (5/10)^2 · 1/5 = 0.05.
    assert!((v["p_trace"].as_f64().unwrap() - 0.05).abs() < 1e-15);
    assert_eq!(v["log_base"], serde_json::json!(2));
    // Bin(1000, 0.05) has entropy ≈ ½ log2(2πe·47.5) ≈ 4.83 bits, and P{X=0} ≈ 5e-23.
    let r = v["r_trace"].as_f64().unwrap();
    assert!((r - 4.83).abs() < 0.01, "{r}");
    assert!((v["expected_traced_fraction"].as_f64().unwrap() - 0.05).abs() < 1e-15);
    let d = v["degree_of_anonymity"].as_f64().unwrap();
    assert!(d > 0.9 && d < 0.95, "{d}");
    // Eq. 2 as printed at n_c = 5: 1/C(10,5) = 1/252.
    assert!((v["p_c"].as_f64().unwrap() - 1.0 / 252.0).abs() < 1e-15);
    // Five exchange servers is not this system: null with a reason.
    assert!(v["acs_design"].is_null());
    assert!(v["acs_design_note"].as_str().unwrap().contains("exactly 3"));
}

#[test]
fn log_base_e_gives_nats() {
    let args = [
        "trace-model",
        "--corrupt-entries",
        "3",
        "--corrupt-exchanges",
        "2",
        "--json",
    ];
    let bits = json(&args);
    let mut with_e = args.to_vec();
    with_e.extend(["--log-base", "e"]);
    let nats = json(&with_e);
    assert_eq!(nats["log_base"], serde_json::json!("e"));
    let (b, n) = (
        bits["r_trace"].as_f64().unwrap(),
        nats["r_trace"].as_f64().unwrap(),
    );
    assert!((n - b * std::f64::consts::LN_2).abs() < 1e-12);
    // The degree of anonymity has no base.
    assert_eq!(bits["degree_of_anonymity"], nats["degree_of_anonymity"]);
}

#[test]
fn invalid_parameters_fail_clearly() {
    for (args, needle) in [
        (
            vec!["--corrupt-entries", "11", "--corrupt-exchanges", "1"],
            "--corrupt-entries 11 exceeds --entries 10",
        ),
        (
            vec!["--corrupt-entries", "1", "--corrupt-exchanges", "6"],
            "--corrupt-exchanges 6 exceeds --exchanges 5",
        ),
        (
            vec![
                "--users",
                "0",
                "--corrupt-entries",
                "1",
                "--corrupt-exchanges",
                "1",
            ],
            "--users must be at least 1",
        ),
        (
            vec![
                "--entries",
                "2",
                "--corrupt-entries",
                "1",
                "--corrupt-exchanges",
                "1",
            ],
            "--shares 3 exceeds --entries 2",
        ),
        (
            vec![
                "--corrupt-entries",
                "1",
                "--corrupt-exchanges",
                "1",
                "--monte-carlo",
                "--trials",
                "1",
            ],
            "--trials must be at least 2",
        ),
        (
            vec!["--figure", "acs", "--exchanges", "5"],
            "exactly 3 exchange servers",
        ),
    ] {
        let mut full = vec!["trace-model"];
        full.extend(args.iter().copied());
        let out = acs_proofs(&full);
        assert_eq!(out.status.code(), Some(1), "{full:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{full:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    // Missing or conflicting arguments are clap's usage errors.
    assert_eq!(
        acs_proofs(&["trace-model", "--corrupt-entries", "1"])
            .status
            .code(),
        Some(2)
    );
    let both = acs_proofs(&["trace-model", "--figure", "6a", "--corrupt-entries", "1"]);
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn readable_summary_without_json() {
    let out = acs_proofs(&[
        "trace-model",
        "--exchanges",
        "3",
        "--corrupt-entries",
        "5",
        "--corrupt-exchanges",
        "2",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("P_trace (Eq. 4)"));
    assert!(text.contains("R_trace (Eq. 6)"));
    assert!(text.contains("who-talks-to-whom exposed         true"));
}

#[test]
fn edge_cases() {
    let report = |ce, cx| Report::new(Params::new(1000, 10, 5, ce, cx, 3).unwrap(), LogBase::Two);
    // CE = 0: nothing traced; Eq. 2 as printed is outside its domain (the empty product
    // would say 1).
    let r = report(0, 3);
    assert_eq!(
        (r.p_trace, r.r_trace, r.p_c, r.p_c_shares),
        (0.0, 0.0, None, 0.0)
    );
    assert_eq!(r.degree_of_anonymity, Some(1.0));
    // CE = NE, CX = NX: everyone traced, and R_trace says 0, as if nobody were.
    let r = report(10, 5);
    assert_eq!(
        (r.p_trace, r.r_trace, r.p_c, r.p_c_shares),
        (1.0, 0.0, Some(1.0), 1.0)
    );
    assert_eq!(r.degree_of_anonymity, Some(0.0));
    assert_eq!(r.paper_shares.p_trace, 1.0);
    // CX = NX with CE = 1: (1/10)^2 = 0.01.
    let r = report(1, 5);
    assert!((r.p_trace - 0.01).abs() < 1e-15);
    // CX = 0: Eq. 4 says 0 whatever the entries.
    assert_eq!(report(10, 0).p_trace, 0.0);
}

#[test]
fn r_trace_matches_an_independent_recurrence_at_fig6_size() {
    // Plain f64 recurrences, no logs: for p <= 1/2 start at P{X=0} = (1-p)^n and use
    // P{X=k+1} = P{X=k}·(n-k)/(k+1)·p/(1-p); above 1/2 start at P{X=n} = p^n (where
    // (1-p)^n would underflow) and go down. Eq. 6 sums -P log2 P over k = 1..n.
    let n = 1000u64;
    for &p in &[0.002, 0.05, 0.5, 0.81, 0.99] {
        let mut pmf = vec![0.0f64; n as usize + 1];
        if p <= 0.5 {
            pmf[0] = (1.0f64 - p).powi(n as i32);
            for k in 0..n as usize {
                pmf[k + 1] = pmf[k] * (n as usize - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
            }
        } else {
            pmf[n as usize] = p.powi(n as i32);
            for k in (1..=n as usize).rev() {
                pmf[k - 1] = pmf[k] * k as f64 / (n as usize - k + 1) as f64 * (1.0 - p) / p;
            }
        }
        let want: f64 = pmf[1..]
            .iter()
            .filter(|&&q| q > 0.0)
            .map(|&q| -q * q.log2())
            .sum();
        let got = r_trace(n, p, LogBase::Two);
        assert!(
            want > 1.0 && (got - want).abs() < 1e-9,
            "p={p}: {got} vs {want}"
        );
    }
}

#[test]
fn fig6_tables_and_files() {
    let dir = fresh_dir("fig6a");
    let out = acs_proofs(&[
        "trace-model",
        "--figure",
        "6a",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| CE | CX=1 | CX=2 | CX=3 | CX=4 | CX=5 |"));
    // The last row of the R_trace table: R_trace falls to 0 where everyone is traced.
    assert!(
        table.contains("| 10 | 5.7078 | 6.0005 | 6.0005 | 5.7078 | 0.0000 |"),
        "{table}"
    );
    let svg = std::fs::read_to_string(dir.join("fig6a.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("R_trace"));
    let csv = std::fs::read_to_string(dir.join("fig6a.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 50);
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fig6a.json")).unwrap()).unwrap();
    assert_eq!(data["points"].as_array().unwrap().len(), 50);
    let _ = std::fs::remove_dir_all(&dir);

    // Fig. 6b through the library: CX on the x axis, CE = 2, 4, 6, 8, 10.
    let base = Params::new(1000, 10, 5, 0, 0, 3).unwrap();
    let b = Figure::Fig6b.compute(base, LogBase::Two).unwrap();
    assert_eq!(b.xs, vec![1, 2, 3, 4, 5]);
    assert_eq!(b.series_values, vec![2, 4, 6, 8, 10]);
    for pt in &b.points {
        let p = p_trace(
            &base
                .with_corruption(pt.corrupt_entries, pt.corrupt_exchanges)
                .unwrap(),
        );
        assert_eq!(pt.p_trace, p);
    }
    // Points with equal P_trace have equal R_trace: (CE=2, CX=1) and (CE=1, CX=4) both
    // give p = 0.008, so R_trace depends on the corruption only through p.
    let a = Figure::Fig6a.compute(base, LogBase::Two).unwrap();
    let at = |ce, cx| {
        a.points
            .iter()
            .find(|p| p.corrupt_entries == ce && p.corrupt_exchanges == cx)
            .unwrap()
    };
    assert_eq!(at(2, 1).r_trace, at(1, 4).r_trace);
}

#[test]
fn monte_carlo_agrees_with_the_formulas_at_a_fixed_seed() {
    // 1000 users, 200 trials per mechanism: well under a second in the test profile.
    for (nx, ce, cx) in [(5, 5, 2), (3, 5, 2), (3, 3, 3), (3, 7, 1)] {
        let params = Params::new(1000, 10, nx, ce, cx, 3).unwrap();
        let results = montecarlo::run(&params, 200, 20260101).unwrap();
        assert_eq!(results.len(), if nx == 3 { 3 } else { 2 });
        for r in &results {
            let err = (r.empirical_traced_fraction - r.formula_p_trace).abs();
            assert!(err < 0.01, "{params:?} {:?}: {r:?}", r.mechanism);
            if let Some(z) = r.z_score {
                assert!(z.abs() < 4.0, "{params:?} {:?}: z = {z}", r.mechanism);
            }
            let d = r.formula_degree_of_anonymity.unwrap();
            assert!((r.empirical_degree_of_anonymity - d).abs() < 0.01, "{r:?}");
            for o in &r.global_observer {
                assert!((o.empirical / o.formula - 1.0).abs() < 0.05, "{o:?}");
            }
        }
        // Honest majority: one corrupted exchange server traces nobody, whatever the relays.
        if nx == 3 && cx == 1 {
            let acs = results
                .iter()
                .find(|r| r.mechanism == Mechanism::AcsDesign)
                .unwrap();
            assert_eq!(acs.empirical_traced_fraction, 0.0);
        }
    }
}

#[test]
fn a_million_users_stays_finite() {
    let report = Report::new(
        Params::new(1_000_000, 10, 5, 7, 3, 3).unwrap(),
        LogBase::Two,
    );
    // p = 0.49·0.6 = 0.294; H(Bin(n, p)) ≈ ½ log2(2πe n p (1-p)).
    let approx =
        0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * 1e6 * 0.294 * 0.706).log2();
    assert!(
        (report.r_trace - approx).abs() < 1e-4,
        "{} vs {approx}",
        report.r_trace
    );
    assert!(report.degree_of_anonymity.unwrap().is_finite());
}
