//! Gates and circuits against plaintext, exhaustively for small widths.

mod common;

use acs_engine::circuits::{equal, less_than, mux};
use acs_engine::transpose::{blocks, planes_to_rows, rows_to_planes};
use common::run_on_words;
use rand::Rng;

#[test]
fn and_gate_is_exhaustively_correct_per_lane() {
    // Lanes cover all four input combinations many times over.
    let x: Vec<u64> = vec![0xAAAA_AAAA_AAAA_AAAA, 0, u64::MAX, 0x0123_4567_89AB_CDEF];
    let y: Vec<u64> = vec![0xCCCC_CCCC_CCCC_CCCC, u64::MAX, 0, 0xFEDC_BA98_7654_3210];
    let expect: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a & b).collect();
    let got = run_on_words(vec![x, y], |p, s| p.and(&s[0], &s[1]));
    assert_eq!(got, expect);
}

#[test]
fn and_gate_large_batch_uses_all_chunks() {
    let mut rng = common::rng(5);
    let n = 10_000;
    let x: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let y: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let expect: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a & b).collect();
    let got = run_on_words(vec![x, y], |p, s| {
        // Two ANDs in a row: zero-sharing streams must stay aligned.
        let z = p.and(&s[0], &s[1])?;
        let one = s[0].xor(&s[0]).not(p.id());
        p.and(&z, &one)
    });
    assert_eq!(got, expect);
}

/// Every pair of w-bit values, for w = 1..=5, as lanes of one batch.
fn all_pairs(w: usize) -> (Vec<u128>, Vec<u128>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for x in 0..(1u128 << w) {
        for y in 0..(1u128 << w) {
            xs.push(x);
            ys.push(y);
        }
    }
    (xs, ys)
}

fn compare_exhaustively(w: usize, op: &'static str) {
    let (xs, ys) = all_pairs(w);
    let n = xs.len();
    let px = rows_to_planes(&xs, w);
    let py = rows_to_planes(&ys, w);
    let nb = blocks(n);
    let got = run_on_words(vec![px, py], move |p, s| match op {
        "lt" => less_than(p, &s[0], &s[1], w, nb),
        _ => equal(p, &s[0], &s[1], w, nb),
    });
    for i in 0..n {
        let bit = (got[i / 64] >> (i % 64)) & 1 == 1;
        let expect = if op == "lt" {
            xs[i] < ys[i]
        } else {
            xs[i] == ys[i]
        };
        assert_eq!(bit, expect, "{op} w={w} x={} y={}", xs[i], ys[i]);
    }
}

#[test]
fn less_than_is_exhaustively_correct_for_small_widths() {
    for w in 1..=6 {
        compare_exhaustively(w, "lt");
    }
}

#[test]
fn equality_is_exhaustively_correct_for_small_widths() {
    for w in 1..=6 {
        compare_exhaustively(w, "eq");
    }
}

#[test]
fn less_than_on_wide_random_keys() {
    let mut rng = common::rng(9);
    for w in [7usize, 33, 64, 84, 105, 128] {
        let mask = if w == 128 {
            u128::MAX
        } else {
            (1u128 << w) - 1
        };
        let n = 300;
        let xs: Vec<u128> = (0..n).map(|_| rng.gen::<u128>() & mask).collect();
        // Share long common prefixes to exercise the low end of the prefix tree.
        let ys: Vec<u128> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| match i % 3 {
                0 => *x,
                1 => x ^ (1u128 << rng.gen_range(0..w)),
                _ => rng.gen::<u128>() & mask,
            })
            .collect();
        let nb = blocks(n);
        let got = run_on_words(
            vec![rows_to_planes(&xs, w), rows_to_planes(&ys, w)],
            move |p, s| less_than(p, &s[0], &s[1], w, nb),
        );
        for i in 0..n {
            assert_eq!(
                (got[i / 64] >> (i % 64)) & 1 == 1,
                xs[i] < ys[i],
                "w={w} i={i}"
            );
        }
    }
}

#[test]
fn mux_selects_per_lane() {
    let mut rng = common::rng(11);
    let n = 130;
    let c: Vec<u64> = (0..n)
        .map(|_| if rng.gen() { u64::MAX } else { 0 })
        .collect();
    let x: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let y: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let expect: Vec<u64> = (0..n)
        .map(|i| if c[i] != 0 { y[i] } else { x[i] })
        .collect();
    let got = run_on_words(vec![c, x, y], |p, s| mux(p, &s[0], &s[1], &s[2]));
    assert_eq!(got, expect);
    // Keep the helper honest: planes round-trip.
    let rows: Vec<u128> = (0..70).map(|i| i as u128 * 3).collect();
    assert_eq!(planes_to_rows(&rows_to_planes(&rows, 9), 9, 70), rows);
}
