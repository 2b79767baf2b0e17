//! The `acs-proofs` command: one subcommand per analysis; each lives in the library.

use std::io::Write as _;

use clap::{Parser, Subcommand};

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
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::TraceModel(args) => acs_proofs::trace::cli::run(args).map_err(|e| e.to_string()),
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
        }
        Err(e) => {
            eprintln!("acs-proofs: error: {e}");
            std::process::exit(1);
        }
    }
}
