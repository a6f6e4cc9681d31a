//! The data of a provider instance's store: its WASI context with exactly its grants, its
//! resource table, its memory limiter, its `wasi:http` hooks and object-store grant, and the
//! deadline of the call in progress; with the host side of the `diagmon:egress` imports that
//! need nothing else (`log`, `types`).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::budget::InstanceLimiter;
use super::error::truncate;
use super::host_waits::CallDeadline;
use super::object_store::{ObjectStoreCtx, ObjectStoreView};
use super::outbound_http::HttpHooks;
use super::world::diagmon::egress::{log, types};

/// Longest provider message (error, log line) kept, in bytes.
pub(crate) const MAX_MESSAGE: usize = 4096;

/// The store's data.
pub(crate) struct StoreState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: InstanceLimiter,
    /// The provider's configured name.
    pub(crate) provider: Arc<str>,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_hooks: HttpHooks,
    /// The object-store grant, when the provider has one.
    pub(crate) object_store: Option<ObjectStoreCtx>,
    /// When the provider call in progress (or the instantiation) must return; host calls that
    /// wait give up by then.
    pub(crate) call_deadline: Instant,
}

impl StoreState {
    /// What the object-store host calls see.
    pub(crate) fn object_store_view(&mut self) -> ObjectStoreView<'_> {
        ObjectStoreView {
            ctx: self.object_store.as_mut(),
            table: &mut self.table,
            deadline: self.call_deadline,
            provider: &self.provider,
        }
    }
}

impl CallDeadline for StoreState {
    fn call_deadline(&self) -> Instant {
        self.call_deadline
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl types::Host for StoreState {}

impl log::Host for StoreState {
    fn log(&mut self, level: log::Level, message: String) {
        let message = truncate(message, MAX_MESSAGE);
        let provider = &*self.provider;
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "diagmon::egress::provider", provider, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "diagmon::egress::provider", provider, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "diagmon::egress::provider", provider, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "diagmon::egress::provider", provider, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "diagmon::egress::provider", provider, "{message}")
            }
        }
    }
}
