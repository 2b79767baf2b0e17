//! Master-secret rotation by epoch (issue 14 item 4, `docs/operators.md` §9): one
//! exchange server moves to a new master secret while the deployment runs; the other two
//! keep theirs. Real `acs` processes, real TLS, real users.
//!
//! The workload keeps messages in the store across the rotation (five users write to one
//! user, who takes one a round), and sends more after it: a stored record is addressed
//! by the receiver's pseudonym, which comes from the user's own key and so must not
//! change with the epoch; a lost or repeated message shows up in
//! `Crowd::assert_exactly_once`.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use acs_engine::round::{payload_to_words, Status};
use acs_kgc::SignedDescriptor;
use acs_transport::config::EpochFile;
use acs_transport::user::OutboxItem;
use crowd::{runtime, serial, Crowd};
use std::process::Command;
use std::time::{Duration, Instant};
use system::{committed_rounds, wait_until, Deployment, Options, Proc, ACS};

/// The server that rotates.
const ROTATING: usize = 1;
/// Users 0..WORKERS carry the workload; user WORKERS is never told of the new epoch.
const WORKERS: usize = 6;

/// `acs check --config` (success, what it printed).
fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(ACS)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Restarts server `i` (SIGTERM, as `systemctl restart`) and waits until all three
/// commit a round after the last one committed before.
fn restart(d: &Deployment, exchanges: &mut [Proc], i: usize, suffix: &str) {
    let before = exchanges
        .iter()
        .filter_map(|p| committed_rounds(&p.log_text()).into_iter().max())
        .max()
        .unwrap_or(0);
    exchanges[i].term();
    assert!(
        exchanges[i].wait_exit(Duration::from_secs(20)).is_some(),
        "server {i} did not stop on SIGTERM"
    );
    exchanges[i] = d.start_exchange(i, suffix);
    wait_until(Duration::from_secs(90), "rounds after the restart", || {
        exchanges
            .iter()
            .all(|p| committed_rounds(&p.log_text()).iter().any(|&r| r > before))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", system::logs_of(exchanges.iter())));
}

/// One server rotates mid-run: it serves epochs 0 and 1 side by side (taken up on
/// SIGHUP, without a restart), the users move to
/// epoch 1 by themselves when offered its descriptor (the client re-reads its descriptor
/// files every round), then the server retires epoch 0 (restarted). Every message arrives exactly
/// once; a user left on the retired epoch is refused with a clear reason (and retried,
/// no panic), and is served again once it moves.
#[test]
fn one_server_rotates_mid_run_and_every_message_arrives_exactly_once() {
    let _serial = serial();
    let t0 = Instant::now();
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 600,
        ..Options::default()
    });
    let _entries: Vec<Proc> = (0..2).map(|j| d.start_entry(j, "")).collect();
    let mut exchanges: Vec<Proc> = (0..3).map(|i| d.start_exchange(i, "")).collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, WORKERS + 1, 0, None));
    let ids: Vec<u64> = crowd.users.iter().map(|u| u.pseudonym().get()).collect();
    let payload_words = d.opts.round.payload_words;
    let queue = |crowd: &mut Crowd, from: usize, to: usize, text: &str| {
        let payload = text.as_bytes().to_vec();
        let words = payload_to_words(&payload, payload_words).unwrap();
        crowd.sent.push((ids[from], ids[to], words));
        crowd.users[from].outbox.push_back(OutboxItem {
            to: ids[to],
            payload,
        });
    };
    for i in 0..WORKERS {
        queue(&mut crowd, i, if i == 0 { 1 } else { 0 }, &format!("m{i}"));
    }
    rt.block_on(crowd.round());
    assert!(
        crowd.tally.received.len() + 2 < crowd.sent.len(),
        "messages should wait in the store across the rotation"
    );

    // The operator makes epoch 1 of server 1 and serves it beside epoch 0.
    let secret = d.path(&format!("master-{ROTATING}.key.epoch1"));
    let out = Command::new(ACS)
        .args(["master", "--epoch", "1", "--identity"])
        .arg(d.path(&format!("master-{ROTATING}.key")))
        .arg("--out")
        .arg(&secret)
        .arg("--cert")
        .arg(d.path(&format!("certs/exchange-{ROTATING}.pem")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut file = d.exchange_file(ROTATING);
    file.epochs = vec![
        EpochFile {
            epoch: 0,
            secret: None,
        },
        EpochFile {
            epoch: 1,
            secret: Some(format!("master-{ROTATING}.key.epoch1").into()),
        },
    ];
    d.write_exchange(ROTATING, &file);
    let (ok, text) = check(&d.path(&format!("ex{ROTATING}.toml")));
    assert!(
        ok && text.contains("serves master-secret epochs [0, 1]")
            && text.contains("descriptor")
            && text.contains("valid"),
        "{text}"
    );
    // A secret listed under another epoch number is named, by the check and at start.
    let mut wrong = file.clone();
    wrong.epochs[1].epoch = 2;
    let wrong_path = d.path("ex-wrong.toml");
    std::fs::write(&wrong_path, wrong.to_toml().unwrap()).unwrap();
    let (ok, text) = check(&wrong_path);
    assert!(
        !ok && text.contains("holds epoch 1, listed as epoch 2"),
        "{text}"
    );
    // Taken up on SIGHUP, between two rounds: the server does not stop.
    exchanges[ROTATING].hup();
    wait_until(Duration::from_secs(60), "epochs reloaded", || {
        exchanges[ROTATING].log_text().lines().any(|l| {
            l.contains("master-secret epochs served (reloaded)") && l.contains("epochs=[0, 1]")
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", system::logs_of(exchanges.iter())));
    assert!(exchanges[ROTATING].running());

    // More messages, sent while the users move.
    for i in 0..WORKERS {
        queue(&mut crowd, i, (i + 1) % WORKERS, &format!("n{i}"));
    }
    let bytes = std::fs::read(d.path(&format!("master-{ROTATING}.key.epoch1.descriptor"))).unwrap();
    let published = SignedDescriptor::from_bytes(&bytes).unwrap();
    assert_eq!(published.descriptor().epoch, 1);
    let started = Instant::now();
    for u in &mut crowd.users[..WORKERS] {
        assert!(rt
            .block_on(u.offer_descriptor(ROTATING, &published))
            .unwrap());
        // Offered again while the registration is in flight: nothing more is sent.
        assert!(!rt
            .block_on(u.offer_descriptor(ROTATING, &published))
            .unwrap());
    }
    let moved = |crowd: &Crowd| {
        crowd.users[..WORKERS]
            .iter()
            .all(|u| u.epochs() == vec![0, 1, 0])
    };
    for _ in 0..20 {
        if moved(&crowd) {
            break;
        }
        rt.block_on(crowd.round());
    }
    assert!(
        moved(&crowd),
        "users did not move: {:?}",
        crowd.users.iter().map(|u| u.epochs()).collect::<Vec<_>>()
    );
    eprintln!(
        "all {WORKERS} users moved to epoch 1 in {:?}",
        started.elapsed()
    );
    let laggard = WORKERS;
    assert_eq!(crowd.users[laggard].epochs(), vec![0, 0, 0]);
    rt.block_on(crowd.round());

    // The operator retires epoch 0 at server 1.
    file.epochs.remove(0);
    d.write_exchange(ROTATING, &file);
    restart(&d, &mut exchanges, ROTATING, "-retired");
    let log = exchanges[ROTATING].log_text();
    let line = log
        .lines()
        .find(|l| l.contains("master-secret epoch retired"))
        .unwrap_or_else(|| panic!("no retirement line\n{log}"));
    assert_eq!(system::field(line, "epoch"), Some(0), "{line}");
    assert_eq!(
        system::field(line, "registrations"),
        Some(WORKERS as u64 + 1),
        "{line}"
    );
    let retired_at = crowd.tally.rounds.iter().copied().max().unwrap_or(0);

    // And more messages after the retirement, so rounds run under epoch 1 alone.
    for i in 0..WORKERS {
        queue(&mut crowd, i, (i + 2) % WORKERS, &format!("p{i}"));
    }
    rt.block_on(crowd.until_settled(30, Duration::from_secs(180)));
    crowd.assert_exactly_once();

    // The laggard's envelopes to server 1 are refused by name; it is told to retry.
    let log = exchanges[ROTATING].log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("envelopes rejected") && l.contains("reason=RetiredEpoch")),
        "{}",
        system::logs_of(exchanges.iter())
    );
    let after: Vec<(u64, Option<Status>)> = crowd.tally.statuses[laggard]
        .iter()
        .copied()
        .filter(|&(r, _)| r > retired_at)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|&(_, s)| s == Some(Status::Retry)),
        "{after:?}"
    );
    // Told of the new epoch, it moves and is served again.
    assert!(rt
        .block_on(crowd.users[laggard].offer_descriptor(ROTATING, &published))
        .unwrap());
    let served_again = |crowd: &Crowd| {
        crowd.tally.statuses[laggard]
            .iter()
            .any(|&(r, s)| r > retired_at && s == Some(Status::Cover))
    };
    for _ in 0..10 {
        if served_again(&crowd) {
            break;
        }
        rt.block_on(crowd.round());
    }
    assert!(served_again(&crowd), "{:?}", crowd.tally.statuses[laggard]);
    assert_eq!(crowd.users[laggard].epochs(), vec![0, 1, 0]);
    for p in &exchanges {
        assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
    }
    for l in exchanges[ROTATING]
        .log_text()
        .lines()
        .filter(|l| l.contains("epoch") || l.contains("RetiredEpoch"))
    {
        eprintln!("{}: {l}", exchanges[ROTATING].name);
    }
    eprintln!("rotation test: {:?}", t0.elapsed());
}
