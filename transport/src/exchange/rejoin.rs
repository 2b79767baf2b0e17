//! Rejoin from peers: a server whose database is lost (deleted, new disk) or stale (an
//! old backup restored) takes the committed state back from its two peers instead of
//! stopping.
//!
//! What it needs and where it is. Party `i` holds components `x_i` and `x_{i+1}` of every
//! store record (replicated sharing). `x_i` is also held by party `i-1` (its `x_{(i-1)+1}`),
//! and `x_{i+1}` by party `i+1` (its own first component). So the previous peer sends
//! `x_i`, the next peer sends `x_{i+1}`: each peer sends exactly the one component the two
//! of them already share, and no server ever sees a component it would not hold anyway
//! (the third component `x_{i+2}`, which both peers hold, is never sent). With them come
//! the committed round, the last round number announced (so no number is announced twice)
//! and the registrations' public parts (Ed25519 public key, registration time): the
//! rejoining server derives each user's long-term key with its own master secret, so no
//! key material crosses. Nothing else is sent: no outputs, no round records.
//!
//! Who rejoins. Every server knows all three hello statuses (its own and its two peers'),
//! so all three reach the same verdict from [`behind`]: a server is behind when a peer
//! committed a round it neither committed nor prepared (what [`super::commit::recovery`]
//! calls diverged). Exactly one server behind: its peers push their state to it right
//! after settling their own prepared rounds and before the next round, on the control
//! links ([`send_state`]), and it reads both ([`receive_state`]) before anything else.
//! Two or three behind: the one server ahead cannot supply both components of anyone;
//! the servers stop and say so (an operator restores from a backup at least as new as
//! the others', see `docs/operators.md`).
//!
//! Checks at the receiver: the frame types and their order, the component index, the
//! exact component length its configuration implies, at most
//! [`acs_kgc::MAX_REGISTRY_ENTRIES`] registrations of a valid public key each, both peers
//! naming the same committed round and that round being the one their hellos named, all
//! within [`REJOIN_TIMEOUT`]. Any failure is an error naming the peer; the session ends
//! and the mesh is built again.
//!
//! Commitments. In every round that writes the store, each server commits to its two
//! components, `H(round, j, nonce_j, x_j)` ([`commitment`]), with `nonce_j` from a secret
//! only the two holders of `x_j` share ([`commitment_nonce`] over their link's TLS
//! exporter), and sends both commitments in its commit vote; the third server of each
//! component keeps the commitment each holder sent ([`Witness`]). At a rejoin, the peer
//! sharing `x_j` sends `x_j` with `nonce_j`, the other peer relays the commitment the
//! rejoining server itself made to `x_j`, and [`check_commitments`] compares: one lying
//! peer makes the rejoin fail, never succeed with a wrong component. See
//! `docs/security.md` ("Rejoin") for what is and is not checked.

use super::commit::recovery;
use crate::mpc::MeshControl;
use crate::wire::{MsgType, RejoinData, RejoinState, RoundStatus, WireError, REJOIN_CHUNK};
use acs_engine::channel::{PartyId, Peer};
use std::time::Duration;

/// How long a rejoining server waits for both peers' state.
pub const REJOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How far the last announced round may be ahead of the committed one (rounds that
/// aborted in a row), so a peer cannot push the round numbers towards their end.
pub const MAX_ROUNDS_AHEAD: u64 = 1 << 20;

/// Bytes per registration on the wire: public key, registration time.
pub const REGISTRATION_BYTES: usize = 32 + 8;

/// The nonce of the commitment to the component a pair of servers shares, for the store
/// written in `round`: derived from their link's exporter secret
/// ([`crate::mpc::Mesh::pair_secrets`]), which the third server does not know, so the
/// commitment hides the component from it.
pub fn commitment_nonce(pair_secret: &[u8; 32], round: u64) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"acs/store-commitment-nonce/v1");
    h.update(pair_secret);
    h.update(round.to_le_bytes());
    h.finalize().into()
}

/// `H(round, j, nonce_j, x_j)`: the commitment to component `x_j` of the store written in
/// `round` (SHA-256 over the words, little-endian).
pub fn commitment(round: u64, j: u8, nonce: &[u8; 32], words: &[u64]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"acs/store-commitment/v1");
    h.update(round.to_le_bytes());
    h.update([j]);
    h.update(nonce);
    h.update((words.len() as u64).to_le_bytes());
    for chunk in words.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|w| w.to_le_bytes()).collect();
        h.update(&bytes);
    }
    h.finalize().into()
}

/// What a server keeps about the store it committed, for its peers' rejoins: the nonces
/// of its two components' commitments and, as the third server for `x_{i+2}`, the
/// commitment each holder of `x_{i+2}` sent for it. Stored beside the store blob
/// (`Db::store_witness`), 128 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Witness {
    /// Nonces of `x_i` (shared with the previous peer) and `x_{i+1}` (with the next).
    pub nonces: [[u8; 32]; 2],
    /// The commitments to `x_{i+2}` as the previous and the next peer sent them.
    pub third: [[u8; 32]; 2],
}

impl Witness {
    /// The 128-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        [self.nonces[0], self.nonces[1], self.third[0], self.third[1]].concat()
    }

    /// From [`Witness::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Witness> {
        if b.len() != 128 {
            return None;
        }
        let part = |i: usize| -> [u8; 32] { b[i * 32..(i + 1) * 32].try_into().expect("32") };
        Some(Witness {
            nonces: [part(0), part(1)],
            third: [part(2), part(3)],
        })
    }
}

/// Which servers are behind (must rejoin), from the three hello statuses indexed by
/// party.
pub fn behind(statuses: [RoundStatus; 3]) -> Vec<usize> {
    (0..3)
        .filter(|&p| recovery(statuses[p], [statuses[(p + 1) % 3], statuses[(p + 2) % 3]]).is_err())
        .collect()
}

/// Why a rejoin failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RejoinError {
    /// A peer's link failed or sent an undecodable frame.
    #[error("rejoin: link to server {peer}: {error}")]
    Wire {
        /// The peer.
        peer: PartyId,
        /// What failed.
        error: WireError,
    },
    /// A peer sent something a correct peer never sends.
    #[error("rejoin: server {peer} sent a bad state: {reason}")]
    BadState {
        /// The peer.
        peer: PartyId,
        /// What was wrong.
        reason: String,
    },
    /// The two peers disagree.
    #[error("rejoin: the peers disagree: {0}")]
    Disagree(String),
    /// Not in time.
    #[error("rejoin: no state from both peers within {0:?}")]
    Timeout(Duration),
}

/// What one peer sent.
#[derive(Debug)]
pub struct Received {
    /// Its header.
    pub state: RejoinState,
    /// The component, as words.
    pub component: Vec<u64>,
    /// Registrations: public key, registration time.
    pub registrations: Vec<([u8; 32], u64)>,
}

/// The component this server shares with `to`: its `x_{i+1}` (`b`) for the next peer,
/// its `x_i` (`a`) for the previous one, with that component's index.
pub fn shared_component(me: PartyId, to: Peer) -> (u8, bool) {
    match to {
        Peer::Next => (me.next().index() as u8, true),
        Peer::Prev => (me.index() as u8, false),
    }
}

/// What a helper proves its component with (see [`RejoinState`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Proof {
    /// The round that wrote the committed store.
    pub store_round: u64,
    /// The nonce of the sent component's commitment.
    pub nonce: [u8; 32],
    /// The receiver's own commitment to the other peer's component, as kept here.
    pub relayed: Option<[u8; 32]>,
    /// This sender's commitment to the component the receiver does not hold.
    pub third: Option<[u8; 32]>,
}

impl Proof {
    /// What the helper of a peer `to` sends, from its witness of the store written in
    /// `store_round` and its components `[a, b]` (`x_i`, `x_{i+1}`).
    pub fn of(
        me: PartyId,
        to: Peer,
        store_round: u64,
        witness: Option<&Witness>,
        a: &[u64],
        b: &[u64],
    ) -> Proof {
        let Some(w) = witness else {
            return Proof {
                store_round,
                ..Proof::default()
            };
        };
        let known = |c: [u8; 32]| (c != [0; 32]).then_some(c);
        match to {
            // To the next peer (i+1): we share x_{i+1} (nonce 1); it does not hold x_i,
            // our a; as the third server of x_{i+2} we kept its commitment (third[1]).
            Peer::Next => Proof {
                store_round,
                nonce: w.nonces[1],
                relayed: known(w.third[1]),
                third: Some(commitment(store_round, me.index() as u8, &w.nonces[0], a)),
            },
            // To the previous peer (i-1): we share x_i (nonce 0); it does not hold
            // x_{i+1}, our b; we kept its commitment to x_{i+2} = x_{i-1} (third[0]).
            Peer::Prev => Proof {
                store_round,
                nonce: w.nonces[0],
                relayed: known(w.third[0]),
                third: Some(commitment(
                    store_round,
                    me.next().index() as u8,
                    &w.nonces[1],
                    b,
                )),
            },
        }
    }
}

/// Sends a rejoining peer `to` this server's state: the header, then the component and
/// the registrations in chunks of at most [`REJOIN_CHUNK`] bytes. Queued on the control
/// link ahead of anything this server sends later (the next round's announcement).
pub fn send_state(
    control: &MeshControl,
    to: Peer,
    round: u64,
    last_round: u64,
    proof: Proof,
    component: &[u64],
    registrations: &[([u8; 32], u64)],
) -> Result<(), WireError> {
    let (index, _) = shared_component(control.party(), to);
    control.send(
        to,
        &RejoinState {
            round,
            last_round,
            component: index,
            component_bytes: (component.len() * 8) as u64,
            registrations: registrations.len() as u64,
            store_round: proof.store_round,
            nonce: proof.nonce,
            relayed: proof.relayed,
            third: proof.third,
        },
    )?;
    let mut bytes = Vec::with_capacity(component.len() * 8 + registrations.len() * 40);
    bytes.extend(component.iter().flat_map(|w| w.to_le_bytes()));
    for (key, at) in registrations {
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&at.to_be_bytes());
    }
    for chunk in bytes.chunks(REJOIN_CHUNK) {
        control.send(
            to,
            &RejoinData {
                bytes: chunk.to_vec(),
            },
        )?;
    }
    Ok(())
}

/// The outcome of [`check_commitments`].
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Both components match the commitments this server made when the store was
    /// written; the witness to keep.
    Verified(Witness),
    /// A peer kept no commitment to check one component against (the store was never
    /// written, or the round that wrote it was committed by recovery, without votes):
    /// why, and the witness to keep.
    Unverified(String, Witness),
}

/// Checks each peer's component against the commitment this server itself made to it
/// when the store was written, as the *other* peer (that component's third server) kept
/// it. `both` is `[from next, from prev]`. One lying peer cannot pass: a wrong
/// component fails against the honest peer's relay, and a wrong relay fails the check of
/// an honest component (an error, never a wrong store).
pub fn check_commitments(me: PartyId, both: &[Received; 2]) -> Result<Checked, RejoinError> {
    let [next, prev] = both;
    let sr = next.state.store_round;
    if prev.state.store_round != sr {
        return Err(RejoinError::Disagree(format!(
            "server {} says round {sr} wrote the store, server {} says round {}",
            me.next().index(),
            me.prev().index(),
            prev.state.store_round
        )));
    }
    let witness = Witness {
        nonces: [prev.state.nonce, next.state.nonce],
        third: [
            prev.state.third.unwrap_or_default(),
            next.state.third.unwrap_or_default(),
        ],
    };
    let mut missing = Vec::new();
    // x_i came from the previous peer; the next peer (third of x_i) relays ours.
    // x_{i+1} came from the next peer; the previous peer relays ours.
    for (sent, relay, j) in [(prev, next, me.index()), (next, prev, me.next().index())] {
        let sender = control_peer(me, sent, prev);
        let relayer = control_peer(me, relay, prev);
        match relay.state.relayed {
            None => missing.push(format!(
                "server {relayer} kept no commitment to x_{j} of round {sr}"
            )),
            Some(c) => {
                if commitment(sr, j as u8, &sent.state.nonce, &sent.component) != c {
                    return Err(RejoinError::Disagree(format!(
                        "server {sender}'s component x_{j} does not match the commitment this server made to it in round {sr}, as server {relayer} kept it: one of the two lies (or its database is damaged)"
                    )));
                }
            }
        }
    }
    Ok(if missing.is_empty() {
        Checked::Verified(witness)
    } else {
        Checked::Unverified(missing.join("; "), witness)
    })
}

/// The index of the peer that sent `r` (`prev` is the previous peer's).
fn control_peer(me: PartyId, r: &Received, prev: &Received) -> usize {
    if std::ptr::eq(r, prev) {
        me.prev().index()
    } else {
        me.next().index()
    }
}

/// Reads one peer's state; `component_bytes` is the exact size this server's
/// configuration implies.
pub async fn receive_state(
    control: &mut MeshControl,
    from: Peer,
    component_bytes: usize,
) -> Result<Received, RejoinError> {
    let peer = control.party().peer(from);
    let wire = |error| RejoinError::Wire { peer, error };
    let bad = |reason: String| RejoinError::BadState { peer, reason };
    let frame = control.recv(from).await.map_err(wire)?;
    if frame.ty != MsgType::RejoinState {
        return Err(bad(format!("{:?} where its RejoinState was due", frame.ty)));
    }
    let state: RejoinState = frame.decode().map_err(wire)?;
    let (expected, _) = shared_component(control.party(), from);
    if state.component != expected {
        return Err(bad(format!(
            "component x_{} where x_{expected} (the one both hold) was due",
            state.component
        )));
    }
    if state.component_bytes != component_bytes as u64 {
        return Err(bad(format!(
            "a component of {} bytes; this server's [round] makes it {component_bytes}",
            state.component_bytes
        )));
    }
    if state.registrations > acs_kgc::MAX_REGISTRY_ENTRIES as u64 {
        return Err(bad(format!(
            "{} registrations (at most {})",
            state.registrations,
            acs_kgc::MAX_REGISTRY_ENTRIES
        )));
    }
    if state.last_round < state.round || state.last_round - state.round > MAX_ROUNDS_AHEAD {
        return Err(bad(format!(
            "last announced round {} for committed round {} (at most {MAX_ROUNDS_AHEAD} ahead)",
            state.last_round, state.round
        )));
    }
    // Both bounded above: the total is at most the store plus 16.7M * 40 bytes.
    let total = component_bytes + state.registrations as usize * REGISTRATION_BYTES;
    let mut bytes = Vec::with_capacity(total.min(64 << 20));
    while bytes.len() < total {
        let frame = control.recv(from).await.map_err(wire)?;
        if frame.ty != MsgType::RejoinData {
            return Err(bad(format!(
                "{:?} after {} of {total} announced bytes",
                frame.ty,
                bytes.len()
            )));
        }
        let data: RejoinData = frame.decode().map_err(wire)?;
        if data.bytes.is_empty() || bytes.len() + data.bytes.len() > total {
            return Err(bad(format!(
                "a chunk of {} bytes after {} of {total} announced bytes",
                data.bytes.len(),
                bytes.len()
            )));
        }
        bytes.extend_from_slice(&data.bytes);
    }
    let component = bytes[..component_bytes]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let registrations = bytes[component_bytes..]
        .chunks_exact(REGISTRATION_BYTES)
        .map(|c| {
            (
                c[..32].try_into().expect("32 bytes"),
                u64::from_be_bytes(c[32..].try_into().expect("8 bytes")),
            )
        })
        .collect();
    Ok(Received {
        state,
        component,
        registrations,
    })
}

/// Reads both peers' state (previous peer: `x_i`; next peer: `x_{i+1}`) and checks that
/// they agree with each other and with the round their hellos named (`peers_committed`).
/// Returns `[from next, from prev]`.
pub async fn receive_both(
    control: &mut MeshControl,
    component_bytes: usize,
    peers_committed: u64,
    timeout: Duration,
) -> Result<[Received; 2], RejoinError> {
    let both = tokio::time::timeout(timeout, async {
        let next = receive_state(control, Peer::Next, component_bytes).await?;
        let prev = receive_state(control, Peer::Prev, component_bytes).await?;
        Ok::<_, RejoinError>([next, prev])
    })
    .await
    .map_err(|_| RejoinError::Timeout(timeout))??;
    let [n, p] = &both;
    if n.state.round != p.state.round {
        return Err(RejoinError::Disagree(format!(
            "server {} sent the store of round {}, server {} of round {}",
            control.party().next(),
            n.state.round,
            control.party().prev(),
            p.state.round
        )));
    }
    if n.state.round != peers_committed {
        return Err(RejoinError::Disagree(format!(
            "both sent round {}, but their hellos named round {peers_committed}",
            n.state.round
        )));
    }
    Ok(both)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(committed: Option<u64>, prepared: Option<u64>) -> RoundStatus {
        RoundStatus {
            committed,
            prepared,
        }
    }

    #[test]
    fn behind_names_exactly_the_servers_that_cannot_recover_alone() {
        // Fresh deployment: nobody.
        assert!(behind([st(None, None); 3]).is_empty());
        // A crash between prepare and commit: recovery commits, no rejoin.
        assert!(behind([
            st(Some(9), Some(10)),
            st(Some(10), None),
            st(Some(10), None)
        ])
        .is_empty());
        // A deleted database.
        assert_eq!(
            behind([st(Some(10), None), st(None, None), st(Some(10), None)]),
            vec![1]
        );
        // A restored backup, even one with a prepared round.
        assert_eq!(
            behind([st(Some(10), None), st(Some(10), None), st(Some(2), Some(3))]),
            vec![2]
        );
        // Two behind.
        assert_eq!(
            behind([st(Some(10), None), st(None, None), st(Some(4), None)]),
            vec![1, 2]
        );
    }

    #[test]
    fn each_peer_sends_the_component_both_hold() {
        for i in 0..3 {
            let me = PartyId::new(i).unwrap();
            // Party i holds x_i (a) and x_{i+1} (b); the next holds x_{i+1}, x_{i+2}.
            assert_eq!(
                shared_component(me, Peer::Next),
                (((i + 1) % 3) as u8, true)
            );
            assert_eq!(shared_component(me, Peer::Prev), (i as u8, false));
            // What the rejoiner expects from its previous peer is what that peer, sending
            // to its next, sends.
            assert_eq!(
                shared_component(me.prev(), Peer::Next).0,
                shared_component(me, Peer::Prev).0
            );
        }
    }

    /// Three holders' view of one store written in round 5: every server's witness and
    /// components, as the commit votes leave them; server 1 rejoins.
    #[test]
    fn a_component_that_differs_from_the_rejoiners_own_commitment_is_refused() {
        let x: Vec<Vec<u64>> = (0..3u64).map(|j| vec![j * 10 + 1, j * 10 + 2]).collect();
        let secret = |a: usize, b: usize| [(a.min(b) * 3 + a.max(b)) as u8; 32];
        let nonce = |j: usize| commitment_nonce(&secret((j + 2) % 3, j), 5); // holders j-1, j
        let c = |j: usize| commitment(5, j as u8, &nonce(j), &x[j]);
        let witness = |i: usize| Witness {
            nonces: [nonce(i), nonce((i + 1) % 3)],
            third: [c((i + 2) % 3), c((i + 2) % 3)],
        };
        let p = |i: usize| PartyId::new(i).unwrap();
        let received = |from: usize, to: Peer| {
            let proof = Proof::of(
                p(from),
                to,
                5,
                Some(&witness(from)),
                &x[from],
                &x[(from + 1) % 3],
            );
            let (j, second) = shared_component(p(from), to);
            Received {
                state: RejoinState {
                    round: 9,
                    last_round: 9,
                    component: j,
                    component_bytes: 16,
                    registrations: 0,
                    store_round: proof.store_round,
                    nonce: proof.nonce,
                    relayed: proof.relayed,
                    third: proof.third,
                },
                component: if second {
                    x[(from + 1) % 3].clone()
                } else {
                    x[from].clone()
                },
                registrations: vec![],
            }
        };
        // Server 1: x_1 from server 0 (its next link), x_2 from server 2 (its prev link).
        let both = [received(2, Peer::Prev), received(0, Peer::Next)];
        assert_eq!(both[1].component, x[1]);
        assert_eq!(both[0].component, x[2]);
        assert_eq!(
            check_commitments(p(1), &both).unwrap(),
            Checked::Verified(witness(1))
        );
        // Server 0 lies about x_1: server 2's relay of server 1's commitment catches it.
        let mut lie = [received(2, Peer::Prev), received(0, Peer::Next)];
        lie[1].component[0] ^= 1;
        let e = check_commitments(p(1), &lie).unwrap_err().to_string();
        assert!(e.contains("server 0's component x_1 does not match"), "{e}");
        assert!(e.contains("as server 2 kept it"), "{e}");
        // Server 2 lies in its relay instead: the honest component fails, nothing is taken.
        let mut lie = [received(2, Peer::Prev), received(0, Peer::Next)];
        lie[0].state.relayed = Some([7; 32]);
        assert!(check_commitments(p(1), &lie).is_err());
        // A peer that kept no commitment: taken, but said so.
        let mut none = [received(2, Peer::Prev), received(0, Peer::Next)];
        none[0].state.relayed = None;
        assert!(matches!(
            check_commitments(p(1), &none).unwrap(),
            Checked::Unverified(why, _) if why.contains("server 2 kept no commitment to x_1")
        ));
    }

    mod over_tls {
        use super::super::*;
        use crate::certs;
        use crate::listener::Limits;
        use crate::mpc::{establish, MeshConfig};
        use crate::tls::{self, Identity, Role};
        use tokio::net::TcpListener;

        /// Three real peers over mutual TLS; their control halves `[P0, P1, P2]`.
        async fn mesh() -> Vec<MeshControl> {
            let pki = certs::generate(&certs::deployment_roles(3, 1)).unwrap();
            let mut listeners = Vec::new();
            let mut addrs = Vec::new();
            for _ in 0..3 {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addrs.push(l.local_addr().unwrap());
                listeners.push(l);
            }
            let configs: Vec<MeshConfig> = (0..3)
                .map(|i| {
                    let c = pki.leaf(Role::Exchange(i as u8)).unwrap();
                    let identity = Identity::from_pem(&c.cert_pem, &c.key_pem).unwrap();
                    MeshConfig {
                        party: PartyId::new(i).unwrap(),
                        deployment: "test".into(),
                        next_addr: addrs[(i + 1) % 3],
                        descriptor: crate::testkit::descriptor(&identity),
                        identity,
                        roots: tls::roots_from_pem(&pki.ca.cert_pem).unwrap(),
                        establish_timeout: Duration::from_secs(10),
                        limits: Limits::default(),
                        status: RoundStatus::default(),
                        config_digest: [0; 32],
                    }
                })
                .collect();
            let mut it = listeners.into_iter();
            let (l0, l1, l2) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            let (m0, m1, m2) = tokio::join!(
                establish(&configs[0], l0),
                establish(&configs[1], l1),
                establish(&configs[2], l2)
            );
            [m0, m1, m2]
                .into_iter()
                .map(|m| m.unwrap().control)
                .collect()
        }

        const WORDS: usize = 300_000; // 2.4 MB: three chunks.

        fn component(j: u64) -> Vec<u64> {
            (0..WORDS as u64).map(|w| w * 3 + j).collect()
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_rejoining_server_gets_exactly_the_components_it_holds() {
            let mut m = mesh().await;
            let key = |b: u8| {
                acs_kgc::UserIdentity::from_seed([b; 32])
                    .unwrap()
                    .public_key()
                    .to_bytes()
            };
            // Server 1 rejoins: server 0 sends x_1, server 2 sends x_2.
            send_state(
                &m[0],
                Peer::Next,
                7,
                9,
                Proof::default(),
                &component(1),
                &[(key(1), 5)],
            )
            .unwrap();
            send_state(
                &m[2],
                Peer::Prev,
                7,
                8,
                Proof::default(),
                &component(2),
                &[(key(2), 6)],
            )
            .unwrap();
            let [next, prev] = receive_both(&mut m[1], WORDS * 8, 7, REJOIN_TIMEOUT)
                .await
                .unwrap();
            assert_eq!(prev.state.component, 1);
            assert_eq!(prev.component, component(1));
            assert_eq!(next.state.component, 2);
            assert_eq!(next.component, component(2));
            assert_eq!(prev.registrations, vec![(key(1), 5)]);
            assert_eq!(next.registrations, vec![(key(2), 6)]);
            assert_eq!((prev.state.last_round, next.state.last_round), (9, 8));
        }

        /// A well-formed state for round 7, which each case below spoils in one field.
        fn honest_state() -> RejoinState {
            RejoinState {
                round: 7,
                last_round: 7,
                component: 1,
                component_bytes: (WORDS * 8) as u64,
                registrations: 0,
                store_round: 0,
                nonce: [0; 32],
                relayed: None,
                third: None,
            }
        }

        /// What a faulty or lying peer sends, and the error it gets.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bad_peer_state_is_refused_with_a_reason_naming_the_peer() {
            type Sender = Box<dyn Fn(&MeshControl)>;
            let cases: Vec<(&str, Sender)> = vec![
                (
                    "component x_0 where x_1",
                    Box::new(|c| {
                        c.send(
                            Peer::Next,
                            &RejoinState {
                                component: 0,
                                component_bytes: (WORDS * 8) as u64,
                                registrations: 0,
                                ..honest_state()
                            },
                        )
                        .unwrap()
                    }),
                ),
                (
                    "a component of 16 bytes",
                    Box::new(|c| {
                        send_state(c, Peer::Next, 7, 7, Proof::default(), &[1, 2], &[]).unwrap()
                    }),
                ),
                (
                    "registrations (at most",
                    Box::new(|c| {
                        c.send(
                            Peer::Next,
                            &RejoinState {
                                component: 1,
                                component_bytes: (WORDS * 8) as u64,
                                registrations: u64::MAX,
                                ..honest_state()
                            },
                        )
                        .unwrap()
                    }),
                ),
                (
                    "a chunk of 9 bytes after 0 of 8 announced bytes",
                    Box::new(|c| {
                        c.send(
                            Peer::Next,
                            &RejoinState {
                                component: 1,
                                component_bytes: 8,
                                registrations: 0,
                                ..honest_state()
                            },
                        )
                        .unwrap();
                        c.send(Peer::Next, &RejoinData { bytes: vec![0; 9] })
                            .unwrap();
                    }),
                ),
                (
                    "OnlineSetHash where its RejoinState was due",
                    Box::new(|c| {
                        c.send(
                            Peer::Next,
                            &crate::wire::OnlineSetHash {
                                round: 1,
                                count: 0,
                                hash: [0; 32],
                            },
                        )
                        .unwrap()
                    }),
                ),
            ];
            for (want, send) in cases {
                let mut m = mesh().await;
                send(&m[0]);
                let bytes = if want.contains("chunk of 9") {
                    8
                } else {
                    WORDS * 8
                };
                let e = receive_state(&mut m[1], Peer::Prev, bytes)
                    .await
                    .unwrap_err();
                let text = e.to_string();
                assert!(
                    matches!(e, RejoinError::BadState { peer, .. } if peer.index() == 0),
                    "{text}"
                );
                assert!(text.contains(want), "{text} (wanted {want:?})");
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn peers_that_disagree_on_the_round_are_refused() {
            let mut m = mesh().await;
            send_state(&m[0], Peer::Next, 7, 7, Proof::default(), &[0; 4], &[]).unwrap();
            send_state(&m[2], Peer::Prev, 6, 7, Proof::default(), &[0; 4], &[]).unwrap();
            let e = receive_both(&mut m[1], 32, 7, REJOIN_TIMEOUT)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("round 6"), "{e}");
            // And a state that never comes times out.
            let mut m = mesh().await;
            let e = receive_both(&mut m[1], 32, 7, Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(matches!(e, RejoinError::Timeout(_)), "{e}");
        }
    }
}
