//! Child processes: spawning with their stderr copied to a log file line by line (and
//! `round committed` lines parsed on the way), memory read from `/proc`, and a guard that
//! kills every child still running when the run ends for any reason.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::Sender;

/// What the log and stdout reader threads tell the main loop.
#[derive(Debug)]
pub enum Event {
    /// An exchange server committed a round.
    Committed {
        /// Server index.
        server: usize,
        /// The parsed line.
        line: CommitLine,
    },
    /// An entry relay logged that it reached an exchange server.
    RelayConnected {
        /// Relay index.
        relay: usize,
    },
    /// A driver wrote a line on stdout.
    Driver {
        /// Driver index.
        driver: usize,
        /// The line.
        line: String,
    },
}

/// The fields of an exchange server's `round committed` log line.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CommitLine {
    /// Round.
    pub round: u64,
    /// Users the servers agreed were online.
    pub online: u64,
    /// Seconds from the submission deadline to outputs handed to the relays.
    pub seconds: f64,
    /// Opening envelopes.
    pub open_ms: u64,
    /// The engine round.
    pub engine_ms: u64,
    /// Vote and database commit.
    pub commit_ms: u64,
    /// Sealing and sending outputs.
    pub outputs_ms: u64,
}

/// Parses `... round committed round=12 online=997 ... seconds=0.41 open_ms=12 ...`.
pub fn parse_commit(line: &str) -> Option<CommitLine> {
    let rest = &line[line.find("round committed")? + "round committed".len()..];
    let mut c = CommitLine::default();
    let mut have_round = false;
    for kv in rest.split_whitespace() {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "round" => {
                c.round = v.parse().ok()?;
                have_round = true;
            }
            "online" => c.online = v.parse().ok()?,
            "seconds" => c.seconds = v.parse().ok()?,
            "open_ms" => c.open_ms = v.parse().ok()?,
            "engine_ms" => c.engine_ms = v.parse().ok()?,
            "commit_ms" => c.commit_ms = v.parse().ok()?,
            "outputs_ms" => c.outputs_ms = v.parse().ok()?,
            _ => {}
        }
    }
    have_round.then_some(c)
}

/// What kind of child, for naming and log parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `acs exchange`, index.
    Exchange(usize),
    /// `acs entry`, index.
    Entry(usize),
    /// `acs-load driver`, index.
    Driver(usize),
}

impl Kind {
    /// A short name: `exchange-0`, `entry-3`, `driver-1`.
    pub fn name(self) -> String {
        match self {
            Kind::Exchange(i) => format!("exchange-{i}"),
            Kind::Entry(i) => format!("entry-{i}"),
            Kind::Driver(i) => format!("driver-{i}"),
        }
    }
}

/// A running child.
#[derive(Debug)]
pub struct Proc {
    /// What it is.
    pub kind: Kind,
    /// The process.
    pub child: Child,
    /// Its stdin (drivers only).
    pub stdin: Option<ChildStdin>,
    /// Its log file (its stderr).
    pub log: PathBuf,
}

/// Every child of the run; dropping it kills those still running.
#[derive(Debug, Default)]
pub struct Procs {
    /// The children, in start order.
    pub list: Vec<Proc>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in self.list.iter_mut() {
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

impl Procs {
    /// Starts `cmd` with its stderr copied to `dir/NAME.log`; exchange and entry logs are
    /// parsed for events, a driver's stdout lines are passed on.
    pub fn spawn(
        &mut self,
        mut cmd: Command,
        kind: Kind,
        dir: &Path,
        events: Sender<Event>,
    ) -> Result<(), String> {
        let log = dir.join(format!("{}.log", kind.name()));
        let is_driver = matches!(kind, Kind::Driver(_));
        cmd.stderr(Stdio::piped())
            .stdout(if is_driver {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdin(if is_driver {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", kind.name()))?;
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let tx = events.clone();
        std::thread::spawn(move || copy_log(stderr, file, kind, tx));
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || pass_stdout(out, kind, events));
        }
        let stdin = child.stdin.take();
        self.list.push(Proc {
            kind,
            child,
            stdin,
            log,
        });
        Ok(())
    }

    /// The first child that has exited, with its status, if any.
    pub fn exited(&mut self) -> Option<(Kind, std::process::ExitStatus, PathBuf)> {
        self.list.iter_mut().find_map(|p| match p.child.try_wait() {
            Ok(Some(s)) => Some((p.kind, s, p.log.clone())),
            _ => None,
        })
    }

    /// Asks the children of `kinds` to stop (SIGTERM through `kill`, as std offers only
    /// SIGKILL) and waits up to `grace` for them; kills those still running.
    pub fn stop(&mut self, pick: impl Fn(Kind) -> bool, grace: std::time::Duration) {
        let chosen: Vec<usize> = (0..self.list.len())
            .filter(|&i| pick(self.list[i].kind))
            .collect();
        for &i in &chosen {
            let pid = self.list[i].child.id().to_string();
            let _ = Command::new("kill")
                .args(["-TERM", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let until = std::time::Instant::now() + grace;
        for &i in &chosen {
            let p = &mut self.list[i];
            while matches!(p.child.try_wait(), Ok(None)) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

fn copy_log(
    stderr: std::process::ChildStderr,
    mut file: std::fs::File,
    kind: Kind,
    tx: Sender<Event>,
) {
    let mut r = BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = file.write_all(line.as_bytes());
        let ev = match kind {
            Kind::Exchange(server) => {
                parse_commit(&line).map(|line| Event::Committed { server, line })
            }
            Kind::Entry(relay) if line.contains("connected to exchange server") => {
                Some(Event::RelayConnected { relay })
            }
            _ => None,
        };
        if let Some(ev) = ev {
            let _ = tx.send(ev);
        }
    }
}

fn pass_stdout(out: ChildStdout, kind: Kind, tx: Sender<Event>) {
    let Kind::Driver(driver) = kind else { return };
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { return };
        if tx.send(Event::Driver { driver, line }).is_err() {
            return;
        }
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Resident and peak resident memory of a process, in bytes (`VmRSS`, `VmHWM` of
/// `/proc/PID/status`); `None` once it has exited.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let l = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = l[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) a process has used so far, in seconds (`/proc/PID/stat`
/// fields 14 and 15, in clock ticks of 1/100 s, the Linux value); `None` once it has
/// exited.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: skip past it.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): fields 14 and 15 are at 11 and 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// This process's open-file limit (soft), which children inherit.
pub fn fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let l = text.lines().find(|l| l.starts_with("Max open files"))?;
    l.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_commit_line() {
        let l = "2026-11-25T13:00:00.1Z  INFO acs_transport::exchange::server: round committed round=12 online=997 outputs=997 relays_unreachable=0 seconds=0.41 open_ms=12 engine_ms=330 commit_ms=60 outputs_ms=9";
        let c = parse_commit(l).unwrap();
        assert_eq!(c.round, 12);
        assert_eq!(c.online, 997);
        assert!((c.seconds - 0.41).abs() < 1e-9);
        assert_eq!(
            (c.open_ms, c.engine_ms, c.commit_ms, c.outputs_ms),
            (12, 330, 60, 9)
        );
        assert!(parse_commit("INFO exchange server starting").is_none());
    }

    #[test]
    fn reads_own_memory_and_fd_limit() {
        let (rss, hwm) = memory(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(fd_limit().unwrap() > 0);
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}
