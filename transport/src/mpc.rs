//! The engine's [`Channel`] over mutual TLS between the three exchange servers.
//!
//! Topology: party `i` dials party `i+1` and accepts party `i-1`, so each of the three
//! links is opened exactly once. The acceptor checks that the client certificate is the
//! expected party's ([`crate::tls::verify_peer_role`]); both sides then exchange a
//! [`PeerHello`] naming party and deployment. Connections that fail either check are
//! closed with a logged reason and the party keeps waiting for the right peer until the
//! establishment deadline.
//!
//! Each link runs two tasks: a writer draining an unbounded queue (the engine's `send`
//! must not wait for the receiver), and a reader that sorts incoming frames into the
//! engine queue ([`MsgType::MpcData`]) and the coordination queue (round announcements,
//! online-set hashes, commit votes). The engine side ([`TlsChannel`]) is blocking and must
//! run on a blocking thread (`tokio::task::spawn_blocking` or a plain thread): its `recv`
//! uses `blocking_recv`, which panics inside an async context. The coordination side
//! ([`MeshControl`]) is async.
//!
//! Any bad frame from a peer is fatal for the link: the reader sends the peer an
//! [`crate::wire::ErrorNotice`], closes, and the engine's next `recv` on that link
//! returns [`ChannelError::Malformed`] (or [`ChannelError::Transport`]) with the reason.

use crate::listener::{self, Limits};
use crate::tls::{self, Identity, Role, TlsError};
use crate::wire::{self, Frame, MsgType, PeerHello, RoundStatus, WireError, WireMessage};
use acs_engine::channel::{Channel, ChannelError, PartyId, Peer};
use acs_kgc::ed25519_dalek::VerifyingKey;
use acs_kgc::SignedDescriptor;
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How a party joins the mesh.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// This party.
    pub party: PartyId,
    /// Deployment identifier; all three must agree.
    pub deployment: String,
    /// Where party `party.next()` accepts peer connections.
    pub next_addr: SocketAddr,
    /// This party's certificate and key (role `exchange-{party}`).
    pub identity: Identity,
    /// The deployment CA.
    pub roots: Arc<RootCertStore>,
    /// How long to keep trying to establish both links.
    pub establish_timeout: Duration,
    /// Handshake and frame timeouts.
    pub limits: Limits,
    /// This server's database status, told to the peers in the hello.
    pub status: RoundStatus,
    /// Digest of the exchange parameters; the peers' must be equal.
    pub config_digest: [u8; 32],
    /// This server's signed descriptor ([`descriptor_for`]), naming `identity`'s
    /// certificate: the peers take from it the identity key that checks this server's
    /// signed online-set statements.
    pub descriptor: Vec<u8>,
}

/// The signed descriptor of the server whose kgc is `kgc` and whose TLS identity is
/// `identity`, for [`MeshConfig::descriptor`].
pub fn descriptor_for(kgc: &acs_kgc::Kgc, identity: &tls::Identity) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    kgc.descriptor(identity.cert_sha256(), now)
        .to_bytes()
        .to_vec()
}

/// Why the mesh could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A link did not come up before the deadline.
    #[error("link to {peer} not established within {timeout:?}; last error: {last}")]
    Timeout {
        /// The missing peer.
        peer: PartyId,
        /// The deadline.
        timeout: Duration,
        /// The last failure seen on that link.
        last: String,
    },
    /// The peer's hello was wrong.
    #[error("peer hello from {peer}: {reason}")]
    Hello {
        /// The peer.
        peer: PartyId,
        /// What was wrong.
        reason: String,
    },
}

const NEXT: usize = 0;
const PREV: usize = 1;

fn slot(p: Peer) -> usize {
    match p {
        Peer::Next => NEXT,
        Peer::Prev => PREV,
    }
}

enum Outgoing {
    Mpc(Vec<u8>),
    Frame(Vec<u8>),
    /// Write this frame (if any), then close the link: the reader saw a fatal error.
    Close(Option<Vec<u8>>),
}

/// Aborts the link *readers* when the last half of the mesh is dropped. Writers are not
/// aborted: once every sender is gone they drain what was queued (the engine's `send`
/// returns before the bytes are written), send TLS close_notify and end.
#[derive(Debug)]
struct LinkTasks(Vec<AbortHandle>);

impl Drop for LinkTasks {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

type Failure = Arc<Mutex<Option<String>>>;

/// The engine's view of the mesh: blocking, ordered, one queue per peer.
#[derive(Debug)]
pub struct TlsChannel {
    party: PartyId,
    out: [UnboundedSender<Outgoing>; 2],
    mpc_in: [UnboundedReceiver<Result<Vec<u8>, ChannelError>>; 2],
    failed: [Failure; 2],
    _tasks: Arc<LinkTasks>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Mpc(b) => write!(f, "Mpc({} bytes)", b.len()),
            Outgoing::Frame(b) => write!(f, "Frame({} bytes)", b.len()),
            Outgoing::Close(_) => write!(f, "Close"),
        }
    }
}

impl TlsChannel {
    /// This party.
    pub fn party(&self) -> PartyId {
        self.party
    }
}

impl Channel for TlsChannel {
    fn send(&mut self, to: Peer, msg: Vec<u8>) -> Result<(), ChannelError> {
        let i = slot(to);
        if let Some(reason) = self.failed[i].lock().map(|g| g.clone()).unwrap_or(None) {
            return Err(ChannelError::Transport { peer: to, reason });
        }
        if msg.len() > wire::caps::MPC {
            return Err(ChannelError::Transport {
                peer: to,
                reason: format!(
                    "engine message of {} bytes exceeds the MPC frame cap of {} bytes",
                    msg.len(),
                    wire::caps::MPC
                ),
            });
        }
        self.out[i]
            .send(Outgoing::Mpc(msg))
            .map_err(|_| ChannelError::Closed(to))
    }

    fn recv(&mut self, from: Peer) -> Result<Vec<u8>, ChannelError> {
        match self.mpc_in[slot(from)].blocking_recv() {
            Some(r) => r,
            None => Err(ChannelError::Closed(from)),
        }
    }
}

/// The coordination view of the mesh: async, typed frames other than engine data.
#[derive(Debug)]
pub struct MeshControl {
    party: PartyId,
    out: [UnboundedSender<Outgoing>; 2],
    ctl_in: [UnboundedReceiver<Result<Frame, WireError>>; 2],
    _tasks: Arc<LinkTasks>,
}

impl MeshControl {
    /// This party.
    pub fn party(&self) -> PartyId {
        self.party
    }

    /// Queues `msg` for `to`.
    pub fn send<T: WireMessage>(&self, to: Peer, msg: &T) -> Result<(), WireError> {
        let bytes = wire::encode_frame(msg)?;
        self.out[slot(to)]
            .send(Outgoing::Frame(bytes))
            .map_err(|_| WireError::Closed)
    }

    /// Queues `msg` for both peers.
    pub fn broadcast<T: WireMessage>(&self, msg: &T) -> Result<(), WireError> {
        self.send(Peer::Next, msg)?;
        self.send(Peer::Prev, msg)
    }

    /// The next coordination frame from `from`.
    pub async fn recv(&mut self, from: Peer) -> Result<Frame, WireError> {
        self.ctl_in[slot(from)]
            .recv()
            .await
            .unwrap_or(Err(WireError::Closed))
    }

    /// The next coordination frame from `from`, decoded as `T` (anything else is an error).
    pub async fn recv_msg<T: WireMessage>(&mut self, from: Peer) -> Result<T, WireError> {
        self.recv(from).await?.decode()
    }

    /// Closes both links (after what is queued is written): the peers' readers see the
    /// end of the stream, so a peer engine waiting on this server stops waiting.
    pub fn close(&self) {
        for out in &self.out {
            let _ = out.send(Outgoing::Close(None));
        }
    }
}

/// Both halves of an established mesh.
#[derive(Debug)]
pub struct Mesh {
    /// Hand to the engine (on a blocking thread).
    pub channel: TlsChannel,
    /// Keep in the async round coordinator.
    pub control: MeshControl,
    /// What the peers said about their databases, `[next, prev]`
    /// (see [`crate::exchange::commit::recovery`]).
    pub peer_status: [RoundStatus; 2],
    /// The peers' identity keys, `[next, prev]`, from descriptors that name the very
    /// certificates they presented (so the keys belong to exchange servers of this CA).
    pub peer_keys: [VerifyingKey; 2],
    /// A secret this server shares with each peer and the third server does not know,
    /// `[with next, with prev]`: the TLS exporter of that link (the same at both of its
    /// ends, new for every session). Seeds the nonces of the store commitments
    /// (`exchange::rejoin`).
    pub pair_secrets: [[u8; 32]; 2],
}

/// Joins the mesh: dials the next party, accepts the previous one on `listener`.
pub async fn establish(cfg: &MeshConfig, listener: TcpListener) -> Result<Mesh, MeshError> {
    establish_on(cfg, &listener).await
}

/// [`establish`] on a listener the caller keeps, so a server can build the mesh again
/// on the same port after a link or a peer failed.
pub async fn establish_on(cfg: &MeshConfig, listener: &TcpListener) -> Result<Mesh, MeshError> {
    let server = tls::server_config(&cfg.identity, tls::ClientAuth::Required(cfg.roots.clone()))?;
    let client = tls::client_config(cfg.roots.clone(), Some(&cfg.identity))?;
    let deadline = Instant::now() + cfg.establish_timeout;
    let (next, prev) = tokio::join!(
        dial_next(cfg, TlsConnector::from(client), deadline),
        accept_prev(cfg, TlsAcceptor::from(server), listener, deadline),
    );
    let (next, (next_status, next_key)) = next?;
    let (prev, (prev_status, prev_key)) = prev?;
    let export = |r: Result<[u8; 32], rustls::Error>, peer: PartyId| {
        r.map_err(|e| MeshError::Hello {
            peer,
            reason: format!("TLS exporter: {e}"),
        })
    };
    let pair_secrets = [
        export(
            next.get_ref()
                .1
                .export_keying_material([0u8; 32], PAIR_SECRET_LABEL, None),
            cfg.party.next(),
        )?,
        export(
            prev.get_ref()
                .1
                .export_keying_material([0u8; 32], PAIR_SECRET_LABEL, None),
            cfg.party.prev(),
        )?,
    ];
    let mut mesh = spawn_links(
        cfg.party,
        next,
        prev,
        cfg.limits.frame_timeout,
        [next_key, prev_key],
    );
    mesh.peer_status = [next_status, prev_status];
    mesh.pair_secrets = pair_secrets;
    Ok(mesh)
}

/// The TLS exporter label of [`Mesh::pair_secrets`] (RFC 5705 / RFC 8446 §7.5).
const PAIR_SECRET_LABEL: &[u8] = b"EXPERIMENTAL acs store commitment nonce";

/// What a peer's hello establishes: its database status and its identity key.
type HelloOutcome = (RoundStatus, VerifyingKey);

async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: &MeshConfig,
    stream: &mut S,
    peer: PartyId,
    peer_cert_sha256: Option<[u8; 32]>,
) -> Result<HelloOutcome, MeshError> {
    let err = |reason: String| MeshError::Hello { peer, reason };
    let mine = PeerHello {
        party: cfg.party.index() as u8,
        deployment: cfg.deployment.clone(),
        status: cfg.status,
        config_digest: cfg.config_digest,
        descriptor: cfg.descriptor.clone(),
    };
    wire::write_msg(stream, &mine)
        .await
        .map_err(|e| err(e.to_string()))?;
    let frame = tokio::time::timeout(
        cfg.limits.frame_timeout,
        wire::read_frame(stream, cfg.limits.frame_timeout),
    )
    .await
    .map_err(|_| err("no hello in time".into()))?
    .and_then(|f| f.into_remote_error())
    .map_err(|e| err(e.to_string()))?;
    let theirs: PeerHello = match frame.decode() {
        Ok(h) => h,
        Err(e) => {
            wire::send_notice(stream, &e).await;
            return Err(err(e.to_string()));
        }
    };
    let key = SignedDescriptor::from_bytes(&theirs.descriptor)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            if Some(d.descriptor().tls_cert_sha256) == peer_cert_sha256 {
                Ok(d.descriptor().identity_key)
            } else {
                Err("its descriptor names another TLS certificate than the one it presented".into())
            }
        });
    let problem = if theirs.party as usize != peer.index() {
        Some(format!("says it is party {}", theirs.party))
    } else if let Err(e) = &key {
        Some(format!("descriptor: {e}"))
    } else if theirs.deployment != cfg.deployment {
        Some(format!(
            "belongs to deployment {:?}, not {:?}",
            theirs.deployment, cfg.deployment
        ))
    } else if theirs.config_digest != cfg.config_digest {
        Some("runs different exchange parameters ([round] differs)".to_string())
    } else {
        None
    };
    if let Some(reason) = problem {
        let e = WireError::Invalid {
            ty: MsgType::PeerHello,
            reason: reason.clone(),
        };
        wire::send_notice(stream, &e).await;
        return Err(err(reason));
    }
    let key = key.map_err(err)?;
    Ok((theirs.status, key))
}

type ClientStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
type ServerStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

async fn dial_next(
    cfg: &MeshConfig,
    connector: TlsConnector,
    deadline: Instant,
) -> Result<(ClientStream, HelloOutcome), MeshError> {
    let peer = cfg.party.next();
    let role = Role::Exchange(peer.index() as u8);
    let mut backoff = Duration::from_millis(20);
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        let attempt = async {
            let mut s = listener::connect(
                &connector,
                cfg.next_addr,
                role.server_name(),
                cfg.limits.handshake_timeout,
            )
            .await?;
            let cert = tls::peer_cert_sha256(s.get_ref().1.peer_certificates());
            let outcome = hello(cfg, &mut s, peer, cert).await?;
            Ok::<_, MeshError>((s, outcome))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                tracing::debug!(party = %cfg.party, %peer, error = %e, "dial failed; retrying");
                last = e.to_string();
            }
            Err(_) => break,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
    Err(MeshError::Timeout {
        peer,
        timeout: cfg.establish_timeout,
        last,
    })
}

async fn accept_prev(
    cfg: &MeshConfig,
    acceptor: TlsAcceptor,
    listener: &TcpListener,
    deadline: Instant,
) -> Result<(ServerStream, HelloOutcome), MeshError> {
    let peer = cfg.party.prev();
    let role = Role::Exchange(peer.index() as u8);
    let mut last = String::from("no connection");
    // Handshakes run side by side (at most `ACCEPT_PARALLEL` at a time), so connections
    // that stall their handshake cannot keep the real peer waiting behind them; the first
    // one that proves to be the peer wins and the rest are dropped.
    let mut attempts = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if attempts.len() < ACCEPT_PARALLEL => {
                let (tcp, addr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        last = e.to_string();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let (cfg, acceptor) = (cfg.clone(), acceptor.clone());
                attempts.spawn(async move {
                    let attempt = async {
                        let _ = tcp.set_nodelay(true);
                        let mut s =
                            listener::handshake(&acceptor, tcp, cfg.limits.handshake_timeout).await?;
                        let certs = s.get_ref().1.peer_certificates();
                        if let Err(e) = tls::verify_peer_role(certs, role) {
                            let notice = WireError::Invalid {
                                ty: MsgType::PeerHello,
                                reason: e.to_string(),
                            };
                            wire::send_notice(&mut s, &notice).await;
                            let _ = s.shutdown().await;
                            return Err(MeshError::Tls(e));
                        }
                        let cert = tls::peer_cert_sha256(s.get_ref().1.peer_certificates());
                        let outcome = hello(&cfg, &mut s, peer, cert).await?;
                        Ok::<_, MeshError>((s, outcome))
                    };
                    (addr, attempt.await)
                });
            }
            Some(done) = attempts.join_next(), if !attempts.is_empty() => match done {
                Ok((_, Ok(s))) => return Ok(s),
                Ok((addr, Err(e))) => {
                    tracing::warn!(party = %cfg.party, %addr, error = %e, "rejected peer connection");
                    last = e.to_string();
                }
                Err(e) => last = e.to_string(),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(MeshError::Timeout {
                    peer,
                    timeout: cfg.establish_timeout,
                    last,
                });
            }
        }
    }
}

/// Peer-port handshakes run at once while the mesh forms.
const ACCEPT_PARALLEL: usize = 64;

/// Starts reader and writer tasks for the two links (any streams; the TLS ones in
/// production).
fn spawn_links<A, B>(
    party: PartyId,
    next: A,
    prev: B,
    frame_timeout: Duration,
    peer_keys: [VerifyingKey; 2],
) -> Mesh
where
    A: AsyncRead + AsyncWrite + Send + 'static,
    B: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut handles = Vec::new();
    let (n_out, n_mpc, n_ctl, n_fail) =
        spawn_link(party, Peer::Next, next, frame_timeout, &mut handles);
    let (p_out, p_mpc, p_ctl, p_fail) =
        spawn_link(party, Peer::Prev, prev, frame_timeout, &mut handles);
    let tasks = Arc::new(LinkTasks(handles));
    Mesh {
        channel: TlsChannel {
            party,
            out: [n_out.clone(), p_out.clone()],
            mpc_in: [n_mpc, p_mpc],
            failed: [n_fail, p_fail],
            _tasks: tasks.clone(),
        },
        control: MeshControl {
            party,
            out: [n_out, p_out],
            ctl_in: [n_ctl, p_ctl],
            _tasks: tasks,
        },
        peer_status: [RoundStatus::default(); 2],
        peer_keys,
        pair_secrets: [[0; 32]; 2],
    }
}

#[allow(clippy::type_complexity)]
fn spawn_link<S>(
    party: PartyId,
    peer: Peer,
    stream: S,
    frame_timeout: Duration,
    handles: &mut Vec<AbortHandle>,
) -> (
    UnboundedSender<Outgoing>,
    UnboundedReceiver<Result<Vec<u8>, ChannelError>>,
    UnboundedReceiver<Result<Frame, WireError>>,
    Failure,
)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = unbounded_channel::<Outgoing>();
    let (mpc_tx, mpc_rx) = unbounded_channel();
    let (ctl_tx, ctl_rx) = unbounded_channel();
    let failed: Failure = Arc::new(Mutex::new(None));
    let peer_id = party.peer(peer);

    let fail = failed.clone();
    let writer = tokio::spawn(async move {
        while let Some(item) = out_rx.recv().await {
            let r = match item {
                Outgoing::Mpc(b) => wire::write_mpc(&mut wr, &b).await,
                Outgoing::Frame(b) => {
                    async {
                        wr.write_all(&b).await?;
                        wr.flush().await?;
                        Ok(())
                    }
                    .await
                }
                Outgoing::Close(notice) => {
                    if let Some(b) = notice {
                        let _ = wr.write_all(&b).await;
                    }
                    let _ = wr.shutdown().await;
                    return;
                }
            };
            if let Err(e) = r {
                tracing::warn!(%party, peer = %peer_id, error = %e, "peer link write failed");
                if let Ok(mut g) = fail.lock() {
                    *g = Some(format!("write to {peer_id} failed: {e}"));
                }
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    drop(writer);

    let notices = out_tx.clone();
    let reader_fail = failed.clone();
    let reader = tokio::spawn(async move {
        let err = loop {
            let frame = match wire::read_peer_frame(&mut rd, frame_timeout).await {
                Ok(f) => f,
                Err(e) => break e,
            };
            match frame.ty {
                    MsgType::MpcData => {
                        // The receiver may be gone (the round ended); that is not the peer's fault.
                        let _ = mpc_tx.send(Ok(frame.body));
                    }
                    MsgType::RoundAnnounce
                    | MsgType::OnlineSetHash
                    | MsgType::CommitVote
                    | MsgType::OpeningComplaint
                    | MsgType::RejoinState
                    | MsgType::RejoinData => {
                        let _ = ctl_tx.send(Ok(frame));
                    }
                    MsgType::ErrorNotice => match frame.into_remote_error() {
                        Err(e) => break e,
                        Ok(f) => {
                            break WireError::Unexpected {
                                got: f.ty,
                                expected: "an error notice",
                            }
                        }
                    },
                    other => break WireError::Unexpected {
                        got: other,
                        expected:
                            "MpcData, RoundAnnounce, OnlineSetHash, CommitVote, OpeningComplaint or Rejoin*",
                    },
                }
        };
        let notice = err.notice_code().and_then(|code| {
            wire::encode_frame(&wire::ErrorNotice {
                code,
                message: err.to_string(),
            })
            .ok()
        });
        let _ = notices.send(Outgoing::Close(notice));
        drop(notices);
        tracing::warn!(%party, peer = %peer_id, error = %err, "peer link closed");
        let reason = err.to_string();
        if let Ok(mut g) = reader_fail.lock() {
            g.get_or_insert_with(|| format!("link to {peer_id} closed: {reason}"));
        }
        let chan_err = match &err {
            WireError::Closed => ChannelError::Closed(peer),
            WireError::Io(_) | WireError::Timeout(_) | WireError::Remote { .. } => {
                ChannelError::Transport {
                    peer,
                    reason: reason.clone(),
                }
            }
            _ => ChannelError::Malformed {
                peer,
                reason: reason.clone(),
            },
        };
        let _ = mpc_tx.send(Err(chan_err));
        let _ = ctl_tx.send(Err(err));
    });
    handles.push(reader.abort_handle());
    (out_tx, mpc_rx, ctl_rx, failed)
}

#[cfg(test)]
mod tests;
