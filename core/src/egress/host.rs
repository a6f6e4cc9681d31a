//! The provider registry: loads every configured provider at start-up, checks it, and starts
//! uploads.
//!
//! Loading a provider, in order, each step failing with the provider's name and the cause:
//! 1. resolve the component: a built-in name, or a path to a `.wasm` file;
//! 2. check that the file is a component, not a core module or something else;
//! 3. compile it, or load it precompiled from the cache ([`super::engine`]);
//! 4. check its exports against the `diagmon:egress` world version this diagmon speaks;
//! 5. check its imports against what the configuration grants (see [`super::check`]);
//! 6. build the object store it is granted, if any (nothing is sent to the store yet);
//! 7. link it: only the interfaces its grants allow are in its linker;
//! 8. instantiate it once and call `configure` with its settings, so that bad settings stop
//!    start-up rather than the first artifact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::EgressProviderPre;
use super::bindings::diagmon::egress::{log, object_store as wit_object_store};
use super::builtin;
use super::check::{self, ImportNeed};
use super::engine::{self, engine};
use super::error::{EgressError, ProviderErrorKind};
use super::in_place_write;
use super::instance::{ProviderInstance, StoreState};
use super::object_store::GrantedStore;
use super::outbound_http::AllowList;
use super::upload::Upload;
use super::{Artifact, EgressConfig, ProviderConfig, ProviderLimits};

/// A provider, loaded, checked and ready to instantiate.
pub(crate) struct LoadedProvider {
    /// The configured name, as written in the configuration.
    pub(crate) name: String,
    /// Where the component came from, for messages.
    pub(crate) origin: String,
    pub(crate) pre: EgressProviderPre<StoreState>,
    /// The granted directory, canonical.
    pub(crate) directory: Option<PathBuf>,
    /// The settings, as `configure` receives them.
    pub(crate) settings: Vec<(String, String)>,
    /// The origins it may send HTTP requests to.
    pub(crate) allowed_outbound_hosts: Arc<AllowList>,
    /// The object store it may write to.
    pub(crate) object_store: Option<Arc<GrantedStore>>,
    pub(crate) limits: ProviderLimits,
}

/// Loaded, validated and precompiled providers. Cheap to clone.
#[derive(Clone, Default)]
pub struct EgressHost {
    /// By lowercase name.
    providers: Arc<BTreeMap<String, Arc<LoadedProvider>>>,
}

impl std::fmt::Debug for EgressHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressHost")
            .field("providers", &self.provider_names())
            .finish()
    }
}

impl EgressHost {
    /// Loads every configured provider (see the module docs for the checks). A broken provider
    /// fails the whole load, naming the provider and the cause.
    pub async fn load(config: &EgressConfig) -> Result<EgressHost, EgressError> {
        let cache = config
            .cache_directory
            .clone()
            .or_else(engine::default_cache_directory);
        let mut providers = BTreeMap::new();
        for (name, provider_config) in &config.providers {
            let key = name.to_lowercase();
            if let Some(existing) = providers.get(&key) {
                let existing: &Arc<LoadedProvider> = existing;
                return Err(EgressError::load(
                    name,
                    format!(
                        "its name differs from provider `{}` only in case; provider names are case-insensitive",
                        existing.name
                    ),
                ));
            }
            let started = std::time::Instant::now();
            let loaded = load_provider(name, provider_config, cache.as_deref()).await?;
            tracing::info!(
                provider = %name,
                component = %loaded.origin,
                "egress provider loaded in {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
            providers.insert(key, Arc::new(loaded));
        }
        Ok(EgressHost {
            providers: Arc::new(providers),
        })
    }

    /// True when a provider of this name (case-insensitive) is loaded.
    pub fn has_provider(&self, name: &str) -> bool {
        self.providers.contains_key(&name.to_lowercase())
    }

    /// The providers' names, as configured.
    pub fn provider_names(&self) -> Vec<String> {
        self.providers.values().map(|p| p.name.clone()).collect()
    }

    /// Starts an upload: a fresh instance of the provider, with its grants and limits, on a
    /// thread of its own; `configure`, then `begin(artifact)`.
    pub async fn begin(&self, provider: &str, artifact: Artifact) -> Result<Upload, EgressError> {
        let loaded = self
            .providers
            .get(&provider.to_lowercase())
            .cloned()
            .ok_or_else(|| EgressError::UnknownProvider(provider.to_owned()))?;
        Upload::start(loaded, artifact).await
    }
}

/// Where a provider's component comes from.
pub(crate) enum ComponentSource {
    /// Embedded in diagmon.
    BuiltIn(&'static str, &'static [u8]),
    /// A file.
    File(PathBuf),
}

impl ComponentSource {
    /// Resolves the `component` setting.
    pub(crate) fn resolve(provider: &str, component: &str) -> Result<ComponentSource, EgressError> {
        if let Some(bytes) = builtin::component(component) {
            return Ok(ComponentSource::BuiltIn(
                builtin::canonical_name(component),
                bytes,
            ));
        }
        let looks_like_path = component.contains('/') || component.ends_with(".wasm");
        if !looks_like_path {
            return Err(EgressError::load(
                provider,
                format!(
                    "`{component}` is not a built-in component ({}) nor a path to a .wasm file",
                    builtin::NAMES.join(", ")
                ),
            ));
        }
        Ok(ComponentSource::File(PathBuf::from(component)))
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            ComponentSource::BuiltIn(name, _) => format!("{name} (built-in)"),
            ComponentSource::File(path) => path.display().to_string(),
        }
    }

    pub(crate) async fn bytes(&self, provider: &str) -> Result<Vec<u8>, EgressError> {
        match self {
            ComponentSource::BuiltIn(_, bytes) => Ok(bytes.to_vec()),
            ComponentSource::File(path) => tokio::fs::read(path).await.map_err(|e| {
                EgressError::load(
                    provider,
                    format!("cannot read the component {}: {e}", path.display()),
                )
            }),
        }
    }
}

/// Checks the header: a component, not a core module, not something else.
pub(crate) fn check_header(provider: &str, origin: &str, bytes: &[u8]) -> Result<(), EgressError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(EgressError::load(
            provider,
            format!("{origin} is not a WebAssembly component (no `\\0asm` header)"),
        ));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(EgressError::load(
            provider,
            format!(
                "{origin} is a core WebAssembly module, not a component; build it for the \
                 wasm32-wasip2 target, or wrap it with `wasm-tools component new`"
            ),
        )),
        _ => Err(EgressError::load(
            provider,
            format!("{origin} has an unknown WebAssembly version or layer"),
        )),
    }
}

/// Compiles (or loads from the cache) on a blocking thread.
pub(crate) async fn compile(
    provider: &str,
    origin: &str,
    bytes: Vec<u8>,
    cache: Option<&Path>,
) -> Result<Component, EgressError> {
    let cache = cache.map(Path::to_owned);
    let result = tokio::task::spawn_blocking(move || engine::compile(&bytes, cache.as_deref()))
        .await
        .map_err(|e| EgressError::host(provider, format!("the compile task failed: {e}")))?;
    match result {
        Ok((component, source)) => {
            tracing::debug!(provider, "component {origin}: {source:?}");
            Ok(component)
        }
        Err(error) => Err(EgressError::load(
            provider,
            format!("{origin} does not compile: {error:#}"),
        )),
    }
}

/// What the configuration grants a provider, as far as linking is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Grants {
    /// `allowed_outbound_hosts` is not empty.
    pub(crate) http: bool,
    /// `object_store` is set.
    pub(crate) object_store: bool,
}

/// A linker with WASI (filesystem, clocks, random, cli, io; sockets that refuse everything), the
/// `diagmon:egress` imports, and `wasi:http` and `diagmon:egress/object-store` when granted.
pub(crate) fn linker(grants: Grants) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // `descriptor.write` without copying the buffer out of the guest first.
    in_place_write::add_to_linker(&mut linker)?;
    if grants.http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    }
    log::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| state)?;
    if grants.object_store {
        wit_object_store::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| {
            state
        })?;
    }
    Ok(linker)
}

/// Checks a compiled component against the world and the grants and links it.
pub(crate) fn link(
    provider: &str,
    origin: &str,
    component: &Component,
    grants: Grants,
) -> Result<EgressProviderPre<StoreState>, EgressError> {
    let report = check::inspect(component);
    check::require_world(provider, origin, &report)?;
    for import in &report.imports {
        match &import.need {
            ImportNeed::Provided => {}
            ImportNeed::HttpGrant if grants.http => {}
            ImportNeed::ObjectStoreGrant if grants.object_store => {}
            ImportNeed::ObjectStoreGrant => {
                return Err(EgressError::load(
                    provider,
                    format!(
                        "{origin} imports `{}`, which needs an object-store grant: set \
                         `object_store = {{ url = \"s3://bucket/prefix\", ... }}` in its table",
                        import.name
                    ),
                ));
            }
            ImportNeed::HttpGrant => {
                return Err(EgressError::load(
                    provider,
                    format!(
                        "{origin} imports `{}`, which needs an HTTP grant: list the origins it may \
                         reach in `allowed_outbound_hosts`",
                        import.name
                    ),
                ));
            }
            ImportNeed::Unsupported(why) => {
                return Err(EgressError::load(
                    provider,
                    format!(
                        "{origin} imports `{}`, which diagmon does not provide: {why}",
                        import.name
                    ),
                ));
            }
        }
    }
    let linker = linker(grants)
        .map_err(|e| EgressError::host(provider, format!("cannot build the linker: {e:#}")))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| EgressError::load(provider, format!("{origin} cannot be linked: {e:#}")))?;
    EgressProviderPre::new(pre).map_err(|e| {
        EgressError::load(
            provider,
            format!(
                "{origin} does not match the diagmon:egress@{} world: {e:#}",
                super::bindings::WORLD_VERSION
            ),
        )
    })
}

async fn load_provider(
    name: &str,
    config: &ProviderConfig,
    cache: Option<&Path>,
) -> Result<LoadedProvider, EgressError> {
    let source = ComponentSource::resolve(name, &config.component)?;
    let origin = source.describe();
    let bytes = source.bytes(name).await?;
    check_header(name, &origin, &bytes)?;
    let component = compile(name, &origin, bytes, cache).await?;
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
    let pre = link(name, &origin, &component, grants)?;
    let directory = match &config.directory {
        Some(directory) => Some(grant_directory(name, directory)?),
        None => None,
    };
    config.limits.validate(name)?;
    let loaded = Arc::new(LoadedProvider {
        name: name.to_owned(),
        origin,
        pre,
        directory,
        settings: settings_pairs(name, &config.settings)?,
        allowed_outbound_hosts: Arc::new(allowed_outbound_hosts),
        object_store,
        limits: config.limits.clone(),
    });
    validate_settings(&loaded).await?;
    Arc::try_unwrap(loaded).map_err(|_| EgressError::host(name, "the provider is still in use"))
}

/// Creates the granted directory if needed and returns its canonical path.
fn grant_directory(provider: &str, directory: &Path) -> Result<PathBuf, EgressError> {
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
    Ok(canonical)
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
    let result = tokio::task::spawn_blocking(move || {
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

impl Artifact {
    /// The WIT record.
    pub(crate) fn to_wit(&self) -> super::bindings::diagmon::egress::types::Artifact {
        use super::bindings::diagmon::egress::types;
        let since_epoch = self
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        types::Artifact {
            file_name: self.file_name.clone(),
            content_type: self.content_type.clone(),
            kind: self.kind.clone(),
            pid: self.pid,
            uid: self.uid.hyphenated().to_string(),
            process_name: self.process_name.clone(),
            operation_id: self.operation_id.hyphenated().to_string(),
            tags: self.tags.clone(),
            started_at: types::Timestamp {
                seconds: since_epoch.as_secs(),
                nanoseconds: since_epoch.subsec_nanos(),
            },
        }
    }
}
