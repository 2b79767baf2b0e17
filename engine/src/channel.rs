//! How the three parties talk: a blocking, message-oriented [`Channel`] to the other two
//! parties, and an in-memory implementation that runs the three parties on threads.
//!
//! The engine is sans-IO: it never opens a socket. `acs-transport` implements
//! [`Channel`] over mutual TLS; tests and benches use [`local_channels`].

use std::sync::mpsc::{channel, Receiver, Sender};

/// One of the three parties, `P0`, `P1`, `P2`. Party `i` holds replicated shares
/// `(x_i, x_{i+1})` (indices mod 3). Serialized as its index; deserializing anything
/// but 0, 1 or 2 fails.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub struct PartyId(u8);

impl TryFrom<u8> for PartyId {
    type Error = String;
    fn try_from(index: u8) -> Result<Self, String> {
        PartyId::new(index as usize).ok_or_else(|| format!("no party {index}"))
    }
}

impl From<PartyId> for u8 {
    fn from(id: PartyId) -> u8 {
        id.0
    }
}

impl PartyId {
    /// All three parties in order.
    pub const ALL: [PartyId; 3] = [PartyId(0), PartyId(1), PartyId(2)];

    /// `Some` for 0, 1 and 2.
    pub fn new(index: usize) -> Option<Self> {
        (index < 3).then_some(PartyId(index as u8))
    }

    /// 0, 1 or 2.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Party `i + 1 mod 3`.
    pub fn next(self) -> Self {
        PartyId((self.0 + 1) % 3)
    }

    /// Party `i - 1 mod 3`.
    pub fn prev(self) -> Self {
        PartyId((self.0 + 2) % 3)
    }

    /// The party that `peer` names from this party's point of view.
    pub fn peer(self, peer: Peer) -> Self {
        match peer {
            Peer::Next => self.next(),
            Peer::Prev => self.prev(),
        }
    }
}

impl std::fmt::Display for PartyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// The other two parties, relative to this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Party `i + 1 mod 3`.
    Next,
    /// Party `i - 1 mod 3`.
    Prev,
}

/// Why a channel failed. The engine turns any of these into an aborted computation.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The other side went away.
    #[error("channel to {0:?} closed")]
    Closed(Peer),
    /// The other side sent something that is not a well-formed engine message.
    #[error("malformed message from {peer:?}: {reason}")]
    Malformed {
        /// Who sent it.
        peer: Peer,
        /// What was wrong.
        reason: String,
    },
    /// Transport-level failure (I/O, TLS, timeout), described by the implementation.
    #[error("transport error with {peer:?}: {reason}")]
    Transport {
        /// Which link.
        peer: Peer,
        /// What happened.
        reason: String,
    },
}

/// A reliable, ordered, message-oriented link from one party to each of the other two.
///
/// Messages between a given ordered pair of parties arrive in the order sent. Both calls
/// may block. The engine sends whole batches (one message per direction per
/// communication round), so implementations need not be clever about small writes.
pub trait Channel: Send {
    /// Queue `msg` for `to`. Must not wait for the receiver to read it.
    fn send(&mut self, to: Peer, msg: Vec<u8>) -> Result<(), ChannelError>;
    /// The next message from `from`, waiting for it if needed.
    fn recv(&mut self, from: Peer) -> Result<Vec<u8>, ChannelError>;
}

/// In-memory [`Channel`] between threads of one process.
#[derive(Debug)]
pub struct LocalChannel {
    to_next: Sender<Vec<u8>>,
    to_prev: Sender<Vec<u8>>,
    from_next: Receiver<Vec<u8>>,
    from_prev: Receiver<Vec<u8>>,
}

impl Channel for LocalChannel {
    fn send(&mut self, to: Peer, msg: Vec<u8>) -> Result<(), ChannelError> {
        let tx = match to {
            Peer::Next => &self.to_next,
            Peer::Prev => &self.to_prev,
        };
        tx.send(msg).map_err(|_| ChannelError::Closed(to))
    }

    fn recv(&mut self, from: Peer) -> Result<Vec<u8>, ChannelError> {
        let rx = match from {
            Peer::Next => &self.from_next,
            Peer::Prev => &self.from_prev,
        };
        rx.recv().map_err(|_| ChannelError::Closed(from))
    }
}

/// Three connected in-memory channels, for parties 0, 1 and 2 in that order.
pub fn local_channels() -> [LocalChannel; 3] {
    // forward[i]: i -> i+1; backward[i]: i -> i-1.
    let (f0, rf0) = channel();
    let (f1, rf1) = channel();
    let (f2, rf2) = channel();
    let (b0, rb0) = channel();
    let (b1, rb1) = channel();
    let (b2, rb2) = channel();
    [
        LocalChannel {
            to_next: f0,
            to_prev: b0,
            from_next: rb1,
            from_prev: rf2,
        },
        LocalChannel {
            to_next: f1,
            to_prev: b1,
            from_next: rb2,
            from_prev: rf0,
        },
        LocalChannel {
            to_next: f2,
            to_prev: b2,
            from_next: rb0,
            from_prev: rf1,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_channels_route_to_the_right_party() {
        let chans = local_channels();
        let handles: Vec<_> = chans
            .into_iter()
            .enumerate()
            .map(|(i, mut ch)| {
                std::thread::spawn(move || {
                    ch.send(Peer::Next, vec![i as u8, 1]).unwrap();
                    ch.send(Peer::Prev, vec![i as u8, 2]).unwrap();
                    let from_next = ch.recv(Peer::Next).unwrap();
                    let from_prev = ch.recv(Peer::Prev).unwrap();
                    (i, from_next, from_prev)
                })
            })
            .collect();
        for h in handles {
            let (i, from_next, from_prev) = h.join().unwrap();
            assert_eq!(from_next, vec![((i + 1) % 3) as u8, 2]);
            assert_eq!(from_prev, vec![((i + 2) % 3) as u8, 1]);
        }
    }
}
