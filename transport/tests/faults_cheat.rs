//! A cheating exchange server (issue 7): one `acs exchange` process (built with the
//! `fault-injection` feature) sends a wrong value, or a wrong check hash, in one opening of
//! a round its users take part in. The opening's cross-check (value from one peer, SHA3
//! check from the other) fails at the honest server that receives it, which names the two
//! suspects and sends its complaint to both peers; the other honest server settles the
//! complaint against its own record of what it sent and names the liar. The round aborts
//! (its users are told to retry), later rounds commit, and every message arrives once.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use crowd::{runtime, serial, Crowd};
use std::time::Duration;
use system::{committed_rounds, field, wait_until, Deployment, Options, Proc};

fn logs(ps: &[Proc]) -> String {
    ps.iter()
        .map(|p| format!("--- {}\n{}", p.name, p.log_text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a deployment where server `liar` lies as `lie` says (`ACS_FAULT_LIE`) in a
/// round after the users' first; checks what the honest servers say and that nothing was
/// lost or delivered twice.
fn cheat(liar: usize, lie: &str) {
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 800,
        ..Options::default()
    });
    let arm = d.path("arm");
    let arm_s = arm.to_string_lossy().to_string();
    let _entries: Vec<Proc> = (0..2).map(|j| d.start_entry(j, "")).collect();
    let ex: Vec<Proc> = (0..3)
        .map(|i| {
            if i == liar {
                d.start_exchange_with(i, "", &[("ACS_FAULT_LIE", lie), ("ACS_FAULT_ARM", &arm_s)])
            } else {
                d.start_exchange(i, "")
            }
        })
        .collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, 6, 3, None));
    rt.block_on(crowd.round());
    std::fs::write(&arm, b"").unwrap();
    rt.block_on(crowd.until_settled(30, Duration::from_secs(300)));

    let liar_log = ex[liar].log_text();
    let round = liar_log
        .lines()
        .find(|l| l.contains("FAULT: this server will lie"))
        .and_then(|l| field(l, "round"))
        .unwrap_or_else(|| panic!("the liar never armed\n{}", logs(&ex)));
    let honest: Vec<usize> = (0..3).filter(|&i| i != liar).collect();
    let about = |i: usize, what: &str| -> Vec<String> {
        ex[i]
            .log_text()
            .lines()
            .filter(|l| l.contains(what) && field(l, "round") == Some(round))
            .map(String::from)
            .collect()
    };
    // The accuser: its cross-check failed, and the liar is one of the two it names.
    let accusers: Vec<usize> = honest
        .iter()
        .copied()
        .filter(|&i| {
            about(i, "failed its cross-check").iter().any(|l| {
                field(l, "value_from") == Some(liar as u64)
                    || field(l, "check_from") == Some(liar as u64)
            })
        })
        .collect();
    assert_eq!(
        accusers.len(),
        1,
        "exactly one honest server should catch the lie in round {round}\n{}",
        logs(&ex)
    );
    // The other honest server names the liar alone.
    let judge = honest.iter().copied().find(|i| *i != accusers[0]).unwrap();
    let verdict = about(judge, "CHEATING");
    assert!(
        verdict.iter().any(|l| {
            field(l, "culprit") == Some(liar as u64)
                && field(l, "accuser") == Some(accusers[0] as u64)
        }),
        "server {judge} did not name server {liar}\n{}",
        logs(&ex)
    );
    // Nobody blames an honest server.
    for &i in &honest {
        for l in about(i, "CHEATING") {
            assert_eq!(field(&l, "culprit"), Some(liar as u64), "{l}");
        }
    }
    // The round aborted everywhere and its users were told to retry.
    for (i, p) in ex.iter().enumerate() {
        assert!(
            !committed_rounds(&p.log_text()).contains(&round),
            "server {i} committed the round with the lie"
        );
    }
    for &i in &honest {
        assert!(
            !about(i, "round aborted; users told to retry").is_empty(),
            "server {i} did not abort round {round}\n{}",
            logs(&ex)
        );
    }
    assert!(
        !crowd.tally.retried_in(round).is_empty(),
        "no user was told to retry round {round}: {:?}",
        crowd.tally.statuses
    );
    // The servers went on: a later round committed at all three, the liar included.
    wait_until(Duration::from_secs(60), "a later round to commit", || {
        ex.iter()
            .all(|p| committed_rounds(&p.log_text()).iter().any(|&r| r > round))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&ex)));
    crowd.assert_exactly_once();
    for p in &ex {
        assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
    }
}

#[test]
fn a_wrong_value_in_a_sort_opening_aborts_the_round_and_the_liar_is_named() {
    let _serial = serial();
    cheat(1, "value:SortComparison:0");
}

#[test]
fn a_wrong_check_in_a_routing_opening_aborts_the_round_and_the_liar_is_named() {
    let _serial = serial();
    cheat(0, "check:RouteAfterShuffle:0");
}

#[test]
fn a_wrong_value_late_in_the_sort_aborts_the_round_and_the_liar_is_named() {
    let _serial = serial();
    cheat(2, "value:SortComparison:5");
}
