//! The user's side of a relay connection: server-authenticated TLS to an entry relay,
//! then envelopes and registration requests out, announcements, output shares and
//! registration answers in. The full client (sealing with kgc keys, one random relay per
//! share, reconstruction, the outbox) is built on this.

use crate::listener;
use crate::tls::{self, Role, TlsError};
use crate::wire::{
    self, ErrorCode, ErrorNotice, MsgType, OutputShare, RegisterRequest, RegisterResponse,
    RoundAnnounce, SealedEnvelope, WireError,
};
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Something a relay sent a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRelay {
    /// A round is open.
    Round(RoundAnnounce),
    /// An exchange server's output share.
    Output(OutputShare),
    /// An exchange server's registration answer.
    Registered(RegisterResponse),
    /// A non-fatal refusal (e.g. [`ErrorCode::RoundClosed`]: the envelope was too late).
    Refused(ErrorNotice),
}

fn parse_from_relay(frame: wire::Frame) -> Result<FromRelay, WireError> {
    match frame.ty {
        MsgType::RoundAnnounce => Ok(FromRelay::Round(frame.decode()?)),
        MsgType::OutputShare => Ok(FromRelay::Output(frame.decode()?)),
        MsgType::RegisterResponse => Ok(FromRelay::Registered(frame.decode()?)),
        MsgType::ErrorNotice => {
            let n: ErrorNotice = frame.decode()?;
            match n.code {
                ErrorCode::RoundClosed | ErrorCode::Unavailable => Ok(FromRelay::Refused(n)),
                code => Err(WireError::Remote {
                    code,
                    message: n.message,
                }),
            }
        }
        other => Err(WireError::Unexpected {
            got: other,
            expected: "RoundAnnounce, OutputShare, RegisterResponse or ErrorNotice",
        }),
    }
}

/// A user's TLS connection to one entry relay.
#[derive(Debug)]
pub struct RelayLink {
    stream: TlsStream<tokio::net::TcpStream>,
    frame_timeout: Duration,
}

impl RelayLink {
    /// Connects to relay `index` at `addr`, verifying its certificate against `roots`.
    pub async fn connect(
        addr: SocketAddr,
        index: u32,
        roots: Arc<RootCertStore>,
        timeout: Duration,
    ) -> Result<Self, TlsError> {
        let connector = TlsConnector::from(tls::client_config(roots, None)?);
        let stream =
            listener::connect(&connector, addr, Role::Entry(index).server_name(), timeout).await?;
        Ok(RelayLink {
            stream,
            frame_timeout: timeout,
        })
    }

    /// Sends one envelope.
    pub async fn submit(&mut self, env: &SealedEnvelope) -> Result<(), WireError> {
        wire::write_msg(&mut self.stream, env).await
    }

    /// Sends one registration request.
    pub async fn register(&mut self, req: &RegisterRequest) -> Result<(), WireError> {
        wire::write_msg(&mut self.stream, req).await
    }

    /// The next thing the relay says. A fatal notice from the relay is returned as
    /// [`WireError::Remote`]; the relay closes the connection after it.
    pub async fn next(&mut self) -> Result<FromRelay, WireError> {
        let frame = wire::read_frame(&mut self.stream, self.frame_timeout).await?;
        parse_from_relay(frame)
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Splits the link: a task reads everything the relay says into `events` (tagged with
    /// `tag`), and the returned writer sends. The reader ends when the relay closes.
    pub fn spawn_reader(
        self,
        tag: usize,
        events: tokio::sync::mpsc::UnboundedSender<(usize, Result<FromRelay, WireError>)>,
    ) -> RelayWriter {
        let (rd, wr) = tokio::io::split(self.stream);
        let mut reader = RelayLink2 {
            rd,
            frame_timeout: self.frame_timeout,
        };
        tokio::spawn(async move {
            loop {
                let ev = reader.next().await;
                let end = ev.is_err();
                if events.send((tag, ev)).is_err() || end {
                    return;
                }
            }
        });
        RelayWriter { wr }
    }
}

struct RelayLink2 {
    rd: tokio::io::ReadHalf<TlsStream<tokio::net::TcpStream>>,
    frame_timeout: Duration,
}

impl RelayLink2 {
    async fn next(&mut self) -> Result<FromRelay, WireError> {
        let frame = wire::read_frame(&mut self.rd, self.frame_timeout).await?;
        parse_from_relay(frame)
    }
}

/// The sending half of a [`RelayLink`].
#[derive(Debug)]
pub struct RelayWriter {
    wr: tokio::io::WriteHalf<TlsStream<tokio::net::TcpStream>>,
}

impl RelayWriter {
    /// Sends one envelope.
    pub async fn submit(&mut self, env: &SealedEnvelope) -> Result<(), WireError> {
        wire::write_msg(&mut self.wr, env).await
    }

    /// Sends one registration request.
    pub async fn register(&mut self, req: &RegisterRequest) -> Result<(), WireError> {
        wire::write_msg(&mut self.wr, req).await
    }
}
