//! The `acs-proofs` command: one subcommand per analysis; each lives in the library.

use std::io::Write as _;

use clap::{Parser, Subcommand};

use acs_proofs::audit::cli::AuditArgs;
use acs_proofs::trace::cli::TraceModelArgs;

#[derive(Debug, Parser)]
#[command(
    name = "acs-proofs",
    version,
    about = "ACS analysis, one subcommand per analysis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The paper's traceability model (Eq. 2, 4-6, Fig. 6), sound metrics, Monte-Carlo.
    TraceModel(TraceModelArgs),
    /// The leakage audit of the exchange round (design §6): exit 0 when no leak is
    /// found, 2 when one is.
    Audit(AuditArgs),
}

fn main() {
    let cli = Cli::parse();
    let mut leak = false;
    let result = match &cli.command {
        Command::TraceModel(args) => acs_proofs::trace::cli::run(args).map_err(|e| e.to_string()),
        Command::Audit(args) => acs_proofs::audit::cli::run(args)
            .map(|o| {
                leak = o.leak;
                o.output
            })
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(out) => {
            // A closed pipe (`acs-proofs … | head`) is the reader's choice, not an error.
            if let Err(e) = writeln!(std::io::stdout().lock(), "{out}") {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("acs-proofs: error: cannot write to stdout: {e}");
                    std::process::exit(1);
                }
            }
            if leak {
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("acs-proofs: error: {e}");
            std::process::exit(1);
        }
    }
}
