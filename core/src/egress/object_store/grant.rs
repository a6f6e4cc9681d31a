//! The grant as configured ([`ObjectStoreGrant`]), and building its store at start-up: the URL
//! names the kind of store and the prefix, the options are object_store's own keys (plus
//! diagmon's retry keys), values may come from the environment or a file, and a store that
//! cannot be built fails the provider's load naming the option to blame.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ::object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use ::object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use ::object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use ::object_store::local::LocalFileSystem;
use ::object_store::path::Path as StorePath;
use ::object_store::signer::Signer;
use ::object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use super::store::{GrantedStore, StoreKind};

/// Default connect timeout of a grant.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of one request of a grant.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default retries of one request of a grant.
const DEFAULT_MAX_RETRIES: usize = 3;
/// Default bound on the time spent retrying one request of a grant.
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// diagmon's own option keys in a grant, beside `url` and object_store's keys.
const DIAGMON_KEYS: &[&str] = &["max_retries", "retry_timeout", "from_env"];
use crate::egress::error::EgressError;

/// The `object_store` grant of a provider: where it may write, and how to reach it.
///
/// ```toml
/// [egress.providers.s3]
/// component = "object-storage"
/// object_store = { url = "s3://traces/prod", region = "eu-west-1",
///                  access_key_id = { env = "AWS_ACCESS_KEY_ID" },
///                  secret_access_key = { file = "/run/secrets/aws-secret" } }
/// ```
#[derive(Clone, Deserialize)]
pub struct ObjectStoreGrant {
    /// `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix` or `file:///dir`.
    /// The provider writes under the prefix (or into the directory) and nowhere else.
    pub url: String,
    /// object_store's configuration keys for the store (`region`, `endpoint`, `access_key_id`,
    /// `secret_access_key`, `allow_http`, `account_name`, `access_key`, `timeout`,
    /// `connect_timeout`, ... as documented by object_store's `AmazonS3ConfigKey`,
    /// `AzureConfigKey`, `GoogleConfigKey` and `ClientConfigKey`), plus diagmon's
    /// `max_retries` (default 3), `retry_timeout` (default `10s`) and `from_env` (`true` to
    /// start from the store's `AWS_*`, `AZURE_*` or `GOOGLE_*` environment variables).
    #[serde(flatten)]
    pub options: BTreeMap<String, GrantValue>,
}

/// The value of a grant option: as written, or read from an environment variable or a file at
/// start-up (for secrets that must not sit in the configuration file).
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum GrantValue {
    /// A string, as is.
    Text(String),
    /// A boolean, as `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(serde_json::Number),
    /// `{ env = "NAME" }`: the value of an environment variable of diagmon's.
    Env(FromEnv),
    /// `{ file = "/path" }`: the contents of a file, without the trailing newline.
    File(FromFile),
}

/// `{ env = "NAME" }`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromEnv {
    /// The variable's name.
    pub env: String,
}

/// `{ file = "/path" }`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromFile {
    /// The file's path.
    pub file: PathBuf,
}

/// True for option keys whose values are secrets: never shown in `config show`, logs or
/// messages.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "access_key",
        "account_key",
        "master_key",
        "sas",
        "private_key",
        "service_account_key",
    ]
    .iter()
    .any(|word| key.contains(word))
        && !key.ends_with("access_key_id")
}

impl GrantValue {
    /// The value as shown: secrets written inline are redacted; env and file references are
    /// shown as references.
    fn shown(&self, key: &str) -> serde_json::Value {
        match self {
            GrantValue::Env(from) => serde_json::json!({ "env": from.env }),
            GrantValue::File(from) => serde_json::json!({ "file": from.file }),
            _ if is_secret(key) => serde_json::Value::String("<redacted>".to_owned()),
            GrantValue::Text(text) => serde_json::Value::String(text.clone()),
            GrantValue::Bool(value) => serde_json::Value::Bool(*value),
            GrantValue::Number(number) => serde_json::Value::Number(number.clone()),
        }
    }

    /// The value as object_store reads it.
    fn resolve(&self, provider: &str, key: &str) -> Result<String, EgressError> {
        match self {
            GrantValue::Text(text) => Ok(text.clone()),
            GrantValue::Bool(value) => Ok(value.to_string()),
            GrantValue::Number(number) => Ok(number.to_string()),
            GrantValue::Env(from) => std::env::var(&from.env).map_err(|_| {
                EgressError::load(
                    provider,
                    format!(
                        "`object_store` option `{key}` comes from the environment variable `{}`, which is not set",
                        from.env
                    ),
                )
            }),
            GrantValue::File(from) => match std::fs::read_to_string(&from.file) {
                Ok(text) => Ok(text.trim_end_matches(['\r', '\n']).to_owned()),
                Err(error) => Err(EgressError::load(
                    provider,
                    format!(
                        "`object_store` option `{key}` comes from the file {}, which cannot be read: {error}",
                        from.file.display()
                    ),
                )),
            },
        }
    }
}

impl Serialize for ObjectStoreGrant {
    /// Writes the grant with its inline secrets redacted (`diagmon config show`).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.options.len() + 1))?;
        map.serialize_entry("url", &self.url)?;
        for (key, value) in &self.options {
            map.serialize_entry(key, &value.shown(key))?;
        }
        map.end()
    }
}

impl fmt::Debug for ObjectStoreGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        map.entry(&"url", &self.url);
        for (key, value) in &self.options {
            map.entry(key, &value.shown(key));
        }
        map.finish()
    }
}

impl fmt::Debug for GrantValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.shown("secret"))
    }
}

/// Options split into object_store's and diagmon's, with values resolved.
pub(super) struct ResolvedOptions {
    pub(super) store: Vec<(String, String)>,
    retry: RetryConfig,
    from_env: bool,
}

fn load_error(provider: &str, cause: impl Into<String>) -> EgressError {
    EgressError::load(provider, cause)
}

fn parse_duration(provider: &str, key: &str, value: &str) -> Result<Duration, EgressError> {
    humantime::parse_duration(value).map_err(|e| {
        load_error(
            provider,
            format!("`object_store` option `{key}`: `{value}` is not a duration ({e}); write it like `10s` or `500ms`"),
        )
    })
}

pub(super) fn resolve_options(
    provider: &str,
    grant: &ObjectStoreGrant,
) -> Result<ResolvedOptions, EgressError> {
    let mut resolved = ResolvedOptions {
        store: Vec::new(),
        retry: RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: DEFAULT_MAX_RETRIES,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
        },
        from_env: false,
    };
    for (key, value) in &grant.options {
        let text = value.resolve(provider, key)?;
        match key.to_ascii_lowercase().as_str() {
            "max_retries" => {
                resolved.retry.max_retries = text.parse().map_err(|_| {
                    load_error(
                        provider,
                        format!(
                            "`object_store` option `max_retries`: `{text}` is not a whole number"
                        ),
                    )
                })?;
            }
            "retry_timeout" => resolved.retry.retry_timeout = parse_duration(provider, key, &text)?,
            "from_env" => {
                resolved.from_env = match text.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(load_error(
                            provider,
                            format!(
                                "`object_store` option `from_env` must be true or false, not `{text}`"
                            ),
                        ));
                    }
                }
            }
            _ => resolved.store.push((key.clone(), text)),
        }
    }
    Ok(resolved)
}

/// What a grant's URL names.
struct ParsedUrl {
    kind: StoreKind,
    url: url::Url,
    /// The bucket or container, or the directory for `file://`.
    container: String,
    prefix: StorePath,
}

fn parse_url(provider: &str, text: &str) -> Result<ParsedUrl, EgressError> {
    const FORMS: &str =
        "s3://bucket/prefix, az://container/prefix, gs://bucket/prefix or file:///directory";
    let url = url::Url::parse(text).map_err(|e| {
        load_error(
            provider,
            format!("`object_store.url` `{text}` is not a URL ({e}); use {FORMS}"),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(load_error(
            provider,
            format!(
                "`object_store.url` must not carry credentials or a query (`{}`); give them as options, e.g. `access_key_id`, or from the environment: `{{ env = \"NAME\" }}`",
                url.scheme()
            ),
        ));
    }
    let kind = match url.scheme() {
        "s3" => StoreKind::S3,
        "az" => StoreKind::Azure,
        "gs" => StoreKind::Gcs,
        "file" => StoreKind::Local,
        other => {
            return Err(load_error(
                provider,
                format!(
                    "`object_store.url` `{text}`: the scheme `{other}` is not supported; use {FORMS}"
                ),
            ));
        }
    };
    let path = url.path().trim_matches('/').to_owned();
    let (container, prefix) = if kind == StoreKind::Local {
        if url.host_str().is_some_and(|h| !h.is_empty()) {
            return Err(load_error(
                provider,
                format!(
                    "`object_store.url` `{text}` names a host; a directory is `file:///absolute/path`"
                ),
            ));
        }
        if path.is_empty() {
            return Err(load_error(
                provider,
                format!(
                    "`object_store.url` `{text}` names no directory; use `file:///absolute/path`"
                ),
            ));
        }
        let directory = url.to_file_path().map_err(|()| {
            load_error(
                provider,
                format!("`object_store.url` `{text}` is not a directory path"),
            )
        })?;
        (
            directory.to_string_lossy().into_owned(),
            StorePath::default(),
        )
    } else {
        let Some(container) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(load_error(
                provider,
                format!(
                    "`object_store.url` `{text}` names no {}; use {FORMS}",
                    kind.container_noun()
                ),
            ));
        };
        let prefix = StorePath::parse(&path).map_err(|e| {
            load_error(
                provider,
                format!("`object_store.url` `{text}` has an unusable prefix: {e}"),
            )
        })?;
        (container.to_owned(), prefix)
    };
    Ok(ParsedUrl {
        kind,
        url,
        container,
        prefix,
    })
}

/// The built store, its signer and the base URL of its objects.
type Built = (Arc<dyn ObjectStore>, Option<Arc<dyn Signer>>, String);

/// Builds the store of `parsed` with `options` (object_store's keys), or says why not.
fn build_store(
    parsed: &ParsedUrl,
    options: &[(String, String)],
    retry: &RetryConfig,
    from_env: bool,
) -> Result<Built, BuildError> {
    let client = ClientOptions::new()
        .with_connect_timeout(DEFAULT_CONNECT_TIMEOUT)
        .with_timeout(DEFAULT_TIMEOUT);
    let url = parsed.url.as_str();
    match parsed.kind {
        StoreKind::S3 => {
            let mut builder = if from_env {
                AmazonS3Builder::from_env()
            } else {
                AmazonS3Builder::new()
            }
            .with_url(url)
            .with_client_options(client)
            .with_retry(retry.clone());
            for (key, value) in options {
                let parsed_key = AmazonS3ConfigKey::from_str(&key.to_ascii_lowercase())
                    .map_err(|_| BuildError::UnknownKey(key.clone(), "S3", "AmazonS3ConfigKey"))?;
                builder = builder.with_config(parsed_key, value);
            }
            let config = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
            let region =
                config(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
            let virtual_hosted =
                config(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
            let bucket = &parsed.container;
            let base_url = match (config(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
                (Some(endpoint), true) => endpoint.trim_end_matches('/').to_owned(),
                (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
                (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
                (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
            };
            let store = Arc::new(builder.build().map_err(BuildError::Build)?);
            Ok((store.clone(), Some(store), base_url))
        }
        StoreKind::Azure => {
            let mut builder = if from_env {
                MicrosoftAzureBuilder::from_env()
            } else {
                MicrosoftAzureBuilder::new()
            }
            .with_url(url)
            .with_client_options(client)
            .with_retry(retry.clone());
            for (key, value) in options {
                let parsed_key = AzureConfigKey::from_str(&key.to_ascii_lowercase())
                    .map_err(|_| BuildError::UnknownKey(key.clone(), "Azure", "AzureConfigKey"))?;
                builder = builder.with_config(parsed_key, value);
            }
            let config = |key: AzureConfigKey| builder.get_config_value(&key);
            let container = &parsed.container;
            let account = config(AzureConfigKey::AccountName);
            let base_url = if config(AzureConfigKey::UseEmulator).is_some_and(|v| v == "true") {
                let emulator = std::env::var("AZURITE_BLOB_STORAGE_URL")
                    .unwrap_or_else(|_| "http://127.0.0.1:10000".to_owned());
                format!(
                    "{}/{}/{container}",
                    emulator.trim_end_matches('/'),
                    account.as_deref().unwrap_or("devstoreaccount1")
                )
            } else if let Some(endpoint) = config(AzureConfigKey::Endpoint) {
                format!("{}/{container}", endpoint.trim_end_matches('/'))
            } else {
                format!(
                    "https://{}.blob.core.windows.net/{container}",
                    account.as_deref().unwrap_or("ACCOUNT")
                )
            };
            let store = Arc::new(builder.build().map_err(BuildError::Build)?);
            Ok((store.clone(), Some(store), base_url))
        }
        StoreKind::Gcs => {
            let mut builder = if from_env {
                GoogleCloudStorageBuilder::from_env()
            } else {
                GoogleCloudStorageBuilder::new()
            }
            .with_url(url)
            .with_client_options(client)
            .with_retry(retry.clone());
            for (key, value) in options {
                let parsed_key = GoogleConfigKey::from_str(&key.to_ascii_lowercase())
                    .map_err(|_| BuildError::UnknownKey(key.clone(), "GCS", "GoogleConfigKey"))?;
                builder = builder.with_config(parsed_key, value);
            }
            let base_url = format!("https://storage.googleapis.com/{}", parsed.container);
            let store = Arc::new(builder.build().map_err(BuildError::Build)?);
            Ok((store.clone(), Some(store), base_url))
        }
        StoreKind::Local => {
            if let Some((key, _)) = options.first() {
                return Err(BuildError::UnknownKey(
                    key.clone(),
                    "file",
                    "(none: a directory takes no options)",
                ));
            }
            let directory = PathBuf::from(&parsed.container);
            std::fs::create_dir_all(&directory).map_err(|e| {
                BuildError::Other(format!(
                    "cannot create the directory {}: {e}",
                    directory.display()
                ))
            })?;
            let store = LocalFileSystem::new_with_prefix(&directory)
                .map_err(BuildError::Build)?
                .with_automatic_cleanup(true);
            let canonical = directory.canonicalize().unwrap_or(directory);
            let base_url = url::Url::from_directory_path(&canonical)
                .map(|u| u.as_str().trim_end_matches('/').to_owned())
                .unwrap_or_else(|()| format!("file://{}", canonical.display()));
            Ok((Arc::new(store), None, base_url))
        }
    }
}

/// Why a store could not be built.
enum BuildError {
    /// An option key object_store does not know: (key, store, where the keys are listed).
    UnknownKey(String, &'static str, &'static str),
    /// object_store refused the configuration.
    Build(::object_store::Error),
    /// Anything else.
    Other(String),
}

/// Replaces every occurrence of a secret value with `<redacted>`.
fn redact(mut text: String, secrets: &[String]) -> String {
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret.as_str(), "<redacted>");
    }
    text
}

/// Finds the option to blame for a failed build: the one without which the store builds.
fn blame_option(parsed: &ParsedUrl, options: &ResolvedOptions) -> Option<String> {
    (0..options.store.len()).find_map(|skip| {
        let others: Vec<(String, String)> = options
            .store
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, option)| option.clone())
            .collect();
        build_store(parsed, &others, &options.retry, options.from_env)
            .is_ok()
            .then(|| options.store[skip].0.clone())
    })
}

impl GrantedStore {
    /// Builds the store a provider's grant names, at start-up: nothing is sent to the store.
    /// Fails naming the provider and, where one is to blame, the option.
    pub(crate) fn build(
        provider: &str,
        grant: &ObjectStoreGrant,
    ) -> Result<GrantedStore, EgressError> {
        let parsed = parse_url(provider, &grant.url)?;
        let options = resolve_options(provider, grant)?;
        let secrets: Vec<String> = options
            .store
            .iter()
            .filter(|(key, _)| is_secret(key))
            .map(|(_, value)| value.clone())
            .collect();
        let redact = |text: String| redact(text, &secrets);
        let (store, signer, base_url) = match build_store(
            &parsed,
            &options.store,
            &options.retry,
            options.from_env,
        ) {
            Ok(built) => built,
            Err(BuildError::UnknownKey(key, store, list)) => {
                return Err(load_error(
                    provider,
                    format!(
                        "`object_store` option `{key}` is not an option of the {store} store; see object_store's {list} for the options, or diagmon's own: {}",
                        DIAGMON_KEYS.join(", ")
                    ),
                ));
            }
            Err(BuildError::Other(message)) => {
                return Err(load_error(
                    provider,
                    format!("`object_store`: {}", redact(message)),
                ));
            }
            Err(BuildError::Build(error)) => {
                let culprit = blame_option(&parsed, &options);
                let detail = redact(error.to_string());
                return Err(load_error(
                    provider,
                    match culprit {
                        Some(key) => {
                            format!("`object_store` option `{key}` is not usable: {detail}")
                        }
                        None => format!(
                            "the store of `object_store.url` `{}` cannot be built: {detail}; check its options",
                            grant.url
                        ),
                    },
                ));
            }
        };
        let description = {
            let mut url = parsed.url.clone();
            url.set_query(None);
            url.set_fragment(None);
            url.as_str().trim_end_matches('/').to_owned()
        };
        Ok(GrantedStore {
            kind: parsed.kind,
            store,
            signer,
            prefix: parsed.prefix,
            description,
            base_url,
        })
    }
}
