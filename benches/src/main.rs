//! `acs-bench`: scaling runs of the three-party engine, one JSON object per run.
//!
//! Every run makes random inputs, XOR-shares them as users would, runs the three parties
//! in this process over in-memory channels, reconstructs the outputs and verifies them
//! against a plaintext computation; it exits non-zero if verification fails.

mod cheat;
mod net;
mod report;
mod round;
mod sort;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Large tables as transparent huge pages (`acs_engine::alloc`): fewer page faults at scale.
#[global_allocator]
static ALLOC: acs_engine::alloc::HugePageAlloc = acs_engine::alloc::HugePageAlloc;

#[derive(Parser, Debug)]
#[command(name = "acs-bench", about = "ACS engine benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sort n secret-shared records by key (oblivious quicksort or bitonic network).
    Sort(sort::SortArgs),
    /// One exchange round (or a few) at scale, verified against the ideal round.
    Round(round::RoundArgs),
    /// One round in which one party deviates at a chosen place: was it detected, who was
    /// blamed, did any user accept a wrong output (bench-only cheating code).
    Cheat(cheat::CheatArgs),
    /// Run the sort and round grids as child processes; write JSON, SVG plots and the
    /// generated section of benchmarks.md.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    acs_engine::alloc::configure();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sort(args) => sort::run(&args),
        Command::Round(args) => round::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Cheat(args) => cheat::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("acs-bench: VERIFICATION FAILED");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("acs-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Sets the size of rayon's global pool (all local parallel work of all three parties).
pub fn set_threads(threads: Option<usize>) -> Result<usize, String> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        if t == 0 {
            return Err("--threads must be at least 1".into());
        }
        b = b.num_threads(t);
    }
    b.build_global().map_err(|e| e.to_string())?;
    Ok(rayon::current_num_threads())
}
