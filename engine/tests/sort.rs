//! Shuffle and sorts against plaintext.

mod common;

use acs_engine::declassify::Reason;
use acs_engine::sort::{bitonic_sort, quicksort, quicksort_distinct, Sorted};
use common::{open_keys, open_words, run_on_keys};
use rand::Rng;

/// Random keys (`bits` wide) and payload rows whose words name their key, so a payload
/// that does not follow its key is caught.
fn workload(n: usize, bits: usize, payload_words: usize, seed: u64) -> (Vec<u128>, Vec<u64>) {
    let mut rng = common::rng(seed);
    let mask = (1u128 << bits) - 1;
    let keys: Vec<u128> = (0..n).map(|_| rng.gen::<u128>() & mask).collect();
    let mut payload = Vec::with_capacity(n * payload_words);
    for (i, k) in keys.iter().enumerate() {
        for q in 0..payload_words {
            payload.push((*k as u64).wrapping_mul(31) ^ ((i as u64) << 20) ^ q as u64);
        }
    }
    (keys, payload)
}

fn check_sorted(keys: &[u128], payload: &[u64], payload_words: usize, parts: [&Sorted; 3]) {
    let got_keys = open_keys([&parts[0].keys, &parts[1].keys, &parts[2].keys]);
    let got_payload = open_words([&parts[0].payload, &parts[1].payload, &parts[2].payload]);
    let mut expect = keys.to_vec();
    expect.sort_unstable();
    assert_eq!(got_keys, expect);
    // Each output row's payload is the payload of some input row with that key, and
    // the multiset of rows is preserved.
    let mut rows_in: Vec<(u128, Vec<u64>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                *k,
                payload[i * payload_words..(i + 1) * payload_words].to_vec(),
            )
        })
        .collect();
    let mut rows_out: Vec<(u128, Vec<u64>)> = got_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                *k,
                got_payload[i * payload_words..(i + 1) * payload_words].to_vec(),
            )
        })
        .collect();
    rows_in.sort();
    rows_out.sort();
    assert_eq!(rows_in, rows_out);
}

fn sort_and_check(algo: &'static str, n: usize, bits: usize, payload_words: usize, seed: u64) {
    let (keys, payload) = workload(n, bits, payload_words, seed);
    let out = run_on_keys(&keys, &payload, move |p, k, pl| {
        if algo == "quick" {
            quicksort(p, &k, bits, &pl, payload_words)
        } else {
            bitonic_sort(p, &k, bits, &pl, payload_words)
        }
    });
    check_sorted(&keys, &payload, payload_words, [&out[0], &out[1], &out[2]]);
}

#[test]
fn quicksort_small_and_edge_sizes() {
    for n in [0usize, 1, 2, 3, 5, 64, 65, 127, 1000] {
        sort_and_check("quick", n, 32, 2, n as u64);
    }
}

#[test]
fn quicksort_random_sizes_up_to_a_few_thousand() {
    let mut rng = common::rng(77);
    for round in 0..4 {
        let n = rng.gen_range(0..4000);
        let bits = [1usize, 8, 40, 64][round];
        sort_and_check("quick", n, bits, round, 100 + round as u64);
    }
}

#[test]
fn quicksort_pivoting_on_a_sorted_sample() {
    // From 4096 elements the sort first sorts a sample and pivots on its medians. Sizes
    // around the threshold and well above it, narrow keys (many duplicates: the
    // tiebreak) and wide ones.
    for (n, bits, seed) in [(4095, 40, 1), (4096, 64, 2), (4097, 12, 3), (9000, 3, 4)] {
        sort_and_check("quick", n, bits, 1, seed);
    }
    sort_and_check("quick", 70_000, 64, 0, 5);
}

#[test]
fn quicksort_with_many_duplicate_keys() {
    // 3-bit keys over 2000 rows: every key repeats hundreds of times.
    sort_and_check("quick", 2000, 3, 1, 5);
    // All keys equal.
    sort_and_check("quick", 513, 1, 1, 6);
}

#[test]
fn quicksort_accepts_full_64_bit_keys_and_wide_payloads() {
    sort_and_check("quick", 700, 64, 32, 8);
}

#[test]
fn bitonic_matches_plaintext_sort() {
    for n in [0usize, 1, 2, 3, 100, 256, 777] {
        sort_and_check("bitonic", n, 20, 1, 40 + n as u64);
    }
    sort_and_check("bitonic", 300, 64, 0, 41);
}

#[test]
fn quicksort_opens_only_comparison_bits_and_bitonic_opens_nothing() {
    let (keys, payload) = workload(900, 16, 1, 3);
    let logs = run_on_keys(&keys, &payload, |p, k, pl| {
        let sorted = quicksort(p, &k, 16, &pl, 1)?;
        Ok((sorted.levels, p.audit_log().entries().to_vec()))
    });
    let (levels, entries) = &logs[0];
    assert_eq!(entries.len(), *levels, "one opening per level");
    assert!(entries.iter().all(|e| e.reason == Reason::SortComparison));
    // Every comparison opens exactly one bit: the total is the number of comparisons,
    // at least n - 1 on the first level.
    assert_eq!(entries[0].bits, 899);
    for other in &logs[1..] {
        assert_eq!(&other.1.len(), &entries.len());
    }
    let logs = run_on_keys(&keys, &payload, |p, k, pl| {
        bitonic_sort(p, &k, 16, &pl, 1)?;
        Ok(p.audit_log().entries().len())
    });
    assert_eq!(logs, [0, 0, 0]);
}

/// Shuffles `n` random rows of `row_words` words and checks that the same rows come out,
/// not in their input order.
fn shuffle_keeps_every_row(n: usize, row_words: usize, seed: u64) {
    let mut rng = common::rng(seed);
    let rows: Vec<u64> = (0..n * row_words).map(|_| rng.gen()).collect();
    let shares = std::sync::Arc::new(common::split_words(&rows, seed + 100));
    let out = acs_engine::testing::run_three(move |p| {
        let x = p.input_from_xor(shares[p.id().index()].clone())?;
        p.shuffle(&x, row_words)
    })
    .map(|r| r.expect("party"));
    let got = open_words([&out[0], &out[1], &out[2]]);
    let mut a: Vec<&[u64]> = rows.chunks(row_words).collect();
    let mut b: Vec<&[u64]> = got.chunks(row_words).collect();
    assert_ne!(a, b, "{n} rows left in place: not shuffled");
    a.sort_unstable();
    b.sort_unstable();
    assert!(a == b, "the shuffled rows are not the input rows");
}

#[test]
fn shuffle_outputs_a_permutation_of_its_rows() {
    shuffle_keeps_every_row(1500, 3, 12);
}

#[test]
fn a_shuffle_of_wide_rows_across_task_and_piece_boundaries_keeps_every_row() {
    // Rows of 7 words: 16 Ki-word tasks and 16 MiB message pieces both end inside rows,
    // so the handoff's sender gathers rows split across them.
    let row_words = 7;
    shuffle_keeps_every_row(2 * (1 << 21) / row_words + 3, row_words, 14);
}

#[test]
fn a_shuffle_of_a_table_in_several_message_pieces_keeps_every_row() {
    // Steps 0 and 1 hand a table to the next pair in 16 MiB pieces, at most two in
    // flight before the receiver acknowledges one: 3 pieces and an odd tail cover the
    // window, its last acknowledgements and a piece that ends mid stream block.
    let n = 3 * (1 << 21) + 5;
    let mut rng = common::rng(13);
    let rows: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let shares = std::sync::Arc::new(common::split_words(&rows, 5));
    let out = acs_engine::testing::run_three(move |p| {
        let x = p.input_from_xor(shares[p.id().index()].clone())?;
        p.shuffle(&x, 1)
    })
    .map(|r| r.expect("party"));
    let mut got = open_words([&out[0], &out[1], &out[2]]);
    assert_ne!(got, rows, "rows left in place: not shuffled");
    let mut want = rows;
    got.sort_unstable();
    want.sort_unstable();
    assert!(
        got == want,
        "the shuffled table is not a permutation of its rows"
    );
}

#[test]
fn quicksort_keys_wider_than_64_bits() {
    // The exchange round sorts 66- and 97-bit keys; a buffer-reuse bug once broke 66-bit
    // keys in release builds only. Cover widths around both, small and mid-sized n.
    for bits in [65usize, 66, 67, 96, 97, 100, 110] {
        for n in [3usize, 5, 100, 1000] {
            let mut rng = common::rng((bits * 10_000 + n) as u64);
            let mask = (1u128 << bits) - 1;
            // Few distinct high parts, so comparisons often reach the low word.
            let keys: Vec<u128> = (0..n)
                .map(|_| ((rng.gen_range(0..4u128) << 64) | rng.gen::<u64>() as u128) & mask)
                .collect();
            let payload: Vec<u64> = (0..n as u64).collect();
            let out = run_on_keys(&keys, &payload, move |p, k, pl| {
                quicksort(p, &k, bits, &pl, 1)
            });
            check_sorted(&keys, &payload, 1, [&out[0], &out[1], &out[2]]);
        }
    }
}

#[test]
fn quicksort_keys_of_64_bits_or_fewer() {
    // Keys plus tiebreak at most 32 bits wide pack both shares into one transposition;
    // up to 64 bits, one per share. Few distinct keys, so the tiebreak decides often and
    // segments of one pivot and of several pivots both occur.
    for bits in [1usize, 2, 8, 20, 22, 30, 40, 54] {
        for n in [2usize, 3, 65, 1000] {
            let mut rng = common::rng((bits * 10_000 + n) as u64);
            let keys: Vec<u128> = (0..n)
                .map(|_| rng.gen::<u128>() & ((1u128 << bits) - 1) & 0xff0f)
                .collect();
            let payload: Vec<u64> = (0..n as u64).collect();
            let out = run_on_keys(&keys, &payload, move |p, k, pl| {
                quicksort(p, &k, bits, &pl, 1)
            });
            check_sorted(&keys, &payload, 1, [&out[0], &out[1], &out[2]]);
        }
    }
}

#[test]
fn distinct_keys_sort_without_a_tiebreak_at_every_width() {
    // The round's store sort: distinct keys, no appended position, ~23 bits.
    for bits in [5usize, 23, 32, 33, 64, 65, 90] {
        for n in [2usize, 31, 700] {
            let n = n.min(1usize << bits.min(20));
            let mut rng = common::rng((bits * 7 + n) as u64);
            let mut keys: Vec<u128> = Vec::new();
            while keys.len() < n {
                let k = rng.gen::<u128>() & ((1u128 << bits) - 1);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let payload: Vec<u64> = (0..n as u64).collect();
            let out = run_on_keys(&keys, &payload, move |p, k, pl| {
                quicksort_distinct(p, &k, bits, &pl, 1)
            });
            check_sorted(&keys, &payload, 1, [&out[0], &out[1], &out[2]]);
        }
    }
}
