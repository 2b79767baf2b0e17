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

/// CPU seconds (user and system, all threads) this process has used so far, from
/// `/proc/self/stat`; `None` where that is not available. Beside wall-clock seconds this
/// is the steadier figure on a shared or noisy machine: time a virtual CPU spends
/// waiting for its host, or other processes spend on the cores, is not counted.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the
    // last ')'. utime and stime are fields 14 and 15, in clock ticks of USER_HZ, which
    // is 100 in the Linux user ABI.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The most resident memory this process has held so far, in bytes (`VmHWM` of
/// `/proc/self/status`); `None` where that is not available. The three parties run in
/// this process with either `--net`, so it covers all of them and the harness (its
/// inputs, the plaintext reference): what issue targets such as "peak RSS ≤ 8 GB" mean.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `peak_rss_bytes` for the text report.
pub fn peak_text(peak: Option<u64>) -> String {
    peak.map_or("peak memory unknown".into(), |b| {
        format!("peak {:.2} GB", b as f64 / 1e9)
    })
}

/// CPU seconds from the earliest start to the latest end of the parties' `(start, end)`
/// readings of [`process_cpu_seconds`]; `None` if any is missing.
pub fn cpu_span(readings: impl Iterator<Item = Option<(f64, f64)>>) -> Option<f64> {
    let mut span: Option<(f64, f64)> = None;
    for r in readings {
        let (s, e) = r?;
        span = Some(span.map_or((s, e), |(a, b)| (a.min(s), b.max(e))));
    }
    // Readings are whole ticks (10 ms): round away the float noise of their difference.
    span.map(|(s, e)| ((e - s) * 100.0).round() / 100.0)
}

/// `cpu_seconds` for the text report.
pub fn cpu_text(cpu: Option<f64>) -> String {
    cpu.map_or("CPU time unknown".into(), |c| format!("{c:.2} s CPU"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_cpu_time_is_read_and_grows_with_work() {
        let before = super::process_cpu_seconds().expect("/proc/self/stat on Linux");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 150 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = super::process_cpu_seconds().expect("/proc/self/stat on Linux");
        assert!(after >= before + 0.05, "{before} -> {after}");
    }

    #[test]
    fn peak_memory_is_read_and_covers_what_was_touched() {
        let mut v = vec![0u8; 64 << 20];
        for b in v.iter_mut().step_by(4096) {
            *b = 1;
        }
        std::hint::black_box(&v);
        let peak = super::peak_rss_bytes().expect("/proc/self/status on Linux");
        assert!(peak >= 64 << 20, "peak {peak} bytes after touching 64 MiB");
    }
}
