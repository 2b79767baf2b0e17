//! A client that survives its relays (issue 15): users start while one of two relays is
//! down, send only cover while fewer relays are up than they need for distinct shares
//! (their messages wait), take the relay up when it comes, and reconnect on their own
//! when a relay is killed and restarted mid-run. Every message arrives exactly once.

#[path = "common/system.rs"]
mod system;

#[path = "common/crowd.rs"]
mod crowd;

use crowd::{runtime, serial, Crowd};
use std::time::Duration;
use system::{Deployment, Options, Proc};

#[test]
fn users_start_with_a_relay_down_and_reconnect_after_a_relay_restarts() {
    let _serial = serial();
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 600,
        ..Options::default()
    });
    // Relay 1 is down at first.
    let mut relay0: Proc = d.start_entry(0, "");
    let _ex: Vec<Proc> = (0..3).map(|i| d.start_exchange(i, "")).collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, 4, 2, None));
    // With one of two relays up, a share per relay is impossible: cover only.
    rt.block_on(crowd.round());
    assert!(
        crowd.tally.received.is_empty(),
        "a message went out while only one of two relays was up"
    );
    assert_eq!(crowd.users.iter().map(|u| u.outbox.len()).sum::<usize>(), 8);

    // Relay 1 comes up: the users' background reconnects take it up.
    let _relay1 = d.start_entry(1, "");
    // Relay 0 is killed and restarted mid-run.
    rt.block_on(async {
        crowd.round().await;
        crowd.round().await;
    });
    relay0.kill();
    rt.block_on(crowd.round());
    relay0 = d.start_entry(0, "-restarted");
    rt.block_on(crowd.until_settled(80, Duration::from_secs(400)));
    crowd.assert_exactly_once();
    drop(relay0);
}

#[test]
fn users_wait_while_every_relay_is_down_and_go_on_when_they_return() {
    let _serial = serial();
    let d = Deployment::write(Options {
        entries: 2,
        submit_window_ms: 600,
        ..Options::default()
    });
    let mut relays: Vec<Proc> = (0..2).map(|j| d.start_entry(j, "")).collect();
    let _ex: Vec<Proc> = (0..3).map(|i| d.start_exchange(i, "")).collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, 4, 2, None));
    rt.block_on(crowd.round());
    // Every relay goes away; they come back after a few seconds, while the users are
    // already waiting for the next round (no error, no exit: they reconnect).
    for r in &mut relays {
        r.kill();
    }
    std::thread::scope(|s| {
        let back = s.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            (0..2)
                .map(|j| d.start_entry(j, "-restarted"))
                .collect::<Vec<Proc>>()
        });
        rt.block_on(crowd.round());
        relays = back.join().expect("relays restarted");
    });
    rt.block_on(crowd.until_settled(80, Duration::from_secs(400)));
    crowd.assert_exactly_once();
}

/// A registration the servers refuse is answered at once, with its reason: a key whose
/// address (the low 32 bits of its pseudonym) another user holds gets `AddressTaken`
/// from every server instead of waiting for its timeout, and the holder is unaffected.
#[test]
fn a_key_whose_address_is_taken_is_refused_at_once_by_name() {
    use acs_transport::user::{User, UserError};
    use acs_transport::wire::Refusal;
    let _serial = serial();
    let d = Deployment::write(Options::default());
    let _relay: Proc = d.start_entry(0, "");
    let _ex: Vec<Proc> = (0..3).map(|i| d.start_exchange(i, "")).collect();
    // Two keys whose pseudonyms share an address (a birthday search; `acs-kgc`'s tests).
    let twin = |i: u32| {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&i.to_le_bytes());
        s[8] = 0xad;
        acs_kgc::UserIdentity::from_seed(s).unwrap()
    };
    let rt = runtime();
    let (relays, descriptors) = (d.entry_addrs(), d.descriptors());
    rt.block_on(async {
        let register = |identity| {
            User::register(
                identity,
                d.opts.round,
                &relays,
                d.roots(),
                &descriptors,
                Duration::from_secs(60),
            )
        };
        // The processes may still be starting: retry the first for a while.
        let started = std::time::Instant::now();
        let first = loop {
            match register(twin(40_541)).await {
                Ok(u) => break u,
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the first twin did not register: {e}"),
            }
        };
        let asked = std::time::Instant::now();
        let err = match register(twin(74_045)).await {
            Ok(_) => panic!("a taken address was registered"),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                UserError::Refused {
                    why: Refusal::AddressTaken,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("make a new identity key"), "{err}");
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "refused only after a timeout"
        );
        drop(first);
    });
}

#[test]
fn a_message_to_an_unregistered_pseudonym_with_an_online_users_address_is_reported_once() {
    use acs_engine::round::Status;
    use acs_transport::user::OutboxItem;
    let _serial = serial();
    let d = Deployment::write(Options::default());
    let _relay: Proc = d.start_entry(0, "");
    let _ex: Vec<Proc> = (0..3).map(|i| d.start_exchange(i, "")).collect();
    let rt = runtime();
    let mut crowd = rt.block_on(Crowd::register(&d, 3, 0, None));
    // User 0 writes to a pseudonym nobody registered whose address (low 32 bits) is
    // user 1's; user 1 is online every round, so the item meets it at once.
    let stray = crowd.users[1].pseudonym().get() ^ (0x5a5a_u64 << 32);
    crowd.users[0].outbox.push_back(OutboxItem {
        to: stray,
        payload: b"to nobody".to_vec(),
    });
    rt.block_on(async {
        for _ in 0..4 {
            crowd.round().await;
        }
    });
    let mine = &crowd.tally.statuses[0];
    let at = mine
        .iter()
        .position(|&(_, s)| s == Some(Status::Misaddressed))
        .unwrap_or_else(|| panic!("never reported misaddressed: {mine:?}"));
    // Reported once, then never sent again: only cover follows.
    assert!(
        mine[at + 1..]
            .iter()
            .all(|&(_, s)| s == Some(Status::Cover)),
        "{mine:?}"
    );
    assert!(crowd.users[0].outbox.is_empty());
    assert!(
        crowd.tally.received.is_empty(),
        "the stray item was delivered"
    );
}
