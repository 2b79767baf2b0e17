//! The secret traffic patterns the audit compares, all with the same public leakage.
//!
//! Every run of every workload has the same public inputs: the same online set (the
//! first `users` pseudonyms of a fixed population, online in every round), the same
//! store capacity `C`, the same payload size, and the same three round numbers (1 to 3,
//! each round's store carried into the next). Only the users' blocks differ, and they
//! are secret-shared.

use acs_engine::round::ideal::{ideal_round, StoredItem};
use acs_engine::round::{address, Block, Output, Role, RoundConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Rounds per run: round 1 fills the store (for the workloads that store anything),
/// round 2 starts from it (a stored item delivered makes a receipt), and in round 3
/// round 1's stored items expire into receipts while round 2's receipts go out to their
/// senders: every path of the store, receipts included, runs in the audited rounds.
pub const ROUNDS: u32 = 3;

/// A secret traffic pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Every online user sends cover traffic: no real message at all.
    Covers,
    /// Every online user but the receiver (the first online pseudonym) sends to the
    /// receiver: in-degree `users - 1`, one delivered per round, the rest stored or
    /// dropped.
    OneReceiver,
    /// Online users paired at random; each sends to its partner (in-degree 1, all
    /// delivered).
    RandomPairs,
    /// Round 1: half the users send to random offline pseudonyms (the store is partly
    /// full); rounds 2 and 3: every user does (the store overflows, the newest are
    /// dropped; in round 3 round 1's items expire into receipts).
    OfflineTargets,
}

impl Workload {
    /// All workloads, in report order.
    pub const ALL: [Workload; 4] = [
        Workload::Covers,
        Workload::OneReceiver,
        Workload::RandomPairs,
        Workload::OfflineTargets,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Covers => "covers",
            Workload::OneReceiver => "one-receiver",
            Workload::RandomPairs => "random-pairs",
            Workload::OfflineTargets => "offline-targets",
        }
    }
}

/// The public setting shared by every run: what the servers are allowed to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Public {
    /// Round configuration (payload size, `C`, expiry).
    pub cfg: RoundConfig,
    /// The online set, ascending (the same in every round).
    pub online: Vec<u64>,
    /// Pseudonyms that exist but are not online (targets of stored messages).
    pub offline: Vec<u64>,
}

impl Public {
    /// `users` online and as many offline pseudonyms, drawn once from a fixed seed (the
    /// population is public; which of them talk is not).
    pub fn new(users: usize, store_capacity: usize, payload_words: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(0x4143_535f_6175_6469);
        let mut all: Vec<u64> = Vec::with_capacity(2 * users);
        while all.len() < 2 * users {
            // Registered users: distinct addresses (an odd pseudonym's is non-zero).
            let p = rng.gen::<u64>() | 1;
            if !all.iter().any(|&q| address(q) == address(p)) {
                all.push(p);
            }
        }
        let offline = all.split_off(users);
        all.sort_unstable();
        Public {
            cfg: RoundConfig {
                payload_words,
                store_capacity,
                expiry_rounds: 2,
                receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
            },
            online: all,
            offline,
        }
    }

    /// The receiver of [`Workload::OneReceiver`]: the first online pseudonym, whose
    /// routing tags are 0 (mailbox) and 1 (own item).
    pub fn receiver(&self) -> u64 {
        self.online[0]
    }
}

/// One run's plaintext: the blocks of every round, and what the ideal round says about
/// them (the oracle for the outputs, and the secret quantities a leak would reveal).
#[derive(Clone, Debug)]
pub struct Plan {
    /// `blocks[r]`: one block per online user (in online order) for round `r + 1`.
    pub blocks: Vec<Vec<Block>>,
    /// `expected[r]`: the ideal outputs of round `r + 1`, in online order.
    pub expected: Vec<Vec<Output>>,
    /// The secret quantities per round.
    pub secrets: Vec<Secrets>,
}

/// Per round: the secrets a leak of "how much traffic" would reveal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Secrets {
    /// Real (non-cover) blocks this round.
    pub real: usize,
    /// In-degree of the receiver (the first online pseudonym) this round.
    pub receiver_in_degree: usize,
    /// Real items in the store after this round.
    pub stored: usize,
}

impl Plan {
    /// Draws one run of `workload`.
    pub fn draw(public: &Public, workload: Workload, rng: &mut StdRng) -> Plan {
        let mut store: Vec<StoredItem> = Vec::new();
        let mut plan = Plan {
            blocks: Vec::new(),
            expected: Vec::new(),
            secrets: Vec::new(),
        };
        for round in 1..=ROUNDS {
            let blocks = draw_blocks(public, workload, round, rng);
            let inputs: Vec<(u64, Block)> = public
                .online
                .iter()
                .copied()
                .zip(blocks.iter().cloned())
                .collect();
            let (outputs, new_store) = ideal_round(&public.cfg, round, &inputs, &store);
            let receiver = public.receiver();
            plan.secrets.push(Secrets {
                real: blocks.iter().filter(|b| b.role != Role::Cover).count(),
                receiver_in_degree: blocks
                    .iter()
                    .filter(|b| b.role != Role::Cover && b.dst == receiver)
                    .count(),
                stored: new_store.len(),
            });
            plan.blocks.push(blocks);
            plan.expected.push(outputs);
            store = new_store;
        }
        plan
    }
}

fn message(public: &Public, dst: u64, rng: &mut StdRng) -> Block {
    Block {
        role: if rng.gen_bool(0.5) {
            Role::Send
        } else {
            Role::Request
        },
        dst,
        payload: (0..public.cfg.payload_words).map(|_| rng.gen()).collect(),
    }
}

fn draw_blocks(public: &Public, workload: Workload, round: u32, rng: &mut StdRng) -> Vec<Block> {
    let u = public.online.len();
    let cover = || Block::cover(&public.cfg);
    match workload {
        Workload::Covers => (0..u).map(|_| cover()).collect(),
        Workload::OneReceiver => (0..u)
            .map(|i| {
                if i == 0 {
                    cover()
                } else {
                    message(public, public.receiver(), rng)
                }
            })
            .collect(),
        Workload::RandomPairs => {
            let mut order: Vec<usize> = (0..u).collect();
            order.shuffle(rng);
            let mut partner = vec![None; u];
            for pair in order.chunks_exact(2) {
                partner[pair[0]] = Some(pair[1]);
                partner[pair[1]] = Some(pair[0]);
            }
            partner
                .iter()
                .map(|p| match p {
                    Some(j) => message(public, public.online[*j], rng),
                    None => cover(),
                })
                .collect()
        }
        Workload::OfflineTargets => (0..u)
            .map(|_| {
                if round >= 2 || rng.gen_bool(0.5) {
                    let dst = public.offline[rng.gen_range(0..public.offline.len())];
                    message(public, dst, rng)
                } else {
                    cover()
                }
            })
            .collect(),
    }
}
