//! Configuration files (TOML). Relative paths are resolved against the file's directory,
//! so a deployment directory can be moved as a whole.

use crate::listener::Limits;
use crate::relay::RelayConfig;
use crate::tls::{self, Identity};
use serde::Deserialize;
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
#[derive(Debug, Clone, Deserialize)]
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
}

impl Default for LimitsFile {
    fn default() -> Self {
        let d = Limits::default();
        LimitsFile {
            max_connections: d.max_connections,
            handshake_timeout_ms: d.handshake_timeout.as_millis() as u64,
            frame_timeout_ms: d.frame_timeout.as_millis() as u64,
            shutdown_grace_ms: d.shutdown_grace.as_millis() as u64,
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
///
/// [limits]
/// max_connections = 10000
/// handshake_timeout_ms = 5000
/// frame_timeout_ms = 10000
/// shutdown_grace_ms = 2000
/// ```
#[derive(Debug, Clone, Deserialize)]
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

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl EntryFile {
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
}
