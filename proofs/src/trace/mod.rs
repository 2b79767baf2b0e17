//! The paper's traceability model (§5.1 Eq. 2, §6.2 Eq. 4–6), sound metrics beside it,
//! this system's own design, and a Monte-Carlo check of all three.
//!
//! Reading of the paper, and where it misbehaves, is written up in `docs/traceability.md`;
//! each function's doc says which equation it is and how it was read.
//!
//! * [`binomial`]: log-space binomial pmf and entropy sums (Eq. 5, Eq. 3).
//! * [`paper`]: Eq. 2, Eq. 4 and Eq. 6 exactly as printed, plus Eq. 2 with the bound
//!   the text implies.
//! * [`metrics`]: expected fraction of traced users, degree of anonymity (Díaz et al.).
//! * [`designs`]: per-user trace probabilities of concrete share-routing mechanisms: the
//!   paper's design with `n_m` shares, and this system's sealed-envelope design.
//! * [`montecarlo`]: simulation of those mechanisms, compared with the formulas.
//! * [`report`] and [`figure`]: the `trace-model` command's outputs.

pub mod binomial;
pub mod cli;
pub mod designs;
pub mod figure;
pub mod metrics;
pub mod montecarlo;
pub mod paper;
pub mod report;

use serde::Serialize;

/// Base of the logarithms in Eq. 3 and Eq. 6. The paper never says; we default to 2
/// (bits), the base of Díaz et al. (ref. 38) and Serjantov–Danezis (ref. 37), which the paper cites
/// for the method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogBase {
    /// Bits.
    #[value(name = "2")]
    Two,
    /// Nats.
    #[value(name = "e")]
    E,
}

impl LogBase {
    /// Converts an entropy in nats to this base.
    pub fn from_nats(self, nats: f64) -> f64 {
        match self {
            LogBase::Two => nats / std::f64::consts::LN_2,
            LogBase::E => nats,
        }
    }

    /// The JSON value of `log_base`: the number 2 or the string "e".
    pub fn json(self) -> serde_json::Value {
        match self {
            LogBase::Two => serde_json::json!(2),
            LogBase::E => serde_json::json!("e"),
        }
    }
}

/// Largest population the closed forms accept. Their sums cost O(√n) (only the terms
/// around the mode are representable) and allocate nothing: 10^8 users take 0.05 s; the
/// bound only keeps `n` far inside `f64`'s exact integers.
pub const MAX_USERS: u64 = 100_000_000;

/// A system configuration and an adversary, in the paper's notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Params {
    /// `n`: users (Eq. 5).
    pub users: u64,
    /// `n_e`: entry servers (relays).
    pub entries: u64,
    /// `n_x`: exchange servers.
    pub exchanges: u64,
    /// `n'_e` (Eq. 4), also `n_c` (Eq. 2): corrupted entry servers.
    pub corrupt_entries: u64,
    /// `n'_x`: corrupted exchange servers.
    pub corrupt_exchanges: u64,
    /// `n_m` (§5.1): shares per message, each through its own entry server.
    pub shares: u64,
}

/// Why a parameter set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("--users must be at least 1 (got 0)")]
    NoUsers,
    #[error("--users {0} is above the supported maximum {MAX_USERS}")]
    TooManyUsers(u64),
    #[error("--entries must be at least 1 (got 0)")]
    NoEntries,
    #[error("--exchanges must be at least 1 (got 0)")]
    NoExchanges,
    #[error("--corrupt-entries {ce} exceeds --entries {ne}")]
    CorruptEntries { ce: u64, ne: u64 },
    #[error("--corrupt-exchanges {cx} exceeds --exchanges {nx}")]
    CorruptExchanges { cx: u64, nx: u64 },
    #[error("--shares must be at least 1 (got 0)")]
    NoShares,
    #[error("--shares {s} exceeds --entries {ne}: each share needs its own entry server (§5.1)")]
    SharesExceedEntries { s: u64, ne: u64 },
    #[error(
        "--shares {s} exceeds --exchanges {nx}: each share goes to its own exchange server (§4.2)"
    )]
    SharesExceedExchanges { s: u64, nx: u64 },
}

impl Params {
    /// Validates a configuration.
    pub fn new(
        users: u64,
        entries: u64,
        exchanges: u64,
        corrupt_entries: u64,
        corrupt_exchanges: u64,
        shares: u64,
    ) -> Result<Self, ParamError> {
        if users == 0 {
            return Err(ParamError::NoUsers);
        }
        if users > MAX_USERS {
            return Err(ParamError::TooManyUsers(users));
        }
        if entries == 0 {
            return Err(ParamError::NoEntries);
        }
        if exchanges == 0 {
            return Err(ParamError::NoExchanges);
        }
        if corrupt_entries > entries {
            return Err(ParamError::CorruptEntries {
                ce: corrupt_entries,
                ne: entries,
            });
        }
        if corrupt_exchanges > exchanges {
            return Err(ParamError::CorruptExchanges {
                cx: corrupt_exchanges,
                nx: exchanges,
            });
        }
        if shares == 0 {
            return Err(ParamError::NoShares);
        }
        if shares > entries {
            return Err(ParamError::SharesExceedEntries {
                s: shares,
                ne: entries,
            });
        }
        if shares > exchanges {
            return Err(ParamError::SharesExceedExchanges {
                s: shares,
                nx: exchanges,
            });
        }
        Ok(Params {
            users,
            entries,
            exchanges,
            corrupt_entries,
            corrupt_exchanges,
            shares,
        })
    }

    /// The same system with a different adversary (used by the figure sweeps).
    pub fn with_corruption(
        self,
        corrupt_entries: u64,
        corrupt_exchanges: u64,
    ) -> Result<Self, ParamError> {
        Params::new(
            self.users,
            self.entries,
            self.exchanges,
            corrupt_entries,
            corrupt_exchanges,
            self.shares,
        )
    }
}
