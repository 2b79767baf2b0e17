//! The entry relay (design §5, `docs/relay.md`): thin, and it keeps state for a few rounds.
//!
//! Users connect over server-authenticated TLS and send [`SealedEnvelope`]s (round,
//! target exchange server, opaque sealed bytes) and [`RegisterRequest`]s. The relay
//! holds one *open* round, the one announced by the exchange servers: envelopes for it
//! are collected per target server until its deadline. At the deadline each server's
//! envelopes are shuffled (a fresh uniformly random permutation, so arrival order is not
//! passed on), numbered `0..n` in shuffled order, and sent as one [`RelayBatch`] over
//! mutual TLS. The relay remembers, for the last few rounds (`KEEP_ROUNDS`), which user
//! connection each slot came from, and routes the [`RelayOutputs`] back as
//! [`OutputShare`]s; older slot maps are forgotten as rounds close. Keeping a few lets an
//! exchange server that restarted after committing hand out that round's outputs late.
//!
//! A relay never sees a pseudonym: it is inside the sealed bytes, which only the target
//! exchange server can open.

use crate::listener::{self, Conn, Limits, ListenerStats, ShutdownRx};
use crate::tls::{self, ClientAuth, Identity, Role};
use crate::wire::{
    self, BatchEntry, ErrorCode, ErrorNotice, MsgType, OutputShare, RegisterRequest,
    RegisterResponse, RelayBatch, RelayOutputs, RelayRegisterRequest, RelayRegisterResponse,
    RoundAnnounce, SealedEnvelope, WireError,
};
use rand::seq::SliceRandom;
use rustls::RootCertStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Frames queued for one user before further outputs to it are dropped.
const USER_QUEUE: usize = 64;
/// Frames queued for one exchange server while its link is down or slow.
const UPSTREAM_QUEUE: usize = 1024;

/// How a relay is set up.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// This relay's index `j` (certificate `entry-{j}.acs`).
    pub index: u32,
    /// The relay ports of exchange servers 0, 1, 2.
    pub exchanges: [SocketAddr; 3],
    /// This relay's certificate and key.
    pub identity: Identity,
    /// The deployment CA.
    pub roots: Arc<RootCertStore>,
    /// Limits of the user-facing listener (and timeouts of the exchange links).
    pub limits: Limits,
    /// Cap on envelopes per round per exchange server; more are refused (memory bound).
    pub max_envelopes_per_round: usize,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The user listener's socket.
    #[error("user listener: {0}")]
    Io(#[from] std::io::Error),
}

type ConnId = u64;

/// What users may send a relay (anything else is refused before its body is read).
const USER_TYPES: [MsgType; 3] = [
    MsgType::SealedEnvelope,
    MsgType::RegisterRequest,
    MsgType::ErrorNotice,
];
const USER_EXPECTED: &str = "SealedEnvelope or RegisterRequest";

/// Closed rounds whose slot maps a relay keeps, to route outputs that come late (an
/// exchange server re-releasing after a restart; no round commits while one is down).
const KEEP_ROUNDS: u64 = 4;

struct OpenRound {
    announce: RoundAnnounce,
    /// Per exchange server: (user connection, sealed bytes) in arrival order.
    envelopes: [Vec<(ConnId, Vec<u8>)>; 3],
    /// Which servers each connection already sent an envelope for (bit `l`).
    sent: HashMap<ConnId, u8>,
}

struct State {
    open: Option<OpenRound>,
    /// The last round announced (opened), to ignore duplicates from the other servers.
    last_round: Option<u64>,
    /// Slot → user connection, per (round, server), for the last [`KEEP_ROUNDS`] closed
    /// rounds: a restarted exchange server hands out its last committed round's outputs
    /// again a few rounds late at most.
    inflight: HashMap<(u64, u8), Vec<ConnId>>,
    users: HashMap<ConnId, mpsc::Sender<Vec<u8>>>,
    next_conn: ConnId,
    registrations: HashMap<(u8, u64), ConnId>,
    next_request: u64,
    /// Whether the fault tests' tampering has happened (it happens once).
    #[cfg(feature = "fault-injection")]
    tampered: bool,
}

/// Counters an operator (and the tests) can read.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Envelopes accepted into a batch.
    pub envelopes: std::sync::atomic::AtomicU64,
    /// Batches sent upstream.
    pub batches: std::sync::atomic::AtomicU64,
    /// Output shares delivered to user connections.
    pub outputs: std::sync::atomic::AtomicU64,
    /// Output shares that could not be delivered (user gone or slow, unknown slot).
    pub outputs_dropped: std::sync::atomic::AtomicU64,
    /// User connections open now.
    pub user_connections: std::sync::atomic::AtomicU64,
    /// Whether the link to exchange server 0, 1, 2 is up.
    pub exchange_connected: [std::sync::atomic::AtomicBool; 3],
}

struct Shared {
    state: Mutex<State>,
    upstream: [mpsc::Sender<Vec<u8>>; 3],
    stats: Arc<RelayStats>,
    max_per_round: usize,
    // Only the fault tests' relay reads it.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    tamper: Tampering,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning means a panic mid-update of plain maps; the maps stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    /// Address users connect to.
    pub user_addr: SocketAddr,
    /// Outcomes of user connections.
    pub listener_stats: Arc<ListenerStats>,
    /// Traffic counters.
    pub stats: Arc<RelayStats>,
    /// The user listener; finishes after shutdown once open connections have drained.
    pub listener_task: tokio::task::JoinHandle<()>,
}

/// A relay that misbehaves on purpose, for the fault tests (feature `fault-injection`,
/// never in a release build): what it does to its batches for one exchange server.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tamper {
    /// The exchange server whose batches are tampered with.
    pub server: u8,
    /// Tampers with the first non-empty batch for `server` from this round on, once.
    pub round: u64,
    /// What is done.
    pub action: TamperAction,
}

/// What a tampering relay does to a batch. It tampers *consistently*: it numbers the
/// slots after tampering and routes outputs by those numbers, as a malicious relay that
/// wants to stay unnoticed would.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperAction {
    /// Leaves out the first `n` envelopes.
    Drop(usize),
    /// Sends the first `n` envelopes twice (the copies in slots of their own).
    Duplicate(usize),
    /// Reverses the (already shuffled) order: one more permutation, harmless.
    Reorder,
    /// Flips one bit in each of the first `n` envelopes.
    FlipBit(usize),
}

#[cfg(feature = "fault-injection")]
impl Tamper {
    /// Tampers with one server's shuffled `(connection, sealed)` list before it is
    /// numbered. Returns whether it tampered.
    fn apply(&self, round: u64, server: usize, envs: &mut Vec<(ConnId, Vec<u8>)>) -> bool {
        if round < self.round || server != self.server as usize || envs.is_empty() {
            return false;
        }
        let n = envs.len();
        match self.action {
            TamperAction::Drop(k) => {
                envs.drain(..k.min(n));
            }
            TamperAction::Duplicate(k) => {
                for i in 0..k.min(n) {
                    let copy = envs[i].clone();
                    envs.push(copy);
                }
            }
            TamperAction::Reorder => envs.reverse(),
            TamperAction::FlipBit(k) => {
                for (_, sealed) in envs.iter_mut().take(k) {
                    if let Some(b) = sealed.last_mut() {
                        *b ^= 1;
                    }
                }
            }
        }
        tracing::warn!(round, server, action = ?self.action, "TAMPERING with the batch (fault test)");
        true
    }
}

/// Starts a relay: the user listener on `users`, and links to the three exchange servers
/// (re-dialled with backoff while down). Runs until `shutdown`.
pub fn start(
    cfg: RelayConfig,
    users: TcpListener,
    shutdown: ShutdownRx,
) -> Result<Relay, RelayError> {
    start_relay(cfg, users, shutdown, None)
}

/// [`start`] for a relay that tampers with its batches as `tamper` says (fault tests).
#[cfg(feature = "fault-injection")]
pub fn start_tampering(
    cfg: RelayConfig,
    users: TcpListener,
    shutdown: ShutdownRx,
    tamper: Tamper,
) -> Result<Relay, RelayError> {
    start_relay(cfg, users, shutdown, Some(tamper))
}

#[cfg(not(feature = "fault-injection"))]
type Tampering = Option<std::convert::Infallible>;
#[cfg(feature = "fault-injection")]
type Tampering = Option<Tamper>;

fn start_relay(
    cfg: RelayConfig,
    users: TcpListener,
    shutdown: ShutdownRx,
    tamper: Tampering,
) -> Result<Relay, RelayError> {
    let server = tls::server_config(&cfg.identity, ClientAuth::None)?;
    let client = tls::client_config(cfg.roots.clone(), Some(&cfg.identity))?;
    // Only an exchange server's relay port answers with this protocol name.
    let mut client = (*client).clone();
    client.alpn_protocols = vec![crate::relay_port::RELAY_ALPN.to_vec()];
    let client = Arc::new(client);
    let user_addr = users.local_addr()?;
    let stats = Arc::new(RelayStats::default());
    let mut up_rx = Vec::new();
    let upstream = [0, 1, 2].map(|_| {
        let (tx, rx) = mpsc::channel(UPSTREAM_QUEUE);
        up_rx.push(rx);
        tx
    });
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            open: None,
            last_round: None,
            inflight: HashMap::new(),
            users: HashMap::new(),
            next_conn: 0,
            registrations: HashMap::new(),
            next_request: 0,
            #[cfg(feature = "fault-injection")]
            tampered: false,
        }),
        upstream,
        stats: stats.clone(),
        max_per_round: cfg.max_envelopes_per_round,
        tamper,
    });
    let connector = TlsConnector::from(client);
    for (l, rx) in up_rx.into_iter().enumerate() {
        tokio::spawn(upstream_link(
            l as u8,
            cfg.exchanges[l],
            connector.clone(),
            cfg.limits,
            rx,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    let listener_stats = Arc::new(ListenerStats::default());
    let limits = cfg.limits;
    let sh = shared.clone();
    let listener_task = tokio::spawn(listener::serve(
        "entry",
        users,
        TlsAcceptor::from(server),
        limits,
        listener_stats.clone(),
        shutdown,
        move |conn, sd| serve_user(conn, sd, sh.clone(), limits),
    ));
    Ok(Relay {
        user_addr,
        listener_stats,
        stats,
        listener_task,
    })
}

/// Shortest and longest wait before re-dialling an exchange server that is down.
const REDIAL_MIN: Duration = Duration::from_millis(50);
const REDIAL_MAX: Duration = Duration::from_secs(2);
/// Longest wait when the server refuses this relay (certificate not in its list, a peer
/// port, another process holding the link): an operator has to act, so retry slowly.
const REDIAL_REFUSED: Duration = Duration::from_secs(30);
/// A link that stayed up this long counts as healthy: the next failure starts the
/// backoff from [`REDIAL_MIN`] again.
const LINK_STABLE: Duration = Duration::from_secs(10);

/// Why a link to an exchange server is down, as logged once per outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Unreachable,
    /// TCP connects but no TLS answer comes in time.
    Silent,
    Lost,
    NotRelayPort,
    Refused,
    Replaced,
}

/// One outage of one link: logged once when it starts (`warn` or `error`), then at
/// `debug` until the link is back, which is logged once at `info`.
struct OutageLog {
    server: u8,
    addr: SocketAddr,
    current: Option<Outage>,
    /// Whether the link has been up before: a relay started before its servers logs
    /// its first connection as that, not as a reconnection.
    was_up: bool,
}

impl OutageLog {
    fn down(&mut self, kind: Outage, detail: &str) {
        let (server, addr) = (self.server, self.addr);
        if self.current == Some(kind) {
            tracing::debug!(server, %addr, error = detail, "exchange server still unavailable; retrying");
            return;
        }
        self.current = Some(kind);
        match kind {
            Outage::Unreachable => {
                tracing::warn!(server, %addr, error = detail, "exchange server unreachable; retrying with backoff")
            }
            Outage::Silent => {
                tracing::warn!(server, %addr, error = detail, "exchange server accepts connections but completes no TLS handshake in time; retrying with backoff (a relay port answers at once; an exchange server's peer port does not once its peers are connected: check `exchanges` in the relay's config)")
            }
            Outage::Lost => {
                tracing::warn!(server, %addr, error = detail, "link to exchange server lost; retrying with backoff")
            }
            Outage::NotRelayPort => {
                tracing::error!(server, %addr, "this address answers as exchange-{server} but is not its relay port (a peer port?): check `exchanges` in the relay's config; retrying with backoff up to every {REDIAL_REFUSED:?}")
            }
            Outage::Refused => {
                tracing::error!(server, %addr, error = detail, "exchange server refused this relay: add its index to the server's `relays` list and send the server SIGHUP; retrying with backoff up to every {REDIAL_REFUSED:?}")
            }
            Outage::Replaced => {
                tracing::warn!(server, %addr, "another connection with this relay's certificate replaced this link (two relay processes with one certificate?); retrying with backoff")
            }
        }
    }

    fn up(&mut self) {
        let (server, addr) = (self.server, self.addr);
        let after_outage = self.current.take().is_some();
        if after_outage && self.was_up {
            tracing::info!(server, %addr, "connected to exchange server again");
        } else {
            tracing::info!(server, %addr, "connected to exchange server");
        }
        self.was_up = true;
    }
}

/// Keeps a mutual-TLS link to exchange server `l`: sends queued frames, handles
/// announcements, outputs and registration answers. Re-dials with exponential backoff
/// while the server is down, logging each outage once.
async fn upstream_link(
    l: u8,
    addr: SocketAddr,
    connector: TlsConnector,
    limits: Limits,
    mut queue: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    mut shutdown: ShutdownRx,
) {
    let name = Role::Exchange(l).server_name();
    let mut backoff = REDIAL_MIN;
    let mut log = OutageLog {
        server: l,
        addr,
        current: None,
        was_up: false,
    };
    let connected = &shared.stats.exchange_connected[l as usize];
    loop {
        let stream = tokio::select! {
            s = listener::connect(&connector, addr, name.clone(), limits.handshake_timeout) => s,
            _ = listener::shutdown_signalled(&mut shutdown) => return,
        };
        let failure = match stream {
            Err(e @ tls::TlsError::HandshakeTimeout(_)) => Some((Outage::Silent, e.to_string())),
            Err(e) => Some((Outage::Unreachable, e.to_string())),
            Ok(s) if s.get_ref().1.alpn_protocol() != Some(crate::relay_port::RELAY_ALPN) => {
                Some((Outage::NotRelayPort, String::new()))
            }
            Ok(stream) => {
                let up_since = std::time::Instant::now();
                let (mut rd, mut wr) = tokio::io::split(stream);
                // The link counts as up (logged, in the metrics) once the server has sent
                // a frame or kept it open for a moment: a server that refuses this relay
                // completes the TLS handshake first and then says no.
                let mut confirmed = false;
                let confirm = |confirmed: &mut bool, log: &mut OutageLog| {
                    if !*confirmed {
                        *confirmed = true;
                        log.up();
                        connected.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                };
                let result: Result<(), WireError> = async {
                    loop {
                        tokio::select! {
                            f = wire::read_frame(&mut rd, limits.frame_timeout) => {
                                let f = f?;
                                if f.ty != MsgType::ErrorNotice {
                                    confirm(&mut confirmed, &mut log);
                                }
                                handle_upstream_frame(l, f, &shared)?;
                            }
                            _ = tokio::time::sleep(Duration::from_secs(1)), if !confirmed => {
                                confirm(&mut confirmed, &mut log);
                            }
                            item = queue.recv() => match item {
                                Some(bytes) => {
                                    wr.write_all(&bytes).await?;
                                    wr.flush().await?;
                                }
                                None => return Ok(()),
                            },
                            _ = listener::shutdown_signalled(&mut shutdown) => return Ok(()),
                        }
                    }
                }
                .await;
                connected.store(false, std::sync::atomic::Ordering::Relaxed);
                if up_since.elapsed() >= LINK_STABLE {
                    backoff = REDIAL_MIN;
                }
                match result {
                    Ok(()) => {
                        let _ = wr.shutdown().await;
                        return;
                    }
                    Err(e) => {
                        let kind = match &e {
                            WireError::Remote { message, .. }
                                if message.contains(crate::relay_port::REFUSED_NOTICE) =>
                            {
                                Outage::Refused
                            }
                            WireError::Remote { message, .. }
                                if message.contains(crate::relay_port::REPLACED_NOTICE) =>
                            {
                                Outage::Replaced
                            }
                            _ => {
                                wire::send_notice(&mut wr, &e).await;
                                Outage::Lost
                            }
                        };
                        Some((kind, e.to_string()))
                    }
                }
            }
        };
        let Some((kind, detail)) = failure else {
            continue;
        };
        log.down(kind, &detail);
        let wait = match kind {
            Outage::NotRelayPort | Outage::Refused => {
                let w = backoff.max(Duration::from_secs(5));
                backoff = (w * 2).min(REDIAL_REFUSED);
                w
            }
            Outage::Replaced => {
                let w = backoff.max(Duration::from_secs(1));
                backoff = (w * 2).min(REDIAL_REFUSED);
                w
            }
            Outage::Unreachable | Outage::Silent | Outage::Lost => {
                let w = backoff;
                backoff = (backoff * 2).min(REDIAL_MAX.max(backoff));
                w
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = listener::shutdown_signalled(&mut shutdown) => return,
        }
    }
}

fn handle_upstream_frame(l: u8, frame: wire::Frame, shared: &Arc<Shared>) -> Result<(), WireError> {
    match frame.ty {
        MsgType::RoundAnnounce => {
            let a: RoundAnnounce = frame.decode()?;
            open_round(shared, a);
        }
        MsgType::RelayOutputs => {
            let outputs: RelayOutputs = frame.decode()?;
            route_outputs(shared, l, outputs);
        }
        MsgType::RelayRegisterResponse => {
            let r: RelayRegisterResponse = frame.decode()?;
            let st = shared.lock();
            let mut st = st;
            if let Some(conn) = st.registrations.remove(&(l, r.request)) {
                let msg = RegisterResponse {
                    server: l,
                    body: r.body,
                };
                if let (Some(tx), Ok(b)) = (st.users.get(&conn), wire::encode_frame(&msg)) {
                    let _ = tx.try_send(b);
                }
            }
        }
        MsgType::ErrorNotice => {
            frame.into_remote_error()?;
        }
        other => {
            return Err(WireError::Unexpected {
                got: other,
                expected: "RoundAnnounce, RelayOutputs or RelayRegisterResponse",
            })
        }
    }
    Ok(())
}

/// Opens round `a.round` if it is new: closes the open round first, tells every user,
/// and arms the deadline.
fn open_round(shared: &Arc<Shared>, a: RoundAnnounce) {
    {
        let mut st = shared.lock();
        if st.last_round.is_some_and(|r| a.round <= r) {
            if let Some(open) = &st.open {
                if open.announce.round == a.round && open.announce != a {
                    tracing::warn!(
                        round = a.round,
                        "exchange servers announced different deadlines"
                    );
                }
            }
            return;
        }
        st.last_round = Some(a.round);
    }
    close_round(shared);
    {
        let mut st = shared.lock();
        st.open = Some(OpenRound {
            announce: a,
            envelopes: Default::default(),
            sent: HashMap::new(),
        });
        if let Ok(b) = wire::encode_frame(&a) {
            for tx in st.users.values() {
                let _ = tx.try_send(b.clone());
            }
        }
    }
    tracing::debug!(round = a.round, deadline = a.deadline_unix_ms, "round open");
    let wait = Duration::from_millis(
        a.deadline_unix_ms
            .saturating_sub(crate::exchange::clock::now_unix_ms()),
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let still_open = shared
            .lock()
            .open
            .as_ref()
            .is_some_and(|o| o.announce.round == a.round);
        if still_open {
            close_round(&shared);
        }
    });
}

/// Closes the open round: shuffle, number, send; remember slots for the last few rounds.
fn close_round(shared: &Arc<Shared>) {
    let mut rng = rand::thread_rng();
    let mut st = shared.lock();
    let Some(open) = st.open.take() else {
        return;
    };
    let round = open.announce.round;
    st.inflight.retain(|&(r, _), _| r + KEEP_ROUNDS > round);
    for (l, mut envs) in open.envelopes.into_iter().enumerate() {
        envs.shuffle(&mut rng);
        #[cfg(feature = "fault-injection")]
        if let Some(t) = shared.tamper.as_ref().filter(|_| !st.tampered) {
            st.tampered = t.apply(round, l, &mut envs);
        }
        let mut slots = Vec::with_capacity(envs.len());
        let mut entries = Vec::with_capacity(envs.len());
        for (slot, (conn, sealed)) in envs.into_iter().enumerate() {
            slots.push(conn);
            entries.push(BatchEntry {
                slot: slot as u32,
                sealed,
            });
        }
        let n = entries.len();
        let batch = RelayBatch { round, entries };
        match wire::encode_frame(&batch) {
            Ok(bytes) => {
                if shared.upstream[l].try_send(bytes).is_err() {
                    tracing::warn!(
                        round,
                        server = l,
                        n,
                        "exchange link backlogged; batch dropped"
                    );
                    continue;
                }
                shared
                    .stats
                    .batches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                st.inflight.insert((round, l as u8), slots);
                tracing::debug!(round, server = l, n, "batch forwarded");
            }
            Err(e) => tracing::error!(round, server = l, error = %e, "batch not encodable"),
        }
    }
}

fn route_outputs(shared: &Arc<Shared>, l: u8, outputs: RelayOutputs) {
    let mut guard = shared.lock();
    let st = &mut *guard;
    // Kept (not removed): a restarted server may send the same round again, and a user
    // that already has its share ignores the second copy.
    let Some(slots) = st.inflight.get(&(outputs.round, l)) else {
        tracing::warn!(
            round = outputs.round,
            server = l,
            "outputs for a round this relay no longer holds"
        );
        return;
    };
    let mut used = vec![false; slots.len()];
    let (mut ok, mut dropped) = (0u64, 0u64);
    for out in outputs.outputs {
        let slot = out.slot as usize;
        if slot >= slots.len() || std::mem::replace(&mut used[slot], true) {
            dropped += 1;
            continue;
        }
        let msg = OutputShare {
            round: outputs.round,
            server: l,
            sealed: out.sealed,
        };
        let delivered = match (st.users.get(&slots[slot]), wire::encode_frame(&msg)) {
            (Some(tx), Ok(b)) => tx.try_send(b).is_ok(),
            _ => false,
        };
        if delivered {
            ok += 1;
        } else {
            dropped += 1;
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    shared.stats.outputs.fetch_add(ok, Relaxed);
    shared.stats.outputs_dropped.fetch_add(dropped, Relaxed);
}

/// What a user frame does to the relay.
enum Accepted {
    Ok,
    /// Told to the user; the connection stays open (a late or early envelope is normal).
    Notice(ErrorNotice),
}

fn submit(shared: &Arc<Shared>, conn: ConnId, env: SealedEnvelope) -> Result<Accepted, WireError> {
    let server = wire::check_server(MsgType::SealedEnvelope, env.server)?.index();
    let mut st = shared.lock();
    let max = shared.max_per_round;
    let Some(open) = st.open.as_mut().filter(|o| o.announce.round == env.round) else {
        let open = st.open.as_ref().map(|o| o.announce.round);
        return Ok(Accepted::Notice(ErrorNotice {
            code: ErrorCode::RoundClosed,
            message: format!("round {} is not open (open: {open:?})", env.round),
        }));
    };
    let bit = 1u8 << server;
    let sent = open.sent.entry(conn).or_insert(0);
    if *sent & bit != 0 {
        return Err(WireError::Invalid {
            ty: MsgType::SealedEnvelope,
            reason: format!(
                "second envelope for exchange server {server} in round {}",
                env.round
            ),
        });
    }
    if open.envelopes[server].len() >= max {
        return Ok(Accepted::Notice(ErrorNotice {
            code: ErrorCode::Unavailable,
            message: format!("relay batch for server {server} is full this round"),
        }));
    }
    *sent |= bit;
    open.envelopes[server].push((conn, env.sealed));
    shared
        .stats
        .envelopes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Accepted::Ok)
}

async fn serve_user(
    conn: Conn,
    mut shutdown: ShutdownRx,
    shared: Arc<Shared>,
    limits: Limits,
) -> Result<(), WireError> {
    let (mut rd, mut wr) = tokio::io::split(conn.stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(USER_QUEUE);
    let id = {
        let mut st = shared.lock();
        st.next_conn += 1;
        let id = st.next_conn;
        if let Some(open) = &st.open {
            if let Ok(b) = wire::encode_frame(&open.announce) {
                let _ = tx.try_send(b);
            }
        }
        st.users.insert(id, tx.clone());
        id
    };
    shared
        .stats
        .user_connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });

    let result: Result<(), WireError> = async {
        loop {
            // Users send every round: a connection silent for `idle_timeout` is closed so
            // that idle connections cannot hold every slot.
            let read = tokio::time::timeout(
                limits.idle_timeout,
                wire::read_frame_of(&mut rd, limits.frame_timeout, &USER_TYPES, USER_EXPECTED),
            );
            let frame = tokio::select! {
                f = read => match f {
                    Err(_) => return Err(WireError::Idle(limits.idle_timeout)),
                    Ok(Err(WireError::Closed)) => return Ok(()),
                    Ok(f) => f?,
                },
                _ = listener::shutdown_signalled(&mut shutdown) => return Ok(()),
            };
            match frame.ty {
                MsgType::SealedEnvelope => {
                    if let Accepted::Notice(n) = submit(&shared, id, frame.decode()?)? {
                        if let Ok(b) = wire::encode_frame(&n) {
                            let _ = tx.try_send(b);
                        }
                    }
                }
                MsgType::RegisterRequest => {
                    let req: RegisterRequest = frame.decode()?;
                    let server =
                        wire::check_server(MsgType::RegisterRequest, req.server)?.index() as u8;
                    let request = {
                        let mut st = shared.lock();
                        st.next_request += 1;
                        let r = st.next_request;
                        st.registrations.insert((server, r), id);
                        r
                    };
                    let fwd = wire::encode_frame(&RelayRegisterRequest {
                        request,
                        body: req.body,
                    })?;
                    if shared.upstream[server as usize].try_send(fwd).is_err() {
                        shared.lock().registrations.remove(&(server, request));
                        let n = ErrorNotice {
                            code: ErrorCode::Unavailable,
                            message: format!("exchange server {server} link is backlogged"),
                        };
                        if let Ok(b) = wire::encode_frame(&n) {
                            let _ = tx.try_send(b);
                        }
                    }
                }
                MsgType::ErrorNotice => {
                    frame.into_remote_error()?;
                }
                other => {
                    return Err(WireError::Unexpected {
                        got: other,
                        expected: "SealedEnvelope or RegisterRequest",
                    })
                }
            }
        }
    }
    .await;

    {
        let mut st = shared.lock();
        st.users.remove(&id);
        st.registrations.retain(|_, c| *c != id);
    }
    shared
        .stats
        .user_connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    // A user that goes away without TLS close_notify, or whose connection resets, has
    // simply left: not an error worth a log line (and its address stays out of the log).
    let result = match result {
        Err(WireError::Io(e)) if is_normal_disconnect(&e) => Ok(()),
        other => other,
    };
    if let Err(e) = &result {
        if let Some(code) = e.notice_code() {
            if let Ok(b) = wire::encode_frame(&ErrorNotice {
                code,
                message: e.to_string(),
            }) {
                let _ = tx.try_send(b);
            }
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(limits.shutdown_grace, writer).await;
    result
}

/// Whether an I/O error is a peer simply going away.
fn is_normal_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}
