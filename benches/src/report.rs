//! `acs-bench report`: the sort and round grids, as JSON, SVG plots and the generated
//! section of `docs/benchmarks.md`.
//!
//! Each point runs as a child process of this same binary (`sort`/`round … --threads T
//! --json`): rayon's global pool can be sized only once per process, and a child also
//! starts with a fresh heap, so one point's memory does not colour the next.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// First line of the generated section of `benchmarks.md`.
pub const BEGIN_MARKER: &str = "<!-- BEGIN acs-bench report: generated, rewritten by every `acs-bench report` run; edit only outside these markers -->";
/// Last line of the generated section.
pub const END_MARKER: &str = "<!-- END acs-bench report -->";

const ALGOS: [&str; 2] = ["quick", "bitonic"];
const SORT_THREADS: [usize; 2] = [1, 2];
const PAYLOADS: [usize; 2] = [0, 256];
/// The paper's Fig. 4 message sizes.
const MSG_SIZES: [usize; 4] = [1024, 2048, 4096, 8192];
/// Message size of the large-population round points.
const LARGE_MSG: usize = 256;
/// A point whose child ran longer than this many seconds is not repeated: noise matters
/// less there, and repeating it would cost minutes.
const REPEAT_BELOW: f64 = 30.0;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Largest sort size (a number or 2^k); sorts run at 2^10, 2^12, … up to it, and
    /// the round grid's 10^4/10^5/10^6-user points run where they are at most this.
    #[arg(long, default_value = "2^20", value_parser = parse_size)]
    max_n: usize,
    /// Directory to write `benchmarks.md` and `figures/bench/` into.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// A small grid that finishes in seconds (for tests and trying the report out).
    #[arg(long)]
    quick: bool,
    /// Skip a point whose time, extrapolated from the previous size of its series,
    /// exceeds this many seconds (and kill any child that runs five times as long).
    #[arg(long, default_value_t = 120.0)]
    point_limit: f64,
    /// Runs per point (different seeds; a point whose run takes over 30 s runs once);
    /// tables and plots show the median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    repeat: u32,
}

/// Accepts `262144` or `2^18`.
fn parse_size(s: &str) -> Result<usize, String> {
    let v = match s.split_once('^') {
        Some((base, exp)) => {
            let base: usize = base.trim().parse().map_err(|e| format!("{s}: {e}"))?;
            let exp: u32 = exp.trim().parse().map_err(|e| format!("{s}: {e}"))?;
            base.checked_pow(exp).ok_or(format!("{s} overflows"))?
        }
        None => s.trim().parse().map_err(|e| format!("{s}: {e}"))?,
    };
    if v == 0 {
        return Err("size must be positive".into());
    }
    Ok(v)
}

/// One sort configuration (a series in the tables and plots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SortConfig {
    pub algo: &'static str,
    pub threads: usize,
    pub payload: usize,
}

impl SortConfig {
    fn all() -> Vec<SortConfig> {
        let mut v = Vec::new();
        for algo in ALGOS {
            for threads in SORT_THREADS {
                for payload in PAYLOADS {
                    v.push(SortConfig {
                        algo,
                        threads,
                        payload,
                    });
                }
            }
        }
        v
    }

    /// The name used in every table, legend and JSON `config` field.
    pub fn label(&self) -> String {
        format!(
            "{}, {} thread{}, payload {} B",
            self.algo,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.payload
        )
    }

    /// Work of size `n` relative to size `n0` under the algorithm's complexity:
    /// n log n for the quicksort, n log² n for the bitonic network.
    fn growth(&self, n0: usize, n: usize) -> f64 {
        let r = n as f64 / n0 as f64;
        let l = (n as f64).log2() / (n0 as f64).log2();
        if self.algo == "bitonic" {
            r * l * l
        } else {
            r * l
        }
    }
}

/// What `acs-bench sort --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SortRun {
    pub algo: String,
    pub n: usize,
    pub key_bits: u32,
    pub payload: usize,
    pub threads: usize,
    pub seconds: f64,
    pub bytes_per_party: u64,
    pub rounds: u64,
    pub levels: usize,
    pub verified: bool,
}

/// What `acs-bench round --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundRun {
    pub users: usize,
    pub msg_size: usize,
    pub store: usize,
    pub threads: usize,
    pub seconds: f64,
    pub seconds_per_round: Vec<f64>,
    pub bytes_per_party: u64,
    pub rounds: u64,
    pub verified: bool,
    /// Seconds per phase of the last round (slowest party), where the runner reports them.
    #[serde(default)]
    pub phases: Vec<(String, f64)>,
}

/// One measured sort point: every run, and the medians the tables show.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SortPoint {
    pub config: String,
    pub algo: String,
    pub threads: usize,
    pub payload: usize,
    pub n: usize,
    pub seconds: f64,
    pub bytes_per_party: u64,
    pub bytes_per_element: f64,
    pub rounds: u64,
    pub levels: usize,
    pub verified: bool,
    /// Median wall time of the child process (inputs, sort, verification).
    pub wall_seconds: f64,
    pub runs: Vec<SortRun>,
}

/// One measured round point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundPoint {
    pub users: usize,
    pub msg_size: usize,
    pub store: usize,
    pub threads: usize,
    pub seconds: f64,
    pub bytes_per_party: u64,
    pub rounds: u64,
    pub verified: bool,
    /// Median wall time of the child process (workload, all rounds, verification).
    pub wall_seconds: f64,
    pub runs: Vec<RoundRun>,
}

/// A point not measured, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub config: String,
    pub size: usize,
    pub reason: String,
}

/// A point whose child failed (verification, error, crash or timeout).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failed {
    pub config: String,
    pub size: usize,
    pub error: String,
}

/// The run's circumstances, written into both JSON files and the markdown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub date_utc: String,
    pub command: String,
    pub quick: bool,
    pub max_n: usize,
    pub point_limit_seconds: f64,
    pub repeat: u32,
    pub profile: String,
    pub commit: String,
    /// Tracked files with uncommitted changes when the run started.
    pub dirty_paths: Vec<String>,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub loadavg_before: [f64; 3],
    pub loadavg_after: [f64; 3],
    /// CPU time that processes other than this report and its children used during the
    /// run, as an average number of busy cores.
    pub other_load_cores: Option<f64>,
    pub wall_seconds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SortGrid {
    pub meta: Meta,
    pub sizes: Vec<usize>,
    pub configs: Vec<String>,
    pub points: Vec<SortPoint>,
    pub skipped: Vec<Skipped>,
    pub failed: Vec<Failed>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoundGrid {
    pub meta: Meta,
    pub threads: usize,
    pub users: Vec<usize>,
    pub msg_sizes: Vec<usize>,
    pub large_users: Vec<usize>,
    pub large_msg_size: usize,
    pub points: Vec<RoundPoint>,
    pub skipped: Vec<Skipped>,
    pub failed: Vec<Failed>,
}

struct Grids {
    sort_sizes: Vec<usize>,
    round_users: Vec<usize>,
    large_users: Vec<usize>,
}

impl Grids {
    fn new(args: &ReportArgs) -> Grids {
        if args.quick {
            return Grids {
                sort_sizes: vec![1 << 6, 1 << 8],
                round_users: vec![16, 32],
                large_users: vec![64],
            };
        }
        Grids {
            sort_sizes: (5..)
                .map(|k| 1usize << (2 * k))
                .take_while(|n| *n <= args.max_n)
                .collect(),
            round_users: (1..=10).map(|k| 100 * k).collect(),
            large_users: [10_000, 100_000, 1_000_000]
                .into_iter()
                .filter(|u| *u <= args.max_n)
                .collect(),
        }
    }
}

pub fn run(args: &ReportArgs) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let grids = Grids::new(args);
    let round_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let configs = SortConfig::all();
    let fig_dir = args.out.join("figures").join("bench");
    let md_path = args.out.join("benchmarks.md");
    // Refuse broken markers before a long run rather than after it.
    write_merged(&md_path, &format!("{BEGIN_MARKER}\n{END_MARKER}\n"), true)?;
    std::fs::create_dir_all(&fig_dir)
        .map_err(|e| format!("cannot create {}: {e}", fig_dir.display()))?;

    let started = Instant::now();
    let load_before = loadavg();
    let cpu_before = CpuTicks::now();
    let mut meta = start_meta(args, load_before);

    let sort_points = grids.sort_sizes.len() * configs.len();
    let round_points = grids.round_users.len() * MSG_SIZES.len() + grids.large_users.len();
    let bar = ProgressBar::new(((sort_points + round_points) * args.repeat as usize) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} runs, eta {eta} — {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let log = |msg: String| {
        if bar.is_hidden() {
            eprintln!("acs-bench report: {msg}");
        } else {
            bar.println(msg);
        }
    };
    let limit = Duration::from_secs_f64(args.point_limit * 5.0);

    // Sort grid, size-major so that a change in machine load hits every series alike.
    let mut sort = SortGrid {
        meta: meta.clone(),
        sizes: grids.sort_sizes.clone(),
        configs: configs.iter().map(SortConfig::label).collect(),
        points: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
    };
    // Per series: the last measured (n, seconds), or None once a point was dropped.
    let mut last: HashMap<SortConfig, Option<(usize, f64)>> = HashMap::new();
    for &n in &grids.sort_sizes {
        for cfg in &configs {
            let label = cfg.label();
            bar.set_message(format!("sort n={n}: {label}"));
            let skip = match last.get(cfg) {
                Some(None) => Some("a smaller size of this series was skipped or failed".into()),
                Some(Some((n0, t0))) => {
                    let predicted = t0 * cfg.growth(*n0, n);
                    (predicted > args.point_limit).then(|| {
                        format!(
                            "predicted {} (from {} at n={n0}) > {}",
                            secs(predicted),
                            secs(*t0),
                            secs(args.point_limit)
                        )
                    })
                }
                None => None,
            };
            if let Some(reason) = skip {
                log(format!("skip sort n={n} {label}: {reason}"));
                sort.skipped.push(Skipped {
                    config: label,
                    size: n,
                    reason,
                });
                last.insert(*cfg, None);
                bar.inc(args.repeat as u64);
                continue;
            }
            let mut runs = Vec::new();
            let mut error = None;
            for rep in 0..args.repeat {
                let argv = vec![
                    "sort".to_string(),
                    format!("--n={n}"),
                    format!("--algo={}", cfg.algo),
                    format!("--payload={}", cfg.payload),
                    format!("--threads={}", cfg.threads),
                    format!("--seed={}", rep + 1),
                    "--json".into(),
                ];
                match run_child::<SortRun>(&exe, &argv, limit) {
                    Ok((r, wall)) if r.verified => runs.push((r, wall)),
                    Ok(_) => error = Some("verification failed".to_string()),
                    Err(e) => error = Some(e),
                }
                bar.inc(1);
                if error.is_some() || runs.last().is_some_and(|r| r.1 > REPEAT_BELOW) {
                    bar.inc((args.repeat - rep - 1) as u64);
                    break;
                }
            }
            if let Some(error) = error {
                log(format!("FAILED sort n={n} {label}: {error}"));
                sort.failed.push(Failed {
                    config: label,
                    size: n,
                    error,
                });
                last.insert(*cfg, None);
                continue;
            }
            let p = sort_point(cfg, n, runs);
            log(format!(
                "sort n={n} {label}: {:.3} s, {:.1} MB/party, {} rounds",
                p.seconds,
                p.bytes_per_party as f64 / 1e6,
                p.rounds
            ));
            last.insert(*cfg, Some((n, p.wall_seconds)));
            sort.points.push(p);
        }
    }

    // Round grid: the paper's Fig. 4 (users × message size), then large populations.
    let mut round = RoundGrid {
        meta: meta.clone(),
        threads: round_threads,
        users: grids.round_users.clone(),
        msg_sizes: MSG_SIZES.to_vec(),
        large_users: grids.large_users.clone(),
        large_msg_size: LARGE_MSG,
        points: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
    };
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for &u in &grids.round_users {
        for m in MSG_SIZES {
            jobs.push((u, m));
        }
    }
    jobs.extend(grids.large_users.iter().map(|u| (*u, LARGE_MSG)));
    let mut last_large: Option<Option<(usize, f64)>> = None;
    for (users, msg) in jobs {
        let large = grids.large_users.contains(&users) && msg == LARGE_MSG;
        let label = round_label(msg);
        bar.set_message(format!("round {users} users, {label}"));
        let skip = match (large, last_large) {
            (true, Some(None)) => {
                Some("a smaller size of this series was skipped or failed".into())
            }
            (true, Some(Some((u0, t0)))) => {
                // A round is dominated by sorting its records: n log n.
                let predicted =
                    t0 * users as f64 / u0 as f64 * (users as f64).log2() / (u0 as f64).log2();
                (predicted > args.point_limit).then(|| {
                    format!(
                        "predicted {} (from {} at {u0} users) > {}",
                        secs(predicted),
                        secs(t0),
                        secs(args.point_limit)
                    )
                })
            }
            _ => None,
        };
        if let Some(reason) = skip {
            log(format!("skip round {users} users {label}: {reason}"));
            round.skipped.push(Skipped {
                config: label,
                size: users,
                reason,
            });
            last_large = Some(None);
            bar.inc(args.repeat as u64);
            continue;
        }
        let mut runs = Vec::new();
        let mut error = None;
        for rep in 0..args.repeat {
            let argv = vec![
                "round".to_string(),
                format!("--users={users}"),
                format!("--msg-size={msg}"),
                format!("--threads={round_threads}"),
                format!("--seed={}", rep + 1),
                "--json".into(),
            ];
            match run_child::<RoundRun>(&exe, &argv, limit) {
                Ok((r, wall)) if r.verified => runs.push((r, wall)),
                Ok(_) => error = Some("verification failed".to_string()),
                Err(e) => error = Some(e),
            }
            bar.inc(1);
            if error.is_some() || runs.last().is_some_and(|r| r.1 > REPEAT_BELOW) {
                bar.inc((args.repeat - rep - 1) as u64);
                break;
            }
        }
        if let Some(error) = error {
            log(format!("FAILED round {users} users {label}: {error}"));
            round.failed.push(Failed {
                config: label,
                size: users,
                error,
            });
            if large {
                last_large = Some(None);
            }
            continue;
        }
        let p = round_point(users, msg, runs);
        log(format!(
            "round {users} users {label}: {:.3} s, {:.1} MB/party, {} rounds",
            p.seconds,
            p.bytes_per_party as f64 / 1e6,
            p.rounds
        ));
        if large {
            last_large = Some(Some((users, p.wall_seconds)));
        }
        round.points.push(p);
    }
    bar.finish_and_clear();

    meta.loadavg_after = loadavg();
    meta.wall_seconds = started.elapsed().as_secs_f64();
    meta.other_load_cores = cpu_before.and_then(|b| {
        CpuTicks::now().map(|a| a.other_busy_since(&b) / meta.wall_seconds.max(1e-9))
    });
    sort.meta = meta.clone();
    round.meta = meta.clone();

    write_json(&fig_dir.join("sort.json"), &sort)?;
    write_json(&fig_dir.join("round.json"), &round)?;
    let figures = plot_all(&fig_dir, &sort, &round)?;
    let md = render_markdown(&sort, &round, &figures);
    write_merged(&md_path, &md, false)?;
    eprintln!(
        "acs-bench report: {} sort and {} round points measured, {} skipped, {} failed, in {:.0} s; wrote {} and {}",
        sort.points.len(),
        round.points.len(),
        sort.skipped.len() + round.skipped.len(),
        sort.failed.len() + round.failed.len(),
        meta.wall_seconds,
        md_path.display(),
        fig_dir.display()
    );
    let failed = sort.failed.len() + round.failed.len();
    if failed > 0 {
        return Err(format!(
            "{failed} point(s) failed (listed in {}); the files were written",
            md_path.display()
        ));
    }
    Ok(true)
}

/// Seconds with two significant digits at least.
fn secs(t: f64) -> String {
    if t >= 10.0 {
        format!("{t:.0} s")
    } else if t >= 1.0 {
        format!("{t:.1} s")
    } else {
        format!("{t:.2} s")
    }
}

fn round_label(msg: usize) -> String {
    format!("{} messages", msg_size(msg))
}

fn msg_size(msg: usize) -> String {
    if msg >= 1024 && msg.is_multiple_of(1024) {
        format!("{} KB", msg / 1024)
    } else {
        format!("{msg} B")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

fn sort_point(cfg: &SortConfig, n: usize, runs: Vec<(SortRun, f64)>) -> SortPoint {
    let wall_seconds = median(runs.iter().map(|r| r.1).collect());
    let runs: Vec<SortRun> = runs.into_iter().map(|r| r.0).collect();
    let bytes = median_u64(runs.iter().map(|r| r.bytes_per_party).collect());
    SortPoint {
        config: cfg.label(),
        algo: cfg.algo.into(),
        threads: cfg.threads,
        payload: cfg.payload,
        n,
        seconds: median(runs.iter().map(|r| r.seconds).collect()),
        bytes_per_party: bytes,
        bytes_per_element: bytes as f64 / n as f64,
        rounds: median_u64(runs.iter().map(|r| r.rounds).collect()),
        levels: median_u64(runs.iter().map(|r| r.levels as u64).collect()) as usize,
        verified: runs.iter().all(|r| r.verified),
        wall_seconds,
        runs,
    }
}

fn round_point(users: usize, msg: usize, runs: Vec<(RoundRun, f64)>) -> RoundPoint {
    let wall_seconds = median(runs.iter().map(|r| r.1).collect());
    let runs: Vec<RoundRun> = runs.into_iter().map(|r| r.0).collect();
    RoundPoint {
        users,
        msg_size: msg,
        store: runs[0].store,
        threads: runs[0].threads,
        seconds: median(runs.iter().map(|r| r.seconds).collect()),
        bytes_per_party: median_u64(runs.iter().map(|r| r.bytes_per_party).collect()),
        rounds: median_u64(runs.iter().map(|r| r.rounds).collect()),
        verified: runs.iter().all(|r| r.verified),
        wall_seconds,
        runs,
    }
}

/// Runs this binary with `argv`, kills it after `limit`, and parses the JSON object on
/// its last stdout line; also returns the child's wall time in seconds.
fn run_child<T: serde::de::DeserializeOwned>(
    exe: &Path,
    argv: &[String],
    limit: Duration,
) -> Result<(T, f64), String> {
    let mut child = Command::new(exe)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    };
    let wall = start.elapsed().as_secs_f64();
    let Some(status) = status else {
        return Err(format!("killed after {:.0} s", limit.as_secs_f64()));
    };
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match line {
        // Exit code 1 is a verification failure; the JSON still says so.
        Some(line) if status.success() || status.code() == Some(1) => {
            serde_json::from_str(line).map(|v| (v, wall)).map_err(|e| {
                format!(
                    "{status}, unparsable output {line:?}: {e}; {}",
                    tail(&stderr)
                )
            })
        }
        _ => Err(format!("{status}: {}", tail(&stderr))),
    }
}

// ---------------------------------------------------------------------------------------
// The machine and the tree.

fn start_meta(args: &ReportArgs, load: [f64; 3]) -> Meta {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, v)| v.trim().to_string());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
    let git = |a: &[&str]| {
        Command::new("git")
            .args(a)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let commit = git(&["rev-parse", "HEAD"]).map_or("unknown (not a git checkout)".into(), |s| {
        s.trim().to_string()
    });
    let dirty_paths = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| {
            s.lines()
                .filter_map(|l| l.get(3..))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Meta {
        date_utc: utc_now(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quick: args.quick,
        max_n: args.max_n,
        point_limit_seconds: args.point_limit,
        repeat: args.repeat,
        profile: if cfg!(debug_assertions) {
            "dev (debug assertions on; numbers are not representative)".into()
        } else {
            "release".into()
        },
        commit,
        dirty_paths,
        cpu_model,
        cores: cores.max(1),
        memory_gib,
        loadavg_before: load,
        loadavg_after: load,
        other_load_cores: None,
        wall_seconds: 0.0,
    }
}

fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|v| v.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// Busy CPU ticks of the whole machine and of this process with its waited-for children.
struct CpuTicks {
    machine: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        let machine = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<u64> = me
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 after the name.
        let own = fields.get(11..15)?.iter().sum();
        Some(CpuTicks { machine, own })
    }

    /// CPU seconds used by everything else since `before` (USER_HZ is 100 on Linux).
    fn other_busy_since(&self, before: &CpuTicks) -> f64 {
        let machine = self.machine.saturating_sub(before.machine) as f64;
        let own = self.own.saturating_sub(before.own) as f64;
        (machine - own).max(0.0) / 100.0
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

// ---------------------------------------------------------------------------------------
// Output files.

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    write_file(path, &(s + "\n"))
}

/// Writes via a temporary file and a rename, so a reader never sees half a file.
fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, contents).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Puts `generated` (which starts with [`BEGIN_MARKER`] and ends with [`END_MARKER`])
/// into `existing`: in place of an earlier generated section, else after the
/// hand-written text; everything outside the markers is kept as it was.
pub fn merge_generated(existing: Option<&str>, generated: &str) -> Result<String, String> {
    let Some(old) = existing else {
        return Ok(format!("# Benchmarks\n\n{generated}"));
    };
    let begin = old.find(BEGIN_MARKER);
    let end = old.find(END_MARKER);
    match (begin, end) {
        (None, None) => Ok(format!("{}\n\n{generated}", old.trim_end())),
        (Some(b), Some(e))
            if b < e
                && !old[b + 1..].contains(BEGIN_MARKER)
                && !old[e + 1..].contains(END_MARKER) =>
        {
            let mut after = &old[e + END_MARKER.len()..];
            after = after.strip_prefix('\n').unwrap_or(after);
            Ok(format!("{}{generated}{after}", &old[..b]))
        }
        _ => Err(format!(
            "the markers in the existing file are broken (need exactly one {BEGIN_MARKER:?} \
             before one {END_MARKER:?}); fix them by hand, nothing was overwritten"
        )),
    }
}

/// Merges `generated` into the file at `path`; with `dry_run`, only checks that it can.
fn write_merged(path: &Path, generated: &str, dry_run: bool) -> Result<(), String> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let merged = merge_generated(existing.as_deref(), generated)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if dry_run {
        return Ok(());
    }
    write_file(path, &merged)
}

// ---------------------------------------------------------------------------------------
// Plots.

struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    colour: usize,
    dashed: bool,
}

/// Line colours (the "tab10" palette's first five: distinct on white, and for most
/// colour-blind readers).
const COLOURS: [RGBColor; 5] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Axis scales of a plot.
#[derive(Clone, Copy)]
enum Axes {
    LogLog,
    Linear,
}

fn bounds(series: &[Series], log: bool, pick: fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let vals = series.iter().flat_map(|s| s.points.iter().map(pick));
    let lo = vals.clone().fold(f64::INFINITY, f64::min);
    let hi = vals.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.0, hi * 1.1 + 1e-9)
    }
}

fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (0.01..100_000.0).contains(&v.abs()) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

fn plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    axes: Axes,
    series: &[Series],
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let log = matches!(axes, Axes::LogLog);
    let (x0, x1) = bounds(series, log, |p| p.0);
    let (y0, mut y1) = bounds(series, log, |p| p.1);
    // Headroom above the data for the legend (about 18 px per entry of ~460 px).
    let legend = ((series.len() as f64 * 18.0 + 30.0) / 460.0).min(0.6);
    let grow = legend / (1.0 - legend);
    y1 = if log {
        y1 * (y1 / y0).powf(grow)
    } else {
        y1 * (1.0 + grow)
    };
    // The two scales are different types in plotters, so the drawing is written once for
    // each through this macro.
    macro_rules! draw {
        ($xr:expr, $yr:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d($xr, $yr)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .light_line_style(TRANSPARENT)
                .x_labels(10)
                .y_labels(10)
                .x_label_formatter(&|v| sci(*v))
                .y_label_formatter(&|v| sci(*v))
                .draw()
                .map_err(|x| e(&x))?;
            for s in series {
                let colour = COLOURS[s.colour % COLOURS.len()];
                let style = colour.stroke_width(2);
                let drawn = if s.dashed {
                    chart.draw_series(DashedLineSeries::new(s.points.clone(), 7, 4, style))
                } else {
                    chart.draw_series(LineSeries::new(s.points.clone(), style))
                }
                .map_err(|x| e(&x))?;
                let dashed = s.dashed;
                drawn.label(s.label.as_str()).legend(move |(x, y)| {
                    // Two strokes, with a gap between them when the series is dashed.
                    let gap = if dashed { 4 } else { 0 };
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], style)
                        + PathElement::new(vec![(7 + gap, 0), (18, 0)], style)
                });
                chart
                    .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                    .map_err(|x| e(&x))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|x| e(&x))?;
        }};
    }
    match axes {
        Axes::LogLog => draw!((x0..x1).log_scale(), (y0..y1).log_scale()),
        Axes::Linear => draw!(x0..x1, y0..y1),
    }
    root.present().map_err(|x| e(&x))
}

/// One figure: file name (under `figures/bench/`) and caption.
pub struct Figure {
    pub file: &'static str,
    pub caption: String,
}

fn plot_all(dir: &Path, sort: &SortGrid, round: &RoundGrid) -> Result<Vec<Figure>, String> {
    let configs = SortConfig::all();
    // Colour by algorithm and payload; 2 threads dashed.
    let colour = |c: &SortConfig| {
        ALGOS.iter().position(|a| *a == c.algo).unwrap_or(0) * 2
            + PAYLOADS.iter().position(|p| *p == c.payload).unwrap_or(0)
    };
    let sort_series = |f: fn(&SortPoint) -> f64, one_thread_only: bool| -> Vec<Series> {
        configs
            .iter()
            .filter(|c| !one_thread_only || c.threads == SORT_THREADS[0])
            .map(|c| Series {
                label: if one_thread_only {
                    format!("{}, payload {} B", c.algo, c.payload)
                } else {
                    c.label()
                },
                points: sort
                    .points
                    .iter()
                    .filter(|p| p.config == c.label())
                    .map(|p| (p.n as f64, f(p)))
                    .collect(),
                colour: colour(c),
                dashed: c.threads != SORT_THREADS[0],
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let mut figures = Vec::new();
    plot(
        &dir.join("sort_seconds.svg"),
        "Oblivious sort: seconds vs n (2 threads dashed)",
        "n (records)",
        "seconds",
        Axes::LogLog,
        &sort_series(|p| p.seconds, false),
    )?;
    figures.push(Figure {
        file: "sort_seconds.svg",
        caption: "Sort time against n, log–log, one line per configuration (2 threads dashed)"
            .into(),
    });
    plot(
        &dir.join("sort_bytes_per_element.svg"),
        "Oblivious sort: bytes sent per party per record",
        "n (records)",
        "bytes / record / party",
        Axes::LogLog,
        &sort_series(|p| p.bytes_per_element, true),
    )?;
    figures.push(Figure {
        file: "sort_bytes_per_element.svg",
        caption: "Bytes each party sends per record, log–log (1-thread runs; communication \
                  does not depend on the thread count)"
            .into(),
    });
    plot(
        &dir.join("sort_rounds.svg"),
        "Oblivious sort: communication rounds vs n",
        "n (records)",
        "communication rounds",
        Axes::LogLog,
        &sort_series(|p| p.rounds as f64, true),
    )?;
    figures.push(Figure {
        file: "sort_rounds.svg",
        caption: "Communication rounds against n, log–log (1-thread runs)".into(),
    });
    let msg_series = |sizes: &[usize], users: &[usize]| -> Vec<Series> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, m)| Series {
                label: round_label(*m),
                points: round
                    .points
                    .iter()
                    .filter(|p| p.msg_size == *m && users.contains(&p.users))
                    .map(|p| (p.users as f64, p.seconds))
                    .collect(),
                colour: i,
                dashed: false,
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    plot(
        &dir.join("round_latency.svg"),
        "Exchange round latency vs users (the paper's Fig. 4 grid)",
        "online users",
        "seconds per round",
        Axes::Linear,
        &msg_series(&round.msg_sizes, &round.users),
    )?;
    figures.push(Figure {
        file: "round_latency.svg",
        caption: "Round latency against online users, one line per message size (Fig. 4 grid)"
            .into(),
    });
    let large = msg_series(&[round.large_msg_size], &round.large_users);
    if large.is_empty() {
        // No such points this time: an older file would show numbers from another run.
        let old = dir.join("round_large.svg");
        if old.exists() {
            std::fs::remove_file(&old)
                .map_err(|e| format!("cannot remove stale {}: {e}", old.display()))?;
        }
    } else {
        plot(
            &dir.join("round_large.svg"),
            "Exchange round latency, large populations",
            "online users",
            "seconds per round",
            Axes::LogLog,
            &large,
        )?;
        figures.push(Figure {
            file: "round_large.svg",
            caption: format!(
                "Round latency for {} online users at {}, log–log",
                round
                    .large_users
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                round_label(round.large_msg_size)
            ),
        });
    }
    Ok(figures)
}

// ---------------------------------------------------------------------------------------
// Markdown.

fn pow2(n: usize) -> String {
    if n.is_power_of_two() {
        format!("2^{}", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

fn render_markdown(sort: &SortGrid, round: &RoundGrid, figures: &[Figure]) -> String {
    let m = &sort.meta;
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN_MARKER}");
    let _ = writeln!(s, "<!-- Everything between these two markers is replaced when `acs-bench report` runs again; text above or below them is kept. -->\n");
    let _ = writeln!(s, "## Scaling report (generated by `acs-bench report`)\n");
    if m.quick {
        let _ = writeln!(s, "**This is a `--quick` run (a tiny grid for testing the report itself); its numbers say nothing about performance.**\n");
    }
    let _ = writeln!(s, "- **Date:** {}", m.date_utc);
    let _ = writeln!(s, "- **Command:** `{}`", m.command);
    let measured: Vec<String> = m
        .dirty_paths
        .iter()
        .filter(|p| can_change_measured_code(p))
        .map(|p| format!("`{p}`"))
        .collect();
    let dirty = match (m.dirty_paths.len(), measured.len()) {
        (0, _) => "clean tree".to_string(),
        (d, 0) => format!(
            "tree dirty: {d} file(s) with uncommitted changes, none in engine/, benches/ or Cargo.*"
        ),
        (d, _) => format!(
            "tree **dirty**: {d} file(s) with uncommitted changes, of which these can change the measured code: {}",
            measured.join(", ")
        ),
    };
    let _ = writeln!(s, "- **Commit:** `{}` ({dirty})", m.commit);
    let _ = writeln!(s, "- **Build profile:** {}", m.profile);
    let _ = writeln!(
        s,
        "- **Machine:** {}, {} logical cores, {:.1} GiB memory",
        m.cpu_model, m.cores, m.memory_gib
    );
    let la = |l: [f64; 3]| format!("{:.2} / {:.2} / {:.2}", l[0], l[1], l[2]);
    let _ = writeln!(
        s,
        "- **Load average (1/5/15 min):** {} before, {} after; the run took {:.0} s",
        la(m.loadavg_before),
        la(m.loadavg_after),
        m.wall_seconds
    );
    match m.other_load_cores {
        Some(c) => {
            let _ = writeln!(
                s,
                "- **Other processes** used {c:.2} cores on average during the run (machine busy time from `/proc/stat` minus this report's and its children's CPU time)."
            );
        }
        None => {
            let _ = writeln!(
                s,
                "- **Other processes:** not measurable (no `/proc/stat`)."
            );
        }
    }
    let loaded = m.loadavg_before[0] > 0.5 || m.other_load_cores.is_some_and(|c| c > 0.25);
    if loaded {
        let _ = writeln!(
            s,
            "\n> **Note: the machine was loaded during this run** (load average {:.2} before the run on {} cores; other processes used {} cores on average). Others' work competed for the cores, so these times are upper bounds and noisier than on an idle machine, especially the 2-thread runs.",
            m.loadavg_before[0],
            m.cores,
            m.other_load_cores.map_or("an unknown number of".into(), |c| format!("{c:.2}"))
        );
    }
    let _ = writeln!(s, "\n### Method\n");
    let _ = writeln!(s, "Every point is a child process of the same `acs-bench` binary (`acs-bench sort …` or `acs-bench round … --threads T --json`), so each gets its own rayon pool of exactly T threads (the pool can be sized once per process) and a fresh heap. A child makes random inputs, XOR-shares them as users would, and runs the three parties as three threads of that process connected by in-memory channels (`acs_engine::testing::run_three`); all three parties' local parallel work shares the one pool of T threads. This measures computation and the number and volume of messages, not network latency or bandwidth: a deployment adds about one network round trip per communication round, and the bytes below over its links.\n");
    let _ = writeln!(s, "- **Timed:** from a barrier after the inputs are shared to the end of the sort (or round) in each party; the figure is the slowest party. Input generation, sharing and verification are not timed.");
    let _ = writeln!(s, "- **Bytes** are those each party sends (the largest of the three); **rounds** are communication rounds (the largest of the three).");
    let _ = writeln!(s, "- **Verification:** every run reconstructs the outputs and checks them against plaintext: a sort's keys must come out ascending with the same (key, payload) multiset; a round's every user output and the store must equal the ideal round's (`acs_engine::round::ideal`). A failing run counts as failed, never as a number.");
    let _ = writeln!(s, "- **Sort grid:** 64-bit random keys; algorithms `quick` (shuffle, then quicksort opening only comparison bits) and `bitonic` (sorting network, opens nothing); 1 and 2 threads; payload 0 and 256 B per record; n = {}.", sort.sizes.iter().map(|n| pow2(*n)).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "- **Round grid:** the paper's Fig. 4 grid (users {} × message sizes {}) and {} at {}; {} thread{}; each point runs two consecutive rounds (the store carries over; 25% more registered users are offline; store capacity a tenth of the users, at least 16) and reports the second.", sort_list(&round.users), round.msg_sizes.iter().map(|m| msg_size(*m)).collect::<Vec<_>>().join(", "), if round.large_users.is_empty() { "no larger populations".to_string() } else { format!("{} users", sort_list(&round.large_users)) }, round_label(round.large_msg_size), round.threads, if round.threads == 1 { "" } else { "s" });
    let _ = writeln!(
        s,
        "- **Runs per point:** {} (different seeds; a point whose child ran over {REPEAT_BELOW:.0} s is not repeated); tables and plots show the median, the JSON files every run.",
        m.repeat
    );
    let _ = writeln!(s, "- **Skipping:** a point is skipped when its child's wall time (inputs, run, verification), extrapolated from the previous size of its series (n log n for quicksort and rounds, n log² n for bitonic), exceeds {:.0} s, and a child is killed after {:.0} s.", m.point_limit_seconds, m.point_limit_seconds * 5.0);
    let _ = writeln!(s, "- **Raw data:** `figures/bench/sort.json` and `figures/bench/round.json` (every run, plus these details).");

    // Sort: seconds pivot.
    let configs = SortConfig::all();
    let _ = writeln!(s, "\n### Sort\n");
    let _ = writeln!(s, "Configurations:\n");
    for c in &configs {
        let _ = writeln!(s, "- {}", c.label());
    }
    let _ = writeln!(
        s,
        "\nSeconds (median), by n and configuration (— skipped, ✗ failed):\n"
    );
    let _ = write!(s, "| n |");
    for c in &configs {
        let _ = write!(s, " {} |", c.label());
    }
    let _ = write!(s, "\n|---:|");
    for _ in &configs {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    let find = |c: &SortConfig, n: usize| {
        sort.points
            .iter()
            .find(|p| p.config == c.label() && p.n == n)
    };
    for &n in &sort.sizes {
        let _ = write!(s, "| {} |", pow2(n));
        for c in &configs {
            let cell = match find(c, n) {
                Some(p) => format!("{:.3}", p.seconds),
                None if sort
                    .failed
                    .iter()
                    .any(|f| f.config == c.label() && f.size == n) =>
                {
                    "✗".into()
                }
                None => "—".into(),
            };
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\nCommunication per party (from the 1-thread runs, or the 2-thread ones where those are missing):\n");
    let _ = writeln!(
        s,
        "| n | algorithm | payload | MB sent | bytes / record | rounds | levels |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|");
    for &n in &sort.sizes {
        for algo in ALGOS {
            for payload in PAYLOADS {
                let p = SORT_THREADS.iter().find_map(|&threads| {
                    find(
                        &SortConfig {
                            algo,
                            threads,
                            payload,
                        },
                        n,
                    )
                });
                if let Some(p) = p {
                    let _ = writeln!(
                        s,
                        "| {} | {algo} | {payload} B | {:.2} | {:.0} | {} | {} |",
                        pow2(n),
                        p.bytes_per_party as f64 / 1e6,
                        p.bytes_per_element,
                        p.rounds,
                        p.levels
                    );
                }
            }
        }
    }
    skipped_and_failed(&mut s, &sort.skipped, &sort.failed, "n");

    // Round.
    let _ = writeln!(s, "\n### Exchange round\n");
    let _ = writeln!(
        s,
        "Seconds per round (median) by online users and message size (the paper's Fig. 4 grid):\n"
    );
    let _ = write!(s, "| users |");
    for m in &round.msg_sizes {
        let _ = write!(s, " {} |", round_label(*m));
    }
    let _ = write!(s, "\n|---:|");
    for _ in &round.msg_sizes {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    let rfind = |u: usize, m: usize| {
        round
            .points
            .iter()
            .find(|p| p.users == u && p.msg_size == m)
    };
    for &u in &round.users {
        let _ = write!(s, "| {u} |");
        for &m in &round.msg_sizes {
            let cell = rfind(u, m).map_or("—".into(), |p| format!("{:.3}", p.seconds));
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\nEvery round point:\n");
    let _ = writeln!(
        s,
        "| users | message | store | seconds | MB sent per party | rounds |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
    for p in &round.points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.2} | {} |",
            p.users,
            msg_size(p.msg_size),
            p.store,
            p.seconds,
            p.bytes_per_party as f64 / 1e6,
            p.rounds
        );
    }
    skipped_and_failed(&mut s, &round.skipped, &round.failed, "users");
    phase_table(&mut s, round);

    let _ = writeln!(s, "\n### Figures\n");
    for f in figures {
        let _ = writeln!(s, "![{}](figures/bench/{})\n", f.caption, f.file);
        let _ = writeln!(s, "*{}.*\n", f.caption);
    }
    let _ = writeln!(s, "{END_MARKER}");
    s
}

/// Where the time of the largest rounds goes, for runners that report phases.
fn phase_table(s: &mut String, round: &RoundGrid) {
    let biggest = round.users.iter().max().copied().unwrap_or(0);
    let cols: Vec<&RoundPoint> = round
        .points
        .iter()
        .filter(|p| {
            (p.users == biggest || round.large_users.contains(&p.users))
                && !p.runs[0].phases.is_empty()
        })
        .collect();
    let Some(first) = cols.first() else {
        return;
    };
    let _ = writeln!(
        s,
        "\nWhere the time of the larger rounds goes (seconds per phase, slowest party, first run):\n"
    );
    let _ = write!(s, "| phase |");
    for p in &cols {
        let _ = write!(s, " {} users, {} |", p.users, msg_size(p.msg_size));
    }
    let _ = write!(s, "\n|---|");
    for _ in &cols {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for (k, (name, _)) in first.runs[0].phases.iter().enumerate() {
        let _ = write!(s, "| {name} |");
        for p in &cols {
            let cell = p.runs[0]
                .phases
                .get(k)
                .filter(|(n, _)| n == name)
                .map_or("—".into(), |(_, t)| format!("{t:.3}"));
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s);
    }
}

/// Whether an uncommitted change to `path` can change what the benchmarks measure.
fn can_change_measured_code(path: &str) -> bool {
    path.starts_with("engine/")
        || path.starts_with("benches/")
        || path == "Cargo.toml"
        || path == "Cargo.lock"
}

fn sort_list(v: &[usize]) -> String {
    match v {
        [] => String::new(),
        [a] => a.to_string(),
        [a, b] => format!("{a}, {b}"),
        [first, .., last] => format!("{first}, {}, …, {last}", v[1]),
    }
}

fn skipped_and_failed(s: &mut String, skipped: &[Skipped], failed: &[Failed], size: &str) {
    if !skipped.is_empty() {
        let _ = writeln!(s, "\nSkipped:\n");
        for k in skipped {
            let _ = writeln!(s, "- {}, {size} = {}: {}", k.config, k.size, k.reason);
        }
    }
    if !failed.is_empty() {
        let _ = writeln!(s, "\nFailed:\n");
        for f in failed {
            let _ = writeln!(s, "- {}, {size} = {}: {}", f.config, f.size, f.error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_numbers_or_powers() {
        assert_eq!(parse_size("2^18"), Ok(262_144));
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2^99").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn grids_follow_max_n() {
        let args = |max_n| ReportArgs {
            max_n,
            out: PathBuf::new(),
            quick: false,
            point_limit: 120.0,
            repeat: 1,
        };
        let g = Grids::new(&args(1 << 18));
        assert_eq!(
            g.sort_sizes,
            vec![1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18]
        );
        assert_eq!(g.large_users, vec![10_000, 100_000]);
        assert_eq!(g.round_users.len(), 10);
        let g = Grids::new(&args(1 << 20));
        assert_eq!(g.sort_sizes.last(), Some(&(1 << 20)));
        assert_eq!(g.large_users, vec![10_000, 100_000, 1_000_000]);
    }

    #[test]
    fn growth_models() {
        let q = SortConfig {
            algo: "quick",
            threads: 1,
            payload: 0,
        };
        let b = SortConfig {
            algo: "bitonic",
            ..q
        };
        // 2^10 -> 2^12: 4 × 12/10 and 4 × (12/10)².
        assert!((q.growth(1 << 10, 1 << 12) - 4.8).abs() < 1e-9);
        assert!((b.growth(1 << 10, 1 << 12) - 5.76).abs() < 1e-9);
    }

    #[test]
    fn merge_keeps_hand_written_text() {
        let gen = format!("{BEGIN_MARKER}\nnew\n{END_MARKER}\n");
        assert_eq!(
            merge_generated(None, &gen).unwrap(),
            format!("# Benchmarks\n\n{gen}")
        );
        let hand = "# Benchmarks\n\nHand table.\n";
        assert_eq!(
            merge_generated(Some(hand), &gen).unwrap(),
            format!("# Benchmarks\n\nHand table.\n\n{gen}")
        );
        let old = format!("above\n{BEGIN_MARKER}\nstale\n{END_MARKER}\nbelow\n");
        assert_eq!(
            merge_generated(Some(&old), &gen).unwrap(),
            format!("above\n{gen}below\n")
        );
        let broken = format!("{END_MARKER}\n{BEGIN_MARKER}\n");
        assert!(merge_generated(Some(&broken), &gen).is_err());
        let twice = format!("{BEGIN_MARKER}\n{END_MARKER}\n{END_MARKER}\n");
        assert!(merge_generated(Some(&twice), &gen).is_err());
        assert!(merge_generated(Some(BEGIN_MARKER), &gen).is_err());
    }

    #[test]
    fn median_of_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_u64(vec![5, 1, 3, 2]), 2);
    }

    #[test]
    fn utc_date_format() {
        let d = utc_now();
        assert_eq!(d.len(), "2026-11-25 12:00 UTC".len());
        assert!(d.starts_with("20"));
    }
}
