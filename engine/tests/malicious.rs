//! Malicious mode (issue 12): the same results as semi-honest mode, and a party that
//! deviates inside the computation (a wrong AND share, a wrong triple, a wrong value in
//! a verification opening) is caught before the next opening, at every honest party,
//! without naming anyone. Semi-honest mode misses the same deviations. Uses the
//! `fault-injection` test instrument, which the engine's own tests always compile in.

mod common;

use acs_engine::circuits::{equal, less_than, mux};
use acs_engine::declassify::Reason;
use acs_engine::share::{reconstruct, reconstruct_keys, Shared, SharedKeys};
use acs_engine::sort::{bitonic_sort, quicksort, Sorted};
use acs_engine::testing::run_three;
use acs_engine::transpose::{blocks, rows_to_planes};
use acs_engine::{ComputeFault, ComputeSite, EngineError, Party, PartyId, SecurityMode};
use rand::Rng;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

/// A party's result and how many sort comparisons it opened.
type Outcome<T> = (Result<T, EngineError>, u64);

/// Runs `f` on three parties in `mode`, `cheat` (if any) with its fault injected; fails
/// the test on a hang or a panic.
fn run<T, F>(mode: SecurityMode, cheat: Option<(PartyId, ComputeFault)>, f: F) -> [Outcome<T>; 3]
where
    T: Send + 'static,
    F: Fn(&mut Party) -> Result<T, EngineError> + Send + Sync + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = run_three(move |p| {
            p.set_security(mode)?;
            if let Some((who, fault)) = cheat {
                if p.id() == who {
                    p.inject_compute_fault(fault);
                }
            }
            let r = f(p);
            let opened = p
                .audit_log()
                .entries()
                .iter()
                .filter(|e| e.reason == Reason::SortComparison)
                .count() as u64;
            Ok((r, opened))
        });
        let _ = tx.send(out.map(|r| r.expect("setup failed")));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out,
        Err(RecvTimeoutError::Timeout) => panic!("the parties hung"),
        Err(RecvTimeoutError::Disconnected) => panic!("a party thread panicked"),
    }
}

const KEY_BITS: usize = 24;

/// One input vector's three XOR shares, as users send them.
type Split = Arc<[Vec<u64>; 3]>;

fn sort_inputs(n: usize, seed: u64) -> (Vec<u128>, Split, Split) {
    let mut rng = common::rng(seed);
    let keys: Vec<u128> = (0..n)
        .map(|_| rng.gen::<u128>() & ((1 << KEY_BITS) - 1))
        .collect();
    let key_words: Vec<u64> = keys.iter().flat_map(|k| [*k as u64, 0]).collect();
    let payload: Vec<u64> = keys.iter().map(|k| *k as u64 ^ 0x5a5a).collect();
    (
        keys,
        Arc::new(common::split_words(&key_words, seed + 1)),
        Arc::new(common::split_words(&payload, seed + 2)),
    )
}

fn sort_run(
    n: usize,
    seed: u64,
    bitonic: bool,
    mode: SecurityMode,
    cheat: Option<(PartyId, ComputeFault)>,
) -> (Vec<u128>, [Outcome<Sorted>; 3]) {
    let (keys, ks, ps) = sort_inputs(n, seed);
    let out = run(mode, cheat, move |p| {
        let i = p.id().index();
        let k = p.input_from_xor(ks[i].clone())?;
        let pl = p.input_from_xor(ps[i].clone())?;
        let k = SharedKeys::from_words(&k);
        if bitonic {
            bitonic_sort(p, &k, KEY_BITS, &pl, 1)
        } else {
            quicksort(p, &k, KEY_BITS, &pl, 1)
        }
    });
    (keys, out)
}

fn sorted_output(out: &[Outcome<Sorted>; 3]) -> (Vec<u128>, Vec<u64>) {
    let s: Vec<&Sorted> = out
        .iter()
        .map(|(r, _)| r.as_ref().expect("party failed"))
        .collect();
    (
        reconstruct_keys([&s[0].keys, &s[1].keys, &s[2].keys]),
        reconstruct([&s[0].payload, &s[1].payload, &s[2].payload]),
    )
}

#[test]
fn malicious_sorts_give_the_semi_honest_results() {
    // 4500 keys: the first quicksort levels compare in borrow chains (70 blocks).
    for bitonic in [false, true] {
        let sizes: &[usize] = if bitonic {
            &[1, 2, 65, 700]
        } else {
            &[1, 2, 65, 700, 4500]
        };
        for &n in sizes {
            let (keys, honest) =
                sort_run(n, 11 + n as u64, bitonic, SecurityMode::SemiHonest, None);
            let (_, checked) = sort_run(n, 11 + n as u64, bitonic, SecurityMode::Malicious, None);
            let mut want = keys.clone();
            want.sort_unstable();
            let payload: Vec<u64> = want.iter().map(|k| *k as u64 ^ 0x5a5a).collect();
            for out in [&honest, &checked] {
                let (k, p) = sorted_output(out);
                assert_eq!(k, want, "bitonic={bitonic} n={n}");
                assert_eq!(p, payload, "bitonic={bitonic} n={n}");
            }
        }
    }
}

#[test]
fn malicious_mode_verifies_every_gate_and_counts_it() {
    let (_, ks, ps) = sort_inputs(500, 3);
    let out = run(SecurityMode::Malicious, None, move |p| {
        let i = p.id().index();
        let k = p.input_from_xor(ks[i].clone())?;
        let pl = p.input_from_xor(ps[i].clone())?;
        quicksort(p, &SharedKeys::from_words(&k), KEY_BITS, &pl, 1)?;
        Ok((p.pending_gate_words(), p.verify_stats()))
    });
    for (r, opened) in &out {
        let (pending, stats) = r.as_ref().expect("party failed");
        assert_eq!(*pending, 0);
        // One verification per opened level.
        assert_eq!(stats.verifications, *opened);
        assert!(stats.gate_words > 0 && stats.triple_words >= 3 * stats.gate_words);
        assert!(stats.error_bound < 2f64.powi(-40));
        assert!(stats.chunk_error_max <= 2f64.powi(-41));
    }
}

#[test]
fn malicious_circuits_match_plaintext() {
    let mut rng = common::rng(9);
    let m = 300;
    let w = 13;
    let xs: Vec<u128> = (0..m).map(|_| rng.gen::<u128>() & ((1 << w) - 1)).collect();
    let mut ys: Vec<u128> = (0..m).map(|_| rng.gen::<u128>() & ((1 << w) - 1)).collect();
    ys[0] = xs[0];
    ys[7] = xs[7];
    let nb = blocks(m);
    let x = rows_to_planes(&xs, w);
    let y = rows_to_planes(&ys, w);
    let c: Vec<u64> = (0..x.len()).map(|_| rng.gen()).collect();
    let sx = Arc::new(common::split_words(&x, 1));
    let sy = Arc::new(common::split_words(&y, 2));
    let sc = Arc::new(common::split_words(&c, 3));
    let out = run(SecurityMode::Malicious, None, move |p| {
        let i = p.id().index();
        let x = p.input_from_xor(sx[i].clone())?;
        let y = p.input_from_xor(sy[i].clone())?;
        let c = p.input_from_xor(sc[i].clone())?;
        let lt = less_than(p, &x, &y, w, nb)?;
        let eq = equal(p, &x, &y, w, nb)?;
        let mx = mux(p, &c, &x, &y)?;
        let pending = p.pending_gate_words();
        p.verify_pending()?;
        Ok((lt, eq, mx, pending))
    });
    let r: Vec<&(Shared, Shared, Shared, usize)> = out
        .iter()
        .map(|(r, _)| r.as_ref().expect("party failed"))
        .collect();
    assert!(r[0].3 > 0, "gates were recorded");
    let lt = reconstruct([&r[0].0, &r[1].0, &r[2].0]);
    let eq = reconstruct([&r[0].1, &r[1].1, &r[2].1]);
    let mx = reconstruct([&r[0].2, &r[1].2, &r[2].2]);
    for k in 0..m {
        let bit = |v: &[u64]| (v[k / 64] >> (k % 64)) & 1 == 1;
        assert_eq!(bit(&lt), xs[k] < ys[k], "lane {k}");
        assert_eq!(bit(&eq), xs[k] == ys[k], "lane {k}");
    }
    let want_mx: Vec<u64> = (0..x.len())
        .map(|j| (x[j] & !c[j]) | (y[j] & c[j]))
        .collect();
    assert_eq!(mx, want_mx);
}

/// Inputs for a comparison batch large enough for the borrow chain
/// ([`acs_engine::compare::RIPPLE_MIN_BLOCKS`] blocks and more): `x`, `y` as XOR splits,
/// with some equal pairs and pairs that differ only in the last bit.
fn chain_inputs(m: usize, w: usize, seed: u64) -> (Vec<u128>, Vec<u128>, Split, Split) {
    let mut rng = common::rng(seed);
    let mask = (1u128 << w) - 1;
    let xs: Vec<u128> = (0..m).map(|_| rng.gen::<u128>() & mask).collect();
    let mut ys: Vec<u128> = (0..m).map(|_| rng.gen::<u128>() & mask).collect();
    for k in (0..m).step_by(97) {
        ys[k] = xs[k];
    }
    for k in (5..m).step_by(89) {
        ys[k] = xs[k] ^ 1;
    }
    let sx = Arc::new(common::split_words(&rows_to_planes(&xs, w), 4));
    let sy = Arc::new(common::split_words(&rows_to_planes(&ys, w), 5));
    (xs, ys, sx, sy)
}

#[test]
fn a_large_malicious_comparison_runs_as_a_borrow_chain_and_matches_plaintext() {
    let w = 37;
    // Past the chain's threshold, and over enough of its layout tasks (256 blocks each,
    // laid out 8 at a time; the last task and group partial) that rayon hands one
    // thread's scratch several tasks in a row.
    let nb = acs_engine::compare::RIPPLE_MIN_BLOCKS.max(24 * 256 + 3);
    let m = 64 * nb - 11;
    let (xs, ys, sx, sy) = chain_inputs(m, w, 31);
    for mode in [SecurityMode::SemiHonest, SecurityMode::Malicious] {
        let (sx, sy) = (sx.clone(), sy.clone());
        let out = run(mode, None, move |p| {
            let i = p.id().index();
            let x = p.input_from_xor(sx[i].clone())?;
            let y = p.input_from_xor(sy[i].clone())?;
            let before = p.stats().rounds;
            let lt = less_than(p, &x, &y, w, nb)?;
            let rounds = p.stats().rounds - before;
            let pending = p.pending_gate_words();
            p.verify_pending()?;
            Ok((lt, rounds, pending))
        });
        let r: Vec<&(Shared, u64, usize)> = out
            .iter()
            .map(|(r, _)| r.as_ref().expect("party failed"))
            .collect();
        let lt = reconstruct([&r[0].0, &r[1].0, &r[2].0]);
        for k in 0..m {
            assert_eq!(
                (lt[k / 64] >> (k % 64)) & 1 == 1,
                xs[k] < ys[k],
                "{mode} lane {k}"
            );
        }
        if mode == SecurityMode::Malicious {
            // One AND gate per bit, one round per bit.
            assert_eq!(r[0].1, w as u64);
            assert_eq!(r[0].2, w * nb);
        } else {
            assert_eq!(r[0].1, 1 + (w as f64).log2().ceil() as u64);
            assert_eq!(r[0].2, 0);
        }
    }
}

#[test]
fn a_wrong_and_share_in_the_borrow_chain_is_caught() {
    let w = 20;
    let nb = acs_engine::compare::RIPPLE_MIN_BLOCKS;
    let (_, _, sx, sy) = chain_inputs(64 * nb, w, 32);
    for cheat in PartyId::ALL {
        for nth in [0, 7, w as u64 - 1] {
            let (sx, sy) = (sx.clone(), sy.clone());
            let out = run(
                SecurityMode::Malicious,
                Some((
                    cheat,
                    ComputeFault {
                        site: ComputeSite::AndGate,
                        nth,
                    },
                )),
                move |p| {
                    let i = p.id().index();
                    let x = p.input_from_xor(sx[i].clone())?;
                    let y = p.input_from_xor(sy[i].clone())?;
                    let lt = less_than(p, &x, &y, w, nb)?;
                    p.verify_pending()?;
                    Ok(lt)
                },
            );
            assert_detected(&out, cheat, 0, &format!("chain link {nth}, {cheat}"));
        }
    }
}

/// Checks that every honest party stopped with `VerificationFailed` naming nobody, and
/// that none of them opened more than `max_opened` sort comparisons.
fn assert_detected<T>(out: &[Outcome<T>; 3], cheat: PartyId, max_opened: u64, what: &str) {
    for p in PartyId::ALL.into_iter().filter(|&p| p != cheat) {
        match &out[p.index()].0 {
            Err(EngineError::VerificationFailed { culprit: None, .. }) => {}
            Err(e) => panic!("{what}: honest {p} failed otherwise: {e}"),
            Ok(_) => panic!("{what}: honest {p} did not notice"),
        }
        assert!(
            out[p.index()].1 <= max_opened,
            "{what}: honest {p} opened {} comparisons after the deviation (at most {max_opened})",
            out[p.index()].1
        );
    }
}

#[test]
fn a_wrong_and_share_in_the_sort_is_caught_before_the_next_opening() {
    // A clean run fixes how many AND layers a quicksort level has (it depends only on
    // the key width), so a fault in layer `k` falls in level `k / layers`.
    let n = 300;
    let (_, clean) = sort_run(n, 21, false, SecurityMode::Malicious, None);
    let layers = {
        let (keys, ks, ps) = sort_inputs(n, 21);
        drop(keys);
        let out = run(SecurityMode::Malicious, None, move |p| {
            let i = p.id().index();
            let k = p.input_from_xor(ks[i].clone())?;
            let pl = p.input_from_xor(ps[i].clone())?;
            p.inject_compute_fault(ComputeFault {
                site: ComputeSite::AndGate,
                nth: u64::MAX,
            });
            quicksort(p, &SharedKeys::from_words(&k), KEY_BITS, &pl, 1)?;
            Ok(p.messages_at(ComputeSite::AndGate))
        });
        let (msgs, levels) = (*out[0].0.as_ref().unwrap(), out[0].1);
        assert_eq!(msgs % levels, 0);
        msgs / levels
    };
    assert!(clean.iter().all(|(r, _)| r.is_ok()));
    for cheat in PartyId::ALL {
        for nth in [0, 1, layers - 1, layers + 2, 3 * layers + 4] {
            let fault = ComputeFault {
                site: ComputeSite::AndGate,
                nth,
            };
            let (_, out) = sort_run(n, 21, false, SecurityMode::Malicious, Some((cheat, fault)));
            assert_detected(&out, cheat, nth / layers, &format!("{cheat} layer {nth}"));
        }
    }
}

#[test]
fn a_wrong_and_share_in_the_bitonic_network_is_caught_before_release() {
    for cheat in PartyId::ALL {
        let fault = ComputeFault {
            site: ComputeSite::AndGate,
            nth: 5,
        };
        let (_, out) = sort_run(100, 5, true, SecurityMode::Malicious, Some((cheat, fault)));
        assert_detected(&out, cheat, 0, &format!("bitonic {cheat}"));
    }
}

#[test]
fn wrong_triples_and_wrong_verification_openings_are_caught() {
    for site in [ComputeSite::Triple, ComputeSite::VerifyOpening] {
        for cheat in PartyId::ALL {
            for nth in [0, 2] {
                let fault = ComputeFault { site, nth };
                let (_, out) =
                    sort_run(200, 8, false, SecurityMode::Malicious, Some((cheat, fault)));
                assert_detected(&out, cheat, nth, &format!("{site:?} {cheat} #{nth}"));
            }
        }
    }
}

#[test]
fn a_wrong_multiplexer_share_is_caught_by_an_explicit_verification() {
    for cheat in PartyId::ALL {
        let out = run(
            SecurityMode::Malicious,
            Some((
                cheat,
                ComputeFault {
                    site: ComputeSite::AndGate,
                    nth: 0,
                },
            )),
            move |p| {
                let id = p.id();
                let c = Shared::public(id, &[u64::MAX; 4]);
                let x = Shared::public(id, &[1, 2, 3, 4]);
                let y = Shared::public(id, &[5, 6, 7, 8]);
                let out = mux(p, &c, &x, &y)?;
                p.verify_pending()?;
                Ok(out)
            },
        );
        assert_detected(&out, cheat, 0, &format!("mux {cheat}"));
    }
}

#[test]
fn semi_honest_mode_misses_a_wrong_and_share() {
    // The same deviation goes unnoticed without verification: every party finishes,
    // and the multiplexer's output is silently wrong.
    for cheat in PartyId::ALL {
        let out = run(
            SecurityMode::SemiHonest,
            Some((
                cheat,
                ComputeFault {
                    site: ComputeSite::AndGate,
                    nth: 0,
                },
            )),
            move |p| {
                let id = p.id();
                let c = Shared::public(id, &[u64::MAX; 4]);
                let x = Shared::public(id, &[1, 2, 3, 4]);
                let y = Shared::public(id, &[5, 6, 7, 8]);
                let out = mux(p, &c, &x, &y)?;
                p.verify_pending()?;
                Ok(out)
            },
        );
        let r: Vec<&Shared> = out
            .iter()
            .map(|(r, _)| r.as_ref().expect("semi-honest mode does not check"))
            .collect();
        // The liar's own copy of its share differs from its victim's copy, so rebuild
        // from the honest parties' `a` shares and the victim's copy of the liar's.
        let victim = cheat.prev();
        let mut a = [r[0].a.clone(), r[1].a.clone(), r[2].a.clone()];
        a[cheat.index()] = r[victim.index()].b.clone();
        let got: Vec<u64> = (0..4).map(|k| a[0][k] ^ a[1][k] ^ a[2][k]).collect();
        assert_ne!(
            got,
            vec![5, 6, 7, 8],
            "{cheat}: the wrong share changed the output"
        );
    }
}

#[test]
fn a_wrong_sort_and_share_passes_in_semi_honest_mode() {
    for cheat in PartyId::ALL {
        let fault = ComputeFault {
            site: ComputeSite::AndGate,
            nth: 3,
        };
        let (_, out) = sort_run(
            300,
            21,
            false,
            SecurityMode::SemiHonest,
            Some((cheat, fault)),
        );
        for (r, _) in &out {
            assert!(r.is_ok(), "semi-honest mode has no check to fail");
        }
    }
}

#[test]
fn a_wrong_reshare_in_the_shuffle_is_caught_before_the_first_comparison() {
    // Party 0 sends in two of the three shuffle steps, parties 1 and 2 in one; a wrong
    // message in any is caught by the shuffle's MAC check, before the sort opens
    // anything.
    for cheat in PartyId::ALL {
        for nth in 0..reshares_per_shuffle(cheat) {
            let fault = ComputeFault {
                site: ComputeSite::Reshare,
                nth,
            };
            let (_, out) = sort_run(100, 4, false, SecurityMode::Malicious, Some((cheat, fault)));
            assert_detected(&out, cheat, 0, &format!("reshare {nth}"));
        }
    }
}

/// The reshare messages `party` sends in one shuffle: party 0 in steps 0 and 2, party 1
/// in step 1, party 2 in step 2.
fn reshares_per_shuffle(party: PartyId) -> u64 {
    if party.index() == 0 {
        2
    } else {
        1
    }
}

#[test]
fn a_wrong_reshare_in_the_shuffle_passes_in_semi_honest_mode() {
    for cheat in PartyId::ALL {
        let fault = ComputeFault {
            site: ComputeSite::Reshare,
            nth: 0,
        };
        let (_, out) = sort_run(
            100,
            4,
            false,
            SecurityMode::SemiHonest,
            Some((cheat, fault)),
        );
        for (r, _) in &out {
            assert!(r.is_ok(), "semi-honest mode has no check to fail");
        }
    }
}

#[test]
fn malicious_shuffles_move_whole_rows_and_pass_their_check() {
    let mut rng = common::rng(31);
    for (rows, width) in [
        (0usize, 3usize),
        (1, 1),
        (5, 2),
        (700, 3),
        (5000, 4),
        (300, 37),
    ] {
        let table: Vec<u64> = (0..rows * width).map(|_| rng.gen()).collect();
        let split = Arc::new(common::split_words(&table, 5 + rows as u64));
        let out = run(SecurityMode::Malicious, None, move |p| {
            let t = p.input_from_xor(split[p.id().index()].clone())?;
            let s = p.shuffle(&t, width)?;
            Ok((s, p.verify_stats()))
        });
        let r: Vec<&(Shared, acs_engine::VerifyStats)> = out
            .iter()
            .map(|(r, _)| r.as_ref().expect("party failed"))
            .collect();
        for (_, stats) in &r {
            assert_eq!(stats.shuffle_checks, 1);
            assert!(stats.error_bound < 2f64.powi(-40));
        }
        let got = reconstruct([&r[0].0, &r[1].0, &r[2].0]);
        let mut want: Vec<&[u64]> = table.chunks(width).collect();
        let mut have: Vec<&[u64]> = got.chunks(width).collect();
        want.sort_unstable();
        have.sort_unstable();
        assert_eq!(have, want, "{rows} rows of {width}");
    }
}

/// One round's inputs for 20 online users (random blocks), as each party's share.
fn round_inputs() -> (
    acs_engine::round::RoundConfig,
    Arc<Vec<u64>>,
    Arc<[acs_engine::round::input::PartyInputs; 3]>,
) {
    use acs_engine::round::{Block, Role, RoundConfig};
    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 16,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let mut rng = common::rng(77);
    let mut online: Vec<u64> = (0..20).map(|_| rng.gen::<u64>() | 1).collect();
    online.sort_unstable();
    online.dedup();
    let blocks: Vec<Block> = online
        .iter()
        .map(|_| Block {
            role: if rng.gen_bool(0.5) {
                Role::Send
            } else {
                Role::Request
            },
            dst: online[rng.gen_range(0..online.len())],
            payload: vec![rng.gen(), rng.gen()],
        })
        .collect();
    let inputs =
        acs_engine::round::input::PartyInputs::share_all(&cfg, 1, &online, &blocks, &mut rng);
    (cfg, Arc::new(online), Arc::new(inputs))
}

fn round_run(mode: SecurityMode, cheat: Option<(PartyId, ComputeFault)>) -> [Outcome<u64>; 3] {
    use acs_engine::round::mpc::{exchange_round, SharedStore};
    let (cfg, online, blocks) = round_inputs();
    let n = common::notaries();
    run(mode, cheat, move |p| {
        let i = p.id().index();
        let store = SharedStore::empty(&cfg);
        exchange_round(p, &cfg, 1, &online, blocks[i].clone(), &store, &n[i])?;
        p.verify_pending()?;
        Ok(p.messages_at(ComputeSite::AndGate))
    })
}

#[test]
fn a_wrong_and_share_anywhere_in_the_round_is_caught_before_release() {
    // A clean run (with a fault that never fires) counts the round's AND layers.
    let never = ComputeFault {
        site: ComputeSite::AndGate,
        nth: u64::MAX,
    };
    let clean = round_run(SecurityMode::Malicious, Some((PartyId::ALL[0], never)));
    let layers = *clean[0].0.as_ref().expect("clean round");
    assert!(layers > 20);
    for cheat in PartyId::ALL {
        // Early (the expiry and role products, the first sort), middle (matching,
        // store sort) and late (the clean run's last layer).
        for nth in [0, layers / 2, layers * 9 / 10, layers - 1] {
            let fault = ComputeFault {
                site: ComputeSite::AndGate,
                nth,
            };
            let out = round_run(SecurityMode::Malicious, Some((cheat, fault)));
            // The quicksorts' depth is random, so a late layer may not exist in this run;
            // then nothing was corrupted and there is nothing to catch.
            let fired = match &out[cheat.index()].0 {
                Ok(sent) => *sent > nth,
                Err(_) => true,
            };
            assert!(fired || nth > 0, "the first layer always exists");
            if fired {
                assert_detected(&out, cheat, u64::MAX, &format!("round {cheat} layer {nth}"));
            }
        }
    }
}

#[test]
fn a_batch_larger_than_a_group_is_verified_group_by_group() {
    let n = (1 << 19) + 64;
    let mut rng = common::rng(12);
    let x: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let y: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let want: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a & b).collect();
    let sx = Arc::new(common::split_words(&x, 1));
    let sy = Arc::new(common::split_words(&y, 2));
    let out = run(SecurityMode::Malicious, None, move |p| {
        let i = p.id().index();
        let x = p.input_from_xor(sx[i].clone())?;
        let y = p.input_from_xor(sy[i].clone())?;
        let z = p.and(&x, &y)?;
        p.verify_pending()?;
        Ok((z, p.verify_stats()))
    });
    let r: Vec<&(Shared, acs_engine::VerifyStats)> = out
        .iter()
        .map(|(r, _)| r.as_ref().expect("party failed"))
        .collect();
    assert_eq!(reconstruct([&r[0].0, &r[1].0, &r[2].0]), want);
    for (_, stats) in &r {
        assert_eq!(stats.verifications, 2);
        assert_eq!(stats.gate_words, n as u64);
    }
}
