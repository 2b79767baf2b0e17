//! A whole deployment as real `acs` processes on 127.0.0.1, for fault tests: certificates
//! and master secrets made by `acs certs` and `acs master`, configuration files written
//! here, `acs exchange` / `acs entry` processes with their stderr in log files (killed
//! when the test ends, however it ends), and readers for what the logs say.
//!
//! Include it with `#[path = "common/system.rs"] mod system;` (it does not depend on
//! `common/mod.rs`, whose in-process deployment is a different thing).
#![allow(dead_code)]

use acs_engine::round::RoundConfig;
use acs_kgc::SignedDescriptor;
use acs_transport::config::{
    ClientFile, EntryFile, ExchangeFile, LimitsFile, RelayAddr, TimingFile,
};
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `acs` binary under test.
pub const ACS: &str = env!("CARGO_BIN_EXE_acs");

/// A listener's `[limits]` section.
#[derive(Clone, Copy, Debug)]
pub struct LimitsToml {
    /// Concurrent connections.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout_ms: u64,
    /// Deadline for a started frame.
    pub frame_timeout_ms: u64,
    /// Shutdown grace.
    pub shutdown_grace_ms: u64,
    /// Silence after which a relay closes a user connection.
    pub idle_timeout_ms: u64,
}

impl LimitsToml {
    fn file(&self) -> LimitsFile {
        LimitsFile {
            max_connections: self.max_connections,
            handshake_timeout_ms: self.handshake_timeout_ms,
            frame_timeout_ms: self.frame_timeout_ms,
            shutdown_grace_ms: self.shutdown_grace_ms,
            idle_timeout_ms: self.idle_timeout_ms,
        }
    }
}

impl Default for LimitsToml {
    /// Short timeouts so that tests see them act within a second.
    fn default() -> Self {
        LimitsToml {
            max_connections: 64,
            handshake_timeout_ms: 500,
            frame_timeout_ms: 500,
            shutdown_grace_ms: 300,
            idle_timeout_ms: 60_000,
        }
    }
}

/// What [`Deployment::write`] writes.
#[derive(Clone, Debug)]
pub struct Options {
    /// `deployment = ...` at the three servers.
    pub name: String,
    /// Entry relays.
    pub entries: u32,
    /// `[round]`.
    pub round: RoundConfig,
    /// `[timing] submit_window_ms`.
    pub submit_window_ms: u64,
    /// `[timing] collect_grace_ms`.
    pub collect_grace_ms: u64,
    /// The exchange servers' `[limits]`.
    pub exchange_limits: LimitsToml,
    /// The entry relays' `[limits]`.
    pub entry_limits: LimitsToml,
    /// The relays' `max_envelopes_per_round`.
    pub max_envelopes_per_round: usize,
    /// Give every process a `metrics_listen` port ([`Deployment::metrics_addr`]).
    pub metrics: bool,
    /// The servers' `relays` list (every relay when `None`).
    pub listed_relays: Option<Vec<u32>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "fault-test".into(),
            entries: 1,
            round: RoundConfig {
                payload_words: 4,
                store_capacity: 8,
                expiry_rounds: 20,
                receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
            },
            submit_window_ms: 300,
            // Collection ends as soon as every relay has reported; the grace only matters
            // when a relay is late, e.g. on a loaded test machine.
            collect_grace_ms: 2000,
            exchange_limits: LimitsToml::default(),
            entry_limits: LimitsToml::default(),
            max_envelopes_per_round: 10_000,
            metrics: false,
            listed_relays: None,
        }
    }
}

/// A port that was free a moment ago (bound and released: another process could take it
/// in between, a small risk for a test). Drawn below the kernel's ephemeral range
/// (32768 and up by default), so the many outgoing connections of tests running at the
/// same time (or of a load run) cannot take it first.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports, each free a moment ago (see [`free_port`]): all are held until
/// the last is found, so one deployment never gets the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n * 1000 {
        if held.len() == n {
            break;
        }
        let port = rng.gen_range(20_000..32_000);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, l));
        }
    }
    assert_eq!(held.len(), n, "not enough free ports in 20000..32000");
    held.into_iter().map(|(port, _)| port).collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A deployment directory: certificates, master secrets and descriptors, configuration
/// files, databases and logs. Removed when dropped.
pub struct Deployment {
    /// The directory.
    pub dir: tempfile::TempDir,
    /// What was written.
    pub opts: Options,
    /// Exchange servers' relay-facing ports.
    pub relay_ports: [u16; 3],
    /// Exchange servers' peer ports.
    pub peer_ports: [u16; 3],
    /// Entry relays' user ports.
    pub entry_ports: Vec<u16>,
    /// Metrics ports: servers 0, 1, 2, then relays (empty unless `opts.metrics`).
    pub metrics_ports: Vec<u16>,
}

impl Deployment {
    /// Writes `ex{i}.toml`, `entry{j}.toml`, `certs/` and `master-{i}.key{,.descriptor}`.
    pub fn write(opts: Options) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run_ok(
            Command::new(ACS)
                .args(["certs", "--entries", &opts.entries.to_string(), "--out"])
                .arg(d.join("certs")),
        );
        for i in 0..3 {
            run_ok(
                Command::new(ACS)
                    .args(["master", "--out"])
                    .arg(d.join(format!("master-{i}.key")))
                    .arg("--cert")
                    .arg(d.join(format!("certs/exchange-{i}.pem"))),
            );
        }
        let n_metrics = if opts.metrics {
            3 + opts.entries as usize
        } else {
            0
        };
        let ports = free_ports(6 + opts.entries as usize + n_metrics);
        let relay_ports = [ports[0], ports[1], ports[2]];
        let peer_ports = [ports[3], ports[4], ports[5]];
        let entry_ports: Vec<u16> = ports[6..6 + opts.entries as usize].to_vec();
        let metrics_ports: Vec<u16> = ports[6 + opts.entries as usize..].to_vec();
        let deployment = Deployment {
            dir,
            opts,
            relay_ports,
            peer_ports,
            entry_ports,
            metrics_ports,
        };
        for i in 0..3 {
            deployment.write_exchange(i, &deployment.exchange_file(i));
        }
        for j in 0..deployment.opts.entries {
            let f = deployment.entry_file(j);
            deployment.write_entry(&format!("entry{j}.toml"), &f);
        }
        deployment
    }

    /// What `ex{i}.toml` holds when written (paths relative to the directory).
    pub fn exchange_file(&self, i: usize) -> ExchangeFile {
        let o = &self.opts;
        ExchangeFile {
            index: i as u8,
            deployment: o.name.clone(),
            relay_listen: loopback(self.relay_ports[i]),
            peer_listen: loopback(self.peer_ports[i]),
            next_peer: loopback(self.peer_ports[(i + 1) % 3]),
            relays: o
                .listed_relays
                .clone()
                .unwrap_or_else(|| (0..o.entries).collect()),
            ca: "certs/ca.pem".into(),
            cert: format!("certs/exchange-{i}.pem").into(),
            key: format!("certs/exchange-{i}-key.pem").into(),
            master: format!("master-{i}.key").into(),
            db: format!("ex{i}.redb").into(),
            metrics_listen: self.metrics_ports.get(i).map(|p| loopback(*p)),
            security: Default::default(),
            round: o.round,
            timing: TimingFile {
                submit_window_ms: o.submit_window_ms,
                collect_grace_ms: o.collect_grace_ms,
                ..TimingFile::default()
            },
            limits: o.exchange_limits.file(),
            epochs: Vec::new(),
        }
    }

    /// Writes `ex{i}.toml`.
    pub fn write_exchange(&self, i: usize, f: &ExchangeFile) {
        std::fs::write(self.path(&format!("ex{i}.toml")), f.to_toml().unwrap()).unwrap();
    }

    /// What `entry{j}.toml` holds when written.
    pub fn entry_file(&self, j: u32) -> EntryFile {
        EntryFile {
            index: j,
            listen: loopback(self.entry_ports[j as usize]),
            exchanges: [0, 1, 2].map(|i| loopback(self.relay_ports[i])),
            ca: "certs/ca.pem".into(),
            cert: format!("certs/entry-{j}.pem").into(),
            key: format!("certs/entry-{j}-key.pem").into(),
            max_envelopes_per_round: self.opts.max_envelopes_per_round,
            metrics_listen: self.metrics_ports.get(3 + j as usize).map(|p| loopback(*p)),
            limits: self.opts.entry_limits.file(),
        }
    }

    /// Writes an entry relay's configuration as `name` in the directory.
    pub fn write_entry(&self, name: &str, f: &EntryFile) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, f.to_toml().unwrap()).unwrap();
        p
    }

    /// The metrics address of server `i` (0..3) or relay `i - 3`.
    pub fn metrics_addr(&self, i: usize) -> SocketAddr {
        loopback(self.metrics_ports[i])
    }

    /// A path inside the deployment directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts `acs exchange` for server `i`, logging to `ex{i}{suffix}.log`.
    pub fn start_exchange(&self, i: usize, suffix: &str) -> Proc {
        self.start_exchange_with(i, suffix, &[])
    }

    /// [`Deployment::start_exchange`] with extra environment variables (the
    /// `ACS_FAULT_*` switches of the `fault-injection` feature).
    pub fn start_exchange_with(&self, i: usize, suffix: &str, env: &[(&str, &str)]) -> Proc {
        Proc::spawn_with(
            &format!("exchange-{i}"),
            &["exchange", "--config"],
            &self.path(&format!("ex{i}.toml")),
            &self.path(&format!("ex{i}{suffix}.log")),
            env,
        )
    }

    /// Starts `acs entry` for relay `j`, logging to `entry{j}{suffix}.log`.
    pub fn start_entry(&self, j: u32, suffix: &str) -> Proc {
        self.start_entry_with(j, suffix, &[])
    }

    /// [`Deployment::start_entry`] with extra environment variables (`ACS_FAULT_TAMPER`).
    pub fn start_entry_with(&self, j: u32, suffix: &str, env: &[(&str, &str)]) -> Proc {
        Proc::spawn_with(
            &format!("entry-{j}"),
            &["entry", "--config"],
            &self.path(&format!("entry{j}.toml")),
            &self.path(&format!("entry{j}{suffix}.log")),
            env,
        )
    }

    /// Starts every relay, then the three servers.
    pub fn start(&self) -> System {
        let entries = (0..self.opts.entries)
            .map(|j| self.start_entry(j, ""))
            .collect();
        let exchanges = (0..3).map(|i| self.start_exchange(i, "")).collect();
        System { exchanges, entries }
    }

    /// Exchange server `i`'s relay-facing address.
    pub fn relay_addr(&self, i: usize) -> SocketAddr {
        loopback(self.relay_ports[i])
    }

    /// Exchange server `i`'s peer address.
    pub fn peer_addr(&self, i: usize) -> SocketAddr {
        loopback(self.peer_ports[i])
    }

    /// Entry relay `j`'s user address.
    pub fn entry_addr(&self, j: u32) -> SocketAddr {
        loopback(self.entry_ports[j as usize])
    }

    /// `(index, address)` of every relay, as `User::register` takes them.
    pub fn entry_addrs(&self) -> Vec<(u32, SocketAddr)> {
        (0..self.opts.entries)
            .map(|j| (j, self.entry_addr(j)))
            .collect()
    }

    /// The deployment CA, as users and relays load it.
    pub fn roots(&self) -> Arc<RootCertStore> {
        acs_transport::tls::load_roots(&self.path("certs/ca.pem")).unwrap()
    }

    /// The three servers' signed descriptors (what clients pin).
    pub fn descriptors(&self) -> [SignedDescriptor; 3] {
        [0, 1, 2].map(|i| {
            let bytes = std::fs::read(self.path(&format!("master-{i}.key.descriptor"))).unwrap();
            SignedDescriptor::from_bytes(&bytes).unwrap()
        })
    }

    /// Writes `{name}.toml` for `acs client` (identity `{name}.identity`, every relay).
    pub fn write_client(&self, name: &str, timeout_ms: u64) -> PathBuf {
        let f = ClientFile {
            ca: "certs/ca.pem".into(),
            identity: format!("{name}.identity").into(),
            descriptors: [0, 1, 2].map(|i| format!("master-{i}.key.descriptor").into()),
            relays: self
                .entry_addrs()
                .into_iter()
                .map(|(index, addr)| RelayAddr { index, addr })
                .collect(),
            round: self.opts.round,
            timeout_ms,
        };
        let p = self.path(&format!("{name}.toml"));
        std::fs::write(&p, f.to_toml().unwrap()).unwrap();
        p
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `acs` process, killed when dropped if still running.
pub struct Proc {
    /// For messages.
    pub name: String,
    /// Its stderr (the tracing log).
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// `acs <args> <config>` with `RUST_LOG=info`, stderr to `log`.
    pub fn spawn(name: &str, args: &[&str], config: &Path, log: &Path) -> Proc {
        Proc::spawn_with(name, args, config, log, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with(
        name: &str,
        args: &[&str],
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Proc {
        let child = Command::new(ACS)
            .args(args)
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            name: name.into(),
            log: log.to_path_buf(),
            child,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM.
    #[cfg(unix)]
    pub fn term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// Sends SIGHUP (an exchange server reloads its relays list).
    #[cfg(unix)]
    pub fn hup(&self) {
        let _ = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status();
    }

    /// SIGKILL, as a crash: no shutdown code runs. Waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak and current resident memory in KiB (`VmHWM`, `VmRSS`), on Linux.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The processes of a running deployment.
pub struct System {
    /// `acs exchange` 0, 1, 2.
    pub exchanges: Vec<Proc>,
    /// `acs entry` 0, 1, ...
    pub entries: Vec<Proc>,
}

impl System {
    /// Every process, servers first.
    pub fn all(&self) -> impl Iterator<Item = &Proc> {
        self.exchanges.iter().chain(self.entries.iter())
    }

    /// Rounds committed so far by server `i`, from its log.
    pub fn committed(&self, i: usize) -> Vec<u64> {
        committed_rounds(&self.exchanges[i].log_text())
    }

    /// Waits until every server has logged at least `n` committed rounds.
    pub fn wait_committed(&self, n: usize, timeout: Duration) {
        wait_until(timeout, "rounds to commit", || {
            (0..3).all(|i| self.committed(i).len() >= n)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// Fails the test if any process logged a panic or has exited.
    pub fn assert_healthy(&mut self) {
        let mut problems = Vec::new();
        for p in self.exchanges.iter_mut().chain(self.entries.iter_mut()) {
            if p.log_text().contains("panicked") {
                problems.push(format!("{} panicked", p.name));
            }
            if !p.running() {
                problems.push(format!("{} exited", p.name));
            }
        }
        assert!(problems.is_empty(), "{problems:?}\n{}", self.logs());
    }

    /// Every log, for failure messages (the last 40 lines of each).
    pub fn logs(&self) -> String {
        logs_of(self.all())
    }

    /// SIGTERM to everything; waits for the processes to exit. A server exits 0 on its own
    /// signal or non-zero when a peer's shutdown reached it first; either is accepted.
    #[cfg(unix)]
    pub fn stop(mut self) {
        for p in self.all() {
            p.term();
        }
        for p in self.exchanges.iter_mut().chain(self.entries.iter_mut()) {
            let st = p.wait_exit(Duration::from_secs(15));
            assert!(st.is_some(), "{} did not stop on SIGTERM", p.name);
        }
        for p in &self.entries {
            assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
        }
    }
}

/// Round numbers of the `round committed` lines of an exchange server's log.
pub fn committed_rounds(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("round committed"))
        .filter_map(|l| field(l, "round"))
        .collect()
}

/// The numeric value of `name=` in a log line.
pub fn field(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let i = line.find(&key)? + key.len();
    line[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `(rejected, reason)` of each `envelopes rejected` line of `round` in an exchange
/// server's log (the reason where the line names one).
pub fn rejections(log: &str, round: u64) -> Vec<(u64, Option<String>)> {
    log.lines()
        .filter(|l| l.contains("envelopes rejected") && field(l, "round") == Some(round))
        .filter_map(|l| {
            let reason = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("reason="))
                .map(|w| w.trim_matches('"').to_string());
            Some((field(l, "rejected")?, reason))
        })
        .collect()
}

/// Polls `ok` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut ok: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The logs of `procs`, for failure messages (the last 40 lines of each).
pub fn logs_of<'a>(procs: impl IntoIterator<Item = &'a Proc>) -> String {
    let mut s = String::new();
    for p in procs {
        let text = p.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        s.push_str(&format!(
            "--- {} ({})\n{}\n",
            p.name,
            p.log.display(),
            tail.join("\n")
        ));
    }
    s
}

/// After a round that went wrong: the servers go on, so a round after `round` commits at
/// every one of `servers` within 60 s, and none of them panicked.
pub fn assert_a_later_round_commits(servers: &[Proc], round: u64) {
    wait_until(Duration::from_secs(60), "a later round to commit", || {
        servers
            .iter()
            .all(|p| committed_rounds(&p.log_text()).iter().any(|&r| r > round))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs_of(servers)));
    for p in servers {
        assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
    }
}
