//! HTTPS: `https://` URLs are served with rustls (aws-lc-rs provider) from the PEM certificate
//! chain and private key in `[tls]`.
//!
//! [`load_server_config`] reads and checks both files, so start-up can fail early with an
//! error that names the file at fault; the server ([`crate::server`]) then does the handshake
//! on each connection it accepts, under the same limits and timeouts as plain HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// `[tls]`: the certificate and key (PEM) for `https://` URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM: the server's certificate first, then any intermediates.
    pub certificate: PathBuf,
    /// The private key of the first certificate, PEM (PKCS#8, PKCS#1 or SEC1; unencrypted).
    pub key: PathBuf,
}

/// Why HTTPS cannot be served. Each variant names the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read the TLS {what} {}: {source}; check `tls.{what}` in the configuration", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error(
        "{} holds no PEM certificate; `tls.certificate` must contain `-----BEGIN CERTIFICATE-----` blocks",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error(
        "{} holds no PEM private key; `tls.key` must contain an unencrypted `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid PEM.
    #[error("{} is not valid PEM ({source}); check `tls.{what}`", path.display())]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: pem::Error,
    },
    /// The key does not belong to the certificate.
    #[error(
        "the TLS key {} does not belong to the certificate {}; configure the key that was issued with the certificate",
        key.display(), certificate.display()
    )]
    Mismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate or key for another reason.
    #[error(
        "cannot use the TLS certificate {} with the key {}: {source}",
        certificate.display(), key.display()
    )]
    Rustls {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// Installs aws-lc-rs as rustls' process-wide provider. Both aws-lc-rs and ring are linked, so
/// rustls cannot pick one itself; a second call (or one by `main`) is harmless.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Reads and checks `[tls]`: the chain and key must parse and the key must match the first
/// certificate. ALPN offers HTTP/2 and HTTP/1.1. Use at start-up to fail early.
pub fn load_server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let certificate_pem = read(&tls.certificate, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            path: tls.certificate.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: tls.certificate.clone(),
        });
    }
    let key_pem = read(&tls.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: tls.key.clone(),
        },
        source => TlsError::Pem {
            what: "key",
            path: tls.key.clone(),
            source,
        },
    })?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let rustls_error = |source| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::Mismatch {
                certificate: tls.certificate.clone(),
                key: tls.key.clone(),
            }
        }
        source => TlsError::Rustls {
            certificate: tls.certificate.clone(),
            key: tls.key.clone(),
            source,
        },
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(rustls_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            certificate: dir.path().join("nope.pem"),
            key: dir.path().join("key.pem"),
        };
        let error = load_server_config(&missing).unwrap_err().to_string();
        assert!(
            error.contains("nope.pem") && error.contains("tls.certificate"),
            "{error}"
        );

        let empty = TlsConfig {
            certificate: write(dir.path(), "empty.pem", "hello\n"),
            key: dir.path().join("key.pem"),
        };
        let error = load_server_config(&empty).unwrap_err().to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");
    }
}
