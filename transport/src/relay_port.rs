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

#[derive(Debug, Default)]
struct PortState {
    relays: HashMap<u32, (u64, mpsc::Sender<Vec<u8>>)>,
    current: Option<RoundAnnounce>,
    next_conn: u64,
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
        for (relay, (_, tx)) in st.relays.iter() {
            if tx.try_send(bytes.clone()).is_err() {
                tracing::warn!(relay, "relay not keeping up; announcement dropped");
            }
        }
        Ok(())
    }

    fn send<T: WireMessage>(&self, relay: u32, msg: &T) -> Result<(), PortError> {
        let bytes = wire::encode_frame(msg)?;
        let st = self.lock();
        let (_, tx) = st
            .relays
            .get(&relay)
            .ok_or(PortError::NotConnected(relay))?;
        tx.try_send(bytes).map_err(|e| match e {
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
    let acceptor = TlsAcceptor::from(server);
    let handle = RelayPortHandle {
        state: Arc::new(Mutex::new(PortState::default())),
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
    let relay = match tls::identify_peer(stream.get_ref().1.peer_certificates(), &allowed) {
        Some(Role::Entry(j)) => j,
        _ => {
            let e = WireError::Invalid {
                ty: MsgType::RelayBatch,
                reason: "client certificate is not one of this deployment's entry relays".into(),
            };
            wire::send_notice(&mut stream, &e).await;
            let _ = stream.shutdown().await;
            return Err(e);
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(RELAY_QUEUE);
    let conn_id = {
        let mut st = handle.lock();
        st.next_conn += 1;
        let id = st.next_conn;
        if let Some(a) = st.current {
            if let Ok(b) = wire::encode_frame(&a) {
                let _ = tx.try_send(b);
            }
        }
        // A reconnecting relay replaces its old connection.
        st.relays.insert(relay, (id, tx.clone()));
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

    let result: Result<(), WireError> = async {
        loop {
            let frame = tokio::select! {
                f = wire::read_frame(&mut rd, limits.frame_timeout) => f?,
                _ = listener::shutdown_signalled(&mut shutdown) => return Ok(()),
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
        if st.relays.get(&relay).map(|(id, _)| *id) == Some(conn_id) {
            st.relays.remove(&relay);
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
        Ok(()) => "closed".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = events.send(PortEvent::Disconnected { relay, reason }).await;
    result
}
