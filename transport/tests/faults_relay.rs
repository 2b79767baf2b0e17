//! A tampering entry relay (issue 7): relay 1 is a real `acs entry` process (built with
//! the `fault-injection` feature) that, once, drops, duplicates, reorders or flips a bit
//! in the envelopes of its batch for one exchange server; relay 0 is honest. Users send
//! each share through a randomly chosen relay, as always.
//!
//! What must hold: the users whose envelope was dropped or damaged get `retry` in that
//! round and are served in a later one; everyone else is served in that round; every
//! message arrives exactly once; and where the damage is visible to a server (a bit flip
//! fails to open, a duplicate is a replay) that server's log names relay 1. A dropped
//! envelope cannot be pinned on a relay by any server (it looks like a user that sent two
//! shares); the servers that heard the user log the users left out per relay.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use crowd::{runtime, serial, Crowd};
use std::time::Duration;
use system::{field, rejections, Deployment, Options, Proc};

const USERS: usize = 6;

struct Run {
    crowd: Crowd,
    /// The round relay 1 tampered in.
    round: u64,
    exchanges: Vec<Proc>,
    entries: Vec<Proc>,
    _deployment: Deployment,
}

impl Run {
    fn logs(&self) -> String {
        system::logs_of(self.exchanges.iter().chain(&self.entries))
    }

    /// `(rejected, reason)` lines of server `server`'s log for the tampered round that
    /// name relay `relay`.
    fn rejected_at(&self, server: usize, relay: u64) -> Vec<(u64, Option<String>)> {
        let log = self.exchanges[server].log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| field(l, "relay") == Some(relay))
            .collect();
        rejections(&lines.join("\n"), self.round)
    }

    /// Users served (or told to retry) in the tampered round, checked against `affected`:
    /// exactly `affected` retried, all the others served; then every message once.
    fn assert_served(&self, affected: usize) {
        let retried = self.crowd.tally.retried_in(self.round);
        let served = self.crowd.tally.served_in(self.round);
        assert_eq!(
            retried.len(),
            affected,
            "users told to retry in round {}: {retried:?}\n{:?}\n{}",
            self.round,
            self.crowd.tally.statuses,
            self.logs()
        );
        // Under load, users that finished registering last may take the next round: the
        // check is over the users that took part in this one.
        let took_part = (0..USERS)
            .filter(|&u| {
                self.crowd.tally.statuses[u]
                    .iter()
                    .any(|&(r, _)| r == self.round)
            })
            .count();
        assert!(
            took_part > affected,
            "nobody else took part in round {}",
            self.round
        );
        assert_eq!(
            served.len(),
            took_part - affected,
            "users served in round {}: {served:?}\n{:?}",
            self.round,
            self.crowd.tally.statuses
        );
        // The retried users were served later.
        for &u in &retried {
            assert!(
                self.crowd.tally.statuses[u]
                    .iter()
                    .any(|&(r, s)| r > self.round
                        && matches!(
                            s,
                            Some(acs_engine::round::Status::Delivered)
                                | Some(acs_engine::round::Status::Stored)
                                | Some(acs_engine::round::Status::Cover)
                        )),
                "user {u} was not served after round {}",
                self.round
            );
        }
        self.crowd.assert_exactly_once();
        for p in self.exchanges.iter().chain(&self.entries) {
            assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
        }
    }
}

/// A deployment whose relay 1 tampers as `tamper` (`ACS_FAULT_TAMPER`) says, run until
/// every message settled.
fn tampered(tamper: &str) -> Run {
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 2000,
        ..Options::default()
    });
    let entries = vec![
        d.start_entry(0, ""),
        d.start_entry_with(1, "", &[("ACS_FAULT_TAMPER", tamper)]),
    ];
    let exchanges: Vec<Proc> = (0..3).map(|i| d.start_exchange(i, "")).collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, USERS, 3, None));
    rt.block_on(crowd.until_settled(30, Duration::from_secs(300)));
    let round = entries[1]
        .log_text()
        .lines()
        .find(|l| l.contains("TAMPERING with the batch"))
        .and_then(|l| field(l, "round"))
        .unwrap_or_else(|| panic!("relay 1 never tampered\n{}", entries[1].log_text()));
    Run {
        crowd,
        round,
        exchanges,
        entries,
        _deployment: d,
    }
}

#[test]
fn a_flipped_bit_is_rejected_naming_the_relay_and_its_user_retries() {
    let _serial = serial();
    let run = tampered("flip:1:2");
    let named = run.rejected_at(2, 1);
    assert!(
        named
            .iter()
            .any(|(n, why)| *n == 1 && why.as_deref() == Some("OpenFailed")),
        "server 2 did not name relay 1 for the damaged envelope: {named:?}\n{}",
        run.logs()
    );
    run.assert_served(1);
}

#[test]
fn a_duplicated_envelope_is_rejected_as_a_replay_naming_the_relay_and_nobody_is_hurt() {
    let _serial = serial();
    let run = tampered("dup:1:0");
    let named = run.rejected_at(0, 1);
    assert!(
        named
            .iter()
            .any(|(n, why)| *n == 1 && why.as_deref() == Some("Replay")),
        "server 0 did not name relay 1 for the replayed envelope: {named:?}\n{}",
        run.logs()
    );
    // The original went through: its user was served like everyone else.
    run.assert_served(0);
}

#[test]
fn a_dropped_envelope_leaves_its_user_to_retry_and_everyone_else_is_served() {
    let _serial = serial();
    let run = tampered("drop:1:1");
    // The servers that heard the user say so, per relay their share came through.
    let left_out: u64 = [0usize, 2]
        .iter()
        .flat_map(|&i| {
            run.exchanges[i]
                .log_text()
                .lines()
                .filter(|l| {
                    l.contains("left out of the round") && field(l, "round") == Some(run.round)
                })
                .filter_map(|l| field(l, "users"))
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(
        left_out,
        2,
        "servers 0 and 2 should each report the user\n{}",
        run.logs()
    );
    run.assert_served(1);
}

#[test]
fn reordered_envelopes_change_nothing() {
    let _serial = serial();
    let run = tampered("reorder:0:0");
    run.assert_served(0);
}
