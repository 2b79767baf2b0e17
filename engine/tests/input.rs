//! The checked input conversion (`round::input`, issue 12 item 2): a share altered on
//! its way from one server to the next is caught by the hash the user sent the receiver;
//! the user is left out of the round and retries, every other user's output is the ideal
//! round's over the users that remain, and nobody is blamed (the checking server cannot
//! tell a lying server from a lying user). The check runs in malicious mode; semi-honest
//! mode ignores the hashes and converts as before. Uses the `fault-injection` instrument
//! the engine's own tests compile in.

mod common;

use acs_engine::round::consistency::{
    KeyNotary, Notary, SignedStatement, Statement, StatementKind,
};
use acs_engine::round::ideal::ideal_round;
use acs_engine::round::input::{input_hash, InputCheck, PartyInputs};
use acs_engine::round::mpc::{exchange_round, RoundResult, SharedStore};
use acs_engine::round::outputs::reconstruct_checked;
use acs_engine::round::{Block, Role, RoundConfig};
use acs_engine::testing::run_three;
use acs_engine::{ComputeFault, ComputeSite, EngineError, PartyId, Peer, SecurityMode};
use rand::Rng;
use std::sync::Arc;

const CFG: RoundConfig = RoundConfig {
    payload_words: 3,
    store_capacity: 12,
    expiry_rounds: 2,
    receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
};

/// 30 users sending to each other (a fifth cover), as the workload of every test here.
fn workload(seed: u64) -> (Vec<u64>, Vec<Block>) {
    let mut rng = common::rng(seed);
    let mut online: Vec<u64> = (0..30).map(|_| rng.gen::<u64>() | 1).collect();
    online.sort_unstable();
    online.dedup();
    let blocks = online
        .iter()
        .map(|_| {
            if rng.gen_bool(0.2) {
                Block::cover(&CFG)
            } else {
                Block {
                    role: Role::Send,
                    dst: online[rng.gen_range(0..online.len())],
                    payload: (0..CFG.payload_words).map(|_| rng.gen()).collect(),
                }
            }
        })
        .collect();
    (online, blocks)
}

/// One round over `online` in `mode`; `liar` (if any) flips a bit of its conversion
/// message (the first user's role bit), and `spoil` may alter what users sent.
fn run(
    mode: SecurityMode,
    online: &[u64],
    blocks: &[Block],
    liar: Option<PartyId>,
    notaries: Vec<Box<dyn Notary + Sync>>,
    spoil: impl FnOnce(&mut [PartyInputs; 3]),
) -> [Result<RoundResult, EngineError>; 3] {
    let mut inputs = PartyInputs::share_all(&CFG, 1, online, blocks, &mut common::rng(9));
    spoil(&mut inputs);
    let inputs = Arc::new(inputs);
    let online = Arc::new(online.to_vec());
    let notaries = Arc::new(notaries);
    run_three(move |p| {
        p.set_security(mode)?;
        if Some(p.id()) == liar {
            p.inject_compute_fault(ComputeFault {
                site: ComputeSite::Input,
                nth: 0,
            });
        }
        let i = p.id().index();
        let r = exchange_round(
            p,
            &CFG,
            1,
            &online,
            inputs[i].clone(),
            &SharedStore::empty(&CFG),
            notaries[i].as_ref(),
        )?;
        p.verify_pending()?;
        Ok(r)
    })
}

fn honest_notaries() -> Vec<Box<dyn Notary + Sync>> {
    KeyNotary::three_random([5; 32])
        .into_iter()
        .map(|n| -> Box<dyn Notary + Sync> { Box::new(n) })
        .collect()
}

/// Every party completed the round over `online` less `removed`, with the same check
/// result, and every remaining user reconstructs the ideal round's output over the
/// remaining users (the removed ones are offline to the ideal round: messages to them
/// are stored, theirs are not sent).
fn assert_round_without(
    out: [Result<RoundResult, EngineError>; 3],
    online: &[u64],
    blocks: &[Block],
    removed: &[u64],
    failed_at: [usize; 3],
) {
    let results = out.map(|r| r.expect("the round completes: nobody aborts or is blamed"));
    let remaining: Vec<(u64, Block)> = online
        .iter()
        .copied()
        .zip(blocks.iter().cloned())
        .filter(|(u, _)| !removed.contains(u))
        .collect();
    let users: Vec<u64> = remaining.iter().map(|(u, _)| *u).collect();
    for r in &results {
        assert_eq!(r.online, users);
        assert_eq!(
            r.input_check,
            InputCheck {
                removed: removed.to_vec(),
                failed_at
            }
        );
    }
    let (want, _) = ideal_round(&CFG, 1, &remaining, &[]);
    for (k, w) in want.iter().enumerate() {
        let got = reconstruct_checked(
            1,
            users[k],
            [
                &results[0].outputs.share(k),
                &results[1].outputs.share(k),
                &results[2].outputs.share(k),
            ],
            &CFG,
        )
        .expect("output decodes and checks");
        assert_eq!(got.liar, None);
        assert_eq!(&got.output, w, "user {}", users[k]);
    }
}

#[test]
fn an_honest_round_passes_the_check_in_both_modes() {
    let (online, blocks) = workload(1);
    for mode in [SecurityMode::SemiHonest, SecurityMode::Malicious] {
        let out = run(mode, &online, &blocks, None, honest_notaries(), |_| {});
        assert_round_without(out, &online, &blocks, &[], [0; 3]);
    }
}

#[test]
fn a_server_altering_a_share_it_passes_on_gets_that_user_removed_and_retried() {
    let (online, blocks) = workload(2);
    for liar in PartyId::ALL {
        let out = run(
            SecurityMode::Malicious,
            &online,
            &blocks,
            Some(liar),
            honest_notaries(),
            |_| {},
        );
        // The flipped bit is in the first user's share; the liar's previous peer caught
        // it, and all three know whose conversion message failed.
        let mut failed_at = [0; 3];
        failed_at[liar.index()] = 1;
        assert_round_without(out, &online, &blocks, &online[..1], failed_at);
    }
}

/// Semi-honest mode promises nothing against a deviating server: the altered share goes
/// through (the gap `acs-bench cheat --at input --security semi-honest` shows).
#[test]
fn semi_honest_mode_does_not_check_the_conversion() {
    let (online, blocks) = workload(2);
    let liar = PartyId::ALL[1];
    let out = run(
        SecurityMode::SemiHonest,
        &online,
        &blocks,
        Some(liar),
        honest_notaries(),
        |_| {},
    );
    let results = out.map(|r| r.expect("the round completes"));
    for r in &results {
        assert_eq!(r.online, online);
        assert_eq!(r.input_check, InputCheck::default());
    }
    // The first user's role bit was flipped on its way: the round computed another block.
    let inputs: Vec<(u64, Block)> = online.iter().copied().zip(blocks.iter().cloned()).collect();
    let (want, _) = ideal_round(&CFG, 1, &inputs, &[]);
    let wrong = want
        .iter()
        .enumerate()
        .filter(|(k, w)| {
            let got = reconstruct_checked(
                1,
                online[*k],
                [
                    &results[0].outputs.share(*k),
                    &results[1].outputs.share(*k),
                    &results[2].outputs.share(*k),
                ],
                &CFG,
            );
            got.map(|c| &c.output != *w).unwrap_or(true)
        })
        .count();
    assert!(wrong > 0, "the altered input changed no output");
}

#[test]
fn a_user_sending_a_wrong_hash_is_removed_and_no_server_is_blamed() {
    let (online, blocks) = workload(3);
    for mode in [SecurityMode::SemiHonest, SecurityMode::Malicious] {
        for to in PartyId::ALL {
            // User 7 sends server `to` a hash that does not match the share of `to`'s
            // next peer; user 12 a hash of the right share for the wrong round.
            let out = run(mode, &online, &blocks, None, honest_notaries(), |inputs| {
                inputs[to.index()].next_hashes[7][0] ^= 1;
                let bw = CFG.block_words();
                let next = &inputs[to.next().index()].shares[12 * bw..13 * bw];
                let stale = input_hash(0, online[12], to.next(), next);
                inputs[to.index()].next_hashes[12] = stale;
            });
            if mode == SecurityMode::SemiHonest {
                // Ignored: the shares themselves are right, so every output is too.
                assert_round_without(out, &online, &blocks, &[], [0; 3]);
                continue;
            }
            let mut failed_at = [0; 3];
            failed_at[to.next().index()] = 2;
            assert_round_without(out, &online, &blocks, &[online[7], online[12]], failed_at);
        }
    }
}

#[test]
fn failures_at_several_servers_are_removed_together() {
    let (online, blocks) = workload(4);
    // Server 2 alters user 0's share on its way to server 1; user 5 lies to server 0.
    let out = run(
        SecurityMode::Malicious,
        &online,
        &blocks,
        Some(PartyId::ALL[2]),
        honest_notaries(),
        |inputs| inputs[0].next_hashes[5][31] ^= 0x80,
    );
    assert_round_without(out, &online, &blocks, &[online[0], online[5]], [0, 1, 1]);
}

#[test]
fn when_every_user_fails_the_round_computes_nothing() {
    let (online, blocks) = workload(5);
    let out = run(
        SecurityMode::Malicious,
        &online,
        &blocks,
        None,
        honest_notaries(),
        |inputs| inputs[1].next_hashes.iter_mut().for_each(|h| h[0] ^= 1),
    );
    for r in out {
        let r = r.unwrap();
        assert!(r.online.is_empty() && r.outputs.is_empty());
        assert_eq!(r.input_check.removed, online);
        assert_eq!(r.input_check.failed_at, [0, 0, online.len()]);
        assert_eq!(r.store, SharedStore::empty(&CFG));
    }
}

/// Signs, for its next peer, a set of rejected inputs naming one more user than the set
/// it sends.
struct WrongSignedSet {
    honest: KeyNotary,
    extra: u64,
}

impl Notary for WrongSignedSet {
    fn context(&self) -> [u8; 32] {
        self.honest.context()
    }
    fn sign(&self, to: Peer, s: &Statement) -> SignedStatement {
        if to == Peer::Next && s.kind == StatementKind::InputRejected {
            let lie = Statement {
                count: 1,
                digest: acs_engine::round::consistency::online_digest(s.round, &[self.extra]),
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
fn a_rejected_set_that_does_not_match_its_signature_stops_the_round_naming_its_sender() {
    let (online, blocks) = workload(6);
    for liar in PartyId::ALL {
        let notaries = KeyNotary::three_random([6; 32])
            .into_iter()
            .enumerate()
            .map(|(i, honest)| -> Box<dyn Notary + Sync> {
                if i == liar.index() {
                    Box::new(WrongSignedSet {
                        honest,
                        extra: online[3],
                    })
                } else {
                    Box::new(honest)
                }
            })
            .collect();
        let out = run(
            SecurityMode::Malicious,
            &online,
            &blocks,
            None,
            notaries,
            |_| {},
        );
        // The liar's next peer sees it first-hand; the other honest server stops because
        // that peer hung up, naming nobody.
        match &out[liar.next().index()] {
            Err(EngineError::PeerMisbehaved { peer, what }) => {
                assert_eq!(*peer, liar);
                assert!(what.contains("rejected inputs"), "{what}");
            }
            other => panic!("liar {liar}: its next peer ended with {other:?}"),
        }
        match &out[liar.prev().index()] {
            Err(EngineError::Channel(_)) => {}
            other => panic!("liar {liar}: its previous peer ended with {other:?}"),
        }
    }
}
