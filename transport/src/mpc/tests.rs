use super::*;
use crate::certs::{self, DevPki};
use crate::wire::{ErrorCode, OnlineSetHash, RoundStatus};
use tokio::io::AsyncWriteExt;

fn pki() -> DevPki {
    certs::generate(&certs::deployment_roles(3, 1)).unwrap()
}

fn identity(pki: &DevPki, role: Role) -> Identity {
    let c = pki.leaf(role).unwrap();
    Identity::from_pem(&c.cert_pem, &c.key_pem).unwrap()
}

fn config(pki: &DevPki, party: usize, next_addr: SocketAddr) -> MeshConfig {
    let identity = identity(pki, Role::Exchange(party as u8));
    MeshConfig {
        party: PartyId::new(party).unwrap(),
        deployment: "test".into(),
        next_addr,
        descriptor: crate::testkit::descriptor(&identity),
        identity,
        roots: tls::roots_from_pem(&pki.ca.cert_pem).unwrap(),
        establish_timeout: Duration::from_secs(10),
        limits: Limits::default(),
        status: RoundStatus {
            committed: Some(party as u64),
            prepared: None,
        },
        config_digest: [0; 32],
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn msg(from: usize, to: Peer, seq: u32) -> Vec<u8> {
    let mut m = vec![from as u8, to as u8];
    m.extend_from_slice(&seq.to_le_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parties_exchange_ordered_messages_over_tls() {
    let pki = pki();
    let (l0, a0) = bind().await;
    let (l1, a1) = bind().await;
    let (l2, a2) = bind().await;
    let (c0, c1, c2) = (
        config(&pki, 0, a1),
        config(&pki, 1, a2),
        config(&pki, 2, a0),
    );
    let (m0, m1, m2) = tokio::join!(establish(&c0, l0), establish(&c1, l1), establish(&c2, l2));
    let meshes = [m0.unwrap(), m1.unwrap(), m2.unwrap()];
    for (i, m) in meshes.iter().enumerate() {
        // Each party heard its peers' database status in their hellos.
        assert_eq!(m.peer_status[0].committed, Some(((i + 1) % 3) as u64));
        assert_eq!(m.peer_status[1].committed, Some(((i + 2) % 3) as u64));
    }

    const N: u32 = 40;
    let big = 3 << 20;
    let mut engines = Vec::new();
    let mut controls = Vec::new();
    for (i, m) in meshes.into_iter().enumerate() {
        let Mesh {
            mut channel,
            control,
            ..
        } = m;
        controls.push(control);
        engines.push(tokio::task::spawn_blocking(move || {
            for seq in 0..N {
                channel.send(Peer::Next, msg(i, Peer::Next, seq)).unwrap();
                channel.send(Peer::Prev, msg(i, Peer::Prev, seq)).unwrap();
            }
            channel.send(Peer::Next, vec![i as u8; big]).unwrap();
            for seq in 0..N {
                // What Next sent towards its Prev (us), in order; and vice versa.
                let from_next = channel.recv(Peer::Next).unwrap();
                assert_eq!(from_next, msg((i + 1) % 3, Peer::Prev, seq));
                let from_prev = channel.recv(Peer::Prev).unwrap();
                assert_eq!(from_prev, msg((i + 2) % 3, Peer::Next, seq));
            }
            let b = channel.recv(Peer::Prev).unwrap();
            assert_eq!(b.len(), big);
            assert!(b.iter().all(|&x| x as usize == (i + 2) % 3));
            channel
        }));
    }
    for e in engines {
        e.await.unwrap();
    }
    // Coordination frames travel on the same links, in their own queue.
    for (i, c) in controls.iter().enumerate() {
        c.broadcast(&OnlineSetHash {
            round: 9,
            count: i as u64,
            hash: [i as u8; 32],
        })
        .unwrap();
    }
    for (i, c) in controls.iter_mut().enumerate() {
        let n: OnlineSetHash = c.recv_msg(Peer::Next).await.unwrap();
        let p: OnlineSetHash = c.recv_msg(Peer::Prev).await.unwrap();
        assert_eq!(n.count as usize, (i + 1) % 3);
        assert_eq!(p.count as usize, (i + 2) % 3);
    }
}

/// Party 1 is real; parties 0 and 2 are played by the test over real TLS with their real
/// certificates, so the test can make party 0 misbehave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_gets_a_clear_error() {
    let pki = pki();
    let (l1, a1) = bind().await;
    let (l2, a2) = bind().await;
    let c1 = config(&pki, 1, a2);
    let roots = c1.roots.clone();

    // Party 2's side: accept party 1's dial and answer its hello.
    let id2 = identity(&pki, Role::Exchange(2));
    let acc2 = TlsAcceptor::from(
        tls::server_config(&id2, tls::ClientAuth::Required(roots.clone())).unwrap(),
    );
    let d2 = crate::testkit::descriptor(&id2);
    let p2 = tokio::spawn(async move {
        let (tcp, _) = l2.accept().await.unwrap();
        let mut s = acc2.accept(tcp).await.unwrap();
        let h: PeerHello = wire::read_frame(&mut s, Duration::from_secs(5))
            .await
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(h.party, 1);
        wire::write_msg(
            &mut s,
            &PeerHello {
                party: 2,
                deployment: "test".into(),
                status: Default::default(),
                config_digest: [0; 32],
                descriptor: d2,
            },
        )
        .await
        .unwrap();
        s
    });

    let dial = move |id: Identity| {
        let roots = roots.clone();
        async move {
            let conn = TlsConnector::from(tls::client_config(roots, Some(&id)).unwrap());
            listener::connect(
                &conn,
                a1,
                Role::Exchange(1).server_name(),
                Duration::from_secs(5),
            )
            .await
            .unwrap()
        }
    };
    let impostor = identity(&pki, Role::Entry(0));
    let id0 = identity(&pki, Role::Exchange(0));
    let d0 = crate::testkit::descriptor(&id0);
    let p0 = tokio::spawn(async move {
        // First an entry relay's (valid, CA-signed) certificate: refused with a notice.
        let mut s = dial(impostor).await;
        let f = wire::read_frame(&mut s, Duration::from_secs(5))
            .await
            .unwrap();
        let err = f.into_remote_error().unwrap_err();
        assert!(err.to_string().contains("exchange-0.acs"), "{err}");
        // Then the real party 0.
        let mut s = dial(id0).await;
        wire::write_msg(
            &mut s,
            &PeerHello {
                party: 0,
                deployment: "test".into(),
                status: Default::default(),
                config_digest: [0; 32],
                descriptor: d0,
            },
        )
        .await
        .unwrap();
        let h: PeerHello = wire::read_frame(&mut s, Duration::from_secs(5))
            .await
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(h.party, 1);
        s
    });

    let mesh = establish(&c1, l1).await.unwrap();
    let _s2 = p2.await.unwrap();
    let mut s0 = p0.await.unwrap();
    let Mesh {
        mut channel,
        control: _control,
        ..
    } = mesh;

    // One good engine message, then garbage: a frame with wire version 7.
    wire::write_mpc(&mut s0, b"fine").await.unwrap();
    s0.write_all(&[7, 12, 0, 0, 0, 1, 0]).await.unwrap();
    s0.flush().await.unwrap();

    let (first, second, after) = tokio::task::spawn_blocking(move || {
        let first = channel.recv(Peer::Prev);
        let second = channel.recv(Peer::Prev);
        let after = channel.send(Peer::Prev, vec![1]);
        (first, second, after)
    })
    .await
    .unwrap();
    assert_eq!(first.unwrap(), b"fine");
    match second {
        Err(ChannelError::Malformed {
            peer: Peer::Prev,
            reason,
        }) => {
            assert!(reason.contains("unsupported wire version 7"), "{reason}")
        }
        other => panic!("expected a malformed-message error, got {other:?}"),
    }
    assert!(after.is_err(), "sending on a failed link must fail");

    // The misbehaving peer is told why, then the link closes.
    let f = wire::read_frame(&mut s0, Duration::from_secs(5))
        .await
        .unwrap();
    match f.into_remote_error() {
        Err(WireError::Remote {
            code: ErrorCode::Version,
            ..
        }) => {}
        other => panic!("expected a version notice, got {other:?}"),
    }
    assert!(matches!(
        wire::read_frame(&mut s0, Duration::from_secs(5)).await,
        Err(WireError::Closed) | Err(WireError::Io(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_peer_times_out_with_a_reason() {
    let pki = pki();
    let (l1, _) = bind().await;
    // Nobody listens where party 2 should be.
    let (dead, dead_addr) = bind().await;
    drop(dead);
    let mut c1 = config(&pki, 1, dead_addr);
    c1.establish_timeout = Duration::from_millis(300);
    let err = establish(&c1, l1).await.unwrap_err();
    assert!(matches!(err, MeshError::Timeout { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_before_dropping_the_mesh_are_delivered() {
    let [m0, m1, _m2] = crate::testkit::mesh3([RoundStatus::default(); 3]).await;
    let sender = tokio::task::spawn_blocking(move || {
        let mut ch = m0.channel;
        for i in 0..20u8 {
            ch.send(Peer::Next, vec![i; 1 << 20]).unwrap();
        }
        // Dropped at once: the queue must still be written out.
        drop(ch);
        drop(m0.control);
    });
    let mut ch1 = m1.channel;
    let got = tokio::task::spawn_blocking(move || {
        let v: Vec<u8> = (0..20).map(|_| ch1.recv(Peer::Prev).unwrap()[0]).collect();
        // Then the link ends cleanly.
        let end = ch1.recv(Peer::Prev);
        (v, end)
    })
    .await
    .unwrap();
    sender.await.unwrap();
    assert_eq!(got.0, (0..20).collect::<Vec<u8>>());
    assert!(
        matches!(got.1, Err(ChannelError::Closed(Peer::Prev))),
        "{:?}",
        got.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_different_exchange_parameters_do_not_connect() {
    let pki = pki();
    let (l0, a0) = bind().await;
    let (l1, a1) = bind().await;
    let mut c0 = config(&pki, 0, a1);
    let mut c1 = config(&pki, 1, a0);
    c1.config_digest = [9; 32];
    c0.establish_timeout = Duration::from_millis(700);
    c1.establish_timeout = Duration::from_millis(700);
    // Party 0 dials 1 (accepting from 2 never happens): its dial fails on the hello.
    let (r0, _r1) = tokio::join!(establish(&c0, l0), establish(&c1, l1));
    match r0.unwrap_err() {
        MeshError::Timeout { last, .. } => {
            assert!(last.contains("different exchange parameters"), "{last}")
        }
        e => panic!("{e}"),
    }
}
