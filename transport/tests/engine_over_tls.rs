//! The real engine over the real transport: three parties connected by mutual TLS on
//! 127.0.0.1 set up an engine `Party` each on a blocking thread, run the online-set
//! consistency check (with one server having heard one user fewer) and two consecutive
//! exchange rounds, and the reconstructed outputs equal the plaintext reference round.

use acs_engine::round::consistency::KeyNotary;
use acs_engine::round::ideal::{ideal_round, StoredItem};
use acs_engine::round::input::{PartyInputs, ServerInput};
use acs_engine::round::mpc::{exchange_round, SharedStore};
use acs_engine::round::{Block, Output, Role, RoundConfig};
use acs_engine::{Party, PartyId};
use acs_transport::certs;
use acs_transport::listener::Limits;
use acs_transport::mpc::{establish, MeshConfig};
use acs_transport::tls::{self, Identity, Role as TlsRole};
use acs_transport::wire::RoundStatus;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::net::TcpListener;

const CFG: RoundConfig = RoundConfig {
    payload_words: 4,
    store_capacity: 8,
    expiry_rounds: 3,
    receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_rounds_over_mutual_tls_match_the_ideal_round() {
    let pki = certs::generate(&certs::deployment_roles(3, 0)).unwrap();
    let roots = tls::roots_from_pem(&pki.ca.cert_pem).unwrap();
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        listeners.push(l);
    }
    let cfgs: Vec<MeshConfig> = (0..3)
        .map(|i| {
            let c = pki.leaf(TlsRole::Exchange(i as u8)).unwrap();
            let identity = Identity::from_pem(&c.cert_pem, &c.key_pem).unwrap();
            let kgc = acs_kgc::Kgc::new(acs_kgc::MasterSecret::generate(&mut rand::rngs::OsRng));
            MeshConfig {
                descriptor: acs_transport::mpc::descriptor_for(&kgc, &identity),
                party: PartyId::new(i).unwrap(),
                deployment: "engine-test".into(),
                next_addr: addrs[(i + 1) % 3],
                identity,
                roots: roots.clone(),
                establish_timeout: Duration::from_secs(10),
                limits: Limits::default(),
                status: RoundStatus::default(),
                config_digest: [0; 32],
            }
        })
        .collect();
    let mut ls = listeners.into_iter();
    let (a, b, c) = tokio::join!(
        establish(&cfgs[0], ls.next().unwrap()),
        establish(&cfgs[1], ls.next().unwrap()),
        establish(&cfgs[2], ls.next().unwrap())
    );

    // The workload, in the clear (what the users would hold).
    let mut rng = StdRng::seed_from_u64(77);
    let users: Vec<u64> = (1..=12).map(|i| i * 1000 + 7).collect();
    let rounds: Vec<Vec<(u64, Block)>> = (0..2)
        .map(|_| {
            users
                .iter()
                .map(|&u| {
                    let block = match rng.gen_range(0..3) {
                        0 => Block::cover(&CFG),
                        k => Block {
                            role: if k == 1 { Role::Send } else { Role::Request },
                            dst: users[rng.gen_range(0..users.len())],
                            payload: (0..CFG.payload_words).map(|_| rng.gen()).collect(),
                        },
                    };
                    (u, block)
                })
                .collect()
        })
        .collect();
    // What each server receives, per round, per user: its XOR share and a hash.
    let shares: Vec<Vec<[ServerInput; 3]>> = rounds
        .iter()
        .enumerate()
        .map(|(r, users)| {
            users
                .iter()
                .map(|(u, b)| b.share_checked(&CFG, r as u64 + 1, *u, &mut rng))
                .collect()
        })
        .collect();

    let mut tasks = Vec::new();
    let notaries = std::sync::Arc::new(KeyNotary::three_random([5; 32]));
    for (i, mesh) in [a.unwrap(), b.unwrap(), c.unwrap()].into_iter().enumerate() {
        let users = users.clone();
        let shares = shares.clone();
        let notaries = notaries.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let control = mesh.control;
            let mut party = Party::setup(PartyId::new(i).unwrap(), Box::new(mesh.channel)).unwrap();
            let mut store = SharedStore::empty(&CFG);
            let mut outs = Vec::new();
            for (r, round_shares) in shares.iter().enumerate() {
                let round = r as u32 + 1;
                // Server 2 did not hear from the last user in round 1.
                let heard: Vec<u64> = if i == 2 && round == 1 {
                    users[..users.len() - 1].to_vec()
                } else {
                    users.clone()
                };
                let agreed = party.agree_online(round, &heard, &notaries[i]).unwrap();
                let mut inputs = PartyInputs::with_capacity(&CFG, agreed.online.len());
                for (_, s) in users
                    .iter()
                    .zip(round_shares)
                    .filter(|(u, _)| agreed.online.binary_search(u).is_ok())
                {
                    inputs.push(&s[i]);
                }
                let result = exchange_round(
                    &mut party,
                    &CFG,
                    round,
                    &agreed.online,
                    inputs,
                    &store,
                    &notaries[i],
                )
                .unwrap();
                assert_eq!(result.online, agreed.online);
                store = result.store;
                outs.push((
                    agreed.online,
                    result
                        .outputs
                        .iter()
                        .map(|o| o.own.to_vec())
                        .collect::<Vec<_>>(),
                ));
            }
            drop(control);
            (outs, party.stats())
        }));
    }
    let mut per_party = Vec::new();
    for t in tasks {
        per_party.push(t.await.unwrap());
    }

    let mut ideal_store: Vec<StoredItem> = Vec::new();
    for (r, blocks) in rounds.iter().enumerate() {
        let round = r as u32 + 1;
        let online = &per_party[0].0[r].0;
        assert_eq!(online, &per_party[1].0[r].0);
        assert_eq!(online, &per_party[2].0[r].0);
        // Round 1 runs over the intersection: the last user is told to retry.
        assert_eq!(
            online.len(),
            if round == 1 {
                users.len() - 1
            } else {
                users.len()
            }
        );
        let inputs: Vec<(u64, Block)> = blocks
            .iter()
            .filter(|(u, _)| online.binary_search(u).is_ok())
            .cloned()
            .collect();
        let (want, next_store) = ideal_round(&CFG, round, &inputs, &ideal_store);
        for (k, want_out) in want.iter().enumerate() {
            let got = Output::reconstruct(
                [
                    &per_party[0].0[r].1[k],
                    &per_party[1].0[r].1[k],
                    &per_party[2].0[r].1[k],
                ],
                &CFG,
            )
            .unwrap();
            assert_eq!(&got, want_out, "round {round}, user {}", online[k]);
        }
        ideal_store = next_store;
    }
    // The rounds really went over the links: tens of communication rounds each.
    for (_, stats) in &per_party {
        assert!(stats.rounds > 10 && stats.bytes_sent > 0, "{stats:?}");
    }
}
