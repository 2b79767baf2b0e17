//! `acs demo`: three exchange servers and `E` entry relays on loopback, real TLS, real
//! databases in a temporary directory (with the certificates, master secrets and one
//! configuration file per process, written by `to_toml` and loaded and checked as
//! `acs exchange` and `acs entry` do), `N` simulated users registering through the relays
//! and running `R` rounds of a random workload (messages and covers; a fraction of users
//! offline each round), then drain rounds with everyone online (covers only) until every
//! message's sender knows its final fate: delivered (its status, or a receipt for a
//! stored message), expired (a receipt: it waited `--expiry-rounds` in the store for an
//! offline target), or dropped (store full; the client sends it again, so this is final
//! only for a message still queued at the end). Every delivery is checked against what
//! was sent: exactly once, right source, right content, and it agrees with the fate its
//! sender was told.

use crate::certs;
use crate::config::{EntryFile, ExchangeFile, LimitsFile, TimingFile};
use crate::exchange::server;
use crate::relay;
use crate::tls::{self, Role};
use crate::user::{OutboxItem, User};
use acs_engine::round::{payload_to_words, Fate, RoundConfig, Status};
use acs_kgc::{Kgc, MasterSecret, SignedDescriptor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// Demo parameters (the CLI's flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated users.
    pub users: usize,
    /// Workload rounds (drain rounds follow).
    pub rounds: usize,
    /// Message size in bytes.
    pub msg_size: usize,
    /// Entry relays.
    pub entries: u32,
    /// Fraction of users offline in each workload round.
    pub offline: f64,
    /// Workload seed.
    pub seed: u64,
    /// Serve `/metrics` and `/healthz` on 127.0.0.1: exchange servers at this port, +1,
    /// +2, relays from +3 on.
    pub metrics_base_port: Option<u16>,
    /// The exchange servers' security mode.
    pub security: acs_engine::SecurityMode,
    /// Rounds a message waits in the store for an offline target before it expires (and
    /// its sender gets an `expired` receipt).
    pub expiry_rounds: u32,
    /// The store's capacity `C` (public): `None` is one slot per user, which never
    /// drops a message at the demo's load. Smaller stores move fewer payload rows per
    /// round (the payload table has `2 (U + C)` rows) but may drop messages when full
    /// (their senders are told, and send again).
    pub store_capacity: Option<usize>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            users: 50,
            rounds: 5,
            msg_size: 256,
            entries: 3,
            offline: 0.1,
            seed: 1,
            metrics_base_port: None,
            security: crate::config::default_security(),
            expiry_rounds: 1_000,
            store_capacity: None,
        }
    }
}

/// What the demo measured and checked.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DemoReport {
    /// Users.
    pub users: usize,
    /// Rounds run (workload and drain).
    pub rounds: usize,
    /// Messages sent. Each has one final fate, counted in exactly one of the next four
    /// fields: `sent = delivered + expired_reported + dropped_reported + lost_silently`.
    pub sent: usize,
    /// Messages whose sender was told `delivered` (by its status, or by a receipt for a
    /// stored message); each was received exactly once, right source and content.
    pub delivered: usize,
    /// Messages whose sender got an `expired` receipt (stored, never delivered).
    pub expired_reported: usize,
    /// Messages still queued at the end whose sender's last word on them was `dropped`
    /// (store full) or `retry`.
    pub dropped_reported: usize,
    /// Messages whose sender never learned a final fate by the end of the demo (for
    /// example still `stored`, its receipt not yet come).
    pub lost_silently: usize,
    /// Deliveries that match no sent message, or a message delivered twice.
    pub bad_deliveries: usize,
    /// Fates that contradict what the receivers saw: `delivered` but not received once,
    /// `expired` but received, or a receipt for no message its sender stored.
    pub fate_mismatches: usize,
    /// Median round latency: submission deadline to the last user's reconstructed output.
    pub p50_round_seconds: f64,
    /// 99th percentile of the same.
    pub p99_round_seconds: f64,
    /// Seconds for all users to register with all three servers.
    pub registration_seconds: f64,
    /// Message size.
    pub msg_size: usize,
    /// Entry relays.
    pub entries: u32,
}

/// What a message's sender was told about it last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    /// Delivered (final).
    Delivered,
    /// Expired in the store (final: an `expired` receipt).
    Expired,
    /// Stored: its receipt is to come.
    Stored,
    /// Dropped or retry: the client sends it again.
    Dropped,
}

impl Told {
    fn is_final(self) -> bool {
        matches!(self, Told::Delivered | Told::Expired)
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Anything that stopped it.
    #[error("{0}")]
    Failed(String),
}

fn fail(e: impl std::fmt::Display) -> DemoError {
    DemoError::Failed(e.to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the demo; `progress` gets one line per round.
pub async fn run(
    opts: DemoOptions,
    mut progress: impl FnMut(String),
) -> Result<DemoReport, DemoError> {
    if opts.users < 2
        || opts.entries == 0
        || opts.msg_size == 0
        || !(0.0..1.0).contains(&opts.offline)
        || opts.expiry_rounds == 0
        || opts.store_capacity == Some(0)
    {
        return Err(fail(
            "need --users >= 2, --entries >= 1, --msg-size >= 1, 0 <= --offline < 1, --expiry-rounds >= 1, --store-capacity >= 1",
        ));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let cfg = RoundConfig {
        payload_words: opts.msg_size.div_ceil(8),
        store_capacity: opts.store_capacity.unwrap_or(opts.users),
        expiry_rounds: opts.expiry_rounds,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    // The deployment is written as an operator's would be (certificates, master secrets,
    // one configuration file per process, by the configuration types' own writer) and
    // loaded and checked the way `acs exchange` and `acs entry` load them.
    let dir = tempfile::tempdir().map_err(fail)?;
    let d = dir.path();
    let pki = certs::generate(&certs::deployment_roles(3, opts.entries)).map_err(fail)?;
    certs::write(&pki, &d.join("certs")).map_err(fail)?;
    let roots = tls::roots_from_pem(&pki.ca.cert_pem).map_err(fail)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let limits = LimitsFile {
        max_connections: opts.users * 2 + 64,
        ..LimitsFile::default()
    };
    let metrics_addr = |k: u16| {
        opts.metrics_base_port
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p + k)))
    };

    let mut relay_ports = Vec::new();
    let mut peer_ports = Vec::new();
    let mut relay_addrs = Vec::new();
    let mut peer_addrs: Vec<SocketAddr> = Vec::new();
    for _ in 0..3 {
        let r = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        let p = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        relay_addrs.push(r.local_addr().map_err(fail)?);
        peer_addrs.push(p.local_addr().map_err(fail)?);
        relay_ports.push(r);
        peer_ports.push(p);
    }
    let now = crate::exchange::clock::now_unix_ms() / 1000;
    let window_ms = 300 + 3 * opts.users as u64;
    let (gate_tx, gate_rx) = oneshot::channel();
    let mut gate_rx = Some(gate_rx);
    let mut descriptors = Vec::new();
    let mut servers = Vec::new();
    for (i, (rp, pp)) in relay_ports.into_iter().zip(peer_ports).enumerate() {
        let seed: [u8; 32] = rng.gen();
        let master_path = d.join(format!("master-{i}.key"));
        MasterSecret::from_seed(seed)
            .save(&master_path)
            .map_err(fail)?;
        let cert_der = pki
            .leaf(Role::Exchange(i as u8))
            .map(|c| c.cert_pem.clone())
            .unwrap_or_default();
        let fingerprint: [u8; 32] = {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let der = CertificateDer::from_pem_slice(cert_der.as_bytes()).map_err(fail)?;
            Sha256::digest(der.as_ref()).into()
        };
        let descriptor = Kgc::new(MasterSecret::from_seed(seed)).descriptor(fingerprint, now);
        std::fs::write(
            d.join(format!("master-{i}.key.descriptor")),
            descriptor.to_bytes(),
        )
        .map_err(fail)?;
        descriptors.push(descriptor);
        let file = ExchangeFile {
            index: i as u8,
            deployment: "acs-demo".into(),
            relay_listen: relay_addrs[i],
            peer_listen: peer_addrs[i],
            next_peer: peer_addrs[(i + 1) % 3],
            relays: (0..opts.entries).collect(),
            ca: "certs/ca.pem".into(),
            cert: format!("certs/exchange-{i}.pem").into(),
            key: format!("certs/exchange-{i}-key.pem").into(),
            master: format!("master-{i}.key").into(),
            db: format!("exchange-{i}.redb").into(),
            metrics_listen: metrics_addr(i as u16),
            security: opts.security,
            round: cfg,
            timing: TimingFile {
                submit_window_ms: window_ms,
                // Collection ends as soon as every relay has reported (each always sends
                // a batch), so a long grace costs nothing unless a relay is late, e.g. on
                // a loaded machine; a short one would drop its users' shares for the round.
                collect_grace_ms: 5_000,
                vote_timeout_ms: 120_000,
                max_window_ms: 120_000,
            },
            limits: limits.clone(),
            epochs: Vec::new(),
        };
        let path = d.join(format!("exchange-{i}.toml"));
        std::fs::write(&path, file.to_toml().map_err(fail)?).map_err(fail)?;
        let file = ExchangeFile::load(&path).map_err(fail)?;
        crate::check::check_exchange(&file)
            .into_result()
            .map_err(fail)?;
        let mut scfg = file.server_config().map_err(fail)?;
        if i == 0 {
            scfg.start_gate = gate_rx.take();
        }
        if let Some(addr) = file.metrics_listen {
            let at = crate::metrics::start(addr, scfg.metrics.clone(), shutdown.clone())
                .await
                .map_err(fail)?;
            progress(format!(
                "exchange server {i}: metrics at http://{at}/metrics"
            ));
        }
        let master = MasterSecret::load(&file.master).map_err(fail)?;
        servers.push(tokio::spawn(server::run(
            scfg,
            master,
            rp,
            pp,
            shutdown.clone(),
        )));
    }
    let descriptors: [SignedDescriptor; 3] = descriptors
        .try_into()
        .map_err(|_| fail("three descriptors"))?;

    let mut entry_addrs = Vec::new();
    let mut relays = Vec::new();
    for j in 0..opts.entries {
        let l = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        let file = EntryFile {
            index: j,
            listen: l.local_addr().map_err(fail)?,
            exchanges: [relay_addrs[0], relay_addrs[1], relay_addrs[2]],
            ca: "certs/ca.pem".into(),
            cert: format!("certs/entry-{j}.pem").into(),
            key: format!("certs/entry-{j}-key.pem").into(),
            max_envelopes_per_round: opts.users * 3 + 16,
            metrics_listen: metrics_addr(3 + j as u16),
            limits: limits.clone(),
        };
        let path = d.join(format!("entry-{j}.toml"));
        std::fs::write(&path, file.to_toml().map_err(fail)?).map_err(fail)?;
        let file = EntryFile::load(&path).map_err(fail)?;
        crate::check::check_entry(&file)
            .into_result()
            .map_err(fail)?;
        let r =
            relay::start(file.relay_config().map_err(fail)?, l, shutdown.clone()).map_err(fail)?;
        if let Some(addr) = file.metrics_listen {
            let m = std::sync::Arc::new(crate::metrics::RelayMetrics::new(r.stats.clone()));
            let at = crate::metrics::start(addr, m, shutdown.clone())
                .await
                .map_err(fail)?;
            progress(format!("entry relay {j}: metrics at http://{at}/metrics"));
        }
        entry_addrs.push((j, r.user_addr));
        relays.push(r);
    }

    // Register every user through the relays.
    let t = Instant::now();
    let mut joins = tokio::task::JoinSet::new();
    let mut addresses = std::collections::HashSet::new();
    for _ in 0..opts.users {
        let identity =
            crate::user::identity_with_free_address(&mut addresses, || rng.gen()).map_err(fail)?;
        let (relays, roots, descriptors) =
            (entry_addrs.clone(), roots.clone(), descriptors.clone());
        joins.spawn(async move {
            User::register(
                identity,
                cfg,
                &relays,
                roots,
                &descriptors,
                Duration::from_secs(120),
            )
            .await
        });
    }
    let mut users = Vec::new();
    while let Some(r) = joins.join_next().await {
        users.push(r.map_err(fail)?.map_err(fail)?);
    }
    users.sort_by_key(|u| u.pseudonym().get());
    let registration_seconds = t.elapsed().as_secs_f64();
    progress(format!(
        "{} users registered with 3 exchange servers through {} relays in {:.2} s",
        users.len(),
        opts.entries,
        registration_seconds
    ));
    let _ = gate_tx.send(());

    let ids: Vec<u64> = users.iter().map(|u| u.pseudonym().get()).collect();
    // Sent messages: (src, dst, payload words) → times delivered.
    let mut sent: Vec<(u64, u64, Vec<u64>)> = Vec::new();
    let mut delivered: HashMap<usize, usize> = HashMap::new();
    let mut index: HashMap<(u64, u64, Vec<u64>), usize> = HashMap::new();
    // What each message's sender was told last: a final fate, or (not final) `stored`,
    // `dropped`, `retry`.
    let mut told: HashMap<usize, Told> = HashMap::new();
    let mut bad = 0usize;
    let mut mismatches = 0usize;
    let mut latencies = Vec::new();
    // In drain rounds everyone is online, so each stored message reaches its target
    // (one item per user and round, at most `users` waiting for one target) or expires,
    // and its receipt comes to its sender the round after.
    let max_drain = 3 * opts.rounds + 2 * opts.users + 10;
    let mut round_no = 0;
    let mut drain_announced = false;
    loop {
        let workload = round_no < opts.rounds;
        let pending: usize = users.iter().map(|u| u.outbox.len()).sum();
        let unsettled: usize = users.iter().map(|u| u.unsettled()).sum();
        let open_fates = (0..sent.len())
            .filter(|i| !told.get(i).is_some_and(|t| t.is_final()))
            .count();
        if !workload && pending == 0 && unsettled == 0 && open_fates == 0 {
            break;
        }
        if !workload && !drain_announced {
            drain_announced = true;
            progress(format!(
                "drain: everyone online, covers only, until every message's sender knows its fate ({open_fates} not yet known)"
            ));
        }
        if round_no >= opts.rounds + max_drain {
            break;
        }
        round_no += 1;
        // Plan: who is offline, who writes a new message.
        let mut plan = Vec::with_capacity(users.len());
        for u in users.iter_mut() {
            let offline = workload && rng.gen_bool(opts.offline);
            if workload && !offline && u.outbox.is_empty() && rng.gen_bool(0.6) {
                let me = u.pseudonym().get();
                let to = loop {
                    let t = ids[rng.gen_range(0..ids.len())];
                    if t != me {
                        break t;
                    }
                };
                let payload: Vec<u8> = (0..opts.msg_size).map(|_| rng.gen()).collect();
                let words = payload_to_words(&payload, cfg.payload_words).expect("sized to fit");
                index.insert((me, to, words.clone()), sent.len());
                sent.push((me, to, words));
                u.outbox.push_back(OutboxItem { to, payload });
            }
            plan.push(offline);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (mut u, offline) in users.drain(..).zip(plan) {
            tasks.spawn(async move {
                let a = u.next_round().await?;
                if offline {
                    return Ok::<_, crate::user::UserError>((u, a, None, None));
                }
                let sent = u.send_block(a.round).await?;
                let report = u
                    .finish_round(a.round, sent, Duration::from_secs(120))
                    .await?;
                let done_ms = crate::exchange::clock::now_unix_ms();
                Ok((u, a, Some(report), Some(done_ms)))
            });
        }
        let mut rounds_seen = Vec::new();
        let mut last_done = 0u64;
        // Per round: messages that arrived (reconstructed by their receivers, whenever
        // sent), senders' blocks that went into the store, messages to be sent again.
        let (mut n_online, mut n_received, mut n_stored, mut n_resend) = (0, 0, 0, 0);
        let mut n_receipts = 0;
        while let Some(r) = tasks.join_next().await {
            let (mut u, a, report, done) = r.map_err(fail)?.map_err(fail)?;
            rounds_seen.push(a.round);
            if let Some(done) = done {
                n_online += 1;
                last_done = last_done.max(done.saturating_sub(a.deadline_unix_ms));
            }
            // This round's report, then any earlier round that settled late.
            let me = u.pseudonym().get();
            let message_index = |m: &OutboxItem| {
                let words = payload_to_words(&m.payload, cfg.payload_words)?;
                index.get(&(me, m.to, words)).copied()
            };
            for rep in report.into_iter().chain(u.take_late()) {
                match rep.status {
                    Some(Status::Stored) => n_stored += 1,
                    Some(Status::Delivered) | Some(Status::Cover) => {}
                    _ => {
                        if rep.sent.is_some() {
                            n_resend += 1
                        }
                    }
                }
                if let (Some(status), Some(i)) =
                    (rep.status, rep.sent.as_ref().and_then(message_index))
                {
                    let now = match status {
                        Status::Delivered => Some(Told::Delivered),
                        Status::Stored => Some(Told::Stored),
                        Status::Dropped | Status::Retry => Some(Told::Dropped),
                        Status::Cover => None,
                        // The demo writes only to registered users: a misaddressed
                        // report contradicts the workload.
                        Status::Misaddressed => {
                            mismatches += 1;
                            None
                        }
                    };
                    if let Some(now) = now {
                        told.insert(i, now);
                    }
                }
                if let Some(f) = &rep.receipt {
                    n_receipts += 1;
                    match f.message.as_ref().and_then(message_index) {
                        Some(i) if told.get(&i) == Some(&Told::Stored) => {
                            told.insert(
                                i,
                                match f.receipt.fate {
                                    Fate::Delivered => Told::Delivered,
                                    Fate::Expired => Told::Expired,
                                },
                            );
                        }
                        _ => mismatches += 1,
                    }
                }
                if let Some(inc) = rep.incoming {
                    n_received += 1;
                    let key = (inc.from, u.pseudonym().get(), inc.payload.clone());
                    match index.get(&key) {
                        Some(&i) => {
                            let c = delivered.entry(i).or_insert(0);
                            *c += 1;
                            if *c > 1 {
                                bad += 1;
                            }
                        }
                        None => bad += 1,
                    }
                }
            }
            users.push(u);
        }
        users.sort_by_key(|u| u.pseudonym().get());
        rounds_seen.dedup();
        let secs = last_done as f64 / 1000.0;
        latencies.push(secs);
        progress(format!(
            "round {:>3}{}: online {:>5}, received {:>4}, stored {:>4}, resent {:>3}, receipts {:>4}, fate unknown {:>4}, latency {:.3} s",
            rounds_seen.first().copied().unwrap_or(0),
            if workload { "" } else { " (drain)" },
            n_online,
            n_received,
            n_stored,
            n_resend,
            n_receipts,
            (0..sent.len())
                .filter(|i| !told.get(i).is_some_and(|t| t.is_final()))
                .count(),
            secs
        ));
    }
    let _ = shutdown_tx.send(true);
    for s in servers {
        match tokio::time::timeout(Duration::from_secs(10), s).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return Err(fail(format!("exchange server failed: {e}"))),
            Ok(Err(e)) => return Err(fail(e)),
            Err(_) => return Err(fail("exchange server did not stop")),
        }
    }
    drop(relays);
    latencies.sort_by(|a, b| a.total_cmp(b));
    // Each message once, by the last thing its sender was told; checked against what
    // its receiver saw.
    let (mut n_delivered, mut n_expired, mut n_dropped, mut n_silent) = (0, 0, 0, 0);
    let still_queued: std::collections::HashSet<(u64, u64, Vec<u8>)> = users
        .iter()
        .flat_map(|u| {
            let me = u.pseudonym().get();
            u.outbox.iter().map(move |m| (me, m.to, m.payload.clone()))
        })
        .collect();
    for (i, (src, dst, words)) in sent.iter().enumerate() {
        let received = delivered.get(&i).copied().unwrap_or(0);
        let queued = still_queued.iter().any(|(s, d, p)| {
            s == src && d == dst && payload_to_words(p, cfg.payload_words).as_ref() == Some(words)
        });
        match told.get(&i) {
            Some(Told::Delivered) => {
                n_delivered += 1;
                mismatches += usize::from(received != 1);
            }
            Some(Told::Expired) => {
                n_expired += 1;
                mismatches += usize::from(received != 0);
            }
            Some(Told::Dropped) if queued => {
                n_dropped += 1;
                mismatches += usize::from(received != 0);
            }
            _ => n_silent += 1,
        }
    }
    Ok(DemoReport {
        users: opts.users,
        rounds: round_no,
        sent: sent.len(),
        delivered: n_delivered,
        expired_reported: n_expired,
        dropped_reported: n_dropped,
        lost_silently: n_silent,
        bad_deliveries: bad,
        fate_mismatches: mismatches,
        p50_round_seconds: percentile(&latencies, 0.5),
        p99_round_seconds: percentile(&latencies, 0.99),
        registration_seconds,
        msg_size: opts.msg_size,
        entries: opts.entries,
    })
}
