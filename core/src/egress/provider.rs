//! A provider, loaded, checked and ready to instantiate ([`LoadedProvider`]): its linked
//! component, what it is granted, its settings and limits, and the count of its live instances,
//! which its `max_instances` bounds.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::budget::{CountedThread, ProviderUsage};
use super::config::ProviderLimits;
use super::engine::CompileSource;
use super::error::EgressError;
use super::object_store::GrantedStore;
use super::outbound_http::AllowList;
use super::partials::DirectoryLock;
use super::store_state::StoreState;
use super::world::EgressProviderPre;

/// A provider, loaded, checked and ready to instantiate.
pub(crate) struct LoadedProvider {
    /// The configured name, as written in the configuration.
    pub(crate) name: String,
    /// Where the component came from, for messages.
    pub(crate) origin: String,
    /// Whether its component was compiled at load or taken precompiled from the cache.
    pub(crate) compile_source: CompileSource,
    /// The component, linked with what its grants allow.
    pub(crate) pre: EgressProviderPre<StoreState>,
    /// The granted directory, canonical, held (shared) while the provider is loaded so that
    /// another diagmon starting up does not sweep its partial files.
    pub(crate) directory: Option<DirectoryLock>,
    /// The settings, as `configure` receives them.
    pub(crate) settings: Vec<(String, String)>,
    /// The origins it may send HTTP requests to.
    pub(crate) allowed_outbound_hosts: Arc<AllowList>,
    /// The object store it may write to.
    pub(crate) object_store: Option<Arc<GrantedStore>>,
    /// Its limits.
    pub(crate) limits: ProviderLimits,
    /// Its live instances (threads) and the host buffers they hold.
    pub(crate) usage: Arc<ProviderUsage>,
    /// One permit per instance it may have alive (`limits.max_instances`).
    pub(crate) instances: Arc<Semaphore>,
}

/// A thread of a provider: one of its `max_instances` permits, counted in its usage.
pub(crate) struct ProviderThread {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _counted: CountedThread,
}

impl LoadedProvider {
    /// The granted directory, canonical.
    pub(crate) fn directory_path(&self) -> Option<&PathBuf> {
        self.directory.as_ref().map(DirectoryLock::path)
    }

    /// Takes one of the provider's instance permits, waiting up to its call deadline for one to
    /// come free.
    pub(crate) async fn start_thread(&self) -> Result<ProviderThread, EgressError> {
        let waited = self.limits.call_timeout();
        match tokio::time::timeout(waited, self.instances.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(ProviderThread {
                _permit: permit,
                _counted: CountedThread::start(&self.usage),
            }),
            Ok(Err(_)) => Err(EgressError::host(&self.name, "the provider was unloaded")),
            Err(_) => Err(EgressError::Busy {
                provider: self.name.clone(),
                max_instances: self.limits.max_instances(),
                waited,
            }),
        }
    }
}
