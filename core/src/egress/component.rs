//! Getting a provider's component: resolving the `component` setting (a built-in name or a
//! `.wasm` path), checking that the bytes are a component, and compiling it (or loading it
//! precompiled from the cache, see [`super::engine`]) off the async threads.

use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use super::builtin;
use super::engine::{self, CompileSource};
use super::error::EgressError;

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

/// Compiles (or loads from the cache) on a blocking thread; says which it was.
pub(crate) async fn compile(
    provider: &str,
    origin: &str,
    bytes: Vec<u8>,
    cache: Option<&Path>,
) -> Result<(Component, CompileSource), EgressError> {
    let cache = cache.map(Path::to_owned);
    let result = tokio::task::spawn_blocking(move || engine::compile(&bytes, cache.as_deref()))
        .await
        .map_err(|e| EgressError::host(provider, format!("the compile task failed: {e}")))?;
    match result {
        Ok((component, source)) => {
            tracing::debug!(provider, "component {origin}: {source:?}");
            Ok((component, source))
        }
        Err(error) => Err(EgressError::load(
            provider,
            format!("{origin} does not compile: {error:#}"),
        )),
    }
}
