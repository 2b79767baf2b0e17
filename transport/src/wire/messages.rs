//! The messages, one struct per frame type. Bulk bytes go through `serde_bytes`, so
//! bincode writes them as one length and a copy rather than byte by byte.
//!
//! Exchange servers are named by index 0, 1, 2 (`u8` on the wire, checked with
//! [`check_server`] on receipt). Round numbers are `u64`.

use super::{MsgType, WireError, WireMessage};
use serde::{Deserialize, Serialize};

/// Why a connection is being closed, as told to the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Wrong wire version.
    Version,
    /// Unknown type, undecodable body or trailing bytes.
    Malformed,
    /// Length over the type's cap.
    TooLong,
    /// A message this link does not carry here.
    Unexpected,
    /// A field out of range (server index, round).
    Invalid,
    /// A frame that started did not finish in time.
    Timeout,
    /// The envelope names a round that is not open for submission (late or early).
    RoundClosed,
    /// The sender already sent what it may send (e.g. two envelopes for one server).
    Duplicate,
    /// The server is overloaded or shutting down.
    Unavailable,
    /// Our own bug.
    Internal,
}

/// Sent before closing a connection, so the peer sees a reason and not just EOF.
/// Also sent without closing for [`ErrorCode::RoundClosed`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNotice {
    /// The error class.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl WireMessage for ErrorNotice {
    const TYPE: MsgType = MsgType::ErrorNotice;
}

/// A round is open: envelopes for it are accepted until `deadline_unix_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundAnnounce {
    /// The round number.
    pub round: u64,
    /// When submission closes, in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
}

impl WireMessage for RoundAnnounce {
    const TYPE: MsgType = MsgType::RoundAnnounce;
}

/// User → relay: one share of the user's block for `round`, sealed (kgc's per-round
/// AEAD) to exchange server `server`. The pseudonym is inside `sealed`; the relay never
/// sees it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedEnvelope {
    /// The round the envelope is for.
    pub round: u64,
    /// Which exchange server it is sealed to (0, 1, 2).
    pub server: u8,
    /// Opaque sealed bytes.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

impl WireMessage for SealedEnvelope {
    const TYPE: MsgType = MsgType::SealedEnvelope;
}

/// Relay → user: server `server`'s output share for this user in `round` (opaque,
/// sealed by the server to the user).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputShare {
    /// The round.
    pub round: u64,
    /// Which exchange server produced it.
    pub server: u8,
    /// Opaque sealed bytes.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

impl WireMessage for OutputShare {
    const TYPE: MsgType = MsgType::OutputShare;
}

/// One envelope or output in a relay batch. `slot` is the envelope's position in the
/// relay's shuffled batch: it says nothing about arrival order or the user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// Relay-local slot id, unique within one (round, server) batch.
    pub slot: u32,
    /// Opaque sealed bytes.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// Relay → exchange server: every envelope this relay got for that server in `round`,
/// in shuffled order. Sent once per round and server, possibly empty, so the server
/// knows this relay is done.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayBatch {
    /// The round.
    pub round: u64,
    /// The envelopes, slot ids 0..n in order.
    pub entries: Vec<BatchEntry>,
}

impl WireMessage for RelayBatch {
    const TYPE: MsgType = MsgType::RelayBatch;
}

/// Exchange server → relay: the output shares for a [`RelayBatch`], by slot. Slots the
/// server rejected (bad seal, unknown pseudonym, replay) are absent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOutputs {
    /// The round.
    pub round: u64,
    /// The outputs.
    pub outputs: Vec<BatchEntry>,
}

impl WireMessage for RelayOutputs {
    const TYPE: MsgType = MsgType::RelayOutputs;
}

/// User → relay: registration material for exchange server `server`. The content is
/// defined by `acs-kgc` and must be unreadable to the relay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Target exchange server.
    pub server: u8,
    /// Opaque kgc request.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl WireMessage for RegisterRequest {
    const TYPE: MsgType = MsgType::RegisterRequest;
}

/// Relay → user: exchange server `server`'s answer to a [`RegisterRequest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The answering exchange server.
    pub server: u8,
    /// Opaque kgc response.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl WireMessage for RegisterResponse {
    const TYPE: MsgType = MsgType::RegisterResponse;
}

/// Relay → exchange server: a user's registration request, tagged with a relay-local id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRegisterRequest {
    /// Relay-local id, echoed in the response.
    pub request: u64,
    /// Opaque kgc request.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl WireMessage for RelayRegisterRequest {
    const TYPE: MsgType = MsgType::RelayRegisterRequest;
}

/// Exchange server → relay: the answer to a [`RelayRegisterRequest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRegisterResponse {
    /// The request id it answers.
    pub request: u64,
    /// Opaque kgc response.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl WireMessage for RelayRegisterResponse {
    const TYPE: MsgType = MsgType::RelayRegisterResponse;
}

/// The first bytes of a registration answer that refuses: [`REFUSAL_MAGIC`] then one
/// [`Refusal`] byte, in place of the kgc response (which starts `ACS-RS`). In clear: the
/// relay that carries it learns that a registration it could not read was refused, and
/// why in one word, which its absence would have told it anyway.
pub const REFUSAL_MAGIC: &[u8; 8] = b"ACS-RF\x00\x01";

/// Why an exchange server refused a registration (its log has the details).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request did not verify, or the server failed: try again later.
    Other = 0,
    /// The pseudonym is registered under another key.
    PseudonymTaken = 1,
    /// The key's address is another user's: only a new identity key helps.
    AddressTaken = 2,
    /// The descriptor's master-secret epoch is not served (retired, or not yet).
    Epoch = 3,
    /// The request was made for another server (descriptors out of order).
    WrongServer = 4,
}

impl Refusal {
    /// The answer body that carries this refusal.
    pub fn to_body(self) -> Vec<u8> {
        let mut b = REFUSAL_MAGIC.to_vec();
        b.push(self as u8);
        b
    }

    /// The refusal an answer body carries, if it is one (an unknown reason reads as
    /// [`Refusal::Other`]).
    pub fn from_body(body: &[u8]) -> Option<Refusal> {
        let rest = body.strip_prefix(REFUSAL_MAGIC.as_slice())?;
        Some(match rest {
            [1] => Refusal::PseudonymTaken,
            [2] => Refusal::AddressTaken,
            [3] => Refusal::Epoch,
            [4] => Refusal::WrongServer,
            _ => Refusal::Other,
        })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Other => {
                "the request did not verify or the server failed (its log says which); try again"
            }
            Refusal::PseudonymTaken => "the pseudonym is registered under another key",
            Refusal::AddressTaken => "the key's address is another user's: make a new identity key",
            Refusal::Epoch => {
                "the descriptor's master-secret epoch is not served: get the current descriptor"
            }
            Refusal::WrongServer => {
                "the request was made for another server: check that the client's descriptors are in server order"
            }
        })
    }
}

/// Where a server's database stands: what it tells its peers on every (re)connection, so
/// a server that restarts with a prepared round learns whether it committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundStatus {
    /// The last committed round.
    pub committed: Option<u64>,
    /// A round prepared (voted on) but neither committed nor aborted here.
    pub prepared: Option<u64>,
}

/// First frame each way on an exchange ↔ exchange link. The TLS certificate already
/// proves who the peer is; the hello pins the deployment and the party index, so two
/// deployments sharing a CA cannot be cross-wired, and carries the sender's
/// [`RoundStatus`] for crash recovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// The sender's party index (0, 1, 2).
    pub party: u8,
    /// The deployment's identifier (from configuration).
    pub deployment: String,
    /// The sender's round status.
    pub status: RoundStatus,
    /// A digest of the sender's exchange parameters (payload size, store capacity,
    /// expiry): all three servers must run the same round.
    pub config_digest: [u8; 32],
    /// The sender's signed server descriptor (280 bytes), naming the TLS certificate it
    /// presented on this link: its identity key signs its online-set statements.
    #[serde(with = "serde_bytes")]
    pub descriptor: Vec<u8>,
}

impl WireMessage for PeerHello {
    const TYPE: MsgType = MsgType::PeerHello;
}

/// Exchange ↔ exchange: SHA3-256 of the sorted list of pseudonyms this server received
/// for `round` (the cross-server consistency check, design §3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineSetHash {
    /// The round.
    pub round: u64,
    /// How many pseudonyms the set has.
    pub count: u64,
    /// SHA3-256 over the sorted pseudonyms, 8 bytes big-endian each.
    pub hash: [u8; 32],
}

impl WireMessage for OnlineSetHash {
    const TYPE: MsgType = MsgType::OnlineSetHash;
}

/// A server's vote on a computed round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vote {
    /// The round is computed and durably prepared here.
    Commit,
    /// Something failed here; nobody commits.
    Abort,
}

/// Exchange ↔ exchange: the sender's vote on `round`. A round commits only when all
/// three servers vote [`Vote::Commit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitVote {
    /// The round.
    pub round: u64,
    /// The vote.
    pub vote: Vote,
    /// Hash of the opened values this server saw (the cross-check of design §3); all
    /// three must match for a commit.
    pub transcript_hash: [u8; 32],
    /// When the round wrote a new store: the sender's commitments to its two components
    /// `[x_i, x_{i+1}]` (`exchange::rejoin::commitment`). The third server of each
    /// keeps it, so a rejoining holder can check the component its peer hands back.
    pub store_commitments: Option<[[u8; 32]; 2]>,
}

impl WireMessage for CommitVote {
    const TYPE: MsgType = MsgType::CommitVote;
}

/// Exchange ↔ exchange: the sender's check of an opened value failed in `round` (the
/// engine's `OpeningComplaint`): the value that arrived from `value_from` does not match
/// the check that arrived from `check_from`. Sent to both peers before the sender drops
/// the mesh, so the third server can say which of the two its own record contradicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningComplaint {
    /// The round.
    pub round: u64,
    /// The opening's index within the round's computation.
    pub opening: u64,
    /// The complaining server (0, 1, 2).
    pub accuser: u8,
    /// Who sent the value (0, 1, 2).
    pub value_from: u8,
    /// Who sent the check (0, 1, 2).
    pub check_from: u8,
    /// Hash of the value that arrived.
    pub value_hash: [u8; 32],
    /// The check that arrived.
    pub check: [u8; 32],
}

impl WireMessage for OpeningComplaint {
    const TYPE: MsgType = MsgType::OpeningComplaint;
}

/// Exchange → a peer that must rejoin (its database is lost or behind the others', see
/// `exchange::rejoin`): the sender's committed round and the sizes of what follows in
/// [`RejoinData`] frames: `component_bytes` bytes of store component `x_component` (the
/// one component the two of them both hold), then `registrations` entries of 40 bytes
/// (a user's Ed25519 public key, then its registration time, u64 big-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinState {
    /// The sender's last committed round (the store it sends is that round's).
    pub round: u64,
    /// The last round number the sender saw announced (committed or not): no round
    /// number at or below it may be announced again.
    pub last_round: u64,
    /// Which component `x_j` of every store record follows (0, 1, 2).
    pub component: u8,
    /// Bytes of that component (the receiver knows the exact size it expects).
    pub component_bytes: u64,
    /// Registration entries that follow.
    pub registrations: u64,
    /// The round that wrote the committed store (the commitments' round; 0 if none has).
    pub store_round: u64,
    /// The nonce of the commitment to the component sent (zero when the sender has no
    /// commitments for `store_round`).
    pub nonce: [u8; 32],
    /// The commitment the *receiver* made, in `store_round`, to the component the other
    /// peer sends, as this sender (its third server) stored it.
    pub relayed: Option<[u8; 32]>,
    /// This sender's own commitment to the component the receiver does not hold (the
    /// receiver is its third server).
    pub third: Option<[u8; 32]>,
}

impl WireMessage for RejoinState {
    const TYPE: MsgType = MsgType::RejoinState;
}

/// Exchange → a rejoining peer: the next at most [`REJOIN_CHUNK`] bytes of the stream a
/// [`RejoinState`] announced.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinData {
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for RejoinData {
    // Secret shares: the length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RejoinData({} bytes)", self.bytes.len())
    }
}

impl WireMessage for RejoinData {
    const TYPE: MsgType = MsgType::RejoinData;
}

/// The most bytes one [`RejoinData`] carries (within its type's cap).
pub const REJOIN_CHUNK: usize = 1 << 20;

/// Checks that an exchange server index from the wire names one of the three.
pub fn check_server(ty: MsgType, server: u8) -> Result<acs_engine::channel::PartyId, WireError> {
    acs_engine::channel::PartyId::new(server as usize).ok_or(WireError::Invalid {
        ty,
        reason: format!("exchange server index {server} is not 0, 1 or 2"),
    })
}

macro_rules! opaque_debug {
    ($($t:ident { $($f:ident),* } bytes $b:ident;)*) => {$(
        impl std::fmt::Debug for $t {
            // Sealed or key material: show sizes, not bytes.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($f), &self.$f))*
                    .field(concat!(stringify!($b), "_len"), &self.$b.len())
                    .finish()
            }
        }
    )*};
}

opaque_debug! {
    SealedEnvelope { round, server } bytes sealed;
    OutputShare { round, server } bytes sealed;
    BatchEntry { slot } bytes sealed;
    RegisterRequest { server } bytes body;
    RegisterResponse { server } bytes body;
    RelayRegisterRequest { request } bytes body;
    RelayRegisterResponse { request } bytes body;
}

impl std::fmt::Debug for RelayBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBatch")
            .field("round", &self.round)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl std::fmt::Debug for RelayOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOutputs")
            .field("round", &self.round)
            .field("outputs", &self.outputs.len())
            .finish()
    }
}
