//! The entry relay end to end over TLS: batching per round, shuffling, forwarding to the
//! named exchange server, routing outputs back, registration, and per-round rules.

mod common;

use acs_transport::client::{FromRelay, RelayLink};
use acs_transport::wire::{ErrorCode, RegisterRequest, SealedEnvelope, WireError};
use common::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

async fn user(d: &Deployment) -> RelayLink {
    RelayLink::connect(d.relay.user_addr, 0, d.roots.clone(), T)
        .await
        .unwrap()
}

async fn expect_round(link: &mut RelayLink) -> u64 {
    match link.next().await.unwrap() {
        FromRelay::Round(a) => a.round,
        other => panic!("expected a round announcement, got {other:?}"),
    }
}

fn sealed(user: usize, server: u8) -> Vec<u8> {
    format!("user{user}-server{server}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_shuffled_forwarded_and_outputs_routed_back() {
    let mut d = deployment(test_limits()).await;
    const USERS: usize = 24;
    let mut links = Vec::new();
    for _ in 0..USERS {
        links.push(user(&d).await);
    }
    d.announce(1, 700);
    for l in links.iter_mut() {
        assert_eq!(expect_round(l).await, 1);
    }
    // Submit one user at a time, so arrival order is user order.
    for (u, l) in links.iter_mut().enumerate() {
        for s in 0..3u8 {
            l.submit(&SealedEnvelope {
                round: 1,
                server: s,
                sealed: sealed(u, s),
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Each user gets exactly its own three outputs.
    for (u, l) in links.iter_mut().enumerate() {
        let mut got = HashMap::new();
        while got.len() < 3 {
            match tokio::time::timeout(T, l.next()).await.unwrap().unwrap() {
                FromRelay::Output(o) => {
                    assert_eq!(o.round, 1);
                    assert!(got.insert(o.server, o.sealed).is_none());
                }
                other => panic!("user {u}: unexpected {other:?}"),
            }
        }
        for s in 0..3u8 {
            assert_eq!(got[&s], [b"out:".as_slice(), &sealed(u, s)].concat());
        }
    }
    // Each server got exactly the envelopes named for it, slots 0..n, shuffled.
    let mut in_arrival_order = 0;
    for _ in 0..3 {
        let (server, relay, batch) = d.batches.recv().await.unwrap();
        assert_eq!(relay, 0);
        assert_eq!(batch.round, 1);
        assert_eq!(batch.entries.len(), USERS);
        let want: HashSet<Vec<u8>> = (0..USERS).map(|u| sealed(u, server)).collect();
        let got: HashSet<Vec<u8>> = batch.entries.iter().map(|e| e.sealed.clone()).collect();
        assert_eq!(got, want);
        assert!(batch
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.slot as usize == i));
        let order: Vec<Vec<u8>> = batch.entries.iter().map(|e| e.sealed.clone()).collect();
        let arrival: Vec<Vec<u8>> = (0..USERS).map(|u| sealed(u, server)).collect();
        if order == arrival {
            in_arrival_order += 1;
        }
    }
    // Each batch is in arrival order with probability 1/24!.
    assert_eq!(in_arrival_order, 0, "batches were not shuffled");
    assert_eq!(
        d.relay
            .stats
            .outputs
            .load(std::sync::atomic::Ordering::Relaxed),
        3 * USERS as u64
    );
    let _ = d.shutdown.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_envelopes_are_refused_and_duplicates_close_the_connection() {
    let d = deployment(test_limits()).await;
    let mut a = user(&d).await;
    d.announce(5, 2_000);
    assert_eq!(expect_round(&mut a).await, 5);
    // An envelope for another round: refused, connection stays.
    a.submit(&SealedEnvelope {
        round: 4,
        server: 0,
        sealed: vec![1],
    })
    .await
    .unwrap();
    match a.next().await.unwrap() {
        FromRelay::Refused(n) => assert_eq!(n.code, ErrorCode::RoundClosed),
        other => panic!("{other:?}"),
    }
    let env = SealedEnvelope {
        round: 5,
        server: 2,
        sealed: vec![2],
    };
    a.submit(&env).await.unwrap();
    // A second envelope for the same server in the same round: fatal.
    a.submit(&env).await.unwrap();
    match a.next().await {
        Err(WireError::Remote {
            code: ErrorCode::Invalid,
            message,
        }) => {
            assert!(message.contains("second envelope"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(a.next().await.is_err(), "connection must be closed");
    let _ = d.shutdown.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_travels_through_the_relay() {
    let d = deployment(test_limits()).await;
    let mut a = user(&d).await;
    a.register(&RegisterRequest {
        server: 1,
        body: b"kgc request".to_vec(),
    })
    .await
    .unwrap();
    match tokio::time::timeout(T, a.next()).await.unwrap().unwrap() {
        FromRelay::Registered(r) => {
            assert_eq!(r.server, 1);
            assert_eq!(r.body, b"reg:kgc request");
        }
        other => panic!("{other:?}"),
    }
    let _ = d.shutdown.send(true);
}
