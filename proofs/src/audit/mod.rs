//! The leakage audit of the exchange round (design §1 and §6; `docs/leakage.md`).
//!
//! Three checks, each over every value every party opened:
//! 1. static ([`doc_check`]): every opening names a reason from the closed
//!    [`acs_engine::Reason`] enum, and `docs/leakage.md` explains each variant;
//! 2. two worlds: runs of secret traffic patterns with the same public leakage
//!    ([`workload`]) go through the real three-party round ([`harness`]); what must be
//!    a function of the public leakage alone is compared exactly, and features of the
//!    rest ([`features`]) are compared in distribution with two-sample
//!    Kolmogorov–Smirnov tests at a Bonferroni-corrected level ([`stats`]), whose power
//!    against modelled leaks is simulated ([`power`]);
//! 3. [`leaky`]: a round that opens one secret more, which the same checks must flag.
//!
//! [`report`] runs it all; [`cli`] is the `audit` subcommand.

pub mod cli;
pub mod doc_check;
pub mod features;
pub mod harness;
pub mod leaky;
pub mod power;
pub mod report;
pub mod stats;
pub mod workload;
