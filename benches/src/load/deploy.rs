//! A loopback deployment written the way an operator would (docs/operators.md): `acs certs`
//! and `acs master` output plus one TOML file per exchange server and entry relay, written
//! by the configuration types' own `to_toml` (the one writer, so the files always load).

use acs_transport::config::{EntryFile, ExchangeFile, LimitsFile, TimingFile};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the run needs to start and reach the deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// `ex{i}.toml`, i = 0, 1, 2.
    pub exchange_configs: Vec<PathBuf>,
    /// `entry{j}.toml`.
    pub entry_configs: Vec<PathBuf>,
    /// Entry relays' user-facing addresses (index, address).
    pub relays: Vec<(u32, SocketAddr)>,
}

/// Exchange and relay parameters of the deployment.
#[derive(Debug, Clone)]
pub struct Params {
    /// Entry relays.
    pub entries: u32,
    /// Payload words.
    pub payload_words: usize,
    /// Store capacity.
    pub store_capacity: usize,
    /// Expiry rounds.
    pub expiry_rounds: u32,
    /// Submission window (server 0).
    pub window_ms: u64,
    /// Wait for late relay batches.
    pub grace_ms: u64,
    /// Connections each relay must accept (users × relays per user / relays, plus slack).
    pub relay_connections: usize,
    /// Envelopes per round per exchange server a relay accepts.
    pub relay_envelopes: usize,
    /// Relays close user connections silent this long; users registered first wait,
    /// silent, until the last one has registered, so this must cover registration.
    pub relay_idle_timeout_ms: u64,
}

fn free_port() -> Result<u16, String> {
    // Bound and released: the servers bind it again a moment later. Another process could
    // take it in between; the run then fails with "address in use" and can be repeated.
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn run_acs(acs: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new(acs)
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", acs.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {:?} failed: {}",
            acs.display(),
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Writes certificates, master secrets and configuration files into `dir`.
pub fn write(acs: &Path, dir: &Path, p: &Params) -> Result<Deployment, String> {
    let certs = dir.join("certs");
    let entries = p.entries.to_string();
    run_acs(
        acs,
        &[
            "certs".as_ref(),
            "--entries".as_ref(),
            entries.as_ref(),
            "--out".as_ref(),
            certs.as_os_str(),
        ],
    )?;
    for i in 0..3 {
        let master = dir.join(format!("master-{i}.key"));
        let cert = certs.join(format!("exchange-{i}.pem"));
        run_acs(
            acs,
            &[
                "master".as_ref(),
                "--out".as_ref(),
                master.as_os_str(),
                "--cert".as_ref(),
                cert.as_os_str(),
            ],
        )?;
    }
    let relay_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let round = acs_engine::round::RoundConfig {
        payload_words: p.payload_words,
        store_capacity: p.store_capacity,
        expiry_rounds: p.expiry_rounds,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let write = |path: &Path, text: Result<String, String>| {
        let text = text.map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut exchange_configs = Vec::new();
    for i in 0..3 {
        let path = dir.join(format!("ex{i}.toml"));
        let f = ExchangeFile {
            index: i as u8,
            deployment: "acs-load".into(),
            relay_listen: local(relay_ports[i]),
            peer_listen: local(peer_ports[i]),
            next_peer: local(peer_ports[(i + 1) % 3]),
            relays: (0..p.entries).collect(),
            ca: "certs/ca.pem".into(),
            cert: format!("certs/exchange-{i}.pem").into(),
            key: format!("certs/exchange-{i}-key.pem").into(),
            master: format!("master-{i}.key").into(),
            db: format!("ex{i}.redb").into(),
            metrics_listen: None,
            security: Default::default(),
            round,
            timing: TimingFile {
                submit_window_ms: p.window_ms,
                collect_grace_ms: p.grace_ms,
                vote_timeout_ms: 600_000,
                max_window_ms: p.window_ms.max(60_000),
            },
            limits: LimitsFile {
                max_connections: p.entries as usize + 64,
                ..LimitsFile::default()
            },
            epochs: Vec::new(),
        };
        write(&path, f.to_toml().map_err(|e| e.to_string()))?;
        exchange_configs.push(path);
    }
    let mut entry_configs = Vec::new();
    let mut relays = Vec::new();
    for j in 0..p.entries {
        let port = free_port()?;
        let path = dir.join(format!("entry{j}.toml"));
        // Handshake timeout: thousands of users connect within seconds on a loaded host.
        let f = EntryFile {
            index: j,
            listen: local(port),
            exchanges: [0, 1, 2].map(|i| local(relay_ports[i])),
            ca: "certs/ca.pem".into(),
            cert: format!("certs/entry-{j}.pem").into(),
            key: format!("certs/entry-{j}-key.pem").into(),
            max_envelopes_per_round: p.relay_envelopes,
            metrics_listen: None,
            limits: LimitsFile {
                max_connections: p.relay_connections,
                handshake_timeout_ms: 30_000,
                frame_timeout_ms: 30_000,
                idle_timeout_ms: p.relay_idle_timeout_ms,
                ..LimitsFile::default()
            },
        };
        write(&path, f.to_toml().map_err(|e| e.to_string()))?;
        entry_configs.push(path);
        relays.push((j, local(port)));
    }
    Ok(Deployment {
        exchange_configs,
        entry_configs,
        relays,
    })
}
