//! The round clock: server 0 is the coordinator. It announces each round and its
//! submission deadline to the other two over the peer links; they check the announcement
//! and follow. Every server then tells its relays.

use crate::mpc::MeshControl;
use crate::wire::{MsgType, RoundAnnounce, WireError};
use acs_engine::channel::{PartyId, Peer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The coordinating server.
pub const COORDINATOR: usize = 0;

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a round announcement was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// The link failed or carried something else.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Only server 0 announces.
    #[error("{0} is not the coordinator")]
    NotCoordinator(PartyId),
    /// The round does not come after the last one.
    #[error("announced round {got} does not follow round {after}")]
    Stale {
        /// Announced.
        got: u64,
        /// The last round this server knows.
        after: u64,
    },
    /// The deadline is in the past or unreasonably far ahead.
    #[error("round {round} deadline is {delta_ms} ms from now, outside 0..={max_ms} ms")]
    Deadline {
        /// The round.
        round: u64,
        /// Deadline minus now (negative: past).
        delta_ms: i64,
        /// The largest window accepted.
        max_ms: u64,
    },
}

/// Server 0: announce `round`, open for `window` from now, to both peers.
pub fn announce(
    control: &MeshControl,
    round: u64,
    window: Duration,
) -> Result<RoundAnnounce, ClockError> {
    if control.party().index() != COORDINATOR {
        return Err(ClockError::NotCoordinator(control.party()));
    }
    let a = RoundAnnounce {
        round,
        deadline_unix_ms: now_unix_ms() + window.as_millis() as u64,
    };
    control.broadcast(&a)?;
    Ok(a)
}

/// Which peer the coordinator is, seen from `me`.
pub fn coordinator_peer(me: PartyId) -> Option<Peer> {
    match me.index() {
        COORDINATOR => None,
        i if (i + 1) % 3 == COORDINATOR => Some(Peer::Next),
        _ => Some(Peer::Prev),
    }
}

/// Servers 1 and 2: the coordinator's next announcement, checked: its round must come
/// after `after` and its deadline lie within `max_window` from now.
pub async fn await_announce(
    control: &mut MeshControl,
    after: Option<u64>,
    max_window: Duration,
) -> Result<RoundAnnounce, ClockError> {
    let from =
        coordinator_peer(control.party()).ok_or(ClockError::NotCoordinator(control.party()))?;
    let frame = control.recv(from).await?;
    if frame.ty != MsgType::RoundAnnounce {
        return Err(WireError::Unexpected {
            got: frame.ty,
            expected: "RoundAnnounce from the coordinator",
        }
        .into());
    }
    let a: RoundAnnounce = frame.decode()?;
    if let Some(after) = after {
        if a.round <= after {
            return Err(ClockError::Stale {
                got: a.round,
                after,
            });
        }
    }
    let delta_ms = a.deadline_unix_ms as i64 - now_unix_ms() as i64;
    let max_ms = max_window.as_millis() as u64;
    if delta_ms < 0 || delta_ms as u64 > max_ms {
        return Err(ClockError::Deadline {
            round: a.round,
            delta_ms,
            max_ms,
        });
    }
    Ok(a)
}
