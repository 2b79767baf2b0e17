//! A deliberately leaky round, for checking that the audit catches leaks.
//!
//! It runs the real [`exchange_round`] unchanged and then opens one secret more,
//! through the same [`Party::declassify_words`] and under an existing reason
//! ([`Reason::RouteAfterShuffle`]), so the reason check alone cannot see it: the
//! flags are even shuffled first, so only their count leaks, which is exactly the kind
//! of leak the two-world test is there for. Nothing in the engine changes.

use acs_engine::round::consistency::Notary;
use acs_engine::round::input::PartyInputs;
use acs_engine::round::mpc::{exchange_round, RoundResult, SharedStore};
use acs_engine::round::{address, RoundConfig, ADDRESS_BITS};
use acs_engine::sort::quicksort;
use acs_engine::{EngineError, Party, Reason, Shared, SharedKeys};
use serde::Serialize;

/// The round's first-sort key width: dummy bit, address, kind bit.
const KEY_BITS: usize = ADDRESS_BITS as usize + 2;

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
    /// A routing bug: the mailboxes and items are sorted as in the round, and their
    /// routing tags opened *without* a fresh shuffle. The opened multiset is the public
    /// one (`0 .. 2 users`), so only the order leaks (who is next to whose mailbox:
    /// who talks to whom, covers last): the exact check cannot see it, the
    /// distribution tests must.
    UnshuffledRoute,
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
// exchange_round's seven parameters and the leak: bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn leaky_round(
    party: &mut Party,
    cfg: &RoundConfig,
    round: u32,
    online: &[u64],
    inputs: PartyInputs,
    store: &SharedStore,
    notary: &dyn Notary,
    leak: Leak,
) -> Result<RoundResult, EngineError> {
    let blocks = inputs.shares.clone();
    let result = exchange_round(party, cfg, round, online, inputs, store, notary)?;
    let flags = match leak.kind {
        LeakKind::RealFlags => real_flags(party, cfg, blocks)?,
        LeakKind::UnshuffledRoute => {
            unshuffled_route(party, cfg, online, blocks)?;
            return Ok(result);
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

/// Each block's real/cover flag, one word per block (bit 0). Role bits r0, r1 are in
/// word 0 of each block; real = r0 | r1 = r0 ^ r1 ^ r0 r1.
fn real_flags(
    party: &mut Party,
    cfg: &RoundConfig,
    blocks: Vec<u64>,
) -> Result<Shared, EngineError> {
    let shared = party.input_from_xor(blocks)?;
    let bw = cfg.block_words();
    let bit =
        |v: &[u64], k: u32| -> Vec<u64> { v.iter().step_by(bw).map(|w| (w >> k) & 1).collect() };
    let r0 = Shared {
        a: bit(&shared.a, 0),
        b: bit(&shared.b, 0),
    };
    let r1 = Shared {
        a: bit(&shared.a, 1),
        b: bit(&shared.b, 1),
    };
    let both = party.and(&r0, &r1)?;
    Ok(r0.xor(&r1).xor(&both))
}

/// Sorts one item per block (key `(cover, address(target), 1)`) and one mailbox per user
/// (key `(0, address(user), 0)`) like the round does, then opens their tags (`2i + 1` for user `i`'s
/// item, `2i` for its mailbox) in sorted order, with no shuffle in between.
fn unshuffled_route(
    party: &mut Party,
    cfg: &RoundConfig,
    online: &[u64],
    blocks: Vec<u64>,
) -> Result<(), EngineError> {
    let bw = cfg.block_words();
    let shared = party.input_from_xor(blocks.clone())?;
    let real = real_flags(party, cfg, blocks)?;
    // Public values ride in x_0: party 0 holds it as `a`, party 2 as `b`.
    let id = party.id().index();
    let (pa, pb) = (u128::from(id == 0), u128::from(id == 2));
    let mut keys = SharedKeys::default();
    let mut tags = Shared::default();
    for (holds_x0, flags, words, out_keys, out_tags) in [
        (pa, &real.a, &shared.a, &mut keys.a, &mut tags.a),
        (pb, &real.b, &shared.b, &mut keys.b, &mut tags.b),
    ] {
        for (i, &flag) in flags.iter().enumerate() {
            // cover = real ^ 1; kind bit 1 for items.
            let cover = u128::from(flag & 1) ^ holds_x0;
            let dst = u128::from(address(words[i * bw + 1]));
            out_keys.push((cover << (KEY_BITS - 1)) | (dst << 1) | holds_x0);
            out_tags.push(holds_x0 as u64 * (2 * i as u64 + 1));
        }
        for (i, &owner) in online.iter().enumerate() {
            out_keys.push(holds_x0 * (u128::from(address(owner)) << 1));
            out_tags.push(holds_x0 as u64 * (2 * i as u64));
        }
    }
    let sorted = quicksort(party, &keys, KEY_BITS, &tags, 1)?;
    party.declassify_words(Reason::RouteAfterShuffle, &sorted.payload)?;
    party.check_openings()?;
    Ok(())
}
