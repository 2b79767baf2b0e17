//! Faults aimed at one phase of the round (`Party::set_phase`,
//! `Party::inject_compute_fault_in`), as `acs-bench cheat` and `ACS_FAULT_COMPUTE` aim
//! them: the round marks its phases, a fault counts only the messages sent in its phase,
//! fires there, and in malicious mode is caught by every honest party before the next
//! opening. Uses the `fault-injection` instrument the engine's own tests compile in.

mod common;

use acs_engine::round::input::PartyInputs;
use acs_engine::round::mpc::{exchange_round, SharedStore};
use acs_engine::round::{Block, Role, RoundConfig};
use acs_engine::testing::run_three;
use acs_engine::{ComputeFault, ComputeSite, EngineError, PartyId, Phase, SecurityMode};
use rand::Rng;
use std::sync::Arc;

/// What one party ended with: its result, how many AND messages it sent in the aimed
/// phase, openings begun, and (the liar) the openings begun when the fault fired.
type End = (Result<(), EngineError>, u64, u64, Option<u64>);

fn round(cheat: PartyId, phase: Phase, site: ComputeSite, nth: u64) -> [End; 3] {
    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 8,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let mut rng = common::rng(5);
    let mut online: Vec<u64> = (0..24).map(|_| rng.gen::<u64>() | 1).collect();
    online.sort_unstable();
    online.dedup();
    let blocks: Vec<Block> = online
        .iter()
        .map(|_| Block {
            role: Role::Send,
            dst: online[rng.gen_range(0..online.len())],
            payload: vec![rng.gen(), rng.gen()],
        })
        .collect();
    let inputs = PartyInputs::share_all(&cfg, 1, &online, &blocks, &mut rng);
    let (online, blocks) = (Arc::new(online), Arc::new(inputs));
    let n = common::notaries();
    run_three(move |p| {
        p.set_security(SecurityMode::Malicious)?;
        if p.id() == cheat {
            p.inject_compute_fault_in(phase, ComputeFault { site, nth });
        }
        let i = p.id().index();
        let r = exchange_round(
            p,
            &cfg,
            1,
            &online,
            blocks[i].clone(),
            &SharedStore::empty(&cfg),
            &n[i],
        )
        .map(|_| ());
        Ok((
            r,
            p.messages_at(site),
            p.audit_log().openings_begun(),
            p.compute_fault_fired(),
        ))
    })
    .map(|r| r.expect("setup"))
}

#[test]
fn each_marked_phase_has_its_own_messages() {
    // A fault that never fires counts the AND layers of each phase in an honest round.
    let layers = |phase| {
        let out = round(PartyId::ALL[0], phase, ComputeSite::AndGate, u64::MAX);
        assert!(out.iter().all(|e| e.0.is_ok()));
        assert_eq!(out[0].3, None, "the fault never fired");
        out[0].1
    };
    // The equality circuit over 34-bit keys (dummy, 32-bit address, kind) and the
    // pseudonyms' high bits side by side: ceil(log2 34) = 6 layers, then one AND of the
    // two; the multiplexer: one; the sorts: several per quicksort level.
    assert_eq!(layers(Phase::Match), 7);
    assert_eq!(layers(Phase::Mux), 1);
    assert!(layers(Phase::Sort) > 7);
}

#[test]
fn a_fault_aimed_at_a_phase_fires_there_and_is_caught_before_the_next_opening() {
    for cheat in PartyId::ALL {
        for (phase, nth) in [
            (Phase::Sort, 0),
            (Phase::Sort, 25),
            (Phase::Match, 6),
            (Phase::Mux, 0),
        ] {
            let out = round(cheat, phase, ComputeSite::AndGate, nth);
            assert_caught(&out, cheat, &format!("{phase:?} #{nth}"));
        }
    }
}

/// Checks that every honest party stopped with `VerificationFailed` naming nobody, and
/// began no opening after the fault fired.
fn assert_caught(out: &[End; 3], cheat: PartyId, what: &str) {
    let fired = out[cheat.index()]
        .3
        .unwrap_or_else(|| panic!("{what} by {cheat} never fired"));
    for h in PartyId::ALL.into_iter().filter(|&h| h != cheat) {
        let (r, _, opened, _) = &out[h.index()];
        assert!(
            matches!(
                r,
                Err(EngineError::VerificationFailed { culprit: None, .. })
            ),
            "{what} by {cheat}: honest {h} ended with {r:?}"
        );
        assert!(
            *opened <= fired,
            "{what} by {cheat}: honest {h} began {opened} openings, the fault fired after {fired}"
        );
    }
}

#[test]
fn a_wrong_reshare_in_any_shuffle_is_caught_before_the_next_opening() {
    // Party 0 sends in two of a shuffle's three steps, parties 1 and 2 in one. The
    // round's two sorts each begin with a shuffle; routing shuffles three tables.
    for cheat in PartyId::ALL {
        let per = if cheat.index() == 0 { 2 } else { 1 };
        for (phase, nth) in (0..2 * per)
            .map(|n| (Phase::Sort, n))
            .chain((0..3 * per).map(|n| (Phase::Route, n)))
        {
            let out = round(cheat, phase, ComputeSite::Reshare, nth);
            assert_caught(&out, cheat, &format!("reshare {phase:?} #{nth}"));
        }
    }
}
