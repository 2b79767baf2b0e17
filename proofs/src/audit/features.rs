//! From one run's openings to what a leak would change.
//!
//! A round's openings fall into *groups*: a quicksort's consecutive comparison
//! openings, or any other single opening. The real round has five: the quicksort of all
//! records (one [`Reason::SortComparison`] opening per level), the first routing
//! ([`Reason::RouteAfterShuffle`]), the store sort, the payload indices and the payload
//! destinations.
//!
//! Two kinds of things come out of a round:
//! - its [`Invariant`]: what is a function of the public leakage alone, so must be
//!   *identical* in every run: the sequence of group reasons, the number of
//!   comparisons at the first quicksort level (`n - 1`), and for each routing group the
//!   number of openings, bits and the multiset of opened tags;
//! - its [`features`]: numbers whose *distribution* must not depend on the secret
//!   pattern (quicksort shape and comparison bits depend on a random permutation;
//!   routing tag positions on a fresh shuffle). Each is chosen for a leak it would show:
//!   - levels, comparisons per level and the fraction of ones per level (overall and at
//!     levels 1–5): a sort over non-unique keys, or without the shuffle, gives bits that
//!     depend on how many keys are equal (dummies, items for one receiver), i.e. on the
//!     number of real messages and on in-degrees;
//!   - the first-level ones in the first half minus the second half: the input order
//!     (store, items, mailboxes) showing through a missing or partial shuffle;
//!   - the position of tags 0 and 1 (the receiver's mailbox and own item), of the first
//!     store sentinel, the mean sentinel position, how often a mailbox is directly
//!     followed by its owner's item, and the fraction of ascending neighbours: routing
//!     positions that remember the sorted order reveal who matched whom;
//!   - the fraction of one bits in every group's opened values: any opening whose
//!     values depend on the traffic (a flag, a count, a target) moves it.

use std::collections::BTreeMap;

use acs_engine::declassify::AuditEntry;
use acs_engine::Reason;
use serde::Serialize;

/// The routing tag of store records in the real round (see `engine::round::mpc`).
pub const SENTINEL: u64 = u64::MAX;

/// Quicksort levels that get their own features.
const LEVELS: usize = 5;

/// One quicksort's openings, or one other opening.
#[derive(Clone, Copy, Debug)]
pub struct Group<'a> {
    /// The reason of every opening in it.
    pub reason: Reason,
    /// The openings.
    pub entries: &'a [AuditEntry],
}

/// Splits a round's openings into groups: consecutive quicksort levels form one group
/// (one sort), every other opening is a group of its own.
pub fn groups(entries: &[AuditEntry]) -> Vec<Group<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..=entries.len() {
        let split = k == entries.len()
            || entries[k].reason != entries[start].reason
            || entries[start].reason != Reason::SortComparison;
        if split {
            if k > start {
                out.push(Group {
                    reason: entries[start].reason,
                    entries: &entries[start..k],
                });
            }
            start = k;
        }
    }
    out
}

/// What a round must open identically in every run of every workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invariant {
    /// One per group, in order.
    pub groups: Vec<GroupInvariant>,
}

/// The public part of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupInvariant {
    /// A quicksort: comparisons at its first level (`n - 1` for `n` records).
    Sort {
        /// Comparisons at level 1.
        first_level: usize,
    },
    /// A routing opening (or any other reason): everything is public but the order.
    Route {
        /// The reason.
        reason: String,
        /// Openings in the group.
        openings: usize,
        /// Bits opened.
        bits: usize,
        /// The opened words, sorted (the multiset).
        tags: Vec<u64>,
    },
}

/// The invariant of one round's openings.
pub fn invariant(entries: &[AuditEntry]) -> Invariant {
    Invariant {
        groups: groups(entries)
            .into_iter()
            .map(|g| match g.reason {
                Reason::SortComparison => GroupInvariant::Sort {
                    first_level: g.entries[0].bits,
                },
                r => {
                    let mut tags: Vec<u64> = g
                        .entries
                        .iter()
                        .flat_map(|e| e.values.iter().flatten().copied())
                        .collect();
                    tags.sort_unstable();
                    GroupInvariant::Route {
                        reason: r.name().to_string(),
                        openings: g.entries.len(),
                        bits: g.entries.iter().map(|e| e.bits).sum(),
                        tags,
                    }
                }
            })
            .collect(),
    }
}

/// Bits opened per reason in one round (for reasons whose count is public; the
/// quicksort's total depends on its random pivots and is a feature instead).
pub fn public_bits(entries: &[AuditEntry]) -> Vec<(String, usize)> {
    Reason::ALL
        .iter()
        .filter(|r| **r != Reason::SortComparison)
        .map(|r| {
            (
                r.name().to_string(),
                entries
                    .iter()
                    .filter(|e| e.reason == *r)
                    .map(|e| e.bits)
                    .sum(),
            )
        })
        .collect()
}

/// Named features of one round (`round` is 1-based, for the names).
pub fn features(round: usize, entries: &[AuditEntry]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (g, group) in groups(entries).iter().enumerate() {
        let prefix = format!("r{round}.g{g}.{}", group.reason.name());
        let mut put = |name: &str, v: f64| {
            out.insert(format!("{prefix}.{name}"), v);
        };
        put("ones", ones_fraction(group.entries));
        if group.reason == Reason::SortComparison {
            sort_features(group.entries, &mut put);
        } else {
            let tags: Vec<u64> = group
                .entries
                .iter()
                .flat_map(|e| e.values.iter().flatten().copied())
                .collect();
            route_features(&tags, &mut put);
        }
    }
    out
}

fn popcount(e: &AuditEntry) -> u64 {
    e.values
        .iter()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum()
}

fn ones_fraction(entries: &[AuditEntry]) -> f64 {
    let bits: usize = entries.iter().map(|e| e.bits).sum();
    if bits == 0 {
        return 0.0;
    }
    entries.iter().map(popcount).sum::<u64>() as f64 / bits as f64
}

fn bit(values: &[u64], k: usize) -> bool {
    (values[k / 64] >> (k % 64)) & 1 == 1
}

fn sort_features(levels: &[AuditEntry], put: &mut impl FnMut(&str, f64)) {
    put("levels", levels.len() as f64);
    put(
        "comparisons",
        levels.iter().map(|e| e.bits).sum::<usize>() as f64,
    );
    for l in 0..LEVELS {
        let e = levels.get(l);
        if l > 0 {
            put(
                &format!("level{}.comparisons", l + 1),
                e.map_or(0.0, |e| e.bits as f64),
            );
        }
        put(
            &format!("level{}.ones", l + 1),
            e.map_or(-1.0, |e| ones_fraction(std::slice::from_ref(e))),
        );
    }
    // First-level bits in input (shuffled) order: first half against second half.
    let first = &levels[0];
    let values = first.values.as_deref().unwrap_or(&[]);
    let m = first.bits;
    if m >= 2 && values.len() * 64 >= m {
        let half = m / 2;
        let ones = |r: std::ops::Range<usize>| r.filter(|&k| bit(values, k)).count() as f64;
        put(
            "level1.halves",
            ones(0..half) / half as f64 - ones(half..m) / (m - half) as f64,
        );
    }
}

fn route_features(tags: &[u64], put: &mut impl FnMut(&str, f64)) {
    let n = tags.len();
    let norm = |k: usize| {
        if n < 2 {
            0.0
        } else {
            k as f64 / (n - 1) as f64
        }
    };
    let position = |v: u64| tags.iter().position(|&t| t == v).map_or(-1.0, norm);
    put("tag0.position", position(0));
    put("tag1.position", position(1));
    put("sentinel.first", position(SENTINEL));
    let sentinels: Vec<usize> = (0..n).filter(|&k| tags[k] == SENTINEL).collect();
    put(
        "sentinel.mean",
        if sentinels.is_empty() {
            -1.0
        } else {
            sentinels.iter().map(|&k| norm(k)).sum::<f64>() / sentinels.len() as f64
        },
    );
    if n >= 2 {
        let pairs = (n - 1) as f64;
        let owner_pairs = tags
            .windows(2)
            .filter(|w| w[0] % 2 == 0 && w[0] != SENTINEL && w[1] == w[0] + 1)
            .count();
        put("mailbox_then_own_item", owner_pairs as f64 / pairs);
        let ascending = tags.windows(2).filter(|w| w[0] < w[1]).count();
        put("ascending", ascending as f64 / pairs);
    }
}
