//! `acs check --config FILE`: validates an exchange, entry or client configuration
//! without starting anything, and says what it would run.
//!
//! Two layers. [`check_exchange`] and [`check_entry`] look at files only (the
//! certificate's role and index against the CA, keys, paths and permissions, port roles,
//! round and timing settings); `acs exchange` and `acs entry` run them at start and
//! refuse to start on an error. [`probe_exchange`] and [`probe_entry`] (only `acs check`)
//! also try the network: whether the listen addresses can be bound, and what answers at
//! the addresses the config dials (a relay port, a peer port, the right server). The
//! probes connect without a client certificate, so they never take the place of a
//! running relay's link; a server that refuses them logs one failed handshake.

use crate::config::{ClientFile, ConfigError, EntryFile, ExchangeFile};
use crate::relay_port::RELAY_ALPN;
use crate::tls::{self, Identity, Role};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Checked and fine.
    Ok,
    /// Works, but probably not what was meant (or cannot be checked now).
    Warn,
    /// Would not run, or would run wrongly.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What (one line, naming the key and the value).
    pub text: String,
}

/// What a check found, and what the configuration would run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `exchange server 0`, `entry relay 3`, `client`.
    pub role: String,
    /// Findings, in the order checked.
    pub findings: Vec<Finding>,
    /// What would run, one line per item.
    pub plan: Vec<String>,
}

impl Report {
    fn new(role: String) -> Self {
        Report {
            role,
            ..Report::default()
        }
    }

    fn ok(&mut self, text: impl Into<String>) {
        self.push(Level::Ok, text);
    }

    fn warn(&mut self, text: impl Into<String>) {
        self.push(Level::Warn, text);
    }

    fn error(&mut self, text: impl Into<String>) {
        self.push(Level::Error, text);
    }

    fn push(&mut self, level: Level, text: impl Into<String>) {
        self.findings.push(Finding {
            level,
            text: text.into(),
        });
    }

    /// The errors.
    pub fn errors(&self) -> Vec<&str> {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .map(|f| f.text.as_str())
            .collect()
    }

    /// The warnings.
    pub fn warnings(&self) -> Vec<&str> {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Warn)
            .map(|f| f.text.as_str())
            .collect()
    }

    /// The report as `acs check` prints it.
    pub fn render(&self) -> String {
        let mut out = format!("{}:\n", self.role);
        for f in &self.findings {
            let tag = match f.level {
                Level::Ok => "ok   ",
                Level::Warn => "WARN ",
                Level::Error => "ERROR",
            };
            let _ = writeln!(out, "  {tag} {}", f.text);
        }
        if !self.plan.is_empty() {
            out.push_str("would run:\n");
            for p in &self.plan {
                let _ = writeln!(out, "  {p}");
            }
        }
        let errors = self.errors().len();
        let warnings = self
            .findings
            .iter()
            .filter(|f| f.level == Level::Warn)
            .count();
        let _ = writeln!(
            out,
            "{}: {errors} error(s), {warnings} warning(s)",
            if errors == 0 { "OK" } else { "FAILED" }
        );
        out
    }

    /// `Err` with every error on its own line, if there is any: servers and relays call
    /// this at start.
    pub fn into_result(self) -> Result<Self, String> {
        let errors = self.errors();
        if errors.is_empty() {
            return Ok(self);
        }
        Err(format!(
            "configuration check failed ({}):\n  {}",
            self.role,
            errors.join("\n  ")
        ))
    }
}

/// Which kind of configuration a file is, by its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `acs exchange`.
    Exchange,
    /// `acs entry`.
    Entry,
    /// `acs client`.
    Client,
}

/// Tells an exchange, entry or client configuration apart by its keys.
pub fn kind_of(path: &Path) -> Result<Kind, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if table.contains_key("relay_listen") || table.contains_key("peer_listen") {
        Ok(Kind::Exchange)
    } else if table.contains_key("exchanges") {
        Ok(Kind::Entry)
    } else if table.contains_key("descriptors") {
        Ok(Kind::Client)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: "not an exchange (relay_listen), entry (exchanges) or client (descriptors) configuration".into(),
        })
    }
}

/// Loads the CA, the identity and checks that the certificate is `role`'s.
fn check_identity(
    r: &mut Report,
    ca: &Path,
    cert: &Path,
    key: &Path,
    role: Role,
) -> Option<(Identity, Arc<rustls::RootCertStore>)> {
    let roots = match tls::load_roots(ca) {
        Ok(roots) => {
            r.ok(format!("ca {}: loaded", ca.display()));
            Some(roots)
        }
        Err(e) => {
            r.error(format!("ca: {e}"));
            None
        }
    };
    let identity = match Identity::load(cert, key) {
        Ok(id) => id,
        Err(e) => {
            r.error(format!("cert/key: {e}"));
            return None;
        }
    };
    if let Err(e) = tls::server_config(&identity, tls::ClientAuth::None) {
        r.error(format!(
            "key {} does not match cert {}: {e}",
            key.display(),
            cert.display()
        ));
        return None;
    }
    let roots = roots?;
    match identity.check_issued_for(roots.clone(), role) {
        Ok(()) => r.ok(format!(
            "cert {}: {role}, issued by the CA, key matches",
            cert.display()
        )),
        Err(e) => r.error(format!("cert {}: {e}", cert.display())),
    }
    Some((identity, roots))
}

#[cfg(unix)]
fn owner_only(path: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o077 == 0)
}

#[cfg(not(unix))]
fn owner_only(_: &Path) -> Option<bool> {
    Some(true)
}

fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The `[[epochs]]` of an exchange configuration: each later epoch's secret loads,
/// holds the epoch it is listed under, and has a descriptor of that epoch signed by the
/// master file's identity.
fn check_epochs(r: &mut Report, f: &ExchangeFile, master: Option<&acs_kgc::MasterSecret>) {
    if f.epochs.is_empty() {
        return;
    }
    let served: Vec<u32> = f.epochs.iter().map(|e| e.epoch).collect();
    for e in &f.epochs {
        let Some(path) = &e.secret else { continue };
        let secret = match acs_kgc::EpochSecret::load(path) {
            Ok(s) if s.epoch() == e.epoch => s,
            Ok(s) => {
                r.error(format!(
                    "epochs: {} holds epoch {}, listed as epoch {}",
                    path.display(),
                    s.epoch(),
                    e.epoch
                ));
                continue;
            }
            Err(err) => {
                r.error(format!(
                    "epochs: epoch {} secret {}: {err}",
                    e.epoch,
                    path.display()
                ));
                continue;
            }
        };
        let mut desc = path.as_os_str().to_owned();
        desc.push(".descriptor");
        let desc = std::path::PathBuf::from(desc);
        let parsed = std::fs::read(&desc)
            .map_err(|err| err.to_string())
            .and_then(|b| acs_kgc::SignedDescriptor::from_bytes(&b).map_err(|err| err.to_string()));
        match (parsed, master) {
            (Err(err), _) => r.warn(format!(
                "epochs: epoch {} descriptor {}: {err} (clients need it to move to the epoch)",
                e.epoch,
                desc.display()
            )),
            (Ok(d), Some(m)) => {
                let ours = acs_kgc::Kgc::for_epoch(m, &secret).descriptor([0; 32], 0);
                if d.descriptor().epoch != e.epoch
                    || d.descriptor().identity_key != ours.descriptor().identity_key
                    || d.descriptor().master_public != ours.descriptor().master_public
                {
                    r.error(format!(
                        "epochs: descriptor {} was not made from {} and {} (epoch {})",
                        desc.display(),
                        path.display(),
                        f.master.display(),
                        e.epoch
                    ));
                } else {
                    r.ok(format!(
                        "epochs: epoch {} secret {}: loaded, owner-only; descriptor {} valid",
                        e.epoch,
                        path.display(),
                        desc.display()
                    ));
                }
            }
            (Ok(_), None) => {}
        }
    }
    r.ok(format!("epochs: serves master-secret epochs {served:?}"));
}

/// The file checks of an exchange server's configuration (no network).
pub fn check_exchange(f: &ExchangeFile) -> Report {
    let mut r = Report::new(format!("exchange server {}", f.index));
    let role = Role::Exchange(f.index);
    let identity = check_identity(&mut r, &f.ca, &f.cert, &f.key, role).map(|(id, _)| id);
    let master = match acs_kgc::MasterSecret::load(&f.master) {
        Ok(m) => {
            r.ok(format!("master {}: loaded, owner-only", f.master.display()));
            Some(m)
        }
        Err(e) => {
            r.error(format!("master {}: {e}", f.master.display()));
            None
        }
    };
    let mut desc = f.master.as_os_str().to_owned();
    desc.push(".descriptor");
    let desc = std::path::PathBuf::from(desc);
    match std::fs::read(&desc) {
        Err(_) => r.warn(format!(
            "master descriptor {} not found: clients need it (acs master writes it)",
            desc.display()
        )),
        Ok(bytes) => match acs_kgc::SignedDescriptor::from_bytes(&bytes) {
            Err(e) => r.error(format!("master descriptor {}: {e}", desc.display())),
            Ok(sd) => {
                use sha2::{Digest, Sha256};
                let d = sd.descriptor();
                if let Some(id) = &identity {
                    let fp: [u8; 32] = Sha256::digest(id.end_entity().as_ref()).into();
                    if d.tls_cert_sha256 != fp {
                        r.error(format!(
                            "master descriptor {} pins another TLS certificate than {}: clients will refuse this server",
                            desc.display(),
                            f.cert.display()
                        ));
                    }
                }
                if let Some(m) = &master {
                    let ours = acs_kgc::Kgc::epoch_zero(m).descriptor(d.tls_cert_sha256, 0);
                    if ours.descriptor().identity_key != d.identity_key {
                        r.error(format!(
                            "master descriptor {} was not made from {}",
                            desc.display(),
                            f.master.display()
                        ));
                    }
                }
                r.ok(format!(
                    "master descriptor {}: valid (clients pin it)",
                    desc.display()
                ));
            }
        },
    }
    check_epochs(&mut r, f, master.as_ref());
    if f.db.exists() {
        let size = std::fs::metadata(&f.db).map(|m| m.len()).unwrap_or(0);
        match owner_only(&f.db) {
            Some(false) => r.error(format!(
                "db {}: readable by others; it holds users' keys (chmod 600)",
                f.db.display()
            )),
            _ => r.ok(format!("db {}: exists ({size} bytes)", f.db.display())),
        }
    } else {
        match f.db.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) if !dir.is_dir() => r.error(format!(
                "db {}: directory {} does not exist",
                f.db.display(),
                dir.display()
            )),
            _ => r.ok(format!(
                "db {}: will be created (owner-only)",
                f.db.display()
            )),
        }
    }
    if same_port(f.relay_listen, f.peer_listen) {
        r.error(format!(
            "relay_listen and peer_listen are both {}: the relay port and the peer port must differ",
            f.relay_listen
        ));
    }
    if same_port(f.next_peer, f.peer_listen) {
        r.error(format!(
            "next_peer {} is this server's own peer port: it must be exchange server {}'s",
            f.next_peer,
            (f.index + 1) % 3
        ));
    }
    if same_port(f.next_peer, f.relay_listen) {
        r.error(format!(
            "next_peer {} is this server's own relay port",
            f.next_peer
        ));
    }
    if let Some(m) = f.metrics_listen {
        if same_port(m, f.relay_listen) || same_port(m, f.peer_listen) {
            r.error(format!("metrics_listen {m} is also the relay or peer port"));
        }
    }
    let mut relays = f.relays.clone();
    relays.sort_unstable();
    relays.dedup();
    if relays.len() != f.relays.len() {
        r.warn(format!("relays {:?}: listed twice", f.relays));
    }
    if f.timing.max_window_ms < f.timing.submit_window_ms {
        r.error(format!(
            "timing: max_window_ms {} is less than submit_window_ms {}: servers 1 and 2 would refuse server 0's rounds",
            f.timing.max_window_ms, f.timing.submit_window_ms
        ));
    }
    if f.timing.collect_grace_ms == 0 {
        r.warn("timing.collect_grace_ms = 0: a relay's batch that is a moment late is lost for the round");
    }
    if f.timing.vote_timeout_ms == 0 {
        r.error("timing.vote_timeout_ms must be positive");
    }
    r.ok(format!(
        "round: payload {} bytes, store capacity {}, expiry {} rounds, receipts {} rounds (must be identical at all three servers and all clients)",
        f.round.payload_words * 8,
        f.round.store_capacity,
        f.round.expiry_rounds,
        f.round.receipt_rounds
    ));
    let store_mib = (f.round.store_capacity * f.round.store_words() * 8 * 2) as f64 / 1048576.0;
    r.plan = vec![
        format!(
            "exchange server {} of deployment {:?} ({role})",
            f.index, f.deployment
        ),
        format!("relay port {} for entry relays {relays:?}", f.relay_listen),
        format!(
            "peer port {} for exchange server {}; dials exchange server {} at {}",
            f.peer_listen,
            (f.index + 2) % 3,
            (f.index + 1) % 3,
            f.next_peer
        ),
        format!(
            "rounds: window {} ms, collect grace {} ms, vote timeout {} ms{}",
            f.timing.submit_window_ms,
            f.timing.collect_grace_ms,
            f.timing.vote_timeout_ms,
            if f.index == 0 {
                " (this server coordinates)"
            } else {
                ""
            }
        ),
        match f.security {
            acs_engine::SecurityMode::Malicious => "security: malicious (every AND gate and shuffle verified before anything depending on it is opened; security with abort against one cheating server)".to_string(),
            acs_engine::SecurityMode::SemiHonest => "security: semi-honest (openings cross-checked, the computation not verified; safe only if every server follows the protocol)".to_string(),
        },
        format!(
            "store: {} records, {store_mib:.2} MiB of shares in the database and in memory",
            f.round.store_capacity
        ),
        match f.metrics_listen {
            Some(m) => format!("metrics: http://{m}/metrics and http://{m}/healthz"),
            None => "metrics: off (no metrics_listen)".into(),
        },
    ];
    r
}

/// The file checks of an entry relay's configuration (no network).
pub fn check_entry(f: &EntryFile) -> Report {
    let mut r = Report::new(format!("entry relay {}", f.index));
    let role = Role::Entry(f.index);
    check_identity(&mut r, &f.ca, &f.cert, &f.key, role);
    for (l, a) in f.exchanges.iter().enumerate() {
        if same_port(*a, f.listen) {
            r.error(format!(
                "exchanges[{l}] {a} is this relay's own listen address"
            ));
        }
    }
    for i in 0..3 {
        for j in i + 1..3 {
            if f.exchanges[i] == f.exchanges[j] {
                r.error(format!(
                    "exchanges[{i}] and exchanges[{j}] are both {}: list servers 0, 1, 2's relay ports",
                    f.exchanges[i]
                ));
            }
        }
    }
    if let Some(m) = f.metrics_listen {
        if same_port(m, f.listen) {
            r.error(format!("metrics_listen {m} is also the user port"));
        }
    }
    r.plan = vec![
        format!("entry relay {} ({role})", f.index),
        format!("users connect to {}", f.listen),
        format!(
            "dials relay ports: exchange-0 {}, exchange-1 {}, exchange-2 {}",
            f.exchanges[0], f.exchanges[1], f.exchanges[2]
        ),
        format!(
            "at most {} envelopes per round per server, {} user connections",
            f.max_envelopes_per_round, f.limits.max_connections
        ),
        match f.metrics_listen {
            Some(m) => format!("metrics: http://{m}/metrics and http://{m}/healthz"),
            None => "metrics: off (no metrics_listen)".into(),
        },
    ];
    r
}

/// The checks of a client configuration (files only).
pub fn check_client(f: &ClientFile) -> Report {
    let mut r = Report::new("client".into());
    match tls::load_roots(&f.ca) {
        Ok(_) => r.ok(format!("ca {}: loaded", f.ca.display())),
        Err(e) => r.error(format!("ca: {e}")),
    }
    for (i, d) in f.descriptors.iter().enumerate() {
        match std::fs::read(d)
            .map_err(|e| e.to_string())
            .and_then(|b| acs_kgc::SignedDescriptor::from_bytes(&b).map_err(|e| e.to_string()))
        {
            Ok(_) => r.ok(format!("descriptors[{i}] {}: valid", d.display())),
            Err(e) => r.error(format!("descriptors[{i}] {}: {e}", d.display())),
        }
    }
    if f.identity.exists() && owner_only(&f.identity) == Some(false) {
        r.error(format!(
            "identity {}: readable by others (chmod 600)",
            f.identity.display()
        ));
    }
    r.plan = vec![format!(
        "a user with identity {}, through relays {:?}",
        f.identity.display(),
        f.relays.iter().map(|x| x.addr).collect::<Vec<_>>()
    )];
    r
}

/// What answered a TLS probe.
enum Answer {
    /// Nothing listening.
    Unreachable(String),
    /// A TCP listener that completed no TLS handshake in time: not a relay port (an
    /// exchange server's peer port accepts only while its peers connect).
    Silent,
    /// TLS with a certificate that is not the expected role's.
    WrongCertificate(String),
    /// The expected server; whether it selected the relay-port protocol.
    Server { relay_port: bool },
}

/// Connects to `addr` without a client certificate, offering the relay-port protocol,
/// and verifies `expected`'s name.
async fn probe(addr: SocketAddr, roots: Arc<rustls::RootCertStore>, expected: Role) -> Answer {
    let cfg = match tls::client_config(roots, None) {
        Ok(c) => c,
        Err(e) => return Answer::Unreachable(e.to_string()),
    };
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = vec![RELAY_ALPN.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp =
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Answer::Unreachable(e.to_string()),
            Err(_) => return Answer::Unreachable("no answer in 3 s".into()),
        };
    match tokio::time::timeout(
        Duration::from_secs(3),
        connector.connect(expected.server_name(), tcp),
    )
    .await
    {
        Ok(Ok(s)) => Answer::Server {
            relay_port: s.get_ref().1.alpn_protocol() == Some(RELAY_ALPN),
        },
        Ok(Err(e)) if e.to_string().contains("certificate") => {
            Answer::WrongCertificate(e.to_string())
        }
        Ok(Err(e)) => Answer::Unreachable(format!("TLS: {e}")),
        Err(_) => Answer::Silent,
    }
}

fn probe_bind(r: &mut Report, key: &str, addr: SocketAddr) {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => r.ok(format!("{key} {addr}: can be bound")),
        Err(e) => r.warn(format!(
            "{key} {addr}: cannot bind now ({e}); is a server already running there?"
        )),
    }
}

/// Network checks of an exchange server's configuration (`acs check` only).
pub async fn probe_exchange(f: &ExchangeFile, r: &mut Report) {
    probe_bind(r, "relay_listen", f.relay_listen);
    probe_bind(r, "peer_listen", f.peer_listen);
    if let Some(m) = f.metrics_listen {
        probe_bind(r, "metrics_listen", m);
    }
    let Ok(roots) = tls::load_roots(&f.ca) else {
        return;
    };
    let next = Role::Exchange((f.index + 1) % 3);
    match probe(f.next_peer, roots, next).await {
        Answer::Unreachable(e) => r.warn(format!(
            "next_peer {}: not reachable now ({e}); fine if {next} is not started yet",
            f.next_peer
        )),
        Answer::WrongCertificate(e) => r.error(format!(
            "next_peer {}: the server there is not {next}: {e}",
            f.next_peer
        )),
        Answer::Server { relay_port: true } => r.error(format!(
            "next_peer {} is {next}'s relay port, not its peer port",
            f.next_peer
        )),
        Answer::Server { relay_port: false } => {
            r.ok(format!("next_peer {}: {next} answers", f.next_peer))
        }
        Answer::Silent => r.ok(format!(
            "next_peer {}: accepts connections (a peer port completes TLS only while its peers connect)",
            f.next_peer
        )),
    }
}

/// Network checks of an entry relay's configuration (`acs check` only).
pub async fn probe_entry(f: &EntryFile, r: &mut Report) {
    probe_bind(r, "listen", f.listen);
    if let Some(m) = f.metrics_listen {
        probe_bind(r, "metrics_listen", m);
    }
    let Ok(roots) = tls::load_roots(&f.ca) else {
        return;
    };
    for (l, addr) in f.exchanges.iter().enumerate() {
        let role = Role::Exchange(l as u8);
        match probe(*addr, roots.clone(), role).await {
            Answer::Unreachable(e) => r.warn(format!(
                "exchanges[{l}] {addr}: not reachable now ({e}); fine if {role} is not started yet"
            )),
            Answer::WrongCertificate(e) => r.error(format!(
                "exchanges[{l}] {addr}: the server there is not {role} (servers listed out of order?): {e}"
            )),
            Answer::Server { relay_port: false } => r.error(format!(
                "exchanges[{l}] {addr}: {role} answers there, but it is not its relay port (a peer port?)"
            )),
            Answer::Silent => r.error(format!(
                "exchanges[{l}] {addr}: accepts TCP but completes no TLS handshake in 3 s: not a relay port (a peer port of running servers?)"
            )),
            Answer::Server { relay_port: true } => {
                r.ok(format!("exchanges[{l}] {addr}: {role}'s relay port answers"))
            }
        }
    }
}

/// `acs check --config path`: loads, checks and probes; the report (or why the file
/// could not be read at all).
pub async fn check_file(path: &Path) -> Result<Report, ConfigError> {
    Ok(match kind_of(path)? {
        Kind::Exchange => {
            let f = ExchangeFile::load(path)?;
            let mut r = check_exchange(&f);
            probe_exchange(&f, &mut r).await;
            r
        }
        Kind::Entry => {
            let f = EntryFile::load(path)?;
            let mut r = check_entry(&f);
            probe_entry(&f, &mut r).await;
            r
        }
        Kind::Client => check_client(&ClientFile::load(path)?),
    })
}
