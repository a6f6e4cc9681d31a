//! The egress host: WebAssembly components that receive artifacts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[egress]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Providers by name (names compare case-insensitively).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// One provider: which component, what the host grants it, and its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A built-in component name (`filesystem`) or a path to a `.wasm` component.
    pub component: String,
    /// Grant: this host directory, preopened read-write, and nothing else.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Grant: outbound HTTP to these origins (wasi:http).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Settings passed to the component as they are.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
}
