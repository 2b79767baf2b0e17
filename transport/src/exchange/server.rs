//! The exchange server: the parts of this module composed into one running server
//! (`acs exchange`), one round after another.
//!
//! Tasks: the relay port and a dispatcher (registrations are answered at once, batches
//! queue for the round); the round loop (clock → collect → open → engine → vote →
//! outputs); and one dedicated engine thread that owns the engine [`Party`] and its
//! [`crate::mpc::TlsChannel`] for the server's lifetime.
//!
//! Failure policy: a failed peer link or engine error ends `run` with an error, leaving
//! any prepared round in the database; restarting the server (all three, as each sees
//! its links drop) re-establishes the mesh, and [`super::commit::recover`] settles the
//! prepared round from the peers' hellos before the next round. Users whose round did not
//! commit got no outputs and send again.

use super::clock;
use super::collect::{collect_batches, send_outputs};
use super::commit::{self, vote_and_commit, Decision};
use super::intake::{Intake, IntakeError};
use crate::db::{Db, DbError, RoundEffects};
use crate::listener::{Limits, ListenerStats, ShutdownRx};
use crate::mpc::{self, MeshConfig, MeshControl, TlsChannel};
use crate::relay_port::{self, PortEvent, RelayPortConfig, RelayPortHandle};
use crate::tls::{Identity, Role};
use crate::wire::{RelayRegisterResponse, RoundAnnounce};
use acs_engine::round::mpc::{exchange_round, SharedStore};
use acs_engine::round::RoundConfig;
use acs_engine::{Party, PartyId, Shared};
use acs_kgc::{Kgc, MasterSecret, UserPseudonym};
use rustls::RootCertStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Round timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a round is open for submission (set by server 0).
    pub submit_window: Duration,
    /// How long after the deadline a server waits for relay batches.
    pub collect_grace: Duration,
    /// How long a server waits for its peers' votes.
    pub vote_timeout: Duration,
    /// The longest submission window a follower accepts.
    pub max_window: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            submit_window: Duration::from_millis(1000),
            collect_grace: Duration::from_millis(2000),
            vote_timeout: Duration::from_secs(60),
            max_window: Duration::from_secs(60),
        }
    }
}

/// Everything an exchange server needs.
pub struct ServerConfig {
    /// 0, 1 or 2; server 0 coordinates rounds.
    pub index: u8,
    /// Deployment name; all three must agree.
    pub deployment: String,
    /// The next server's peer port.
    pub next_peer: SocketAddr,
    /// This server's certificate and key.
    pub identity: Identity,
    /// The deployment CA.
    pub roots: Arc<RootCertStore>,
    /// Listener limits.
    pub limits: Limits,
    /// The entry relays (indices) that feed this server.
    pub relays: Vec<u32>,
    /// The exchange configuration (identical at all three servers and all users).
    pub round: RoundConfig,
    /// Round timing.
    pub timing: Timing,
    /// The database file.
    pub db_path: PathBuf,
    /// Stop after this many rounds (the demo); `None` runs until shutdown.
    pub max_rounds: Option<u64>,
    /// Server 0 only: wait for this before announcing the first round (the demo lets
    /// its users register first). `None` starts at once.
    pub start_gate: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("index", &self.index)
            .field("deployment", &self.deployment)
            .field("next_peer", &self.next_peer)
            .field("relays", &self.relays)
            .field("round", &self.round)
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// kgc / registry.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// Peer mesh.
    #[error(transparent)]
    Mesh(#[from] mpc::MeshError),
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Round clock.
    #[error(transparent)]
    Clock(#[from] clock::ClockError),
    /// Commit protocol.
    #[error(transparent)]
    Commit(#[from] commit::CommitError),
    /// The engine failed or its thread ended.
    #[error("engine: {0}")]
    Engine(String),
    /// Configuration.
    #[error("configuration: {0}")]
    Config(String),
}

/// What a server did, for the demo's summary.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    /// Rounds committed.
    pub committed: u64,
    /// Rounds aborted.
    pub aborted: u64,
    /// Seconds from submission deadline to outputs sent, per committed round.
    pub round_seconds: Vec<f64>,
}

struct EngineJob {
    round: u32,
    heard: Vec<u64>,
    shares: HashMap<u64, Vec<u64>>,
    store: SharedStore,
    reply: oneshot::Sender<Result<EngineDone, String>>,
}

struct EngineDone {
    online: Vec<u64>,
    outputs: Vec<Vec<u64>>,
    store: SharedStore,
    digest: [u8; 32],
}

fn engine_thread(
    id: PartyId,
    channel: TlsChannel,
    cfg: RoundConfig,
    jobs: std::sync::mpsc::Receiver<EngineJob>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut party = match Party::setup(id, Box::new(channel)) {
        Ok(p) => {
            let _ = ready.send(Ok(()));
            p
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    while let Ok(job) = jobs.recv() {
        let result = (|| {
            let agreed = party.agree_online(job.round, &job.heard)?;
            let mut blocks = Vec::with_capacity(agreed.online.len() * cfg.block_words());
            for u in &agreed.online {
                // The agreed set is a subset of what this server heard, so every share is here.
                match job.shares.get(u) {
                    Some(words) => blocks.extend_from_slice(words),
                    None => {
                        return Err(acs_engine::EngineError::InvalidInput(format!(
                            "no share for agreed user {u}"
                        )))
                    }
                }
            }
            let r = exchange_round(
                &mut party,
                &cfg,
                job.round,
                &agreed.online,
                blocks,
                &job.store,
            )?;
            Ok(EngineDone {
                online: agreed.online,
                outputs: r.outputs,
                store: r.store,
                digest: party.audit_log().digest(),
            })
        })();
        let failed = result.is_err();
        let _ = job.reply.send(result.map_err(|e| e.to_string()));
        if failed {
            // A failed computation leaves the parties out of step: stop, and let the
            // server restart cleanly.
            return;
        }
    }
}

/// What the peers compare in their hellos: the exchange parameters, which must agree.
pub fn config_digest(cfg: &RoundConfig) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"acs/round-config/v1");
    h.update((cfg.payload_words as u64).to_le_bytes());
    h.update((cfg.store_capacity as u64).to_le_bytes());
    h.update(u64::from(cfg.expiry_rounds).to_le_bytes());
    h.finalize().into()
}

fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn bytes_to_words(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.chunks_exact(8).remainder().is_empty() {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}

/// The store as database slots: slot `i` holds this party's two words-vectors of record `i`.
fn store_to_slots(store: &SharedStore, cfg: &RoundConfig) -> Vec<Vec<u8>> {
    let sw = cfg.store_words();
    (0..cfg.store_capacity)
        .map(|i| {
            let mut v = words_to_bytes(&store.rows.a[i * sw..(i + 1) * sw]);
            v.extend(words_to_bytes(&store.rows.b[i * sw..(i + 1) * sw]));
            v
        })
        .collect()
}

fn store_from_slots(slots: &[Vec<u8>], cfg: &RoundConfig) -> Result<SharedStore, ServerError> {
    if slots.is_empty() {
        return Ok(SharedStore::empty(cfg));
    }
    let sw = cfg.store_words();
    if slots.len() != cfg.store_capacity {
        return Err(ServerError::Config(format!(
            "database store has {} records, configuration says {}",
            slots.len(),
            cfg.store_capacity
        )));
    }
    let mut a = Vec::with_capacity(sw * slots.len());
    let mut b = Vec::with_capacity(sw * slots.len());
    for s in slots {
        let words = bytes_to_words(s)
            .filter(|w| w.len() == 2 * sw)
            .ok_or_else(|| ServerError::Config("database store record of the wrong size".into()))?;
        a.extend_from_slice(&words[..sw]);
        b.extend_from_slice(&words[sw..]);
    }
    Ok(SharedStore {
        rows: Shared { a, b },
    })
}

/// Answers registrations as they come; passes batches on to the round loop.
fn spawn_dispatcher(
    mut events: mpsc::Receiver<PortEvent>,
    port: RelayPortHandle,
    intake: Arc<Mutex<Intake>>,
) -> mpsc::Receiver<PortEvent> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                PortEvent::Register { relay, request } => {
                    let intake = intake.clone();
                    let port = port.clone();
                    // Key extraction and a pairing: keep it off the async workers.
                    tokio::task::spawn_blocking(move || {
                        let now = clock::now_unix_ms() / 1000;
                        let answer = {
                            let mut guard = intake.lock().unwrap_or_else(|e| e.into_inner());
                            guard.register(&request.body, now, &mut rand_core::OsRng)
                        };
                        match answer {
                            Ok(body) => {
                                let _ = port.answer_registration(
                                    relay,
                                    &RelayRegisterResponse {
                                        request: request.request,
                                        body,
                                    },
                                );
                            }
                            // The user sees no answer and retries; the reason stays here.
                            Err(e) => tracing::info!(relay, error = %e, "registration refused"),
                        }
                    });
                }
                other => {
                    if tx.send(other).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

struct RoundLoop {
    cfg: ServerConfig,
    control: MeshControl,
    port: RelayPortHandle,
    batches: mpsc::Receiver<PortEvent>,
    intake: Arc<Mutex<Intake>>,
    db: Arc<Db>,
    store: SharedStore,
    engine: std::sync::mpsc::Sender<EngineJob>,
    last_round: Option<u64>,
}

impl RoundLoop {
    async fn next_announce(&mut self) -> Result<RoundAnnounce, ServerError> {
        if self.cfg.index as usize == clock::COORDINATOR {
            let r = self.last_round.map_or(1, |r| r + 1);
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || db.note_announced(r))
                .await
                .map_err(|e| ServerError::Engine(e.to_string()))??;
            Ok(clock::announce(
                &self.control,
                r,
                self.cfg.timing.submit_window,
            )?)
        } else {
            Ok(clock::await_announce(
                &mut self.control,
                self.last_round,
                self.cfg.timing.max_window,
            )
            .await?)
        }
    }

    /// One round; returns whether it committed and its deadline-to-outputs time.
    async fn round(&mut self) -> Result<(bool, f64), ServerError> {
        let a = self.next_announce().await?;
        self.last_round = Some(a.round);
        let round32 = u32::try_from(a.round)
            .map_err(|_| ServerError::Config("round number past u32 (the engine's)".into()))?;
        if let Err(e) = self.port.announce(a) {
            tracing::warn!(round = a.round, error = %e, "announcement not sent to relays");
        }
        let until_ms = a.deadline_unix_ms + self.cfg.timing.collect_grace.as_millis() as u64;
        let until = tokio::time::Instant::now()
            + Duration::from_millis(until_ms.saturating_sub(clock::now_unix_ms()));
        let collected = collect_batches(
            &mut self.batches,
            a.round,
            &self.cfg.relays,
            until,
            |_, _| {},
        )
        .await;
        if !collected.missing.is_empty() {
            tracing::warn!(round = a.round, missing = ?collected.missing, "relay batches missing");
        }

        let t_open = std::time::Instant::now();
        let opened = {
            let intake = self.intake.lock().unwrap_or_else(|e| e.into_inner());
            intake.open_round(a.round, collected.envelopes)
        };
        if !opened.rejected.is_empty() {
            tracing::info!(
                round = a.round,
                rejected = opened.rejected.len(),
                "envelopes rejected"
            );
        }
        let bw = self.cfg.round.block_words();
        let mut shares = HashMap::with_capacity(opened.shares.len());
        let mut route: HashMap<u64, (u32, u32)> = HashMap::with_capacity(opened.shares.len());
        for s in &opened.shares {
            match bytes_to_words(&s.share).filter(|w| w.len() == bw) {
                Some(words) => {
                    shares.insert(s.user.get(), words);
                    route.insert(s.user.get(), (s.relay, s.slot));
                }
                None => tracing::info!(round = a.round, "share of the wrong size rejected"),
            }
        }
        let mut heard: Vec<u64> = shares.keys().copied().collect();
        heard.sort_unstable();

        let open_ms = t_open.elapsed().as_millis() as u64;
        let t_engine = std::time::Instant::now();
        let (reply, done) = oneshot::channel();
        self.engine
            .send(EngineJob {
                round: round32,
                heard,
                shares,
                store: self.store.clone(),
                reply,
            })
            .map_err(|_| ServerError::Engine("engine thread ended".into()))?;
        let done = done
            .await
            .map_err(|_| ServerError::Engine("engine thread ended".into()))?
            .map_err(ServerError::Engine)?;

        let engine_ms = t_engine.elapsed().as_millis() as u64;
        let t_commit = std::time::Instant::now();
        let mut record = (done.online.len() as u64).to_le_bytes().to_vec();
        record.extend_from_slice(&done.digest);
        let effects = RoundEffects {
            round: a.round,
            store: store_to_slots(&done.store, &self.cfg.round),
            record,
        };
        let decision = vote_and_commit(
            &mut self.control,
            &self.db,
            a.round,
            Some(effects),
            done.digest,
            self.cfg.timing.vote_timeout,
        )
        .await?;
        if let Decision::Aborted(why) = decision {
            tracing::warn!(round = a.round, %why, "round aborted; users will resend");
            return Ok((false, 0.0));
        }
        self.store = done.store;
        let commit_ms = t_commit.elapsed().as_millis() as u64;
        let t_out = std::time::Instant::now();

        let mut out = Vec::with_capacity(done.online.len());
        {
            let intake = self.intake.lock().unwrap_or_else(|e| e.into_inner());
            let mut rng = rand_core::OsRng;
            for (user, words) in done.online.iter().zip(&done.outputs) {
                let (Some(&(relay, slot)), Ok(u)) =
                    (route.get(user), UserPseudonym::from_u64(*user))
                else {
                    continue;
                };
                match intake.seal_output(a.round, u, &words_to_bytes(words), relay, slot, &mut rng)
                {
                    Ok(o) => out.push(o),
                    Err(e) => tracing::warn!(round = a.round, error = %e, "output not sealed"),
                }
            }
        }
        let sent = out.len();
        let failed = send_outputs(&self.port, a.round, out);
        // Round latency: from the close of submission to outputs handed to the relays.
        let secs = clock::now_unix_ms().saturating_sub(a.deadline_unix_ms) as f64 / 1000.0;
        tracing::info!(
            round = a.round,
            online = done.online.len(),
            outputs = sent,
            relays_unreachable = failed.len(),
            seconds = secs,
            open_ms,
            engine_ms,
            commit_ms,
            outputs_ms = t_out.elapsed().as_millis() as u64,
            "round committed"
        );
        Ok((true, secs))
    }
}

/// Runs an exchange server on the given listeners until `shutdown` or `max_rounds`.
pub async fn run(
    cfg: ServerConfig,
    master: MasterSecret,
    relay_listener: TcpListener,
    peer_listener: TcpListener,
    shutdown: ShutdownRx,
) -> Result<RunSummary, ServerError> {
    let party = PartyId::new(cfg.index as usize)
        .ok_or_else(|| ServerError::Config(format!("index {} is not 0, 1 or 2", cfg.index)))?;
    let db = Arc::new(Db::open(&cfg.db_path)?);
    let intake = Arc::new(Mutex::new(Intake::load(Kgc::new(master), db.clone())?));
    let store = store_from_slots(&db.store()?, &cfg.round)?;

    let (port, events) = relay_port::start(
        RelayPortConfig {
            server: cfg.index,
            relays: cfg.relays.iter().map(|&j| Role::Entry(j)).collect(),
            identity: cfg.identity.clone(),
            roots: cfg.roots.clone(),
            limits: cfg.limits,
        },
        relay_listener,
        Arc::new(ListenerStats::default()),
        shutdown.clone(),
    )?;
    let batches = spawn_dispatcher(events, port.clone(), intake.clone());

    let mesh = mpc::establish(
        &MeshConfig {
            party,
            deployment: cfg.deployment.clone(),
            next_addr: cfg.next_peer,
            identity: cfg.identity.clone(),
            roots: cfg.roots.clone(),
            establish_timeout: Duration::from_secs(120),
            limits: cfg.limits,
            status: commit::status(&db)?,
            config_digest: config_digest(&cfg.round),
        },
        peer_listener,
    )
    .await?;
    let recovered = commit::recover(&db, mesh.peer_status)?;
    let store = if recovered == commit::Recovery::Nothing {
        store
    } else {
        tracing::info!(?recovered, "settled the round prepared before a restart");
        store_from_slots(&db.store()?, &cfg.round)?
    };
    let (jobs, job_rx) = std::sync::mpsc::channel();
    let (ready_tx, ready) = oneshot::channel();
    let engine_cfg = cfg.round;
    let channel = mesh.channel;
    std::thread::Builder::new()
        .name(format!("engine-{}", cfg.index))
        .spawn(move || engine_thread(party, channel, engine_cfg, job_rx, ready_tx))
        .map_err(|e| ServerError::Engine(e.to_string()))?;
    ready
        .await
        .map_err(|_| ServerError::Engine("engine thread ended".into()))?
        .map_err(ServerError::Engine)?;

    // Never reuse a round number: not an aborted one, not one announced before a restart.
    let aborted = match recovered {
        commit::Recovery::Abort(r) => Some(r),
        _ => None,
    };
    let last_round = [db.committed_round()?, db.announced_round()?, aborted]
        .into_iter()
        .flatten()
        .max();
    let max_rounds = cfg.max_rounds;
    let mut lp = RoundLoop {
        cfg,
        control: mesh.control,
        port,
        batches,
        intake,
        db,
        store,
        engine: jobs,
        last_round,
    };
    let mut summary = RunSummary::default();
    let mut shutdown = shutdown;
    if let Some(gate) = lp.cfg.start_gate.take() {
        tokio::select! {
            _ = gate => {}
            _ = crate::listener::shutdown_signalled(&mut shutdown) => return Ok(summary),
        }
    }
    loop {
        if max_rounds.is_some_and(|m| summary.committed + summary.aborted >= m) {
            break;
        }
        let r = tokio::select! {
            r = lp.round() => r?,
            _ = crate::listener::shutdown_signalled(&mut shutdown) => break,
        };
        match r {
            (true, secs) => {
                summary.committed += 1;
                summary.round_seconds.push(secs);
            }
            (false, _) => summary.aborted += 1,
        }
    }
    Ok(summary)
}
