//! Floods against the running system (issue 7, "Hardening"): three `acs exchange`
//! processes and two `acs entry` processes on 127.0.0.1, honest users
//! ([`acs_transport::user::User`], over real TLS) exchanging messages round after round,
//! and attackers in this process hammering every port at the same time: garbage and
//! plain-TCP connections, frames announcing more than their cap, slow-loris clients that
//! stall the TLS handshake or a frame, and replayed sealed envelopes.
//!
//! What must hold: every honest message is delivered exactly once with its content and
//! source; the servers keep committing rounds; every attack connection is closed by the
//! server (handshake and frame deadlines, caps) rather than held (the peer ports, which
//! nobody accepts on while the mesh is up, excepted: there the mesh must stay undisturbed);
//! the connection cap is
//! never exhausted for good (a new user still gets in during the flood); nothing panics.
//! `bad_input.rs` covers the single cases against single in-process listeners; here they
//! all hit the real processes at once while users are served.
//!
//! `the_relays_connection_cap_deadlines_and_per_connection_limits_act` observes each of
//! a relay's limits acting alone, with timings that tell the cause apart, and
//! `replayed_envelopes_are_rejected_and_the_message_arrives_once` replays a user's sealed
//! envelopes in the same and in later rounds.
//!
//! The last three tests were written against weaknesses found here (a relay buffering a
//! server-only frame type up to its cap, idle connections holding a relay's slots,
//! stalled peer-port handshakes keeping the mesh from forming) and pass since the fixes.

#[path = "common/system.rs"]
mod system;

use acs_engine::round::{payload_from_words, Block, Role as BlockRole, RoundConfig};
use acs_kgc::{Direction, Envelope, LongTermKey, RegistrationResponse, UserIdentity};
use acs_transport::client::{FromRelay, RelayLink};
use acs_transport::listener;
use acs_transport::tls::{self, Role};
use acs_transport::user::{OutboxItem, User};
use acs_transport::wire::{
    self, caps, ErrorCode, MsgType, RegisterRequest, SealedEnvelope, WireError, HEADER_LEN,
};
use rand::{Rng, RngCore};
use rustls::RootCertStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use system::{Deployment, LimitsToml, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long the server may take to close an attack connection after its deadline, on a
/// loaded two-core machine.
const SLACK: Duration = Duration::from_secs(5);

/// Runs a test body on its own multi-thread runtime, one deployment at a time: each test
/// runs five or six processes plus its attackers, and the machines these run on are
/// small. (A plain `#[test]` holding the lock, so no lock guard lives across an await.)
fn run<F: std::future::Future>(body: F) -> F::Output {
    static LOCK: Mutex<()> = Mutex::new(());
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

/// Starts every process of `d` and waits until the servers have committed a round and
/// every relay takes connections, so that users can register at once.
fn start_ready(d: &Deployment) -> system::System {
    let sys = d.start();
    sys.wait_committed(1, Duration::from_secs(30));
    for j in 0..d.opts.entries {
        system::wait_until(Duration::from_secs(30), "a relay to listen", || {
            std::net::TcpStream::connect(d.entry_addr(j)).is_ok()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
    }
    sys
}

/// Blocking waits on process logs, from inside the (multi-thread) runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn now_secs() -> u64 {
    acs_transport::exchange::clock::now_unix_ms() / 1000
}

fn header(ty: MsgType, len: u32) -> Vec<u8> {
    let mut h = vec![wire::WIRE_VERSION, ty as u8];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

async fn tls_to_entry(
    roots: &Arc<RootCertStore>,
    addr: SocketAddr,
    j: u32,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, tls::TlsError> {
    let c = TlsConnector::from(tls::client_config(roots.clone(), None).unwrap());
    listener::connect(&c, addr, Role::Entry(j).server_name(), SLACK).await
}

/// Reads and discards until the server closes the connection (EOF or reset); `None` if it
/// is still open after `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    r.ok().map(|_| t.elapsed())
}

/// Reads frames until the server closes; returns the code of its last error notice.
/// `Err` if the connection is still open after `within`.
async fn notice_then_close<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> Result<Option<ErrorCode>, String> {
    let mut code = None;
    let r = tokio::time::timeout(within, async {
        loop {
            match wire::read_frame(s, within).await {
                Ok(f) => {
                    if let Err(WireError::Remote { code: c, .. }) = f.into_remote_error() {
                        code = Some(c);
                    }
                }
                Err(_) => return,
            }
        }
    })
    .await;
    match r {
        Ok(()) => Ok(code),
        Err(_) => Err(format!(
            "still open after {within:?} (last notice {code:?})"
        )),
    }
}

/// What the attackers did, and what they saw.
#[derive(Default, Debug)]
struct AttackLog {
    /// Connections opened (or refused at connect).
    opened: AtomicU64,
    /// Refused at connect (a closed port, e.g. a peer port once the mesh is up).
    refused: AtomicU64,
    /// Closed by the server within the bound.
    closed: AtomicU64,
    /// Still open when the bound passed: the server held an attack connection.
    held: AtomicU64,
    /// Longest time to close, in ms.
    max_close_ms: AtomicU64,
    /// Failures, with detail.
    failures: Mutex<Vec<String>>,
}

impl AttackLog {
    fn outcome(&self, what: &str, closed: Option<Duration>) {
        match closed {
            Some(d) => {
                self.closed.fetch_add(1, Ordering::Relaxed);
                self.max_close_ms
                    .fetch_max(d.as_millis() as u64, Ordering::Relaxed);
            }
            None => {
                self.held.fetch_add(1, Ordering::Relaxed);
                self.fail(format!("{what}: connection not closed by the server"));
            }
        }
    }

    fn fail(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }

    fn summary(&self) -> String {
        format!(
            "opened {} refused {} closed {} held {} max_close_ms {}",
            self.opened.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
            self.max_close_ms.load(Ordering::Relaxed),
        )
    }
}

/// Opens TCP connections to `addr` and sends garbage — random bytes, an HTTP request, or
/// a TLS record header followed by junk — until `stop`, one connection after another with
/// a short pause between them (a two-core test machine also runs the servers); each must
/// be closed by the server within `bound`, unless `may_hold` (a port that is not served
/// while the mesh is up, where the kernel keeps the connection queued).
async fn garbage(
    addr: SocketAddr,
    bound: Duration,
    may_hold: bool,
    stop: Arc<AtomicBool>,
    log: Arc<AttackLog>,
) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let bytes: Vec<u8> = {
            let mut rng = rand::thread_rng();
            match n % 3 {
                0 => {
                    let mut b = vec![0u8; rng.gen_range(1..4096)];
                    rng.fill_bytes(&mut b);
                    b
                }
                1 => b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n".to_vec(),
                _ => {
                    // A handshake record header announcing a ClientHello, then junk.
                    let mut b = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
                    let mut junk = vec![0u8; 508];
                    rng.fill_bytes(&mut junk);
                    b.extend(junk);
                    b
                }
            }
        };
        log.opened.fetch_add(1, Ordering::Relaxed);
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                log.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // The server may close before all of it is written: that is a close too.
        let _ = s.write_all(&bytes).await;
        let closed = closed_within(&mut s, bound).await;
        if may_hold && closed.is_none() {
            log.held.fetch_add(1, Ordering::Relaxed);
        } else {
            log.outcome(&format!("garbage to {addr}"), closed);
        }
    }
}

/// Stalls `n` connections at a time on `addr` until `stop`: half connect and send
/// nothing, half dribble the first bytes of a TLS ClientHello one byte per 100 ms. Each
/// must be closed by the handshake deadline (plus the wait for a free connection slot).
async fn stall_handshakes(
    addr: SocketAddr,
    n: usize,
    bound: Duration,
    stop: Arc<AtomicBool>,
    log: Arc<AttackLog>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..n {
        let (stop, log) = (stop.clone(), log.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                log.opened.fetch_add(1, Ordering::Relaxed);
                let mut s = match TcpStream::connect(addr).await {
                    Ok(s) => s,
                    Err(_) => {
                        log.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let closed = if k.is_multiple_of(2) {
                    closed_within(&mut s, bound).await
                } else {
                    // A ClientHello record header announcing 512 bytes, then zeros, one
                    // byte every 100 ms.
                    let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
                    let t = Instant::now();
                    let mut closed = None;
                    for i in 0.. {
                        if t.elapsed() >= bound {
                            break;
                        }
                        let b = hello.get(i).copied().unwrap_or(0);
                        if s.write_all(&[b]).await.is_err() {
                            closed = Some(t.elapsed());
                            break;
                        }
                        let mut buf = [0u8; 64];
                        let read =
                            tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf));
                        if let Ok(Ok(0) | Err(_)) = read.await {
                            closed = Some(t.elapsed());
                            break;
                        }
                    }
                    closed
                };
                log.outcome(&format!("stalled handshake to {addr}"), closed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Attacks on a relay's user port that need TLS (no client certificate is needed there):
/// frames announcing more than their type's cap (must be refused with `TooLong` at once),
/// and frames started and then dribbled (must be cut by the frame deadline).
async fn tls_attacks(
    roots: Arc<RootCertStore>,
    addr: SocketAddr,
    j: u32,
    bound: Duration,
    stop: Arc<AtomicBool>,
    oversized: Arc<AttackLog>,
    dribbled: Arc<AttackLog>,
) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let dribble = n.is_multiple_of(3);
        let log = if dribble { &dribbled } else { &oversized };
        log.opened.fetch_add(1, Ordering::Relaxed);
        let Ok(s) = tls_to_entry(&roots, addr, j).await else {
            // Waiting for a connection slot under the flood can take a while; a connect
            // that gives up is not a failure of the server.
            log.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // Read while writing: the server's notice must not be lost to a reset caused by
        // bytes written after it closed.
        let (mut rd, mut wr) = tokio::io::split(s);
        let reader = tokio::spawn(async move { notice_then_close(&mut rd, bound).await });
        let t = Instant::now();
        let (frame, want, what) = if dribble {
            // An envelope frame of 200 bytes, one byte every 100 ms.
            let mut f = header(MsgType::SealedEnvelope, 200);
            f.extend(vec![7u8; 200]);
            (f, ErrorCode::Timeout, "dribbled frame")
        } else if n % 3 == 1 {
            (
                header(MsgType::SealedEnvelope, u32::MAX),
                ErrorCode::TooLong,
                "oversized envelope",
            )
        } else {
            (
                header(MsgType::RegisterRequest, caps::REGISTRATION as u32 + 1),
                ErrorCode::TooLong,
                "oversized registration",
            )
        };
        if dribble {
            for b in &frame {
                if reader.is_finished()
                    || wr.write_all(&[*b]).await.is_err()
                    || wr.flush().await.is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            let _ = wr.write_all(&frame).await;
            let _ = wr.flush().await;
        }
        match reader.await.unwrap() {
            Ok(Some(code)) if code == want => log.outcome(what, Some(t.elapsed())),
            Ok(other) => {
                log.outcome(what, Some(t.elapsed()));
                log.fail(format!("{what}: closed with {other:?}, not {want:?}"));
            }
            Err(e) => log.outcome(&format!("{what}: {e}"), None),
        }
    }
}

/// Honest users' traffic: what was sent and what arrived.
#[derive(Default)]
struct Ledger {
    /// (from, to, text) of every queued message.
    sent: Vec<(u64, u64, String)>,
    /// (from, to, text) → times it arrived.
    arrived: HashMap<(u64, u64, String), usize>,
    /// Arrivals that match nothing sent.
    bogus: Vec<String>,
    /// Rounds the users took part in.
    rounds: Vec<u64>,
    /// One line per report, for failure messages.
    trace: Vec<String>,
}

impl Ledger {
    fn queue(&mut self, u: &mut User, to: u64, text: String) {
        self.sent.push((u.pseudonym().get(), to, text.clone()));
        u.outbox.push_back(OutboxItem {
            to,
            payload: text.into_bytes(),
        });
    }

    fn undelivered(&self) -> usize {
        self.sent
            .iter()
            .filter(|m| !self.arrived.contains_key(*m))
            .count()
    }

    /// Every message arrived exactly once, with its source and content.
    fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for m in &self.sent {
            match self.arrived.get(m) {
                Some(1) => {}
                Some(n) => problems.push(format!("{m:?} arrived {n} times")),
                None => problems.push(format!("{m:?} never arrived")),
            }
        }
        problems.extend(self.bogus.iter().cloned());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}\nthe users' reports:\n{}",
                problems.join("\n"),
                self.trace.join("\n")
            ))
        }
    }
}

fn text_of(payload: &[u64]) -> String {
    let bytes = payload_from_words(payload);
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

async fn register(d: &Deployment, n: usize) -> Vec<User> {
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..n {
        let identity = UserIdentity::generate(&mut rand_core::OsRng);
        let (relays, roots, descriptors, cfg) =
            (d.entry_addrs(), d.roots(), d.descriptors(), d.opts.round);
        joins.spawn(async move {
            User::register(
                identity,
                cfg,
                &relays,
                roots,
                &descriptors,
                Duration::from_secs(20),
            )
            .await
        });
    }
    let mut users = Vec::new();
    while let Some(r) = joins.join_next().await {
        users.push(r.unwrap().expect("honest user could not register"));
    }
    users
}

/// Every user takes part in one round (the next one it sees); arrivals go to the ledger,
/// also those of earlier rounds whose output shares came late.
async fn one_round(users: Vec<User>, ledger: &mut Ledger) -> Vec<User> {
    let mut tasks = tokio::task::JoinSet::new();
    for mut u in users {
        tasks.spawn(async move {
            let a = u.next_round().await?;
            let sent = u.send_block(a.round).await?;
            let report = u
                .finish_round(a.round, sent, Duration::from_secs(15))
                .await?;
            Ok::<_, acs_transport::user::UserError>((u, report))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (mut u, report) = r.unwrap().expect("honest user failed a round");
        ledger.rounds.push(report.round);
        let me = u.pseudonym().get();
        for report in std::iter::once(report).chain(u.take_late()) {
            ledger.trace.push(format!(
                "user {me}: round {} status {:?} sent {:?} incoming {:?}",
                report.round,
                report.status,
                report
                    .sent
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
                report
                    .incoming
                    .as_ref()
                    .map(|i| (i.role, text_of(&i.payload)))
            ));
            if let Some(inc) = report.incoming {
                let key = (inc.from, me, text_of(&inc.payload));
                if inc.role == BlockRole::Send && ledger.sent.contains(&key) {
                    *ledger.arrived.entry(key).or_default() += 1;
                } else {
                    ledger
                        .bogus
                        .push(format!("unexpected arrival {:?} {key:?}", inc.role));
                }
            }
        }
        out.push(u);
    }
    out
}

/// Rounds until every message has arrived and every outbox is empty (at most `max`).
async fn rounds_until_done(mut users: Vec<User>, ledger: &mut Ledger, max: usize) -> Vec<User> {
    for _ in 0..max {
        if ledger.undelivered() == 0
            && users
                .iter()
                .all(|u| u.outbox.is_empty() && u.unsettled() == 0)
        {
            break;
        }
        users = one_round(users, ledger).await;
    }
    users
}

fn flood_options() -> Options {
    Options {
        entries: 2,
        exchange_limits: LimitsToml {
            max_connections: 16,
            ..LimitsToml::default()
        },
        entry_limits: LimitsToml {
            max_connections: 24,
            ..LimitsToml::default()
        },
        ..Options::default()
    }
}

/// Open file descriptors of a process (sockets included), on Linux.
fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Samples [`open_fds`] of `pids` every 20 ms on a thread of its own until `stop`;
/// returns the peak of each.
fn sample_fds(pids: Vec<u32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<usize>> {
    std::thread::spawn(move || {
        let mut peak = vec![0; pids.len()];
        while !stop.load(Ordering::Relaxed) {
            for (p, &pid) in peak.iter_mut().zip(&pids) {
                *p = (*p).max(open_fds(pid).unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// The whole flood at once, while four users exchange eight messages and a fifth user
/// joins in the middle of it: garbage on every port, more stalled TLS handshakes than
/// relay 0 and exchange server 0 have connection slots, oversized and dribbled frames on
/// both relays' user ports.
///
/// Asserts: every honest message arrives exactly once with its content and source; the
/// newcomer registers; all three servers commit every round the users took part in;
/// every attack connection on a served port is closed by the server (handshake and frame
/// deadlines, `TooLong` and `Timeout` notices), none held; the caps hold (no process
/// ever has more open descriptors than before the flood plus its `max_connections`,
/// while the stalled handshakes fill most of the slots); nothing panics or exits; and a
/// user connects at once after the flood.
#[cfg(unix)]
#[test]
fn honest_users_are_served_through_garbage_oversized_and_slow_loris_floods() {
    run(async {
        let started = Instant::now();
        let d = Deployment::write(flood_options());
        let mut sys = blocking(|| start_ready(&d));
        let mut users = register(&d, 4).await;
        let committed_before = sys.committed(0).len();

        // Two messages from each user to the next, queued up front: one leaves per round.
        let mut ledger = Ledger::default();
        let ids: Vec<u64> = users.iter().map(|u| u.pseudonym().get()).collect();
        for (i, u) in users.iter_mut().enumerate() {
            let to = ids[(i + 1) % ids.len()];
            for k in 0..2 {
                ledger.queue(u, to, format!("m{k} {i}>{}", (i + 1) % 4));
            }
        }

        // Descriptors before the flood (honest connections included: they count against
        // the caps too), then sampled throughout.
        let pids: Vec<u32> = sys.all().map(|p| p.pid()).collect();
        let names: Vec<String> = sys.all().map(|p| p.name.clone()).collect();
        let caps: Vec<usize> = (0..3)
            .map(|_| d.opts.exchange_limits.max_connections)
            .chain((0..2).map(|_| d.opts.entry_limits.max_connections))
            .collect();
        let fds_before: Vec<usize> = pids.iter().map(|&p| open_fds(p).unwrap_or(0)).collect();
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let sampler = sample_fds(pids.clone(), stop_sampling.clone());

        // Attack every port.
        let bound = Duration::from_millis(d.opts.entry_limits.handshake_timeout_ms) + SLACK;
        let stop = Arc::new(AtomicBool::new(false));
        let garbage_log = Arc::new(AttackLog::default());
        let peer_garbage_log = Arc::new(AttackLog::default());
        let stall_log = Arc::new(AttackLog::default());
        let oversized_log = Arc::new(AttackLog::default());
        let dribble_log = Arc::new(AttackLog::default());
        let mut attacks = tokio::task::JoinSet::new();
        let mut targets: Vec<SocketAddr> = (0..2).map(|j| d.entry_addr(j)).collect();
        targets.extend((0..3).map(|i| d.relay_addr(i)));
        for &addr in &targets {
            attacks.spawn(garbage(
                addr,
                bound,
                false,
                stop.clone(),
                garbage_log.clone(),
            ));
        }
        // The peer ports are bound for the server's lifetime (to rebuild the mesh after a
        // failure) but accept only while the mesh is being built: once it is up, the
        // kernel queues these and nobody reads them. What must hold there is that the
        // mesh is not disturbed.
        for i in 0..3 {
            attacks.spawn(garbage(
                d.peer_addr(i),
                Duration::from_millis(200),
                true,
                stop.clone(),
                peer_garbage_log.clone(),
            ));
        }
        // More stalled handshakes than relay 0 and server 0 have connection slots.
        for (addr, n) in [
            (d.entry_addr(0), 48),
            (d.relay_addr(0), 32),
            (d.entry_addr(1), 6),
        ] {
            // Each waits for a slot behind the others: n / cap handshake timeouts.
            let bound = bound + Duration::from_millis(500) * (n as u32).div_ceil(8);
            attacks.spawn(stall_handshakes(
                addr,
                n,
                bound,
                stop.clone(),
                stall_log.clone(),
            ));
        }
        for j in 0..2 {
            attacks.spawn(tls_attacks(
                d.roots(),
                d.entry_addr(j),
                j,
                Duration::from_millis(d.opts.entry_limits.frame_timeout_ms) + SLACK,
                stop.clone(),
                oversized_log.clone(),
                dribble_log.clone(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Two rounds under fire, then a newcomer registers through the flooded relays and
        // sends to user 0.
        users = one_round(users, &mut ledger).await;
        users = one_round(users, &mut ledger).await;
        let t_join = Instant::now();
        let mut newcomer = register(&d, 1).await.pop().unwrap();
        let join_time = t_join.elapsed();
        ledger.queue(&mut newcomer, ids[0], "hello from the newcomer".into());
        users.push(newcomer);
        users = rounds_until_done(users, &mut ledger, 10).await;
        let rounds_under_fire =
            ledger.rounds.iter().max().unwrap() - ledger.rounds.iter().min().unwrap() + 1;

        stop.store(true, Ordering::Relaxed);
        // Attack tasks end after their current connection (each bounded).
        let drain = tokio::time::timeout(Duration::from_secs(30), async {
            while attacks.join_next().await.is_some() {}
        })
        .await;
        stop_sampling.store(true, Ordering::Relaxed);
        let fds_peak = sampler.join().unwrap();
        assert!(
            drain.is_ok(),
            "attack connections still open 30 s after the flood stopped"
        );

        let logs = sys.logs();
        if let Err(e) = ledger.check() {
            panic!("honest traffic was not served exactly once:\n{e}\n{logs}");
        }
        for (name, log) in [
            ("garbage", &garbage_log),
            ("stalled handshakes", &stall_log),
            ("oversized frames", &oversized_log),
            ("dribbled frames", &dribble_log),
        ] {
            let failures = log.failures.lock().unwrap();
            assert!(
                failures.is_empty(),
                "{name}: {}\n{:?}\n{logs}",
                log.summary(),
                &failures[..failures.len().min(10)]
            );
            assert!(
                log.closed.load(Ordering::Relaxed) > 0,
                "{name}: no attack connection completed: {}",
                log.summary()
            );
        }
        assert!(peer_garbage_log.opened.load(Ordering::Relaxed) > 0);
        // The caps held. Descriptors other than connections (logs, database, listeners,
        // links) barely move; allow a few for those.
        let fds_report: Vec<String> = (0..pids.len())
            .map(|k| {
                format!(
                    "{}: {} before, peak {}, cap {}",
                    names[k], fds_before[k], fds_peak[k], caps[k]
                )
            })
            .collect();
        for k in 0..pids.len() {
            assert!(
                fds_peak[k] <= fds_before[k] + caps[k] + 4,
                "{} went over its connection cap: {fds_report:?}",
                names[k]
            );
        }
        // And the flood did fill them: relay 0 and server 0 reached their caps.
        for (k, name) in [(0, "exchange-0"), (3, "entry-0")] {
            assert!(
                fds_peak[k] + 7 >= fds_before[k] + caps[k],
                "{name}: the stalled handshakes never filled its slots: {fds_report:?}"
            );
        }
        // The servers kept committing, every round, at all three.
        let c: Vec<Vec<u64>> = (0..3).map(|i| sys.committed(i)).collect();
        assert!(
            c[0].len() >= committed_before + rounds_under_fire as usize,
            "servers committed {} rounds while users ran {rounds_under_fire}\n{logs}",
            c[0].len() - committed_before
        );
        for r in &ledger.rounds {
            for (i, ci) in c.iter().enumerate() {
                assert!(
                    ci.contains(r),
                    "server {i} did not commit round {r}\n{logs}"
                );
            }
        }
        // The relays and servers saw and refused the flood: handshake failures at every
        // listener, handshake deadlines where the handshakes stalled, frame errors on the
        // relays' user connections.
        for p in sys.all() {
            let log = p.log_text();
            assert!(log.contains("connection refused"), "{}:\n{log}", p.name);
        }
        for p in [&sys.exchanges[0], &sys.entries[0], &sys.entries[1]] {
            let log = p.log_text();
            assert!(
                log.contains("TLS handshake timed out"),
                "{}:\n{log}",
                p.name
            );
        }
        for j in 0..2 {
            let log = sys.entries[j].log_text();
            assert!(
                log.contains("connection closed with error"),
                "entry {j}:\n{log}"
            );
        }
        blocking(|| sys.assert_healthy());
        // After the flood, a user connects at once.
        let t = Instant::now();
        let late = tls_to_entry(&d.roots(), d.entry_addr(0), 0).await;
        assert!(late.is_ok() && t.elapsed() < SLACK, "{late:?}");
        eprintln!(
            "flood: {} rounds under fire, newcomer registered in {join_time:?}; garbage {}; peer-port garbage {}; stalled {}; oversized {}; dribbled {}; descriptors {fds_report:?}; total {:?}",
            rounds_under_fire,
            garbage_log.summary(),
            peer_garbage_log.summary(),
            stall_log.summary(),
            oversized_log.summary(),
            dribble_log.summary(),
            started.elapsed()
        );
        drop(users);
        blocking(|| sys.stop());
    })
}

/// The limits of one relay, each observed acting on its own, with timings that tell the
/// cause apart: `max_connections = 4` and a 1 s handshake deadline, a 1 s frame deadline,
/// and `max_envelopes_per_round = 3`.
///
/// - Connection cap and handshake deadline: four silent TCP connections hold every slot;
///   each is closed by the relay no sooner than the handshake deadline (and not much
///   later), and a real user's TLS connection made meanwhile completes only once one of
///   them has been cut, so no sooner than the deadline either.
/// - Per-connection frame limits: an envelope header announcing 4 GiB and a registration
///   one byte over its cap are refused with `TooLong` at once (not by the deadline); a
///   frame dribbled one byte per 100 ms is cut with `Timeout` no sooner than the frame
///   deadline; a second envelope for the same server in one round on one connection
///   closes the connection with `Invalid`.
/// - Per-round cap: of four envelopes for server 0 in one round from four connections,
///   the relay forwards three and tells the fourth sender `Unavailable`; server 0 logs
///   exactly three rejected (they are junk) in that round.
///
/// Then an honest user registers and completes a round through the same relay.
#[cfg(unix)]
#[test]
fn the_relays_connection_cap_deadlines_and_per_connection_limits_act() {
    run(async {
        const HANDSHAKE: Duration = Duration::from_millis(1000);
        const FRAME: Duration = Duration::from_millis(1000);
        // tokio timers never fire early; allow for clock granularity only.
        const EARLY: Duration = Duration::from_millis(10);
        let d = Deployment::write(Options {
            submit_window_ms: 1000,
            entry_limits: LimitsToml {
                max_connections: 4,
                handshake_timeout_ms: HANDSHAKE.as_millis() as u64,
                frame_timeout_ms: FRAME.as_millis() as u64,
                shutdown_grace_ms: 300,
                idle_timeout_ms: 60_000,
            },
            max_envelopes_per_round: 3,
            ..Options::default()
        });
        let mut sys = blocking(|| start_ready(&d));
        let roots = d.roots();
        let addr = d.entry_addr(0);

        // The cap and the handshake deadline.
        let t0 = Instant::now();
        let mut silent = tokio::task::JoinSet::new();
        for _ in 0..4 {
            // Timed from before the connect: the relay's deadline starts after it.
            let t = Instant::now();
            let mut s = TcpStream::connect(addr).await.unwrap();
            silent.spawn(async move {
                match closed_within(&mut s, HANDSHAKE + SLACK).await {
                    Some(_) => Ok(t.elapsed()),
                    None => Err(t.elapsed()),
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let user = tls_to_entry(&roots, addr, 0).await;
        let user_after = t0.elapsed();
        assert!(user.is_ok(), "{user:?}");
        assert!(
            user_after + EARLY >= HANDSHAKE,
            "a fifth connection was served after {user_after:?} while four silent ones held a cap of 4"
        );
        while let Some(r) = silent.join_next().await {
            let closed = r.unwrap();
            match closed {
                Ok(after) => assert!(
                    after + EARLY >= HANDSHAKE && after <= HANDSHAKE + SLACK,
                    "a silent connection was closed after {after:?} (deadline {HANDSHAKE:?})"
                ),
                Err(held) => panic!("a silent connection was still open after {held:?}"),
            }
        }
        drop(user);

        // Per-connection frame limits.
        for (frame, what) in [
            (header(MsgType::SealedEnvelope, u32::MAX), "4 GiB envelope"),
            (
                header(MsgType::RegisterRequest, caps::REGISTRATION as u32 + 1),
                "oversized registration",
            ),
        ] {
            let mut s = tls_to_entry(&roots, addr, 0).await.unwrap();
            s.write_all(&frame).await.unwrap();
            s.flush().await.unwrap();
            let code = notice_then_close(&mut s, FRAME + SLACK).await;
            assert_eq!(code, Ok(Some(ErrorCode::TooLong)), "{what}");
        }
        {
            let s = tls_to_entry(&roots, addr, 0).await.unwrap();
            let (mut rd, mut wr) = tokio::io::split(s);
            let mut f = header(MsgType::SealedEnvelope, 200);
            f.extend(vec![7u8; 200]);
            let reader = tokio::spawn(async move {
                let r = notice_then_close(&mut rd, FRAME + SLACK).await;
                (r, Instant::now())
            });
            let t = Instant::now();
            for b in &f {
                if reader.is_finished()
                    || wr.write_all(&[*b]).await.is_err()
                    || wr.flush().await.is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (code, at) = reader.await.unwrap();
            let after = at - t;
            assert_eq!(code, Ok(Some(ErrorCode::Timeout)), "dribbled frame");
            assert!(
                after + EARLY >= FRAME && after <= FRAME + SLACK,
                "a dribbled frame was cut after {after:?} (deadline {FRAME:?})"
            );
        }

        // One envelope per server per round per connection; three per server per round.
        let mut links = Vec::new();
        for _ in 0..4 {
            links.push(
                RelayLink::connect(addr, 0, roots.clone(), SLACK)
                    .await
                    .unwrap(),
            );
        }
        let round = open_round(&mut links[0]).await;
        let junk = |server: u8| SealedEnvelope {
            round,
            server,
            sealed: vec![0x5a; 120],
        };
        for link in &mut links {
            link.submit(&junk(0)).await.unwrap();
        }
        // Each sender hears its round close; the one over the cap was told so.
        let mut refused = Vec::new();
        for (k, link) in links.iter_mut().enumerate() {
            loop {
                match tokio::time::timeout(Duration::from_secs(20), link.next())
                    .await
                    .expect("relay silent for 20 s")
                    .unwrap()
                {
                    FromRelay::Refused(n) => refused.push((k, n.code)),
                    FromRelay::Round(a) if a.round > round => break,
                    _ => {}
                }
            }
        }
        // (Which of the four is over the cap depends on the order the relay reads them.)
        assert!(
            refused.len() == 1 && refused[0].1 == ErrorCode::Unavailable,
            "{refused:?}"
        );
        blocking(|| {
            system::wait_until(Duration::from_secs(20), "the round to commit", || {
                sys.committed(0).contains(&round)
            })
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
        let rejected = system::rejections(&sys.exchanges[0].log_text(), round);
        assert_eq!(
            rejected.iter().map(|r| r.0).sum::<u64>(),
            3,
            "server 0, round {round}: {rejected:?}\n{}",
            sys.logs()
        );
        drop(links);

        // A second envelope for one server in one round on one connection.
        let mut doubled = RelayLink::connect(addr, 0, roots.clone(), SLACK)
            .await
            .unwrap();
        let round = open_round(&mut doubled).await;
        let junk = SealedEnvelope {
            round,
            server: 1,
            sealed: vec![0x5a; 120],
        };
        doubled.submit(&junk).await.unwrap();
        doubled.submit(&junk).await.unwrap();
        let second = loop {
            match tokio::time::timeout(FRAME + SLACK, doubled.next()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Ok(e),
                Err(_) => break Err("still open"),
            }
        };
        assert!(
            matches!(
                second,
                Ok(WireError::Remote {
                    code: ErrorCode::Invalid | ErrorCode::Duplicate,
                    ..
                })
            ),
            "a second envelope for one server in one round: {second:?}"
        );

        // An honest user is served through the same relay.
        let mut ledger = Ledger::default();
        let users = register(&d, 1).await;
        let users = one_round(users, &mut ledger).await;
        assert_eq!(ledger.rounds.len(), 1);
        assert!(
            ledger.trace[0].contains("status Some(Cover)"),
            "{:?}",
            ledger.trace
        );
        drop(users);
        blocking(|| sys.assert_healthy());
        blocking(|| sys.stop());
    })
}

/// A user driven by hand, so the test holds its sealed envelopes (as a relay, or anyone
/// who could read them, would) and can replay them.
struct HandUser {
    identity: UserIdentity,
    keys: Vec<LongTermKey>,
    link: RelayLink,
    /// The latest round announced on the link.
    round: Option<wire::RoundAnnounce>,
}

impl HandUser {
    async fn register(d: &Deployment, j: u32) -> HandUser {
        let identity = UserIdentity::generate(&mut rand_core::OsRng);
        let link = RelayLink::connect(d.entry_addr(j), j, d.roots(), SLACK)
            .await
            .unwrap();
        let mut u = HandUser {
            identity,
            keys: Vec::new(),
            link,
            round: None,
        };
        for (server, descriptor) in d.descriptors().iter().enumerate() {
            let (pending, request) = u
                .identity
                .register(descriptor, now_secs(), &mut rand_core::OsRng)
                .unwrap();
            u.link
                .register(&RegisterRequest {
                    server: server as u8,
                    body: request.as_bytes().to_vec(),
                })
                .await
                .unwrap();
            let body = loop {
                match u.next().await {
                    FromRelay::Registered(r) if r.server as usize == server => break r.body,
                    _ => {}
                }
            };
            let secret = pending
                .finish(&RegistrationResponse::from_bytes(&body).unwrap())
                .unwrap();
            u.keys.push(secret.agree());
        }
        u
    }

    async fn next(&mut self) -> FromRelay {
        let ev = tokio::time::timeout(Duration::from_secs(20), self.link.next())
            .await
            .expect("relay silent for 20 s")
            .expect("relay link failed");
        if let FromRelay::Round(a) = &ev {
            self.round = Some(*a);
        }
        ev
    }

    /// Waits for a round announced after `after` with at least 150 ms left to submit.
    async fn round_after(&mut self, after: u64) -> u64 {
        loop {
            if let Some(a) = self.round {
                let left = a.deadline_unix_ms.saturating_sub(system_now_ms());
                if a.round > after && left >= 150 {
                    return a.round;
                }
            }
            self.next().await;
        }
    }

    /// Seals `block` for `round`: one envelope per server.
    fn seal(&self, cfg: &RoundConfig, round: u64, block: &Block) -> Vec<SealedEnvelope> {
        let me = self.identity.pseudonym().get();
        let shares = block.share_checked(cfg, round, me, &mut rand::thread_rng());
        shares
            .iter()
            .enumerate()
            .map(|(server, share)| {
                let bytes = share.to_bytes();
                let env = self.keys[server]
                    .seal(
                        round,
                        Direction::UserToServer,
                        &bytes,
                        &mut rand_core::OsRng,
                    )
                    .unwrap();
                SealedEnvelope {
                    round,
                    server: server as u8,
                    sealed: env.into_bytes(),
                }
            })
            .collect()
    }
}

fn system_now_ms() -> u64 {
    acs_transport::exchange::clock::now_unix_ms()
}

/// Reads `link` until a round is announced with at least 500 ms left to submit.
async fn open_round(link: &mut RelayLink) -> u64 {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), link.next())
            .await
            .expect("no round announced for 20 s")
            .unwrap()
        {
            FromRelay::Round(a) if a.deadline_unix_ms.saturating_sub(system_now_ms()) >= 500 => {
                return a.round
            }
            _ => {}
        }
    }
}

/// Output shares of `round` that reach `link` within `within`, by server; stops early
/// once `total` (shared with readers of other links) reaches 3.
async fn outputs_on(
    link: &mut RelayLink,
    round: u64,
    total: &std::sync::atomic::AtomicUsize,
    within: Duration,
) -> Vec<(u8, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while total.load(Ordering::SeqCst) < 3 {
        // Short reads, so that this reader notices when the other one completed the set.
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
        match tokio::time::timeout_at(until, link.next()).await {
            Ok(Ok(FromRelay::Output(o))) if o.round == round => {
                got.push((o.server, o.sealed));
                total.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("relay link failed: {e}"),
            Err(_) if tokio::time::Instant::now() >= deadline => break,
            Err(_) => {}
        }
    }
    got
}

/// Reads `link` until round `after + 1` or later is announced; returns it and every output
/// share that arrived meanwhile.
async fn until_next_round(link: &mut RelayLink, after: u64) -> (wire::RoundAnnounce, Vec<u64>) {
    let mut outputs = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), link.next())
            .await
            .expect("no round announced for 20 s")
            .expect("relay link failed")
        {
            FromRelay::Round(a) if a.round > after => return (a, outputs),
            FromRelay::Output(o) => outputs.push(o.round),
            _ => {}
        }
    }
}

/// A sender's sealed envelopes replayed by another connection in the same round, and
/// again in later rounds: each server accepts one envelope per user per round and rejects
/// the rest (logged as `envelopes rejected`), the block is processed once, and the
/// receiver gets the message exactly once.
#[cfg(unix)]
#[test]
fn replayed_envelopes_are_rejected_and_the_message_arrives_once() {
    run(async {
        // A wide submission window: each replay is sent after an announcement, and on a
        // loaded machine 150 ms of a 300 ms window was not always enough to get it in.
        let d = Deployment::write(Options {
            entries: 2,
            submit_window_ms: 1000,
            ..Options::default()
        });
        let mut sys = blocking(|| start_ready(&d));
        let cfg = d.opts.round;
        let bob = register(&d, 1).await.pop().unwrap();
        let bob_id = bob.pseudonym().get();
        let mut alice = HandUser::register(&d, 0).await;
        let alice_id = alice.identity.pseudonym().get();
        // The replayer uses the other relay: the relay refuses a second envelope per server
        // on one connection, so a replay needs a connection of its own anyway.
        let mut mallory = RelayLink::connect(d.entry_addr(1), 1, d.roots(), SLACK)
            .await
            .unwrap();

        // Bob takes part in every round until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let bob_task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ledger = Ledger::default();
                ledger.sent.push((alice_id, bob_id, "hi bob".into()));
                let mut users = vec![bob];
                while !stop.load(Ordering::Relaxed) {
                    users = one_round(users, &mut ledger).await;
                }
                ledger
            })
        };

        // Round r: Alice sends; Mallory sends the very same bytes through relay 1.
        let r = alice.round_after(0).await;
        let block = Block {
            role: BlockRole::Send,
            dst: bob_id,
            payload: acs_engine::round::payload_to_words(b"hi bob", cfg.payload_words).unwrap(),
        };
        let envelopes = alice.seal(&cfg, r, &block);
        for e in &envelopes {
            alice.link.submit(e).await.unwrap();
            mallory.submit(e).await.unwrap();
        }
        // Each server's output share goes to exactly one of the two connections.
        let total = std::sync::atomic::AtomicUsize::new(0);
        let (to_alice, to_mallory) = tokio::join!(
            outputs_on(&mut alice.link, r, &total, Duration::from_secs(10)),
            outputs_on(&mut mallory, r, &total, Duration::from_secs(10)),
        );
        let mut servers: Vec<u8> = to_alice
            .iter()
            .chain(to_mallory.iter())
            .map(|(l, _)| *l)
            .collect();
        servers.sort_unstable();
        assert_eq!(
            servers,
            vec![0, 1, 2],
            "round {r}: outputs to Alice {:?}, to Mallory {:?}\n{}",
            to_alice.iter().map(|o| o.0).collect::<Vec<_>>(),
            to_mallory.iter().map(|o| o.0).collect::<Vec<_>>(),
            sys.logs()
        );
        // Each is sealed to Alice for this round (the output routing followed whichever copy
        // the server accepted; the bytes inside are the server's business).
        for (l, sealed) in to_alice.into_iter().chain(to_mallory) {
            let env = Envelope::from_vec(sealed).unwrap();
            assert!(alice.keys[l as usize]
                .open(r, Direction::ServerToUser, &env)
                .is_ok());
        }

        // Rounds r+1 and on: Mallory replays the old envelopes, relabelled with the open
        // round (the relay accepts them: it cannot tell). They open nowhere.
        let mut replay_rounds = Vec::new();
        let mut last = r;
        let mut seen = Vec::new();
        for _ in 0..2 {
            // Mallory's link hears the announcements too; take one with time left.
            let a = loop {
                let (a, outputs) = until_next_round(&mut mallory, last).await;
                seen.extend(outputs);
                last = a.round;
                if a.deadline_unix_ms.saturating_sub(system_now_ms()) >= 600 {
                    break a;
                }
            };
            for e in &envelopes {
                mallory
                    .submit(&SealedEnvelope {
                        round: a.round,
                        server: e.server,
                        sealed: e.sealed.clone(),
                    })
                    .await
                    .unwrap();
            }
            replay_rounds.push(a.round);
        }
        // Outputs of a round reach the relay before the servers announce the one after next.
        let (_, outputs) = until_next_round(&mut mallory, last + 1).await;
        seen.extend(outputs);
        assert!(
            !seen.iter().any(|round| replay_rounds.contains(round)),
            "replays into rounds {replay_rounds:?} got outputs (rounds of outputs seen: {seen:?})"
        );
        blocking(|| {
            system::wait_until(Duration::from_secs(20), "replay rounds to commit", || {
                (0..3).all(|i| sys.committed(i).contains(&last))
            })
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
        stop.store(true, Ordering::Relaxed);
        let ledger = tokio::time::timeout(Duration::from_secs(30), bob_task)
            .await
            .expect("Bob's rounds did not end")
            .unwrap();
        if let Err(e) = ledger.check() {
            panic!("Bob: {e}\n{}", sys.logs());
        }
        // Every server rejected exactly the one replay in each of those rounds: as a replay
        // in round r, as a tag of no user in the later rounds (where the log names reasons).
        for i in 0..3 {
            let log = sys.exchanges[i].log_text();
            for (round, why) in std::iter::once((r, "Replay"))
                .chain(replay_rounds.iter().map(|&n| (n, "UnknownTag")))
            {
                let lines = system::rejections(&log, round);
                let total: u64 = lines.iter().map(|l| l.0).sum();
                assert_eq!(
                    total,
                    1,
                    "server {i}, round {round}: {lines:?}\n{}",
                    sys.logs()
                );
                assert!(
                    lines
                        .iter()
                        .all(|l| l.1.is_none() || l.1.as_deref() == Some(why)),
                    "server {i}, round {round}: {lines:?}"
                );
            }
        }
        blocking(|| sys.assert_healthy());
        blocking(|| sys.stop());
    })
}

/// The relay's user port refuses a type users may not send (here `MpcData`, whose cap is
/// 1 GiB) as soon as the header names it, before its body: an unauthenticated TLS client
/// cannot make the relay buffer up to a server-only type's cap.
#[cfg(unix)]
#[test]
fn the_user_port_refuses_server_only_frame_types_before_their_body() {
    run(async {
        let d = Deployment::write(Options {
            entry_limits: LimitsToml {
                frame_timeout_ms: 10_000,
                ..LimitsToml::default()
            },
            ..Options::default()
        });
        let sys = blocking(|| start_ready(&d));
        let entry = &sys.entries[0];
        let (hwm_before, _) = entry.memory_kib().unwrap();
        let mut s = tls_to_entry(&d.roots(), d.entry_addr(0), 0).await.unwrap();
        const BODY: usize = 256 << 20;
        s.write_all(&header(MsgType::MpcData, BODY as u32))
            .await
            .unwrap();
        s.flush().await.unwrap();
        // Send the body in 1 MiB pieces, watching for the relay's refusal in between.
        let chunk = vec![0u8; 1 << 20];
        let mut sent = 0usize;
        let (mut rd, mut wr) = tokio::io::split(s);
        let refusal = tokio::spawn(async move {
            let t = Instant::now();
            let code = notice_then_close(&mut rd, Duration::from_secs(20)).await;
            (code, t.elapsed())
        });
        while sent < BODY && !refusal.is_finished() {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = wr.flush().await;
        let (code, after) = refusal.await.unwrap();
        let (hwm_after, _) = entry.memory_kib().unwrap();
        assert!(
        sent <= 4 << 20,
        "the relay took {} MiB of a frame users may not send before refusing it ({code:?} after {after:?}); its peak memory grew from {} to {} MiB",
        sent >> 20,
        hwm_before >> 10,
        hwm_after >> 10
    );
        assert_eq!(code, Ok(Some(ErrorCode::Unexpected)));
        drop(sys);
    })
}

/// Connections that complete TLS and then say nothing must not hold a relay's slots for
/// ever: honest users send an envelope every round, so the relay closes a user connection
/// silent for `idle_timeout_ms`, and a new user gets in after an attacker filled
/// `max_connections` with idle connections.
#[cfg(unix)]
#[test]
fn idle_tls_connections_do_not_lock_new_users_out() {
    run(async {
        let d = Deployment::write(Options {
            entry_limits: LimitsToml {
                max_connections: 8,
                // Shorter than the rounds the test waits out below.
                idle_timeout_ms: 1000,
                ..LimitsToml::default()
            },
            ..Options::default()
        });
        let sys = blocking(|| start_ready(&d));
        let roots = d.roots();
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(tls_to_entry(&roots, d.entry_addr(0), 0).await.unwrap());
        }
        // Rounds go by; the idle connections send nothing.
        let n = sys.committed(0).len();
        blocking(|| sys.wait_committed(n + 5, Duration::from_secs(30)));
        let c = TlsConnector::from(tls::client_config(roots.clone(), None).unwrap());
        let newcomer = listener::connect(
            &c,
            d.entry_addr(0),
            Role::Entry(0).server_name(),
            Duration::from_secs(10),
        )
        .await;
        assert!(
        newcomer.is_ok(),
        "a new user could not connect while {} idle connections held the relay's slots: {newcomer:?}",
        idle.len()
    );
        drop(idle);
        drop(sys);
    })
}

/// Clients that connect to an exchange server's peer port and stall the handshake while
/// the mesh forms must not keep the real peer out: `accept_prev` (transport/src/mpc.rs)
/// handshakes the connections it accepts side by side and takes the first that proves to
/// be the peer. (When it handshook one at a time, eight stalled connections kept server 0
/// out for good: no round in 20 s.)
#[cfg(unix)]
#[test]
fn stalled_peer_port_connections_do_not_stop_the_mesh_forming() {
    run(async {
        let d = Deployment::write(Options::default());
        // Servers 1 and 2 and the relay start; the attacker queues stalled connections on
        // server 1's peer port (where server 0 will dial) before server 0 starts.
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(AttackLog::default());
        let mut attacks = tokio::task::JoinSet::new();
        let entries = vec![d.start_entry(0, "")];
        let mut exchanges = vec![d.start_exchange(1, ""), d.start_exchange(2, "")];
        attacks.spawn(stall_handshakes(
            d.peer_addr(1),
            8,
            Duration::from_secs(30),
            stop.clone(),
            log.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        exchanges.insert(0, d.start_exchange(0, ""));
        let sys = system::System { exchanges, entries };
        let formed = blocking(|| {
            system::wait_until(Duration::from_secs(20), "the first round", || {
                !sys.committed(0).is_empty()
            })
        });
        stop.store(true, Ordering::Relaxed);
        attacks.abort_all();
        assert!(
            formed.is_ok(),
            "no round in 20 s with stalled connections on the peer ports ({})\n{}",
            log.summary(),
            sys.logs()
        );
        drop(sys);
    })
}

/// Sanity for the harness itself: the frame header this file builds is the codec's.
#[test]
fn header_matches_the_codec() {
    let f = wire::encode_frame(&SealedEnvelope {
        round: 1,
        server: 0,
        sealed: vec![1, 2, 3],
    })
    .unwrap();
    assert_eq!(
        f[..HEADER_LEN],
        header(MsgType::SealedEnvelope, (f.len() - HEADER_LEN) as u32)[..]
    );
}
