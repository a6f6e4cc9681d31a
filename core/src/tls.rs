//! HTTPS serving.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[tls]`: the certificate and key (PEM) for `https://` URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM.
    pub certificate: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
}
