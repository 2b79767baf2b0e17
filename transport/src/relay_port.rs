//! The exchange server's relay-facing port: entry relays connect here over mutual TLS
//! (the client certificate must be one of the configured relays'), receive round
//! announcements, send one [`RelayBatch`] per round, and get [`RelayOutputs`] back.
//! Registration requests are forwarded the same way.
//!
//! This module moves frames; the round logic (which round is open, opening envelopes,
//! the consistency check, the engine round) consumes [`PortEvent`]s and answers through
//! [`RelayPortHandle`]. A batch is checked here only for what the relay contract fixes:
//! slot ids are exactly `0..n` in order, so a relay cannot smuggle in an ordering signal.

use crate::listener::{self, Conn, Limits, ListenerStats, ShutdownRx};
use crate::tls::{self, ClientAuth, Identity, Role};
use crate::wire::{
    self, MsgType, RelayBatch, RelayOutputs, RelayRegisterRequest, RelayRegisterResponse,
    RoundAnnounce, WireError, WireMessage,
};
use rustls::RootCertStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Frames queued per relay connection before the port gives up on that relay.
const RELAY_QUEUE: usize = 256;

/// How an exchange server's relay port is set up.
#[derive(Debug, Clone)]
pub struct RelayPortConfig {
    /// This exchange server (0, 1, 2).
    pub server: u8,
    /// The entry relays allowed to connect (by certificate name).
    pub relays: Vec<Role>,
    /// This server's certificate and key.
    pub identity: Identity,
    /// The deployment CA.
    pub roots: Arc<RootCertStore>,
    /// Listener limits.
    pub limits: Limits,
}

/// What relays send the exchange server.
#[derive(Debug)]
pub enum PortEvent {
    /// A relay connected (it has been sent the current announcement, if any).
    Connected {
        /// Which relay.
        relay: u32,
    },
    /// One relay's batch for one round.
    Batch {
        /// Which relay.
        relay: u32,
        /// The batch (slots already checked to be `0..n`).
        batch: RelayBatch,
    },
    /// A registration request; answer with [`RelayPortHandle::answer_registration`].
    Register {
        /// Which relay.
        relay: u32,
        /// The request, id included.
        request: RelayRegisterRequest,
    },
    /// A relay's connection ended.
    Disconnected {
        /// Which relay.
        relay: u32,
        /// Why.
        reason: String,
    },
}

/// Why the port could not deliver something to a relay.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The relay is not connected (its outputs are lost; its users will retry).
    #[error("entry relay {0} is not connected")]
    NotConnected(u32),
    /// The relay is not reading fast enough.
    #[error("entry relay {0} is not keeping up; frame dropped")]
    Backlogged(u32),
    /// Encoding failed.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// The ALPN protocol name of a relay port. Relays require it, so a relay pointed at an
/// exchange server's peer port (same certificate, no ALPN) fails at once with a clear
/// error instead of waiting for frames that never come.
pub const RELAY_ALPN: &[u8] = b"acs-relay/1";

/// In the notice text a relay gets when its certificate is not in the server's
/// `relays` list (the relay backs off and says so once per outage).
pub const REFUSED_NOTICE: &str = "relay not accepted";
/// In the notice text a relay connection gets when another connection with the
/// same certificate replaced it.
pub const REPLACED_NOTICE: &str = "connection replaced";

/// The entry relays an exchange server accepts, shared by its relay port and its round
/// loop, and replaced as a whole on reload (SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct RelaySet(Arc<std::sync::RwLock<Vec<u32>>>);

impl RelaySet {
    /// The set `relays` (sorted, duplicates removed).
    pub fn new(mut relays: Vec<u32>) -> Self {
        relays.sort_unstable();
        relays.dedup();
        RelaySet(Arc::new(std::sync::RwLock::new(relays)))
    }

    /// The relays now, ascending.
    pub fn get(&self) -> Vec<u32> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the set; returns (added, removed).
    pub fn replace(&self, relays: Vec<u32>) -> (Vec<u32>, Vec<u32>) {
        let new = RelaySet::new(relays).get();
        let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
        let added = new.iter().filter(|j| !cur.contains(j)).copied().collect();
        let removed = cur.iter().filter(|j| !new.contains(j)).copied().collect();
        *cur = new;
        (added, removed)
    }
}

impl From<Vec<u32>> for RelaySet {
    fn from(v: Vec<u32>) -> Self {
        RelaySet::new(v)
    }
}

/// One relay's live connection.
#[derive(Debug)]
struct LiveRelay {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    peer: std::net::SocketAddr,
    /// Fired to close this connection when a newer one with the same certificate arrives.
    kick: Option<tokio::sync::oneshot::Sender<String>>,
}

#[derive(Debug, Default)]
struct PortState {
    relays: HashMap<u32, LiveRelay>,
    current: Option<RoundAnnounce>,
    next_conn: u64,
    /// When set, the accepted relays (replaces the configured list; see [`RelaySet`]).
    follow: Option<RelaySet>,
    /// Refused certificate names and when each was last logged at WARN.
    refused: HashMap<String, std::time::Instant>,
    /// This exchange server (for messages).
    server: u8,
}

/// Sends to relays; cheap to clone.
#[derive(Debug, Clone)]
pub struct RelayPortHandle {
    state: Arc<Mutex<PortState>>,
}

impl RelayPortHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, PortState> {
        // A poisoned lock only means another task panicked mid-update of plain maps.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces a round to every connected relay and to relays that connect later.
    pub fn announce(&self, a: RoundAnnounce) -> Result<(), PortError> {
        let bytes = wire::encode_frame(&a)?;
        let mut st = self.lock();
        st.current = Some(a);
        for (relay, LiveRelay { tx, .. }) in st.relays.iter() {
            if tx.try_send(bytes.clone()).is_err() {
                tracing::warn!(relay, "relay not keeping up; announcement dropped");
            }
        }
        Ok(())
    }

    fn send<T: WireMessage>(&self, relay: u32, msg: &T) -> Result<(), PortError> {
        let bytes = wire::encode_frame(msg)?;
        let st = self.lock();
        let live = st
            .relays
            .get(&relay)
            .ok_or(PortError::NotConnected(relay))?;
        live.tx.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PortError::Backlogged(relay),
            mpsc::error::TrySendError::Closed(_) => PortError::NotConnected(relay),
        })
    }

    /// Sends a batch's outputs back to the relay that sent it.
    pub fn send_outputs(&self, relay: u32, outputs: &RelayOutputs) -> Result<(), PortError> {
        self.send(relay, outputs)
    }

    /// Answers a registration request.
    pub fn answer_registration(
        &self,
        relay: u32,
        answer: &RelayRegisterResponse,
    ) -> Result<(), PortError> {
        self.send(relay, answer)
    }

    /// From now on, accept the relays in `set` (as it changes) instead of the configured
    /// list. Connected relays that leave the set are disconnected.
    pub fn follow(&self, set: RelaySet) {
        self.lock().follow = Some(set);
        self.prune();
    }

    /// Closes the connections of relays no longer in the followed set.
    pub fn prune(&self) {
        let mut st = self.lock();
        let Some(set) = st.follow.as_ref().map(RelaySet::get) else {
            return;
        };
        let gone: Vec<u32> = st
            .relays
            .keys()
            .filter(|j| !set.contains(j))
            .copied()
            .collect();
        for j in gone {
            if let Some(mut live) = st.relays.remove(&j) {
                tracing::info!(
                    relay = j,
                    "entry relay removed from the relays list; disconnecting it"
                );
                if let Some(k) = live.kick.take() {
                    let _ = k.send(format!(
                        "{REFUSED_NOTICE}: entry-{j}.acs was removed from this server's relays list"
                    ));
                }
            }
        }
    }

    /// Relays connected now.
    pub fn connected(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.lock().relays.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// Starts the port on `listener`. Events arrive on the returned receiver, in order per
/// relay; the listener stops on `shutdown`.
pub fn start(
    cfg: RelayPortConfig,
    listener: TcpListener,
    stats: Arc<ListenerStats>,
    shutdown: ShutdownRx,
) -> Result<(RelayPortHandle, mpsc::Receiver<PortEvent>), tls::TlsError> {
    let server = tls::server_config(&cfg.identity, ClientAuth::Required(cfg.roots.clone()))?;
    let mut server = (*server).clone();
    server.alpn_protocols = vec![RELAY_ALPN.to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let handle = RelayPortHandle {
        state: Arc::new(Mutex::new(PortState {
            server: cfg.server,
            ..PortState::default()
        })),
    };
    let (events_tx, events_rx) = mpsc::channel(1024);
    let h = handle.clone();
    let relays = Arc::new(cfg.relays.clone());
    let limits = cfg.limits;
    tokio::spawn(listener::serve(
        "relay-port",
        listener,
        acceptor,
        limits,
        stats,
        shutdown,
        move |conn, sd| {
            serve_relay(
                conn,
                sd,
                h.clone(),
                relays.clone(),
                events_tx.clone(),
                limits,
            )
        },
    ));
    Ok((handle, events_rx))
}

async fn serve_relay(
    conn: Conn,
    mut shutdown: ShutdownRx,
    handle: RelayPortHandle,
    allowed: Arc<Vec<Role>>,
    events: mpsc::Sender<PortEvent>,
    limits: Limits,
) -> Result<(), WireError> {
    let Conn { mut stream, peer } = conn;
    let allowed: Vec<Role> = match handle.lock().follow.as_ref() {
        Some(set) => set.get().into_iter().map(Role::Entry).collect(),
        None => allowed.to_vec(),
    };
    let certs = stream.get_ref().1.peer_certificates();
    let relay = match tls::identify_peer(certs, &allowed) {
        Some(Role::Entry(j)) => j,
        _ => {
            let who = tls::role_of(certs).map_or("an unknown name".to_string(), |r| r.dns_name());
            let listed: Vec<u32> = allowed
                .iter()
                .filter_map(|r| match r {
                    Role::Entry(j) => Some(*j),
                    Role::Exchange(_) => None,
                })
                .collect();
            let server = handle.lock().server;
            let reason = format!(
                "{REFUSED_NOTICE}: certificate {who} is not in exchange server {server}'s relays list {listed:?}"
            );
            // Loud once a minute per certificate name; the relay backs off on its side.
            let loud = {
                let mut st = handle.lock();
                let now = std::time::Instant::now();
                let last = st.refused.insert(who.clone(), now);
                last.is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(60))
            };
            if loud {
                tracing::warn!(%peer, certificate = %who, relays = ?listed, "entry relay refused: its certificate is not in the relays list (add it and send SIGHUP)");
            } else {
                tracing::debug!(%peer, certificate = %who, "entry relay refused again");
            }
            let e = WireError::Invalid {
                ty: MsgType::RelayBatch,
                reason,
            };
            wire::send_notice(&mut stream, &e).await;
            let _ = stream.shutdown().await;
            // Counted (and logged at INFO) by the listener as a connection closed with an
            // error; the relay backs off, so these are a few lines a minute at most.
            return Err(e);
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(RELAY_QUEUE);
    let (kick_tx, mut kicked) = tokio::sync::oneshot::channel::<String>();
    let conn_id = {
        let mut st = handle.lock();
        st.next_conn += 1;
        let id = st.next_conn;
        if let Some(a) = st.current {
            if let Ok(b) = wire::encode_frame(&a) {
                let _ = tx.try_send(b);
            }
        }
        // One live connection per relay identity: a new one replaces the old, which is
        // closed (a relay that reconnects after a network failure, or a second process
        // started with the same certificate by mistake).
        let old = st.relays.insert(
            relay,
            LiveRelay {
                id,
                tx: tx.clone(),
                peer,
                kick: Some(kick_tx),
            },
        );
        if let Some(mut old) = old {
            tracing::warn!(
                relay,
                %peer,
                old_peer = %old.peer,
                "entry relay connected again while its previous connection was open; the new connection replaces the old one (two processes with one certificate?)"
            );
            if let Some(k) = old.kick.take() {
                let _ = k.send(format!(
                    "{REPLACED_NOTICE}: a newer connection with this relay's certificate replaced this one"
                ));
            }
        }
        id
    };
    tracing::info!(relay, %peer, "entry relay connected");
    let _ = events.send(PortEvent::Connected { relay }).await;
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });

    // Why this connection was closed from our side (replaced, or removed from the list).
    let mut kicked_why: Option<String> = None;
    let result: Result<(), WireError> = async {
        loop {
            let frame = tokio::select! {
                f = wire::read_frame(&mut rd, limits.frame_timeout) => f?,
                _ = listener::shutdown_signalled(&mut shutdown) => return Ok(()),
                why = &mut kicked => {
                    kicked_why = Some(why.unwrap_or_default());
                    return Ok(());
                }
            };
            match frame.ty {
                MsgType::RelayBatch => {
                    let batch: RelayBatch = frame.decode()?;
                    if let Some(pos) = batch
                        .entries
                        .iter()
                        .enumerate()
                        .position(|(i, e)| e.slot as usize != i)
                    {
                        return Err(WireError::Invalid {
                            ty: MsgType::RelayBatch,
                            reason: format!(
                                "slot ids must be 0..n in order; entry {pos} breaks it"
                            ),
                        });
                    }
                    let _ = events.send(PortEvent::Batch { relay, batch }).await;
                }
                MsgType::RelayRegisterRequest => {
                    let request: RelayRegisterRequest = frame.decode()?;
                    let _ = events.send(PortEvent::Register { relay, request }).await;
                }
                MsgType::ErrorNotice => {
                    frame.into_remote_error()?;
                }
                other => {
                    return Err(WireError::Unexpected {
                        got: other,
                        expected: "RelayBatch or RelayRegisterRequest",
                    })
                }
            }
        }
    }
    .await;

    {
        let mut st = handle.lock();
        if st.relays.get(&relay).map(|l| l.id) == Some(conn_id) {
            st.relays.remove(&relay);
        }
    }
    if let Some(why) = &kicked_why {
        if let Ok(b) = wire::encode_frame(&wire::ErrorNotice {
            code: wire::ErrorCode::Unavailable,
            message: why.clone(),
        }) {
            let _ = tx.try_send(b);
        }
    }
    if let Err(e) = &result {
        if let Some(code) = e.notice_code() {
            if let Ok(b) = wire::encode_frame(&wire::ErrorNotice {
                code,
                message: e.to_string(),
            }) {
                let _ = tx.try_send(b);
            }
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(limits.shutdown_grace, writer).await;
    let reason = match &result {
        Ok(()) if kicked_why.is_some() => kicked_why.clone().unwrap_or_default(),
        Ok(()) => "closed".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = events.send(PortEvent::Disconnected { relay, reason }).await;
    result
}
