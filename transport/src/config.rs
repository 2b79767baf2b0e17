//! Configuration files (TOML). Relative paths are resolved against the file's directory,
//! so a deployment directory can be moved as a whole.

use crate::exchange::server::{ServerConfig, Timing};
use crate::listener::Limits;
use crate::relay::RelayConfig;
use crate::tls::{self, Identity};
use acs_engine::round::RoundConfig;
use acs_engine::SecurityMode;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint (with line and column).
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificates or keys could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Listener limits as written in a file (milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// Concurrent connections.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout_ms: u64,
    /// Deadline for a started frame to finish.
    pub frame_timeout_ms: u64,
    /// Time open connections get on shutdown.
    pub shutdown_grace_ms: u64,
    /// A relay closes a user connection silent this long (users send every round).
    pub idle_timeout_ms: u64,
}

impl Default for LimitsFile {
    fn default() -> Self {
        let d = Limits::default();
        LimitsFile {
            max_connections: d.max_connections,
            handshake_timeout_ms: d.handshake_timeout.as_millis() as u64,
            frame_timeout_ms: d.frame_timeout.as_millis() as u64,
            shutdown_grace_ms: d.shutdown_grace.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
        }
    }
}

impl LimitsFile {
    /// As [`Limits`].
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

fn default_max_envelopes() -> usize {
    1_000_000
}

/// `acs entry --config F`.
///
/// ```toml
/// index = 0                      # this relay is entry-0 (its certificate's name)
/// listen = "0.0.0.0:7400"        # users connect here
/// exchanges = ["10.0.0.1:7300", "10.0.0.2:7300", "10.0.0.3:7300"]  # relay ports of servers 0, 1, 2
/// ca = "certs/ca.pem"
/// cert = "certs/entry-0.pem"
/// key = "certs/entry-0-key.pem"
/// max_envelopes_per_round = 1000000
/// metrics_listen = "127.0.0.1:9400" # optional: /metrics and /healthz (plain HTTP)
///
/// [limits]
/// max_connections = 10000
/// handshake_timeout_ms = 5000
/// frame_timeout_ms = 10000
/// shutdown_grace_ms = 2000
/// idle_timeout_ms = 600000       # close user connections silent this long
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryFile {
    /// Relay index.
    pub index: u32,
    /// User-facing address.
    pub listen: SocketAddr,
    /// Relay ports of exchange servers 0, 1, 2.
    pub exchanges: [SocketAddr; 3],
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// This relay's certificate (PEM).
    pub cert: PathBuf,
    /// This relay's key (PEM).
    pub key: PathBuf,
    /// Cap on envelopes per round per exchange server.
    #[serde(default = "default_max_envelopes")]
    pub max_envelopes_per_round: usize,
    /// Where `/metrics` and `/healthz` are served over plain HTTP (none if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Listener limits.
    #[serde(default)]
    pub limits: LimitsFile,
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The one writer of configuration files: `acs demo`, the tests and the load generator
/// write what these types serialize to, so a file they write always loads.
fn to_toml<T: Serialize>(value: &T) -> Result<String, toml::ser::Error> {
    toml::to_string(value)
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl EntryFile {
    /// As TOML that [`EntryFile::load`] reads back (paths as they are here: write
    /// relative ones to resolve against the file's directory).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        to_toml(self)
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut f: EntryFile = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        f.ca = resolve(base, &f.ca);
        f.cert = resolve(base, &f.cert);
        f.key = resolve(base, &f.key);
        let invalid = |reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        if f.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections must be at least 1"));
        }
        if f.limits.handshake_timeout_ms == 0 || f.limits.frame_timeout_ms == 0 {
            return Err(invalid("timeouts must be positive"));
        }
        if f.max_envelopes_per_round == 0 {
            return Err(invalid("max_envelopes_per_round must be at least 1"));
        }
        Ok(f)
    }

    /// The relay configuration, with certificates loaded.
    pub fn relay_config(&self) -> Result<RelayConfig, ConfigError> {
        Ok(RelayConfig {
            index: self.index,
            exchanges: self.exchanges,
            identity: Identity::load(&self.cert, &self.key)?,
            roots: tls::load_roots(&self.ca)?,
            limits: self.limits.limits(),
            max_envelopes_per_round: self.max_envelopes_per_round,
        })
    }
}

/// Round timing as written in a file (milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingFile {
    /// Submission window (server 0 sets it for everyone).
    pub submit_window_ms: u64,
    /// Wait for relay batches after the deadline.
    pub collect_grace_ms: u64,
    /// Wait for the peers' commit votes.
    pub vote_timeout_ms: u64,
    /// Longest submission window a follower accepts.
    pub max_window_ms: u64,
}

impl Default for TimingFile {
    fn default() -> Self {
        let t = Timing::default();
        TimingFile {
            submit_window_ms: t.submit_window.as_millis() as u64,
            collect_grace_ms: t.collect_grace.as_millis() as u64,
            vote_timeout_ms: t.vote_timeout.as_millis() as u64,
            max_window_ms: t.max_window.as_millis() as u64,
        }
    }
}

/// `acs exchange --config F`.
///
/// ```toml
/// index = 0                          # exchange-0; server 0 coordinates rounds
/// deployment = "acs-example"         # identical at all three
/// relay_listen = "0.0.0.0:7300"      # entry relays connect here
/// peer_listen = "0.0.0.0:7310"       # exchange server index-1 connects here
/// next_peer = "203.0.113.20:7310"    # exchange server index+1's peer port
/// relays = [0, 1, 2, 3]              # entry relay indices that feed this server (SIGHUP reloads)
/// ca = "certs/ca.pem"
/// cert = "certs/exchange-0.pem"
/// key = "certs/exchange-0-key.pem"
/// master = "master.key"              # kgc master secret (acs master), mode 0600
/// db = "exchange.redb"
/// metrics_listen = "127.0.0.1:9300" # optional: /metrics and /healthz (plain HTTP)
///
/// [round]                            # identical at all three servers and all users
/// payload_words = 32
/// store_capacity = 10000
/// expiry_rounds = 100
/// receipt_rounds = 43200             # optional (this is the default)
///
/// [timing]
/// submit_window_ms = 1000
/// collect_grace_ms = 2000
///
/// [limits]
/// max_connections = 1024
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeFile {
    /// 0, 1 or 2.
    pub index: u8,
    /// Deployment name.
    pub deployment: String,
    /// Relay-facing address.
    pub relay_listen: SocketAddr,
    /// Peer-facing address.
    pub peer_listen: SocketAddr,
    /// The next server's peer port.
    pub next_peer: SocketAddr,
    /// Entry relay indices (the one setting `acs exchange` re-reads on SIGHUP).
    pub relays: Vec<u32>,
    /// CA certificate.
    pub ca: PathBuf,
    /// This server's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// kgc master secret file.
    pub master: PathBuf,
    /// Database file.
    pub db: PathBuf,
    /// Where `/metrics` and `/healthz` are served over plain HTTP (none if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// `"malicious"` (default) or `"semi-honest"`: whether every AND gate of the
    /// computation is verified before anything depending on it is opened or released
    /// (`docs/security.md`). Identical at all three servers (peers refuse a mismatch).
    #[serde(default = "default_security")]
    pub security: SecurityMode,
    /// Exchange parameters.
    pub round: RoundConfig,
    /// Round timing.
    #[serde(default)]
    pub timing: TimingFile,
    /// Listener limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// The master-secret epochs served (`docs/operators.md` §9, rotation): epoch 0 is
    /// the `master` file's own secret (no `secret`); each later one names its secret
    /// file. Absent: epoch 0 alone. Last in the file (an array of tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epochs: Vec<EpochFile>,
}

/// One `[[epochs]]` entry of an exchange configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochFile {
    /// The epoch number.
    pub epoch: u32,
    /// Its secret file (`acs master --epoch N`); absent for epoch 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<PathBuf>,
}

/// The deployment default (`acs exchange` without `security`, and `acs demo`): security
/// with abort against one malicious exchange server, the threat model the system is
/// built for. Verification costs about 2.2x the
/// semi-honest round at 10^5 users and 1.3x the end-to-end latency of `acs demo` at 1000
/// users (`docs/security.md`).
pub(crate) fn default_security() -> SecurityMode {
    SecurityMode::Malicious
}

impl ExchangeFile {
    /// As TOML that [`ExchangeFile::load`] reads back (paths as they are here).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        to_toml(self)
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut f: ExchangeFile = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut f.ca, &mut f.cert, &mut f.key, &mut f.master, &mut f.db] {
            *p = resolve(base, p);
        }
        for e in &mut f.epochs {
            if let Some(p) = e.secret.as_mut() {
                *p = resolve(base, p);
            }
        }
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if f.epochs.len() > crate::exchange::epochs::MAX_EPOCHS_SERVED {
            return Err(invalid(format!(
                "epochs: {} listed; at most {} are served at once (retire the oldest)",
                f.epochs.len(),
                crate::exchange::epochs::MAX_EPOCHS_SERVED
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for e in &f.epochs {
            if !seen.insert(e.epoch) {
                return Err(invalid(format!(
                    "epochs: epoch {} is listed twice",
                    e.epoch
                )));
            }
            match (e.epoch, &e.secret) {
                (0, Some(_)) => {
                    return Err(invalid(
                        "epochs: epoch 0 is the master file's own secret; give it no `secret`"
                            .into(),
                    ))
                }
                (n, None) if n > 0 => {
                    return Err(invalid(format!(
                        "epochs: epoch {n} needs its `secret` file (acs master --epoch {n})"
                    )))
                }
                _ => {}
            }
        }
        if f.index > 2 {
            return Err(invalid(format!("index {} is not 0, 1 or 2", f.index)));
        }
        if f.relays.is_empty() {
            return Err(invalid("relays: at least one entry relay".into()));
        }
        if f.round.payload_words == 0
            || f.round.store_capacity == 0
            || f.round.expiry_rounds == 0
            || f.round.receipt_rounds == 0
        {
            return Err(invalid(
                "round: payload_words, store_capacity, expiry_rounds and receipt_rounds must be positive".into(),
            ));
        }
        if f.limits.max_connections == 0 || f.timing.submit_window_ms == 0 {
            return Err(invalid("limits and timing must be positive".into()));
        }
        let answer = crate::output::plaintext_bytes(f.round.output_words());
        if answer > acs_kgc::MAX_SHARE_BYTES {
            return Err(invalid(format!(
                "round.payload_words {} is too large: each answer to a user (both output components, checkable) would be {answer} bytes, above the sealing limit of {} bytes",
                f.round.payload_words,
                acs_kgc::MAX_SHARE_BYTES
            )));
        }
        Ok(f)
    }

    /// The server configuration, with certificates loaded.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let ms = std::time::Duration::from_millis;
        Ok(ServerConfig {
            index: self.index,
            deployment: self.deployment.clone(),
            next_peer: self.next_peer,
            identity: Identity::load(&self.cert, &self.key)?,
            roots: tls::load_roots(&self.ca)?,
            limits: self.limits.limits(),
            relays: self.relays.clone().into(),
            round: self.round,
            security: self.security,
            timing: Timing {
                submit_window: ms(self.timing.submit_window_ms),
                collect_grace: ms(self.timing.collect_grace_ms),
                vote_timeout: ms(self.timing.vote_timeout_ms),
                max_window: ms(self.timing.max_window_ms),
            },
            db_path: self.db.clone(),
            max_rounds: None,
            start_gate: None,
            metrics: std::sync::Arc::new(crate::metrics::ExchangeMetrics::new()),
            epoch_reload: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_file_parses_resolves_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("entry.toml");
        std::fs::write(
            &p,
            r#"
index = 3
listen = "127.0.0.1:7400"
exchanges = ["127.0.0.1:7300", "127.0.0.1:7301", "127.0.0.1:7302"]
ca = "certs/ca.pem"
cert = "/abs/entry-3.pem"
key = "certs/entry-3-key.pem"
[limits]
max_connections = 10
"#,
        )
        .unwrap();
        let f = EntryFile::load(&p).unwrap();
        assert_eq!(f.index, 3);
        assert_eq!(f.ca, dir.path().join("certs/ca.pem"));
        assert_eq!(f.cert, PathBuf::from("/abs/entry-3.pem"));
        assert_eq!(f.limits.max_connections, 10);
        assert_eq!(f.limits.handshake_timeout_ms, 5000);
        assert_eq!(f.max_envelopes_per_round, 1_000_000);

        std::fs::write(&p, "index = 1\nlisten = \"127.0.0.1:1\"\nbogus = 2\n").unwrap();
        let err = EntryFile::load(&p).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    /// What `to_toml` writes loads back to the same value (the demo, the tests and the
    /// load generator write configurations only this way).
    #[test]
    fn to_toml_round_trips_every_file_type() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let round = RoundConfig {
            payload_words: 4,
            store_capacity: 8,
            expiry_rounds: 20,
            receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
        };
        let ex = ExchangeFile {
            index: 1,
            deployment: "t".into(),
            relay_listen: addr(7301),
            peer_listen: addr(7311),
            next_peer: addr(7312),
            relays: vec![0, 2],
            ca: d.join("certs/ca.pem"),
            cert: d.join("certs/exchange-1.pem"),
            key: d.join("certs/exchange-1-key.pem"),
            master: d.join("master-1.key"),
            db: d.join("ex1.redb"),
            metrics_listen: Some(addr(9301)),
            security: Default::default(),
            round,
            timing: TimingFile {
                submit_window_ms: 300,
                ..TimingFile::default()
            },
            limits: LimitsFile {
                max_connections: 64,
                ..LimitsFile::default()
            },
            epochs: vec![
                EpochFile {
                    epoch: 0,
                    secret: None,
                },
                EpochFile {
                    epoch: 1,
                    secret: Some(d.join("master-1.key.epoch1")),
                },
            ],
        };
        let p = d.join("ex1.toml");
        std::fs::write(&p, ex.to_toml().unwrap()).unwrap();
        assert_eq!(ExchangeFile::load(&p).unwrap(), ex);
        // A file that does not name a security mode gets the verified computation.
        let text = ex.to_toml().unwrap();
        assert!(text.contains("security = \"semi-honest\""), "{text}");
        let unnamed: String = text
            .lines()
            .filter(|l| !l.starts_with("security"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&p, unnamed).unwrap();
        assert_eq!(
            ExchangeFile::load(&p).unwrap().security,
            SecurityMode::Malicious
        );

        let entry = EntryFile {
            index: 2,
            listen: addr(7402),
            exchanges: [addr(7300), addr(7301), addr(7302)],
            ca: d.join("certs/ca.pem"),
            cert: d.join("certs/entry-2.pem"),
            key: d.join("certs/entry-2-key.pem"),
            max_envelopes_per_round: 10,
            metrics_listen: None,
            limits: LimitsFile::default(),
        };
        let p = d.join("entry2.toml");
        std::fs::write(&p, entry.to_toml().unwrap()).unwrap();
        assert_eq!(EntryFile::load(&p).unwrap(), entry);

        let client = ClientFile {
            ca: d.join("certs/ca.pem"),
            identity: d.join("alice.identity"),
            descriptors: [0, 1, 2].map(|i| d.join(format!("master-{i}.key.descriptor"))),
            relays: vec![RelayAddr {
                index: 0,
                addr: addr(7400),
            }],
            round,
            timeout_ms: 1000,
        };
        let p = d.join("alice.toml");
        std::fs::write(&p, client.to_toml().unwrap()).unwrap();
        assert_eq!(ClientFile::load(&p).unwrap(), client);
    }

    /// The examples in `docs/operators.md` parse as the types they document.
    #[test]
    fn the_operators_guide_examples_parse() {
        let doc = include_str!("../../docs/operators.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert!(blocks.len() >= 3, "{}", blocks.len());
        let (mut ex, mut en, mut cl) = (0, 0, 0);
        for b in blocks {
            if b.contains("relay_listen") {
                toml::from_str::<ExchangeFile>(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
                ex += 1;
            } else if b.contains("exchanges") {
                toml::from_str::<EntryFile>(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
                en += 1;
            } else if b.contains("descriptors") {
                toml::from_str::<ClientFile>(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
                cl += 1;
            }
        }
        assert!(ex >= 1 && en >= 1 && cl >= 1, "{ex} {en} {cl}");
    }
}

/// An entry relay as a client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAddr {
    /// The relay's index (its certificate name is `entry-<index>.acs`).
    pub index: u32,
    /// Its user-facing address.
    pub addr: SocketAddr,
}

fn default_client_timeout_ms() -> u64 {
    60_000
}

/// `acs client` configuration:
///
/// ```toml
/// ca = "certs/ca.pem"                 # the deployment's CA (relays' TLS)
/// identity = "alice.identity"         # created owner-only on first use
/// descriptors = ["master-0.key.descriptor", "master-1.key.descriptor", "master-2.key.descriptor"]
/// relays = [{ index = 0, addr = "127.0.0.1:7000" }]
/// [round]                             # identical to the exchange servers'
/// payload_words = 32
/// store_capacity = 10000
/// expiry_rounds = 100
/// receipt_rounds = 43200             # optional (this is the default)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// CA certificate.
    pub ca: PathBuf,
    /// The user's identity seed file (32 bytes, owner-only).
    pub identity: PathBuf,
    /// The three exchange servers' signed descriptors, in server order (pinned).
    pub descriptors: [PathBuf; 3],
    /// Entry relays to choose from.
    pub relays: Vec<RelayAddr>,
    /// Exchange parameters.
    pub round: RoundConfig,
    /// How long to wait for a relay, a round or outputs.
    #[serde(default = "default_client_timeout_ms")]
    pub timeout_ms: u64,
}

impl ClientFile {
    /// As TOML that [`ClientFile::load`] reads back (paths as they are here).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        to_toml(self)
    }

    /// Reads and checks a client configuration; relative paths are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut f: ClientFile = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        f.ca = resolve(base, &f.ca);
        f.identity = resolve(base, &f.identity);
        for d in f.descriptors.iter_mut() {
            *d = resolve(base, d);
        }
        let invalid = |reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        if f.relays.is_empty() {
            return Err(invalid("relays: at least one entry relay is needed"));
        }
        if f.round.payload_words == 0 {
            return Err(invalid("round.payload_words must be positive"));
        }
        if f.timeout_ms == 0 {
            return Err(invalid("timeout_ms must be positive"));
        }
        Ok(f)
    }
}
