//! The three-party round against the ideal round, over many random workloads and
//! consecutive rounds (the store carries over).

use acs_engine::round::consistency::{
    KeyNotary, Notary, SignedStatement, Statement, StatementKind,
};
use acs_engine::round::ideal::{ideal_round, stored_items, StoredItem};
use acs_engine::round::input::{InputCheck, PartyInputs};
use acs_engine::round::mpc::{exchange_round, SharedStore};
use acs_engine::round::outputs::reconstruct_checked;
use acs_engine::round::{Block, Fate, Output, Receipt, Role, RoundConfig, Status};
use acs_engine::share::reconstruct;
use acs_engine::testing::run_three;
use acs_engine::{EngineError, PartyId, Peer, SecurityMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

/// What a workload generator decides for one round.
struct Plan {
    online: Vec<u64>,
    blocks: Vec<Block>,
}

/// One round as it ran: who was online, what they sent, what they got (the ideal round's
/// outputs, which the three-party round's were checked to equal).
struct Ran {
    online: Vec<u64>,
    blocks: Vec<Block>,
    outputs: Vec<Output>,
}

impl Ran {
    /// The output of `who`, who was online.
    fn output_of(&self, who: u64) -> &Output {
        &self.outputs[self.online.iter().position(|&p| p == who).expect("online")]
    }
}

/// A small round for directed tests of one address's queue.
const QUEUE_CFG: RoundConfig = RoundConfig {
    payload_words: 1,
    store_capacity: 8,
    expiry_rounds: 10,
    receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
};

/// A message to `dst` with a random payload.
fn send_to(dst: u64, rng: &mut StdRng, cfg: &RoundConfig) -> Block {
    Block {
        role: Role::Send,
        dst,
        payload: payload(rng, cfg),
    }
}

/// Runs `rounds` consecutive rounds of `plan(round, rng)` through both the ideal and the
/// three-party round, checking every output and the store after every round.
fn run_rounds(
    cfg: RoundConfig,
    rounds: u32,
    seed: u64,
    plan: impl Fn(u32, &mut StdRng) -> Plan,
) -> Vec<Ran> {
    run_rounds_in(SecurityMode::SemiHonest, cfg, rounds, seed, plan)
}

/// [`run_rounds`] with the parties in `mode` (in malicious mode each party verifies
/// everything pending before it releases its outputs).
fn run_rounds_in(
    mode: SecurityMode,
    cfg: RoundConfig,
    rounds: u32,
    seed: u64,
    plan: impl Fn(u32, &mut StdRng) -> Plan,
) -> Vec<Ran> {
    let mut history = Vec::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ideal_store: Vec<StoredItem> = Vec::new();
    let mut stores: [SharedStore; 3] = std::array::from_fn(|_| SharedStore::empty(&cfg));
    for round in 1..=rounds {
        let Plan { online, blocks } = plan(round, &mut rng);
        assert_eq!(online.len(), blocks.len());
        let inputs: Vec<(u64, Block)> =
            online.iter().copied().zip(blocks.iter().cloned()).collect();
        let (want, want_store) = ideal_round(&cfg, round, &inputs, &ideal_store);

        let per_party = Arc::new(PartyInputs::share_all(
            &cfg,
            round as u64,
            &online,
            &blocks,
            &mut rng,
        ));
        let online_arc = Arc::new(online.clone());
        let stores_arc = Arc::new(stores.clone());
        let n = notaries();
        let results = run_three(move |p| {
            p.set_security(mode)?;
            let i = p.id().index();
            let r = exchange_round(
                p,
                &cfg,
                round,
                &online_arc,
                per_party[i].clone(),
                &stores_arc[i],
                &n[i],
            )?;
            p.verify_pending()?;
            Ok(r)
        })
        .map(|r| r.expect("party failed"));
        for r in &results {
            assert_eq!(r.online, online, "honest users removed");
            assert_eq!(r.input_check, InputCheck::default());
        }

        for (u, want_out) in want.iter().enumerate() {
            let got = reconstruct_checked(
                round,
                online[u],
                [
                    &results[0].outputs.share(u),
                    &results[1].outputs.share(u),
                    &results[2].outputs.share(u),
                ],
                &cfg,
            )
            .expect("output decodes and checks");
            assert_eq!(got.liar, None, "honest servers named as liars");
            assert_eq!(
                &got.output, want_out,
                "round {round}, user {} (seed {seed})",
                online[u]
            );
            // Each server's own component alone, as before, gives the same output.
            let plain = Output::reconstruct(
                [
                    results[0].outputs.get(u).own,
                    results[1].outputs.get(u).own,
                    results[2].outputs.get(u).own,
                ],
                &cfg,
            )
            .expect("output decodes");
            assert_eq!(&plain, want_out);
        }
        let store_words = reconstruct([
            &results[0].store.rows,
            &results[1].store.rows,
            &results[2].store.rows,
        ]);
        let got_store = stored_items(&store_words, &cfg);
        assert_eq!(
            got_store, want_store,
            "store after round {round} (seed {seed})"
        );
        // The real records fill the front of the store.
        let valid: Vec<bool> = store_words
            .chunks(cfg.store_words())
            .map(|r| r[0] & 1 == 1)
            .collect();
        assert!(
            valid.windows(2).all(|w| w[0] || !w[1]),
            "store not compacted"
        );
        ideal_store = want_store;
        stores = std::array::from_fn(|i| results[i].store.clone());
        history.push(Ran {
            online,
            blocks,
            outputs: want,
        });
    }
    history
}

fn payload(rng: &mut StdRng, cfg: &RoundConfig) -> Vec<u64> {
    (0..cfg.payload_words).map(|_| rng.gen()).collect()
}

fn random_block(rng: &mut StdRng, cfg: &RoundConfig, users: &[u64]) -> Block {
    match rng.gen_range(0..3) {
        0 => Block::cover(cfg),
        k => Block {
            role: if k == 1 { Role::Send } else { Role::Request },
            dst: users[rng.gen_range(0..users.len())],
            payload: payload(rng, cfg),
        },
    }
}

fn population(n: usize, seed: u64) -> Vec<u64> {
    acs_engine::testing::random_pseudonyms(&mut StdRng::seed_from_u64(seed), n)
}

fn random_online(rng: &mut StdRng, users: &[u64], fraction: f64) -> Vec<u64> {
    users
        .iter()
        .copied()
        .filter(|_| rng.gen_bool(fraction))
        .collect()
}

/// A round where each of `users` is online with probability `fraction` and sends a
/// random block.
fn random_plan(rng: &mut StdRng, cfg: &RoundConfig, users: &[u64], fraction: f64) -> Plan {
    let online = random_online(rng, users, fraction);
    let blocks = online
        .iter()
        .map(|_| random_block(rng, cfg, users))
        .collect();
    Plan { online, blocks }
}

#[test]
fn random_workloads_with_offline_users_match_the_ideal_round() {
    let cfg = RoundConfig {
        payload_words: 4,
        store_capacity: 24,
        expiry_rounds: 3,
        // Short, so that receipts also expire within the six rounds.
        receipt_rounds: 2,
    };
    for seed in 0..12 {
        let users = population(40, seed);
        run_rounds(cfg, 6, seed, |_, rng| random_plan(rng, &cfg, &users, 0.6));
    }
}

#[test]
fn malicious_mode_rounds_match_the_ideal_round() {
    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 16,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    for seed in 0..3 {
        let users = population(30, 100 + seed);
        run_rounds_in(SecurityMode::Malicious, cfg, 3, seed, |_, rng| {
            random_plan(rng, &cfg, &users, 0.7)
        });
    }
}

#[test]
fn misaddressed_items_are_reported_or_expire_and_never_delivered() {
    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 16,
        expiry_rounds: 4,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let users = population(16, 5);
    // Half the targets are a user's pseudonym with other high bits: same address, a
    // pseudonym nobody registered. Some users are offline each round, so some of those
    // are stored first and met by their address's user later.
    for seed in 0..4 {
        let history = run_rounds(cfg, 6, 21 + seed, |_, rng| {
            let online = random_online(rng, &users, 0.6);
            let blocks = online
                .iter()
                .map(|_| {
                    let to = users[rng.gen_range(0..users.len())];
                    Block {
                        role: Role::Send,
                        dst: if rng.gen_bool(0.5) {
                            to
                        } else {
                            to ^ (rng.gen_range(1..u64::from(u32::MAX)) << 32)
                        },
                        payload: payload(rng, &cfg),
                    }
                })
                .collect();
            Plan { online, blocks }
        });
        let outs = || history.iter().flat_map(|r| &r.outputs);
        let misaddressed = outs().filter(|o| o.status == Status::Misaddressed).count();
        let delivered = outs().filter(|o| o.incoming.is_some()).count();
        // Only a block to a pseudonym nobody registered is ever reported misaddressed.
        for r in &history {
            for (o, b) in r.outputs.iter().zip(&r.blocks) {
                if o.status == Status::Misaddressed {
                    assert!(!users.contains(&b.dst), "seed {seed}: {:x}", b.dst);
                }
            }
        }
        let expired = outs()
            .filter(|o| {
                matches!(
                    o.receipt,
                    Some(Receipt {
                        fate: Fate::Expired,
                        ..
                    })
                )
            })
            .count();
        assert!(
            misaddressed > 0 && delivered > 0,
            "seed {seed}: {misaddressed} {delivered}"
        );
        // Every delivery went to its exact target.
        for r in &history {
            for (u, o) in r.outputs.iter().enumerate() {
                if let Some(inc) = &o.incoming {
                    let sent = r
                        .online
                        .iter()
                        .zip(&r.blocks)
                        .any(|(src, b)| *src == inc.from && b.dst == r.online[u]);
                    let earlier = history.iter().any(|h| {
                        h.online
                            .iter()
                            .zip(&h.blocks)
                            .any(|(src, b)| *src == inc.from && b.dst == r.online[u])
                    });
                    assert!(
                        sent || earlier,
                        "a delivery to {:x} not sent to it",
                        r.online[u]
                    );
                }
            }
        }
        let _ = expired;
    }
}

#[test]
fn a_fresh_misaddressed_item_is_reported_to_its_sender() {
    let cfg = QUEUE_CFG;
    let users = population(3, 29);
    let (a, b, c) = (users[0], users[1], users[2]);
    // b writes to a pseudonym nobody registered with a's address while a is online; c
    // writes to a itself, and its item queues behind the stray one for a round.
    let stray = a ^ (0x3c3c << 32);
    let history = run_rounds(cfg, 2, 5, move |round, rng| Plan {
        online: vec![a, b, c],
        blocks: if round == 1 {
            vec![
                Block::cover(&cfg),
                send_to(stray, rng, &cfg),
                send_to(a, rng, &cfg),
            ]
        } else {
            vec![Block::cover(&cfg); 3]
        },
    });
    let out = |round: usize, who: u64| history[round - 1].output_of(who);
    assert_eq!(out(1, b).status, Status::Misaddressed);
    assert_eq!(
        out(1, a).incoming,
        None,
        "the stray item is never delivered"
    );
    // c's item was not the first of a's queue: stored, then delivered next round.
    assert_eq!(out(1, c).status, Status::Stored);
    assert_eq!(out(2, a).incoming.as_ref().map(|i| i.from), Some(c));
}

#[test]
fn a_stored_misaddressed_item_expires_when_its_address_comes_online() {
    let cfg = QUEUE_CFG;
    // b < c, so b's item is stored before c's in round 1.
    let users = population(3, 17);
    let (a, b, c) = (users[2], users[0], users[1]);
    let stray = a ^ (0x5a5a << 32);
    let history = run_rounds(cfg, 4, 3, move |round, rng| match round {
        1 => Plan {
            online: vec![b, c],
            blocks: vec![send_to(stray, rng, &cfg), send_to(a, rng, &cfg)],
        },
        _ => Plan {
            online: vec![b, c, a],
            blocks: vec![Block::cover(&cfg); 3],
        },
    });
    let out = |round: usize, who: u64| history[round - 1].output_of(who);
    // Round 2: a meets the stray item first; it expires (a gets nothing), c's stays.
    assert_eq!(out(2, a).incoming, None);
    // Round 3: a gets c's message; b learns its stray one expired.
    assert_eq!(out(3, a).incoming.as_ref().map(|i| i.from), Some(c));
    assert!(matches!(
        out(3, b).receipt,
        Some(Receipt {
            fate: Fate::Expired,
            sent: 1,
            ..
        })
    ));
}

#[test]
fn two_online_users_with_one_address_are_refused() {
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 4,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let mut online = population(6, 8);
    online[5] = acs_engine::round::address(online[2]) | (online[5] >> 32 << 32);
    online.sort_unstable();
    let mut rng = StdRng::seed_from_u64(3);
    let blocks: Vec<Block> = online.iter().map(|_| Block::cover(&cfg)).collect();
    let per_party = Arc::new(PartyInputs::share_all(&cfg, 1, &online, &blocks, &mut rng));
    let online = Arc::new(online);
    let n = notaries();
    let results = run_three(move |p| {
        let i = p.id().index();
        let store = SharedStore::empty(&cfg);
        exchange_round(p, &cfg, 1, &online, per_party[i].clone(), &store, &n[i])
    });
    for r in results {
        assert!(
            matches!(&r, Err(EngineError::InvalidInput(m)) if m.contains("address")),
            "{:?}",
            r.err()
        );
    }
}

#[test]
fn one_and_two_users_and_nobody_online() {
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 3,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let users = population(2, 99);
    run_rounds(cfg, 8, 7, |round, rng| {
        let online: Vec<u64> = match round % 4 {
            0 => vec![],
            1 => vec![users[0]],
            2 => users.clone(),
            _ => vec![users[1]],
        };
        let blocks = online
            .iter()
            .map(|_| random_block(rng, &cfg, &users))
            .collect();
        Plan { online, blocks }
    });
}

#[test]
fn everyone_sends_to_one_receiver_one_per_round_oldest_first() {
    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 64,
        expiry_rounds: 10,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let users = population(30, 3);
    let target = users[0];
    run_rounds(cfg, 5, 11, |_, rng| {
        let online = users.clone();
        let blocks = online
            .iter()
            .map(|_| Block {
                role: Role::Send,
                dst: target,
                payload: payload(rng, &cfg),
            })
            .collect();
        Plan { online, blocks }
    });
}

#[test]
fn store_overflow_drops_the_newest_and_expiry_removes_the_oldest() {
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 5,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let users = population(20, 4);
    // Half the population never comes online; everyone online writes to them.
    let (on, off) = users.split_at(10);
    let (on, off) = (on.to_vec(), off.to_vec());
    run_rounds(cfg, 6, 12, move |round, rng| {
        let online = if round == 5 {
            users.clone()
        } else {
            on.clone()
        };
        let blocks = online
            .iter()
            .map(|_| Block {
                role: Role::Send,
                dst: off[rng.gen_range(0..off.len())],
                payload: payload(rng, &cfg),
            })
            .collect();
        Plan { online, blocks }
    });
}

#[test]
fn all_covers_and_no_store() {
    let cfg = RoundConfig {
        payload_words: 3,
        store_capacity: 0,
        expiry_rounds: 1,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let users = population(15, 5);
    run_rounds(cfg, 3, 13, |round, rng| {
        let online = users.clone();
        let blocks = online
            .iter()
            .map(|_| {
                if round == 1 {
                    Block::cover(&cfg)
                } else {
                    random_block(rng, &cfg, &users)
                }
            })
            .collect();
        Plan { online, blocks }
    });
}

#[test]
fn statuses_cover_every_case() {
    // A fixed scenario with every status: cover, delivered, stored (offline target),
    // stored (busy target), dropped (store full), and a request.
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 1,
        expiry_rounds: 5,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let (a, b, c, d, off) = (10u64, 20, 30, 40, 99);
    let blocks = vec![
        (
            a,
            Block {
                role: Role::Send,
                dst: b,
                payload: vec![1],
            },
        ),
        (
            b,
            Block {
                role: Role::Request,
                dst: a,
                payload: vec![2],
            },
        ),
        (
            c,
            Block {
                role: Role::Send,
                dst: b,
                payload: vec![3],
            },
        ),
        (
            d,
            Block {
                role: Role::Send,
                dst: off,
                payload: vec![4],
            },
        ),
    ];
    let (out, store) = ideal_round(&cfg, 1, &blocks, &[]);
    assert_eq!(out[0].status, Status::Delivered);
    assert_eq!(out[1].status, Status::Delivered);
    assert_eq!(out[1].incoming.as_ref().map(|i| i.from), Some(a));
    assert_eq!(
        out[0].incoming.as_ref().map(|i| i.role),
        Some(Role::Request)
    );
    assert_eq!(out[2].status, Status::Stored, "b was busy");
    assert_eq!(out[3].status, Status::Dropped, "store of one already full");
    assert_eq!(store.len(), 1);
    run_rounds(cfg, 1, 14, move |_, _| Plan {
        online: blocks.iter().map(|(s, _)| *s).collect(),
        blocks: blocks.iter().map(|(_, b)| b.clone()).collect(),
    });
}

#[test]
fn hundreds_of_random_workloads_up_to_a_thousand_users() {
    // 32-byte payloads; sizes spread up to ~1000; two rounds each so stored items and
    // expiry take part.
    let cfg = RoundConfig {
        payload_words: 4,
        store_capacity: 40,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let mut sizes = StdRng::seed_from_u64(2024);
    for seed in 0..120u64 {
        let n = match seed % 4 {
            0 => sizes.gen_range(1..10),
            1 => sizes.gen_range(10..100),
            2 => sizes.gen_range(100..300),
            _ => sizes.gen_range(300..1000),
        };
        let users = population(n + n / 2, 1000 + seed);
        run_rounds(cfg, 2, 5000 + seed, |_, rng| {
            random_plan(rng, &cfg, &users, 0.7)
        });
    }
}

fn notaries() -> Arc<[KeyNotary; 3]> {
    Arc::new(KeyNotary::three_random([3; 32]))
}

#[test]
fn consistency_check_agrees_or_falls_back_to_the_intersection() {
    let n = notaries();
    let sets: [Vec<u64>; 3] = [vec![5, 1, 9, 3], vec![1, 3, 5, 9], vec![9, 5, 3, 1]];
    let nn = n.clone();
    let out = run_three(move |p| {
        let i = p.id().index();
        p.agree_online(7, &sets[i], &nn[i])
    })
    .map(|r| r.unwrap());
    for a in &out {
        assert!(a.consistent);
        assert_eq!(a.online, vec![1, 3, 5, 9]);
        assert!(a.retry.is_empty());
        assert_eq!(a.missing_at, [0; 3]);
    }
    // A relay dropped user 3 on its way to P1, and P2 heard from an extra user 11.
    let sets: [Vec<u64>; 3] = [vec![1, 3, 5, 9], vec![1, 5, 9], vec![1, 3, 5, 9, 11]];
    let out = run_three(move |p| {
        let i = p.id().index();
        p.agree_online(8, &sets[i], &n[i])
    })
    .map(|r| r.unwrap());
    for a in &out {
        assert!(!a.consistent);
        assert_eq!(a.online, vec![1, 5, 9]);
        assert_eq!(a.missing_at, [1, 2, 0]);
    }
    assert_eq!(out[0].retry, vec![3]);
    assert_eq!(out[1].retry, Vec::<u64>::new());
    assert_eq!(out[2].retry, vec![3, 11]);
}

/// Signs honestly, except that to its next party it claims a set without `drop`.
struct Equivocator {
    honest: KeyNotary,
    drop: u64,
    heard: Vec<u64>,
}

impl Notary for Equivocator {
    fn context(&self) -> [u8; 32] {
        self.honest.context()
    }
    fn sign(&self, to: Peer, s: &Statement) -> SignedStatement {
        if to == Peer::Next && s.kind == StatementKind::Heard {
            let mut set = self.heard.clone();
            set.retain(|&p| p != self.drop);
            set.sort_unstable();
            let lie = Statement {
                count: set.len() as u64,
                digest: acs_engine::round::consistency::online_digest(s.round, &set),
                ..*s
            };
            return self.honest.sign(to, &lie);
        }
        self.honest.sign(to, s)
    }
    fn key_of(&self, who: PartyId) -> &ed25519_dalek::VerifyingKey {
        self.honest.key_of(who)
    }
}

#[test]
fn an_equivocating_server_is_proven_so_by_both_honest_servers() {
    for liar in PartyId::ALL {
        let set = vec![2u64, 4, 6, 8];
        let three = KeyNotary::three_random([4; 32]);
        let keys = PartyId::ALL.map(|p| *three[0].key_of(p));
        let notaries: Vec<Box<dyn Notary + Sync>> = three
            .into_iter()
            .enumerate()
            .map(|(i, honest)| -> Box<dyn Notary + Sync> {
                if i == liar.index() {
                    Box::new(Equivocator {
                        honest,
                        drop: 6,
                        heard: set.clone(),
                    })
                } else {
                    Box::new(honest)
                }
            })
            .collect();
        let notaries = Arc::new(notaries);
        let out = run_three(move |p| {
            let i = p.id().index();
            p.agree_online(3, &set, notaries[i].as_ref())
        });
        for p in PartyId::ALL.into_iter().filter(|&p| p != liar) {
            match &out[p.index()] {
                Err(EngineError::Equivocation(proof)) => {
                    assert_eq!(proof.culprit(), liar, "{p} blames the wrong server");
                    assert!(
                        proof.verify(&keys[liar.index()]),
                        "{p}'s proof does not verify"
                    );
                    assert!(!proof.verify(&keys[p.index()]));
                }
                other => panic!("liar {liar}: {p} ended with {other:?}"),
            }
        }
    }
}

#[test]
fn the_round_opens_only_sort_comparisons_and_routing_tags() {
    use acs_engine::declassify::Reason;
    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 10,
        expiry_rounds: 3,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let users = population(50, 77);
    let mut rng = StdRng::seed_from_u64(78);
    let blocks: Vec<Block> = users
        .iter()
        .map(|_| random_block(&mut rng, &cfg, &users))
        .collect();
    let per_party = Arc::new(PartyInputs::share_all(&cfg, 1, &users, &blocks, &mut rng));
    let online = Arc::new(users.clone());
    let n = notaries();
    let logs = run_three(move |p| {
        let i = p.id().index();
        exchange_round(
            p,
            &cfg,
            1,
            &online,
            per_party[i].clone(),
            &SharedStore::empty(&cfg),
            &n[i],
        )?;
        Ok(p.audit_log().entries().to_vec())
    })
    .map(|r| r.unwrap());
    let routing: Vec<usize> = logs[0]
        .iter()
        .filter(|e| e.reason == Reason::RouteAfterShuffle)
        .map(|e| e.bits)
        .collect();
    // Route A opens one tag per record (2U + C); then each item's payload index after a
    // shuffle (U + C); then each payload row's destination after a shuffle (U + C items,
    // U blanks and C receipts).
    assert_eq!(
        routing,
        vec![(2 * 50 + 10) * 64, (50 + 10) * 64, (2 * 50 + 2 * 10) * 64]
    );
    // The exact shape: sort-1's comparison levels, route A, sort-2's levels, the payload
    // indices, the destinations. Each comparison level opens at most one bit per record
    // of its sort.
    let shape: Vec<char> = logs[0]
        .iter()
        .map(|e| match e.reason {
            Reason::SortComparison => 's',
            Reason::RouteAfterShuffle => 'r',
            other => panic!("unexpected opening {other:?}"),
        })
        .collect::<String>()
        .split('r')
        .map(|run| if run.is_empty() { '-' } else { 's' })
        .collect();
    assert_eq!(
        shape,
        vec!['s', 's', '-', '-'],
        "openings in the wrong order"
    );
    let first_route = logs[0]
        .iter()
        .position(|e| e.reason == Reason::RouteAfterShuffle)
        .unwrap();
    for (k, e) in logs[0].iter().enumerate() {
        if e.reason == Reason::SortComparison {
            let n = if k < first_route {
                2 * 50 + 10
            } else {
                50 + 10
            };
            assert!(e.bits < n, "a level opened {} bits of {n} records", e.bits);
        }
    }
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
}

/// Every message whose sender was told `stored` comes back to that sender as exactly one
/// receipt (for its send round and target) by the end of `history`, and no receipt
/// names a message that was not stored. Returns the receipts' fates in send order.
fn every_stored_message_gets_one_receipt(history: &[Ran]) -> Vec<Fate> {
    let mut stored = std::collections::BTreeMap::new();
    let mut receipts = std::collections::BTreeMap::new();
    for (r, ran) in history.iter().enumerate() {
        let round = r as u32 + 1;
        for ((&user, block), out) in ran.online.iter().zip(&ran.blocks).zip(&ran.outputs) {
            if out.status == Status::Stored {
                stored.insert((user, round), block.dst);
            }
            if let Some(Receipt { to, sent, fate, .. }) = out.receipt {
                let again = receipts.insert((user, sent), (to, fate));
                assert!(
                    again.is_none(),
                    "two receipts for {user}'s message of round {sent}"
                );
            }
        }
    }
    let named: Vec<_> = receipts.iter().map(|(k, (to, _))| (*k, *to)).collect();
    let want: Vec<_> = stored.into_iter().collect();
    assert_eq!(named, want, "stored messages and their receipts");
    receipts.into_values().map(|(_, fate)| fate).collect()
}

/// Users `a < b` are online every round and send to `off` in round 1 (`a`'s message
/// ranks first); `off` comes online from round `back` on. Covers otherwise.
fn both_write_to_one_absent(
    a: u64,
    b: u64,
    off: u64,
    back: u32,
) -> impl Fn(u32, &mut StdRng) -> Plan {
    move |round, _| {
        let mut online = vec![a, b];
        if round >= back {
            online.push(off);
        }
        online.sort_unstable();
        let blocks = online
            .iter()
            .map(|&u| match (round, u == off) {
                (1, false) => Block {
                    role: Role::Send,
                    dst: off,
                    payload: vec![u],
                },
                _ => Block::cover(&RoundConfig {
                    payload_words: 1,
                    store_capacity: 0,
                    expiry_rounds: 1,
                    receipt_rounds: 1,
                }),
            })
            .collect();
        Plan { online, blocks }
    }
}

fn receipt_of(ran: &Ran, user: u64) -> Option<Receipt> {
    let k = ran.online.iter().position(|&u| u == user)?;
    ran.outputs[k].receipt
}

#[test]
fn stored_messages_that_expire_come_back_to_their_senders_as_expired_receipts() {
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 4,
        expiry_rounds: 2,
        receipt_rounds: 10,
    };
    let (a, b, off) = (10, 20, 30);
    let h = run_rounds(cfg, 6, 21, both_write_to_one_absent(a, b, off, u32::MAX));
    assert_eq!(h[0].outputs[0].status, Status::Stored);
    assert_eq!(h[0].outputs[1].status, Status::Stored);
    // Both expire in round 3 and become receipts in their slots; a user takes one item
    // a round, so each gets its own in round 4 (they are for different users).
    for r in 0..3 {
        assert_eq!(receipt_of(&h[r], a), None, "round {}", r + 1);
    }
    let expired = Receipt {
        role: Role::Send,
        to: off,
        sent: 1,
        fate: Fate::Expired,
    };
    assert_eq!(receipt_of(&h[3], a), Some(expired));
    assert_eq!(receipt_of(&h[3], b), Some(expired));
    assert_eq!(
        every_stored_message_gets_one_receipt(&h),
        vec![Fate::Expired; 2]
    );
}

#[test]
fn stored_messages_delivered_later_come_back_as_delivered_receipts() {
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 4,
        expiry_rounds: 5,
        receipt_rounds: 10,
    };
    let (a, b, off) = (10, 20, 30);
    let h = run_rounds(cfg, 6, 22, both_write_to_one_absent(a, b, off, 3));
    // `off` is back in round 3 and takes one message a round, oldest first: a's in
    // round 3, b's in round 4; each sender's receipt comes the round after.
    let got = |r: usize| {
        let k = h[r].online.iter().position(|&u| u == off).unwrap();
        h[r].outputs[k].incoming.as_ref().map(|i| i.from)
    };
    assert_eq!((got(2), got(3)), (Some(a), Some(b)));
    let delivered = Receipt {
        role: Role::Send,
        to: off,
        sent: 1,
        fate: Fate::Delivered,
    };
    assert_eq!(receipt_of(&h[2], a), None);
    assert_eq!(receipt_of(&h[3], a), Some(delivered));
    assert_eq!(receipt_of(&h[3], b), None);
    assert_eq!(receipt_of(&h[4], b), Some(delivered));
    assert_eq!(
        every_stored_message_gets_one_receipt(&h),
        vec![Fate::Delivered; 2]
    );
}

#[test]
fn a_full_store_drops_at_once_and_receipts_keep_their_messages_slots() {
    // Store of two. Round 1: three senders to an absent user: two stored, the third
    // dropped at once. Rounds 2-3: a new message finds the store full (messages, then
    // their receipts in the same slots) and is dropped. Round 4 the receipts go out and
    // free their slots; round 5's message is stored again (and its receipt comes in
    // round 8).
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 2,
        expiry_rounds: 2,
        receipt_rounds: 10,
    };
    let (a, b, c, d, off) = (10u64, 20, 30, 40, 99);
    let h = run_rounds(cfg, 8, 23, move |round, _| {
        let online = vec![a, b, c, d];
        let send = |dst| Block {
            role: Role::Send,
            dst,
            payload: vec![round as u64],
        };
        let blocks = online
            .iter()
            .map(|&u| match round {
                1 if u != d => send(off),
                2 | 3 | 5 if u == d => send(off),
                _ => Block::cover(&cfg),
            })
            .collect();
        Plan { online, blocks }
    });
    let status = |r: usize, k: usize| h[r].outputs[k].status;
    assert_eq!(
        [status(0, 0), status(0, 1), status(0, 2)],
        [Status::Stored, Status::Stored, Status::Dropped]
    );
    assert_eq!(status(1, 3), Status::Dropped, "store full of messages");
    assert_eq!(status(2, 3), Status::Dropped, "store full of receipts");
    assert_eq!(receipt_of(&h[3], a).map(|r| r.fate), Some(Fate::Expired));
    assert_eq!(receipt_of(&h[3], b).map(|r| r.fate), Some(Fate::Expired));
    assert_eq!(
        status(4, 3),
        Status::Stored,
        "the receipts' slots are free again"
    );
    assert_eq!(
        every_stored_message_gets_one_receipt(&h),
        vec![Fate::Expired; 3]
    );
}

#[test]
fn random_traffic_then_everyone_online_every_stored_message_gets_its_receipt() {
    // Random rounds with offline users and expiry, then drain rounds with everyone
    // online sending covers: every `stored` message's sender gets exactly one receipt.
    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 30,
        expiry_rounds: 3,
        receipt_rounds: 40,
    };
    for seed in 0..4 {
        let users = population(40, 300 + seed);
        let h = run_rounds(cfg, 16, 400 + seed, |round, rng| {
            if round <= 6 {
                random_plan(rng, &cfg, &users, 0.5)
            } else {
                Plan {
                    online: users.clone(),
                    blocks: users.iter().map(|_| Block::cover(&cfg)).collect(),
                }
            }
        });
        let fates = every_stored_message_gets_one_receipt(&h);
        assert!(fates.contains(&Fate::Expired) && fates.contains(&Fate::Delivered));
    }
}

#[test]
fn receipts_expire_after_receipt_rounds_if_their_sender_stays_away() {
    // `a` sends to an absent user and leaves; its expired receipt waits
    // `receipt_rounds` and then leaves the store unclaimed.
    let cfg = RoundConfig {
        payload_words: 1,
        store_capacity: 2,
        expiry_rounds: 1,
        receipt_rounds: 2,
    };
    let (a, b, off) = (10u64, 20, 30);
    let h = run_rounds(cfg, 6, 24, move |round, _| {
        let online = if round == 1 { vec![a, b] } else { vec![b] };
        let blocks = online
            .iter()
            .map(|&u| {
                if u == a {
                    Block {
                        role: Role::Send,
                        dst: off,
                        payload: vec![1],
                    }
                } else {
                    Block::cover(&cfg)
                }
            })
            .collect();
        Plan { online, blocks }
    });
    assert_eq!(h[0].outputs[0].status, Status::Stored);
    assert!(h
        .iter()
        .all(|r| r.outputs.iter().all(|o| o.receipt.is_none())));
}
