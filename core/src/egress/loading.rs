//! The loading pipeline: from a provider's configuration to a [`LoadedProvider`], each step
//! failing with the provider's name and the cause:
//! 1. check its limits against their ranges;
//! 2. resolve the component (a built-in name, or a path to a `.wasm` file) and check that it is
//!    a component ([`super::component`]);
//! 3. compile it, or load it precompiled from the cache ([`super::engine`]);
//! 4. build what it is granted: its HTTP allow-list, its object store (nothing is sent to the
//!    store yet);
//! 5. check its exports against the world version this diagmon speaks and its imports against
//!    its grants, and link it ([`super::linker`]);
//! 6. create its directory if needed, take it (shared) and sweep it of partial files left by an
//!    earlier run ([`super::partials`]);
//! 7. instantiate it once and call `configure` with its settings, so that bad settings stop
//!    start-up rather than the first artifact.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::budget::ProviderUsage;
use super::component::{self, ComponentSource};
use super::config::ProviderConfig;
use super::error::{EgressError, ProviderErrorKind};
use super::instance::ProviderInstance;
use super::linker::{self, Grants};
use super::object_store::GrantedStore;
use super::outbound_http::AllowList;
use super::partials::DirectoryLock;
use super::provider::LoadedProvider;

/// Loads one provider (see the module docs for the steps).
pub(crate) async fn load_provider(
    name: &str,
    config: &ProviderConfig,
    cache: Option<&Path>,
) -> Result<Arc<LoadedProvider>, EgressError> {
    config.limits.validate(name)?;
    let source = ComponentSource::resolve(name, &config.component)?;
    let origin = source.describe();
    let bytes = source.bytes(name).await?;
    component::check_header(name, &origin, &bytes)?;
    let (component, compile_source) = component::compile(name, &origin, bytes, cache).await?;
    let allowed_outbound_hosts = AllowList::parse(&config.allowed_outbound_hosts)
        .map_err(|e| EgressError::load(name, format!("`allowed_outbound_hosts` entry {e}")))?;
    let object_store = match &config.object_store {
        Some(grant) => Some(Arc::new(GrantedStore::build(name, grant)?)),
        None => None,
    };
    let grants = Grants {
        http: !allowed_outbound_hosts.is_empty(),
        object_store: object_store.is_some(),
    };
    let pre = linker::link(name, &origin, &component, grants)?;
    let directory = match &config.directory {
        Some(directory) => {
            let (provider, directory) = (name.to_owned(), directory.clone());
            let grant = tokio::task::spawn_blocking(move || grant_directory(&provider, &directory));
            Some(grant.await.map_err(|e| {
                EgressError::host(name, format!("the directory grant task failed: {e}"))
            })??)
        }
        None => None,
    };
    // `{ file = ... }` settings are read off the async threads.
    let settings = {
        let (provider, settings) = (name.to_owned(), config.settings.clone());
        tokio::task::spawn_blocking(move || settings_pairs(&provider, &settings))
            .await
            .map_err(|e| EgressError::host(name, format!("the settings task failed: {e}")))??
    };
    let loaded = Arc::new(LoadedProvider {
        name: name.to_owned(),
        origin,
        compile_source,
        pre,
        directory,
        settings,
        allowed_outbound_hosts: Arc::new(allowed_outbound_hosts),
        object_store,
        limits: config.limits.clone(),
        usage: Arc::new(ProviderUsage::default()),
        instances: Arc::new(Semaphore::new(config.limits.max_instances())),
    });
    validate_settings(&loaded).await?;
    Ok(loaded)
}

/// Creates the granted directory if needed and takes it (see [`DirectoryLock`]).
fn grant_directory(provider: &str, directory: &Path) -> Result<DirectoryLock, EgressError> {
    std::fs::create_dir_all(directory).map_err(|e| {
        EgressError::load(
            provider,
            format!(
                "cannot create the granted directory {}: {e}",
                directory.display()
            ),
        )
    })?;
    let canonical = directory.canonicalize().map_err(|e| {
        EgressError::load(
            provider,
            format!(
                "cannot resolve the granted directory {}: {e}",
                directory.display()
            ),
        )
    })?;
    if !canonical.is_dir() {
        return Err(EgressError::load(
            provider,
            format!(
                "the granted directory {} is not a directory",
                directory.display()
            ),
        ));
    }
    if canonical.to_str().is_none() {
        return Err(EgressError::load(
            provider,
            format!(
                "the granted directory {} is not valid UTF-8",
                directory.display()
            ),
        ));
    }
    DirectoryLock::acquire(provider, canonical).map_err(|e| {
        EgressError::load(
            provider,
            format!(
                "cannot lock the granted directory {}: {e}",
                directory.display()
            ),
        )
    })
}

/// Settings as `configure` receives them: strings as they are, `{ env = "NAME" }` and
/// `{ file = "/path" }` read now (see [`crate::secret::ValueSource`]), anything else as JSON text.
pub(crate) fn settings_pairs(
    provider: &str,
    settings: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<(String, String)>, EgressError> {
    settings
        .iter()
        .map(|(key, value)| {
            let text = match (value, crate::secret::ValueSource::from_json(value)) {
                (_, Some(source)) => source.read().map_err(|error| {
                    EgressError::load(provider, format!("setting `{key}`: {error}"))
                })?,
                (serde_json::Value::String(text), None) => text.clone(),
                (other, None) => other.to_string(),
            };
            Ok((key.clone(), text))
        })
        .collect()
}

/// Instantiates the provider once and calls `configure`.
async fn validate_settings(provider: &Arc<LoadedProvider>) -> Result<(), EgressError> {
    let worker = provider.clone();
    let thread = provider.start_thread().await?;
    let result = tokio::task::spawn_blocking(move || {
        let _thread = thread;
        let mut instance = ProviderInstance::new(&worker)?;
        instance.configure()
    });
    let wait = provider.limits.call_timeout() * 2 + Duration::from_secs(2);
    let name = &provider.name;
    match tokio::time::timeout(wait, result).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(EgressError::Provider { kind, message, .. }))) => Err(EgressError::load(
            name,
            if kind == ProviderErrorKind::InvalidSettings {
                format!("its settings were refused: {message}")
            } else {
                format!("checking its settings failed ({kind}): {message}")
            },
        )),
        Ok(Ok(Err(error))) => Err(EgressError::load(
            name,
            format!("checking its settings failed: {error}"),
        )),
        Ok(Err(e)) => Err(EgressError::host(
            name,
            format!("the settings check failed: {e}"),
        )),
        Err(_) => Err(EgressError::load(
            name,
            "checking its settings did not end within its deadline",
        )),
    }
}
