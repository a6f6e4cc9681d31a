//! The provider registry ([`EgressHost`]): every configured provider, loaded at start-up by
//! [`super::loading`], looked up by name (case-insensitively) to start uploads, with what each
//! has in use.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::artifact::Artifact;
use super::config::EgressConfig;
use super::engine::{self, CompileSource};
use super::error::EgressError;
use super::loading::load_provider;
use super::provider::LoadedProvider;
use super::upload::Upload;

/// What a provider has in use now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderUsageSnapshot {
    /// Its live instances, each on a thread of its own (at most `limits.max_instances`).
    pub threads: usize,
    /// The host buffers its instances hold (object-store parts in flight), in bytes.
    pub host_buffer_bytes: usize,
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
                "egress provider loaded in {:.1} ms ({})",
                started.elapsed().as_secs_f64() * 1000.0,
                match loaded.compile_source {
                    CompileSource::Cache => "precompiled, from the compile cache",
                    CompileSource::Compiled => "compiled now",
                }
            );
            providers.insert(key, loaded);
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

    /// Whether the provider of this name (case-insensitive) was compiled at load or taken
    /// precompiled from the compile cache (`egress.cache_directory`).
    pub fn compile_source(&self, name: &str) -> Option<CompileSource> {
        self.providers
            .get(&name.to_lowercase())
            .map(|provider| provider.compile_source)
    }

    /// What the provider of this name (case-insensitive) has in use now.
    pub fn usage(&self, name: &str) -> Option<ProviderUsageSnapshot> {
        self.providers
            .get(&name.to_lowercase())
            .map(|provider| ProviderUsageSnapshot {
                threads: provider.usage.threads.load(Ordering::SeqCst),
                host_buffer_bytes: provider.usage.host_bytes.load(Ordering::SeqCst),
            })
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
