//! An exchange server's registry: pseudonym → public key, registration time and the cached
//! long-term key; plus the per-round index from envelope tags to pseudonyms.
//!
//! The encoding holds long-term keys: store it as carefully as the master secret.
//!
//! Entry layout (80 bytes): `UN (8) || Ed25519 public key (32) || registered_at (8, Unix
//! seconds) || long-term key (32)`.
//! Registry layout: `"ACS-REG\x01" || SN (8) || count (4) || entries`, integers big-endian,
//! entries in strictly increasing pseudonym order. The decoder caps `count` at
//! [`MAX_REGISTRY_ENTRIES`], requires the exact length (no trailing bytes), rejects
//! duplicates and any entry whose pseudonym is not derived from its public key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use ed25519_dalek::VerifyingKey;
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::error::{malformed, KgcError, Result};
use crate::ids::{Direction, ServerPseudonym, UserPseudonym};
use crate::seal::RoundTag;
use crate::sok::LongTermKey;

const MAGIC: &[u8; 8] = b"ACS-REG\x01";
const HEADER_BYTES: usize = 8 + 8 + 4;
/// Length of an encoded [`RegistryEntry`].
pub const ENTRY_BYTES: usize = 8 + 32 + 8 + 32;
/// The most entries [`Registry::from_bytes`] accepts (16.7 million users).
pub const MAX_REGISTRY_ENTRIES: usize = 1 << 24;

/// One registered user, as its exchange server knows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    public_key: [u8; 32],
    registered_at: u64,
    long_term_key: LongTermKey,
}

impl RegistryEntry {
    /// A new entry. The key must be the one derived for the public key's pseudonym.
    pub fn new(public_key: &VerifyingKey, registered_at: u64, long_term_key: LongTermKey) -> Self {
        RegistryEntry {
            public_key: public_key.to_bytes(),
            registered_at,
            long_term_key,
        }
    }

    /// `UN_i`.
    pub fn user(&self) -> UserPseudonym {
        self.long_term_key.user()
    }

    /// The user's Ed25519 public key bytes.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// When the user first registered (Unix seconds).
    pub fn registered_at(&self) -> u64 {
        self.registered_at
    }

    /// The cached long-term key shared with this user.
    pub fn long_term_key(&self) -> &LongTermKey {
        &self.long_term_key
    }

    /// The fixed 80-byte encoding (contains the secret long-term key).
    pub fn to_bytes(&self) -> Zeroizing<[u8; ENTRY_BYTES]> {
        let mut out = Zeroizing::new([0u8; ENTRY_BYTES]);
        out[..8].copy_from_slice(&self.user().to_bytes());
        out[8..40].copy_from_slice(&self.public_key);
        out[40..48].copy_from_slice(&self.registered_at.to_be_bytes());
        out[48..].copy_from_slice(&self.long_term_key.to_bytes()[..]);
        out
    }

    /// Decodes one entry of `server`'s registry (exact length, pseudonym derived from the
    /// public key).
    pub fn from_bytes(server: ServerPseudonym, bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_in_epoch(server, 0, bytes)
    }

    /// [`from_bytes`](Self::from_bytes) for the registry of master-secret epoch `epoch`
    /// (the encoding does not carry the epoch: the caller keeps one table per epoch).
    pub fn from_bytes_in_epoch(server: ServerPseudonym, epoch: u32, bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "registry entry";
        if bytes.len() != ENTRY_BYTES {
            return Err(malformed(WHAT, "wrong length"));
        }
        let user = UserPseudonym::from_bytes(bytes[..8].try_into().expect("8"))?;
        let public_key: [u8; 32] = bytes[8..40].try_into().expect("32");
        if UserPseudonym::derive_from_bytes(&public_key) != Some(user) {
            return Err(malformed(WHAT, "pseudonym not derived from the public key"));
        }
        let registered_at = u64::from_be_bytes(bytes[40..48].try_into().expect("8"));
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes[48..]);
        Ok(RegistryEntry {
            public_key,
            registered_at,
            long_term_key: LongTermKey::from_bytes(user, server, *key).in_epoch(epoch),
        })
    }
}

impl fmt::Debug for RegistryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEntry")
            .field("user", &self.user())
            .field("registered_at", &self.registered_at)
            .finish_non_exhaustive()
    }
}

/// What [`Registry::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new pseudonym.
    New,
    /// The pseudonym was already registered under the same public key; the original
    /// entry (and registration time) is kept.
    AlreadyRegistered,
}

/// All users registered at one exchange server.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    server: ServerPseudonym,
    entries: BTreeMap<UserPseudonym, RegistryEntry>,
    /// Address → its registered user (`UserPseudonym::address`).
    addresses: HashMap<u32, UserPseudonym>,
}

impl Registry {
    /// An empty registry for `server`.
    pub fn new(server: ServerPseudonym) -> Self {
        Registry {
            server,
            entries: BTreeMap::new(),
            addresses: HashMap::new(),
        }
    }

    /// The server this registry belongs to.
    pub fn server(&self) -> ServerPseudonym {
        self.server
    }

    /// Number of registered users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No users yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `user`, if registered.
    pub fn get(&self, user: UserPseudonym) -> Option<&RegistryEntry> {
        self.entries.get(&user)
    }

    /// The cached long-term key shared with `user`.
    pub fn long_term_key(&self, user: UserPseudonym) -> Result<&LongTermKey> {
        self.entries
            .get(&user)
            .map(|e| &e.long_term_key)
            .ok_or(KgcError::UnknownPseudonym(user))
    }

    /// All entries in pseudonym order.
    pub fn iter(&self) -> impl Iterator<Item = &RegistryEntry> + '_ {
        self.entries.values()
    }

    /// The registered user whose address is `address`, if any.
    pub fn address_holder(&self, address: u32) -> Option<UserPseudonym> {
        self.addresses.get(&address).copied()
    }

    /// Whether `user` may hold its address here: refuses the reserved address 0 and an
    /// address registered to another user (`AddressTaken`).
    pub fn check_address(&self, user: UserPseudonym) -> Result<()> {
        if user.address() == 0 {
            return Err(malformed("user pseudonym", "address 0 is reserved"));
        }
        match self.address_holder(user.address()) {
            Some(holder) if holder != user => Err(KgcError::AddressTaken { user, holder }),
            _ => Ok(()),
        }
    }

    /// Adds an entry. Refuses a pseudonym taken by another public key, an address taken
    /// by another pseudonym ([`Registry::check_address`]), and an entry whose key belongs
    /// to another server.
    pub fn insert(&mut self, entry: RegistryEntry) -> Result<Inserted> {
        if entry.long_term_key.server() != self.server {
            return Err(KgcError::WrongServer {
                expected: self.server,
                got: entry.long_term_key.server(),
            });
        }
        match self.entries.get(&entry.user()) {
            Some(existing) if existing.public_key == entry.public_key => {
                Ok(Inserted::AlreadyRegistered)
            }
            Some(_) => Err(KgcError::PseudonymTaken(entry.user())),
            None => {
                self.check_address(entry.user())?;
                self.addresses.insert(entry.user().address(), entry.user());
                self.entries.insert(entry.user(), entry);
                Ok(Inserted::New)
            }
        }
    }

    /// Removes a user.
    pub fn remove(&mut self, user: UserPseudonym) -> Option<RegistryEntry> {
        let removed = self.entries.remove(&user);
        if removed.is_some() {
            self.addresses.remove(&user.address());
        }
        removed
    }

    /// The whole registry (layout in the module docs). Contains secret keys.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            HEADER_BYTES + ENTRY_BYTES * self.entries.len(),
        ));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.server.to_bytes());
        let count = u32::try_from(self.entries.len()).expect("registry larger than 2^32 entries");
        out.extend_from_slice(&count.to_be_bytes());
        for entry in self.entries.values() {
            out.extend_from_slice(&entry.to_bytes()[..]);
        }
        out
    }

    /// Decodes untrusted bytes (see the module docs for every check).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "registry";
        if bytes.len() < HEADER_BYTES {
            return Err(malformed(WHAT, "shorter than its header"));
        }
        if &bytes[..8] != MAGIC {
            return Err(malformed(WHAT, "bad magic or version"));
        }
        let server = ServerPseudonym::from_bytes(bytes[8..16].try_into().expect("8"))?;
        let count = u32::from_be_bytes(bytes[16..20].try_into().expect("4")) as usize;
        if count > MAX_REGISTRY_ENTRIES {
            return Err(KgcError::TooLarge {
                what: WHAT,
                len: count,
                max: MAX_REGISTRY_ENTRIES,
            });
        }
        let body = &bytes[HEADER_BYTES..];
        if body.len() != count * ENTRY_BYTES {
            return Err(malformed(WHAT, "length does not match the entry count"));
        }
        let mut entries = BTreeMap::new();
        let mut addresses = HashMap::with_capacity(count);
        let mut previous: Option<UserPseudonym> = None;
        for chunk in body.chunks_exact(ENTRY_BYTES) {
            let entry = RegistryEntry::from_bytes(server, chunk)?;
            if previous.is_some_and(|p| p >= entry.user()) {
                return Err(malformed(WHAT, "entries not in strictly increasing order"));
            }
            previous = Some(entry.user());
            let address = entry.user().address();
            if address == 0 || addresses.insert(address, entry.user()).is_some() {
                return Err(malformed(WHAT, "an address is 0 or held by two entries"));
            }
            entries.insert(entry.user(), entry);
        }
        Ok(Registry {
            server,
            entries,
            addresses,
        })
    }

    /// The tag → pseudonym index for `round` and `direction` (one SHAKE256 call per user, spread
    /// over rayon's threads): build it once per round, ahead of time if possible, then look
    /// up each arriving envelope's tag.
    pub fn tag_index(&self, round: u64, direction: Direction) -> TagIndex {
        let tags: Vec<(RoundTag, UserPseudonym)> = self
            .entries
            .par_iter()
            .map(|(user, entry)| (entry.long_term_key.round_tag(round, direction), *user))
            .collect();
        let map = tags.into_iter().collect();
        TagIndex {
            round,
            direction,
            map,
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("server", &self.server)
            .field("users", &self.entries.len())
            .finish()
    }
}

/// Maps the envelope tags of one round and direction to the users who sealed them.
#[derive(Clone, Debug)]
pub struct TagIndex {
    round: u64,
    direction: Direction,
    map: HashMap<RoundTag, UserPseudonym>,
}

impl TagIndex {
    /// The round this index is for.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The direction this index is for.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The user whose envelope carries `tag` this round, if any.
    pub fn lookup(&self, tag: &RoundTag) -> Option<UserPseudonym> {
        self.map.get(tag).copied()
    }
}
