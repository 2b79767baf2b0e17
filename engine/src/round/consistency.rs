//! The cross-server agreement on the online set (paper §4.2, design §3).
//!
//! Each exchange server opens the envelopes relayed to it, so it knows which pseudonyms
//! it heard from this round; that set is public leakage. The round may run only when all
//! three servers provably hold one and the same set, even if one server is malicious:
//! a server that told its two peers different sets would make them compute over
//! different online lists, and the output for index `i` would go to different users at
//! different servers.
//!
//! The protocol (one round when the sets agree, two more when they do not):
//! 1. **Sign.** Each server signs a [`Statement`] binding the round, itself and the
//!    SHA3-256 digest of its sorted set, and sends it to both peers.
//! 2. **Echo.** Each server forwards to each peer the statement it got from the other
//!    one. Every server now holds each peer's statement twice, once first-hand and once
//!    through the third server. Two valid signatures by one server on different digests
//!    for the same round are an [`EquivocationProof`]: anyone with that server's public
//!    key can check it, so only a server that really said two things is blamed. If all
//!    three digests are equal, the round runs over that set.
//! 3. **Sets.** Otherwise each server sends its set; each received set must match its
//!    sender's agreed (signed, echoed) digest. Every honest server now holds the same
//!    three sets and computes the same intersection; the users outside it get `retry`.
//! 4. **Final digest.** Each server signs the digest of the intersection and sends it to
//!    both peers; all three must be equal before the round computes. A signed final
//!    digest that is not the intersection of the three agreed sets is provably wrong.
//!
//! What a malicious server can still do: claim it did not hear from some users, so they
//! are left out and told to retry. That cannot be told apart from a relay or network
//! losing their shares; the sets are public, so the logs show which server lacked whom.
//!
//! Blame follows the rules of `docs/security.md`: an [`EquivocationProof`] is a proof;
//! a malformed or badly signed message is blamed on the peer that sent it over its
//! authenticated link (certain for the receiver, not transferable); nothing here names a
//! server that the evidence does not single out.

use crate::channel::{PartyId, Peer};
use crate::error::EngineError;
use crate::party::Party;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha3::{Digest, Sha3_256};

/// Most pseudonyms a peer may send in one online set (2^26: far above any round).
pub const MAX_ONLINE: usize = 1 << 26;

/// The outcome of the check at one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The agreed online set, ascending: the round runs over exactly these users.
    pub online: Vec<u64>,
    /// Pseudonyms this server heard from that are not in the agreed set: they get
    /// `retry`.
    pub retry: Vec<u64>,
    /// Whether all three sets were equal.
    pub consistent: bool,
    /// How many of the agreed-upon candidates each server did not hear: for each party
    /// (by index), the number of pseudonyms in the union of the three sets missing from
    /// its set. All zero when consistent. Public (the sets are leakage); logged so an
    /// operator can see a server that keeps leaving users out.
    pub missing_at: [usize; 3],
}

/// The digest each server publishes for its online set.
pub fn online_digest(round: u32, sorted: &[u64]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update(b"acs/online-set/v1");
    h.update(round.to_le_bytes());
    h.update((sorted.len() as u64).to_le_bytes());
    for p in sorted {
        h.update(p.to_le_bytes());
    }
    h.finalize().into()
}

/// What a statement is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StatementKind {
    /// The digest of the set this server heard from.
    Heard,
    /// The digest of the final (intersected) set this server will compute over.
    Final,
    /// The digest of the set of users whose input share failed its hash check at this
    /// server in the conversion (`round::input`): they are removed from the round.
    InputRejected,
}

/// A server's signed claim about its online set for one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Statement {
    /// Binds the statement to one deployment and its parameters (see [`KeyNotary`]).
    pub context: [u8; 32],
    /// What the digest is of.
    pub kind: StatementKind,
    /// The round.
    pub round: u32,
    /// The server that signs it.
    pub signer: PartyId,
    /// The number of pseudonyms in the set.
    pub count: u64,
    /// [`online_digest`] of the set.
    pub digest: [u8; 32],
}

/// Domain prefix of signed statements: distinct from every other message an exchange
/// server signs with its identity key (its descriptor starts with `ACS-SD`).
const STATEMENT_MAGIC: &[u8; 8] = b"ACS-OS\x00\x01";

/// Length of [`Statement::to_bytes`].
pub const STATEMENT_BYTES: usize = 8 + 32 + 1 + 4 + 1 + 8 + 32;

/// Length of a signed statement on the wire.
pub const SIGNED_BYTES: usize = STATEMENT_BYTES + 64;

impl Statement {
    /// The exact bytes that are signed: `"ACS-OS\0\1" ‖ context ‖ kind ‖ round (LE u32) ‖
    /// signer ‖ count (LE u64) ‖ digest`.
    pub fn to_bytes(&self) -> [u8; STATEMENT_BYTES] {
        let mut out = [0u8; STATEMENT_BYTES];
        out[..8].copy_from_slice(STATEMENT_MAGIC);
        out[8..40].copy_from_slice(&self.context);
        out[40] = match self.kind {
            StatementKind::Heard => 0,
            StatementKind::Final => 1,
            StatementKind::InputRejected => 2,
        };
        out[41..45].copy_from_slice(&self.round.to_le_bytes());
        out[45] = self.signer.index() as u8;
        out[46..54].copy_from_slice(&self.count.to_le_bytes());
        out[54..86].copy_from_slice(&self.digest);
        out
    }

    /// Parses [`Statement::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Statement> {
        if b.len() != STATEMENT_BYTES || &b[..8] != STATEMENT_MAGIC {
            return None;
        }
        let kind = match b[40] {
            0 => StatementKind::Heard,
            1 => StatementKind::Final,
            2 => StatementKind::InputRejected,
            _ => return None,
        };
        Some(Statement {
            context: b[8..40].try_into().ok()?,
            kind,
            round: u32::from_le_bytes(b[41..45].try_into().ok()?),
            signer: PartyId::new(b[45] as usize)?,
            count: u64::from_le_bytes(b[46..54].try_into().ok()?),
            digest: b[54..86].try_into().ok()?,
        })
    }

    /// Whether two statements are about the same thing (so differing digests are an
    /// equivocation).
    fn same_claim(&self, other: &Statement) -> bool {
        self.context == other.context
            && self.kind == other.kind
            && self.round == other.round
            && self.signer == other.signer
    }
}

/// A statement with its signer's Ed25519 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedStatement {
    /// What was claimed.
    pub statement: Statement,
    /// The signer's signature over [`Statement::to_bytes`].
    pub signature: [u8; 64],
}

impl SignedStatement {
    /// The wire form: statement bytes, then the signature.
    pub fn to_bytes(&self) -> [u8; SIGNED_BYTES] {
        let mut out = [0u8; SIGNED_BYTES];
        out[..STATEMENT_BYTES].copy_from_slice(&self.statement.to_bytes());
        out[STATEMENT_BYTES..].copy_from_slice(&self.signature);
        out
    }

    /// Parses the wire form (the signature is not checked here).
    pub fn from_bytes(b: &[u8]) -> Option<SignedStatement> {
        if b.len() != SIGNED_BYTES {
            return None;
        }
        Some(SignedStatement {
            statement: Statement::from_bytes(&b[..STATEMENT_BYTES])?,
            signature: b[STATEMENT_BYTES..].try_into().ok()?,
        })
    }

    /// Whether the signature is the signer's, under the signer's public `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(
            &self.statement.to_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }
}

/// Two statements signed by one server about the same claim with different digests: a
/// proof, checkable by anyone with that server's identity key, that it said two
/// different things in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EquivocationProof {
    /// One statement.
    pub first: SignedStatement,
    /// The other, for the same context, kind, round and signer, with another digest.
    pub second: SignedStatement,
}

impl EquivocationProof {
    /// The server that equivocated.
    pub fn culprit(&self) -> PartyId {
        self.first.statement.signer
    }

    /// Whether this is a valid proof against the holder of `key`: both signatures valid,
    /// same claim, different digests.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        self.first.statement.same_claim(&self.second.statement)
            && (self.first.statement.digest != self.second.statement.digest
                || self.first.statement.count != self.second.statement.count)
            && self.first.verify(key)
            && self.second.verify(key)
    }

    /// Hex of both signed statements, for a log line an operator can hand to others.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(4 * SIGNED_BYTES + 1);
        for b in self.first.to_bytes().iter() {
            s.push_str(&format!("{b:02x}"));
        }
        s.push(':');
        for b in self.second.to_bytes().iter() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl std::fmt::Display for EquivocationProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} signed two different {:?} digests for round {}",
            self.culprit(),
            self.first.statement.kind,
            self.first.statement.round
        )
    }
}

/// Signs this server's statements and checks its peers'. The engine stays free of key
/// storage: the exchange server builds one from its identity key and its peers' verified
/// descriptors.
pub trait Notary: Send {
    /// The context every statement of this deployment carries.
    fn context(&self) -> [u8; 32];

    /// Signs `statement` for sending to `to`. An honest notary signs exactly what it is
    /// given whatever `to` is; the parameter is the seam the cheating harness
    /// (`acs-bench cheat`, bench-only) uses to make a server tell its peers different
    /// things.
    fn sign(&self, to: Peer, statement: &Statement) -> SignedStatement;

    /// The public identity key of party `who`.
    fn key_of(&self, who: PartyId) -> &VerifyingKey;
}

/// The notary over Ed25519 keys: this server's signing key and the three servers'
/// public keys (index = party).
pub struct KeyNotary {
    context: [u8; 32],
    signing: SigningKey,
    keys: [VerifyingKey; 3],
}

impl std::fmt::Debug for KeyNotary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyNotary")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl KeyNotary {
    /// A notary for the holder of `signing`, whose public key must be `keys[me]`.
    pub fn new(
        context: [u8; 32],
        me: PartyId,
        signing: SigningKey,
        keys: [VerifyingKey; 3],
    ) -> Result<Self, EngineError> {
        if signing.verifying_key() != keys[me.index()] {
            return Err(EngineError::InvalidInput(format!(
                "the signing key is not {me}'s identity key"
            )));
        }
        Ok(KeyNotary {
            context,
            signing,
            keys,
        })
    }

    /// Three notaries with fresh random keys, for running the parties in one process
    /// (tests, benches).
    pub fn three_random(context: [u8; 32]) -> [KeyNotary; 3] {
        let signing: [SigningKey; 3] =
            std::array::from_fn(|_| SigningKey::generate(&mut rand::rngs::OsRng));
        let keys = std::array::from_fn(|i| signing[i].verifying_key());
        signing.map(|s| KeyNotary {
            context,
            signing: s,
            keys,
        })
    }
}

impl Notary for KeyNotary {
    fn context(&self) -> [u8; 32] {
        self.context
    }

    fn sign(&self, _to: Peer, statement: &Statement) -> SignedStatement {
        SignedStatement {
            statement: *statement,
            signature: self.signing.sign(&statement.to_bytes()).to_bytes(),
        }
    }

    fn key_of(&self, who: PartyId) -> &VerifyingKey {
        &self.keys[who.index()]
    }
}

impl Party {
    /// Runs the agreement for `round` over the pseudonyms this server heard from (see
    /// the module docs). Two rounds when the sets agree, four when they do not.
    pub fn agree_online(
        &mut self,
        round: u32,
        heard: &[u64],
        notary: &dyn Notary,
    ) -> Result<Agreement, EngineError> {
        let me = self.id();
        let mut mine = heard.to_vec();
        mine.sort_unstable();
        mine.dedup();
        let heard_claim = |signer: PartyId, set: &[u64]| Statement {
            context: notary.context(),
            kind: StatementKind::Heard,
            round,
            signer,
            count: set.len() as u64,
            digest: online_digest(round, set),
        };
        let own = heard_claim(me, &mine);

        // 1. Sign and send.
        for to in [Peer::Next, Peer::Prev] {
            let signed = notary.sign(to, &own);
            self.send_bytes(to, signed.to_bytes().to_vec())?;
        }
        let from_next =
            self.recv_statement(Peer::Next, me.next(), StatementKind::Heard, round, notary)?;
        let from_prev =
            self.recv_statement(Peer::Prev, me.prev(), StatementKind::Heard, round, notary)?;
        self.count_round();

        // 2. Echo: each peer's statement goes to the other peer.
        self.send_bytes(Peer::Next, from_prev.to_bytes().to_vec())?;
        self.send_bytes(Peer::Prev, from_next.to_bytes().to_vec())?;
        // Next echoes what Prev told it, Prev what Next told it.
        let prev_via_next =
            self.recv_statement(Peer::Next, me.prev(), StatementKind::Heard, round, notary)?;
        let next_via_prev =
            self.recv_statement(Peer::Prev, me.next(), StatementKind::Heard, round, notary)?;
        self.count_round();
        for (direct, echoed) in [(&from_prev, &prev_via_next), (&from_next, &next_via_prev)] {
            if direct.statement != echoed.statement {
                return Err(EngineError::Equivocation(Box::new(EquivocationProof {
                    first: *direct,
                    second: *echoed,
                })));
            }
        }

        let digests = [&own, &from_next.statement, &from_prev.statement];
        if digests
            .iter()
            .all(|s| s.digest == own.digest && s.count == own.count)
        {
            return Ok(Agreement {
                online: mine,
                retry: Vec::new(),
                consistent: true,
                missing_at: [0; 3],
            });
        }

        // 3. Sets, each checked against its sender's agreed digest.
        let bytes: Vec<u8> = mine.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.send_bytes(Peer::Next, bytes.clone())?;
        self.send_bytes(Peer::Prev, bytes)?;
        let next_set = self.recv_set(Peer::Next, round, &from_next.statement)?;
        let prev_set = self.recv_set(Peer::Prev, round, &from_prev.statement)?;
        self.count_round();
        let online: Vec<u64> = mine
            .iter()
            .copied()
            .filter(|p| next_set.binary_search(p).is_ok() && prev_set.binary_search(p).is_ok())
            .collect();
        let retry = mine
            .iter()
            .copied()
            .filter(|p| online.binary_search(p).is_err())
            .collect();
        let mut sets: [&[u64]; 3] = [&[], &[], &[]];
        sets[me.index()] = &mine;
        sets[me.next().index()] = &next_set;
        sets[me.prev().index()] = &prev_set;
        let mut union: Vec<u64> = sets.concat();
        union.sort_unstable();
        union.dedup();
        let missing_at = sets.map(|s| union.len() - s.len());

        // 4. The final set's digest, signed, must be the same at all three.
        let final_claim = Statement {
            kind: StatementKind::Final,
            ..heard_claim(me, &online)
        };
        for to in [Peer::Next, Peer::Prev] {
            let signed = notary.sign(to, &final_claim);
            self.send_bytes(to, signed.to_bytes().to_vec())?;
        }
        let fin_next =
            self.recv_statement(Peer::Next, me.next(), StatementKind::Final, round, notary)?;
        let fin_prev =
            self.recv_statement(Peer::Prev, me.prev(), StatementKind::Final, round, notary)?;
        self.count_round();
        for fin in [fin_next, fin_prev] {
            if fin.statement.digest != final_claim.digest
                || fin.statement.count != final_claim.count
            {
                return Err(EngineError::WrongFinalSet(Box::new(fin)));
            }
        }
        Ok(Agreement {
            online,
            retry,
            consistent: false,
            missing_at,
        })
    }

    /// A statement of `signer` of `kind` for `round`, from the peer `from`: the peer's own
    /// (`signer` is that peer) or one it echoes. Checked: well formed, about this round
    /// and context, signed by `signer`. An honest echoer verified a statement before
    /// passing it on, so a bad one is always the sender's doing.
    pub(super) fn recv_statement(
        &mut self,
        from: Peer,
        signer: PartyId,
        kind: StatementKind,
        round: u32,
        notary: &dyn Notary,
    ) -> Result<SignedStatement, EngineError> {
        let peer = self.id().peer(from);
        let bytes = self.recv_bytes(from, SIGNED_BYTES)?;
        check_statement(&bytes, signer, kind, round, notary).map_err(|what| {
            EngineError::PeerMisbehaved {
                peer,
                what: if signer == peer {
                    format!("its signed online-set statement: {what}")
                } else {
                    format!("echoed a statement of {signer} that does not verify: {what}")
                },
            }
        })
    }

    /// A peer's online set, checked against the digest it signed.
    fn recv_set(
        &mut self,
        from: Peer,
        round: u32,
        signed: &Statement,
    ) -> Result<Vec<u64>, EngineError> {
        let bytes = self.recv_any(from, MAX_ONLINE * 8)?;
        let peer = self.id().peer(from);
        if bytes.len() % 8 != 0 {
            return Err(EngineError::WrongLength {
                from: peer,
                expected: bytes.len() / 8 * 8,
                got: bytes.len(),
            });
        }
        let set: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let well_formed = set.windows(2).all(|w| w[0] < w[1]);
        if !well_formed
            || set.len() as u64 != signed.count
            || online_digest(round, &set) != signed.digest
        {
            return Err(EngineError::PeerMisbehaved {
                peer,
                what: "sent an online set that does not match the digest it signed".into(),
            });
        }
        Ok(set)
    }
}

/// Parses and checks a signed statement that must be `signer`'s, of `kind`, for `round`
/// in this deployment.
pub(crate) fn check_statement(
    bytes: &[u8],
    signer: PartyId,
    kind: StatementKind,
    round: u32,
    notary: &dyn Notary,
) -> Result<SignedStatement, &'static str> {
    let s = SignedStatement::from_bytes(bytes).ok_or("malformed")?;
    let st = &s.statement;
    if st.signer != signer || st.kind != kind || st.round != round {
        return Err("wrong signer, kind or round");
    }
    if st.context != notary.context() {
        return Err("another deployment's context");
    }
    if !s.verify(notary.key_of(signer)) {
        return Err("bad signature");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(digest: u8) -> Statement {
        Statement {
            context: [1; 32],
            kind: StatementKind::Heard,
            round: 9,
            signer: PartyId::ALL[1],
            count: 3,
            digest: [digest; 32],
        }
    }

    #[test]
    fn statements_round_trip_and_reject_garbage() {
        let s = statement(4);
        assert_eq!(Statement::from_bytes(&s.to_bytes()), Some(s));
        let mut b = s.to_bytes();
        b[0] ^= 1;
        assert_eq!(Statement::from_bytes(&b), None);
        let mut b = s.to_bytes();
        b[45] = 3;
        assert_eq!(Statement::from_bytes(&b), None);
        assert_eq!(Statement::from_bytes(&b[1..]), None);
    }

    #[test]
    fn an_equivocation_proof_verifies_only_against_the_signer_and_only_if_it_is_one() {
        let n = KeyNotary::three_random([1; 32]);
        let a = n[1].sign(Peer::Next, &statement(4));
        let b = n[1].sign(Peer::Prev, &statement(5));
        let proof = EquivocationProof {
            first: a,
            second: b,
        };
        assert!(proof.verify(n[0].key_of(PartyId::ALL[1])));
        assert_eq!(proof.culprit(), PartyId::ALL[1]);
        // Not against another key.
        assert!(!proof.verify(n[0].key_of(PartyId::ALL[2])));
        // The same statement twice is no equivocation.
        assert!(!EquivocationProof {
            first: a,
            second: a
        }
        .verify(n[0].key_of(PartyId::ALL[1])));
        // Different rounds are no equivocation.
        let other_round = n[1].sign(
            Peer::Prev,
            &Statement {
                round: 10,
                ..statement(5)
            },
        );
        assert!(!EquivocationProof {
            first: a,
            second: other_round
        }
        .verify(n[0].key_of(PartyId::ALL[1])));
        // A forged second signature is no proof.
        let mut forged = b;
        forged.signature[0] ^= 1;
        assert!(!EquivocationProof {
            first: a,
            second: forged
        }
        .verify(n[0].key_of(PartyId::ALL[1])));
    }

    #[test]
    fn a_notary_refuses_a_key_that_is_not_its_own() {
        let n = KeyNotary::three_random([0; 32]);
        let keys = [0, 1, 2].map(|i| *n[i].key_of(PartyId::ALL[i]));
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        assert!(KeyNotary::new([0; 32], PartyId::ALL[0], signing, keys).is_err());
    }
}
