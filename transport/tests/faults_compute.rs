//! A server that lies inside the computation, not in an opening (issue 12, item 5): three
//! real `acs exchange` processes in malicious mode, one of them (built with the
//! `fault-injection` feature, `ACS_FAULT_COMPUTE`) sending a wrong share of one AND
//! layer, or a wrong reshare message in a shuffle, in a round its users take part in. The
//! verification of the AND gates (or the shuffle's MAC check) before the next opening
//! fails at both honest servers, which abort the round without naming an
//! honest server; the users are told to retry, later rounds commit, and every message
//! arrives exactly once, intact (nothing wrong is delivered: no user ever reconstructs an
//! output from the round with the wrong gate).
//!
//! A server that lies in the input conversion (item 2) is caught differently: the honest
//! server it passes the altered share to checks it against the hash the user sent, and
//! the round goes on without that user, who is told to retry; nothing aborts.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use acs_engine::SecurityMode;
use crowd::{runtime, serial};
use std::time::Duration;
use system::{
    assert_a_later_round_commits, committed_rounds, field, logs_of, Deployment, Options, Proc,
};

/// A malicious-mode deployment after server `liar` deviated as `spec` says
/// (`ACS_FAULT_COMPUTE`, armed after the users' first round) and the users settled.
struct Deviated {
    _deployment: Deployment,
    _entries: Vec<Proc>,
    ex: Vec<Proc>,
    crowd: crowd::Crowd,
    /// The round in which the liar deviated.
    round: u64,
}

fn run_deviating(liar: usize, spec: &str) -> Deviated {
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 800,
        ..Options::default()
    });
    for i in 0..3 {
        let mut f = d.exchange_file(i);
        f.security = SecurityMode::Malicious;
        d.write_exchange(i, &f);
    }
    let arm = d.path("arm");
    let arm_s = arm.to_string_lossy().to_string();
    let entries: Vec<Proc> = (0..2).map(|j| d.start_entry(j, "")).collect();
    let ex: Vec<Proc> = (0..3)
        .map(|i| {
            if i == liar {
                d.start_exchange_with(
                    i,
                    "",
                    &[("ACS_FAULT_COMPUTE", spec), ("ACS_FAULT_ARM", &arm_s)],
                )
            } else {
                d.start_exchange(i, "")
            }
        })
        .collect();
    let rt = runtime();
    let mut crowd = rt.block_on(crowd::Crowd::register(&d, 6, 3, None));
    rt.block_on(crowd.round());
    std::fs::write(&arm, b"").unwrap();
    rt.block_on(crowd.until_settled(30, Duration::from_secs(300)));
    let round = ex[liar]
        .log_text()
        .lines()
        .find(|l| l.contains("FAULT: deviated in the computation"))
        .and_then(|l| field(l, "round"))
        .unwrap_or_else(|| panic!("the liar never deviated\n{}", logs_of(&ex)));
    Deviated {
        _deployment: d,
        _entries: entries,
        ex,
        crowd,
        round,
    }
}

/// Runs [`run_deviating`] and checks the outcome of a deviation the AND verification or
/// the shuffle check catches: the round aborts everywhere and its users retry.
fn deviate(liar: usize, spec: &str) {
    // Named bindings (not `..`) keep the deployment and relays alive to the end.
    let Deviated {
        _deployment: _d,
        _entries: _e,
        ex,
        crowd,
        round,
    } = run_deviating(liar, spec);
    let honest: Vec<usize> = (0..3).filter(|&i| i != liar).collect();
    let about = |i: usize, what: &str| -> Vec<String> {
        ex[i]
            .log_text()
            .lines()
            .filter(|l| l.contains(what) && field(l, "round") == Some(round))
            .map(String::from)
            .collect()
    };
    for &i in &honest {
        // Its own verification caught the wrong gate (not merely a peer hanging up).
        let caught = about(i, "verification of the computation failed");
        assert!(
            !caught.is_empty(),
            "server {i} did not catch the wrong gate in round {round}\n{}",
            logs_of(&ex)
        );
        eprintln!("evidence, server {i}: {}", caught[0]);
        assert!(
            !about(i, "round aborted; users told to retry").is_empty(),
            "server {i} did not abort round {round}\n{}",
            logs_of(&ex)
        );
        // Nobody blames an honest server.
        for l in ex[i].log_text().lines().filter(|l| l.contains("CHEATING")) {
            assert_eq!(field(l, "culprit"), Some(liar as u64), "{l}");
        }
    }
    for (i, p) in ex.iter().enumerate() {
        assert!(
            !committed_rounds(&p.log_text()).contains(&round),
            "server {i} committed the round with the wrong gate"
        );
    }
    assert!(
        !crowd.tally.retried_in(round).is_empty(),
        "no user was told to retry round {round}: {:?}",
        crowd.tally.statuses
    );
    assert!(
        crowd.tally.served_in(round).is_empty(),
        "users were served in round {round}"
    );
    // The servers went on: a later round committed at all three, the liar included.
    assert_a_later_round_commits(&ex, round);
    // Nothing wrong was delivered and nothing was lost or doubled.
    crowd.assert_exactly_once();
    assert!(
        crowd.tally.liars.is_empty(),
        "users named a liar: {:?}",
        crowd.tally.liars
    );
}

#[test]
fn a_wrong_and_share_in_the_sort_aborts_the_round_and_users_retry() {
    let _serial = serial();
    deviate(1, "and-sort:0");
}

#[test]
fn a_wrong_multiplexer_share_aborts_the_round_and_users_retry() {
    let _serial = serial();
    deviate(2, "mux:0");
}

#[test]
fn a_wrong_reshare_in_the_shuffle_aborts_the_round_and_users_retry() {
    // Caught by the shuffle's MAC check (engine/src/shuffle_mac.rs) before the sort
    // opens its first comparison.
    let _serial = serial();
    deviate(0, "shuffle:1");
}

/// Server `liar` flips a bit of the first share it passes on in the input conversion
/// (`ACS_FAULT_COMPUTE=input:0`) in a round after the users' first, in malicious mode
/// (the mode that checks the conversion).
#[test]
fn a_share_altered_in_the_input_conversion_gets_its_user_retried_and_the_round_commits() {
    let _serial = serial();
    let liar = 2;
    // Named bindings (not `..`) keep the deployment and relays alive to the end.
    let Deviated {
        _deployment: _d,
        _entries: _e,
        ex,
        crowd,
        round,
    } = run_deviating(liar, "input:0");
    // All three servers (the liar too: it cannot hide the removal) log the failure and
    // count it against the liar's conversion alone.
    for (i, p) in ex.iter().enumerate() {
        let line = p
            .log_text()
            .lines()
            .find(|l| {
                l.contains("did not match their users' hashes") && field(l, "round") == Some(round)
            })
            .map(String::from)
            .unwrap_or_else(|| {
                panic!(
                    "server {i} logged no failed check in round {round}\n{}",
                    logs_of(&ex)
                )
            });
        eprintln!("evidence, server {i}: {line}");
        assert_eq!(field(&line, "removed"), Some(1), "{line}");
        for s in 0..3 {
            let want = u64::from(s == liar);
            assert_eq!(
                field(&line, &format!("conversion_failed_at_{s}")),
                Some(want),
                "{line}"
            );
        }
        assert!(
            !p.log_text().contains("CHEATING"),
            "server {i} named a culprit\n{}",
            logs_of(&ex)
        );
        // The round was not aborted: it committed without that user.
        assert!(
            committed_rounds(&p.log_text()).contains(&round),
            "server {i} did not commit round {round}\n{}",
            logs_of(&ex)
        );
    }
    // Exactly one user was told to retry in that round; everyone else was served.
    let retried = crowd.tally.retried_in(round);
    assert_eq!(retried.len(), 1, "{:?}", crowd.tally.statuses);
    assert_eq!(
        crowd.tally.served_in(round).len(),
        crowd.users.len() - 1,
        "{:?}",
        crowd.tally.statuses
    );
    // Nothing wrong was delivered and nothing was lost or doubled.
    crowd.assert_exactly_once();
    assert!(
        crowd.tally.liars.is_empty(),
        "users named a liar: {:?}",
        crowd.tally.liars
    );
}
