//! The one wire codec (design §5): every message on every ACS link is a frame
//!
//! ```text
//! +---------+---------+----------------+------------------+
//! | version | type    | length (u32 BE) | body (length B)  |
//! | 1 byte  | 1 byte  | 4 bytes         |                  |
//! +---------+---------+----------------+------------------+
//! ```
//!
//! The length is checked against the cap of the message type *before* any buffer is
//! allocated, and even under the cap the body buffer grows only as bytes arrive, so a
//! peer cannot make us reserve memory it does not send. Bodies are bincode 2 (standard
//! config) over serde, decoded with an allocation limit equal to the type's cap, and a
//! body with bytes left over after decoding is rejected. [`MsgType::MpcData`] is the one
//! exception: its body is the engine's message itself, unframed, so a large engine batch
//! is never copied through bincode.

mod messages;

pub use messages::*;

use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The only wire version this build speaks.
pub const WIRE_VERSION: u8 = 1;

/// Bytes in a frame header: version, type, length.
pub const HEADER_LEN: usize = 6;

/// Caps, one per class of message. A frame over its type's cap is refused unread.
pub mod caps {
    /// Handshake and coordination messages: a few fixed-size fields.
    pub const CONTROL: usize = 4 << 10;
    /// Registration request/response (kgc material plus proof of possession).
    pub const REGISTRATION: usize = 64 << 10;
    /// One sealed envelope or one output share: kgc's largest envelope
    /// (`MAX_SHARE_BYTES` = 1 MiB of share plus 57 bytes of seal) and the frame's own
    /// fields fit with room to spare.
    pub const USER: usize = (1 << 20) + 4096;
    /// One relay batch or its outputs (all envelopes one relay got for one server).
    pub const BATCH: usize = 256 << 20;
    /// One engine message between exchange servers (one communication round's batch).
    pub const MPC: usize = 1 << 30;
}

/// How much of a body is reserved up front; the rest grows as bytes arrive.
const INITIAL_BODY_RESERVE: usize = 64 << 10;

/// Every message type. The tag byte is the discriminant; tags are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// Either direction, any link: why the sender is about to close the connection.
    ErrorNotice = 1,
    /// Exchange → peers, exchange → relays, relay → users: a round is open.
    RoundAnnounce = 2,
    /// User → relay: one sealed share for one exchange server.
    SealedEnvelope = 3,
    /// Relay → user: one exchange server's output share for this user.
    OutputShare = 4,
    /// Relay → exchange: all envelopes for that server in one round, shuffled.
    RelayBatch = 5,
    /// Exchange → relay: the output shares for a batch, by slot.
    RelayOutputs = 6,
    /// User → relay: registration material for one exchange server.
    RegisterRequest = 7,
    /// Relay → user: that server's answer.
    RegisterResponse = 8,
    /// Relay → exchange: a registration request, tagged with a relay-local id.
    RelayRegisterRequest = 9,
    /// Exchange → relay: the answer to a [`MsgType::RelayRegisterRequest`].
    RelayRegisterResponse = 10,
    /// Exchange ↔ exchange: first frame on a peer link.
    PeerHello = 11,
    /// Exchange ↔ exchange: one engine message (raw body, not bincode).
    MpcData = 12,
    /// Exchange ↔ exchange: hash of the round's online pseudonym set.
    OnlineSetHash = 13,
    /// Exchange ↔ exchange: commit or abort a computed round.
    CommitVote = 14,
    /// Exchange ↔ exchange: an opened value failed its cross-check; who sent what.
    OpeningComplaint = 15,
    /// Exchange → a peer whose database is lost or stale: what follows to rejoin.
    RejoinState = 16,
    /// Exchange → a rejoining peer: the next bytes of its store component and the
    /// registrations (after a [`MsgType::RejoinState`]).
    RejoinData = 17,
}

impl MsgType {
    /// All types, for tests and tables.
    pub const ALL: [MsgType; 17] = [
        MsgType::ErrorNotice,
        MsgType::RoundAnnounce,
        MsgType::SealedEnvelope,
        MsgType::OutputShare,
        MsgType::RelayBatch,
        MsgType::RelayOutputs,
        MsgType::RegisterRequest,
        MsgType::RegisterResponse,
        MsgType::RelayRegisterRequest,
        MsgType::RelayRegisterResponse,
        MsgType::PeerHello,
        MsgType::MpcData,
        MsgType::OnlineSetHash,
        MsgType::CommitVote,
        MsgType::OpeningComplaint,
        MsgType::RejoinState,
        MsgType::RejoinData,
    ];

    /// The type with this tag byte.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u8 == tag)
    }

    /// The hard cap on this type's body length.
    pub const fn cap(self) -> usize {
        match self {
            MsgType::ErrorNotice
            | MsgType::RoundAnnounce
            | MsgType::PeerHello
            | MsgType::OnlineSetHash
            | MsgType::CommitVote
            | MsgType::OpeningComplaint
            | MsgType::RejoinState => caps::CONTROL,
            MsgType::RegisterRequest
            | MsgType::RegisterResponse
            | MsgType::RelayRegisterRequest
            | MsgType::RelayRegisterResponse => caps::REGISTRATION,
            MsgType::SealedEnvelope | MsgType::OutputShare | MsgType::RejoinData => caps::USER,
            MsgType::RelayBatch | MsgType::RelayOutputs => caps::BATCH,
            MsgType::MpcData => caps::MPC,
        }
    }
}

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The connection ended in the middle of a frame.
    #[error("truncated frame: connection ended after {got} of {expected} bytes of the {part}")]
    Truncated {
        /// "header" or "body".
        part: &'static str,
        /// Bytes received of that part.
        got: usize,
        /// Bytes the part needed.
        expected: usize,
    },
    /// The first byte of the frame is not [`WIRE_VERSION`].
    #[error("unsupported wire version {got} (this build speaks version {WIRE_VERSION})")]
    Version {
        /// The version byte received.
        got: u8,
    },
    /// The type byte names no message type.
    #[error("unknown message type tag {0}")]
    UnknownType(u8),
    /// The length prefix exceeds the type's cap.
    #[error("{ty:?} frame of {len} bytes exceeds the cap of {cap} bytes")]
    TooLong {
        /// The frame's type.
        ty: MsgType,
        /// The claimed length.
        len: usize,
        /// The cap for that type.
        cap: usize,
    },
    /// The body does not decode as the type.
    #[error("malformed {ty:?} body: {reason}")]
    Malformed {
        /// The frame's type.
        ty: MsgType,
        /// The decoder's complaint.
        reason: String,
    },
    /// The body decoded but bytes were left over.
    #[error("{ty:?} body has {extra} trailing bytes")]
    Trailing {
        /// The frame's type.
        ty: MsgType,
        /// How many bytes were left.
        extra: usize,
    },
    /// A well-formed frame of a type this link does not carry in this direction/state.
    #[error("unexpected {got:?} frame; expected {expected}")]
    Unexpected {
        /// What arrived.
        got: MsgType,
        /// What the link expected.
        expected: &'static str,
    },
    /// A field is out of range for this deployment (e.g. exchange index 7).
    #[error("invalid {ty:?}: {reason}")]
    Invalid {
        /// The frame's type.
        ty: MsgType,
        /// What was wrong.
        reason: String,
    },
    /// The peer told us why it is closing.
    #[error("peer reported {code:?}: {message}")]
    Remote {
        /// The peer's error class.
        code: ErrorCode,
        /// The peer's text.
        message: String,
    },
    /// A frame that had started did not finish in time.
    #[error("timed out after {0:?} in the middle of a frame")]
    Timeout(Duration),
    /// Nothing arrived for this long on a link where traffic is expected.
    #[error("connection idle for {0:?}")]
    Idle(Duration),
    /// We refuse to send a body over the cap (a bug or an oversized engine batch).
    #[error("refusing to send {ty:?} body of {len} bytes: cap is {cap}")]
    OutgoingTooLong {
        /// The frame's type.
        ty: MsgType,
        /// The body length.
        len: usize,
        /// The cap for that type.
        cap: usize,
    },
    /// Encoding failed (cannot happen for our types; kept typed rather than panicking).
    #[error("encoding {ty:?}: {reason}")]
    Encode {
        /// The frame's type.
        ty: MsgType,
        /// bincode's complaint.
        reason: String,
    },
    /// Socket or TLS failure.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// The code to send the peer in an [`ErrorNotice`] before closing, if the peer is at
    /// fault; `None` when the connection is already gone.
    pub fn notice_code(&self) -> Option<ErrorCode> {
        match self {
            WireError::Closed
            | WireError::Truncated { .. }
            | WireError::Io(_)
            | WireError::Remote { .. } => None,
            WireError::Version { .. } => Some(ErrorCode::Version),
            WireError::UnknownType(_)
            | WireError::Malformed { .. }
            | WireError::Trailing { .. } => Some(ErrorCode::Malformed),
            WireError::TooLong { .. } => Some(ErrorCode::TooLong),
            WireError::Unexpected { .. } => Some(ErrorCode::Unexpected),
            WireError::Invalid { .. } => Some(ErrorCode::Invalid),
            WireError::Timeout(_) | WireError::Idle(_) => Some(ErrorCode::Timeout),
            WireError::OutgoingTooLong { .. } | WireError::Encode { .. } => {
                Some(ErrorCode::Internal)
            }
        }
    }
}

/// A message that travels as the body of one frame type.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The frame type that carries it.
    const TYPE: MsgType;
}

/// One frame read off the wire: its type and its raw, length-checked body.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type.
    pub ty: MsgType,
    /// The body, at most `ty.cap()` bytes.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    // Bodies are sealed bytes or engine shares: print the size, not the content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("ty", &self.ty)
            .field("len", &self.body.len())
            .finish()
    }
}

impl Frame {
    /// Decodes the body as `T`, checking that the frame is of `T`'s type.
    pub fn decode<T: WireMessage>(&self) -> Result<T, WireError> {
        if self.ty != T::TYPE {
            return Err(WireError::Unexpected {
                got: self.ty,
                expected: type_name_of(T::TYPE),
            });
        }
        decode_body(self.ty, &self.body)
    }

    /// If this is an [`ErrorNotice`], the peer's error; otherwise `self`.
    pub fn into_remote_error(self) -> Result<Frame, WireError> {
        if self.ty != MsgType::ErrorNotice {
            return Ok(self);
        }
        let notice: ErrorNotice = self.decode()?;
        Err(WireError::Remote {
            code: notice.code,
            message: notice.message,
        })
    }
}

fn type_name_of(ty: MsgType) -> &'static str {
    match ty {
        MsgType::ErrorNotice => "ErrorNotice",
        MsgType::RoundAnnounce => "RoundAnnounce",
        MsgType::SealedEnvelope => "SealedEnvelope",
        MsgType::OutputShare => "OutputShare",
        MsgType::RelayBatch => "RelayBatch",
        MsgType::RelayOutputs => "RelayOutputs",
        MsgType::RegisterRequest => "RegisterRequest",
        MsgType::RegisterResponse => "RegisterResponse",
        MsgType::RelayRegisterRequest => "RelayRegisterRequest",
        MsgType::RelayRegisterResponse => "RelayRegisterResponse",
        MsgType::PeerHello => "PeerHello",
        MsgType::MpcData => "MpcData",
        MsgType::OnlineSetHash => "OnlineSetHash",
        MsgType::CommitVote => "CommitVote",
        MsgType::OpeningComplaint => "OpeningComplaint",
        MsgType::RejoinState => "RejoinState",
        MsgType::RejoinData => "RejoinData",
    }
}

macro_rules! decode_limited {
    ($limit:expr, $body:expr) => {
        bincode::serde::decode_from_slice(
            $body,
            bincode::config::standard().with_limit::<{ $limit }>(),
        )
    };
}

/// Decodes a body of type `ty`. bincode's limit is the type's cap, so a length claimed
/// inside the body can never make the decoder allocate more than the cap.
pub fn decode_body<T: DeserializeOwned>(ty: MsgType, body: &[u8]) -> Result<T, WireError> {
    let cap = ty.cap();
    if body.len() > cap {
        return Err(WireError::TooLong {
            ty,
            len: body.len(),
            cap,
        });
    }
    let result: Result<(T, usize), _> = match cap {
        caps::CONTROL => decode_limited!(caps::CONTROL, body),
        caps::REGISTRATION => decode_limited!(caps::REGISTRATION, body),
        caps::USER => decode_limited!(caps::USER, body),
        caps::BATCH => decode_limited!(caps::BATCH, body),
        _ => decode_limited!(caps::MPC, body),
    };
    let (value, used) = result.map_err(|e| WireError::Malformed {
        ty,
        reason: e.to_string(),
    })?;
    if used != body.len() {
        return Err(WireError::Trailing {
            ty,
            extra: body.len() - used,
        });
    }
    Ok(value)
}

/// The whole frame (header and body) for `msg`, ready to write.
pub fn encode_frame<T: WireMessage>(msg: &T) -> Result<Vec<u8>, WireError> {
    let ty = T::TYPE;
    let mut out = vec![0u8; HEADER_LEN];
    bincode::serde::encode_into_std_write(msg, &mut out, bincode::config::standard()).map_err(
        |e| WireError::Encode {
            ty,
            reason: e.to_string(),
        },
    )?;
    let len = out.len() - HEADER_LEN;
    write_header(&mut out[..HEADER_LEN], ty, len)?;
    Ok(out)
}

/// The header for a body of `len` bytes of type `ty`.
pub fn header(ty: MsgType, len: usize) -> Result<[u8; HEADER_LEN], WireError> {
    let mut h = [0u8; HEADER_LEN];
    write_header(&mut h, ty, len)?;
    Ok(h)
}

fn write_header(out: &mut [u8], ty: MsgType, len: usize) -> Result<(), WireError> {
    let cap = ty.cap();
    if len > cap {
        return Err(WireError::OutgoingTooLong { ty, len, cap });
    }
    out[0] = WIRE_VERSION;
    out[1] = ty as u8;
    // Caps are all below 2^32, so this cannot truncate.
    out[2..6].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Parses a header, checking version, type and cap.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(MsgType, usize), WireError> {
    if h[0] != WIRE_VERSION {
        return Err(WireError::Version { got: h[0] });
    }
    let ty = MsgType::from_tag(h[1]).ok_or(WireError::UnknownType(h[1]))?;
    let len = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
    if len > ty.cap() {
        return Err(WireError::TooLong {
            ty,
            len,
            cap: ty.cap(),
        });
    }
    Ok((ty, len))
}

/// Reads one frame. Waiting for a frame to *start* has no time limit (links idle between
/// rounds); once its first byte has arrived, the rest must arrive within `body_timeout`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    body_timeout: Duration,
) -> Result<Frame, WireError> {
    read_frame_of(r, body_timeout, &MsgType::ALL, "any message type").await
}

/// [`read_frame`] on a link that carries only the types in `allowed`: any other type is
/// refused ([`WireError::Unexpected`]) as soon as its tag is in, before its body, so a
/// peer cannot make this side buffer up to another type's (larger) cap.
pub async fn read_frame_of<R: AsyncRead + Unpin>(
    r: &mut R,
    body_timeout: Duration,
    allowed: &[MsgType],
    expected: &'static str,
) -> Result<Frame, WireError> {
    read_frame_with(r, body_timeout, allowed, expected, INITIAL_BODY_RESERVE).await
}

/// [`read_frame`] on an exchange server's link to an authenticated peer (the mutual-TLS
/// mesh): the body's buffer is reserved at its announced length (at most its type's cap)
/// at once. A peer's MPC messages run to 16 MiB, and growing the buffer as the bytes
/// arrive copied each of them again on the way (a 1000-user × 8 KB round over the mesh
/// took 0.48–0.53 s instead of 0.55–0.57 s). A peer that announces a body and does not
/// send it holds that memory until the body timeout, which an authenticated server
/// could do with real bytes anyway; links from users and relays keep the small
/// reservation.
pub async fn read_peer_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    body_timeout: Duration,
) -> Result<Frame, WireError> {
    read_frame_with(
        r,
        body_timeout,
        &MsgType::ALL,
        "any message type",
        usize::MAX,
    )
    .await
}

async fn read_frame_with<R: AsyncRead + Unpin>(
    r: &mut R,
    body_timeout: Duration,
    allowed: &[MsgType],
    expected: &'static str,
    reserve: usize,
) -> Result<Frame, WireError> {
    let mut h = [0u8; HEADER_LEN];
    let first = r.read(&mut h).await?;
    if first == 0 {
        return Err(WireError::Closed);
    }
    match tokio::time::timeout(
        body_timeout,
        read_rest(r, h, first, allowed, expected, reserve),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(WireError::Timeout(body_timeout)),
    }
}

async fn read_rest<R: AsyncRead + Unpin>(
    r: &mut R,
    mut h: [u8; HEADER_LEN],
    mut got: usize,
    allowed: &[MsgType],
    expected: &'static str,
    reserve: usize,
) -> Result<Frame, WireError> {
    loop {
        // Reject a wrong version or type as soon as those bytes are in, without waiting
        // for a header that a confused peer may never finish.
        if h[0] != WIRE_VERSION {
            return Err(WireError::Version { got: h[0] });
        }
        if got >= 2 {
            let ty = MsgType::from_tag(h[1]).ok_or(WireError::UnknownType(h[1]))?;
            if !allowed.contains(&ty) {
                return Err(WireError::Unexpected { got: ty, expected });
            }
        }
        if got == HEADER_LEN {
            break;
        }
        let n = r.read(&mut h[got..]).await?;
        if n == 0 {
            return Err(WireError::Truncated {
                part: "header",
                got,
                expected: HEADER_LEN,
            });
        }
        got += n;
    }
    let (ty, len) = parse_header(&h)?;
    // The cap is checked; unless the caller trusts the peer (`reserve`), still reserve
    // only a little and let the buffer grow with the bytes that actually arrive.
    let mut body = Vec::with_capacity(len.min(reserve));
    let n = r.take(len as u64).read_to_end(&mut body).await?;
    if n < len {
        return Err(WireError::Truncated {
            part: "body",
            got: n,
            expected: len,
        });
    }
    Ok(Frame { ty, body })
}

/// Writes `msg` as one frame and flushes.
pub async fn write_msg<W: AsyncWrite + Unpin, T: WireMessage>(
    w: &mut W,
    msg: &T,
) -> Result<(), WireError> {
    let bytes = encode_frame(msg)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Writes an [`MsgType::MpcData`] frame whose body is `payload` itself, and flushes.
pub async fn write_mpc<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Result<(), WireError> {
    let h = header(MsgType::MpcData, payload.len())?;
    w.write_all(&h).await?;
    w.write_all(payload).await?;
    w.flush().await?;
    Ok(())
}

/// Best effort: tells the peer why we are closing. Errors are ignored, since the
/// connection is being torn down anyway.
pub async fn send_notice<W: AsyncWrite + Unpin>(w: &mut W, err: &WireError) {
    if let Some(code) = err.notice_code() {
        let notice = ErrorNotice {
            code,
            message: err.to_string(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write_msg(w, &notice)).await;
    }
}

#[cfg(test)]
mod tests;
