//! `acs certs`: a development certificate authority and the certificates of one
//! deployment (rcgen). Not for production: a real deployment's operators keep the CA key
//! offline and issue certificates through their own PKI; see `docs/operators.md`.
//!
//! Files written to the output directory:
//! `ca.pem`, `ca-key.pem`; `exchange-{i}.pem`, `exchange-{i}-key.pem` for each exchange
//! server; `entry-{j}.pem`, `entry-{j}-key.pem` for each entry relay. Keys are created
//! owner-only (0600). Every leaf certificate is usable both as a TLS server and a TLS
//! client certificate (relays serve users and are clients of exchange servers; exchange
//! servers both dial and accept each other).

use crate::tls::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why certificate generation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("generating certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file to be written exists already: nothing was written.
    #[error("{path} exists: refusing to overwrite certificates or keys (move it away first; `acs certs issue` adds one certificate from an existing CA)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The CA directory for `acs certs issue` is not usable.
    #[error("CA in {dir}: {reason}")]
    Ca {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// PEM text of one certificate and its key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A deployment's CA and leaf certificates, in memory.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The CA.
    pub ca: IssuedCert,
    /// One per role, in the order given.
    pub leaves: Vec<(Role, IssuedCert)>,
}

impl DevPki {
    /// The leaf for `role`.
    pub fn leaf(&self, role: Role) -> Option<&IssuedCert> {
        self.leaves.iter().find(|(r, _)| *r == role).map(|(_, c)| c)
    }
}

fn validity(params: &mut CertificateParams) {
    // Valid from the start of last year for five years: enough for a development
    // deployment, without hard-coding a date that will one day be in the past.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 5, 1, 1);
}

/// The development CA's parameters. `acs certs issue` rebuilds the issuer from them and
/// the CA key: the name and key identifier of a leaf's issuer are derived from exactly
/// these, so they match the CA certificate that `generate` made.
fn ca_params() -> Result<CertificateParams, CertError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ACS development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params);
    Ok(ca_params)
}

/// Makes a CA and one certificate per role.
pub fn generate(roles: &[Role]) -> Result<DevPki, CertError> {
    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = IssuedCert {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaves = Vec::with_capacity(roles.len());
    for &role in roles {
        leaves.push((role, leaf(role, &issuer)?));
    }
    Ok(DevPki { ca, leaves })
}

fn leaf(role: Role, issuer: &Issuer<'_, KeyPair>) -> Result<IssuedCert, CertError> {
    {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![role.dns_name()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, role.dns_name());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params);
        let cert = params.signed_by(&key, issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// `acs certs issue`: one more certificate for `role` from the CA that `acs certs` made
/// in `dir` (`ca.pem`, `ca-key.pem`), written there as `{role}.pem` and
/// `{role}-key.pem` (never over existing files). The new certificate is checked against
/// `ca.pem` before anything is written.
pub fn issue(dir: &Path, role: Role) -> Result<Vec<PathBuf>, CertError> {
    let ca_err = |reason: String| CertError::Ca {
        dir: dir.to_path_buf(),
        reason,
    };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| ca_err(format!("{name}: {e}")))
    };
    let ca_pem = read("ca.pem")?;
    let ca_key =
        KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| ca_err(format!("ca-key.pem: {e}")))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let cert = leaf(role, &issuer)?;
    // A CA that `acs certs` did not make (another name) would give certificates that do
    // not chain: refuse rather than write them.
    let roots = crate::tls::roots_from_pem(&ca_pem).map_err(|e| ca_err(format!("ca.pem: {e}")))?;
    let id = crate::tls::Identity::from_pem(&cert.cert_pem, &cert.key_pem)
        .map_err(|e| ca_err(e.to_string()))?;
    id.check_issued_for(roots, role).map_err(|e| {
        ca_err(format!(
            "a certificate issued with ca-key.pem does not verify against ca.pem ({e}); was this CA made by `acs certs`?"
        ))
    })?;
    let files = [
        (format!("{}.pem", role.file_stem()), cert.cert_pem, false),
        (format!("{}-key.pem", role.file_stem()), cert.key_pem, true),
    ];
    refuse_existing(dir, files.iter().map(|(n, _, _)| n.as_str()))?;
    let mut written = Vec::new();
    for (name, text, secret) in files {
        let path = dir.join(name);
        write_file(&path, text.as_bytes(), secret).map_err(|source| CertError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Fails with [`CertError::Exists`] naming the first of `names` in `dir` that exists.
fn refuse_existing<'a>(
    dir: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), CertError> {
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            return Err(CertError::Exists { path });
        }
    }
    Ok(())
}

/// The roles of a deployment with `exchanges` exchange servers and `entries` relays.
pub fn deployment_roles(exchanges: u8, entries: u32) -> Vec<Role> {
    (0..exchanges)
        .map(Role::Exchange)
        .chain((0..entries).map(Role::Entry))
        .collect()
}

/// Writes `pki` into `dir` (created if missing); returns the files written. Refuses,
/// before writing anything, if any of the files exists.
pub fn write(pki: &DevPki, dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = vec!["ca.pem".to_string(), "ca-key.pem".to_string()];
    for (role, _) in &pki.leaves {
        names.push(format!("{}.pem", role.file_stem()));
        names.push(format!("{}-key.pem", role.file_stem()));
    }
    refuse_existing(dir, names.iter().map(String::as_str))?;
    let mut written = Vec::new();
    let mut put = |name: String, text: &str, secret: bool| -> Result<(), CertError> {
        let path = dir.join(name);
        write_file(&path, text.as_bytes(), secret).map_err(|source| CertError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok(())
    };
    put("ca.pem".into(), &pki.ca.cert_pem, false)?;
    put("ca-key.pem".into(), &pki.ca.key_pem, true)?;
    for (role, c) in &pki.leaves {
        put(format!("{}.pem", role.file_stem()), &c.cert_pem, false)?;
        put(format!("{}-key.pem", role.file_stem()), &c.key_pem, true)?;
    }
    Ok(written)
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls;

    #[test]
    fn generated_certificates_load_and_carry_their_role() {
        let pki = generate(&deployment_roles(3, 2)).unwrap();
        assert_eq!(pki.leaves.len(), 5);
        let roots = tls::roots_from_pem(&pki.ca.cert_pem).unwrap();
        assert_eq!(roots.len(), 1);
        let leaf = pki.leaf(Role::Exchange(1)).unwrap();
        let id = tls::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
        assert!(format!("{id:?}").contains("redacted"));
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        use rustls::pki_types::pem::PemObject;
        let chain = [der];
        assert!(tls::verify_peer_role(Some(&chain), Role::Exchange(1)).is_ok());
        assert!(tls::verify_peer_role(Some(&chain), Role::Exchange(0)).is_err());
        assert!(tls::verify_peer_role(Some(&chain), Role::Entry(1)).is_err());
        assert!(tls::verify_peer_role(None, Role::Exchange(1)).is_err());
        assert_eq!(
            tls::identify_peer(Some(&chain), &deployment_roles(3, 2)),
            Some(Role::Exchange(1))
        );
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_written_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(&deployment_roles(3, 1)).unwrap();
        let files = write(&pki, dir.path()).unwrap();
        assert_eq!(files.len(), 2 + 2 * 4);
        let mode = std::fs::metadata(dir.path().join("exchange-0-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        let id = tls::Identity::load(
            &dir.path().join("entry-0.pem"),
            &dir.path().join("entry-0-key.pem"),
        )
        .unwrap();
        let _ = tls::server_config(&id, tls::ClientAuth::None).unwrap();
        let roots = tls::load_roots(&dir.path().join("ca.pem")).unwrap();
        let _ = tls::client_config(roots.clone(), Some(&id)).unwrap();
        let _ = tls::server_config(&id, tls::ClientAuth::Required(roots)).unwrap();
    }

    #[test]
    fn write_refuses_to_overwrite_and_issue_adds_one_certificate_from_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(&deployment_roles(3, 1)).unwrap();
        write(&pki, dir.path()).unwrap();
        let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let again = generate(&deployment_roles(3, 1)).unwrap();
        let err = write(&again, dir.path()).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);

        let files = issue(dir.path(), Role::Entry(7)).unwrap();
        assert_eq!(files.len(), 2);
        let id = tls::Identity::load(
            &dir.path().join("entry-7.pem"),
            &dir.path().join("entry-7-key.pem"),
        )
        .unwrap();
        let roots = tls::load_roots(&dir.path().join("ca.pem")).unwrap();
        id.check_issued_for(roots.clone(), Role::Entry(7)).unwrap();
        let err = id.check_issued_for(roots, Role::Entry(0)).unwrap_err();
        assert!(err.contains("entry-7.acs"), "{err}");
        let err = issue(dir.path(), Role::Entry(7)).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        let err = issue(dir.path(), Role::Exchange(0)).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");

        // A CA made elsewhere: refused, nothing written.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("ca.pem"), &pki.ca.cert_pem).unwrap();
        std::fs::write(other.path().join("ca-key.pem"), &again.ca.key_pem).unwrap();
        let err = issue(other.path(), Role::Entry(1)).unwrap_err();
        assert!(matches!(err, CertError::Ca { .. }), "{err}");
        assert!(!other.path().join("entry-1.pem").exists());
    }
}
