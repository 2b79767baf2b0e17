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
//! What it does not check: that a peer sent the component it really holds. A lying peer
//! can hand over a component that differs from its own copy; see `docs/security.md`
//! ("Rejoin") for what that allows and for the commitment that will catch it.

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

/// Sends a rejoining peer `to` this server's state: the header, then the component and
/// the registrations in chunks of at most [`REJOIN_CHUNK`] bytes. Queued on the control
/// link ahead of anything this server sends later (the next round's announcement).
pub fn send_state(
    control: &MeshControl,
    to: Peer,
    round: u64,
    last_round: u64,
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
            send_state(&m[0], Peer::Next, 7, 9, &component(1), &[(key(1), 5)]).unwrap();
            send_state(&m[2], Peer::Prev, 7, 8, &component(2), &[(key(2), 6)]).unwrap();
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
                                round: 7,
                                last_round: 7,
                                component: 0,
                                component_bytes: (WORDS * 8) as u64,
                                registrations: 0,
                            },
                        )
                        .unwrap()
                    }),
                ),
                (
                    "a component of 16 bytes",
                    Box::new(|c| send_state(c, Peer::Next, 7, 7, &[1, 2], &[]).unwrap()),
                ),
                (
                    "registrations (at most",
                    Box::new(|c| {
                        c.send(
                            Peer::Next,
                            &RejoinState {
                                round: 7,
                                last_round: 7,
                                component: 1,
                                component_bytes: (WORDS * 8) as u64,
                                registrations: u64::MAX,
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
                                round: 7,
                                last_round: 7,
                                component: 1,
                                component_bytes: 8,
                                registrations: 0,
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
            send_state(&m[0], Peer::Next, 7, 7, &[0; 4], &[]).unwrap();
            send_state(&m[2], Peer::Prev, 6, 7, &[0; 4], &[]).unwrap();
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
