//! A cheating exchange server: one `acs exchange` process (built with the
//! `fault-injection` feature) deviates in a round its users take part in.
//!
//! - It sends a wrong value, or a wrong check hash, in one opening. The opening's
//!   cross-check (value from one peer, SHA-256 check from the other) fails at the honest
//!   server that receives it, which names the two suspects and sends its complaint to
//!   both peers; the other honest server settles the complaint against its own record of
//!   what it sent and names a pair holding the liar and the accuser, so the two honest
//!   servers' pairs meet in the liar alone.
//! - It signs two different digests of its online set (equivocation): both honest
//!   servers hold a proof (two statements signed with its identity key) and log it.
//! - It alters the output shares it sends to users: the users' check outvotes it,
//!   names it, and reconstructs the right output.
//!
//! In the first two cases the round aborts (its users are told to retry); in all three,
//! later rounds commit and every message arrives once.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use acs_engine::round::consistency::{EquivocationProof, SignedStatement};
use crowd::{runtime, serial, Crowd};
use std::time::Duration;
use system::{
    assert_a_later_round_commits, committed_rounds, field, logs_of, Deployment, Options, Proc,
};

/// Runs a deployment where server `liar` lies as `lie` says (`ACS_FAULT_LIE`) in a
/// round after the users' first; checks what the honest servers say and that nothing was
/// lost or delivered twice.
fn cheat(liar: usize, lie: &str) {
    let (ex, _entries, crowd, _d) = with_fault(liar, ("ACS_FAULT_LIE", lie));
    let liar_log = ex[liar].log_text();
    let round = liar_log
        .lines()
        .find(|l| l.contains("FAULT: this server will lie"))
        .and_then(|l| field(l, "round"))
        .unwrap_or_else(|| panic!("the liar never armed\n{}", logs_of(&ex)));
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
        logs_of(&ex)
    );
    // The other honest server names a pair: the liar and the accuser. With the
    // accuser's own pair {value_from, check_from}, only the liar is in both.
    let judge = honest.iter().copied().find(|i| *i != accusers[0]).unwrap();
    let verdict = about(judge, "opening complaint from server");
    for l in about(accusers[0], "failed its cross-check")
        .iter()
        .chain(&verdict)
    {
        eprintln!("evidence: {l}");
    }
    assert!(
        verdict.iter().any(|l| {
            field(l, "suspect_a") == Some(liar as u64)
                && field(l, "suspect_b") == Some(accusers[0] as u64)
        }),
        "server {judge} did not name the pair {{{liar}, {}}}\n{}",
        accusers[0],
        logs_of(&ex)
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
            logs_of(&ex)
        );
    }
    assert!(
        !crowd.tally.retried_in(round).is_empty(),
        "no user was told to retry round {round}: {:?}",
        crowd.tally.statuses
    );
    // The servers went on: a later round committed at all three, the liar included.
    assert_a_later_round_commits(&ex, round);
    crowd.assert_exactly_once();
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

/// Starts a deployment whose server `liar` has the fault `env` (armed by a file), runs
/// one round with the users, arms the fault, and runs until everything settled.
/// Returns the exchange processes, the relay processes (keep them until done), the crowd
/// and the deployment.
fn with_fault(liar: usize, env: (&str, &str)) -> (Vec<Proc>, Vec<Proc>, Crowd, Deployment) {
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 800,
        ..Options::default()
    });
    let arm = d.path("arm");
    let arm_s = arm.to_string_lossy().to_string();
    let entries: Vec<Proc> = (0..2).map(|j| d.start_entry(j, "")).collect();
    let ex: Vec<Proc> = (0..3)
        .map(|i| {
            if i == liar {
                d.start_exchange_with(i, "", &[env, ("ACS_FAULT_ARM", &arm_s)])
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
    (ex, entries, crowd, d)
}

/// The round of the first log line of `p` that contains `what`.
fn round_of(p: &Proc, what: &str) -> Option<u64> {
    p.log_text()
        .lines()
        .find(|l| l.contains(what))
        .and_then(|l| field(l, "round"))
}

/// The `name=value` field of a log line, as text.
fn text_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn equivocation(liar: usize) {
    let (ex, _entries, crowd, d) = with_fault(liar, ("ACS_FAULT_EQUIVOCATE", "1"));
    let round = round_of(&ex[liar], "FAULT: signing a different online-set digest")
        .unwrap_or_else(|| panic!("the liar never equivocated\n{}", logs_of(&ex)));
    let liar_key = d.descriptors()[liar].descriptor().identity_key;
    for i in (0..3).filter(|&i| i != liar) {
        let text = ex[i].log_text();
        let line = text
            .lines()
            .find(|l| l.contains("CHEATING (proven)") && field(l, "round") == Some(round))
            .unwrap_or_else(|| panic!("server {i} holds no proof\n{}", logs_of(&ex)));
        assert_eq!(field(line, "culprit"), Some(liar as u64), "{line}");
        eprintln!("evidence, server {i}: {line}");
        // The logged proof verifies against the liar's published identity key, and
        // against no other server's.
        let hex = text_field(line, "proof").expect("proof field");
        let (a, b) = hex.split_once(':').expect("two statements");
        let proof = EquivocationProof {
            first: SignedStatement::from_bytes(&unhex(a)).expect("first statement"),
            second: SignedStatement::from_bytes(&unhex(b)).expect("second statement"),
        };
        assert!(
            proof.verify(&liar_key),
            "server {i}'s proof does not verify"
        );
        let other = d.descriptors()[i].descriptor().identity_key;
        assert!(!proof.verify(&other));
        // No honest server is blamed anywhere.
        for l in text.lines().filter(|l| l.contains("CHEATING")) {
            assert_eq!(field(l, "culprit"), Some(liar as u64), "{l}");
        }
        assert!(
            !committed_rounds(&text).contains(&round),
            "server {i} committed the round in which server {liar} equivocated"
        );
    }
    assert!(
        !crowd.tally.retried_in(round).is_empty(),
        "no user was told to retry round {round}"
    );
    assert_a_later_round_commits(&ex, round);
    crowd.assert_exactly_once();
    assert!(
        crowd.tally.liars.is_empty(),
        "users named a liar: {:?}",
        crowd.tally.liars
    );
}

#[test]
fn a_server_that_equivocates_on_the_online_set_is_proven_so_and_the_round_aborts() {
    let _serial = serial();
    equivocation(1);
}

fn altered_outputs(liar: usize, field_name: &str) {
    let (ex, _entries, crowd, _d) = with_fault(liar, ("ACS_FAULT_OUTPUT", field_name));
    let round = round_of(&ex[liar], "FAULT: altering this server's output shares")
        .unwrap_or_else(|| panic!("the liar never altered outputs\n{}", logs_of(&ex)));
    // The round committed everywhere (the servers' own checks passed: the lie is only in
    // what went to the users), every user of that round named the liar, and nobody else
    // was ever named.
    for (i, p) in ex.iter().enumerate() {
        assert!(
            committed_rounds(&p.log_text()).contains(&round),
            "server {i} did not commit round {round}"
        );
    }
    let named: Vec<&(u64, usize, usize)> = crowd.tally.liars.iter().collect();
    assert!(!named.is_empty(), "no user noticed the altered outputs");
    for &&(r, user, server) in &named {
        assert_eq!(
            server, liar,
            "user {user} named server {server} in round {r}"
        );
        assert_eq!(r, round, "user {user} named a liar in round {r}");
    }
    eprintln!(
        "evidence: in round {round}, {} users named server {liar} as the liar: {:?}",
        named.len(),
        named
    );
    let served = crowd.tally.served_in(round);
    let users_named: std::collections::BTreeSet<usize> = named.iter().map(|n| n.1).collect();
    assert_eq!(
        users_named,
        served.iter().copied().collect(),
        "every user served in round {round} should have named the liar"
    );
    // Nothing wrong was accepted: every message arrived once, intact.
    crowd.assert_exactly_once();
}

#[test]
fn a_server_that_alters_output_shares_is_outvoted_and_named_by_the_users() {
    let _serial = serial();
    altered_outputs(2, "all");
}

#[test]
fn a_server_that_alters_one_output_component_is_outvoted_and_named_by_the_users() {
    let _serial = serial();
    altered_outputs(0, "own");
}
