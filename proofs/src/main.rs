//! The `acs-proofs` command: one subcommand per analysis; each lives in the library.

use clap::{Parser, Subcommand};

use acs_proofs::trace::cli::TraceModelArgs;

#[derive(Debug, Parser)]
#[command(
    name = "acs-proofs",
    version,
    about = "ACS analysis: traceability model and leakage audit"
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
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("acs-proofs: error: {e}");
            std::process::exit(1);
        }
    }
}
