//! One instance of a provider: its store (WASI context with exactly its grants, memory limiter,
//! output tail) and the calls into it, each under a deadline. Everything here blocks; it runs on
//! the upload's own blocking thread.
//!
//! A call's outcome has two layers (style.md §7.5): the outer one is the host stopping the guest
//! (a trap, the deadline, the memory limit), after which the instance is poisoned and only dropped;
//! the inner one is the provider's own `error`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Artifact;
use super::bindings::EgressProvider;
use super::bindings::diagmon::egress::{log, types};
use super::engine::{engine, ticks};
use super::error::{EgressError, ProviderErrorKind, truncate};
use super::host::LoadedProvider;
use super::object_store::ObjectStoreCtx;
use super::outbound_http::HttpHooks;

/// Longest provider message (error, log line) kept, in bytes.
pub(crate) const MAX_MESSAGE: usize = 4096;
/// Longest location a provider may return, in bytes.
const MAX_LOCATION: usize = 4096;
/// How much of the provider's stdout and stderr is kept for error reports.
const OUTPUT_TAIL: usize = 2048;

/// The store's data.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    provider: Arc<str>,
    http: WasiHttpCtx,
    http_hooks: HttpHooks,
    /// The object-store grant, when the provider has one.
    object_store: Option<ObjectStoreCtx>,
    /// When the provider call in progress must return; host calls that wait (the object store)
    /// give up before it.
    call_deadline: Option<Instant>,
}

/// What the object-store host calls need from the store's data, borrowed apart.
pub(crate) struct ObjectStoreView<'a> {
    pub(crate) ctx: Option<&'a mut ObjectStoreCtx>,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) deadline: Option<Instant>,
    pub(crate) provider: &'a str,
}

impl StoreState {
    /// The resource table (WASI handles, the provider's resources).
    pub(crate) fn table(&self) -> &ResourceTable {
        &self.table
    }

    pub(crate) fn object_store_view(&mut self) -> ObjectStoreView<'_> {
        ObjectStoreView {
            ctx: self.object_store.as_mut(),
            table: &mut self.table,
            deadline: self.call_deadline,
            provider: &self.provider,
        }
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

/// Limits the total linear memory of an instance (all its memories together: wasmtime's own
/// `StoreLimits` counts each memory separately) and remembers a refusal, so that the trap that
/// usually follows is reported as what it is.
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.refused = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        1000
    }

    fn tables(&self) -> usize {
        1000
    }

    fn memories(&self) -> usize {
        100
    }
}

/// The last [`OUTPUT_TAIL`] bytes a provider wrote to stdout and stderr.
#[derive(Clone, Default)]
pub(crate) struct OutputTail(Arc<Mutex<VecDeque<u8>>>);

impl OutputTail {
    /// The tail as text, or `None` when the provider wrote nothing.
    pub(crate) fn text(&self) -> Option<String> {
        let buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.is_empty() {
            return None;
        }
        let bytes: Vec<u8> = buffer.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        // Rust's panic hook adds a hint that means nothing inside a provider.
        let text: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE=1`"))
            .collect();
        Some(text.join("\n"))
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for OutputTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let keep = &bytes[bytes.len().saturating_sub(OUTPUT_TAIL)..];
        buffer.extend(keep);
        let excess = buffer.len().saturating_sub(OUTPUT_TAIL);
        buffer.drain(..excess);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A live instance of a provider.
pub(crate) struct ProviderInstance {
    store: Store<StoreState>,
    bindings: EgressProvider,
    provider: Arc<LoadedProvider>,
    output: OutputTail,
    /// Set once the host stopped the guest: the instance must not be entered again.
    poisoned: bool,
}

/// The WIT error as the host's.
fn provider_error(provider: &str, call: &'static str, error: types::Error) -> EgressError {
    let (kind, message) = match error {
        types::Error::InvalidSettings(m) => (ProviderErrorKind::InvalidSettings, m),
        types::Error::Denied(m) => (ProviderErrorKind::Denied, m),
        types::Error::Io(m) => (ProviderErrorKind::Io, m),
        types::Error::Unavailable(m) => (ProviderErrorKind::Unavailable, m),
        types::Error::Other(m) => (ProviderErrorKind::Other, m),
    };
    EgressError::Provider {
        provider: provider.to_owned(),
        call,
        kind,
        message: truncate(message, MAX_MESSAGE),
    }
}

impl ProviderInstance {
    /// Instantiates `provider` in a fresh store with its grants and limits.
    pub(crate) fn new(provider: &Arc<LoadedProvider>) -> Result<ProviderInstance, EgressError> {
        let output = OutputTail::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone())
            .stderr(output.clone())
            // The instance has a thread of its own: filesystem calls run on it directly instead of
            // hopping to another thread for each (measured 0.9× native vs 0.45–0.7×).
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(directory) = &provider.directory {
            wasi.preopened_dir(directory, directory.to_string_lossy(), FsPerms::ReadWrite)
                .map_err(|e| {
                    EgressError::host(
                        &provider.name,
                        format!(
                            "cannot open the granted directory {}: {e}",
                            directory.display()
                        ),
                    )
                })?;
        }
        let object_store = match &provider.object_store {
            Some(store) => Some(ObjectStoreCtx::new(store.clone()).map_err(|e| {
                EgressError::host(
                    &provider.name,
                    format!("cannot grant the object store: {e}"),
                )
            })?),
            None => None,
        };
        let state = StoreState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: provider.limits.memory_bytes() as usize,
                used: 0,
                refused: false,
            },
            provider: Arc::from(provider.name.as_str()),
            http: WasiHttpCtx::new(),
            http_hooks: HttpHooks {
                allowed: provider.allowed_outbound_hosts.clone(),
                provider: Arc::from(provider.name.as_str()),
                default_timeout: provider.limits.call_timeout(),
            },
            object_store,
            call_deadline: None,
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(ticks(provider.limits.call_timeout()));
        let bindings = match provider.pre.instantiate(&mut store) {
            Ok(bindings) => bindings,
            Err(error) => {
                let refused = store.data().limiter.refused;
                return Err(Self::stopped_error(
                    &provider.name,
                    "instantiate",
                    provider.limits.call_timeout(),
                    provider.limits.memory_bytes(),
                    refused,
                    &output,
                    error,
                ));
            }
        };
        Ok(ProviderInstance {
            store,
            bindings,
            provider: provider.clone(),
            output,
            poisoned: false,
        })
    }

    /// Runs one call into the guest under `deadline`.
    fn call<T>(
        &mut self,
        call: &'static str,
        deadline: Duration,
        f: impl FnOnce(
            &mut Store<StoreState>,
            &EgressProvider,
        ) -> wasmtime::Result<Result<T, types::Error>>,
    ) -> Result<T, EgressError> {
        if self.poisoned {
            return Err(EgressError::host(
                &self.provider.name,
                format!("{call} after the instance was stopped"),
            ));
        }
        self.store.set_epoch_deadline(ticks(deadline));
        self.store.data_mut().call_deadline = Some(Instant::now() + deadline);
        match f(&mut self.store, &self.bindings) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(provider_error(&self.provider.name, call, error)),
            Err(error) => {
                self.poisoned = true;
                Err(Self::stopped_error(
                    &self.provider.name,
                    call,
                    deadline,
                    self.provider.limits.memory_bytes(),
                    self.store.data().limiter.refused,
                    &self.output,
                    error,
                ))
            }
        }
    }

    /// Classifies a wasmtime error from a call: the deadline, the memory limit, or a trap.
    fn stopped_error(
        provider: &str,
        call: &'static str,
        deadline: Duration,
        memory_limit: u64,
        memory_refused: bool,
        output: &OutputTail,
        error: wasmtime::Error,
    ) -> EgressError {
        tracing::debug!(provider, call, "egress provider stopped: {error:?}");
        let trap = error.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::Interrupt) {
            return EgressError::DeadlineExceeded {
                provider: provider.to_owned(),
                call,
                deadline,
            };
        }
        let output = output.text();
        if memory_refused {
            return EgressError::MemoryLimit {
                provider: provider.to_owned(),
                call,
                limit_bytes: memory_limit,
                output,
            };
        }
        let reason = match trap {
            Some(trap) => trap.to_string(),
            None => format!("{:#}", error),
        };
        EgressError::Trap {
            provider: provider.to_owned(),
            call,
            reason: truncate(reason, MAX_MESSAGE),
            output,
        }
    }

    /// Calls `configure` with the provider's settings.
    pub(crate) fn configure(&mut self) -> Result<(), EgressError> {
        let settings = self.provider.settings.clone();
        let deadline = self.provider.limits.call_timeout();
        self.call("configure", deadline, |store, bindings| {
            bindings
                .diagmon_egress_provider()
                .call_configure(store, &settings)
        })
    }

    /// Calls `begin`; returns the guest's upload handle.
    pub(crate) fn begin(&mut self, artifact: &Artifact) -> Result<ResourceAny, EgressError> {
        let artifact = artifact.to_wit();
        let deadline = self.provider.limits.call_timeout();
        self.call("begin", deadline, |store, bindings| {
            bindings
                .diagmon_egress_provider()
                .call_begin(store, &artifact)
        })
    }

    /// Calls `upload.write`.
    pub(crate) fn write(&mut self, upload: ResourceAny, chunk: &[u8]) -> Result<(), EgressError> {
        let deadline = self.provider.limits.write_timeout();
        self.call("write", deadline, |store, bindings| {
            bindings
                .diagmon_egress_provider()
                .upload()
                .call_write(store, upload, chunk)
        })
    }

    /// Calls `upload.finish`; returns the location.
    pub(crate) fn finish(&mut self, upload: ResourceAny) -> Result<String, EgressError> {
        let deadline = self.provider.limits.call_timeout();
        let result = self.call("finish", deadline, |store, bindings| {
            bindings
                .diagmon_egress_provider()
                .upload()
                .call_finish(store, upload)
        })?;
        if result.location.len() > MAX_LOCATION {
            return Err(EgressError::Provider {
                provider: self.provider.name.clone(),
                call: "finish",
                kind: ProviderErrorKind::Other,
                message: format!(
                    "the provider returned a location of {} bytes; at most {MAX_LOCATION} are accepted",
                    result.location.len()
                ),
            });
        }
        Ok(result.location)
    }

    /// Calls `upload.abort`, so that the provider removes what it created. Failures are logged:
    /// an abort never fails.
    pub(crate) fn abort(&mut self, upload: ResourceAny) {
        if self.poisoned {
            return;
        }
        let deadline = self.provider.limits.call_timeout();
        if let Err(error) = self.call("abort", deadline, |store, bindings| {
            bindings
                .diagmon_egress_provider()
                .upload()
                .call_abort(store, upload)
        }) {
            tracing::warn!(provider = %self.provider.name, "aborting an upload failed: {error}");
        }
    }
}
