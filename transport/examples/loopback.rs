//! Loopback measurements of the transport alone (no engine, no kgc):
//!
//! - `mpc`: the engine channel over mutual TLS between three parties: throughput of
//!   large messages around the ring, and the round-trip time of a small message;
//! - `relay`: one round through a real entry relay and the real relay ports of three
//!   exchange servers: `--users` users each send one envelope of `--bytes` to each server;
//!   the ports answer every envelope with an output of the same size. Reports the time from
//!   the round's deadline until every user holds its three outputs.
//!
//! `cargo run --release -p acs-transport --example loopback -- mpc`
//! `cargo run --release -p acs-transport --example loopback -- relay --users 1000 --bytes 8192`

use acs_engine::channel::{Channel, PartyId, Peer};
use acs_transport::certs;
use acs_transport::client::{FromRelay, RelayLink};
use acs_transport::listener::{Limits, ListenerStats};
use acs_transport::mpc::{establish, MeshConfig};
use acs_transport::relay::{self, RelayConfig};
use acs_transport::relay_port::{self, PortEvent, RelayPortConfig};
use acs_transport::tls::{self, Identity, Role};
use acs_transport::wire::{BatchEntry, RelayOutputs, RoundAnnounce, RoundStatus, SealedEnvelope};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn identity(pki: &certs::DevPki, role: Role) -> Identity {
    let c = pki.leaf(role).unwrap();
    Identity::from_pem(&c.cert_pem, &c.key_pem).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    match args.first().map(String::as_str) {
        Some("mpc") => rt.block_on(mpc(arg(&args, "--mib", 64), arg(&args, "--msgs", 16))),
        Some("relay") => rt.block_on(relay_round(
            arg(&args, "--users", 1000),
            arg(&args, "--bytes", 8192),
        )),
        _ => eprintln!("usage: loopback mpc [--mib M --msgs K] | relay [--users N --bytes B]"),
    }
}

async fn mpc(mib: usize, msgs: usize) {
    let pki = certs::generate(&certs::deployment_roles(3, 0)).unwrap();
    let roots = tls::roots_from_pem(&pki.ca.cert_pem).unwrap();
    let mut ls = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        ls.push(l);
    }
    let cfgs: Vec<MeshConfig> = (0..3)
        .map(|i| MeshConfig {
            party: PartyId::new(i).unwrap(),
            deployment: "bench".into(),
            next_addr: addrs[(i + 1) % 3],
            descriptor: acs_transport::mpc::descriptor_for(
                &acs_kgc::Kgc::new(acs_kgc::MasterSecret::generate(&mut rand::rngs::OsRng)),
                &identity(&pki, Role::Exchange(i as u8)),
            ),
            identity: identity(&pki, Role::Exchange(i as u8)),
            roots: roots.clone(),
            establish_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            status: RoundStatus::default(),
            config_digest: [0; 32],
        })
        .collect();
    let mut ls = ls.into_iter();
    let (a, b, c) = tokio::join!(
        establish(&cfgs[0], ls.next().unwrap()),
        establish(&cfgs[1], ls.next().unwrap()),
        establish(&cfgs[2], ls.next().unwrap())
    );
    let meshes = [a.unwrap(), b.unwrap(), c.unwrap()];
    let size = (mib << 20) / msgs;
    let mut tasks = Vec::new();
    for m in meshes {
        let mut ch = m.channel;
        let control = m.control;
        tasks.push(tokio::task::spawn_blocking(move || {
            // Ping: 200 small messages around the ring, one at a time.
            let me = ch.party().index();
            let pings = 200;
            let t = Instant::now();
            for _ in 0..pings {
                if me == 0 {
                    ch.send(Peer::Next, vec![0; 8]).unwrap();
                    ch.recv(Peer::Prev).unwrap();
                } else {
                    let m = ch.recv(Peer::Prev).unwrap();
                    ch.send(Peer::Next, m).unwrap();
                }
            }
            let ring = t.elapsed() / pings;
            // Bulk: every party sends `msgs` messages of `size` to both peers.
            let t = Instant::now();
            for _ in 0..msgs {
                ch.send(Peer::Next, vec![7; size]).unwrap();
                ch.send(Peer::Prev, vec![7; size]).unwrap();
            }
            for _ in 0..msgs {
                assert_eq!(ch.recv(Peer::Next).unwrap().len(), size);
                assert_eq!(ch.recv(Peer::Prev).unwrap().len(), size);
            }
            let bulk = t.elapsed();
            drop(control);
            (me, ring, bulk)
        }));
    }
    for t in tasks {
        let (me, ring, bulk) = t.await.unwrap();
        let sent = 2 * msgs * size;
        println!(
            "P{me}: ring round trip (3 hops) {:.1} us; sent+received {} MiB each way in {:.3} s = {:.0} MiB/s out per party",
            ring.as_secs_f64() * 1e6,
            sent >> 20,
            bulk.as_secs_f64(),
            (sent as f64 / (1 << 20) as f64) / bulk.as_secs_f64()
        );
    }
}

async fn relay_round(users: usize, bytes: usize) {
    let pki = certs::generate(&certs::deployment_roles(3, 1)).unwrap();
    let roots = tls::roots_from_pem(&pki.ca.cert_pem).unwrap();
    let (_sd_tx, sd) = tokio::sync::watch::channel(false);
    let limits = Limits {
        max_connections: users + 16,
        ..Limits::default()
    };
    let mut addrs = Vec::new();
    let mut ports = Vec::new();
    for server in 0..3u8 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let (h, mut ev) = relay_port::start(
            RelayPortConfig {
                server,
                relays: vec![Role::Entry(0)],
                identity: identity(&pki, Role::Exchange(server)),
                roots: roots.clone(),
                limits,
            },
            l,
            Arc::new(ListenerStats::default()),
            sd.clone(),
        )
        .unwrap();
        let hh = h.clone();
        tokio::spawn(async move {
            while let Some(e) = ev.recv().await {
                if let PortEvent::Batch { relay, batch } = e {
                    let outputs = batch
                        .entries
                        .into_iter()
                        .map(|e| BatchEntry {
                            slot: e.slot,
                            sealed: e.sealed,
                        })
                        .collect();
                    hh.send_outputs(
                        relay,
                        &RelayOutputs {
                            round: batch.round,
                            outputs,
                        },
                    )
                    .unwrap();
                }
            }
        });
        ports.push(h);
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = relay::start(
        RelayConfig {
            index: 0,
            exchanges: [addrs[0], addrs[1], addrs[2]],
            identity: identity(&pki, Role::Entry(0)),
            roots: roots.clone(),
            limits,
            max_envelopes_per_round: 1 << 20,
        },
        l,
        sd.clone(),
    )
    .unwrap();
    while ports.iter().any(|p| p.connected().is_empty()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    let mut links = Vec::new();
    for _ in 0..users {
        links.push(
            RelayLink::connect(r.user_addr, 0, roots.clone(), Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    println!(
        "{users} users connected (TLS handshakes) in {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let window = 1000 + users as u64 * 2;
    let deadline_ms = acs_transport::exchange::clock::now_unix_ms() + window;
    for p in &ports {
        p.announce(RoundAnnounce {
            round: 1,
            deadline_unix_ms: deadline_ms,
        })
        .unwrap();
    }
    let mut handles = Vec::new();
    for mut link in links {
        handles.push(tokio::spawn(async move {
            match link.next().await.unwrap() {
                FromRelay::Round(a) => assert_eq!(a.round, 1),
                other => panic!("{other:?}"),
            }
            for s in 0..3u8 {
                link.submit(&SealedEnvelope {
                    round: 1,
                    server: s,
                    sealed: vec![s; bytes],
                })
                .await
                .unwrap();
            }
            let mut n = 0;
            while n < 3 {
                if let FromRelay::Output(o) = link.next().await.unwrap() {
                    assert_eq!(o.sealed.len(), bytes);
                    n += 1;
                }
            }
            acs_transport::exchange::clock::now_unix_ms()
        }));
    }
    let mut last_ms = 0;
    for h in handles {
        last_ms = last_ms.max(h.await.unwrap());
    }
    let after_deadline_ms = last_ms as i64 - deadline_ms as i64;
    println!(
        "{users} users x 3 envelopes of {bytes} B: every output back {after_deadline_ms} ms after the deadline (relay shuffle + 3 batches + echo + routing), {} outputs delivered",
        r.stats.outputs.load(std::sync::atomic::Ordering::Relaxed)
    );
}
