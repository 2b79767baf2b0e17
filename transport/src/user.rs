//! The user client: registers with the three exchange servers through entry relays, then
//! sends one block every round (the oldest outbox message, or cover), each of its three
//! sealed shares through a different randomly chosen relay, and reconstructs its output.
//! A message leaves the outbox only when its status comes back `delivered` or `stored`;
//! on `dropped` or on a `retry` notice (from any one server) it is sent again next round.
//! A `stored` message is remembered by its send round until its receipt comes (the
//! exchange returns one when the message is delivered from the store or expires):
//! [`RoundReport::receipt`] names it with its final fate, so no message handed over is
//! left without one.
//!
//! When a round's outputs are incomplete (an exchange server crashed between commit and
//! release), the round is *unsettled*: the user cannot tell whether its message went
//! out, so it sends cover until the missing share arrives late (a restarted server hands
//! out its last committed round again) and the round settles, reported through
//! [`User::take_late`]. Resending at once would deliver the message twice. Only after
//! [`LATE_ROUNDS`] rounds without the share does it give up and resend. When exactly one
//! answer is missing at the end of the wait (a relay died after forwarding the share, or
//! a server crashed before releasing), the other two servers' answers settle the round
//! if they agree: between them they hold every output component twice over
//! (`acs_engine::round::outputs::reconstruct_from_two`).
//!
//! Relays come and go: a user starts when at least one relay answers (naming the others
//! in a warning) and reconnects every link that is down in the background, with
//! exponential backoff and jitter. A message goes out only when as many distinct relays
//! are up as it has shares (three, or fewer when fewer are configured); until then the
//! user sends cover and the message waits, so no relay ever carries two shares of it.

use crate::client::{FromRelay, RelayLink, RelayWriter};
use crate::keyring::{KeyRing, Offer};
use crate::output::ServerOutput;
use crate::wire::{OutputShare, RegisterRequest, RoundAnnounce, SealedEnvelope, WireError};
use acs_engine::round::outputs::{
    reconstruct_checked, reconstruct_from_two, OutputShare as ShareOfOutput,
};
use acs_engine::round::Output;
use acs_engine::round::{payload_to_words, Block, Incoming, Receipt, Role, RoundConfig, Status};
use acs_engine::PartyId;
use acs_kgc::{
    Direction, Envelope, RegistrationResponse, SignedDescriptor, UserIdentity, UserPseudonym,
};
use rand::seq::SliceRandom;
use rand::Rng;
use rustls::RootCertStore;
use std::collections::{BTreeMap, VecDeque};
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
    /// This client's configuration does not match the deployment's (named in the text).
    #[error("{0}")]
    Mismatch(String),
    /// An exchange server refused the registration.
    #[error("exchange server {server} refused the registration: {why}")]
    Refused {
        /// The server's index.
        server: usize,
        /// Why, in one word.
        why: crate::wire::Refusal,
    },
}

/// A new identity from `seed()`s whose address (`UserPseudonym::address`) is neither 0
/// nor in `taken`, which records it. Registration refuses a taken address (`docs/kgc.md`
/// §1), so a driver of many users skips such keys before registering: about one in
/// `2^32 / taken.len()`.
pub fn identity_with_free_address(
    taken: &mut std::collections::HashSet<u32>,
    mut seed: impl FnMut() -> [u8; 32],
) -> Result<UserIdentity, acs_kgc::KgcError> {
    loop {
        let id = UserIdentity::from_seed(seed())?;
        let address = id.pseudonym().address();
        if address != 0 && taken.insert(address) {
            return Ok(id);
        }
    }
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
    /// The final fate of one of this user's earlier `stored` messages, if its receipt
    /// came this round.
    pub receipt: Option<Fated>,
    /// The exchange server whose answer this round contradicted the other two servers'
    /// (it was outvoted: the output above is right all the same). Only a dishonest or
    /// broken server is ever named here.
    pub liar: Option<usize>,
}

/// A receipt, with the message it is for when this client still remembers it (it
/// remembers every message stored since it started; a receipt for a message stored by
/// an earlier run of the client names only the target and the send round).
#[derive(Clone, Debug)]
pub struct Fated {
    /// What the exchange returned: the target, the send round, the fate.
    pub receipt: Receipt,
    /// The message, if this client sent it.
    pub message: Option<OutboxItem>,
}

/// The longest pause between reconnection attempts to a relay (before jitter): short
/// enough that a restarted relay is taken up again within seconds, long enough (with
/// the jitter) that users do not hammer a relay that stays down.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Where a link's connection generation sits in an event's tag.
const GEN_SHIFT: u32 = 32;

/// The link an event's tag is about.
fn link_of(tag: usize) -> usize {
    tag & ((1usize << GEN_SHIFT) - 1)
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
    /// Per server, its keys across master-secret epochs.
    keys: Vec<KeyRing>,
    /// One per configured relay; `None` while that link is down (a task is reconnecting).
    writers: Vec<Option<RelayWriter>>,
    /// The configured relays (index, address), in link-tag order.
    relays: Vec<(u32, SocketAddr)>,
    roots: Arc<RootCertStore>,
    events: mpsc::UnboundedReceiver<(usize, Result<FromRelay, WireError>)>,
    /// Where link readers (the first ones and reconnected ones) send what relays say.
    events_tx: mpsc::UnboundedSender<(usize, Result<FromRelay, WireError>)>,
    /// Links re-established by the reconnect tasks.
    reconnected: mpsc::UnboundedReceiver<(usize, RelayWriter)>,
    reconnected_tx: mpsc::UnboundedSender<(usize, RelayWriter)>,
    /// Per link, the generation of its current connection: events carry
    /// `link | generation << GEN_SHIFT`, so the end of a replaced connection is not
    /// mistaken for the end of its successor.
    generation: Vec<usize>,
    /// Messages not yet delivered or stored, oldest first.
    pub outbox: VecDeque<OutboxItem>,
    /// Messages stored by the exchange, by send round, until their receipts come.
    awaiting: BTreeMap<u64, OutboxItem>,
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

    /// Connects to the relays in `relays` (index, address), then registers with the
    /// three servers whose (pinned) descriptors are given, each through a random relay.
    /// Starts when at least one relay answers: the others are named in a warning and
    /// reconnected in the background, with backoff, as is any link that drops later.
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
        let (reconnected_tx, reconnected) = mpsc::unbounded_channel();
        let mut writers = Vec::with_capacity(relays.len());
        let mut down = Vec::new();
        for (tag, &(index, addr)) in relays.iter().enumerate() {
            match RelayLink::connect(addr, index, roots.clone(), timeout).await {
                Ok(link) => writers.push(Some(link.spawn_reader(tag, tx.clone()))),
                Err(e) => {
                    down.push(format!("relay {index} at {addr}: {e}"));
                    writers.push(None);
                }
            }
        }
        if writers.iter().all(Option::is_none) {
            return Err(UserError::Config(format!(
                "no relay answered: {}",
                down.join("; ")
            )));
        }
        let mut user = User {
            identity,
            cfg,
            keys: Vec::with_capacity(3),
            writers,
            relays: relays.to_vec(),
            roots,
            events,
            events_tx: tx,
            reconnected,
            reconnected_tx,
            generation: vec![0; relays.len()],
            outbox: VecDeque::new(),
            awaiting: BTreeMap::new(),
            last_round: None,
            pending_round: None,
            unsettled: Vec::new(),
            relay_round: vec![0; relays.len()],
            last_deadline: 0,
            late: Vec::new(),
            timeout,
        };
        for problem in &down {
            tracing::warn!("{problem}; reconnecting in the background");
        }
        for tag in 0..user.writers.len() {
            if user.writers[tag].is_none() {
                user.reconnect(tag);
            }
        }
        let now = crate::exchange::clock::now_unix_ms() / 1000;
        for (server, descriptor) in descriptors.iter().enumerate() {
            let (pending, request) =
                user.identity
                    .register(descriptor, now, &mut rand_core::OsRng)?;
            let up: Vec<usize> = (0..user.writers.len())
                .filter(|&t| user.writers[t].is_some())
                .collect();
            let Some(&via) = up.choose(&mut rand::thread_rng()) else {
                return Err(UserError::Disconnected);
            };
            let req = RegisterRequest {
                server: server as u8,
                body: request.as_bytes().to_vec(),
            };
            if let Some(w) = user.writers[via].as_mut() {
                if let Err(e) = w.register(&req).await {
                    user.link_down(user.current_tag(via), &e);
                    return Err(e.into());
                }
            }
            // One deadline for the answer, however many other events come meanwhile.
            let deadline = tokio::time::Instant::now() + timeout;
            let body = loop {
                let ev = match tokio::time::timeout_at(deadline, user.events.recv()).await {
                    Err(_) => {
                        return Err(UserError::Mismatch(format!(
                            "no registration answer from exchange server {server} within timeout_ms ({} ms): check that descriptors[{server}] is server {server}'s descriptor (the order in the client config), that the server runs, and that the descriptor is current (a server refuses registrations under a master-secret epoch it has retired)",
                            timeout.as_millis()
                        )))
                    }
                    Ok(None) => return Err(UserError::Disconnected),
                    Ok(Some((tag, Ok(ev)))) => {
                        user.note(tag, &ev);
                        ev
                    }
                    Ok(Some((tag, Err(e)))) => {
                        user.link_down(tag, &e);
                        continue;
                    }
                };
                if let FromRelay::Registered(r) = ev {
                    if r.server as usize == server {
                        if let Some(why) = crate::wire::Refusal::from_body(&r.body) {
                            return Err(UserError::Refused { server, why });
                        }
                        break r.body;
                    }
                }
            };
            let epoch = pending.epoch();
            let secret = pending.finish(&RegistrationResponse::from_bytes(&body)?)?;
            user.keys
                .push(KeyRing::new(descriptor, secret.agree().in_epoch(epoch)));
        }
        Ok(user)
    }

    /// A relay link ended (the relay restarted, or the network failed): forget its writer
    /// and reconnect in the background. `tag` is an event's tag, or [`User::current_tag`]
    /// for a failure seen while writing; the end of an already replaced connection (an
    /// older generation) is ignored.
    fn link_down(&mut self, tag: usize, e: &dyn std::fmt::Display) {
        let link = link_of(tag);
        if link >= self.writers.len() || tag >> GEN_SHIFT != self.generation[link] {
            return;
        }
        if self.writers[link].take().is_some() {
            let (index, addr) = self.relays[link];
            tracing::warn!(relay = index, %addr, error = %e, "relay link ended; reconnecting");
            self.relay_round[link] = 0;
            self.reconnect(link);
        }
    }

    /// The event tag of `link`'s current connection.
    fn current_tag(&self, link: usize) -> usize {
        link | (self.generation[link] << GEN_SHIFT)
    }

    /// Reconnects `link` in a task: exponential backoff from 200 ms to [`RECONNECT_MAX`]
    /// with up to 50% jitter
    /// (so users do not all come back at once), one log line per outage.
    fn reconnect(&mut self, link: usize) {
        self.generation[link] += 1;
        let tag = self.current_tag(link);
        let (index, addr) = self.relays[link];
        let (roots, timeout) = (self.roots.clone(), self.timeout);
        let (events, done) = (self.events_tx.clone(), self.reconnected_tx.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                if done.is_closed() {
                    return;
                }
                if let Ok(link_up) = RelayLink::connect(addr, index, roots.clone(), timeout).await {
                    let writer = link_up.spawn_reader(tag, events);
                    let _ = done.send((link, writer));
                    return;
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        });
    }

    /// Takes up links the reconnect tasks re-established.
    fn poll_reconnects(&mut self) {
        while let Ok((tag, writer)) = self.reconnected.try_recv() {
            let (index, addr) = self.relays[tag];
            tracing::info!(relay = index, %addr, "relay link re-established");
            self.writers[tag] = Some(writer);
        }
    }

    /// Links up now.
    fn links_up(&self) -> usize {
        self.writers.iter().filter(|w| w.is_some()).count()
    }

    /// Notes which relay announced which round, and takes the answer to a registration
    /// under a newer master-secret epoch ([`User::offer_descriptor`]).
    fn note(&mut self, tag: usize, ev: &FromRelay) {
        if let (FromRelay::Round(a), Some(r)) = (ev, self.relay_round.get_mut(link_of(tag))) {
            *r = (*r).max(a.round);
        }
        if let FromRelay::Registered(r) = ev {
            if let Some(ring) = self.keys.get_mut(r.server as usize) {
                match ring.answered(&r.body) {
                    Ok(Some(epoch)) => tracing::info!(
                        server = r.server,
                        epoch,
                        "registered under a new master-secret epoch; envelopes to this server use it from now on"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        server = r.server,
                        error = %e,
                        "registration under a new master-secret epoch failed; it is tried again at the next offer"
                    ),
                }
            }
        }
    }

    /// The master-secret epoch this user's envelopes to each server use.
    pub fn epochs(&self) -> Vec<u32> {
        self.keys.iter().map(KeyRing::epoch).collect()
    }

    /// Offers server `server`'s descriptor as published now (a client re-reads it every
    /// round). When it is signed by the identity pinned at the first registration and
    /// names a newer master-secret epoch, a registration under that epoch goes out
    /// through a random relay, and the user moves to the epoch when the answer comes
    /// (while it waits, envelopes keep the current epoch, which the server still
    /// serves). Returns whether a registration went out.
    pub async fn offer_descriptor(
        &mut self,
        server: usize,
        descriptor: &SignedDescriptor,
    ) -> Result<bool, UserError> {
        let wait = self.timeout.max(Duration::from_secs(10));
        let ring = self
            .keys
            .get_mut(server)
            .ok_or_else(|| UserError::Config(format!("no exchange server {server}")))?;
        if ring.offer(descriptor, wait)? == Offer::Current {
            return Ok(false);
        }
        let now = crate::exchange::clock::now_unix_ms() / 1000;
        let (pending, request) = self
            .identity
            .register(descriptor, now, &mut rand_core::OsRng)?;
        self.poll_reconnects();
        let up: Vec<usize> = (0..self.writers.len())
            .filter(|&t| self.writers[t].is_some())
            .collect();
        let Some(&via) = up.choose(&mut rand::thread_rng()) else {
            return Ok(false);
        };
        let req = RegisterRequest {
            server: server as u8,
            body: request.as_bytes().to_vec(),
        };
        if let Some(w) = self.writers[via].as_mut() {
            if let Err(e) = w.register(&req).await {
                self.link_down(self.current_tag(via), &e);
                return Ok(false);
            }
        }
        tracing::info!(
            server,
            epoch = descriptor.descriptor().epoch,
            "registering under a new master-secret epoch"
        );
        self.keys[server].moving(pending);
        Ok(true)
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
                Ok(Some((tag, Err(e)))) => self.link_down(tag, &e),
            }
        }
    }

    /// Waits for the next round to open; returns its announcement. A round whose
    /// submission window has already closed (announced while this user was still
    /// waiting for outputs) is skipped: an envelope for it would only be refused.
    pub async fn next_round(&mut self) -> Result<RoundAnnounce, UserError> {
        self.poll_reconnects();
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
        self.poll_reconnects();
        let open = |u: &User| -> Vec<usize> {
            (0..u.relay_round.len())
                .filter(|&t| u.relay_round[t] >= round && u.writers[t].is_some())
                .collect()
        };
        let left_ms = self
            .last_deadline
            .saturating_sub(crate::exchange::clock::now_unix_ms());
        let wait = tokio::time::Instant::now() + Duration::from_millis(left_ms / 4);
        while open(self).len() < self.links_up() {
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
                Ok(Some((tag, Err(e)))) => self.link_down(tag, &e),
            }
        }
        let ready = open(self);
        if ready.is_empty() {
            // Announced through a link that then failed: use every link that is up and
            // let a refusal show up as a retry.
            return Ok((0..self.writers.len())
                .filter(|&t| self.writers[t].is_some())
                .collect());
        }
        Ok(ready)
    }

    /// Reports of earlier rounds that settled late (their missing output shares came) or
    /// were given up after [`LATE_ROUNDS`] (`status: None`; the message is resent).
    pub fn take_late(&mut self) -> Vec<RoundReport> {
        std::mem::take(&mut self.late)
    }

    /// Messages stored by the exchange whose receipts have not come yet, by send round.
    pub fn awaiting_receipts(&self) -> &BTreeMap<u64, OutboxItem> {
        &self.awaiting
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
        ServerOutput::decode(&bytes, self.cfg.output_words()).map_err(|e| match e {
            // It opened under this server's key, so the server sent it: the sizes differ.
            crate::output::OutputFormatError::Length { expected, got } => {
                UserError::Mismatch(format!(
                    "exchange server {server}'s answer for round {round} is {got} bytes where this client expects {expected}: the client's [round] payload_words ({}) differs from the servers'",
                    self.cfg.payload_words
                ))
            }
            other => UserError::Config(other.to_string()),
        })
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

    /// A settled round's report; takes a delivered, stored or misaddressed message out of
    /// the outbox (a misaddressed one can never be delivered: its target pseudonym is
    /// registered to nobody), remembers a stored one until its receipt, and matches a
    /// receipt that came.
    fn settle(
        &mut self,
        round: u64,
        status: Option<Status>,
        sent: Option<OutboxItem>,
        output: Option<Output>,
    ) -> RoundReport {
        if matches!(
            status,
            Some(Status::Delivered | Status::Stored | Status::Misaddressed)
        ) && sent.is_some()
            && self.outbox.front() == sent.as_ref()
        {
            self.outbox.pop_front();
        }
        if let (Some(Status::Stored), Some(m)) = (status, &sent) {
            self.awaiting.insert(round, m.clone());
        }
        let (incoming, receipt) = match output {
            Some(o) => (o.incoming, o.receipt),
            None => (None, None),
        };
        let receipt = receipt.map(|r| {
            let sent_round = u64::from(r.sent);
            // The receipt names the target too: a message of that round to another
            // target is not this one (the client's memory is from another run).
            let message = match self.awaiting.get(&sent_round) {
                Some(m) if m.to == r.to => self.awaiting.remove(&sent_round),
                _ => None,
            };
            Fated {
                receipt: r,
                message,
            }
        });
        RoundReport {
            round,
            status,
            sent,
            incoming,
            receipt,
            liar: None,
        }
    }

    /// [`User::settle`] with the output reconstructed from three shares (`status: None`
    /// if they do not reconstruct).
    /// The output from exactly two servers' answers, if they are consistent
    /// ([`reconstruct_from_two`]).
    fn output_from_two(&self, round: u64, parts: &[Option<ShareOfOutput>; 3]) -> Option<Output> {
        let present: Vec<(PartyId, &ShareOfOutput)> = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((PartyId::new(i)?, p.as_ref()?)))
            .collect();
        let [a, b] = present[..] else {
            return None;
        };
        let r = u32::try_from(round).ok()?;
        match reconstruct_from_two(r, self.pseudonym().get(), a, b, &self.cfg) {
            Ok(o) => {
                tracing::info!(
                    round,
                    "one server's answer never came; settled from the other two"
                );
                Some(o)
            }
            Err(e) => {
                tracing::warn!(round, error = %e, "two answers do not agree; waiting for the third");
                None
            }
        }
    }

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
        let mut report = self.settle(round, status, sent, output);
        report.liar = liar;
        report
    }

    /// Sends this round's block (oldest outbox message, or cover): one sealed share per
    /// server, each through a different random relay where there are enough.
    /// While an earlier round is unsettled and may have carried the message, cover.
    pub async fn send_block(&mut self, round: u64) -> Result<Option<OutboxItem>, UserError> {
        let mut order = self.relays_open(round).await?;
        order.shuffle(&mut rand::thread_rng());
        // Each share through its own relay where three are configured (or as many
        // distinct ones as there are): with fewer up, the message waits and this round
        // carries cover, so no relay ever holds two shares of a message.
        let distinct = self.relays.len().min(3);
        let sent = if self.in_doubt() || order.len() < distinct {
            if order.len() < distinct && !self.outbox.is_empty() {
                tracing::info!(
                    round,
                    relays_up = order.len(),
                    "fewer relays up than shares: sending cover, the message waits"
                );
            }
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
        if order.is_empty() {
            // No relay up: nothing can go out this round (the wait for outputs ends as
            // a timeout and the round stays unsettled, as cover).
            return Ok(None);
        }
        // Each server gets its share and the hash of its next peer's, which that peer
        // passes it in the conversion (the check of `acs_engine::round::input`).
        let shares = block.share_checked(
            &self.cfg,
            round,
            self.pseudonym().get(),
            &mut rand::thread_rng(),
        );
        for (server, share) in shares.iter().enumerate() {
            let bytes = zeroize::Zeroizing::new(share.to_bytes());
            let env = self.keys[server].seal(
                round,
                Direction::UserToServer,
                &bytes,
                &mut rand_core::OsRng,
            )?;
            let via = order[server % order.len()];
            let Some(w) = self.writers[via].as_mut() else {
                continue;
            };
            let submitted = w
                .submit(&SealedEnvelope {
                    round,
                    server: server as u8,
                    sealed: env.into_bytes(),
                })
                .await;
            // A lost share means the servers cannot all take the block: the round
            // answers with a retry (or times out) and the message goes again.
            if let Err(e) = submitted {
                self.link_down(self.current_tag(via), &e);
            }
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
                Ok(Some((tag, Err(e)))) => {
                    self.link_down(tag, &e);
                    continue;
                }
            };
            match ev {
                FromRelay::Output(o) if o.round == round && (o.server as usize) < 3 => {
                    let l = o.server as usize;
                    match self.open_part(round, l, o.sealed) {
                        Ok(ServerOutput::Share(words)) => parts[l] = Some(words),
                        Ok(ServerOutput::Retry) => retry = true,
                        Err(e @ UserError::Mismatch(_)) => return Err(e),
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
        // One answer lost on the way (its relay died after forwarding the share): any
        // two servers' answers cover every component twice, so a consistent pair settles
        // the round, and the message is neither left in doubt nor sent twice.
        if let Some(output) = self.output_from_two(round, &parts) {
            let status = Some(output.status);
            return Ok(self.settle(round, status, sent, Some(output)));
        }
        self.unsettled.push(Unsettled {
            round,
            parts,
            sent: sent.clone(),
        });
        Ok(self.settle(round, None, sent, None))
    }
}
