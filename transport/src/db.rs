//! The exchange server's database: registry, store and round commits in one embedded,
//! crash-safe file (redb: pure Rust, ACID, copy-on-write B-trees with checksummed
//! commits, fsync on every commit by default; no server process, no C toolchain).
//!
//! Tables
//! - `registry`: pseudonym (u64) → registration record (opaque bytes defined by kgc).
//!   A pseudonym is registered once; a different record for it is refused.
//! - `store`: slot (u32) → this server's share of store record `slot`; always the full
//!   fixed-capacity store of the last committed round.
//! - `rounds`: round (u64) → the round's commit record (opaque: hashes, online count...).
//! - `meta`: `committed_round` → the last committed round.
//! - `outputs`: the last committed round → this server's output shares of that round with
//!   their routes, so a server that crashed between commit and release (or whose release
//!   did not reach a relay) can release them again after a restart.
//! - `pending_store`, `pending_meta` (`prepared_round`), `pending_round`,
//!   `pending_outputs`: the effects of a round that is computed here but not yet agreed by
//!   all three servers.
//!
//! A round's effects become visible in one write transaction ([`Db::commit`] or
//! [`Db::commit_round`]): store, round record and committed marker change together or
//! not at all. Two-phase use: [`Db::prepare`] (durable, before voting), then
//! [`Db::commit`] when all three vote commit, or [`Db::abort`].

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

const REGISTRY: TableDefinition<u64, &[u8]> = TableDefinition::new("registry");
const STORE: TableDefinition<u32, &[u8]> = TableDefinition::new("store");
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PENDING_STORE: TableDefinition<u32, &[u8]> = TableDefinition::new("pending_store");
const PENDING_ROUND: TableDefinition<u64, &[u8]> = TableDefinition::new("pending_round");
const PENDING_META: TableDefinition<&str, u64> = TableDefinition::new("pending_meta");
const OUTPUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("outputs");
const PENDING_OUTPUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("pending_outputs");

const COMMITTED: &str = "committed_round";
const ANNOUNCED: &str = "announced_round";
const PREPARED: &str = "prepared_round";
/// In `PENDING_META`: 1 when the prepared round replaces the store.
const STORE_SET: &str = "store_set";

/// Database failures. All are fatal for the operation; none leaves partial effects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// redb failed (I/O, corruption, ...).
    #[error("database: {0}")]
    Redb(String),
    /// A round number that does not come after the committed one.
    #[error("round {round} is not after the committed round {committed}")]
    StaleRound {
        /// The round given.
        round: u64,
        /// The last committed round.
        committed: u64,
    },
    /// Commit or abort of a round that is not the prepared one.
    #[error("round {round} is not prepared (prepared: {prepared:?})")]
    NotPrepared {
        /// The round given.
        round: u64,
        /// The prepared round, if any.
        prepared: Option<u64>,
    },
    /// More store slots than a u32 index can name.
    #[error("store of {0} records is too large")]
    StoreTooLarge(usize),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.to_string())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What happened to a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// Newly stored.
    New,
    /// Already registered with this exact record (a retried registration).
    Same,
    /// Already registered with a different record: refused.
    Conflict,
}

/// Everything one round changes at this server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RoundEffects {
    /// The round.
    pub round: u64,
    /// The full new store, slot by slot (this server's shares), or `None` when the round
    /// left the store as it was (no user online: nothing was computed), so that an idle
    /// server writes no store at all.
    pub store: Option<Vec<Vec<u8>>>,
    /// The round's commit record.
    pub record: Vec<u8>,
    /// This server's output shares and their routes (opaque to the database).
    pub outputs: Vec<u8>,
}

impl std::fmt::Debug for RoundEffects {
    // Store contents are secret shares: sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundEffects")
            .field("round", &self.round)
            .field("store_slots", &self.store.as_ref().map(Vec::len))
            .field("record_len", &self.record.len())
            .field("outputs_len", &self.outputs.len())
            .finish()
    }
}

/// The exchange server's database.
#[derive(Debug)]
pub struct Db {
    inner: Database,
}

impl Db {
    /// Opens (or creates) the database file; creates missing tables. A new file is
    /// created owner-only (0600): registry records hold users' long-term keys.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        create_owner_only(path)?;
        let inner = Database::create(path)?;
        let tx = inner.begin_write()?;
        {
            tx.open_table(REGISTRY)?;
            tx.open_table(STORE)?;
            tx.open_table(ROUNDS)?;
            tx.open_table(META)?;
            tx.open_table(PENDING_STORE)?;
            tx.open_table(PENDING_ROUND)?;
            tx.open_table(PENDING_META)?;
            tx.open_table(OUTPUTS)?;
            tx.open_table(PENDING_OUTPUTS)?;
        }
        tx.commit()?;
        Ok(Db { inner })
    }

    /// Registers `pseudonym` with `record`, unless it is registered to something else.
    pub fn register(&self, pseudonym: u64, record: &[u8]) -> Result<Registered, DbError> {
        let tx = self.inner.begin_write()?;
        let outcome = {
            let mut t = tx.open_table(REGISTRY)?;
            let existing = t.get(pseudonym)?.map(|v| v.value() == record);
            match existing {
                Some(true) => Registered::Same,
                Some(false) => Registered::Conflict,
                None => {
                    t.insert(pseudonym, record)?;
                    Registered::New
                }
            }
        };
        if outcome == Registered::New {
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(outcome)
    }

    /// The registration record of `pseudonym`.
    pub fn registration(&self, pseudonym: u64) -> Result<Option<Vec<u8>>, DbError> {
        let tx = self.inner.begin_read()?;
        let t = tx.open_table(REGISTRY)?;
        Ok(t.get(pseudonym)?.map(|v| v.value().to_vec()))
    }

    /// How many pseudonyms are registered.
    pub fn registered_count(&self) -> Result<u64, DbError> {
        let tx = self.inner.begin_read()?;
        Ok(tx.open_table(REGISTRY)?.len()?)
    }

    /// Every registration, in pseudonym order (to load the registry at start).
    pub fn registrations(&self) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
        let tx = self.inner.begin_read()?;
        let t = tx.open_table(REGISTRY)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The last committed round.
    pub fn committed_round(&self) -> Result<Option<u64>, DbError> {
        let tx = self.inner.begin_read()?;
        Ok(tx.open_table(META)?.get(COMMITTED)?.map(|v| v.value()))
    }

    /// Records that `round` was announced (server 0, before announcing), so that after a
    /// restart no round number is announced twice: envelopes sealed for an interrupted
    /// round can then never be replayed into a new round of the same number.
    pub fn note_announced(&self, round: u64) -> Result<(), DbError> {
        let tx = self.inner.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let prev = meta.get(ANNOUNCED)?.map(|v| v.value());
            if prev.is_none_or(|p| round > p) {
                meta.insert(ANNOUNCED, round)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The last round recorded by [`Db::note_announced`].
    pub fn announced_round(&self) -> Result<Option<u64>, DbError> {
        let tx = self.inner.begin_read()?;
        Ok(tx.open_table(META)?.get(ANNOUNCED)?.map(|v| v.value()))
    }

    /// The round prepared but not yet committed or aborted (after a crash: ask the peers
    /// whether it committed).
    pub fn prepared_round(&self) -> Result<Option<u64>, DbError> {
        let tx = self.inner.begin_read()?;
        Ok(tx
            .open_table(PENDING_META)?
            .get(PREPARED)?
            .map(|v| v.value()))
    }

    /// The committed store, slot by slot.
    pub fn store(&self) -> Result<Vec<Vec<u8>>, DbError> {
        let tx = self.inner.begin_read()?;
        let t = tx.open_table(STORE)?;
        let mut out = Vec::with_capacity(t.len()? as usize);
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// The last committed round's outputs (opaque bytes from [`RoundEffects::outputs`]).
    pub fn last_outputs(&self) -> Result<Option<(u64, Vec<u8>)>, DbError> {
        let tx = self.inner.begin_read()?;
        let t = tx.open_table(OUTPUTS)?;
        let last = t.last()?.map(|(k, v)| (k.value(), v.value().to_vec()));
        Ok(last)
    }

    /// The commit record of `round`.
    pub fn round_record(&self, round: u64) -> Result<Option<Vec<u8>>, DbError> {
        let tx = self.inner.begin_read()?;
        Ok(tx
            .open_table(ROUNDS)?
            .get(round)?
            .map(|v| v.value().to_vec()))
    }

    fn check_after_committed(
        meta: &impl ReadableTable<&'static str, u64>,
        round: u64,
    ) -> Result<(), DbError> {
        if let Some(committed) = meta.get(COMMITTED)?.map(|v| v.value()) {
            if round <= committed {
                return Err(DbError::StaleRound { round, committed });
            }
        }
        Ok(())
    }

    /// Durably records `effects` as prepared (replacing an older prepared round), without
    /// touching the committed state.
    pub fn prepare(&self, effects: &RoundEffects) -> Result<(), DbError> {
        let slots = effects.store.as_ref().map_or(0, Vec::len);
        if u32::try_from(slots).is_err() {
            return Err(DbError::StoreTooLarge(slots));
        }
        let tx = self.inner.begin_write()?;
        {
            Self::check_after_committed(&tx.open_table(META)?, effects.round)?;
            let mut ps = tx.open_table(PENDING_STORE)?;
            ps.retain(|_, _| false)?;
            for (i, blob) in effects.store.iter().flatten().enumerate() {
                ps.insert(i as u32, blob.as_slice())?;
            }
            tx.open_table(PENDING_META)?
                .insert(STORE_SET, u64::from(effects.store.is_some()))?;
            let mut pr = tx.open_table(PENDING_ROUND)?;
            pr.retain(|_, _| false)?;
            pr.insert(effects.round, effects.record.as_slice())?;
            let mut po = tx.open_table(PENDING_OUTPUTS)?;
            po.retain(|_, _| false)?;
            po.insert(effects.round, effects.outputs.as_slice())?;
            tx.open_table(PENDING_META)?
                .insert(PREPARED, effects.round)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes the prepared `round` the committed state, in one transaction.
    pub fn commit(&self, round: u64) -> Result<(), DbError> {
        let tx = self.inner.begin_write()?;
        {
            let mut pm = tx.open_table(PENDING_META)?;
            let prepared = pm.get(PREPARED)?.map(|v| v.value());
            if prepared != Some(round) {
                return Err(DbError::NotPrepared { round, prepared });
            }
            let mut meta = tx.open_table(META)?;
            Self::check_after_committed(&meta, round)?;
            // Older prepared rounds carry no flag: they always replaced the store.
            let store_set = pm.remove(STORE_SET)?.map_or(1, |v| v.value());
            let mut ps = tx.open_table(PENDING_STORE)?;
            if store_set == 1 {
                let mut store = tx.open_table(STORE)?;
                store.retain(|_, _| false)?;
                for item in ps.iter()? {
                    let (k, v) = item?;
                    store.insert(k.value(), v.value())?;
                }
            }
            ps.retain(|_, _| false)?;
            let mut pr = tx.open_table(PENDING_ROUND)?;
            let record = pr
                .remove(round)?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            tx.open_table(ROUNDS)?.insert(round, record.as_slice())?;
            let mut po = tx.open_table(PENDING_OUTPUTS)?;
            let outputs = po
                .remove(round)?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            po.retain(|_, _| false)?;
            let mut out = tx.open_table(OUTPUTS)?;
            out.retain(|_, _| false)?;
            out.insert(round, outputs.as_slice())?;
            meta.insert(COMMITTED, round)?;
            pm.remove(PREPARED)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops the prepared `round`; the committed state is unchanged.
    pub fn abort(&self, round: u64) -> Result<(), DbError> {
        let tx = self.inner.begin_write()?;
        {
            let mut pm = tx.open_table(PENDING_META)?;
            let prepared = pm.get(PREPARED)?.map(|v| v.value());
            if prepared != Some(round) {
                return Err(DbError::NotPrepared { round, prepared });
            }
            tx.open_table(PENDING_STORE)?.retain(|_, _| false)?;
            tx.open_table(PENDING_ROUND)?.retain(|_, _| false)?;
            tx.open_table(PENDING_OUTPUTS)?.retain(|_, _| false)?;
            pm.remove(PREPARED)?;
            pm.remove(STORE_SET)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Prepare and commit in one transaction (when agreement was reached before writing).
    pub fn commit_round(&self, effects: &RoundEffects) -> Result<(), DbError> {
        let slots = effects.store.as_ref().map_or(0, Vec::len);
        if u32::try_from(slots).is_err() {
            return Err(DbError::StoreTooLarge(slots));
        }
        let tx = self.inner.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            Self::check_after_committed(&meta, effects.round)?;
            if let Some(slots) = &effects.store {
                let mut store = tx.open_table(STORE)?;
                store.retain(|_, _| false)?;
                for (i, blob) in slots.iter().enumerate() {
                    store.insert(i as u32, blob.as_slice())?;
                }
            }
            tx.open_table(ROUNDS)?
                .insert(effects.round, effects.record.as_slice())?;
            let mut out = tx.open_table(OUTPUTS)?;
            out.retain(|_, _| false)?;
            out.insert(effects.round, effects.outputs.as_slice())?;
            meta.insert(COMMITTED, effects.round)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn create_owner_only(path: &Path) -> Result<(), DbError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(DbError::Redb(format!("creating {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_new_database_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let db = Db::open(&path).unwrap();
        db.register(1, b"secret").unwrap();
        drop(db);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        assert_eq!(
            Db::open(&path).unwrap().registration(1).unwrap().unwrap(),
            b"secret"
        );
    }

    fn effects(round: u64, fill: u8, slots: usize) -> RoundEffects {
        RoundEffects {
            round,
            store: Some((0..slots).map(|i| vec![fill, i as u8, 0xee]).collect()),
            record: vec![fill; 8],
            outputs: vec![fill; 5],
        }
    }

    #[test]
    fn registry_refuses_to_reassign_a_pseudonym() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("x.redb")).unwrap();
        assert_eq!(db.register(42, b"key-a").unwrap(), Registered::New);
        assert_eq!(db.register(42, b"key-a").unwrap(), Registered::Same);
        assert_eq!(db.register(42, b"key-b").unwrap(), Registered::Conflict);
        assert_eq!(db.registration(42).unwrap().unwrap(), b"key-a");
        assert_eq!(db.register(7, b"key-c").unwrap(), Registered::New);
        assert_eq!(db.registered_count().unwrap(), 2);
        assert_eq!(
            db.registrations().unwrap(),
            vec![(7, b"key-c".to_vec()), (42, b"key-a".to_vec())]
        );
    }

    #[test]
    fn prepared_rounds_are_invisible_until_committed_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        {
            let db = Db::open(&path).unwrap();
            db.commit_round(&effects(1, 1, 4)).unwrap();
            db.prepare(&effects(2, 2, 3)).unwrap();
            // Committed state is still round 1.
            assert_eq!(db.committed_round().unwrap(), Some(1));
            assert_eq!(db.store().unwrap(), effects(1, 1, 4).store.unwrap());
            assert_eq!(db.prepared_round().unwrap(), Some(2));
            // Outputs of the prepared round are not releasable yet.
            assert_eq!(db.last_outputs().unwrap(), Some((1, vec![1; 5])));
        }
        // As after a crash between prepare and commit.
        let db = Db::open(&path).unwrap();
        assert_eq!(db.committed_round().unwrap(), Some(1));
        assert_eq!(db.prepared_round().unwrap(), Some(2));
        assert!(matches!(db.commit(3), Err(DbError::NotPrepared { .. })));
        db.commit(2).unwrap();
        assert_eq!(db.committed_round().unwrap(), Some(2));
        assert_eq!(db.prepared_round().unwrap(), None);
        // The store shrank to the new round's three slots: nothing stale is left.
        assert_eq!(db.store().unwrap(), effects(2, 2, 3).store.unwrap());
        assert_eq!(db.round_record(2).unwrap().unwrap(), vec![2; 8]);
        assert_eq!(db.round_record(1).unwrap().unwrap(), vec![1; 8]);
        // Only the last committed round's outputs are kept.
        assert_eq!(db.last_outputs().unwrap(), Some((2, vec![2; 5])));
    }

    #[test]
    fn a_round_that_leaves_the_store_as_it_was_writes_none_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("x.redb")).unwrap();
        db.commit_round(&effects(1, 1, 4)).unwrap();
        let idle = |round| RoundEffects {
            store: None,
            ..effects(round, round as u8, 0)
        };
        db.commit_round(&idle(2)).unwrap();
        db.prepare(&idle(3)).unwrap();
        db.commit(3).unwrap();
        assert_eq!(db.committed_round().unwrap(), Some(3));
        assert_eq!(db.store().unwrap(), effects(1, 1, 4).store.unwrap());
        // A later round that replaces the store still does, after an idle one.
        db.prepare(&idle(4)).unwrap();
        db.abort(4).unwrap();
        db.prepare(&effects(5, 5, 2)).unwrap();
        db.commit(5).unwrap();
        assert_eq!(db.store().unwrap(), effects(5, 5, 2).store.unwrap());
    }

    #[test]
    fn aborted_and_stale_rounds_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("x.redb")).unwrap();
        db.commit_round(&effects(5, 5, 2)).unwrap();
        db.prepare(&effects(6, 6, 2)).unwrap();
        db.abort(6).unwrap();
        db.note_announced(7).unwrap();
        db.note_announced(6).unwrap();
        assert_eq!(db.announced_round().unwrap(), Some(7));
        assert_eq!(db.prepared_round().unwrap(), None);
        assert_eq!(db.committed_round().unwrap(), Some(5));
        assert_eq!(db.store().unwrap(), effects(5, 5, 2).store.unwrap());
        assert!(matches!(
            db.prepare(&effects(5, 9, 2)),
            Err(DbError::StaleRound {
                round: 5,
                committed: 5
            })
        ));
        assert!(matches!(
            db.commit_round(&effects(4, 9, 2)),
            Err(DbError::StaleRound { .. })
        ));
        assert_eq!(db.store().unwrap(), effects(5, 5, 2).store.unwrap());
        assert_eq!(db.round_record(6).unwrap(), None);
        assert_eq!(db.last_outputs().unwrap(), Some((5, vec![5; 5])));
    }
}
