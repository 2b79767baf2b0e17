//! TLS configuration. One crypto provider, chosen here explicitly: ring. (rustls panics
//! at the first config builder when both ring and aws-lc-rs are compiled in and neither
//! is chosen; we never rely on the process default.) TLS 1.3 only: we run both ends.
//!
//! Names: every certificate carries a role name as its DNS subject alternative name,
//! `exchange-{i}.acs` or `entry-{j}.acs` ([`Role`]). Clients dial by address but verify
//! the role name, so a relay's certificate cannot pass for an exchange server's. Mutual
//! TLS listeners check the client's certificate name the same way
//! ([`verify_peer_role`]), after rustls has checked the chain against the CA.

use crate::wire::WireError;
use rustls::client::verify_server_name;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// Why TLS setup or peer identification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("reading {path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. empty root store).
    #[error("client verifier: {0}")]
    Verifier(String),
    /// The peer's certificate is not for the role this link expects.
    #[error("peer certificate is not valid for {expected}: {reason}")]
    WrongPeer {
        /// The role name expected.
        expected: String,
        /// Why it failed.
        reason: String,
    },
    /// The TCP connection could not be made.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out after {0:?}")]
    HandshakeTimeout(std::time::Duration),
}

impl From<TlsError> for WireError {
    fn from(e: TlsError) -> Self {
        WireError::Io(std::io::Error::other(e.to_string()))
    }
}

/// The crypto provider every config in ACS is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Who holds a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Exchange server 0, 1 or 2.
    Exchange(u8),
    /// Entry relay `j`.
    Entry(u32),
}

impl Role {
    /// The DNS name in the role's certificate, e.g. `exchange-1.acs`.
    pub fn dns_name(self) -> String {
        match self {
            Role::Exchange(i) => format!("exchange-{i}.acs"),
            Role::Entry(j) => format!("entry-{j}.acs"),
        }
    }

    /// The same, as the TLS server name a client verifies.
    pub fn server_name(self) -> ServerName<'static> {
        // Role names are plain ASCII DNS labels, always valid.
        ServerName::try_from(self.dns_name()).expect("role names are valid DNS names")
    }

    /// File stem for this role's certificate and key (`exchange-1`, `entry-0`).
    pub fn file_stem(self) -> String {
        match self {
            Role::Exchange(i) => format!("exchange-{i}"),
            Role::Entry(j) => format!("entry-{j}"),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dns_name())
    }
}

/// A certificate chain and its private key.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// SHA-256 of the DER of the end-entity certificate a peer presented.
pub fn peer_cert_sha256(peer_certs: Option<&[CertificateDer<'_>]>) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    peer_certs
        .and_then(|c| c.first())
        .map(|c| Sha256::digest(c.as_ref()).into())
}

impl Identity {
    /// SHA-256 of this identity's certificate (DER), as descriptors name it.
    pub fn cert_sha256(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        self.chain
            .first()
            .map(|c| Sha256::digest(c.as_ref()).into())
            .unwrap_or([0; 32])
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// From a PEM certificate chain file and a PEM private key file.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Identity { chain, key })
    }

    /// From PEM text (used by tests and the demo, which keep certificates in memory).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: "<memory>".into(),
                reason: e.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            path: "<memory>".into(),
            reason: e.to_string(),
        })?;
        Ok(Identity { chain, key })
    }
}

impl Identity {
    /// The end-entity certificate.
    pub fn end_entity(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Checks that this certificate chains to `roots` and is for `role` (what a peer will
    /// check when this identity connects or serves). On failure, says what the
    /// certificate is for instead, where it is for some role.
    pub fn check_issued_for(&self, roots: Arc<RootCertStore>, role: Role) -> Result<(), String> {
        use rustls::client::danger::ServerCertVerifier;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| e.to_string())?;
        let found = role_of(Some(&self.chain[..1]));
        if found.is_some_and(|r| r != role) {
            return Err(format!(
                "the certificate is for {}, not {} (check `index` and `cert`)",
                found.map(|r| r.dns_name()).unwrap_or_default(),
                role.dns_name()
            ));
        }
        verifier
            .verify_server_cert(
                &self.chain[0],
                &self.chain[1..],
                &role.server_name(),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| format!("the certificate does not verify as {role} against the CA: {e}"))
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in file".into()));
    }
    Ok(certs)
}

/// The trust anchors: the deployment's CA certificate(s) from a PEM file.
pub fn load_roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    roots_from_certs(load_certs(ca)?)
}

/// The trust anchors from PEM text.
pub fn roots_from_pem(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: "<memory>".into(),
            reason: e.to_string(),
        })?;
    roots_from_certs(certs)
}

fn roots_from_certs(certs: Vec<CertificateDer<'static>>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

/// Whether a listener asks clients for certificates.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// Users connecting to an entry relay: server authentication only.
    None,
    /// Relays and exchange servers: clients must present a certificate from these roots.
    Required(Arc<RootCertStore>),
}

/// A server config for `identity`, TLS 1.3, ring.
pub fn server_config(identity: &Identity, auth: ClientAuth) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    Ok(Arc::new(config))
}

/// A client config trusting `roots`, presenting `identity` if given (mutual TLS).
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Checks that the peer's end-entity certificate (already chain-verified by rustls) is
/// for `expected`.
pub fn verify_peer_role(
    peer_certs: Option<&[CertificateDer<'_>]>,
    expected: Role,
) -> Result<(), TlsError> {
    let wrong = |reason: String| TlsError::WrongPeer {
        expected: expected.dns_name(),
        reason,
    };
    let end_entity = peer_certs
        .and_then(|c| c.first())
        .ok_or_else(|| wrong("no client certificate".into()))?;
    let parsed = ParsedCertificate::try_from(end_entity).map_err(|e| wrong(e.to_string()))?;
    verify_server_name(&parsed, &expected.server_name()).map_err(|e| wrong(e.to_string()))
}

/// The role a certificate is for, whatever the deployment's lists say: exchange servers
/// 0 to 2 and entry relays 0 to 4095 are tried (for error messages and `acs check`).
pub fn role_of(peer_certs: Option<&[CertificateDer<'_>]>) -> Option<Role> {
    let parsed = ParsedCertificate::try_from(peer_certs?.first()?).ok()?;
    (0..3)
        .map(Role::Exchange)
        .chain((0..4096).map(Role::Entry))
        .find(|r| verify_server_name(&parsed, &r.server_name()).is_ok())
}

/// Which of `candidates` the peer's certificate is for, if any.
pub fn identify_peer(
    peer_certs: Option<&[CertificateDer<'_>]>,
    candidates: &[Role],
) -> Option<Role> {
    candidates
        .iter()
        .copied()
        .find(|r| verify_peer_role(peer_certs, *r).is_ok())
}
