//! The `[egress]` configuration: the providers, what each is granted, and its limits, with the
//! ranges the limits must fall in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::EgressError;
use super::object_store::ObjectStoreGrant;

/// Largest chunk handed to a provider in one `write`, as the WIT contract promises.
pub const MAX_CHUNK: usize = 16 << 20;

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
    /// Memory, time and concurrency limits.
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
    /// Memory of one instance, in MiB: its linear memories and tables together, and the host
    /// buffers it holds through its grants (object-store parts in flight).
    pub memory_mib: u64,
    /// Deadline of `configure`, `begin`, `finish` and `abort` (each), in milliseconds. Host
    /// calls the provider makes (a sleep, an HTTP read, a store request) end by it too.
    pub call_timeout_ms: u64,
    /// Deadline of each `write`, in milliseconds.
    pub write_timeout_ms: u64,
    /// The largest `write`, in KiB. The host gathers the artifact's small pieces into writes of
    /// this size; a piece of 64 KiB or more (or of this size, if smaller) goes as it is, split if
    /// larger.
    pub chunk_kib: u64,
    /// Most instances of the provider alive at once, each on a thread of its own; an upload
    /// that finds them all busy waits up to `call_timeout_ms` for one, then fails.
    pub max_instances: u64,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        ProviderLimits {
            memory_mib: 128,
            call_timeout_ms: 30_000,
            write_timeout_ms: 10_000,
            chunk_kib: 1024,
            max_instances: 8,
        }
    }
}

/// The accepted range of each limit: (key, smallest, largest, unit).
const RANGES: [(&str, u64, u64, &str); 5] = [
    // 16 GiB: four times what one wasm32 memory can address.
    ("memory_mib", 1, 16 << 10, "MiB"),
    // One day.
    ("call_timeout_ms", 1, 86_400_000, "ms"),
    ("write_timeout_ms", 1, 86_400_000, "ms"),
    ("chunk_kib", 1, (MAX_CHUNK >> 10) as u64, "KiB"),
    ("max_instances", 1, 256, "instances"),
];

impl ProviderLimits {
    /// Memory of one instance, in bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize) << 20
    }

    /// The deadline of `configure`, `begin`, `finish` and `abort`.
    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// The deadline of each `write`.
    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The size of the chunks handed to `write`, in bytes.
    pub(crate) fn chunk_bytes(&self) -> usize {
        (self.chunk_kib as usize) << 10
    }

    /// Most instances alive at once.
    pub(crate) fn max_instances(&self) -> usize {
        self.max_instances as usize
    }

    /// Checks every limit against its range, so that no unit conversion can wrap or overflow;
    /// the error names the provider and the key.
    pub(crate) fn validate(&self, provider: &str) -> Result<(), EgressError> {
        let values = [
            self.memory_mib,
            self.call_timeout_ms,
            self.write_timeout_ms,
            self.chunk_kib,
            self.max_instances,
        ];
        for ((key, min, max, unit), value) in RANGES.iter().zip(values) {
            if !(*min..=*max).contains(&value) {
                return Err(EgressError::load(
                    provider,
                    format!(
                        "`limits.{key}` is {value}; it must be between {min} and {max} ({unit})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_out_of_range_are_refused_naming_the_provider_and_the_key() {
        assert!(ProviderLimits::default().validate("p").is_ok());
        type Change = fn(&mut ProviderLimits);
        let cases: [(&str, Change); 6] = [
            ("limits.chunk_kib", |l| l.chunk_kib = 1 << 54),
            ("limits.chunk_kib", |l| l.chunk_kib = 0),
            ("limits.memory_mib", |l| l.memory_mib = 1 << 44),
            ("limits.call_timeout_ms", |l| l.call_timeout_ms = u64::MAX),
            ("limits.write_timeout_ms", |l| l.write_timeout_ms = 0),
            ("limits.max_instances", |l| l.max_instances = 100_000),
        ];
        for (key, change) in cases {
            let mut limits = ProviderLimits::default();
            change(&mut limits);
            let error = limits.validate("files").unwrap_err().to_string();
            assert!(error.contains("egress provider `files`"), "{error}");
            assert!(error.contains(&format!("`{key}`")), "{error}");
        }
    }

    #[test]
    fn the_largest_limits_convert_without_wrapping() {
        let limits = ProviderLimits {
            memory_mib: RANGES[0].2,
            call_timeout_ms: RANGES[1].2,
            write_timeout_ms: RANGES[2].2,
            chunk_kib: RANGES[3].2,
            max_instances: RANGES[4].2,
        };
        limits.validate("p").unwrap();
        assert_eq!(limits.memory_bytes(), 16 << 30);
        assert_eq!(limits.chunk_bytes(), MAX_CHUNK);
        assert!(
            std::time::Instant::now()
                .checked_add(limits.call_timeout() * 3)
                .is_some()
        );
    }
}
