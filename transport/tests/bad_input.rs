//! Bad input against real listeners on 127.0.0.1:0: every case gets a clear error, the
//! connection closes, and the listener goes on serving a well-behaved client.

mod common;

use acs_transport::client::{FromRelay, RelayLink};
use acs_transport::listener::{self, ListenerStats};
use acs_transport::tls::{self, Role};
use acs_transport::wire::{
    self, caps, BatchEntry, ErrorCode, MsgType, RegisterRequest, RelayBatch, SealedEnvelope,
    WireError,
};
use common::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const T: Duration = Duration::from_secs(5);

async fn raw_tls(d: &Deployment) -> tokio_rustls::client::TlsStream<TcpStream> {
    let c = TlsConnector::from(tls::client_config(d.roots.clone(), None).unwrap());
    listener::connect(&c, d.relay.user_addr, Role::Entry(0).server_name(), T)
        .await
        .unwrap()
}

/// Reads what the server says until it closes; returns the notice code, if any.
async fn notice_then_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<ErrorCode> {
    let mut code = None;
    loop {
        match tokio::time::timeout(T, wire::read_frame(s, T))
            .await
            .unwrap()
        {
            Ok(f) => match f.into_remote_error() {
                Err(WireError::Remote { code: c, message }) => {
                    assert!(!message.is_empty());
                    code = Some(c);
                }
                Ok(f) if f.ty == MsgType::RoundAnnounce => {}
                other => panic!("unexpected {other:?}"),
            },
            // Closed cleanly, or reset: either way the connection is gone.
            Err(WireError::Closed) | Err(WireError::Io(_)) => return code,
            Err(e) => panic!("unexpected read error {e}"),
        }
    }
}

/// A well-behaved user still gets the open round and a registration answer.
async fn still_serves(d: &Deployment) {
    let mut u = RelayLink::connect(d.relay.user_addr, 0, d.roots.clone(), T)
        .await
        .unwrap();
    match tokio::time::timeout(T, u.next()).await.unwrap().unwrap() {
        FromRelay::Round(a) => assert_eq!(a.round, 1),
        other => panic!("{other:?}"),
    }
    u.register(&RegisterRequest {
        server: 2,
        body: b"hello".to_vec(),
    })
    .await
    .unwrap();
    match tokio::time::timeout(T, u.next()).await.unwrap().unwrap() {
        FromRelay::Registered(r) => assert_eq!(r.body, b"reg:hello"),
        other => panic!("{other:?}"),
    }
    u.close().await;
}

async fn wait_for(stats: &ListenerStats, what: fn(&ListenerStats) -> u64, at_least: u64) {
    let deadline = tokio::time::Instant::now() + T;
    while what(stats) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn frame(version: u8, tag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![version, tag];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn errors(s: &ListenerStats) -> u64 {
    s.closed_with_error.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_a_notice_and_a_closed_connection() {
    let d = deployment(test_limits()).await;
    d.announce(1, 60_000);
    let env = wire::encode_frame(&SealedEnvelope {
        round: 1,
        server: 0,
        sealed: vec![7; 20],
    })
    .unwrap();
    let mut trailing = env.clone();
    trailing.push(0);
    let n = (trailing.len() - wire::HEADER_LEN) as u32;
    trailing[2..6].copy_from_slice(&n.to_be_bytes());
    let mut wrong_version = env.clone();
    wrong_version[0] = 2;
    let misrouted = wire::encode_frame(&SealedEnvelope {
        round: 1,
        server: 9,
        sealed: vec![1],
    })
    .unwrap();
    let from_wrong_side = wire::encode_frame(&RelayBatch {
        round: 1,
        entries: vec![BatchEntry {
            slot: 0,
            sealed: vec![1],
        }],
    })
    .unwrap();
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "malformed body",
            frame(1, MsgType::SealedEnvelope as u8, 3, &[0xff, 0xff, 0xff]),
            ErrorCode::Malformed,
        ),
        (
            "oversized length",
            frame(1, MsgType::SealedEnvelope as u8, caps::USER as u32 + 1, &[]),
            ErrorCode::TooLong,
        ),
        ("wrong version byte", wrong_version, ErrorCode::Version),
        ("unknown type", frame(1, 99, 0, &[]), ErrorCode::Malformed),
        ("trailing bytes", trailing, ErrorCode::Malformed),
        ("misrouted envelope", misrouted, ErrorCode::Invalid),
        (
            "relay-only message from a user",
            from_wrong_side,
            ErrorCode::Unexpected,
        ),
    ];
    let stats = d.relay.listener_stats.clone();
    for (i, (name, bytes, want)) in cases.into_iter().enumerate() {
        let mut s = raw_tls(&d).await;
        s.write_all(&bytes).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(notice_then_close(&mut s).await, Some(want), "case {name}");
        wait_for(&stats, errors, i as u64 + 1).await;
        still_serves(&d).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_stalled_frames_close_the_connection() {
    let d = deployment(test_limits()).await;
    d.announce(1, 60_000);
    let stats = d.relay.listener_stats.clone();
    let env = wire::encode_frame(&SealedEnvelope {
        round: 1,
        server: 1,
        sealed: vec![7; 200],
    })
    .unwrap();

    // Truncated: half a frame, then the client closes its side.
    let mut s = raw_tls(&d).await;
    s.write_all(&env[..50]).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(notice_then_close(&mut s).await, None);
    wait_for(&stats, errors, 1).await;
    still_serves(&d).await;

    // Stalled: half a frame and nothing more; the frame deadline (500 ms) closes it.
    let mut s = raw_tls(&d).await;
    s.write_all(&env[..50]).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(notice_then_close(&mut s).await, Some(ErrorCode::Timeout));
    wait_for(&stats, errors, 2).await;
    still_serves(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_bytes_and_silent_clients_are_dropped() {
    let d = deployment(test_limits()).await;
    d.announce(1, 60_000);
    let stats = d.relay.listener_stats.clone();

    // Plain HTTP to a TLS port.
    let mut tcp = TcpStream::connect(d.relay.user_addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    wait_for(&stats, |s| s.handshake_failed.load(Ordering::Relaxed), 1).await;
    still_serves(&d).await;

    // A client that connects and never starts the handshake: closed at the deadline.
    let started = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(d.relay.user_addr).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    wait_for(&stats, |s| s.handshake_timed_out.load(Ordering::Relaxed), 1).await;
    still_serves(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_frees() {
    let mut limits = test_limits();
    limits.max_connections = 2;
    limits.handshake_timeout = Duration::from_secs(5);
    let d = deployment(limits).await;
    d.announce(1, 60_000);
    let a = raw_tls(&d).await;
    let b = raw_tls(&d).await;
    // A third client is not accepted while two are open...
    let c = TlsConnector::from(tls::client_config(d.roots.clone(), None).unwrap());
    let third = listener::connect(
        &c,
        d.relay.user_addr,
        Role::Entry(0).server_name(),
        Duration::from_millis(300),
    )
    .await;
    assert!(
        matches!(third, Err(tls::TlsError::HandshakeTimeout(_))),
        "{third:?}"
    );
    // ...and is served once one closes.
    drop(a);
    still_serves(&d).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_port_refuses_clients_that_are_not_relays() {
    let d = deployment(test_limits()).await;
    d.announce(1, 60_000);
    let stats: Arc<ListenerStats> = d.port_stats[0].clone();

    // No client certificate: the mutual-TLS handshake fails.
    let c = TlsConnector::from(tls::client_config(d.roots.clone(), None).unwrap());
    if let Ok(mut s) =
        listener::connect(&c, d.port_addrs[0], Role::Exchange(0).server_name(), T).await
    {
        // TLS 1.3: the client may finish before the server rejects; the next read fails.
        let mut buf = [0u8; 1];
        assert!(!matches!(s.read(&mut buf).await, Ok(n) if n > 0));
    }
    wait_for(&stats, |s| s.handshake_failed.load(Ordering::Relaxed), 1).await;

    // A valid certificate of the wrong role (an exchange server's): refused by name.
    let id = identity(&d.pki, Role::Exchange(1));
    let c = TlsConnector::from(tls::client_config(d.roots.clone(), Some(&id)).unwrap());
    let mut s = listener::connect(&c, d.port_addrs[0], Role::Exchange(0).server_name(), T)
        .await
        .unwrap();
    assert_eq!(notice_then_close(&mut s).await, Some(ErrorCode::Invalid));
    wait_for(&stats, errors, 1).await;

    // The real relay's link is untouched.
    still_serves(&d).await;
}
