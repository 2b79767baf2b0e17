//! The exchange server's database: registry, store and round commits in one embedded,
//! crash-safe file (redb: pure Rust, ACID, copy-on-write B-trees with checksummed
//! commits, fsync on every commit by default; no server process, no C toolchain).
//!
//! Tables
//! - `registry`: pseudonym (u64) → registration record (opaque bytes defined by kgc).
//!   A pseudonym is registered once; a different record for it is refused. These are
//!   the registrations of master-secret epoch 0 (the master secret's own `s_l`).
//! - `epoch_registry`: (epoch u32, pseudonym u64) → registration record of a later
//!   master-secret epoch (`docs/kgc.md` §11), the same rules per epoch. Rows of an epoch
//!   the server no longer serves are deleted at start ([`Db::retire_epochs`]).
//! - `store_blobs`: (round u64, chunk u32) → this server's shares of the whole
//!   fixed-capacity store as written by that round, one compact blob (opaque here) cut
//!   into chunks of [`BLOB_CHUNK`] bytes (redb gives a value a power-of-two run of pages:
//!   one 5.8 MB value would take, and write, 8 MiB). At most two blobs exist:
//!   the committed store (named by `meta.store_round`) and, while a round that replaced
//!   the store is prepared, that round's. A round writes its store once, in
//!   [`Db::prepare`]; [`Db::commit`] only moves the `store_round` pointer and deletes the
//!   old blob (freed pages are reused, so the file does not grow from round to round).
//! - `store_witness`: round (u64) → what this server keeps about the committed store of
//!   that round for its peers' rejoins (commitment nonces and the commitments it holds
//!   as the third server; opaque here), written at commit, deleted with its blob.
//! - `rounds`: round (u64) → the round's commit record (opaque: hashes, online count...);
//!   the last [`ROUND_RECORDS_KEPT`] rounds only.
//! - `meta`: `committed_round` → the last committed round; `announced_round`;
//!   `store_round` → the blob that is the committed store.
//! - `outputs`: the last committed round → this server's output shares of that round with
//!   their routes, so a server that crashed between commit and release (or whose release
//!   did not reach a relay) can release them again after a restart.
//! - `pending_meta` (`prepared_round`, `store_set`), `pending_round`, `pending_outputs`:
//!   the effects of a round that is computed here but not yet agreed by all three
//!   servers (its store, if it wrote one, is the blob keyed by the prepared round).
//!
//! A round's effects become visible in one write transaction ([`Db::commit`] or
//! [`Db::commit_round`]): store, round record and committed marker change together or
//! not at all. Two-phase use: [`Db::prepare`] (durable, before voting), then
//! [`Db::commit`] when all three vote commit, or [`Db::abort`]. [`Db::rejoin`] replaces
//! the committed state with one fetched from the peers (a lost or stale database).
//!
//! Databases written before `store_blobs` (one row per store record in a table `store`,
//! the same bytes) are converted when opened.

use acs_kgc::UserPseudonym;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use std::path::Path;

const REGISTRY: TableDefinition<u64, &[u8]> = TableDefinition::new("registry");
const EPOCH_REGISTRY: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("epoch_registry");
const STORE_BLOBS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("store_blobs");
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");
const WITNESS: TableDefinition<u64, &[u8]> = TableDefinition::new("store_witness");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PENDING_ROUND: TableDefinition<u64, &[u8]> = TableDefinition::new("pending_round");
const PENDING_META: TableDefinition<&str, u64> = TableDefinition::new("pending_meta");
const OUTPUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("outputs");
/// Addresses of retired registrations (address → pseudonym): an address stays its
/// pseudonym's after the epoch it was registered in is retired (`docs/kgc.md`,
/// "Addresses").
const RESERVED_ADDRESSES: TableDefinition<u32, u64> = TableDefinition::new("reserved_addresses");
const PENDING_OUTPUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("pending_outputs");
/// The layout before `store_blobs`: one row per store record (converted at open).
const OLD_STORE: TableDefinition<u32, &[u8]> = TableDefinition::new("store");
const OLD_PENDING_STORE: TableDefinition<u32, &[u8]> = TableDefinition::new("pending_store");

const COMMITTED: &str = "committed_round";
const ANNOUNCED: &str = "announced_round";
const STORE_ROUND: &str = "store_round";
const PREPARED: &str = "prepared_round";
/// In `PENDING_META`: 1 when the prepared round replaces the store.
const STORE_SET: &str = "store_set";

/// Bytes per chunk of a store blob: one 1 MiB page run, less room for redb's leaf header.
pub const BLOB_CHUNK: usize = (1 << 20) - 4096;

/// How many round records `rounds` keeps (older ones are deleted as rounds commit, so
/// the database does not grow with the number of rounds).
pub const ROUND_RECORDS_KEPT: u64 = 4096;

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
    /// A registration fetched from the peers conflicts with this server's record.
    #[error("pseudonym {0:016x} is registered here with another record")]
    RegistrationConflict(u64),
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

/// The round that wrote the committed store, and the witness kept with it.
pub type StoreWitness = (u64, Option<Vec<u8>>);

/// Everything one round changes at this server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RoundEffects {
    /// The round.
    pub round: u64,
    /// The full new store as one blob (this server's shares, opaque here), or `None` when
    /// the round left the store as it was (no user online: nothing was computed), so that
    /// an idle server writes no store at all.
    pub store: Option<Vec<u8>>,
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
            .field("store_bytes", &self.store.as_ref().map(Vec::len))
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
            tx.open_table(EPOCH_REGISTRY)?;
            tx.open_table(STORE_BLOBS)?;
            tx.open_table(ROUNDS)?;
            tx.open_table(WITNESS)?;
            tx.open_table(META)?;
            tx.open_table(PENDING_ROUND)?;
            tx.open_table(PENDING_META)?;
            tx.open_table(OUTPUTS)?;
            tx.open_table(PENDING_OUTPUTS)?;
            tx.open_table(RESERVED_ADDRESSES)?;
        }
        Self::convert_old_store(&tx)?;
        Self::convert_pending_outputs(&tx)?;
        tx.commit()?;
        Ok(Db { inner })
    }

    /// Moves a prepared round's outputs kept in `pending_outputs` (the layout before
    /// they were written once, beside the committed round's) into `outputs`.
    fn convert_pending_outputs(tx: &redb::WriteTransaction) -> Result<(), DbError> {
        let mut po = tx.open_table(PENDING_OUTPUTS)?;
        let mut out = tx.open_table(OUTPUTS)?;
        let pending: Vec<(u64, Vec<u8>)> = po
            .iter()?
            .map(|item| item.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (round, outputs) in pending {
            out.insert(round, outputs.as_slice())?;
        }
        po.retain(|_, _| false)?;
        Ok(())
    }

    /// Moves a store kept one row per record (the layout before `store_blobs`) into
    /// one blob of the same bytes, committed and prepared alike; drops the old tables.
    fn convert_old_store(tx: &redb::WriteTransaction) -> Result<(), DbError> {
        let names: Vec<String> = tx.list_tables()?.map(|t| t.name().to_string()).collect();
        let concat = |t: &redb::Table<u32, &[u8]>| -> Result<Vec<u8>, DbError> {
            let mut blob = Vec::new();
            for item in t.iter()? {
                blob.extend_from_slice(item?.1.value());
            }
            Ok(blob)
        };
        if names.iter().any(|n| n == "store") {
            let blob = concat(&tx.open_table(OLD_STORE)?)?;
            let mut meta = tx.open_table(META)?;
            if !blob.is_empty() {
                let at = meta.get(COMMITTED)?.map_or(0, |v| v.value());
                Self::insert_blob(&mut tx.open_table(STORE_BLOBS)?, at, &blob)?;
                meta.insert(STORE_ROUND, at)?;
            }
            tx.delete_table(OLD_STORE)?;
        }
        if names.iter().any(|n| n == "pending_store") {
            let blob = concat(&tx.open_table(OLD_PENDING_STORE)?)?;
            let mut pm = tx.open_table(PENDING_META)?;
            let prepared = pm.get(PREPARED)?.map(|v| v.value());
            if let Some(prepared) = prepared {
                // Prepared rounds of that layout with no flag always replaced the store.
                let flag = pm.get(STORE_SET)?.map(|v| v.value());
                if flag.is_none_or(|v| v == 1) {
                    Self::insert_blob(&mut tx.open_table(STORE_BLOBS)?, prepared, &blob)?;
                    pm.insert(STORE_SET, 1)?;
                }
            }
            tx.delete_table(OLD_PENDING_STORE)?;
        }
        Ok(())
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

    /// Registers `pseudonym` with `record` in master-secret epoch `epoch` (0 is
    /// [`Db::register`]), unless it is registered to something else in that epoch.
    pub fn register_in_epoch(
        &self,
        epoch: u32,
        pseudonym: u64,
        record: &[u8],
    ) -> Result<Registered, DbError> {
        if epoch == 0 {
            return self.register(pseudonym, record);
        }
        let tx = self.inner.begin_write()?;
        let outcome = {
            let mut t = tx.open_table(EPOCH_REGISTRY)?;
            let existing = t.get((epoch, pseudonym))?.map(|v| v.value() == record);
            match existing {
                Some(true) => Registered::Same,
                Some(false) => Registered::Conflict,
                None => {
                    t.insert((epoch, pseudonym), record)?;
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

    /// Every registration of master-secret epoch `epoch`, in pseudonym order.
    pub fn epoch_registrations(&self, epoch: u32) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
        if epoch == 0 {
            return self.registrations();
        }
        let tx = self.inner.begin_read()?;
        let t = tx.open_table(EPOCH_REGISTRY)?;
        let mut out = Vec::new();
        for item in t.range((epoch, 0)..=(epoch, u64::MAX))? {
            let (k, v) = item?;
            out.push((k.value().1, v.value().to_vec()));
        }
        Ok(out)
    }

    /// Deletes the registrations (with their cached long-term keys) of every
    /// master-secret epoch not in `served`, in one transaction; returns how many rows
    /// went, per epoch. Each deleted user's address stays reserved to its pseudonym
    /// ([`Db::reserved_addresses`]), in the same transaction. redb frees the pages but
    /// does not overwrite them: the bytes stay in the file until reused
    /// (`docs/operators.md` §9, retiring an epoch).
    pub fn retire_epochs(&self, served: &[u32]) -> Result<Vec<(u32, u64)>, DbError> {
        let tx = self.inner.begin_write()?;
        let mut gone: std::collections::BTreeMap<u32, u64> = Default::default();
        {
            let mut retired: Vec<u64> = Vec::new();
            if !served.contains(&0) {
                let mut t = tx.open_table(REGISTRY)?;
                let n = t.len()?;
                if n > 0 {
                    for item in t.iter()? {
                        retired.push(item?.0.value());
                    }
                    t.retain(|_, _| false)?;
                    gone.insert(0, n);
                }
            }
            let mut t = tx.open_table(EPOCH_REGISTRY)?;
            for item in t.iter()? {
                let (k, _) = item?;
                let (epoch, pseudonym) = k.value();
                if !served.contains(&epoch) {
                    *gone.entry(epoch).or_default() += 1;
                    retired.push(pseudonym);
                }
            }
            if !gone.is_empty() {
                t.retain(|k, _| served.contains(&k.0))?;
            }
            let mut r = tx.open_table(RESERVED_ADDRESSES)?;
            // Pseudonym 0 is never registered; the rule is the registration's own.
            for user in retired
                .into_iter()
                .filter_map(|p| UserPseudonym::from_u64(p).ok())
            {
                if r.get(user.address())?.is_none() {
                    r.insert(user.address(), user.get())?;
                }
            }
        }
        if gone.is_empty() {
            tx.abort()?;
        } else {
            tx.commit()?;
        }
        Ok(gone.into_iter().collect())
    }

    /// The addresses (`acs_kgc::UserPseudonym::address`) of users whose registrations
    /// were retired, with the pseudonym each stays reserved to.
    pub fn reserved_addresses(&self) -> Result<Vec<(u32, u64)>, DbError> {
        let tx = self.inner.begin_read()?;
        let t = tx.open_table(RESERVED_ADDRESSES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
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

    /// The committed store blob (`None` before any round wrote one).
    pub fn store(&self) -> Result<Option<Vec<u8>>, DbError> {
        let tx = self.inner.begin_read()?;
        let Some(at) = tx.open_table(META)?.get(STORE_ROUND)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let blobs = tx.open_table(STORE_BLOBS)?;
        let mut blob = Vec::new();
        let mut chunks = 0u32;
        for item in blobs.range((at, 0)..=(at, u32::MAX))? {
            let (k, v) = item?;
            if k.value().1 != chunks {
                return Err(DbError::Redb(format!(
                    "store blob of round {at}: chunk {chunks} missing"
                )));
            }
            blob.extend_from_slice(v.value());
            chunks += 1;
        }
        if chunks == 0 {
            return Err(DbError::Redb(format!(
                "the committed store blob of round {at} is missing"
            )));
        }
        Ok(Some(blob))
    }

    /// The round that wrote the committed store and the witness kept with it (`None`
    /// before any round wrote a store).
    pub fn store_witness(&self) -> Result<Option<StoreWitness>, DbError> {
        let tx = self.inner.begin_read()?;
        let Some(at) = tx.open_table(META)?.get(STORE_ROUND)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let w = tx.open_table(WITNESS)?.get(at)?.map(|v| v.value().to_vec());
        Ok(Some((at, w)))
    }

    /// The last committed round's outputs (opaque bytes from [`RoundEffects::outputs`]).
    pub fn last_outputs(&self) -> Result<Option<(u64, Vec<u8>)>, DbError> {
        let tx = self.inner.begin_read()?;
        // A prepared round's outputs may sit beside the committed round's: read the
        // committed round's.
        let Some(round) = tx.open_table(META)?.get(COMMITTED)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let t = tx.open_table(OUTPUTS)?;
        let outputs = t.get(round)?.map(|v| (round, v.value().to_vec()));
        Ok(outputs)
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
    /// touching the committed state. The round's store (if any) is written here, once.
    pub fn prepare(&self, effects: &RoundEffects) -> Result<(), DbError> {
        let tx = self.inner.begin_write()?;
        {
            let committed = {
                let meta = tx.open_table(META)?;
                Self::check_after_committed(&meta, effects.round)?;
                let committed = meta.get(COMMITTED)?.map(|v| v.value());
                committed
            };
            let mut pm = tx.open_table(PENDING_META)?;
            let mut blobs = tx.open_table(STORE_BLOBS)?;
            Self::drop_prepared_blob(&pm, &mut blobs)?;
            if let Some(blob) = &effects.store {
                Self::insert_blob(&mut blobs, effects.round, blob)?;
            }
            pm.insert(STORE_SET, u64::from(effects.store.is_some()))?;
            let mut pr = tx.open_table(PENDING_ROUND)?;
            pr.retain(|_, _| false)?;
            pr.insert(effects.round, effects.record.as_slice())?;
            // Written once: beside the committed round's outputs, under this round,
            // where the commit leaves them (no copy); an earlier prepared round's go.
            let mut out = tx.open_table(OUTPUTS)?;
            out.retain(|k, _| Some(k) == committed)?;
            out.insert(effects.round, effects.outputs.as_slice())?;
            pm.insert(PREPARED, effects.round)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_blob(
        blobs: &mut redb::Table<(u64, u32), &[u8]>,
        round: u64,
        blob: &[u8],
    ) -> Result<(), DbError> {
        for (i, chunk) in blob.chunks(BLOB_CHUNK).enumerate() {
            let i = u32::try_from(i).map_err(|_| DbError::Redb("store blob too large".into()))?;
            blobs.insert((round, i), chunk)?;
        }
        Ok(())
    }

    fn remove_blob(blobs: &mut redb::Table<(u64, u32), &[u8]>, round: u64) -> Result<(), DbError> {
        blobs.retain_in((round, 0)..=(round, u32::MAX), |_, _| false)?;
        Ok(())
    }

    /// Deletes the store blob of the prepared round, if it wrote one.
    fn drop_prepared_blob(
        pm: &impl ReadableTable<&'static str, u64>,
        blobs: &mut redb::Table<(u64, u32), &[u8]>,
    ) -> Result<(), DbError> {
        if let Some(prepared) = pm.get(PREPARED)?.map(|v| v.value()) {
            if pm.get(STORE_SET)?.is_some_and(|v| v.value() == 1) {
                Self::remove_blob(blobs, prepared)?;
            }
        }
        Ok(())
    }

    /// Makes the blob of `round` the committed store (with `witness`, if any) and deletes
    /// the one it replaces and its witness.
    fn point_store_at(
        tx: &redb::WriteTransaction,
        meta: &mut redb::Table<&str, u64>,
        blobs: &mut redb::Table<(u64, u32), &[u8]>,
        round: u64,
        witness: Option<&[u8]>,
    ) -> Result<(), DbError> {
        let mut w = tx.open_table(WITNESS)?;
        if let Some(old) = meta.insert(STORE_ROUND, round)?.map(|v| v.value()) {
            if old != round {
                Self::remove_blob(blobs, old)?;
                w.remove(old)?;
            }
        }
        if let Some(witness) = witness {
            w.insert(round, witness)?;
        }
        Ok(())
    }

    /// Records `round` as committed with its record and outputs; drops round records
    /// older than [`ROUND_RECORDS_KEPT`].
    fn write_committed(
        tx: &redb::WriteTransaction,
        meta: &mut redb::Table<&str, u64>,
        round: u64,
        record: &[u8],
        outputs: Option<&[u8]>,
    ) -> Result<(), DbError> {
        let mut rounds = tx.open_table(ROUNDS)?;
        rounds.insert(round, record)?;
        rounds.retain_in(..round.saturating_sub(ROUND_RECORDS_KEPT - 1), |_, _| false)?;
        // `None`: the prepared round's outputs are already in place.
        let mut out = tx.open_table(OUTPUTS)?;
        if let Some(outputs) = outputs {
            out.insert(round, outputs)?;
        }
        out.retain(|k, _| k == round)?;
        meta.insert(COMMITTED, round)?;
        Ok(())
    }

    /// Makes the prepared `round` the committed state, in one transaction. The store is
    /// not copied: the committed-store pointer moves to the prepared round's blob.
    pub fn commit(&self, round: u64) -> Result<(), DbError> {
        self.commit_with_witness(round, None)
    }

    /// [`Db::commit`], keeping `witness` with the round's store (if it wrote one).
    pub fn commit_with_witness(&self, round: u64, witness: Option<&[u8]>) -> Result<(), DbError> {
        let tx = self.inner.begin_write()?;
        {
            let mut pm = tx.open_table(PENDING_META)?;
            let prepared = pm.get(PREPARED)?.map(|v| v.value());
            if prepared != Some(round) {
                return Err(DbError::NotPrepared { round, prepared });
            }
            let mut meta = tx.open_table(META)?;
            Self::check_after_committed(&meta, round)?;
            let store_set = pm.remove(STORE_SET)?.is_some_and(|v| v.value() == 1);
            if store_set {
                Self::point_store_at(
                    &tx,
                    &mut meta,
                    &mut tx.open_table(STORE_BLOBS)?,
                    round,
                    witness,
                )?;
            }
            let record = tx
                .open_table(PENDING_ROUND)?
                .remove(round)?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            tx.open_table(PENDING_ROUND)?.retain(|_, _| false)?;
            Self::write_committed(&tx, &mut meta, round, &record, None)?;
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
            Self::drop_prepared_blob(&pm, &mut tx.open_table(STORE_BLOBS)?)?;
            tx.open_table(PENDING_ROUND)?.retain(|_, _| false)?;
            tx.open_table(OUTPUTS)?.remove(round)?;
            pm.remove(PREPARED)?;
            pm.remove(STORE_SET)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Prepare and commit in one transaction (when agreement was reached before writing).
    pub fn commit_round(&self, effects: &RoundEffects) -> Result<(), DbError> {
        let tx = self.inner.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            Self::check_after_committed(&meta, effects.round)?;
            if let Some(blob) = &effects.store {
                let mut blobs = tx.open_table(STORE_BLOBS)?;
                Self::insert_blob(&mut blobs, effects.round, blob)?;
                Self::point_store_at(&tx, &mut meta, &mut blobs, effects.round, None)?;
            }
            Self::write_committed(
                &tx,
                &mut meta,
                effects.round,
                &effects.record,
                Some(&effects.outputs),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces the committed state with one fetched from the peers, in one transaction
    /// (see `exchange::rejoin`): `round` becomes the committed round and `store` (written
    /// in `store_round`, with `witness`) the committed store; a prepared round, the stored outputs (of an older round: never to
    /// be released again) and every older store blob are dropped; `registrations` missing
    /// here are added (one that conflicts with a record held here is refused); the
    /// announced round becomes at least `announced`. Round records are kept.
    pub fn rejoin(
        &self,
        round: u64,
        store: &[u8],
        registrations: &[(u32, u64, impl AsRef<[u8]>)],
        announced: u64,
        store_round: u64,
        witness: Option<&[u8]>,
    ) -> Result<(), DbError> {
        let tx = self.inner.begin_write()?;
        {
            let mut reg = tx.open_table(REGISTRY)?;
            let mut later = tx.open_table(EPOCH_REGISTRY)?;
            for (epoch, pseudonym, record) in registrations {
                let record = record.as_ref();
                let existing = if *epoch == 0 {
                    reg.get(*pseudonym)?.map(|v| v.value() == record)
                } else {
                    later
                        .get((*epoch, *pseudonym))?
                        .map(|v| v.value() == record)
                };
                match existing {
                    Some(true) => {}
                    Some(false) => return Err(DbError::RegistrationConflict(*pseudonym)),
                    None if *epoch == 0 => {
                        reg.insert(*pseudonym, record)?;
                    }
                    None => {
                        later.insert((*epoch, *pseudonym), record)?;
                    }
                }
            }
            let mut pm = tx.open_table(PENDING_META)?;
            pm.retain(|_, _| false)?;
            tx.open_table(PENDING_ROUND)?.retain(|_, _| false)?;
            tx.open_table(PENDING_OUTPUTS)?.retain(|_, _| false)?;
            tx.open_table(OUTPUTS)?.retain(|_, _| false)?;
            let mut blobs = tx.open_table(STORE_BLOBS)?;
            blobs.retain(|_, _| false)?;
            Self::insert_blob(&mut blobs, store_round, store)?;
            let mut w = tx.open_table(WITNESS)?;
            w.retain(|_, _| false)?;
            if let Some(witness) = witness {
                w.insert(store_round, witness)?;
            }
            let mut meta = tx.open_table(META)?;
            meta.insert(STORE_ROUND, store_round)?;
            meta.insert(COMMITTED, round)?;
            let prev = meta.get(ANNOUNCED)?.map(|v| v.value());
            if prev.is_none_or(|p| announced > p) {
                meta.insert(ANNOUNCED, announced)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The rounds whose store blobs the database holds (at most two: the committed
    /// store and a prepared round's).
    pub fn store_blob_rounds(&self) -> Result<Vec<u64>, DbError> {
        let tx = self.inner.begin_read()?;
        let mut out: Vec<u64> = Vec::new();
        for item in tx.open_table(STORE_BLOBS)?.iter()? {
            let r = item?.0.value().0;
            if out.last() != Some(&r) {
                out.push(r);
            }
        }
        Ok(out)
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
            store: Some((0..slots).flat_map(|i| [fill, i as u8, 0xee]).collect()),
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
            assert_eq!(db.store().unwrap(), effects(1, 1, 4).store);
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
        assert_eq!(db.store().unwrap(), effects(2, 2, 3).store);
        assert_eq!(db.round_record(2).unwrap().unwrap(), vec![2; 8]);
        assert_eq!(db.round_record(1).unwrap().unwrap(), vec![1; 8]);
        // Only the last committed round's outputs are kept.
        assert_eq!(db.last_outputs().unwrap(), Some((2, vec![2; 5])));
    }

    #[test]
    fn outputs_are_written_once_and_an_old_pending_row_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let rows = |db: &Db| -> Vec<u64> {
            let tx = db.inner.begin_read().unwrap();
            let t = tx.open_table(OUTPUTS).unwrap();
            t.iter().unwrap().map(|i| i.unwrap().0.value()).collect()
        };
        {
            let db = Db::open(&path).unwrap();
            db.commit_round(&effects(1, 1, 4)).unwrap();
            db.prepare(&effects(2, 2, 3)).unwrap();
            // The prepared round's outputs sit beside the committed round's.
            assert_eq!(rows(&db), [1, 2]);
            db.abort(2).unwrap();
            assert_eq!(rows(&db), [1]);
            db.prepare(&effects(2, 3, 3)).unwrap();
            db.commit(2).unwrap();
            assert_eq!(rows(&db), [2]);
            assert_eq!(db.last_outputs().unwrap(), Some((2, vec![3; 5])));
            // A prepared round as the layout before kept it: in `pending_outputs`.
            db.prepare(&effects(3, 4, 3)).unwrap();
            let tx = db.inner.begin_write().unwrap();
            tx.open_table(OUTPUTS).unwrap().remove(3).unwrap();
            tx.open_table(PENDING_OUTPUTS)
                .unwrap()
                .insert(3, [4u8; 5].as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(rows(&db), [2, 3]);
        assert_eq!(db.last_outputs().unwrap(), Some((2, vec![3; 5])));
        db.commit(3).unwrap();
        assert_eq!(db.last_outputs().unwrap(), Some((3, vec![4; 5])));
        assert_eq!(rows(&db), [3]);
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
        assert_eq!(db.store().unwrap(), effects(1, 1, 4).store);
        // A later round that replaces the store still does, after an idle one.
        db.prepare(&idle(4)).unwrap();
        db.abort(4).unwrap();
        db.prepare(&effects(5, 5, 2)).unwrap();
        db.commit(5).unwrap();
        assert_eq!(db.store().unwrap(), effects(5, 5, 2).store);
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
        assert_eq!(db.store().unwrap(), effects(5, 5, 2).store);
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
        assert_eq!(db.store().unwrap(), effects(5, 5, 2).store);
        assert_eq!(db.round_record(6).unwrap(), None);
        assert_eq!(db.last_outputs().unwrap(), Some((5, vec![5; 5])));
    }

    #[test]
    fn a_round_writes_its_store_once_and_at_most_two_blobs_exist() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("x.redb")).unwrap();
        // A store spanning several chunks.
        let big = |round: u64| RoundEffects {
            round,
            store: Some(vec![round as u8; 2 * BLOB_CHUNK + 17]),
            record: vec![1],
            outputs: vec![2],
        };
        db.commit_round(&big(1)).unwrap();
        assert_eq!(db.store_blob_rounds().unwrap(), vec![1]);
        db.prepare(&big(2)).unwrap();
        assert_eq!(db.store_blob_rounds().unwrap(), vec![1, 2]);
        // A prepared round replaced by another drops its blob.
        db.prepare(&big(3)).unwrap();
        assert_eq!(db.store_blob_rounds().unwrap(), vec![1, 3]);
        assert_eq!(db.store().unwrap(), big(1).store);
        db.commit(3).unwrap();
        assert_eq!(db.store_blob_rounds().unwrap(), vec![3]);
        assert_eq!(db.store().unwrap(), big(3).store);
        db.prepare(&big(4)).unwrap();
        db.abort(4).unwrap();
        assert_eq!(db.store_blob_rounds().unwrap(), vec![3]);
        // Round records are bounded.
        for r in 5..5 + ROUND_RECORDS_KEPT + 10 {
            db.commit_round(&RoundEffects {
                round: r,
                store: None,
                record: vec![r as u8],
                outputs: vec![],
            })
            .unwrap();
        }
        let last = 4 + ROUND_RECORDS_KEPT + 10;
        assert!(db.round_record(last).unwrap().is_some());
        assert!(db
            .round_record(last + 1 - ROUND_RECORDS_KEPT)
            .unwrap()
            .is_some());
        assert!(db
            .round_record(last - ROUND_RECORDS_KEPT)
            .unwrap()
            .is_none());
        assert_eq!(db.store().unwrap(), big(3).store);
    }

    #[test]
    fn a_database_of_the_old_layout_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut store = tx.open_table(OLD_STORE).unwrap();
                let mut pending = tx.open_table(OLD_PENDING_STORE).unwrap();
                for i in 0..3u32 {
                    store.insert(i, [1, i as u8].as_slice()).unwrap();
                    pending.insert(i, [2, i as u8].as_slice()).unwrap();
                }
                tx.open_table(META).unwrap().insert(COMMITTED, 7).unwrap();
                tx.open_table(PENDING_META)
                    .unwrap()
                    .insert(PREPARED, 8)
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.store().unwrap(), Some(vec![1, 0, 1, 1, 1, 2]));
        assert_eq!(db.prepared_round().unwrap(), Some(8));
        db.commit(8).unwrap();
        assert_eq!(db.store().unwrap(), Some(vec![2, 0, 2, 1, 2, 2]));
        assert_eq!(db.store_blob_rounds().unwrap(), vec![8]);
        drop(db);
        // Opening again finds nothing to convert.
        assert_eq!(
            Db::open(&path).unwrap().store().unwrap(),
            Some(vec![2, 0, 2, 1, 2, 2])
        );
    }

    #[test]
    fn epochs_keep_their_own_registrations_and_retiring_deletes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let db = Db::open(&path).unwrap();
        db.register(7, b"seven, epoch 0").unwrap();
        assert_eq!(
            db.register_in_epoch(1, 7, b"seven, epoch 1").unwrap(),
            Registered::New
        );
        assert_eq!(
            db.register_in_epoch(1, 7, b"seven, epoch 1").unwrap(),
            Registered::Same
        );
        assert_eq!(
            db.register_in_epoch(1, 7, b"another").unwrap(),
            Registered::Conflict
        );
        db.register_in_epoch(2, 8, b"eight, epoch 2").unwrap();
        assert_eq!(
            db.epoch_registrations(1).unwrap(),
            vec![(7, b"seven, epoch 1".to_vec())]
        );
        assert_eq!(
            db.epoch_registrations(0).unwrap(),
            vec![(7, b"seven, epoch 0".to_vec())]
        );
        // Serving 1 and 2 retires 0; serving 2 alone then retires 1.
        assert_eq!(db.retire_epochs(&[1, 2]).unwrap(), vec![(0, 1)]);
        assert_eq!(db.registrations().unwrap(), vec![]);
        assert_eq!(db.retire_epochs(&[1, 2]).unwrap(), vec![]);
        assert_eq!(db.retire_epochs(&[2]).unwrap(), vec![(1, 1)]);
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.epoch_registrations(1).unwrap(), vec![]);
        assert_eq!(
            db.epoch_registrations(2).unwrap(),
            vec![(8, b"eight, epoch 2".to_vec())]
        );
    }

    #[test]
    fn rejoin_replaces_the_committed_state_and_adds_missing_registrations() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("x.redb")).unwrap();
        db.register(1, b"one").unwrap();
        db.commit_round(&effects(3, 3, 2)).unwrap();
        db.prepare(&effects(4, 4, 2)).unwrap();
        db.note_announced(5).unwrap();
        let regs = vec![(1, b"one".to_vec()), (2, b"two".to_vec())];
        let rows: Vec<_> = regs
            .iter()
            .map(|(p, r)| (0, *p, r.clone()))
            .chain([(3, 2, b"two, epoch 3".to_vec())])
            .collect();
        db.rejoin(9, b"fetched", &rows, 10, 8, Some(b"w")).unwrap();
        assert_eq!(db.committed_round().unwrap(), Some(9));
        assert_eq!(db.prepared_round().unwrap(), None);
        assert_eq!(db.store().unwrap(), Some(b"fetched".to_vec()));
        assert_eq!(db.store_blob_rounds().unwrap(), vec![8]);
        assert_eq!(db.store_witness().unwrap(), Some((8, Some(b"w".to_vec()))));
        assert_eq!(db.last_outputs().unwrap(), None);
        assert_eq!(db.announced_round().unwrap(), Some(10));
        assert_eq!(db.registrations().unwrap(), regs);
        assert_eq!(
            db.epoch_registrations(3).unwrap(),
            vec![(2, b"two, epoch 3".to_vec())]
        );
        // A conflicting registration refuses the whole rejoin.
        assert!(matches!(
            db.rejoin(11, b"x", &[(0, 2, b"other".to_vec())], 11, 11, None),
            Err(DbError::RegistrationConflict(2))
        ));
        assert_eq!(db.committed_round().unwrap(), Some(9));
        db.prepare(&effects(10, 10, 2)).unwrap();
        db.commit_with_witness(10, Some(b"w10")).unwrap();
        assert_eq!(db.store_blob_rounds().unwrap(), vec![10]);
        assert_eq!(
            db.store_witness().unwrap(),
            Some((10, Some(b"w10".to_vec())))
        );
        // A round that writes no store keeps the store and its witness.
        db.commit_round(&RoundEffects {
            round: 11,
            store: None,
            record: vec![],
            outputs: vec![],
        })
        .unwrap();
        assert_eq!(
            db.store_witness().unwrap(),
            Some((10, Some(b"w10".to_vec())))
        );
    }
}
