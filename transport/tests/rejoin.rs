//! Rejoin from peers (issue 15 item 3, issue 14's old backup): an exchange server whose
//! database is lost, or replaced by an older copy, takes the committed store components,
//! round numbers and registrations back from its two peers and resumes. Real `acs`
//! processes, real TLS, real users.
//!
//! The workload puts messages in the store before the fault and has them delivered after
//! it: five users write to one user, who takes one a round, so four wait in the store.
//! A rejoined server with a wrong or stale store would lose them or deliver them twice;
//! the tests check every message arrives exactly once.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use acs_engine::round::payload_to_words;
use acs_transport::user::OutboxItem;
use crowd::{runtime, serial, Crowd};
use std::time::{Duration, Instant};
use system::{committed_rounds, wait_until, Deployment, Options, Proc};

struct Run {
    d: Deployment,
    exchanges: Vec<Proc>,
    _entries: Vec<Proc>,
    rt: tokio::runtime::Runtime,
    crowd: Crowd,
}

impl Run {
    fn logs(&self) -> String {
        system::logs_of(&self.exchanges)
    }

    /// Kills server `i` (SIGKILL: as a crash or a pulled plug).
    fn kill(&mut self, i: usize) {
        self.exchanges[i].kill();
        std::thread::sleep(Duration::from_millis(300));
    }

    fn db(&self, i: usize) -> std::path::PathBuf {
        self.d.path(&format!("ex{i}.redb"))
    }

    /// Starts server `i` again and waits until it and its peers commit a round after
    /// `after` (the peers' last committed round before it came back).
    fn restart(&mut self, i: usize, suffix: &str) {
        let after = (0..3)
            .filter(|&p| p != i)
            .filter_map(|p| {
                committed_rounds(&self.exchanges[p].log_text())
                    .into_iter()
                    .max()
            })
            .max()
            .unwrap_or(0);
        self.exchanges[i] = self.d.start_exchange(i, suffix);
        let logs = || self.logs();
        wait_until(
            Duration::from_secs(60),
            "rounds to commit after the restart",
            || {
                (0..3).all(|p| {
                    committed_rounds(&self.exchanges[p].log_text())
                        .iter()
                        .any(|&r| r > after)
                })
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    }

    /// Crowd rounds until every message settled.
    fn settle(&mut self) {
        let crowd = &mut self.crowd;
        self.rt
            .block_on(crowd.until_settled(30, Duration::from_secs(120)));
    }

    fn assert_rejoined(&self, victim: usize, expect_added_registrations: bool) {
        let log = self.exchanges[victim].log_text();
        assert!(
            log.contains("rejoining from the peers"),
            "server {victim} did not see it was behind\n{}",
            self.logs()
        );
        let line = log
            .lines()
            .find(|l| l.contains("rejoined: store components"))
            .unwrap_or_else(|| panic!("server {victim} did not rejoin\n{}", self.logs()));
        let added = system::field(line, "registrations_added").unwrap();
        assert_eq!(added > 0, expect_added_registrations, "{line}");
        for p in (0..3).filter(|&p| p != victim) {
            assert!(
                self.exchanges[p].log_text().contains(&format!(
                    "server {victim} is behind; sent it the store component"
                )),
                "server {p} did not send its component\n{}",
                self.logs()
            );
        }
        for p in &self.exchanges {
            assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
            // The two holders of every component committed to the same bytes.
            assert!(
                !p.log_text()
                    .contains("committed to a different store component"),
                "{}",
                self.logs()
            );
            for l in p
                .log_text()
                .lines()
                .filter(|l| l.contains("rejoin") || l.contains("behind"))
            {
                eprintln!("{}: {l}", p.name);
            }
        }
    }
}

/// A deployment and six users; users 1..5 each queue one message to user 0 and user 0
/// one to user 1, and one round runs: user 0 gets one message, four wait in the store.
fn start() -> Run {
    start_with(None)
}

/// [`start`], with server `liar` (if any) handing the first peer it helps rejoin a wrong
/// store component (`ACS_FAULT_REJOIN_LIE`).
fn start_with(liar: Option<usize>) -> Run {
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 600,
        ..Options::default()
    });
    let entries: Vec<Proc> = (0..2).map(|j| d.start_entry(j, "")).collect();
    let exchanges: Vec<Proc> = (0..3)
        .map(|i| {
            if Some(i) == liar {
                d.start_exchange_with(i, "", &[("ACS_FAULT_REJOIN_LIE", "1")])
            } else {
                d.start_exchange(i, "")
            }
        })
        .collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, 6, 0, None));
    let ids: Vec<u64> = crowd.users.iter().map(|u| u.pseudonym().get()).collect();
    for (i, u) in crowd.users.iter_mut().enumerate() {
        let to = if i == 0 { ids[1] } else { ids[0] };
        let payload = format!("m{i}").into_bytes();
        let words = payload_to_words(&payload, d.opts.round.payload_words).unwrap();
        crowd.sent.push((ids[i], to, words));
        u.outbox.push_back(OutboxItem { to, payload });
    }
    rt.block_on(crowd.round());
    Run {
        d,
        exchanges,
        _entries: entries,
        rt,
        crowd,
    }
}

/// Server 1's database is deleted while it runs (it is killed, the file removed, as
/// after a lost disk); restarted on an empty database, it rejoins from servers 0 and 2
/// (registrations included: it has none) and the stored messages arrive exactly once.
#[test]
fn a_server_whose_database_was_deleted_rejoins_and_nothing_is_lost_or_repeated() {
    let _serial = serial();
    let t0 = Instant::now();
    let mut run = start();
    assert!(
        run.crowd.tally.received.len() < run.crowd.sent.len(),
        "nothing waits in the store"
    );
    let victim = 1;
    run.kill(victim);
    std::fs::remove_file(run.db(victim)).unwrap();
    run.restart(victim, "-rejoined");
    run.assert_rejoined(victim, true);
    assert!(run.exchanges[victim]
        .log_text()
        .contains("both store components match the commitments"));
    run.settle();
    run.crowd.assert_exactly_once();
    eprintln!("deleted database: {:?}", t0.elapsed());
}

/// Server 0 (the coordinator) is stopped, its database copied (a backup), and it runs
/// again while stored messages are delivered; then it is stopped and the old copy put
/// back. It rejoins (no round number is announced twice: it takes the peers' last
/// round) and no stored message arrives twice.
#[test]
fn a_server_restored_from_an_old_backup_rejoins_and_nothing_arrives_twice() {
    let _serial = serial();
    let t0 = Instant::now();
    let mut run = start();
    let victim = 0;
    run.kill(victim);
    let backup = run.d.path("ex0.redb.backup");
    std::fs::copy(run.db(victim), &backup).unwrap();
    run.restart(victim, "-after-backup");
    // Rounds that deliver stored messages: the store moves on from the backup's.
    let before = run.crowd.tally.received.len();
    for _ in 0..2 {
        let crowd = &mut run.crowd;
        run.rt.block_on(crowd.round());
    }
    assert!(
        run.crowd.tally.received.len() > before,
        "no stored message was delivered between the backup and the restore"
    );
    run.kill(victim);
    std::fs::copy(&backup, run.db(victim)).unwrap();
    run.restart(victim, "-restored");
    run.assert_rejoined(victim, false);
    assert!(run.exchanges[victim]
        .log_text()
        .contains("both store components match the commitments"));
    run.settle();
    run.crowd.assert_exactly_once();
    eprintln!("restored backup: {:?}", t0.elapsed());
}

/// Server 2's database is deleted, and server 1 hands it a store component with one bit
/// flipped. Server 2 checks it against the commitment it made itself when that store
/// was written, as server 0 kept it: the check fails, it takes nothing, names both
/// peers, and tries again; the second time (server 1 lies once) it rejoins, and every
/// message still arrives exactly once.
#[test]
fn a_component_a_peer_altered_is_refused_and_the_rejoin_succeeds_from_honest_peers() {
    let _serial = serial();
    let t0 = Instant::now();
    let mut run = start_with(Some(1));
    let victim = 2;
    run.kill(victim);
    std::fs::remove_file(run.db(victim)).unwrap();
    run.restart(victim, "-rejoined");
    let log = run.exchanges[victim].log_text();
    let refused = log
        .lines()
        .find(|l| l.contains("does not match the commitment this server made"))
        .unwrap_or_else(|| panic!("the altered component was not refused\n{}", run.logs()));
    assert!(
        refused.contains("server 1's component x_2") && refused.contains("as server 0 kept it"),
        "{refused}"
    );
    assert!(run.exchanges[1]
        .log_text()
        .contains("FAULT: handing a rejoining peer a wrong store component"));
    let refused_at = log.find(refused).unwrap();
    let rejoined_at = log
        .find("rejoined: store components")
        .expect("rejoined later");
    assert!(rejoined_at > refused_at);
    assert!(log.contains("both store components match the commitments"));
    run.assert_rejoined(victim, true);
    run.settle();
    run.crowd.assert_exactly_once();
    eprintln!("altered component: {:?}", t0.elapsed());
}
