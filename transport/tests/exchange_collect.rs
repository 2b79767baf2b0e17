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

/// One exchange server's whole intake path with real kgc: a user registers through the
/// relay, then sends a sealed share that the server opens and answers, sealed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_registers_and_gets_a_sealed_answer_through_the_relay() {
    use acs_kgc::{Direction, Envelope, Kgc, MasterSecret, RegistrationResponse, UserIdentity};
    use acs_transport::db::Db;
    use acs_transport::exchange::intake::Intake;
    use acs_transport::relay_port::PortEvent;
    use acs_transport::wire::{RegisterRequest, RelayRegisterResponse};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::sync::Arc;

    let mut d = deployment_with(test_limits(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("ex1.redb")).unwrap());
    let mut intake = Intake::load(Kgc::new(MasterSecret::from_seed([21; 32])), db.clone()).unwrap();
    let now = acs_transport::exchange::clock::now_unix_ms() / 1000;
    let mut rng = StdRng::seed_from_u64(1);

    let me = UserIdentity::from_seed([7; 32]).unwrap();
    let descriptor = intake.kgc().descriptor([0; 32], now);
    let (pending, request) = me.register(&descriptor, now, &mut rng).unwrap();
    let mut link = RelayLink::connect(d.relay.user_addr, 0, d.roots.clone(), T)
        .await
        .unwrap();
    link.register(&RegisterRequest {
        server: 1,
        body: request.as_bytes().to_vec(),
    })
    .await
    .unwrap();

    let mut events = d.events.drain(..).collect::<Vec<_>>();
    let (relay, req) = loop {
        match events[1].recv().await.unwrap() {
            PortEvent::Register { relay, request } => break (relay, request),
            _ => continue,
        }
    };
    let answer = intake.register(&req.body, now, &mut rng).unwrap();
    d.ports[1]
        .answer_registration(
            relay,
            &RelayRegisterResponse {
                request: req.request,
                body: answer,
            },
        )
        .unwrap();
    let secret = match link.next().await.unwrap() {
        FromRelay::Registered(r) => pending
            .finish(&RegistrationResponse::from_bytes(&r.body).unwrap())
            .unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(db.registered_count().unwrap(), 1);
    let key = secret.agree();

    d.announce(9, 300);
    assert!(matches!(link.next().await.unwrap(), FromRelay::Round(a) if a.round == 9));
    let env = key
        .seal(9, Direction::UserToServer, b"my share", &mut rng)
        .unwrap();
    link.submit(&SealedEnvelope {
        round: 9,
        server: 1,
        sealed: env.into_bytes(),
    })
    .await
    .unwrap();
    let until = tokio::time::Instant::now() + T;
    let got = collect_batches(&mut events[1], 9, &[0], until, |_, _| {}).await;
    let opened = intake.open_round(9, got.envelopes);
    assert!(opened.rejected.is_empty());
    assert_eq!(opened.online(), vec![me.pseudonym().get()]);
    let s = &opened.shares[0];
    assert_eq!(s.share.as_slice(), b"my share");
    let out = intake
        .seal_output(9, s.user, b"your output", s.relay, s.slot, &mut rng)
        .unwrap();
    assert!(send_outputs(&d.ports[1], 9, [out]).is_empty());
    match tokio::time::timeout(T, link.next()).await.unwrap().unwrap() {
        FromRelay::Output(o) => {
            let env = Envelope::from_bytes(&o.sealed).unwrap();
            assert_eq!(
                key.open(9, Direction::ServerToUser, &env).unwrap(),
                b"your output"
            );
        }
        other => panic!("{other:?}"),
    }
    let _ = d.shutdown.send(true);
}
