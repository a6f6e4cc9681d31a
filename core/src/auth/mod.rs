//! Authentication of API requests: bearer API keys (JWTs signed by a key pair whose public
//! half is in the configuration), modelled on dotnet-monitor's `MonitorApiKey`.
//!
//! - `keys`: the configured public key (a base64url JWK) and the algorithms it
//!   allows; the key, never the token, picks the algorithm.
//! - `token`: checking one token (header, signature, then `exp`/`nbf`/`sub`/`iss`/`aud`).
//! - `authenticator`: [`Authenticator`], which holds the key in force (none with `--no-auth`)
//!   and is told when the configuration changes; it decides about a request and says why it
//!   refused ([`Unauthorized`]). The HTTP layer turns a refusal into `401`.
//! - `generatekey`: [`generate_key`] and [`render_key`] for `diagmon generatekey` and
//!   `--temp-apikey`.
//!
//! HTTPS, which API keys should travel over, is in [`crate::tls`].

use serde::{Deserialize, Serialize};

mod authenticator;
mod generatekey;
mod keys;
mod token;

pub use authenticator::{Authenticator, Unauthorized};
pub use generatekey::{
    DEFAULT_KEY_LIFETIME, GenerateKeyError, GeneratedKey, KeyOutputFormat, generate_key, render_key,
};
pub use keys::KeyError;
pub use token::{
    ApiKeyConfigError, CLOCK_SKEW, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DOTNET_MONITOR_AUDIENCE,
    DOTNET_MONITOR_ISSUER,
};

/// The `[authentication]` section. Without a usable `api_key` (and without `--no-auth` or
/// `--temp-apikey`) diagmon still starts, logs an error, and refuses every authenticated
/// request with 401 until the config file supplies a key (the server watches the file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationConfig {
    /// The API key that signs accepted tokens.
    #[serde(default)]
    pub api_key: Option<ApiKeyConfig>,
}

/// `[authentication.api_key]`: what a token must carry and the key that verifies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Must equal the token's `sub` (any non-empty string; `generatekey` uses a random GUID).
    pub subject: String,
    /// The public key that signs accepted tokens: a base64url-encoded JSON Web Key, `kty`
    /// `EC` (P-256, P-384 or P-521: ES256, ES384 or ES512) or `RSA` (2048 to 8192 bits:
    /// RS256, RS384 or RS512). Member names match case-insensitively, so dotnet-monitor's keys
    /// work as printed. Private members are ignored with a warning.
    pub public_key: String,
    /// The required `iss`; default [`DEFAULT_ISSUER`]. Set [`DOTNET_MONITOR_ISSUER`] to accept
    /// a key made by dotnet-monitor's `generatekey`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The required `aud` (one of the token's audiences); default [`DEFAULT_AUDIENCE`]. Set
    /// [`DOTNET_MONITOR_AUDIENCE`] to accept a key made for dotnet-monitor.
    #[serde(default)]
    pub audience: Option<String>,
}
