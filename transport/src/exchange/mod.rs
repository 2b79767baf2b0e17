//! The exchange server: the round clock ([`clock`]), collecting relay batches and
//! returning outputs ([`collect`]), registration and envelope opening on kgc ([`intake`]),
//! the all-three-agree commit with crash recovery ([`commit`]), and the loop that composes
//! them ([`server`], `acs exchange`).
//!
//! One round at server `i`:
//!
//! 1. [`clock::announce`] (server 0) or [`clock::await_announce`] (servers 1, 2) over
//!    [`crate::mpc::MeshControl`]; then [`crate::relay_port::RelayPortHandle::announce`].
//! 2. [`collect::collect_batches`] until every configured relay sent its batch or the
//!    deadline plus grace passed.
//! 3. Open the envelopes (kgc: tag index → pseudonym → key → share), reject replays
//!    (one envelope per tag per round), run the consistency check and the engine round
//!    on a blocking thread with the [`crate::mpc::TlsChannel`].
//! 4. [`commit::vote_and_commit`]: prepare durably, vote, commit only if all three vote
//!    commit with the same transcript hash.
//! 5. Only then [`release::release`]: output shares to the users in the agreed online set,
//!    `retry` to the other users heard. Outputs are never released for a round that might
//!    still abort; an aborted round gets `retry` to everyone heard, and clients send again.
//!    The committed shares are also kept in the database, so a server that crashed
//!    between commit and release hands them out after its restart.
//!
//! On any peer-link or engine failure a server drops its whole mesh and re-establishes it
//! (so its peers do too, and no vote from an old link survives); the new hellos carry
//! each server's [`crate::wire::RoundStatus`], and [`commit::recover`] settles a prepared
//! round before the next one starts; a server whose database is lost or stale takes the
//! committed state back from its peers ([`rejoin`]). Fill [`crate::mpc::MeshConfig::status`] from
//! [`commit::status`].

pub mod clock;
pub mod collect;
pub mod commit;
pub mod epochs;
pub mod intake;
pub mod rejoin;
pub mod release;
pub mod server;
