//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use acs_engine::share::{reconstruct, reconstruct_keys, xor_share, Shared, SharedKeys};
use acs_engine::testing::run_three;
use acs_engine::{EngineError, Party};
use rand::{rngs::StdRng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// XOR-shares `words` three ways, as a user would.
pub fn split_words(words: &[u64], seed: u64) -> [Vec<u64>; 3] {
    xor_share(words, &mut rng(seed))
}

/// Runs `f` on each party with that party's replicated share of each input vector,
/// and reconstructs the output words.
pub fn run_on_words<F>(inputs: Vec<Vec<u64>>, f: F) -> Vec<u64>
where
    F: Fn(&mut Party, Vec<Shared>) -> Result<Shared, EngineError> + Send + Sync + 'static,
{
    let split: Vec<[Vec<u64>; 3]> = inputs
        .iter()
        .enumerate()
        .map(|(k, v)| split_words(v, 1000 + k as u64))
        .collect();
    let split = std::sync::Arc::new(split);
    let out = run_three(move |p| {
        let i = p.id().index();
        let mut shared = Vec::new();
        for s in split.iter() {
            shared.push(p.input_from_xor(s[i].clone())?);
        }
        f(p, shared)
    });
    let [a, b, c] = out.map(|r| r.expect("party failed"));
    reconstruct([&a, &b, &c])
}

/// Keys and payload words, XOR-shared and converted to replicated shares inside `f`.
pub fn run_on_keys<T, F>(keys: &[u128], payload: &[u64], f: F) -> [T; 3]
where
    T: Send + 'static,
    F: Fn(&mut Party, SharedKeys, Shared) -> Result<T, EngineError> + Send + Sync + 'static,
{
    let key_words: Vec<u64> = keys
        .iter()
        .flat_map(|k| [*k as u64, (*k >> 64) as u64])
        .collect();
    let ks = std::sync::Arc::new(split_words(&key_words, 7));
    let ps = std::sync::Arc::new(split_words(payload, 8));
    let out = run_three(move |p| {
        let i = p.id().index();
        let k = p.input_from_xor(ks[i].clone())?;
        let pl = p.input_from_xor(ps[i].clone())?;
        f(p, SharedKeys::from_words(&k), pl)
    });
    out.map(|r| r.expect("party failed"))
}

pub fn open_keys(parts: [&SharedKeys; 3]) -> Vec<u128> {
    reconstruct_keys(parts)
}

pub fn open_words(parts: [&Shared; 3]) -> Vec<u64> {
    reconstruct(parts)
}

/// Three notaries with fresh keys for the parties' signed statements.
pub fn notaries() -> std::sync::Arc<[acs_engine::round::consistency::KeyNotary; 3]> {
    std::sync::Arc::new(acs_engine::round::consistency::KeyNotary::three_random(
        [3; 32],
    ))
}
