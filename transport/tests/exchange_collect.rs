//! The exchange server's side of a round against a real relay: collect the batches for
//! a round, then return outputs by (relay, slot).

mod common;

use acs_transport::client::{FromRelay, RelayLink};
use acs_transport::exchange::collect::{collect_batches, send_outputs, Inbound};
use acs_transport::wire::SealedEnvelope;
use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_envelopes_are_answered_through_the_relay() {
    let mut d = deployment_with(test_limits(), false).await;
    let mut users = Vec::new();
    for _ in 0..5 {
        users.push(
            RelayLink::connect(d.relay.user_addr, 0, d.roots.clone(), T)
                .await
                .unwrap(),
        );
    }
    d.announce(3, 300);
    for (u, link) in users.iter_mut().enumerate() {
        assert!(matches!(link.next().await.unwrap(), FromRelay::Round(a) if a.round == 3));
        link.submit(&SealedEnvelope {
            round: 3,
            server: 1,
            sealed: vec![u as u8; 10],
        })
        .await
        .unwrap();
    }
    let until = tokio::time::Instant::now() + T;
    let mut events = d.events.drain(..).collect::<Vec<_>>();
    let mut registrations = 0;
    let got = collect_batches(&mut events[1], 3, &[0], until, |_, _| registrations += 1).await;
    assert_eq!(got.round, 3);
    assert!(got.missing.is_empty() && got.ignored.is_empty());
    assert_eq!(got.envelopes.len(), 5);
    assert_eq!(registrations, 0);
    // Server 0 got the relay's (empty) batch too: the relay always reports in.
    let got0 = collect_batches(&mut events[0], 3, &[0], until, |_, _| {}).await;
    assert!(got0.envelopes.is_empty() && got0.missing.is_empty());
    // A relay that is not configured never arrives: listed as missing at the deadline.
    let soon = tokio::time::Instant::now() + Duration::from_millis(100);
    let got2 = collect_batches(&mut events[2], 3, &[0, 7], soon, |_, _| {}).await;
    assert_eq!(got2.missing, vec![7]);

    let outputs = got.envelopes.iter().map(|e| Inbound {
        relay: e.relay,
        slot: e.slot,
        sealed: e.sealed.iter().map(|b| b + 100).collect(),
    });
    assert!(send_outputs(&d.ports[1], 3, outputs).is_empty());
    for (u, link) in users.iter_mut().enumerate() {
        match tokio::time::timeout(T, link.next()).await.unwrap().unwrap() {
            FromRelay::Output(o) => {
                assert_eq!((o.round, o.server), (3, 1));
                assert_eq!(o.sealed, vec![u as u8 + 100; 10]);
            }
            other => panic!("{other:?}"),
        }
    }
    let _ = d.shutdown.send(true);
}
