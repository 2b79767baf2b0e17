//! The `trace-model` subcommand: arguments and what it prints.

use std::path::PathBuf;

use clap::Args;

use super::figure::{
    Figure, FigureConfigError, FigureError, FIG6_ENTRIES, FIG6_EXCHANGES, FIG6_USERS,
};
use super::montecarlo::{self, McError};
use super::report::{MonteCarlo, Report};
use super::{LogBase, ParamError, Params};

/// `acs-proofs trace-model`: the paper's traceability model (Eq. 2, 4, 5, 6), sound
/// metrics beside it, and this system's design. Defaults are the paper's Fig. 6
/// configuration.
#[derive(Debug, Args)]
pub struct TraceModelArgs {
    /// Users, n.
    #[arg(long, default_value_t = FIG6_USERS)]
    pub users: u64,
    /// Entry servers (relays), n_e.
    #[arg(long, default_value_t = FIG6_ENTRIES)]
    pub entries: u64,
    /// Exchange servers, n_x [default: 5, the paper's; 3 with --figure acs].
    #[arg(long)]
    pub exchanges: Option<u64>,
    /// Corrupted entry servers, n'_e.
    #[arg(long, required_unless_present = "figure", conflicts_with = "figure")]
    pub corrupt_entries: Option<u64>,
    /// Corrupted exchange servers, n'_x.
    #[arg(long, required_unless_present = "figure", conflicts_with = "figure")]
    pub corrupt_exchanges: Option<u64>,
    /// Shares per message, n_m (§5.1): each through its own entry server.
    #[arg(long, default_value_t = 3)]
    pub shares: u64,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub json: bool,
    /// Base of the logarithm in Eq. 3 and Eq. 6 (the paper does not say): 2 gives bits.
    #[arg(long, value_enum, default_value = "2")]
    pub log_base: LogBase,
    /// Reproduce a figure of the paper instead of one configuration.
    #[arg(long, value_enum)]
    pub figure: Option<Figure>,
    /// Directory for the figure's SVG, JSON and CSV files.
    #[arg(long, requires = "figure")]
    pub out: Option<PathBuf>,
    /// Also simulate the mechanisms and compare with the formulas.
    #[arg(long, conflicts_with = "figure")]
    pub monte_carlo: bool,
    /// Monte-Carlo trials (each a fresh adversary and fresh user choices).
    #[arg(long, default_value_t = 1000, requires = "monte_carlo")]
    pub trials: u64,
    /// Monte-Carlo seed.
    #[arg(long, default_value_t = 1, requires = "monte_carlo")]
    pub seed: u64,
}

/// Why `trace-model` failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error(transparent)]
    MonteCarlo(#[from] McError),
    #[error(transparent)]
    Figure(#[from] FigureError),
    #[error(transparent)]
    FigureConfig(#[from] FigureConfigError),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs `trace-model`, returning what to print on stdout.
pub fn run(args: &TraceModelArgs) -> Result<String, TraceError> {
    if let Some(figure) = args.figure {
        let exchanges = args.exchanges.unwrap_or(figure.default_exchanges());
        let base = Params::new(args.users, args.entries, exchanges, 0, 0, args.shares)?;
        let data = figure.compute(base, args.log_base)?;
        let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
        let written = data.write(&dir)?;
        if args.json {
            return Ok(serde_json::to_string_pretty(&data)?);
        }
        let mut out = data.to_markdown();
        out.push_str("\nwrote:");
        for p in written {
            out.push_str(&format!(" {}", p.display()));
        }
        return Ok(out);
    }
    // clap guarantees both are present without --figure.
    let (ce, cx) = (
        args.corrupt_entries.unwrap_or(0),
        args.corrupt_exchanges.unwrap_or(0),
    );
    let exchanges = args.exchanges.unwrap_or(FIG6_EXCHANGES);
    let params = Params::new(args.users, args.entries, exchanges, ce, cx, args.shares)?;
    let mut report = Report::new(params, args.log_base);
    if args.monte_carlo {
        let results = montecarlo::run(&params, args.trials, args.seed)?;
        report.monte_carlo = Some(MonteCarlo {
            seed: args.seed,
            results,
        });
    }
    if args.json {
        Ok(serde_json::to_string(&report)?)
    } else {
        Ok(report.to_text(args.log_base))
    }
}
