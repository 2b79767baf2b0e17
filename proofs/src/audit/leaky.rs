//! A deliberately leaky round, for checking that the audit catches leaks.
//!
//! It runs the real [`exchange_round`] unchanged and then opens one secret more,
//! through the same [`Party::declassify_words`] and under an existing reason
//! ([`Reason::RouteAfterShuffle`]), so the reason check alone cannot see it: the
//! flags are even shuffled first, so only their count leaks, which is exactly the kind
//! of leak the two-world test is there for. Nothing in the engine changes.

use acs_engine::round::mpc::{exchange_round, RoundResult, SharedStore};
use acs_engine::round::RoundConfig;
use acs_engine::{EngineError, Party, Reason, Shared};
use serde::Serialize;

/// What the leaky round opens besides the real round's openings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LeakKind {
    /// The real/cover flag of every block (the "match flags" of the input): leaks the
    /// number of real messages.
    RealFlags,
    /// The valid flag of every record of the new store: leaks the number of stored
    /// items, hence a busy receiver's in-degree.
    StoreFill,
}

/// A leak: what is opened, and how many of the shuffled flags (all when `None`; one
/// flag is the weakest leak of its kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Leak {
    /// What is opened.
    pub kind: LeakKind,
    /// How many flags, after the shuffle.
    pub flags: Option<usize>,
}

/// The real round, then the leak.
pub fn leaky_round(
    party: &mut Party,
    cfg: &RoundConfig,
    round: u32,
    online: &[u64],
    blocks: Vec<u64>,
    store: &SharedStore,
    leak: Leak,
) -> Result<RoundResult, EngineError> {
    let result = exchange_round(party, cfg, round, online, blocks.clone(), store)?;
    let flags = match leak.kind {
        LeakKind::RealFlags => {
            // Role bits r0, r1 in word 0 of each block; real = r0 | r1 = r0 ^ r1 ^ r0 r1.
            let shared = party.input_from_xor(blocks)?;
            let bw = cfg.block_words();
            let bit = |v: &[u64], k: u32| -> Vec<u64> {
                v.iter().step_by(bw).map(|w| (w >> k) & 1).collect()
            };
            let r0 = Shared {
                a: bit(&shared.a, 0),
                b: bit(&shared.b, 0),
            };
            let r1 = Shared {
                a: bit(&shared.a, 1),
                b: bit(&shared.b, 1),
            };
            let both = party.and(&r0, &r1)?;
            r0.xor(&r1).xor(&both)
        }
        LeakKind::StoreFill => {
            let sw = cfg.store_words();
            let valid = |v: &[u64]| -> Vec<u64> { v.iter().step_by(sw).map(|w| w & 1).collect() };
            Shared {
                a: valid(&result.store.rows.a),
                b: valid(&result.store.rows.b),
            }
        }
    };
    if !flags.is_empty() {
        let shuffled = party.shuffle(&flags, 1)?;
        let take = leak.flags.unwrap_or(flags.len()).min(flags.len());
        party.declassify_words(Reason::RouteAfterShuffle, &shuffled.slice(0..take))?;
        party.check_openings()?;
    }
    Ok(result)
}
