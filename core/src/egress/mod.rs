//! The egress host: WebAssembly components that receive artifacts.
//!
//! A provider is a component of the `diagmon:egress@0.1.0` world (`wit/egress.wit`, the plugin
//! author's reference), either built in ([`builtin`]: `filesystem`, `object-storage`) or a
//! `.wasm` file named in the configuration. It gets only what its configuration grants (a
//! directory, HTTP origins, an object store; nothing by default), a memory limit and a deadline
//! per call, and a fresh instance per artifact.
//!
//! - [`EgressHost`] loads and checks the configured providers at start-up and starts uploads;
//! - [`Upload`] streams one artifact into a provider (`write`, then `finish` or `abort`);
//! - [`check_component`] inspects a component file for `diagmon plugin check`;
//! - [`EgressError`] says what went wrong, keeping a provider's own errors apart from the host
//!   stopping it.
//!
//! Inside: `bindings` (the generated host bindings), `engine` (the wasmtime engine, epoch ticker
//! and compile cache), `host` (loading and the registry), `instance` (one store and the calls
//! into it), `upload` (the upload's thread and its async face), `in_place_write` (the
//! `wasi:filesystem` `write` that reads the guest's memory in place), `check` (imports and exports),
//! `outbound_http` (`wasi:http` behind the `allowed_outbound_hosts` allow-list), `object_store`
//! (the `object_store` grant: S3, Azure Blob, GCS or a directory through the `object_store`
//! crate, behind `diagmon:egress/object-store`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

mod bindings;
pub mod builtin;
mod check;
mod engine;
mod error;
mod host;
mod in_place_write;
mod instance;
mod object_store;
mod outbound_http;
mod upload;

pub use check::{ComponentReport, ImportNeed, ImportReport, check_component};
pub use error::{EgressError, ProviderErrorKind};
pub use host::EgressHost;
pub use object_store::{FromEnv, FromFile, GrantValue, ObjectStoreGrant};
pub use upload::{MAX_CHUNK, Upload};

/// The `diagmon:egress` world version this diagmon speaks.
pub const WORLD_VERSION: &str = bindings::WORLD_VERSION;

/// The `[egress]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Providers by name (names compare case-insensitively).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Where compiled providers are cached; defaults to `$XDG_CACHE_HOME/diagmon/components`
    /// (or `~/.cache/diagmon/components`). Must belong to diagmon's user and be writable by
    /// nobody else, or it is not used.
    #[serde(default)]
    pub cache_directory: Option<PathBuf>,
}

/// One provider: which component, what the host grants it, and its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A built-in component name (`filesystem`) or a path to a `.wasm` component.
    pub component: String,
    /// Grant: this host directory, preopened read-write, and nothing else. Created if missing.
    /// The provider sees it under its host path.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Grant: outbound HTTP (wasi:http) to these origins, `scheme://host[:port]`; `*` may stand
    /// for the scheme, the port, the whole host or its leftmost labels (`https://*.example.com`).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Grant: an object store the provider writes objects into through
    /// `diagmon:egress/object-store`, confined to the URL's prefix, with credentials it never
    /// sees: `{ url = "s3://bucket/prefix" | "az://container/prefix" | "gs://bucket/prefix" |
    /// "file:///dir", ...options }`. The options are object_store's own configuration keys; a
    /// value may be `{ env = "NAME" }` or `{ file = "/path" }` (see [`ObjectStoreGrant`]).
    #[serde(default)]
    pub object_store: Option<ObjectStoreGrant>,
    /// Settings passed to the component: strings as they are, other values as JSON text; a
    /// value `{ env = "NAME" }` or `{ file = "/path" }` is read at start-up, so that secrets
    /// (HTTP headers, tokens) stay out of the file.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Memory and time limits.
    #[serde(default)]
    pub limits: ProviderLimits,
}

impl ProviderConfig {
    /// A provider of `component` (a built-in name or a `.wasm` path) with no grant, no settings
    /// and the default limits.
    pub fn new(component: impl Into<String>) -> ProviderConfig {
        ProviderConfig {
            component: component.into(),
            directory: None,
            allowed_outbound_hosts: Vec::new(),
            object_store: None,
            settings: BTreeMap::new(),
            limits: ProviderLimits::default(),
        }
    }
}

/// A provider's limits. Hitting one fails the current upload only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderLimits {
    /// Linear memory of one instance, all its memories together, in MiB.
    pub memory_mib: u64,
    /// Deadline of `configure`, `begin` and `finish` (each), in milliseconds.
    pub call_timeout_ms: u64,
    /// Deadline of each `write`, in milliseconds.
    pub write_timeout_ms: u64,
    /// The host gathers the artifact into chunks of this size, in KiB, before each `write`
    /// (at most 16384).
    pub chunk_kib: u64,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        ProviderLimits {
            memory_mib: 128,
            call_timeout_ms: 30_000,
            write_timeout_ms: 10_000,
            chunk_kib: 1024,
        }
    }
}

impl ProviderLimits {
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub(crate) fn chunk_bytes(&self) -> usize {
        (self.chunk_kib as usize) << 10
    }

    fn validate(&self, provider: &str) -> Result<(), EgressError> {
        let problem = if self.memory_mib == 0 {
            Some("`limits.memory_mib` must be at least 1")
        } else if self.call_timeout_ms == 0 || self.write_timeout_ms == 0 {
            Some("`limits.call_timeout_ms` and `limits.write_timeout_ms` must be at least 1")
        } else if self.chunk_kib == 0 || (self.chunk_kib << 10) as usize > MAX_CHUNK {
            Some("`limits.chunk_kib` must be between 1 and 16384")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(EgressError::load(provider, problem)),
            None => Ok(()),
        }
    }
}

/// What the host knows about an artifact; passed to the provider's `begin`.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The suggested file name, `{yyyyMMdd_HHmmss_fff}_{pid}.nettrace` (see [`Artifact::trace_file_name`]).
    pub file_name: String,
    /// The MIME type, `application/octet-stream` for a trace.
    pub content_type: String,
    /// `trace`.
    pub kind: String,
    /// The traced process.
    pub pid: u64,
    /// The runtime instance cookie of the traced process.
    pub uid: uuid::Uuid,
    /// The traced process's name.
    pub process_name: String,
    /// The operation the artifact belongs to.
    pub operation_id: uuid::Uuid,
    /// Labels from the request.
    pub tags: Vec<String>,
    /// When the capture started.
    pub started_at: SystemTime,
}

impl Artifact {
    /// The artifact of a trace of process `pid` that started at `started_at`: named by
    /// [`Artifact::trace_file_name`], kind `trace`, `application/octet-stream`.
    pub fn trace(
        pid: u64,
        uid: uuid::Uuid,
        process_name: impl Into<String>,
        operation_id: uuid::Uuid,
        tags: Vec<String>,
        started_at: SystemTime,
    ) -> Artifact {
        Artifact {
            file_name: Artifact::trace_file_name(started_at, pid),
            content_type: "application/octet-stream".to_owned(),
            kind: "trace".to_owned(),
            pid,
            uid,
            process_name: process_name.into(),
            operation_id,
            tags,
            started_at,
        }
    }

    /// The suggested file name of a trace: `{yyyyMMdd_HHmmss_fff}_{pid}.nettrace`, UTC, as
    /// dotnet-monitor names them.
    pub fn trace_file_name(started_at: SystemTime, pid: u64) -> String {
        // "2026-11-26T07:24:08.123Z" -> "20261126_072408_123"
        let stamp = humantime::format_rfc3339_millis(started_at).to_string();
        let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
        let (date, rest) = digits.split_at(8.min(digits.len()));
        let (clock, millis) = rest.split_at(6.min(rest.len()));
        format!("{date}_{clock}_{millis}_{pid}.nettrace")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_file_names_follow_dotnet_monitor() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_141_848_123);
        assert_eq!(
            Artifact::trace_file_name(time, 42),
            "20251126_072408_123_42.nettrace"
        );
    }
}
