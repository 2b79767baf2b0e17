//! The exchange server: the parts of this module composed into one running server
//! (`acs exchange`), one round after another.
//!
//! Tasks: the relay port and a dispatcher (registrations are answered at once, batches
//! queue for the round); the round loop (clock → collect → open → engine → vote →
//! outputs); and one dedicated engine thread that owns the engine [`Party`] and its
//! [`crate::mpc::TlsChannel`] for the server's lifetime.
//!
//! Failure policy: a failed peer link or engine error ends the *session* (the mesh and
//! its engine thread), not the server. The round in progress is aborted, and its users
//! told to `retry`, if this server had not prepared it; otherwise it stays prepared until
//! the mesh is back and [`super::commit::recover`] settles it from the peers' hellos. The
//! server closes its links (so its peers notice at once) and builds the mesh again,
//! waiting for as long as a peer is down. Database, configuration and recovery conflicts
//! stop the server.

use super::clock;
use super::collect::collect_batches;
use super::commit::{self, vote_and_commit, Decision};
use super::intake::{Intake, IntakeError};
use super::release::{self, Answer, Released, Routes};
use crate::db::{Db, DbError, RoundEffects};
use crate::listener::{Limits, ListenerStats, ShutdownRx};
use crate::metrics::{AbortReason, ExchangeMetrics};
use crate::mpc::{self, MeshConfig, MeshControl, TlsChannel};
use crate::output::ServerOutput;
use crate::relay_port::{self, PortEvent, RelayPortConfig, RelayPortHandle, RelaySet};
use crate::tls::{Identity, Role};
use crate::wire::{self, RelayRegisterResponse, RoundAnnounce, RoundStatus};
use acs_engine::round::consistency::{KeyNotary, Notary};
use acs_engine::round::input::{PartyInputs, ServerInput};
use acs_engine::round::mpc::{exchange_round, SharedStore};
use acs_engine::round::outputs::RoundOutputs;
use acs_engine::round::RoundConfig;
use acs_engine::{resolve_complaint, Blame, OpeningComplaint, Party, PartyId, Peer, Shared};
use acs_kgc::ed25519_dalek::SigningKey;
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
    /// The entry relays (indices) that feed this server; shared, so that a reload
    /// (SIGHUP) changes it while the server runs.
    pub relays: RelaySet,
    /// The exchange configuration (identical at all three servers and all users).
    pub round: RoundConfig,
    /// Semi-honest or malicious (verified) computation; the same at all three servers.
    pub security: acs_engine::SecurityMode,
    /// Round timing.
    pub timing: Timing,
    /// The database file.
    pub db_path: PathBuf,
    /// Stop after this many rounds (the demo); `None` runs until shutdown.
    pub max_rounds: Option<u64>,
    /// Server 0 only: wait for this before announcing the first round (the demo lets
    /// its users register first). `None` starts at once.
    pub start_gate: Option<oneshot::Receiver<()>>,
    /// Metrics and health, served by `/metrics` and `/healthz` where configured.
    pub metrics: Arc<ExchangeMetrics>,
    /// Master-secret epochs reloaded on SIGHUP, taken up before the next round.
    pub epoch_reload: super::epochs::EpochReload,
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
    /// Taking the committed state back from the peers failed (this session).
    #[error(transparent)]
    Rejoin(#[from] super::rejoin::RejoinError),
    /// More than one server is behind: no rejoin can supply them.
    #[error("cannot rejoin: {0}")]
    CannotRejoin(String),
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
    /// What each user heard sent this server: its share and the hash of the next
    /// server's share ([`acs_engine::round::input`]).
    shares: HashMap<u64, ServerInput>,
    store: SharedStore,
    reply: oneshot::Sender<Result<EngineDone, EngineFailure>>,
}

/// Why the engine stopped, with what is needed to settle a complaint about an opening.
struct EngineFailure {
    error: acs_engine::EngineError,
    /// This party's record of what it sent in each opening of the session.
    audit: acs_engine::declassify::AuditLog,
}

struct EngineDone {
    online: Vec<u64>,
    outputs: RoundOutputs,
    /// Whether the round computed a new store (false when nobody was online: the round
    /// computes nothing, and the store stays as it was, share for share).
    store_changed: bool,
    store: SharedStore,
    digest: [u8; 32],
}

fn engine_thread(
    id: PartyId,
    channel: TlsChannel,
    cfg: RoundConfig,
    jobs: std::sync::mpsc::Receiver<EngineJob>,
    ready: oneshot::Sender<Result<(), String>>,
    notary: Box<dyn Notary>,
    security: acs_engine::SecurityMode,
) {
    let mut party = match Party::setup_with(id, Box::new(channel), security) {
        Ok(p) => {
            let _ = ready.send(Ok(()));
            p
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    #[cfg(feature = "fault-injection")]
    let mut lie = faults::lie();
    #[cfg(feature = "fault-injection")]
    let mut compute = faults::compute();
    #[cfg(feature = "fault-injection")]
    let mut deviating = false;
    while let Ok(job) = jobs.recv() {
        #[cfg(feature = "fault-injection")]
        if let Some((reason, nth, kind)) = lie.filter(|_| faults::armed()) {
            let at = party.audit_log().openings_for(reason) + nth;
            let f = acs_engine::OpeningFault::nth(reason, at, kind);
            tracing::warn!(round = job.round, fault = ?f, "FAULT: this server will lie while opening");
            party.inject_fault(f);
            lie = None;
        }
        #[cfg(feature = "fault-injection")]
        if let Some((phase, f)) = compute.filter(|_| faults::armed()) {
            tracing::warn!(round = job.round, fault = ?f, ?phase, "FAULT: this server will deviate in the computation");
            match phase {
                Some(p) => party.inject_compute_fault_in(p, f),
                None => party.inject_compute_fault(f),
            }
            compute = None;
            deviating = true;
        }
        let result = (|| {
            let t_agree = std::time::Instant::now();
            let agreed = party.agree_online(job.round, &job.heard, notary.as_ref())?;
            let agree_seconds = t_agree.elapsed().as_secs_f64();
            if !agreed.consistent {
                tracing::warn!(
                    round = job.round,
                    online = agreed.online.len(),
                    not_heard_at_0 = agreed.missing_at[0],
                    not_heard_at_1 = agreed.missing_at[1],
                    not_heard_at_2 = agreed.missing_at[2],
                    "online sets differed; the round runs over their intersection"
                );
            }
            if agreed.online.is_empty() {
                // Nobody online (public): nothing to match or deliver. Stored items keep
                // their shares; expiry depends only on the round number, so an item that
                // expires meanwhile is dropped by the next round that computes, exactly
                // as if every idle round had run. An idle server computes and writes
                // (almost) nothing.
                return Ok(EngineDone {
                    online: Vec::new(),
                    outputs: RoundOutputs::empty(cfg.output_words()),
                    store: job.store.clone(),
                    store_changed: false,
                    digest: party.audit_log().digest(),
                });
            }
            let mut inputs = PartyInputs::with_capacity(&cfg, agreed.online.len());
            for u in &agreed.online {
                // The agreed set is a subset of what this server heard, so every share is here.
                match job.shares.get(u) {
                    Some(input) => inputs.push(input),
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
                inputs,
                &job.store,
                notary.as_ref(),
            )?;
            // Where the engine's time went, for operators tuning a deployment (and for us).
            tracing::debug!(
                round = job.round,
                online = r.online.len(),
                agree_online_ms = (agree_seconds * 1e3).round() as u64,
                phases_ms = %r
                    .phases
                    .iter()
                    .map(|(name, s)| format!("{name}={:.1}", s * 1e3))
                    .collect::<Vec<_>>()
                    .join(", "),
                "engine phases"
            );
            let check = &r.input_check;
            if !check.removed.is_empty() {
                // The checking server cannot tell a lying server from a lying user, so
                // nobody is named; a server whose conversion keeps failing stands out here.
                tracing::warn!(
                    round = job.round,
                    removed = check.removed.len(),
                    conversion_failed_at_0 = check.failed_at[0],
                    conversion_failed_at_1 = check.failed_at[1],
                    conversion_failed_at_2 = check.failed_at[2],
                    "input shares did not match their users' hashes in the conversion (the \
                     server passing them on or the users lied); those users are left out \
                     and told to retry"
                );
            }
            Ok(EngineDone {
                // Nobody left after the check: computed nothing, as with nobody online.
                store_changed: !r.online.is_empty(),
                online: r.online,
                outputs: r.outputs,
                store: r.store,
                digest: party.audit_log().digest(),
            })
        })();
        #[cfg(feature = "fault-injection")]
        if deviating {
            if let Some(openings) = party.compute_fault_fired() {
                tracing::warn!(
                    round = job.round,
                    openings_before = openings,
                    "FAULT: deviated in the computation"
                );
                deviating = false;
            }
        }
        match result {
            Ok(done) => {
                let _ = job.reply.send(Ok(done));
            }
            Err(error) => {
                let audit = party.audit_log().clone();
                let _ = job.reply.send(Err(EngineFailure { error, audit }));
                // A failed computation leaves the parties out of step: this session ends.
                return;
            }
        }
    }
}

/// What every signed online-set statement of this deployment carries: the deployment
/// name and the exchange parameters, so a statement cannot be replayed elsewhere.
fn statement_context(
    deployment: &str,
    cfg: &RoundConfig,
    security: acs_engine::SecurityMode,
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"acs/online-set-context/v1");
    h.update((deployment.len() as u64).to_le_bytes());
    h.update(deployment.as_bytes());
    h.update(config_digest(cfg, security));
    h.finalize().into()
}

/// What the peers compare in their hellos: the exchange parameters and the security
/// mode, which must agree.
pub fn config_digest(cfg: &RoundConfig, security: acs_engine::SecurityMode) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"acs/round-config/v2");
    h.update((cfg.payload_words as u64).to_le_bytes());
    h.update((cfg.store_capacity as u64).to_le_bytes());
    h.update(u64::from(cfg.expiry_rounds).to_le_bytes());
    h.update(u64::from(cfg.receipt_rounds).to_le_bytes());
    h.update([match security {
        acs_engine::SecurityMode::SemiHonest => 0u8,
        acs_engine::SecurityMode::Malicious => 1u8,
    }]);
    h.finalize().into()
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

/// The store as one database blob: record after record, each this party's two
/// components (`x_i` words then `x_{i+1}` words), little-endian.
fn store_to_blob(store: &SharedStore, cfg: &RoundConfig) -> Vec<u8> {
    let sw = cfg.store_words();
    let mut blob = Vec::with_capacity(cfg.store_capacity * sw * 16);
    for (a, b) in store
        .rows
        .a
        .chunks_exact(sw)
        .zip(store.rows.b.chunks_exact(sw))
    {
        blob.extend(a.iter().chain(b).flat_map(|w| w.to_le_bytes()));
    }
    blob
}

fn store_from_blob(blob: Option<&[u8]>, cfg: &RoundConfig) -> Result<SharedStore, ServerError> {
    let Some(blob) = blob else {
        return Ok(SharedStore::empty(cfg));
    };
    let sw = cfg.store_words();
    if blob.len() != cfg.store_capacity * sw * 16 {
        return Err(ServerError::Config(format!(
            "database store of {} bytes, configuration says {} records of {} bytes",
            blob.len(),
            cfg.store_capacity,
            sw * 16
        )));
    }
    let words = bytes_to_words(blob).expect("length checked");
    let mut a = Vec::with_capacity(sw * cfg.store_capacity);
    let mut b = Vec::with_capacity(sw * cfg.store_capacity);
    for rec in words.chunks_exact(2 * sw) {
        a.extend_from_slice(&rec[..sw]);
        b.extend_from_slice(&rec[sw..]);
    }
    Ok(SharedStore {
        rows: Shared { a, b },
    })
}

/// This server's commitments to the two components of the store `round` wrote
/// ([`super::rejoin::commitment`]), nonces from the secrets it shares with the peer that
/// holds each component too (`x_i` with the previous peer, `x_{i+1}` with the next).
fn store_commitments(s: &Session, round: u64, store: &SharedStore) -> commit::StoreCommitments {
    use super::rejoin::{commitment, commitment_nonce};
    let me = s.control.party();
    let nonces = [
        commitment_nonce(&s.pair_secrets[1], round),
        commitment_nonce(&s.pair_secrets[0], round),
    ];
    commit::StoreCommitments {
        mine: [
            commitment(round, me.index() as u8, &nonces[0], &store.rows.a),
            commitment(round, me.next().index() as u8, &nonces[1], &store.rows.b),
        ],
        nonces,
    }
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
                        // A refusal is answered too, with its reason in one word (the
                        // details stay in this log), so the user need not time out.
                        let body = match answer {
                            Ok(body) => body,
                            Err(e) => {
                                tracing::info!(relay, error = %e, "registration refused");
                                refusal_of(&e).to_body()
                            }
                        };
                        let _ = port.answer_registration(
                            relay,
                            &RelayRegisterResponse {
                                request: request.request,
                                body,
                            },
                        );
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

/// The word a refused registration's answer carries.
fn refusal_of(e: &super::intake::IntakeError) -> wire::Refusal {
    use super::intake::IntakeError;
    match e {
        IntakeError::Kgc(acs_kgc::KgcError::PseudonymTaken(_)) | IntakeError::Conflict(_) => {
            wire::Refusal::PseudonymTaken
        }
        IntakeError::Kgc(acs_kgc::KgcError::AddressTaken { .. }) => wire::Refusal::AddressTaken,
        IntakeError::Epoch { .. } | IntakeError::Kgc(acs_kgc::KgcError::WrongEpoch { .. }) => {
            wire::Refusal::Epoch
        }
        IntakeError::Kgc(acs_kgc::KgcError::WrongServer { .. }) => wire::Refusal::WrongServer,
        _ => wire::Refusal::Other,
    }
}

/// A round this server took part in and has not settled yet.
struct InFlight {
    round: u64,
    /// Where the answers of the users heard this round go.
    routes: Routes,
    /// Whether this server prepared (and so may have voted commit): then only
    /// [`commit::recover`] may decide the round, never this server alone.
    prepared: bool,
}

/// One established mesh: the coordination links and the engine thread that owns the
/// engine's links. Dropped (after [`MeshControl::close`]) when anything on it fails.
struct Session {
    control: MeshControl,
    engine: std::sync::mpsc::Sender<EngineJob>,
    /// Secrets shared with `[next, prev]` (nonces of the store commitments).
    pair_secrets: [[u8; 32]; 2],
}

/// How a round ended.
enum RoundEnd {
    Committed(f64),
    Aborted,
}

struct RoundLoop {
    cfg: ServerConfig,
    /// This server's identity key (its descriptor's), which signs its online-set
    /// statements.
    signing: SigningKey,
    /// This server's signed descriptor, sent to its peers in the hello.
    descriptor: Vec<u8>,
    port: RelayPortHandle,
    batches: mpsc::Receiver<PortEvent>,
    intake: Arc<Mutex<Intake>>,
    db: Arc<Db>,
    store: SharedStore,
    last_round: Option<u64>,
    /// The round being run, from collection until it is settled.
    in_flight: Option<InFlight>,
    /// The last committed round whose outputs this process handed to the relays.
    released: Option<u64>,
}

impl RoundLoop {
    /// Takes up master-secret epochs reloaded on SIGHUP, between two rounds: a fresh
    /// intake for the epochs now listed (registrations of epochs no longer listed are
    /// deleted from the database, as at start).
    fn apply_epoch_reload(&mut self) {
        let Some(keys) = self.cfg.epoch_reload.take() else {
            return;
        };
        if keys.master.identity_signing_key().verifying_key() != self.signing.verifying_key() {
            tracing::error!("SIGHUP: the master file now holds another server identity; epochs not reloaded (a new identity needs a restart, and is a new server)");
            return;
        }
        match Intake::load_epochs(keys.key_centres(), self.db.clone()) {
            Ok(intake) => {
                tracing::info!(
                    epochs = ?intake.served_epochs(),
                    registered = ?intake.registered_per_epoch(),
                    "master-secret epochs served (reloaded)"
                );
                *self.intake.lock().unwrap_or_else(|e| e.into_inner()) = intake;
            }
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: master-secret epochs not reloaded; still serving the previous ones"
            ),
        }
    }

    async fn next_announce(&mut self, s: &mut Session) -> Result<RoundAnnounce, ServerError> {
        if self.cfg.index as usize == clock::COORDINATOR {
            let r = self.last_round.map_or(1, |r| r + 1);
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || db.note_announced(r))
                .await
                .map_err(|e| ServerError::Engine(e.to_string()))??;
            Ok(clock::announce(
                &s.control,
                r,
                self.cfg.timing.submit_window,
            )?)
        } else {
            Ok(
                clock::await_announce(&mut s.control, self.last_round, self.cfg.timing.max_window)
                    .await?,
            )
        }
    }

    fn release(&self, round: u64, answers: impl IntoIterator<Item = Answer>) -> Released {
        let intake = self.intake.lock().unwrap_or_else(|e| e.into_inner());
        release::release(
            &self.port,
            &intake,
            round,
            self.cfg.round.output_words(),
            answers,
        )
    }

    /// `retry` to everyone heard in `f`'s round: it cannot commit anywhere.
    fn retry_in_flight(&self, f: &InFlight, why: &str) {
        let r = self.release(f.round, release::retry_all(&f.routes));
        tracing::warn!(
            round = f.round,
            reason = why,
            retried = r.sent,
            "round aborted; users told to retry"
        );
    }

    /// Hands out the last committed round's outputs again if this process has not: after
    /// a restart, the crash may have come between commit and release.
    fn release_committed(&mut self) -> Result<(), ServerError> {
        let Some((round, bytes)) = self.db.last_outputs()? else {
            return Ok(());
        };
        if self.released == Some(round) {
            return Ok(());
        }
        let answers =
            release::decode_stored(&bytes, self.cfg.round.output_words()).ok_or_else(|| {
                ServerError::Config("stored outputs do not fit the configuration".into())
            })?;
        let r = self.release(round, answers);
        tracing::info!(
            round,
            outputs = r.sent,
            "outputs of the last committed round released again"
        );
        self.released = Some(round);
        Ok(())
    }

    /// Settles what the last session left open, from the peers' database status: a
    /// prepared round is committed or aborted ([`commit::recover`]); a server whose
    /// database is behind takes the committed state from its peers, and its peers send
    /// it ([`super::rejoin`]).
    async fn settle(
        &mut self,
        s: &mut Session,
        peer_status: [RoundStatus; 2],
    ) -> Result<commit::Recovery, ServerError> {
        let me = s.control.party();
        let mine = commit::status(&self.db)?;
        let mut by_party = [mine; 3];
        by_party[me.next().index()] = peer_status[0];
        by_party[me.prev().index()] = peer_status[1];
        let behind = super::rejoin::behind(by_party);
        if behind.len() > 1 {
            return Err(ServerError::CannotRejoin(format!(
                "servers {behind:?} are all behind the last committed round (statuses by server: {by_party:?}); \
                 a rejoin needs both peers of a server: restore one of them from a backup at least as new as the newest server's"
            )));
        }
        if behind == [me.index()] {
            self.rejoin(s, peer_status).await?;
            return Ok(commit::Recovery::Nothing);
        }
        let recovered = commit::recover(&self.db, peer_status)?;
        match recovered {
            commit::Recovery::Nothing => {}
            commit::Recovery::Commit(r) => {
                tracing::info!(round = r, "a round prepared before the failure committed");
                self.store = store_from_blob(self.db.store()?.as_deref(), &self.cfg.round)?;
            }
            commit::Recovery::Abort(r) => {
                tracing::info!(round = r, "a round prepared before the failure aborted");
                self.cfg.metrics.aborted(AbortReason::Recovery);
                if let Some(f) = self.in_flight.as_ref().filter(|f| f.round == r) {
                    self.retry_in_flight(f, "aborted by recovery");
                }
                self.last_round = self.last_round.max(Some(r));
            }
        }
        self.in_flight = None;
        self.release_committed()?;
        if let Some(&p) = behind.first() {
            self.help_rejoin(s, p)?;
        }
        Ok(recovered)
    }

    /// Sends peer `p`, which is behind, this server's committed state: the store
    /// component both hold, the committed and last announced round, the registrations.
    fn help_rejoin(&self, s: &Session, p: usize) -> Result<(), ServerError> {
        let me = s.control.party();
        let to = if me.next().index() == p {
            Peer::Next
        } else {
            Peer::Prev
        };
        let round = self.db.committed_round()?.ok_or_else(|| {
            ServerError::CannotRejoin("asked to help a rejoin with no committed round".into())
        })?;
        let (index, second) = super::rejoin::shared_component(me, to);
        let component = if second {
            &self.store.rows.b
        } else {
            &self.store.rows.a
        };
        let registrations = self
            .intake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .public_registrations();
        let last_round = self.last_round.unwrap_or(round).max(round);
        let (store_round, witness) = self.db.store_witness()?.unwrap_or((0, None));
        let witness = witness
            .as_deref()
            .and_then(super::rejoin::Witness::from_bytes);
        let proof = super::rejoin::Proof::of(
            me,
            to,
            store_round,
            witness.as_ref(),
            &self.store.rows.a,
            &self.store.rows.b,
        );
        #[cfg(feature = "fault-injection")]
        let component = &faults::rejoin_component(component);
        super::rejoin::send_state(
            &s.control,
            to,
            round,
            last_round,
            proof,
            component,
            &registrations,
        )
        .map_err(|e| {
            ServerError::Rejoin(super::rejoin::RejoinError::Wire {
                peer: me.peer(to),
                error: e,
            })
        })?;
        tracing::warn!(
            peer = p,
            round,
            component = index,
            registrations = registrations.len(),
            "server {p} is behind; sent it the store component x_{index} we both hold, round {round} and the registrations"
        );
        Ok(())
    }

    /// Takes the committed state back from the peers (this server's database is lost or
    /// behind theirs), makes it durable and resumes from it.
    async fn rejoin(
        &mut self,
        s: &mut Session,
        peer_status: [RoundStatus; 2],
    ) -> Result<(), ServerError> {
        let mine = commit::status(&self.db)?;
        let peers_committed = peer_status
            .iter()
            .filter_map(|p| p.committed)
            .max()
            .expect("behind implies a peer committed");
        tracing::warn!(
            committed = ?mine.committed,
            prepared = ?mine.prepared,
            peers_committed,
            "this server's database is behind its peers' (lost or restored from a backup); rejoining from the peers"
        );
        let cfg = self.cfg.round;
        let component_bytes = cfg.store_capacity * cfg.store_words() * 8;
        let both = super::rejoin::receive_both(
            &mut s.control,
            component_bytes,
            peers_committed,
            super::rejoin::REJOIN_TIMEOUT,
        )
        .await?;
        let checked = super::rejoin::check_commitments(s.control.party(), &both)?;
        let store_round = both[0].state.store_round;
        let witness = match checked {
            super::rejoin::Checked::Verified(w) => {
                tracing::info!(
                    store_round,
                    "both store components match the commitments this server made in the round that wrote them"
                );
                w
            }
            super::rejoin::Checked::Unverified(why, w) => {
                tracing::warn!(store_round, reason = %why, "store components taken unverified");
                w
            }
        };
        let [from_next, from_prev] = both;
        let store = SharedStore {
            rows: Shared {
                a: from_prev.component,
                b: from_next.component,
            },
        };
        let mut fetched = from_next.registrations;
        fetched.extend(from_prev.registrations);
        let intake = self.intake.clone();
        let entries = tokio::task::spawn_blocking(move || {
            intake
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entries_for(&fetched)
        })
        .await
        .map_err(|e| ServerError::Engine(e.to_string()))?
        .map_err(|e| {
            ServerError::Rejoin(super::rejoin::RejoinError::Disagree(format!(
                "a fetched registration is invalid: {e}"
            )))
        })?;
        let last_round = from_next
            .state
            .last_round
            .max(from_prev.state.last_round)
            .max(self.last_round.unwrap_or(0));
        // Records hold the users' long-term keys: wiped when dropped.
        let records: Vec<(u32, u64, zeroize::Zeroizing<Vec<u8>>)> = entries
            .iter()
            .map(|(epoch, e)| {
                (
                    *epoch,
                    e.user().get(),
                    zeroize::Zeroizing::new(e.to_bytes().to_vec()),
                )
            })
            .collect();
        let blob = store_to_blob(&store, &cfg);
        let db = self.db.clone();
        let witness = witness.to_bytes();
        tokio::task::spawn_blocking(move || {
            db.rejoin(
                peers_committed,
                &blob,
                &records,
                last_round,
                store_round,
                Some(&witness),
            )
        })
        .await
        .map_err(|e| ServerError::Engine(e.to_string()))??;
        let added = entries.len();
        self.intake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .adopt(entries)
            .map_err(IntakeError::from)?;
        if let Some(f) = self.in_flight.take() {
            self.retry_in_flight(&f, "this server rejoined from its peers");
        }
        self.store = store;
        self.last_round = Some(last_round);
        self.released = Some(peers_committed);
        tracing::warn!(
            round = peers_committed,
            last_round,
            registrations_added = added,
            "rejoined: store components x_{} (from server {}) and x_{} (from server {}) of round {peers_committed} taken; resuming",
            s.control.party().index(),
            s.control.party().prev().index(),
            s.control.party().next().index(),
            s.control.party().next().index(),
        );
        Ok(())
    }

    /// One round.
    async fn round(&mut self, s: &mut Session) -> Result<RoundEnd, ServerError> {
        let a = self.next_announce(s).await?;
        self.last_round = Some(a.round);
        let round32 = u32::try_from(a.round)
            .map_err(|_| ServerError::Config("round number past u32 (the engine's)".into()))?;
        if let Err(e) = self.port.announce(a) {
            tracing::warn!(round = a.round, error = %e, "announcement not sent to relays");
        }
        #[cfg(feature = "fault-injection")]
        faults::pause("collect", a.round).await;
        let until_ms = a.deadline_unix_ms + self.cfg.timing.collect_grace.as_millis() as u64;
        let until = tokio::time::Instant::now()
            + Duration::from_millis(until_ms.saturating_sub(clock::now_unix_ms()));
        self.port.prune();
        let collected = collect_batches(
            &mut self.batches,
            a.round,
            &self.cfg.relays.get(),
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
        log_rejections(a.round, &opened.rejected);
        self.cfg
            .metrics
            .rejected(opened.rejected.iter().map(|r| format!("{:?}", r.why)));
        let bw = self.cfg.round.block_words();
        let mut shares = HashMap::with_capacity(opened.shares.len());
        let mut routes = Routes::with_capacity(opened.shares.len());
        for s in &opened.shares {
            match ServerInput::from_bytes(&s.share, bw) {
                Some(input) => {
                    shares.insert(s.user.get(), input);
                    routes.insert(s.user.get(), (s.relay, s.slot));
                }
                None => {
                    // Answered with `retry` like any user left out: a client whose
                    // [round] differs from the servers' learns it from the answer's size.
                    routes.insert(s.user.get(), (s.relay, s.slot));
                    self.cfg.metrics.rejected(["WrongSize".to_string()]);
                    tracing::warn!(
                        round = a.round,
                        relay = s.relay,
                        bytes = s.share.len(),
                        expected = ServerInput::wire_len(bw),
                        "share of the wrong size rejected (the user's [round] payload_words differs?)"
                    )
                }
            }
        }
        let mut heard: Vec<u64> = shares.keys().copied().collect();
        heard.sort_unstable();
        self.in_flight = Some(InFlight {
            round: a.round,
            routes,
            prepared: false,
        });

        #[cfg(feature = "fault-injection")]
        faults::pause("engine", a.round).await;
        let open_ms = t_open.elapsed().as_millis() as u64;
        let t_engine = std::time::Instant::now();
        let (reply, done) = oneshot::channel();
        s.engine
            .send(EngineJob {
                round: round32,
                heard,
                shares,
                store: self.store.clone(),
                reply,
            })
            .map_err(|_| ServerError::Engine("engine thread ended".into()))?;
        let done = match done.await {
            Err(_) => return Err(ServerError::Engine("engine thread ended".into())),
            Ok(Ok(done)) => done,
            Ok(Err(f)) => return Err(self.engine_failed(s, a.round, f).await),
        };

        let engine_ms = t_engine.elapsed().as_millis() as u64;
        let t_commit = std::time::Instant::now();
        let routes = &self.in_flight.as_ref().expect("set above").routes;
        // Shares to the agreed online set, `retry` to everyone else heard.
        let mut answers: Vec<Answer> = Vec::with_capacity(routes.len());
        #[cfg(feature = "fault-injection")]
        let done = faults::alter_outputs(done, a.round);
        for (user, share) in done.online.iter().zip(done.outputs.iter()) {
            if let Some(&(relay, slot)) = routes.get(user) {
                answers.push(Answer {
                    user: *user,
                    relay,
                    slot,
                    output: ServerOutput::Share(share.to_share()),
                });
            }
        }
        let retries: Vec<Answer> = release::retry_all(routes)
            .filter(|a| done.online.binary_search(&a.user).is_err())
            .collect();
        log_left_out(a.round, &retries);
        let mut record = (done.online.len() as u64).to_le_bytes().to_vec();
        record.extend_from_slice(&done.digest);
        let effects = RoundEffects {
            round: a.round,
            store: done
                .store_changed
                .then(|| store_to_blob(&done.store, &self.cfg.round)),
            record,
            outputs: release::encode_stored(&answers, self.cfg.round.output_words()),
        };
        if let Some(f) = self.in_flight.as_mut() {
            f.prepared = true;
        }
        let store_commitments = done
            .store_changed
            .then(|| store_commitments(s, a.round, &done.store));
        let decision = vote_and_commit(
            &mut s.control,
            &self.db,
            a.round,
            Some(effects),
            done.digest,
            store_commitments,
            self.cfg.timing.vote_timeout,
        )
        .await?;
        let f = self.in_flight.take().expect("set above");
        if let Decision::Aborted(why) = decision {
            self.retry_in_flight(&f, &why);
            return Ok(RoundEnd::Aborted);
        }
        #[cfg(feature = "fault-injection")]
        faults::pause("committed", a.round).await;
        self.store = done.store;
        let commit_ms = t_commit.elapsed().as_millis() as u64;
        let t_out = std::time::Instant::now();
        let retried = retries.len();
        let r = self.release(a.round, answers.into_iter().chain(retries));
        self.released = Some(a.round);
        // Round latency: from the close of submission to outputs handed to the relays.
        let secs = clock::now_unix_ms().saturating_sub(a.deadline_unix_ms) as f64 / 1000.0;
        let outputs_ms = t_out.elapsed().as_millis() as u64;
        // The phases follow each other, so their Instants give them to the microsecond.
        self.cfg.metrics.committed(
            a.round,
            done.online.len(),
            &[
                ("open", (t_engine - t_open).as_secs_f64()),
                ("engine", (t_commit - t_engine).as_secs_f64()),
                ("commit", (t_out - t_commit).as_secs_f64()),
                ("outputs", t_out.elapsed().as_secs_f64()),
                ("total", secs),
            ],
        );
        if done.online.is_empty() && retried == 0 && r.relays_unreachable == 0 {
            // Nobody was heard, nothing computed: the phase timings say nothing, and an
            // idle deployment would print them every round (they stay in the metrics).
            tracing::info!(
                round = a.round,
                online = 0,
                seconds = secs,
                "round committed"
            );
        } else {
            tracing::info!(
                round = a.round,
                online = done.online.len(),
                outputs = r.sent,
                retried,
                relays_unreachable = r.relays_unreachable,
                seconds = secs,
                open_ms,
                engine_ms,
                commit_ms,
                outputs_ms,
                "round committed"
            );
        }
        Ok(RoundEnd::Committed(secs))
    }

    /// Reports an engine failure. A failed opening check is told to both peers (before
    /// this server closes its links) and logged with the two suspects; on any other
    /// failure this server waits briefly for a peer's complaint and, if one comes,
    /// settles it against its own record of what it sent, which names one server.
    async fn engine_failed(&self, s: &mut Session, round: u64, f: EngineFailure) -> ServerError {
        let me = PartyId::new(self.cfg.index as usize).expect("index checked at start");
        if let acs_engine::EngineError::OpeningCheckFailed(c) = &f.error {
            tracing::error!(
                round,
                opening = c.opening,
                value_from = c.value_from.index(),
                check_from = c.check_from.index(),
                "opened value failed its cross-check: server {} or server {} sent a wrong value",
                c.value_from.index(),
                c.check_from.index()
            );
            let complaint = wire::OpeningComplaint {
                round,
                opening: c.opening,
                accuser: c.accuser.index() as u8,
                value_from: c.value_from.index() as u8,
                check_from: c.check_from.index() as u8,
                value_hash: c.value_hash,
                check: c.check,
            };
            if let Err(e) = s.control.broadcast(&complaint) {
                tracing::warn!(round, error = %e, "complaint not sent to the peers");
            }
        } else if let Some(c) = await_complaint(&mut s.control, Duration::from_secs(2)).await {
            match resolve_complaint(me, &f.audit, &c) {
                Blame::Party(culprit) => tracing::error!(
                    round,
                    culprit = culprit.index(),
                    accuser = c.accuser.index(),
                    opening = c.opening,
                    "CHEATING: server {} misreported an opening in its complaint (it contradicts what this server sent it)",
                    culprit.index(),
                ),
                Blame::Pair(x, y) => tracing::error!(
                    round,
                    suspect_a = x.index(),
                    suspect_b = y.index(),
                    accuser = c.accuser.index(),
                    opening = c.opening,
                    "opening complaint from server {}: server {} or server {} lied (this server's record cannot tell which; the accuser's own pair is {{{}, {}}})",
                    c.accuser.index(),
                    x.index(),
                    y.index(),
                    c.value_from.index(),
                    c.check_from.index()
                ),
                Blame::Unknown => tracing::warn!(round, accuser = c.accuser.index(), "a peer's opening complaint could not be settled here"),
            }
        }
        log_blame(round, &f.error);
        ServerError::Engine(f.error.to_string())
    }

    /// After a session failed: tell this round's users to retry if the round cannot have
    /// committed anywhere; otherwise leave it to [`RoundLoop::settle`].
    fn session_failed(&mut self, error: &ServerError) {
        match self.in_flight.take() {
            Some(f) if !f.prepared => self.retry_in_flight(&f, &error.to_string()),
            Some(f) => {
                tracing::warn!(round = f.round, "round undecided until the peers are back");
                self.in_flight = Some(f);
            }
            None => {}
        }
    }
}

/// Logs who an engine error blames, by the rules of `docs/security.md`: a proof names one
/// server (and is logged in full so an operator can show it to others); what a server
/// saw on a peer's own authenticated link names that peer, for this server only; an
/// inconsistency that two servers could have caused names both as suspects.
fn log_blame(round: u64, e: &acs_engine::EngineError) {
    use acs_engine::EngineError as E;
    match e {
        E::Equivocation(proof) => tracing::error!(
            round,
            culprit = proof.culprit().index(),
            proof = %proof.to_hex(),
            "CHEATING (proven): {proof}; the proof is two statements signed with its identity key (hex, ':'-separated; each is the signed bytes followed by the Ed25519 signature)"
        ),
        E::WrongFinalSet(signed) => tracing::error!(
            round,
            culprit = signed.statement.signer.index(),
            statement = %hex(&signed.to_bytes()),
            "CHEATING (proven): server {} signed a final online set that is not the intersection of the three signed sets",
            signed.statement.signer.index()
        ),
        E::PeerMisbehaved { peer, what } => tracing::error!(
            round,
            culprit = peer.index(),
            "server {} misbehaved on its own link to this server: {what}",
            peer.index()
        ),
        E::Deviation { what, suspects } => tracing::error!(
            round,
            suspect_a = suspects[0].index(),
            suspect_b = suspects[1].index(),
            "{what}: server {} or server {} deviated (no evidence names one of them)",
            suspects[0].index(),
            suspects[1].index()
        ),
        E::VerificationFailed {
            what,
            culprit: Some(p),
        } => tracing::error!(
            round,
            culprit = p.index(),
            "CHEATING: verification of the computation failed ({what}); server {} contradicted its own commitment",
            p.index()
        ),
        E::VerificationFailed {
            what,
            culprit: None,
        } => tracing::error!(
            round,
            "verification of the computation failed ({what}): some server deviated (no evidence names one)"
        ),
        E::OpeningMismatch { suspect: Some(p) } => tracing::error!(
            round,
            culprit = p.index(),
            "server {} reported a digest of the openings that contradicts the other two",
            p.index()
        ),
        _ => {}
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first opening complaint a peer sends before its links close (or `timeout`).
async fn await_complaint(control: &mut MeshControl, timeout: Duration) -> Option<OpeningComplaint> {
    let deadline = tokio::time::Instant::now() + timeout;
    for peer in [Peer::Next, Peer::Prev] {
        loop {
            let frame = match tokio::time::timeout_at(deadline, control.recv(peer)).await {
                Ok(Ok(f)) => f,
                // Link closed, or out of time: nothing (more) from this peer.
                _ => break,
            };
            if frame.ty != wire::MsgType::OpeningComplaint {
                continue;
            }
            let Ok(w) = frame.decode::<wire::OpeningComplaint>() else {
                break;
            };
            let party = |i: u8| PartyId::new(i as usize);
            if let (Some(accuser), Some(value_from), Some(check_from)) =
                (party(w.accuser), party(w.value_from), party(w.check_from))
            {
                // Only the peer itself may accuse: it sent this over its own link.
                if accuser == control.party().peer(peer) {
                    return Some(OpeningComplaint {
                        opening: w.opening,
                        accuser,
                        value_from,
                        check_from,
                        value_hash: w.value_hash,
                        check: w.check,
                    });
                }
            }
        }
    }
    None
}

/// Logs rejected envelopes per relay and reason, so an operator sees which relay drops,
/// replays or damages envelopes.
fn log_rejections(round: u64, rejected: &[super::intake::Rejected]) {
    let mut by_relay: std::collections::BTreeMap<(u32, String), usize> = Default::default();
    for r in rejected {
        *by_relay
            .entry((r.relay, format!("{:?}", r.why)))
            .or_default() += 1;
    }
    for ((relay, why), n) in by_relay {
        tracing::warn!(round, relay, reason = %why, rejected = n, "envelopes rejected");
    }
}

/// Logs, per relay they came through here, the users this server heard that were left
/// out of the round because another server did not hear them: one of their other shares
/// was lost (by the user, a relay or the network; this server cannot tell which relay
/// carried the lost one, so an operator compares the servers' lines).
fn log_left_out(round: u64, retries: &[Answer]) {
    let mut by_relay: std::collections::BTreeMap<u32, usize> = Default::default();
    for a in retries {
        *by_relay.entry(a.relay).or_default() += 1;
    }
    for (relay, n) in by_relay {
        tracing::warn!(
            round,
            relay,
            users = n,
            "users heard here but left out of the round (not heard by every server, or \
             their input failed its check); told to retry"
        );
    }
}

/// Whether a failure ends only the current mesh (rebuild it and go on) rather than the
/// server.
fn ends_session(e: &ServerError) -> bool {
    match e {
        ServerError::Mesh(m) => matches!(m, mpc::MeshError::Timeout { .. }),
        ServerError::Engine(_) | ServerError::Clock(_) => true,
        ServerError::Commit(c) => matches!(c, commit::CommitError::Undecided { .. }),
        ServerError::Rejoin(_) => true,
        _ => false,
    }
}

async fn start_session(
    lp: &RoundLoop,
    party: PartyId,
    peer_listener: &TcpListener,
) -> Result<(Session, [RoundStatus; 2]), ServerError> {
    let cfg = &lp.cfg;
    let mesh = mpc::establish_on(
        &MeshConfig {
            party,
            deployment: cfg.deployment.clone(),
            next_addr: cfg.next_peer,
            identity: cfg.identity.clone(),
            roots: cfg.roots.clone(),
            establish_timeout: Duration::from_secs(120),
            limits: cfg.limits,
            status: commit::status(&lp.db)?,
            config_digest: config_digest(&cfg.round, cfg.security),
            descriptor: lp.descriptor.clone(),
        },
        peer_listener,
    )
    .await?;
    let mut keys = [lp.signing.verifying_key(); 3];
    keys[party.next().index()] = mesh.peer_keys[0];
    keys[party.prev().index()] = mesh.peer_keys[1];
    let notary = KeyNotary::new(
        statement_context(&cfg.deployment, &cfg.round, cfg.security),
        party,
        lp.signing.clone(),
        keys,
    )
    .map_err(|e| ServerError::Engine(e.to_string()))?;
    #[cfg(feature = "fault-injection")]
    let notary: Box<dyn Notary> = faults::notary(notary);
    #[cfg(not(feature = "fault-injection"))]
    let notary: Box<dyn Notary> = Box::new(notary);
    let (jobs, job_rx) = std::sync::mpsc::channel();
    let (ready_tx, ready) = oneshot::channel();
    let engine_cfg = cfg.round;
    let security = cfg.security;
    let channel = mesh.channel;
    std::thread::Builder::new()
        .name(format!("engine-{}", cfg.index))
        .spawn(move || {
            engine_thread(
                party, channel, engine_cfg, job_rx, ready_tx, notary, security,
            )
        })
        .map_err(|e| ServerError::Engine(e.to_string()))?;
    let session = Session {
        control: mesh.control,
        engine: jobs,
        pair_secrets: mesh.pair_secrets,
    };
    let started = ready
        .await
        .map_err(|_| ServerError::Engine("engine thread ended".into()))
        .and_then(|r| r.map_err(ServerError::Engine));
    if let Err(e) = started {
        session.control.close();
        return Err(e);
    }
    Ok((session, mesh.peer_status))
}

/// Runs an exchange server on the given listeners until `shutdown` or `max_rounds`.
///
/// Peer failures do not stop it: when a link drops or the engine fails, it aborts the
/// round in progress (or leaves it prepared for recovery), closes its links so its peers
/// notice too, and builds the mesh again, waiting for as long as a peer is down.
pub async fn run(
    cfg: ServerConfig,
    keys: impl Into<super::epochs::ServerKeys>,
    relay_listener: TcpListener,
    peer_listener: TcpListener,
    shutdown: ShutdownRx,
) -> Result<RunSummary, ServerError> {
    let party = PartyId::new(cfg.index as usize)
        .ok_or_else(|| ServerError::Config(format!("index {} is not 0, 1 or 2", cfg.index)))?;
    let db = Arc::new(Db::open(&cfg.db_path)?);
    let keys = keys.into();
    let signing = keys.master.identity_signing_key();
    let intake = Intake::load_epochs(keys.key_centres(), db.clone())?;
    drop(keys);
    tracing::info!(
        epochs = ?intake.served_epochs(),
        registered = ?intake.registered_per_epoch(),
        "master-secret epochs served"
    );
    // The peers take only the identity key and the certificate from it: any epoch's do.
    let descriptor = mpc::descriptor_for(intake.kgc(), &cfg.identity);
    let intake = Arc::new(Mutex::new(intake));
    let store = store_from_blob(db.store()?.as_deref(), &cfg.round)?;

    let (port, events) = relay_port::start(
        RelayPortConfig {
            server: cfg.index,
            relays: cfg.relays.get().into_iter().map(Role::Entry).collect(),
            identity: cfg.identity.clone(),
            roots: cfg.roots.clone(),
            limits: cfg.limits,
        },
        relay_listener,
        Arc::new(ListenerStats::default()),
        shutdown.clone(),
    )?;
    port.follow(cfg.relays.clone());
    let t = cfg.timing;
    cfg.metrics.configure(
        cfg.index,
        t.vote_timeout + 5 * (t.submit_window + t.collect_grace),
    );
    cfg.metrics
        .attach(port.clone(), cfg.relays.clone(), cfg.db_path.clone());
    let batches = spawn_dispatcher(events, port.clone(), intake.clone());
    // Never reuse a round number: not an aborted one, not one announced before a restart.
    let last_round = [db.committed_round()?, db.announced_round()?]
        .into_iter()
        .flatten()
        .max();
    let max_rounds = cfg.max_rounds;
    let mut lp = RoundLoop {
        cfg,
        signing,
        descriptor,
        port,
        batches,
        intake,
        db,
        store,
        last_round,
        in_flight: None,
        released: None,
    };
    let mut summary = RunSummary::default();
    let mut shutdown = shutdown;
    let mut start_gate = lp.cfg.start_gate.take();
    // One warning per outage of the peer mesh, then quiet retries (each attempt already
    // backs off inside `establish`), and one line when it is back; one line when it
    // first forms, so an operator sees the deployment come up.
    let mut outage: Option<std::time::Instant> = None;
    let mut formed = false;
    'sessions: loop {
        let started = tokio::select! {
            s = start_session(&lp, party, &peer_listener) => s,
            _ = crate::listener::shutdown_signalled(&mut shutdown) => break,
        };
        let (mut session, peer_status) = match started {
            Ok(s) => s,
            Err(e) if ends_session(&e) => {
                if outage.is_none() {
                    tracing::warn!(error = %e, "mesh not established; retrying until the peers are back (one line per outage)");
                    outage = Some(std::time::Instant::now());
                } else {
                    tracing::debug!(error = %e, "mesh still not established; retrying");
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match (outage.take(), formed) {
            (since, false) => tracing::info!(
                waited_seconds = since.map_or(0, |s| s.elapsed().as_secs()),
                "peer mesh established"
            ),
            (Some(since), true) => tracing::info!(
                outage_seconds = since.elapsed().as_secs(),
                "peer mesh established again"
            ),
            (None, true) => {}
        }
        formed = true;
        lp.cfg.metrics.set_session(true);
        match lp.settle(&mut session, peer_status).await {
            Ok(_) => {}
            Err(e) if ends_session(&e) => {
                tracing::error!(error = %e, "rejoin failed; rebuilding the mesh in 2 s");
                lp.cfg.metrics.set_session(false);
                session.control.close();
                // A peer that keeps sending a bad state must not spin this loop.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = crate::listener::shutdown_signalled(&mut shutdown) => break,
                }
            }
            Err(e) => return Err(e),
        }
        if let Some(gate) = start_gate.take() {
            tokio::select! {
                _ = gate => {}
                _ = crate::listener::shutdown_signalled(&mut shutdown) => break,
            }
        }
        loop {
            if max_rounds.is_some_and(|m| summary.committed + summary.aborted >= m) {
                break 'sessions;
            }
            lp.apply_epoch_reload();
            let r = tokio::select! {
                r = lp.round(&mut session) => r,
                _ = crate::listener::shutdown_signalled(&mut shutdown) => break 'sessions,
            };
            match r {
                Ok(RoundEnd::Committed(secs)) => {
                    summary.committed += 1;
                    summary.round_seconds.push(secs);
                }
                Ok(RoundEnd::Aborted) => {
                    summary.aborted += 1;
                    lp.cfg.metrics.aborted(AbortReason::Vote);
                }
                Err(e) if ends_session(&e) => {
                    tracing::warn!(error = %e, "peer session failed; rebuilding the mesh");
                    outage = Some(std::time::Instant::now());
                    lp.cfg.metrics.set_session(false);
                    // A round not yet prepared is aborted here; a prepared one is
                    // decided (and, if aborted, counted) by recovery once the peers are
                    // back, so it is not counted twice.
                    if lp.in_flight.as_ref().is_some_and(|f| !f.prepared) {
                        summary.aborted += 1;
                        lp.cfg.metrics.aborted(AbortReason::PeerFailure);
                    }
                    lp.session_failed(&e);
                    session.control.close();
                    continue 'sessions;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(summary)
}

/// TEST INSTRUMENTS, compiled only with the `fault-injection` feature (the crate's own
/// tests turn it on; release builds never have it): environment variables that make this
/// server misbehave on purpose, so the fault tests can crash or corrupt a real process at
/// a chosen point.
///
/// - `ACS_FAULT_PAUSE=<phase>:<round>[,...]`: in that round, stop at `collect` (just
///   after the announcement), `engine` (before the computation), `prepared` (after the
///   durable prepare, before voting) or `committed` (after the commit, before the
///   outputs go out), log `FAULT: paused`, and wait to be killed. `<phase>:armed`
///   stops in the first round to reach that phase once the file named by
///   `ACS_FAULT_ARM` exists (so a test can pick a round its users take part in).
/// - `ACS_FAULT_EQUIVOCATE=1`: once armed, sign a different online-set digest for the
///   next server than for the previous one, in one round.
/// - `ACS_FAULT_OUTPUT=<own|next|commit|all>`: once armed, corrupt that field of this
///   server's answers to every user of one round (after the servers' own checks).
/// - `ACS_FAULT_REJOIN_LIE=1`: hand the first peer this server helps rejoin a store
///   component with one bit flipped.
/// - `ACS_FAULT_LIE=<value|check>:<SortComparison|RouteAfterShuffle>:<n>`: lie in the
///   `n`-th opening (from 0) for that reason, counted from the first round computed once
///   armed (see `ACS_FAULT_ARM`; at once without it), in the first session only (so the
///   test sees one aborted round and then honest rounds).
/// - `ACS_FAULT_COMPUTE=<and-sort|and-match|mux|shuffle|input>:<n>`: deviate inside the
///   computation, not in an opening: flip a bit of this server's `n`-th message (from 0)
///   of that kind (an AND layer of the sorts' comparisons, of the matching's equality
///   circuit, the multiplexer, a reshare of the sorts' shuffles, the input conversion),
///   counted from the first round computed once armed, in the first session only.
#[cfg(feature = "fault-injection")]
pub(crate) mod faults {
    use acs_engine::round::consistency::{
        KeyNotary, Notary, SignedStatement, Statement, StatementKind,
    };
    use acs_engine::{LieKind, PartyId, Peer, Reason};

    /// `ACS_FAULT_EQUIVOCATE=1`: once armed, this server signs a different digest of its
    /// online set for its next peer than for its previous one (once per process).
    struct Equivocating(KeyNotary);

    impl Notary for Equivocating {
        fn context(&self) -> [u8; 32] {
            self.0.context()
        }
        fn sign(&self, to: Peer, s: &Statement) -> SignedStatement {
            static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if to == Peer::Next
                && s.kind == StatementKind::Heard
                && armed()
                && !USED.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                let mut lie = *s;
                lie.digest[0] ^= 1;
                tracing::warn!(
                    round = s.round,
                    "FAULT: signing a different online-set digest for the next server"
                );
                return self.0.sign(to, &lie);
            }
            self.0.sign(to, s)
        }
        fn key_of(&self, who: PartyId) -> &acs_kgc::ed25519_dalek::VerifyingKey {
            self.0.key_of(who)
        }
    }

    pub(crate) fn notary(n: KeyNotary) -> Box<dyn Notary> {
        if std::env::var_os("ACS_FAULT_EQUIVOCATE").is_some() {
            Box::new(Equivocating(n))
        } else {
            Box::new(n)
        }
    }

    /// `ACS_FAULT_OUTPUT=<own|next|commit|all>`: in the first round computed once armed,
    /// flip a bit of that field of this server's answer to every user (after the
    /// servers' checks, so only the users can notice).
    pub(super) fn alter_outputs(mut done: super::EngineDone, round: u64) -> super::EngineDone {
        static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let Ok(what) = std::env::var("ACS_FAULT_OUTPUT") else {
            return done;
        };
        if !armed()
            || done.outputs.is_empty()
            || USED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return done;
        }
        tracing::warn!(round, field = %what, users = done.outputs.len(), "FAULT: altering this server's output shares");
        for k in 0..done.outputs.len() {
            let s = done.outputs.get_mut(k);
            match what.as_str() {
                "own" => s.own[0] ^= 1 << 8,
                "next" => s.next[1] ^= 1,
                "commit" => s.other_commit[0] ^= 1,
                _ => {
                    s.own[0] ^= 1 << 8;
                    s.next[1] ^= 1;
                    s.other_commit[0] ^= 1;
                }
            }
        }
        done
    }

    /// `ACS_FAULT_REJOIN_LIE=1`: the first time this server helps a peer rejoin, it
    /// flips a bit of the store component it hands over.
    pub(crate) fn rejoin_component(component: &[u64]) -> Vec<u64> {
        static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let mut c = component.to_vec();
        if std::env::var_os("ACS_FAULT_REJOIN_LIE").is_some()
            && !c.is_empty()
            && !USED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!("FAULT: handing a rejoining peer a wrong store component");
            c[0] ^= 1;
        }
        c
    }

    pub(crate) async fn pause(phase: &str, round: u64) {
        let Ok(spec) = std::env::var("ACS_FAULT_PAUSE") else {
            return;
        };
        let armed =
            || std::env::var_os("ACS_FAULT_ARM").is_some_and(|p| std::path::Path::new(&p).exists());
        let hit = spec.split(',').any(|p| {
            p.split_once(':').is_some_and(|(ph, r)| {
                ph == phase && (r.parse() == Ok(round) || (r == "armed" && armed()))
            })
        });
        if hit {
            tracing::warn!(round, phase, "FAULT: paused; waiting to be killed");
            std::future::pending::<()>().await;
        }
    }

    /// Whether the fault is armed: always without `ACS_FAULT_ARM`, else once that file
    /// exists.
    pub(crate) fn armed() -> bool {
        std::env::var_os("ACS_FAULT_ARM").is_none_or(|p| std::path::Path::new(&p).exists())
    }

    /// The deviation `ACS_FAULT_COMPUTE` asks for: the phase it is aimed at (if any) and
    /// the fault. Taken once per process, so only the first session deviates.
    pub(crate) fn compute() -> Option<(Option<acs_engine::Phase>, acs_engine::ComputeFault)> {
        use acs_engine::{ComputeFault, ComputeSite, Phase};
        static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let spec = std::env::var("ACS_FAULT_COMPUTE").ok()?;
        if USED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let (what, nth) = spec.split_once(':')?;
        let nth = nth.parse().ok()?;
        let (phase, site) = match what {
            "and-sort" => (Some(Phase::Sort), ComputeSite::AndGate),
            "and-match" => (Some(Phase::Match), ComputeSite::AndGate),
            "mux" => (Some(Phase::Mux), ComputeSite::AndGate),
            "shuffle" => (Some(Phase::Sort), ComputeSite::Reshare),
            "input" => (None, ComputeSite::Input),
            _ => return None,
        };
        Some((phase, ComputeFault { site, nth }))
    }

    /// The lie `ACS_FAULT_LIE` asks for: the reason, which of its openings (from the
    /// first job after arming) and what to corrupt. Taken once per process, so only the
    /// first session lies.
    pub(crate) fn lie() -> Option<(Reason, u64, LieKind)> {
        static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let spec = std::env::var("ACS_FAULT_LIE").ok()?;
        if USED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut it = spec.split(':');
        let kind = match it.next()? {
            "value" => LieKind::Value,
            "check" => LieKind::Check,
            _ => return None,
        };
        let reason = match it.next()? {
            "SortComparison" => Reason::SortComparison,
            "RouteAfterShuffle" => Reason::RouteAfterShuffle,
            _ => return None,
        };
        let nth = it.next()?.parse().ok()?;
        Some((reason, nth, kind))
    }
}
