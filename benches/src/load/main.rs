//! `acs-load`: the load generator of issue 7. It drives many simulated users through real
//! `acs` processes (three exchange servers and `E` entry relays, from a deployment it
//! writes with `acs certs` and `acs master`) over TLS on loopback, for a number of rounds,
//! and reports registration time, per-round latency (the servers' `round committed` log
//! lines and the users' own clocks), message outcomes, and every process's memory after
//! each round, with a verdict on whether the servers' memory stayed flat.
//!
//! Users are `acs_transport::user::User`s run by `acs-load driver` child processes (this
//! same binary), so no process needs more file descriptors than the limit allows.

mod deploy;
mod driver;
mod procs;
mod report;
mod run;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "acs-load",
    about = "Load generator: simulated users through real acs exchange servers and entry relays over TLS on loopback",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// (internal) Run a share of the users; started by acs-load itself.
    #[command(hide = true)]
    Driver {
        /// The driver's specification (JSON, written by the parent).
        #[arg(long)]
        spec: PathBuf,
    },
}

/// The load run's flags.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Simulated users.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Measured rounds (every user takes part in each).
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
    /// Entry relay processes [default: enough that each stays within 80% of the open-file
    /// limit, at least 3].
    #[arg(long)]
    pub entries: Option<u32>,
    /// Relays each user connects to (one TLS connection each); its three shares go through
    /// different ones where it has three.
    #[arg(long, default_value_t = 3)]
    pub relays_per_user: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 256)]
    pub msg_size: usize,
    /// Driver processes running the users [default: enough that each stays within 80% of
    /// the open-file limit].
    #[arg(long)]
    pub drivers: Option<usize>,
    /// Store capacity of the exchange servers [default: a tenth of the users, at least 16].
    #[arg(long)]
    pub store_capacity: Option<usize>,
    /// Submission window in ms [default: 2000 + users / 2, enough for every user to
    /// submit on a loaded two-core host].
    #[arg(long)]
    pub window_ms: Option<u64>,
    /// Users submit at a uniformly random time within this many ms after a short fixed
    /// delay (min(200, window / 5) ms) from the announcement [default: window / 4].
    #[arg(long)]
    pub spread_ms: Option<u64>,
    /// How long servers wait for late relay batches after the deadline (ms).
    #[arg(long, default_value_t = 5000)]
    pub grace_ms: u64,
    /// Probability that a user with nothing queued writes a message to another user
    /// (of its driver) in a round; otherwise it sends cover.
    #[arg(long, default_value_t = 0.5)]
    pub send_probability: f64,
    /// Registrations in flight at once per driver.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// After the measured rounds, at most this many drain rounds (no new messages) until
    /// every message written has arrived; then the exactly-once check.
    #[arg(long, default_value_t = 10)]
    pub max_drain_rounds: u64,
    /// A server's or relay's memory counts as flat when each of its growth figures (RSS
    /// after round 3 to after the last round, highest in-round RSS of rounds 5.. over
    /// rounds 2-4, VmHWM after round 4 to the end) is within this many percent ...
    #[arg(long, default_value_t = 10.0)]
    pub flat_tolerance: f64,
    /// ... or within this many MiB (small processes move by a few MiB of allocator noise).
    #[arg(long, default_value_t = 8.0)]
    pub flat_slack_mib: f64,
    /// Also write the report as `load-<users>.json` and `load-<users>.md` into this
    /// directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The acs binary [default: next to this executable].
    #[arg(long)]
    pub acs: Option<PathBuf>,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Keep the deployment directory (configuration, databases, every process's log).
    #[arg(long)]
    pub keep_dir: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Driver { spec }) = cli.command {
        return match driver::run(&spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("acs-load driver: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run::run(&cli.load) {
        Ok(report) => {
            let table = report.table();
            if let Some(dir) = &cli.load.out {
                if let Err(e) = write_out(dir, &report, &table) {
                    eprintln!("acs-load: {e}");
                    return ExitCode::from(2);
                }
            }
            if cli.load.json {
                eprint!("{table}");
                match serde_json::to_string(&report) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("acs-load: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{table}");
            }
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("acs-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes `load-<users>.json` and `load-<users>.md` into `dir`.
fn write_out(
    dir: &std::path::Path,
    report: &report::LoadReport,
    table: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = format!("load-{}", report.setup.users);
    let json = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    for (ext, bytes) in [("json", json.as_slice()), ("md", table.as_bytes())] {
        let p = dir.join(format!("{base}.{ext}"));
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("acs-load: wrote {}", p.display());
    }
    Ok(())
}
