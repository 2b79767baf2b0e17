//! A guarded TLS listener (the shape of mini-redis's `server.rs`): a semaphore caps
//! concurrent connections (a permit is taken *before* accepting, so excess clients wait
//! in the kernel backlog rather than costing us memory), accept errors back off, every
//! TLS handshake has a deadline, and a watch channel shuts the loop down.
//!
//! Each connection's outcome is logged with the peer address and counted in
//! [`ListenerStats`], so an operator (and a test) can see why connections closed.

use crate::tls::TlsError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Limits every listener has.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Concurrent connections served; further clients wait to be accepted.
    pub max_connections: usize,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a frame has to arrive in full once its first byte has.
    pub frame_timeout: Duration,
    /// On shutdown, how long open connections get to finish before they are dropped.
    pub shutdown_grace: Duration,
    /// How long a connection may stay silent before it is closed, where the protocol
    /// expects traffic (a relay's users send every round): idle connections must not
    /// hold the `max_connections` slots for ever.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Counters of connection outcomes.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// Handshakes that failed (not TLS, bad certificate, wrong peer...).
    pub handshake_failed: AtomicU64,
    /// Handshakes that did not finish in time.
    pub handshake_timed_out: AtomicU64,
    /// Connections whose handler ended with an error (bad frame, peer error...).
    pub closed_with_error: AtomicU64,
    /// Connections whose handler ended cleanly.
    pub closed_ok: AtomicU64,
}

impl ListenerStats {
    /// A snapshot: (accepted, handshake_failed, handshake_timed_out, closed_with_error, closed_ok).
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.handshake_failed.load(Ordering::Relaxed),
            self.handshake_timed_out.load(Ordering::Relaxed),
            self.closed_with_error.load(Ordering::Relaxed),
            self.closed_ok.load(Ordering::Relaxed),
        )
    }
}

/// Shutdown signal: `true` once shutdown has begun.
pub type ShutdownRx = watch::Receiver<bool>;

/// Completes when `rx` says shutdown (or its sender is gone).
pub async fn shutdown_signalled(rx: &mut ShutdownRx) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Whether a listener faces users (an entry relay's user port): there, users' IP
/// addresses are logged only when `debug` is on (`docs/relay.md`); refused and failed
/// connections are still logged at `info`, without the address, and counted in
/// [`ListenerStats`]. Normal disconnects are not errors (see `relay::serve_user`).
fn user_facing(name: &str) -> bool {
    name == "entry"
}

/// An accepted, handshaken connection handed to a handler.
#[derive(Debug)]
pub struct Conn {
    /// The TLS stream.
    pub stream: TlsStream<TcpStream>,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Runs `handler` for every connection on `listener` until `shutdown`. The handler gets
/// the connection and its own shutdown receiver; its error is logged and counted.
pub async fn serve<H, F, E>(
    name: &'static str,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    stats: Arc<ListenerStats>,
    mut shutdown: ShutdownRx,
    handler: H,
) where
    H: Fn(Conn, ShutdownRx) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown_signalled(&mut shutdown) => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(10); x }
                Err(e) => {
                    // Typically EMFILE: wait for connections to close rather than spin.
                    tracing::warn!(listener = name, error = %e, "accept failed; backing off {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown_signalled(&mut shutdown) => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        // Reap finished tasks so the set does not grow with the connection count.
        while tasks.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let stats = stats.clone();
        let conn_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let stream = match handshake(&acceptor, tcp, limits.handshake_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    let counter = match e {
                        TlsError::HandshakeTimeout(_) => &stats.handshake_timed_out,
                        _ => &stats.handshake_failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let probe = matches!(&e, TlsError::Handshake(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
                    if probe {
                        // Closed before finishing a handshake: a TCP health check or a
                        // port scan, nothing an operator needs to read every few seconds.
                        tracing::debug!(listener = name, %peer, error = %e, "connection closed during the TLS handshake");
                    } else if user_facing(name) {
                        // Users' addresses only at debug; the event itself stays at info.
                        if tracing::enabled!(tracing::Level::DEBUG) {
                            tracing::debug!(listener = name, %peer, error = %e, "connection refused");
                        } else {
                            tracing::info!(listener = name, error = %e, "connection refused");
                        }
                    } else {
                        tracing::info!(listener = name, %peer, error = %e, "connection refused");
                    }
                    return;
                }
            };
            match handler(Conn { stream, peer }, conn_shutdown).await {
                Ok(()) => {
                    stats.closed_ok.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = name, %peer, "connection closed");
                }
                Err(e) => {
                    stats.closed_with_error.fetch_add(1, Ordering::Relaxed);
                    if user_facing(name) {
                        if tracing::enabled!(tracing::Level::DEBUG) {
                            tracing::debug!(listener = name, %peer, error = %e, "connection closed with error");
                        } else {
                            tracing::info!(listener = name, error = %e, "connection closed with error");
                        }
                    } else {
                        tracing::info!(listener = name, %peer, error = %e, "connection closed with error");
                    }
                }
            }
        });
    }
    drop(listener);
    tracing::info!(listener = name, open = tasks.len(), "listener stopping");
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

/// The server side of a TLS handshake, with a deadline.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, TlsError> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(TlsError::Handshake(e)),
        Err(_) => Err(TlsError::HandshakeTimeout(timeout)),
    }
}

/// The client side: connect to `addr`, verify `name`, with a deadline on both steps.
pub async fn connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: rustls::pki_types::ServerName<'static>,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsError> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(TlsError::Handshake)?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(name, tcp)
            .await
            .map_err(TlsError::Handshake)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(TlsError::HandshakeTimeout(timeout)),
    }
}
