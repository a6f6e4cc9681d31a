//! Which requests get through: the [`Authenticator`] (one of "no authentication", a fixed key,
//! or a key read from a config file that is re-read when it changes) and [`require_auth`], the
//! axum middleware that asks it about every request.
//!
//! A refused request gets `401 Unauthorized` with an empty body and `WWW-Authenticate: Bearer`,
//! plus `error="invalid_token"` when a bearer token was sent. Which check failed is logged at
//! debug level on the server and never told to the client.
//!
//! When no usable key is configured the server still starts: it logs an error at start-up and
//! refuses every authenticated request until the config file supplies a key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::generatekey::{DEFAULT_KEY_LIFETIME, GenerateKeyError, generate_key};
use super::token::{Rejection, TokenValidator};
use super::{ApiKeyConfig, AuthenticationConfig};

/// Decides whether a request is authenticated. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Authenticator {
    mode: Arc<Mode>,
}

enum Mode {
    /// `--no-auth`: everything gets through.
    Disabled,
    /// A key that never changes (`--temp-apikey`, or configuration without a file).
    Fixed(Option<Arc<TokenValidator>>),
    /// The `[authentication]` section of a config file, re-read when the file changes.
    Watched {
        file: PathBuf,
        state: Mutex<WatchedState>,
    },
}

struct WatchedState {
    /// The file as last seen; `None` when it could not be examined.
    seen: Option<FileStamp>,
    /// `None` refuses every token.
    validator: Option<Arc<TokenValidator>>,
}

/// What identifies one version of the config file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: (u64, u64),
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path)?;
        Ok(FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: (metadata.dev(), metadata.ino()),
        })
    }
}

/// A refused request. Renders as `401 Unauthorized` with an empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No bearer token was sent: `WWW-Authenticate: Bearer`.
    MissingToken,
    /// A bearer token was sent and refused: `WWW-Authenticate: Bearer error="invalid_token"`.
    InvalidToken,
}

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let challenge = match self {
            Unauthorized::MissingToken => HeaderValue::from_static("Bearer"),
            Unauthorized::InvalidToken => {
                HeaderValue::from_static(r#"Bearer error="invalid_token""#)
            }
        };
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        response
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
        let authenticator = Authenticator {
            mode: Arc::new(Mode::Fixed(Some(Arc::new(validator)))),
        };
        Ok((authenticator, key.token))
    }

    /// API-key authentication from the merged configuration. When `config_file` is given, it
    /// is re-read (with [`crate::config::load`]) whenever its modification time, size or inode
    /// changes, and its `[authentication]` section applies from the next request on. A reload
    /// that cannot load the file keeps the current key and logs an error; a file that loads
    /// but has no usable key refuses everything, as at start-up.
    ///
    /// A missing or unusable key is logged as an error and every request is refused.
    pub fn from_config(config: &AuthenticationConfig, config_file: Option<PathBuf>) -> Self {
        let validator = build_validator(config);
        let mode = match config_file {
            None => Mode::Fixed(validator),
            Some(file) => Mode::Watched {
                state: Mutex::new(WatchedState {
                    seen: FileStamp::of(&file).ok(),
                    validator,
                }),
                file,
            },
        };
        Authenticator {
            mode: Arc::new(mode),
        }
    }

    /// Whether requests need a token (false only for [`Authenticator::disabled`]).
    pub fn is_enabled(&self) -> bool {
        !matches!(*self.mode, Mode::Disabled)
    }

    /// Decides about one request from its headers.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        if !self.is_enabled() {
            return Ok(());
        }
        let token = bearer_token(headers)?;
        let Some(validator) = self.validator() else {
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

    /// The validator in force now, re-reading the config file first if it changed.
    fn validator(&self) -> Option<Arc<TokenValidator>> {
        match &*self.mode {
            Mode::Disabled => None,
            Mode::Fixed(validator) => validator.clone(),
            Mode::Watched { file, state } => {
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                let stamp = FileStamp::of(file);
                if stamp.as_ref().ok() != state.seen.as_ref() {
                    match &stamp {
                        Ok(_) => reload(file, &mut state),
                        Err(error) => tracing::error!(
                            file = %file.display(),
                            "cannot examine the config file ({error}); the current API key stays in force"
                        ),
                    }
                    state.seen = stamp.ok();
                }
                state.validator.clone()
            }
        }
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &*self.mode {
            Mode::Disabled => "disabled".to_owned(),
            Mode::Fixed(_) => "fixed key".to_owned(),
            Mode::Watched { file, .. } => format!("key from {}", file.display()),
        };
        f.debug_struct("Authenticator")
            .field("mode", &mode)
            .finish()
    }
}

/// axum middleware that refuses unauthenticated requests:
/// `axum::middleware::from_fn_with_state(authenticator, auth::require_auth)`.
pub async fn require_auth(
    State(auth): State<Authenticator>,
    request: Request,
    next: Next,
) -> Response {
    match auth.authorize(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
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

/// Re-reads `file` into `state`, keeping the current key when it cannot be loaded.
fn reload(file: &Path, state: &mut WatchedState) {
    match crate::config::load(Some(file), serde_json::json!({})) {
        Ok(config) => {
            tracing::info!(file = %file.display(), "the config file changed; reloading the API key");
            state.validator = build_validator(&config.authentication);
        }
        Err(error) => tracing::error!(
            file = %file.display(),
            "the config file changed but cannot be loaded, so the current API key stays in force: {error}"
        ),
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
    use axum::Router;
    use axum::routing::get;
    use serde_json::json;
    use tower::ServiceExt;

    fn app(auth: Authenticator) -> Router {
        Router::new()
            .route("/processes", get(|| async { "[]" }))
            .layer(axum::middleware::from_fn_with_state(auth, require_auth))
    }

    async fn call(app: &Router, authorization: Option<&str>) -> Response {
        let mut request = Request::get("/processes");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn challenge(response: &Response) -> Option<&str> {
        response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
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

    fn token_for(key: &TestKey, subject: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        key.token(
            &json!({"alg": "ES384", "typ": "JWT"}),
            &json!({"sub": subject, "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "exp": exp}),
        )
    }

    #[tokio::test]
    async fn refusals_are_empty_401s_with_the_right_challenge() {
        let key = TestKey::p384();
        let app = app(Authenticator::from_config(&config_for(&key, "me"), None));
        let good = format!("Bearer {}", token_for(&key, "me"));
        let response = call(&app, Some(&good)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let lower_case = format!("bearer {}", token_for(&key, "me"));
        assert_eq!(call(&app, Some(&lower_case)).await.status(), StatusCode::OK);

        for (authorization, expected) in [
            (None, "Bearer"),
            (Some("Basic dXNlcjpwYXNz"), "Bearer"),
            (Some("Bearer"), "Bearer"),
            (Some("Bearer "), "Bearer"),
            (Some("Bearer garbage"), r#"Bearer error="invalid_token""#),
            (
                Some(&format!("Bearer {}", token_for(&key, "you"))),
                r#"Bearer error="invalid_token""#,
            ),
        ] {
            let response = call(&app, authorization).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?}"
            );
            assert_eq!(challenge(&response), Some(expected), "{authorization:?}");
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            assert!(body.is_empty());
        }
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        let key = TestKey::p384();
        let app = app(Authenticator::from_config(&config_for(&key, "me"), None));
        let good = format!("Bearer {}", token_for(&key, "me"));
        let request = Request::get("/processes")
            .header(AUTHORIZATION, &good)
            .header(AUTHORIZATION, &good)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn disabled_lets_everything_through_and_temporary_accepts_its_token() {
        let disabled = Authenticator::disabled();
        assert!(!disabled.is_enabled());
        assert_eq!(call(&app(disabled), None).await.status(), StatusCode::OK);

        let (temporary, token) = Authenticator::temporary().unwrap();
        assert!(temporary.is_enabled());
        let app = app(temporary);
        let header = format!("Bearer {token}");
        assert_eq!(call(&app, Some(&header)).await.status(), StatusCode::OK);
        assert_eq!(call(&app, None).await.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn no_or_bad_key_refuses_everything_but_is_still_enabled() {
        let key = TestKey::p384();
        let mut bad = config_for(&key, "me");
        if let Some(api_key) = bad.api_key.as_mut() {
            api_key.public_key = "not a key".into();
        }
        for config in [AuthenticationConfig::default(), bad] {
            let auth = Authenticator::from_config(&config, None);
            assert!(auth.is_enabled());
            let header = format!("Bearer {}", token_for(&key, "me"));
            let response = call(&app(auth), Some(&header)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                challenge(&response),
                Some(r#"Bearer error="invalid_token""#)
            );
        }
    }

    fn write_config(path: &Path, key: &TestKey, subject: &str) {
        let text = format!(
            "[authentication.api_key]\nsubject = \"{subject}\"\npublic_key = \"{}\"\n",
            key.public_key()
        );
        // Write then rename, as configuration management and Kubernetes secrets do.
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, path).unwrap();
    }

    #[tokio::test]
    async fn a_changed_config_file_applies_to_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diagmon.toml");
        let (old, new) = (TestKey::p384(), TestKey::p384());
        write_config(&path, &old, "old");
        let config = crate::config::load(Some(&path), json!({})).unwrap();
        let app = app(Authenticator::from_config(
            &config.authentication,
            Some(path.clone()),
        ));
        let old_header = format!("Bearer {}", token_for(&old, "old"));
        let new_header = format!("Bearer {}", token_for(&new, "new"));
        assert_eq!(call(&app, Some(&old_header)).await.status(), StatusCode::OK);
        assert_eq!(
            call(&app, Some(&new_header)).await.status(),
            StatusCode::UNAUTHORIZED
        );

        write_config(&path, &new, "new");
        assert_eq!(call(&app, Some(&new_header)).await.status(), StatusCode::OK);
        assert_eq!(
            call(&app, Some(&old_header)).await.status(),
            StatusCode::UNAUTHORIZED
        );

        // A file that no longer loads keeps the key in force.
        std::fs::write(&path, "[authentication.api_key\n").unwrap();
        assert_eq!(call(&app, Some(&new_header)).await.status(), StatusCode::OK);
        // So does a file that has gone away.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(call(&app, Some(&new_header)).await.status(), StatusCode::OK);
        // A file whose key section is gone refuses everything.
        std::fs::write(&path, "urls = [\"http://127.0.0.1:1\"]\n").unwrap();
        assert_eq!(
            call(&app, Some(&new_header)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
