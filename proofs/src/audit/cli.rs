//! The `audit` subcommand: arguments and what it prints.

use clap::Args;

use super::harness::Variant;
use super::leaky::{Leak, LeakKind};
use super::report::{audit, AuditConfig, AuditError, AuditReport};

/// `acs-proofs audit`: the leakage audit of the exchange round (design §6). Exits 0
/// when no leak is found, 2 when one is.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Runs per workload (each a fresh set of three parties running three rounds).
    #[arg(long, default_value_t = 400)]
    pub runs: usize,
    /// Online users (the same online set in every run).
    #[arg(long, default_value_t = 24)]
    pub users: usize,
    /// Store capacity C [default: the number of users].
    #[arg(long)]
    pub store: Option<usize>,
    /// Payload bytes (a multiple of 8).
    #[arg(long, default_value_t = 32)]
    pub payload_bytes: usize,
    /// Family-wise significance level of the statistical test (Bonferroni-corrected).
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// Seed of the workloads' secret choices (the parties' own randomness is always
    /// fresh).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Audit a deliberately leaky round instead of the real one.
    #[arg(long)]
    pub leaky: bool,
    /// What the leaky round opens.
    #[arg(long, value_enum, default_value = "real-flags", requires = "leaky")]
    pub leak: LeakKind,
    /// How many of the shuffled flags the leaky round opens [default: all].
    #[arg(long, requires = "leaky")]
    pub leak_flags: Option<usize>,
    /// Simulated audits per modelled leak for the power figures (0 skips them).
    #[arg(long, default_value_t = 1000)]
    pub power_trials: usize,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub json: bool,
}

/// What `audit` prints, and whether it found a leak.
#[derive(Debug)]
pub struct AuditOutcome {
    /// Text or JSON for stdout.
    pub output: String,
    /// Whether a leak was found (the exit code is then non-zero).
    pub leak: bool,
}

/// Why `audit` failed to run.
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("--payload-bytes must be a positive multiple of 8")]
    Payload,
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl AuditArgs {
    /// The audit these arguments ask for.
    pub fn config(&self) -> Result<AuditConfig, AuditCliError> {
        if self.payload_bytes == 0 || !self.payload_bytes.is_multiple_of(8) {
            return Err(AuditCliError::Payload);
        }
        Ok(AuditConfig {
            users: self.users,
            store: self.store.unwrap_or(self.users),
            payload_words: self.payload_bytes / 8,
            runs: self.runs,
            alpha: self.alpha,
            seed: self.seed,
            variant: if self.leaky {
                Variant::Leaky(Leak {
                    kind: self.leak,
                    flags: self.leak_flags,
                })
            } else {
                Variant::Real
            },
            power_trials: self.power_trials,
        })
    }
}

/// Runs `audit`.
pub fn run(args: &AuditArgs) -> Result<AuditOutcome, AuditCliError> {
    let report: AuditReport = audit(&args.config()?)?;
    let output = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.text()
    };
    Ok(AuditOutcome {
        output,
        leak: report.leak,
    })
}
