//! The user client: registers with the three exchange servers through entry relays, then
//! sends one block every round (the oldest outbox message, or cover), each of its three
//! sealed shares through a different randomly chosen relay, and reconstructs its output.
//! A message leaves the outbox only when its status comes back `delivered` or `stored`;
//! on `dropped` or on a `retry` notice (from any one server) it is sent again next round.
//!
//! When a round's outputs are incomplete (an exchange server crashed between commit and
//! release), the round is *unsettled*: the user cannot tell whether its message went
//! out, so it sends cover until the missing share arrives late (a restarted server hands
//! out its last committed round again) and the round settles, reported through
//! [`User::take_late`]. Resending at once would deliver the message twice. Only after
//! [`LATE_ROUNDS`] rounds without the share does it give up and resend.

use crate::client::{FromRelay, RelayLink, RelayWriter};
use crate::output::ServerOutput;
use crate::wire::{OutputShare, RegisterRequest, RoundAnnounce, SealedEnvelope, WireError};
use acs_engine::round::outputs::{reconstruct_checked, OutputShare as ShareOfOutput};
use acs_engine::round::{payload_to_words, Block, Incoming, Role, RoundConfig, Status};
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
    /// The exchange server whose answer this round contradicted the other two servers'
    /// (it was outvoted: the output above is right all the same). Only a dishonest or
    /// broken server is ever named here.
    pub liar: Option<usize>,
}

/// A round is taken only with at least this long (ms) left to submit.
const SUBMIT_MARGIN_MS: u64 = 20;

/// Rounds an unsettled round waits for its missing output shares.
pub const LATE_ROUNDS: u64 = 4;

/// A round whose outputs were incomplete when its wait ended.
#[derive(Debug)]
struct Unsettled {
    round: u64,
    parts: [Option<ShareOfOutput>; 3],
    sent: Option<OutboxItem>,
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
    /// Rounds waiting for late output shares, oldest first.
    unsettled: Vec<Unsettled>,
    /// Submission deadline of the round last taken.
    last_deadline: u64,
    /// The last round each relay link announced: a share goes only through a relay that
    /// has opened the round (the announcements reach the relays at slightly different
    /// times, and an early envelope is refused).
    relay_round: Vec<u64>,
    /// Reports of unsettled rounds that settled (or were given up), for `take_late`.
    late: Vec<RoundReport>,
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
            unsettled: Vec::new(),
            relay_round: vec![0; relays.len()],
            last_deadline: 0,
            late: Vec::new(),
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

    /// Notes which relay announced which round.
    fn note(&mut self, tag: usize, ev: &FromRelay) {
        if let (FromRelay::Round(a), Some(r)) = (ev, self.relay_round.get_mut(tag)) {
            *r = (*r).max(a.round);
        }
    }

    async fn next_event(&mut self, what: &'static str) -> Result<FromRelay, UserError> {
        loop {
            match tokio::time::timeout(self.timeout, self.events.recv()).await {
                Err(_) => return Err(UserError::Timeout(what)),
                Ok(None) => return Err(UserError::Disconnected),
                Ok(Some((tag, Ok(ev)))) => {
                    self.note(tag, &ev);
                    return Ok(ev);
                }
                Ok(Some((tag, Err(e)))) => {
                    tracing::warn!(relay_link = tag, error = %e, "relay link ended");
                }
            }
        }
    }

    /// Waits for the next round to open; returns its announcement. A round whose
    /// submission window has already closed (announced while this user was still
    /// waiting for outputs) is skipped: an envelope for it would only be refused.
    pub async fn next_round(&mut self) -> Result<RoundAnnounce, UserError> {
        let open = |a: &RoundAnnounce| {
            a.deadline_unix_ms > crate::exchange::clock::now_unix_ms() + SUBMIT_MARGIN_MS
        };
        if let Some(a) = self.pending_round.take() {
            if self.last_round.is_none_or(|l| a.round > l) && open(&a) {
                self.last_round = Some(a.round);
                self.last_deadline = a.deadline_unix_ms;
                self.give_up_unsettled(a.round);
                return Ok(a);
            }
        }
        loop {
            match self.next_event("a round announcement").await? {
                FromRelay::Round(a) if self.last_round.is_none_or(|r| a.round > r) && open(&a) => {
                    self.last_round = Some(a.round);
                    self.last_deadline = a.deadline_unix_ms;
                    self.give_up_unsettled(a.round);
                    return Ok(a);
                }
                FromRelay::Output(o) => self.late_output(o),
                _ => {}
            }
        }
    }

    /// The relay links that have opened `round`: waits a little (a quarter of what is
    /// left of the window) for the others' announcements, then goes with those that came.
    async fn relays_open(&mut self, round: u64) -> Result<Vec<usize>, UserError> {
        let open = |u: &User| -> Vec<usize> {
            (0..u.relay_round.len())
                .filter(|&t| u.relay_round[t] >= round)
                .collect()
        };
        let left_ms = self
            .last_deadline
            .saturating_sub(crate::exchange::clock::now_unix_ms());
        let wait = tokio::time::Instant::now() + Duration::from_millis(left_ms / 4);
        while open(self).len() < self.relay_round.len() {
            match tokio::time::timeout_at(wait, self.events.recv()).await {
                Err(_) => break,
                Ok(None) => return Err(UserError::Disconnected),
                Ok(Some((tag, Ok(ev)))) => {
                    self.note(tag, &ev);
                    match ev {
                        FromRelay::Output(o) => self.late_output(o),
                        FromRelay::Round(a) if a.round > round => self.pending_round = Some(a),
                        _ => {}
                    }
                }
                Ok(Some((_, Err(_)))) => {}
            }
        }
        let ready = open(self);
        if ready.is_empty() {
            // Announced through a link that then failed: use them all and let a refusal
            // show up as a retry.
            return Ok((0..self.writers.len()).collect());
        }
        Ok(ready)
    }

    /// Reports of earlier rounds that settled late (their missing output shares came) or
    /// were given up after [`LATE_ROUNDS`] (`status: None`; the message is resent).
    pub fn take_late(&mut self) -> Vec<RoundReport> {
        std::mem::take(&mut self.late)
    }

    /// Rounds still waiting for late output shares.
    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }

    /// Whether a message may have gone out in a round not settled yet.
    fn in_doubt(&self) -> bool {
        self.unsettled.iter().any(|u| u.sent.is_some())
    }

    /// Opens an output share sealed for `round` by server `server`.
    fn open_part(
        &self,
        round: u64,
        server: usize,
        sealed: Vec<u8>,
    ) -> Result<ServerOutput, UserError> {
        let env = Envelope::from_vec(sealed)?;
        let bytes = self.keys[server].open(round, Direction::ServerToUser, &env)?;
        ServerOutput::decode(&bytes, self.cfg.output_words())
            .map_err(|e| UserError::Config(e.to_string()))
    }

    /// A late output share for an unsettled round.
    fn late_output(&mut self, o: OutputShare) {
        let l = o.server as usize;
        let Some(i) = self.unsettled.iter().position(|u| u.round == o.round) else {
            return;
        };
        if l >= 3 {
            return;
        }
        match self.open_part(o.round, l, o.sealed) {
            Ok(ServerOutput::Share(words)) => self.unsettled[i].parts[l] = Some(words),
            Ok(ServerOutput::Retry) => {
                let u = self.unsettled.remove(i);
                let report = self.settle(u.round, Some(Status::Retry), u.sent, None);
                self.late.push(report);
                return;
            }
            Err(e) => {
                tracing::warn!(round = o.round, server = l, error = %e, "late output share skipped");
                return;
            }
        }
        if self.unsettled[i].parts.iter().all(Option::is_some) {
            let u = self.unsettled.remove(i);
            let report = self.settle_parts(u.round, &u.parts, u.sent);
            self.late.push(report);
        }
    }

    /// Gives up on unsettled rounds too old for their shares to come (`now` is the
    /// round just opened): their messages go out again.
    fn give_up_unsettled(&mut self, now: u64) {
        while let Some(u) = self.unsettled.first() {
            if u.round + LATE_ROUNDS > now {
                break;
            }
            let u = self.unsettled.remove(0);
            tracing::warn!(
                round = u.round,
                "output shares never completed; the round's message will be sent again"
            );
            let report = self.settle(u.round, None, u.sent, None);
            self.late.push(report);
        }
    }

    /// A settled round's report; takes a delivered or stored message out of the outbox.
    fn settle(
        &mut self,
        round: u64,
        status: Option<Status>,
        sent: Option<OutboxItem>,
        incoming: Option<Incoming>,
    ) -> RoundReport {
        if matches!(status, Some(Status::Delivered) | Some(Status::Stored))
            && sent.is_some()
            && self.outbox.front() == sent.as_ref()
        {
            self.outbox.pop_front();
        }
        RoundReport {
            round,
            status,
            sent,
            incoming,
            liar: None,
        }
    }

    /// [`User::settle`] with the output reconstructed from three shares (`status: None`
    /// if they do not reconstruct).
    fn settle_parts(
        &mut self,
        round: u64,
        parts: &[Option<ShareOfOutput>; 3],
        sent: Option<OutboxItem>,
    ) -> RoundReport {
        let user = self.pseudonym().get();
        let checked = match (parts, u32::try_from(round)) {
            ([Some(a), Some(b), Some(c)], Ok(r)) => {
                match reconstruct_checked(r, user, [a, b, c], &self.cfg) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(round, error = %e, "output shares do not check; output not accepted");
                        None
                    }
                }
            }
            _ => None,
        };
        let liar = checked.as_ref().and_then(|c| c.liar).map(|p| p.index());
        if let Some(l) = liar {
            tracing::error!(
                round,
                server = l,
                "CHEATING: exchange server {l} sent this user an output share that the other two servers contradict; outvoted, output reconstructed from theirs"
            );
        }
        let output = checked.map(|c| c.output);
        let status = output.as_ref().map(|o| o.status);
        let mut report = self.settle(round, status, sent, output.and_then(|o| o.incoming));
        report.liar = liar;
        report
    }

    /// Sends this round's block (oldest outbox message, or cover): one sealed share per
    /// server, each through a different random relay where there are enough.
    /// While an earlier round is unsettled and may have carried the message, cover.
    pub async fn send_block(&mut self, round: u64) -> Result<Option<OutboxItem>, UserError> {
        let sent = if self.in_doubt() {
            None
        } else {
            self.outbox.front().cloned()
        };
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
        let mut order = self.relays_open(round).await?;
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
    /// output and updates the outbox. A `retry` notice from any server, or a relay's
    /// refusal of one of this round's shares, ends the wait at once: the servers will not
    /// take this block, so no output will come.
    /// Outputs that do not open (damaged on the way) are skipped, not fatal. When shares
    /// are still missing at the end, the report has `status: None` and the round stays
    /// unsettled (see the module documentation).
    pub async fn finish_round(
        &mut self,
        round: u64,
        sent: Option<OutboxItem>,
        timeout: Duration,
    ) -> Result<RoundReport, UserError> {
        let mut parts: [Option<ShareOfOutput>; 3] = [None, None, None];
        let mut retry = false;
        let deadline = tokio::time::Instant::now() + timeout;
        while !retry && parts.iter().any(Option::is_none) {
            let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => break,
                Ok(None) => return Err(UserError::Disconnected),
                Ok(Some((tag, Ok(ev)))) => {
                    self.note(tag, &ev);
                    ev
                }
                Ok(Some((_, Err(_)))) => continue,
            };
            match ev {
                FromRelay::Output(o) if o.round == round && (o.server as usize) < 3 => {
                    let l = o.server as usize;
                    match self.open_part(round, l, o.sealed) {
                        Ok(ServerOutput::Share(words)) => parts[l] = Some(words),
                        Ok(ServerOutput::Retry) => retry = true,
                        Err(e) => {
                            tracing::warn!(round, server = l, error = %e, "output share skipped")
                        }
                    }
                }
                FromRelay::Output(o) => self.late_output(o),
                // A share of this round's block was refused (too late, or the relay's
                // batch was full): its server never heard it, so the servers cannot take
                // the block (they take only blocks all three heard) and it is safe to send
                // again. Refusals come back at once, long before any round's outputs, so
                // this one is about this round's envelopes.
                FromRelay::Refused(n) => {
                    tracing::info!(round, code = ?n.code, notice = %n.message, "share refused by a relay; will send again");
                    retry = true;
                }
                // The next round opened before all outputs came: keep it for next_round.
                FromRelay::Round(a) if self.last_round.is_none_or(|r| a.round > r) => {
                    self.pending_round = Some(a);
                }
                _ => {}
            }
        }
        if retry {
            return Ok(self.settle(round, Some(Status::Retry), sent, None));
        }
        if parts.iter().all(Option::is_some) {
            return Ok(self.settle_parts(round, &parts, sent));
        }
        self.unsettled.push(Unsettled {
            round,
            parts,
            sent: sent.clone(),
        });
        Ok(self.settle(round, None, sent, None))
    }
}
