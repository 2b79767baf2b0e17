//! Crash faults (issue 7): one exchange server is killed with SIGKILL while a round is
//! collecting, computing, prepared (its vote durable, not yet sent) or committed (its
//! outputs not yet sent), then started again on the same database. Real `acs` processes
//! (built with the `fault-injection` feature, which only the crate's own tests turn on),
//! real TLS, real users.
//!
//! Each test shows: the round aborts cleanly (the users heard are told to retry) or, when
//! it had committed, the restarted server hands out that round's outputs again; the
//! restarted server takes part in later rounds that commit; and every message the users
//! sent arrives exactly once.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use crowd::{runtime, serial, Crowd};
use std::time::Duration;
use system::{committed_rounds, field, wait_until, Deployment, Options, Proc};

/// The round of the `FAULT: paused` line in a log.
fn paused_round(log: &str) -> Option<u64> {
    log.lines()
        .find(|l| l.contains("FAULT: paused"))
        .and_then(|l| field(l, "round"))
}

/// Lines of `log` containing `what` that are about `round`.
fn lines_about<'a>(log: &'a str, what: &str, round: u64) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(what) && field(l, "round") == Some(round))
        .collect()
}

struct Outcome {
    /// The round the victim paused in (and was killed in).
    round: u64,
    crowd: Crowd,
    victim: usize,
    exchanges: Vec<Proc>,
    /// The victim's log before the kill.
    victim_log_before: String,
    _entries: Vec<Proc>,
    /// Holds the directory with the databases and logs.
    _deployment: Deployment,
}

impl Outcome {
    fn log(&self, i: usize) -> String {
        self.exchanges[i].log_text()
    }

    fn all_logs(&self) -> String {
        let mut s = String::new();
        for p in &self.exchanges {
            let t = p.log_text();
            let lines: Vec<&str> = t.lines().collect();
            s.push_str(&format!(
                "--- {}\n{}\n",
                p.name,
                lines[lines.len().saturating_sub(60)..].join("\n")
            ));
        }
        s
    }
}

/// Runs a deployment whose server `victim` pauses at `phase` in the first round after
/// the users registered, kills it there, starts it again, and drives the users until
/// every message settled.
fn crash(phase: &str, victim: usize) -> Outcome {
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 800,
        ..Options::default()
    });
    let arm = d.path("arm");
    let entries: Vec<Proc> = (0..2).map(|j| d.start_entry(j, "")).collect();
    let pause = format!("{phase}:armed");
    let arm_s = arm.to_string_lossy().to_string();
    let mut exchanges: Vec<Proc> = (0..3)
        .map(|i| {
            if i == victim {
                d.start_exchange_with(
                    i,
                    "",
                    &[("ACS_FAULT_PAUSE", &pause), ("ACS_FAULT_ARM", &arm_s)],
                )
            } else {
                d.start_exchange(i, "")
            }
        })
        .collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, 6, 3, None));
    // One ordinary round first, so the users are in step with the rounds when the fault
    // is armed and the faulted round carries their messages.
    rt.block_on(crowd.round());
    std::fs::write(&arm, b"").unwrap();
    let task = rt.spawn(async move {
        crowd.until_settled(30, Duration::from_secs(300)).await;
        crowd
    });
    let mut round = None;
    wait_until(Duration::from_secs(60), "the victim to pause", || {
        round = paused_round(&exchanges[victim].log_text());
        round.is_some()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            exchanges
                .iter()
                .map(|p| p.log_text())
                .collect::<Vec<_>>()
                .join("\n---\n")
        )
    });
    let round = round.unwrap();
    // Let the peers run into the stalled round before the crash.
    std::thread::sleep(Duration::from_millis(500));
    exchanges[victim].kill();
    let victim_log_before = exchanges[victim].log_text();
    std::thread::sleep(Duration::from_millis(300));
    exchanges[victim] = d.start_exchange(victim, "-restarted");
    let crowd = rt.block_on(task).unwrap();
    // A few more rounds with everything settled, to see the restarted server commit.
    let last = crowd.tally.rounds.iter().copied().max().unwrap_or(round);
    wait_until(
        Duration::from_secs(60),
        "a later round to commit everywhere",
        || {
            (0..3).all(|i| {
                committed_rounds(&exchanges[i].log_text())
                    .iter()
                    .any(|&r| r > last.max(round))
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Outcome {
        round,
        crowd,
        victim,
        exchanges,
        victim_log_before,
        _entries: entries,
        _deployment: d,
    }
}

/// Checks for a round that cannot have committed: it aborted at both peers, the users
/// heard in it got `retry`, and it never committed anywhere.
fn assert_aborted(o: &Outcome) {
    let r = o.round;
    for i in (0..3).filter(|&i| i != o.victim) {
        let log = o.log(i);
        assert!(
            !lines_about(&log, "round aborted; users told to retry", r).is_empty(),
            "server {i} did not abort round {r}\n{}",
            o.all_logs()
        );
        assert!(
            !committed_rounds(&log).contains(&r),
            "server {i} committed round {r}"
        );
    }
    assert!(!committed_rounds(&o.victim_log_before).contains(&r));
    assert!(
        !o.crowd.tally.retried_in(r).is_empty(),
        "no user was told to retry round {r}: {:?}",
        o.crowd.tally.statuses
    );
}

/// The restarted server took part in rounds after the crash that committed.
fn assert_restarted(o: &Outcome) {
    let log = o.log(o.victim);
    assert!(
        committed_rounds(&log).iter().any(|&r| r > o.round),
        "restarted server committed nothing after round {}\n{}",
        o.round,
        o.all_logs()
    );
    for p in &o.exchanges {
        assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
    }
}

#[test]
fn crash_while_collecting_aborts_the_round_and_loses_nothing() {
    let _serial = serial();
    let o = crash("collect", 1);
    assert_aborted(&o);
    assert_restarted(&o);
    o.crowd.assert_exactly_once();
}

#[test]
fn crash_while_computing_aborts_the_round_and_loses_nothing() {
    let _serial = serial();
    let o = crash("engine", 2);
    assert_aborted(&o);
    assert_restarted(&o);
    o.crowd.assert_exactly_once();
}

/// The coordinator (server 0) dies with its vote durable but unsent: the peers cannot
/// decide alone; when it is back, recovery finds that nobody committed and aborts.
#[test]
fn crash_of_the_coordinator_after_preparing_aborts_by_recovery_and_loses_nothing() {
    let _serial = serial();
    let o = crash("prepared", 0);
    let r = o.round;
    for i in 1..3 {
        let log = o.log(i);
        assert!(
            !lines_about(&log, "round undecided until the peers are back", r).is_empty(),
            "server {i} did not wait for recovery of round {r}\n{}",
            o.all_logs()
        );
        assert!(
            !lines_about(&log, "a round prepared before the failure aborted", r).is_empty(),
            "server {i} did not abort round {r} by recovery\n{}",
            o.all_logs()
        );
    }
    assert!(!lines_about(&o.log(0), "a round prepared before the failure aborted", r).is_empty());
    assert!(!o.crowd.tally.retried_in(r).is_empty());
    assert_restarted(&o);
    o.crowd.assert_exactly_once();
}

/// The round committed everywhere but the victim died before handing out its output
/// shares: the users cannot tell whether their messages went out, so they wait (sending
/// cover) instead of resending; the restarted server hands the round out again.
#[test]
fn crash_after_commit_releases_the_outputs_again_and_delivers_once() {
    let _serial = serial();
    let o = crash("committed", 1);
    let r = o.round;
    for i in (0..3).filter(|&i| i != o.victim) {
        assert!(
            committed_rounds(&o.log(i)).contains(&r),
            "server {i} did not commit round {r}\n{}",
            o.all_logs()
        );
    }
    // The victim stopped after its durable commit (its `round committed` line comes
    // after the release); the release again below comes from that stored commit.
    assert!(lines_about(&o.victim_log_before, "FAULT: paused", r)
        .iter()
        .any(|l| l.contains("phase=\"committed\"") || l.contains("phase=committed")));
    let victim_log = o.log(o.victim);
    let again = lines_about(
        &victim_log,
        "outputs of the last committed round released again",
        r,
    );
    assert!(
        again
            .iter()
            .any(|l| field(l, "outputs").is_some_and(|n| n > 0)),
        "restarted server did not release round {r} again\n{}",
        o.all_logs()
    );
    // The round settled for the users (all three shares, late or not): nobody retried it.
    assert!(o.crowd.tally.retried_in(r).is_empty());
    assert!(!o.crowd.tally.served_in(r).is_empty());
    assert_restarted(&o);
    o.crowd.assert_exactly_once();
}
