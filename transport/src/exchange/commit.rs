//! A round commits only when all three servers agree (design §5), as a two-phase commit
//! over the peer links:
//!
//! 1. each server durably *prepares* the round's effects ([`Db::prepare`]), or decides to
//!    abort;
//! 2. it sends both peers a [`CommitVote`] with the hash of its opened values (the
//!    cross-check of design §3);
//! 3. with both peers' votes in hand it commits ([`Db::commit`]) iff all three voted
//!    commit with the same hash, and aborts otherwise.
//!
//! A server that loses a link or times out in step 3 stays *prepared* and returns
//! [`CommitError::Undecided`]: it must not guess. When the mesh is re-established the
//! hellos carry every server's [`RoundStatus`] and [`recovery`] decides: commit if any
//! server committed the round (then all three voted commit), abort if none did (then no
//! server released outputs, and clients resend). Outputs go to relays only after commit.

use crate::db::{Db, DbError, RoundEffects};
use crate::mpc::MeshControl;
use crate::wire::{CommitVote, MsgType, RoundStatus, Vote, WireError};
use acs_engine::channel::Peer;
use std::sync::Arc;
use std::time::Duration;

/// How a round ended here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// All three voted commit with equal hashes; committed here.
    Committed,
    /// Someone voted abort or the hashes differ; aborted here.
    Aborted(String),
}

/// Why no decision could be taken.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A vote could not be sent or received; the round stays prepared here until
    /// [`recovery`] settles it.
    #[error("round {round} undecided: {reason}")]
    Undecided {
        /// The round.
        round: u64,
        /// What went wrong.
        reason: String,
    },
    /// The database task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

async fn on_db<T: Send + 'static>(
    db: &Arc<Db>,
    f: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
) -> Result<T, CommitError> {
    // redb commits fsync: keep them off the async workers.
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| CommitError::Task(e.to_string()))?
        .map_err(CommitError::from)
}

async fn recv_vote(
    control: &mut MeshControl,
    from: Peer,
    round: u64,
) -> Result<CommitVote, WireError> {
    loop {
        let frame = control.recv(from).await?;
        if frame.ty != MsgType::CommitVote {
            return Err(WireError::Unexpected {
                got: frame.ty,
                expected: "CommitVote",
            });
        }
        let v: CommitVote = frame.decode()?;
        match v.round.cmp(&round) {
            // A vote left over from a round this server already settled.
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(v),
            std::cmp::Ordering::Greater => {
                return Err(WireError::Invalid {
                    ty: MsgType::CommitVote,
                    reason: format!("vote for round {} while deciding round {round}", v.round),
                })
            }
        }
    }
}

/// This server's commitments to the two components of the store a round wrote, with
/// their nonces (see [`super::rejoin`]): sent in the vote, kept at commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreCommitments {
    /// Commitments to `[x_i, x_{i+1}]`.
    pub mine: [[u8; 32]; 2],
    /// Their nonces.
    pub nonces: [[u8; 32]; 2],
}

/// Runs steps 1–3 for `round`. `effects` is `None` when this server wants to abort (its
/// computation failed); `transcript_hash` is the hash of the values it opened;
/// `store_commitments` is set when the round wrote a new store.
pub async fn vote_and_commit(
    control: &mut MeshControl,
    db: &Arc<Db>,
    round: u64,
    effects: Option<RoundEffects>,
    transcript_hash: [u8; 32],
    store_commitments: Option<StoreCommitments>,
    timeout: Duration,
) -> Result<Decision, CommitError> {
    let mut vote = Vote::Abort;
    let t_prepare = std::time::Instant::now();
    if let Some(effects) = effects {
        if effects.round != round {
            return Err(CommitError::Db(DbError::NotPrepared {
                round,
                prepared: Some(effects.round),
            }));
        }
        on_db(db, move |db| db.prepare(&effects)).await?;
        vote = Vote::Commit;
        #[cfg(feature = "fault-injection")]
        super::server::faults::pause("prepared", round).await;
    }
    let mine = CommitVote {
        round,
        vote,
        transcript_hash,
        store_commitments: store_commitments.map(|c| c.mine),
    };
    let undecided = |reason: String| CommitError::Undecided { round, reason };
    let t_votes = std::time::Instant::now();
    control
        .broadcast(&mine)
        .map_err(|e| undecided(e.to_string()))?;
    let votes = tokio::time::timeout(timeout, async {
        let next = recv_vote(control, Peer::Next, round).await?;
        let prev = recv_vote(control, Peer::Prev, round).await?;
        Ok::<_, WireError>([next, prev])
    })
    .await
    .map_err(|_| undecided(format!("no votes within {timeout:?}")))?
    .map_err(|e| undecided(e.to_string()))?;

    let reason = if mine.vote == Vote::Abort {
        Some("this server voted abort".to_string())
    } else if votes.iter().any(|v| v.vote == Vote::Abort) {
        Some("a peer voted abort".to_string())
    } else if votes.iter().any(|v| v.transcript_hash != transcript_hash) {
        Some("opened values differ between servers".to_string())
    } else {
        None
    };
    match reason {
        None => {
            let t_commit = std::time::Instant::now();
            let witness = store_commitments.map(|c| witness(control, round, &c, &votes));
            on_db(db, move |db| {
                db.commit_with_witness(round, witness.as_ref().map(|w| w.to_bytes()).as_deref())
            })
            .await?;
            tracing::debug!(
                round,
                prepare_ms = (t_votes - t_prepare).as_millis() as u64,
                votes_ms = (t_commit - t_votes).as_millis() as u64,
                db_commit_ms = t_commit.elapsed().as_millis() as u64,
                "commit phases"
            );
            Ok(Decision::Committed)
        }
        Some(why) => {
            if vote == Vote::Commit {
                on_db(db, move |db| db.abort(round)).await?;
            }
            tracing::warn!(round, reason = %why, "round aborted");
            Ok(Decision::Aborted(why))
        }
    }
}

/// What this server keeps from a committed round's votes: its nonces and, as the third
/// server of `x_{i+2}`, the commitment each holder sent (`[prev, next]`; zero if a vote
/// carried none). Also compares what the peers committed to for the components this
/// server holds with its own commitments: a mismatch means the two holders of a
/// component disagree, and is logged naming them.
fn witness(
    control: &MeshControl,
    round: u64,
    c: &StoreCommitments,
    votes: &[CommitVote; 2],
) -> super::rejoin::Witness {
    let me = control.party();
    let [next, prev] = votes;
    let n = next.store_commitments.unwrap_or_default();
    let p = prev.store_commitments.unwrap_or_default();
    // The next peer holds [x_{i+1}, x_{i+2}], the previous one [x_{i-1}, x_i].
    for (theirs, ours, peer, j) in [
        (n[0], c.mine[1], me.next(), me.next().index()),
        (p[1], c.mine[0], me.prev(), me.index()),
    ] {
        if theirs != ours {
            tracing::error!(
                round,
                component = j,
                suspect_a = peer.index(),
                suspect_b = me.index(),
                "server {} committed to a different store component x_{j} than this server: its copy and ours differ",
                peer.index()
            );
        }
    }
    super::rejoin::Witness {
        nonces: c.nonces,
        third: [p[0], n[1]],
    }
}

/// What to do about a prepared round after (re)connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing is pending here.
    Nothing,
    /// A peer committed the prepared round: commit it here.
    Commit(u64),
    /// No server committed it: abort it here.
    Abort(u64),
}

/// Why recovery cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A peer committed a round this server neither committed nor prepared: this
    /// server's database is behind (restored from an old backup?). An operator must act.
    #[error("peer committed round {peer_committed}, but this server has committed {mine:?} and prepared {prepared:?}")]
    Diverged {
        /// The peer's committed round.
        peer_committed: u64,
        /// Ours.
        mine: Option<u64>,
        /// Our prepared round.
        prepared: Option<u64>,
    },
}

/// Decides a prepared round from this server's and its peers' [`RoundStatus`].
pub fn recovery(mine: RoundStatus, peers: [RoundStatus; 2]) -> Result<Recovery, RecoveryError> {
    let peer_max = peers.iter().filter_map(|p| p.committed).max();
    if let Some(pc) = peer_max {
        let known = mine.committed.is_some_and(|c| c >= pc) || mine.prepared == Some(pc);
        if !known {
            return Err(RecoveryError::Diverged {
                peer_committed: pc,
                mine: mine.committed,
                prepared: mine.prepared,
            });
        }
    }
    Ok(match mine.prepared {
        None => Recovery::Nothing,
        Some(r) if peer_max.is_some_and(|pc| pc >= r) => Recovery::Commit(r),
        Some(r) => Recovery::Abort(r),
    })
}

/// Applies [`recovery`] to the database.
pub fn recover(db: &Db, peers: [RoundStatus; 2]) -> Result<Recovery, CommitError> {
    let mine = status(db)?;
    let r = recovery(mine, peers).map_err(|e| CommitError::Undecided {
        round: mine.prepared.unwrap_or_default(),
        reason: e.to_string(),
    })?;
    match r {
        Recovery::Commit(round) => db.commit(round)?,
        Recovery::Abort(round) => db.abort(round)?,
        Recovery::Nothing => {}
    }
    Ok(r)
}

/// This server's status, for its hello.
pub fn status(db: &Db) -> Result<RoundStatus, DbError> {
    Ok(RoundStatus {
        committed: db.committed_round()?,
        prepared: db.prepared_round()?,
    })
}

#[cfg(test)]
mod tests;
