//! Which requests get through: the [`Authenticator`] holds the key in force (none with
//! `--no-auth`; a fixed one with `--temp-apikey`; else the configured one) and decides about each
//! request from its headers. It never reads files: whoever watches the config file (the server)
//! tells it about a new key with [`Authenticator::reconfigure`], or that the file can no longer be
//! trusted with [`Authenticator::revoke`], which refuses everything until a good file returns.
//!
//! A refusal is an [`Unauthorized`]; the HTTP layer renders it as `401` with
//! `WWW-Authenticate: Bearer` (plus `error="invalid_token"` when a bearer token was sent). Which
//! check failed is logged at debug level and never told to the client.
//!
//! When no usable key is configured the server still starts: it logs an error at start-up and
//! refuses every authenticated request until the config file supplies a key.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::generatekey::{DEFAULT_KEY_LIFETIME, GenerateKeyError, generate_key};
use super::token::{Rejection, TokenValidator};
use super::{ApiKeyConfig, AuthenticationConfig};

/// Decides whether a request is authenticated. Cheap to clone (an `Arc` inside); every clone
/// sees the key the last [`Authenticator::reconfigure`] or [`Authenticator::revoke`] set.
#[derive(Clone)]
pub struct Authenticator {
    mode: Arc<Mode>,
}

enum Mode {
    /// `--no-auth`: everything gets through.
    Disabled,
    /// API keys: the validator in force, `None` while every token is refused.
    Keyed(RwLock<Option<Arc<TokenValidator>>>),
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No bearer token was sent: `WWW-Authenticate: Bearer`.
    MissingToken,
    /// A bearer token was sent and refused: `WWW-Authenticate: Bearer error="invalid_token"`.
    InvalidToken,
}

impl Unauthorized {
    /// The `WWW-Authenticate` challenge for this refusal (RFC 6750).
    pub fn challenge(self) -> &'static str {
        match self {
            Unauthorized::MissingToken => "Bearer",
            Unauthorized::InvalidToken => r#"Bearer error="invalid_token""#,
        }
    }

    /// What the client is told: how to get a key, never which check failed.
    pub fn detail(self) -> &'static str {
        match self {
            Unauthorized::MissingToken => {
                "This route needs an API key: send `Authorization: Bearer <token>`. \
                 `diagmon generatekey` makes a key and prints the token and the \
                 [authentication.api_key] settings that accept it."
            }
            Unauthorized::InvalidToken => {
                "The bearer token was not accepted (wrong key, expired, or no key is \
                 configured). `diagmon generatekey` makes a key and prints the token and the \
                 [authentication.api_key] settings that accept it."
            }
        }
    }
}

impl Authenticator {
    /// No authentication at all (`--no-auth`).
    pub fn disabled() -> Self {
        Authenticator {
            mode: Arc::new(Mode::Disabled),
        }
    }

    /// A fresh key for this run only (`--temp-apikey`): returns the authenticator and the
    /// bearer token (valid for seven days) that it accepts. Print the token once at start-up.
    pub fn temporary() -> Result<(Self, String), GenerateKeyError> {
        let key = generate_key(DEFAULT_KEY_LIFETIME)?;
        let validator = TokenValidator::new(&ApiKeyConfig {
            subject: key.subject.clone(),
            public_key: key.public_key.clone(),
            issuer: Some(key.issuer.clone()),
            audience: Some(key.audience.clone()),
        })
        .map_err(|error| GenerateKeyError::KeyPair(error.to_string()))?;
        Ok((Self::keyed(Some(Arc::new(validator))), key.token))
    }

    /// API-key authentication with the `[authentication]` section of the configuration. A
    /// missing or unusable key is logged as an error and every request is refused.
    pub fn from_config(config: &AuthenticationConfig) -> Self {
        Self::keyed(build_validator(config))
    }

    fn keyed(validator: Option<Arc<TokenValidator>>) -> Self {
        Authenticator {
            mode: Arc::new(Mode::Keyed(RwLock::new(validator))),
        }
    }

    /// Puts the key of `config` in force from the next request on (the config file changed and
    /// loaded). A section without a usable key refuses everything, as at start-up. Does nothing
    /// with authentication off.
    pub fn reconfigure(&self, config: &AuthenticationConfig) {
        if let Mode::Keyed(current) = &*self.mode {
            let validator = build_validator(config);
            *current.write().unwrap_or_else(PoisonError::into_inner) = validator;
        }
    }

    /// Fails closed: refuses every token from the next request on, because the configuration
    /// that named the key is gone or broken (`reason` says how; it is logged as an error).
    /// [`Authenticator::reconfigure`] ends it. Does nothing with authentication off.
    pub fn revoke(&self, reason: &str) {
        if let Mode::Keyed(current) = &*self.mode {
            tracing::error!(
                "{reason}; every API request is refused with 401 until the file loads again"
            );
            *current.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Whether requests need a token (false only for [`Authenticator::disabled`]).
    pub fn is_enabled(&self) -> bool {
        !matches!(*self.mode, Mode::Disabled)
    }

    /// Decides about one request from its headers.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        let Mode::Keyed(current) = &*self.mode else {
            return Ok(());
        };
        let token = bearer_token(headers)?;
        let validator = current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(validator) = validator else {
            tracing::debug!(reason = %Rejection::NoKey, "refused an API request");
            return Err(Unauthorized::InvalidToken);
        };
        validator
            .validate(token, SystemTime::now())
            .map_err(|reason| {
                tracing::debug!(%reason, "refused an API request");
                Unauthorized::InvalidToken
            })
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &*self.mode {
            Mode::Disabled => "disabled",
            Mode::Keyed(_) => "api key",
        };
        f.debug_struct("Authenticator")
            .field("mode", &mode)
            .finish()
    }
}

/// The token of a single `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Unauthorized> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // None at all, or several (ambiguous, so refused as a bad token).
        return Err(if headers.contains_key(AUTHORIZATION) {
            Unauthorized::InvalidToken
        } else {
            Unauthorized::MissingToken
        });
    };
    let value = value.to_str().map_err(|_| Unauthorized::InvalidToken)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Unauthorized::MissingToken);
    }
    match token.trim_matches(' ') {
        "" => Err(Unauthorized::MissingToken),
        token => Ok(token),
    }
}

/// The validator for `config`, logging loudly when there is none.
fn build_validator(config: &AuthenticationConfig) -> Option<Arc<TokenValidator>> {
    let Some(api_key) = &config.api_key else {
        tracing::error!(
            "no API key is configured, so every API request will be refused with 401; run \
             `diagmon generatekey` and add the [authentication.api_key] settings it prints, or \
             start with --temp-apikey (a key for this run) or --no-auth (no authentication)"
        );
        return None;
    };
    match TokenValidator::new(api_key) {
        Ok(validator) => {
            if validator.key_has_private_parts() {
                tracing::warn!(
                    "`authentication.api_key.public_key` contains private key parts; only the \
                     public key is used. Remove them: the configured key needs no secrets"
                );
            }
            tracing::info!(subject = %api_key.subject, "API key authentication is on");
            Some(Arc::new(validator))
        }
        Err(error) => {
            tracing::error!(
                "the API key configuration is unusable, so every API request will be refused \
                 with 401: {error}"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::tests::TestKey;
    use crate::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in authorization {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn config_for(key: &TestKey, subject: &str) -> AuthenticationConfig {
        AuthenticationConfig {
            api_key: Some(ApiKeyConfig {
                subject: subject.into(),
                public_key: key.public_key(),
                issuer: None,
                audience: None,
            }),
        }
    }

    fn bearer(key: &TestKey, subject: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let token = key.token(
            &json!({"alg": "ES384", "typ": "JWT"}),
            &json!({"sub": subject, "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "exp": exp}),
        );
        format!("Bearer {token}")
    }

    #[test]
    fn refusals_say_whether_a_token_was_seen() {
        let key = TestKey::p384();
        let auth = Authenticator::from_config(&config_for(&key, "me"));
        assert_eq!(auth.authorize(&headers(&[&bearer(&key, "me")])), Ok(()));
        let lower_case = bearer(&key, "me").replacen("Bearer", "bearer", 1);
        assert_eq!(auth.authorize(&headers(&[&lower_case])), Ok(()));

        let other_subject = bearer(&key, "you");
        for (authorization, expected) in [
            (vec![], Unauthorized::MissingToken),
            (vec!["Basic dXNlcjpwYXNz"], Unauthorized::MissingToken),
            (vec!["Bearer"], Unauthorized::MissingToken),
            (vec!["Bearer "], Unauthorized::MissingToken),
            (vec!["Bearer garbage"], Unauthorized::InvalidToken),
            (vec![other_subject.as_str()], Unauthorized::InvalidToken),
        ] {
            assert_eq!(
                auth.authorize(&headers(&authorization)),
                Err(expected),
                "{authorization:?}"
            );
        }
        let good = bearer(&key, "me");
        assert_eq!(
            auth.authorize(&headers(&[&good, &good])),
            Err(Unauthorized::InvalidToken),
            "two Authorization headers are ambiguous"
        );
        assert_eq!(Unauthorized::MissingToken.challenge(), "Bearer");
        assert!(
            Unauthorized::InvalidToken
                .detail()
                .contains("diagmon generatekey")
        );
    }

    #[test]
    fn disabled_lets_everything_through_and_temporary_accepts_its_token() {
        let disabled = Authenticator::disabled();
        assert!(!disabled.is_enabled());
        assert_eq!(disabled.authorize(&headers(&[])), Ok(()));
        disabled.revoke("a revoke does not turn authentication on");
        assert_eq!(disabled.authorize(&headers(&[])), Ok(()));

        let (temporary, token) = Authenticator::temporary().unwrap();
        assert!(temporary.is_enabled());
        let header = format!("Bearer {token}");
        assert_eq!(temporary.authorize(&headers(&[&header])), Ok(()));
        assert_eq!(
            temporary.authorize(&headers(&[])),
            Err(Unauthorized::MissingToken)
        );
    }

    #[test]
    fn no_or_bad_key_refuses_everything_but_is_still_enabled() {
        let key = TestKey::p384();
        let mut bad = config_for(&key, "me");
        if let Some(api_key) = bad.api_key.as_mut() {
            api_key.public_key = "not a key".into();
        }
        for config in [AuthenticationConfig::default(), bad] {
            let auth = Authenticator::from_config(&config);
            assert!(auth.is_enabled());
            assert_eq!(
                auth.authorize(&headers(&[&bearer(&key, "me")])),
                Err(Unauthorized::InvalidToken)
            );
        }
    }

    #[test]
    fn reconfigure_swaps_the_key_and_revoke_fails_closed_for_every_clone() {
        let (old, new) = (TestKey::p384(), TestKey::p384());
        let auth = Authenticator::from_config(&config_for(&old, "old"));
        let clone = auth.clone();
        let (old_header, new_header) = (bearer(&old, "old"), bearer(&new, "new"));
        assert_eq!(clone.authorize(&headers(&[&old_header])), Ok(()));

        auth.reconfigure(&config_for(&new, "new"));
        assert_eq!(clone.authorize(&headers(&[&new_header])), Ok(()));
        assert_eq!(
            clone.authorize(&headers(&[&old_header])),
            Err(Unauthorized::InvalidToken)
        );

        auth.revoke("the config file was deleted");
        assert_eq!(
            clone.authorize(&headers(&[&new_header])),
            Err(Unauthorized::InvalidToken)
        );
        auth.reconfigure(&config_for(&new, "new"));
        assert_eq!(clone.authorize(&headers(&[&new_header])), Ok(()));
        auth.reconfigure(&AuthenticationConfig::default());
        assert_eq!(
            clone.authorize(&headers(&[&new_header])),
            Err(Unauthorized::InvalidToken)
        );
    }
}
