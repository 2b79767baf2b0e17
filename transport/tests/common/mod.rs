//! A small deployment on 127.0.0.1:0 for integration tests: the real relay-facing ports
//! of three exchange servers and one real entry relay, all over real TLS with a fresh
//! development PKI. Behind each port, in place of the exchange round (not built yet),
//! a `responder` answers each envelope with `out:` + its bytes and each registration with
//! `reg:` + its bytes, and reports every batch it saw so tests can inspect what a relay
//! forwards.
#![allow(dead_code)]

use acs_transport::certs::{self, DevPki};
use acs_transport::listener::{Limits, ListenerStats};
use acs_transport::relay::{self, Relay, RelayConfig};
use acs_transport::relay_port::{self, PortEvent, RelayPortConfig, RelayPortHandle};
use acs_transport::tls::{self, Identity, Role};
use acs_transport::wire::{
    BatchEntry, RelayBatch, RelayOutputs, RelayRegisterResponse, RoundAnnounce,
};
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub struct Deployment {
    pub pki: DevPki,
    pub roots: Arc<RootCertStore>,
    pub ports: Vec<RelayPortHandle>,
    pub port_addrs: Vec<SocketAddr>,
    pub port_stats: Vec<Arc<ListenerStats>>,
    pub relay: Relay,
    /// (server, relay, batch) for every batch a port received.
    pub batches: mpsc::UnboundedReceiver<(u8, u32, RelayBatch)>,
    /// The ports' event streams, when the deployment was made without responders.
    pub events: Vec<mpsc::Receiver<PortEvent>>,
    pub shutdown: watch::Sender<bool>,
}

pub fn identity(pki: &DevPki, role: Role) -> Identity {
    let c = pki.leaf(role).unwrap();
    Identity::from_pem(&c.cert_pem, &c.key_pem).unwrap()
}

pub fn test_limits() -> Limits {
    Limits {
        max_connections: 64,
        handshake_timeout: Duration::from_millis(500),
        frame_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(60),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub async fn deployment(relay_limits: Limits) -> Deployment {
    deployment_with(relay_limits, true).await
}

/// `respond`: whether responders answer at the ports; if not, the tests get the events.
pub async fn deployment_with(relay_limits: Limits, respond: bool) -> Deployment {
    let pki = certs::generate(&certs::deployment_roles(3, 1)).unwrap();
    let roots = tls::roots_from_pem(&pki.ca.cert_pem).unwrap();
    let (shutdown, sd_rx) = watch::channel(false);
    let (seen_tx, batches) = mpsc::unbounded_channel();
    let mut ports = Vec::new();
    let mut port_addrs = Vec::new();
    let mut port_stats = Vec::new();
    let mut raw_events = Vec::new();
    for server in 0..3u8 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        port_addrs.push(l.local_addr().unwrap());
        let stats = Arc::new(ListenerStats::default());
        port_stats.push(stats.clone());
        let (handle, events) = relay_port::start(
            RelayPortConfig {
                server,
                relays: vec![Role::Entry(0)],
                identity: identity(&pki, Role::Exchange(server)),
                roots: roots.clone(),
                limits: test_limits(),
            },
            l,
            stats,
            sd_rx.clone(),
        )
        .unwrap();
        if respond {
            tokio::spawn(responder(server, handle.clone(), events, seen_tx.clone()));
        } else {
            raw_events.push(events);
        }
        ports.push(handle);
    }
    let users = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = relay::start(
        RelayConfig {
            index: 0,
            exchanges: [port_addrs[0], port_addrs[1], port_addrs[2]],
            identity: identity(&pki, Role::Entry(0)),
            roots: roots.clone(),
            limits: relay_limits,
            max_envelopes_per_round: 10_000,
        },
        users,
        sd_rx,
    )
    .unwrap();
    // Wait until the relay is connected to all three ports.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ports.iter().any(|p| p.connected() != vec![0]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Deployment {
        pki,
        roots,
        ports,
        port_addrs,
        port_stats,
        relay,
        batches,
        events: raw_events,
        shutdown,
    }
}

impl Deployment {
    /// Announces `round` at all three ports with a deadline `in_ms` from now.
    pub fn announce(&self, round: u64, in_ms: u64) -> RoundAnnounce {
        let a = RoundAnnounce {
            round,
            deadline_unix_ms: now_ms() + in_ms,
        };
        for p in &self.ports {
            p.announce(a).unwrap();
        }
        a
    }
}

async fn responder(
    server: u8,
    handle: RelayPortHandle,
    mut events: mpsc::Receiver<PortEvent>,
    seen: mpsc::UnboundedSender<(u8, u32, RelayBatch)>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            PortEvent::Batch { relay, batch } => {
                let outputs = RelayOutputs {
                    round: batch.round,
                    outputs: batch
                        .entries
                        .iter()
                        .map(|e| BatchEntry {
                            slot: e.slot,
                            sealed: [b"out:".as_slice(), &e.sealed].concat(),
                        })
                        .collect(),
                };
                let _ = seen.send((server, relay, batch));
                handle.send_outputs(relay, &outputs).unwrap();
            }
            PortEvent::Register { relay, request } => {
                let body = [b"reg:".as_slice(), &request.body].concat();
                handle
                    .answer_registration(
                        relay,
                        &RelayRegisterResponse {
                            request: request.request,
                            body,
                        },
                    )
                    .unwrap();
            }
            PortEvent::Connected { .. } | PortEvent::Disconnected { .. } => {}
        }
    }
}
