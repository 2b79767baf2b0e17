//! The user client: registers with the three exchange servers through entry relays, then
//! sends one block every round (the oldest outbox message, or cover), each of its three
//! sealed shares through a different randomly chosen relay, and reconstructs its output.
//! A message leaves the outbox only when its status comes back `delivered` or `stored`;
//! on `dropped`, on a `retry` notice (from any one server) or on missing outputs it is
//! sent again next round.

use crate::client::{FromRelay, RelayLink, RelayWriter};
use crate::output::ServerOutput;
use crate::wire::{RegisterRequest, RoundAnnounce, SealedEnvelope, WireError};
use acs_engine::round::{payload_to_words, Block, Incoming, Output, Role, RoundConfig, Status};
use acs_kgc::{
    Direction, Envelope, LongTermKey, RegistrationResponse, SignedDescriptor, UserIdentity,
    UserPseudonym,
};
use rand::seq::SliceRandom;
use rand::Rng;
use rustls::RootCertStore;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// Network or framing.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// TLS setup or connection.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// kgc (registration, sealing, opening).
    #[error(transparent)]
    Kgc(#[from] acs_kgc::KgcError),
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// All relay links are gone.
    #[error("no relay connection left")]
    Disconnected,
    /// Configuration.
    #[error("{0}")]
    Config(String),
}

/// A message waiting to be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// Target pseudonym.
    pub to: u64,
    /// The message (at most `payload_words * 8` bytes; zero-padded on the wire).
    pub payload: Vec<u8>,
}

/// What one round gave the user.
#[derive(Clone, Debug)]
pub struct RoundReport {
    /// The round.
    pub round: u64,
    /// The status of the block sent (`None` when outputs were incomplete: resend).
    pub status: Option<Status>,
    /// The message sent this round, if any.
    pub sent: Option<OutboxItem>,
    /// What arrived for this user.
    pub incoming: Option<Incoming>,
}

/// A registered user with its relay connections.
#[derive(Debug)]
pub struct User {
    identity: UserIdentity,
    cfg: RoundConfig,
    keys: Vec<LongTermKey>,
    writers: Vec<RelayWriter>,
    events: mpsc::UnboundedReceiver<(usize, Result<FromRelay, WireError>)>,
    /// Messages not yet delivered or stored, oldest first.
    pub outbox: VecDeque<OutboxItem>,
    last_round: Option<u64>,
    /// A round announced while the previous one's outputs were awaited.
    pending_round: Option<RoundAnnounce>,
    timeout: Duration,
}

impl User {
    /// This user's pseudonym.
    pub fn pseudonym(&self) -> UserPseudonym {
        self.identity.pseudonym()
    }

    /// Connects to every relay in `relays` (index, address), then registers with the
    /// three servers whose (pinned) descriptors are given, each through a random relay.
    pub async fn register(
        identity: UserIdentity,
        cfg: RoundConfig,
        relays: &[(u32, SocketAddr)],
        roots: Arc<RootCertStore>,
        descriptors: &[SignedDescriptor; 3],
        timeout: Duration,
    ) -> Result<User, UserError> {
        if relays.is_empty() {
            return Err(UserError::Config("no relays".into()));
        }
        let (tx, events) = mpsc::unbounded_channel();
        let mut writers = Vec::with_capacity(relays.len());
        for (tag, &(index, addr)) in relays.iter().enumerate() {
            let link = RelayLink::connect(addr, index, roots.clone(), timeout).await?;
            writers.push(link.spawn_reader(tag, tx.clone()));
        }
        let mut user = User {
            identity,
            cfg,
            keys: Vec::with_capacity(3),
            writers,
            events,
            outbox: VecDeque::new(),
            last_round: None,
            pending_round: None,
            timeout,
        };
        let now = crate::exchange::clock::now_unix_ms() / 1000;
        for (server, descriptor) in descriptors.iter().enumerate() {
            let (pending, request) =
                user.identity
                    .register(descriptor, now, &mut rand_core::OsRng)?;
            let via = rand::thread_rng().gen_range(0..user.writers.len());
            user.writers[via]
                .register(&RegisterRequest {
                    server: server as u8,
                    body: request.as_bytes().to_vec(),
                })
                .await?;
            let body = loop {
                match user.next_event("a registration answer").await? {
                    FromRelay::Registered(r) if r.server as usize == server => break r.body,
                    _ => {}
                }
            };
            let secret = pending.finish(&RegistrationResponse::from_bytes(&body)?)?;
            user.keys.push(secret.agree());
        }
        Ok(user)
    }

    async fn next_event(&mut self, what: &'static str) -> Result<FromRelay, UserError> {
        loop {
            match tokio::time::timeout(self.timeout, self.events.recv()).await {
                Err(_) => return Err(UserError::Timeout(what)),
                Ok(None) => return Err(UserError::Disconnected),
                Ok(Some((_, Ok(ev)))) => return Ok(ev),
                Ok(Some((tag, Err(e)))) => {
                    tracing::warn!(relay_link = tag, error = %e, "relay link ended");
                }
            }
        }
    }

    /// Waits for the next round to open; returns its announcement.
    pub async fn next_round(&mut self) -> Result<RoundAnnounce, UserError> {
        if let Some(a) = self.pending_round.take() {
            if self.last_round.is_none_or(|l| a.round > l) {
                self.last_round = Some(a.round);
                return Ok(a);
            }
        }
        loop {
            if let FromRelay::Round(a) = self.next_event("a round announcement").await? {
                if self.last_round.is_none_or(|r| a.round > r) {
                    self.last_round = Some(a.round);
                    return Ok(a);
                }
            }
        }
    }

    /// Sends this round's block (oldest outbox message, or cover): one sealed share per
    /// server, each through a different random relay where there are enough.
    pub async fn send_block(&mut self, round: u64) -> Result<Option<OutboxItem>, UserError> {
        let sent = self.outbox.front().cloned();
        let block = match &sent {
            Some(m) => Block {
                role: Role::Send,
                dst: m.to,
                payload: payload_to_words(&m.payload, self.cfg.payload_words).ok_or_else(|| {
                    UserError::Config(format!(
                        "message of {} bytes exceeds the payload size",
                        m.payload.len()
                    ))
                })?,
            },
            None => Block::cover(&self.cfg),
        };
        let shares = block.share(&self.cfg, &mut rand::thread_rng());
        let mut order: Vec<usize> = (0..self.writers.len()).collect();
        order.shuffle(&mut rand::thread_rng());
        for (server, share) in shares.iter().enumerate() {
            let bytes: Vec<u8> = share.iter().flat_map(|w| w.to_le_bytes()).collect();
            let env = self.keys[server].seal(
                round,
                Direction::UserToServer,
                &bytes,
                &mut rand_core::OsRng,
            )?;
            let via = order[server % order.len()];
            self.writers[via]
                .submit(&SealedEnvelope {
                    round,
                    server: server as u8,
                    sealed: env.into_bytes(),
                })
                .await?;
        }
        Ok(sent)
    }

    /// Collects the three output shares of `round` (until `timeout`), reconstructs the
    /// output and updates the outbox. A `retry` notice from any server ends the wait at
    /// once: the servers agreed not to take this block, so no output will come.
    /// Outputs that do not open (damaged on the way) are skipped, not fatal.
    pub async fn finish_round(
        &mut self,
        round: u64,
        sent: Option<OutboxItem>,
        timeout: Duration,
    ) -> Result<RoundReport, UserError> {
        let mut parts: [Option<Vec<u64>>; 3] = [None, None, None];
        let mut retry = false;
        let deadline = tokio::time::Instant::now() + timeout;
        while !retry && parts.iter().any(Option::is_none) {
            let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => break,
                Ok(None) => return Err(UserError::Disconnected),
                Ok(Some((_, Ok(ev)))) => ev,
                Ok(Some((_, Err(_)))) => continue,
            };
            match ev {
                FromRelay::Output(o) if o.round == round && (o.server as usize) < 3 => {
                    let l = o.server as usize;
                    let opened = Envelope::from_vec(o.sealed)
                        .map_err(UserError::from)
                        .and_then(|env| {
                            Ok(self.keys[l].open(round, Direction::ServerToUser, &env)?)
                        })
                        .and_then(|bytes| {
                            ServerOutput::decode(&bytes, self.cfg.output_words())
                                .map_err(|e| UserError::Config(e.to_string()))
                        });
                    match opened {
                        Ok(ServerOutput::Share(words)) => parts[l] = Some(words),
                        Ok(ServerOutput::Retry) => retry = true,
                        Err(e) => {
                            tracing::warn!(round, server = l, error = %e, "output share skipped")
                        }
                    }
                }
                // The next round opened before all outputs came: keep it for next_round.
                FromRelay::Round(a) if self.last_round.is_none_or(|r| a.round > r) => {
                    self.pending_round = Some(a);
                }
                _ => {}
            }
        }
        if retry {
            return Ok(RoundReport {
                round,
                status: Some(Status::Retry),
                sent,
                incoming: None,
            });
        }
        let output = match &parts {
            [Some(a), Some(b), Some(c)] => Output::reconstruct([a, b, c], &self.cfg).ok(),
            _ => None,
        };
        let status = output.as_ref().map(|o| o.status);
        if matches!(status, Some(Status::Delivered) | Some(Status::Stored)) && sent.is_some() {
            self.outbox.pop_front();
        }
        Ok(RoundReport {
            round,
            status,
            sent,
            incoming: output.and_then(|o| o.incoming),
        })
    }
}
