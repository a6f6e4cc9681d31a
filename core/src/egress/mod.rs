//! The egress host: WebAssembly components that receive artifacts.
//!
//! A provider is a component of the `diagmon:egress` world (`wit/diagmon-egress@0.1.0/egress.wit`, the plugin
//! author's reference), either built in ([`builtin`]: `filesystem`, `object-storage`) or a
//! `.wasm` file named in the configuration. It gets only what its configuration grants (a
//! directory, HTTP origins, an object store; nothing by default), a memory limit, a deadline per
//! call that host calls honour too, a bounded number of instances, and a fresh instance per
//! artifact.
//!
//! - [`EgressHost`] loads and checks the configured providers at start-up and starts uploads;
//! - [`Upload`] streams one [`Artifact`] into a provider (`write`, then `finish` or `abort`);
//! - [`check_component`] inspects a component file for `diagmon plugin check`;
//! - [`run_conformance`] runs a provider through the contract for `diagmon plugin test`;
//! - [`write_template`] writes a starting project for `diagmon plugin new`;
//! - [`EgressError`] says what went wrong, keeping a provider's own errors apart from the host
//!   stopping it.
//!
//! `docs/egress-host.md` describes the modules and their dependencies, the limits, the grants
//! and the deadlines.

mod artifact;
mod budget;
pub mod builtin;
mod check;
mod component;
mod config;
mod conformance;
#[cfg(test)]
mod dependencies;
mod engine;
mod error;
mod filesystem;
mod host_waits;
mod instance;
mod linker;
mod loading;
mod object_store;
mod outbound_http;
mod partials;
mod provider;
mod registry;
mod store_state;
mod template;
mod upload;
mod world;

pub use artifact::{Artifact, ArtifactKind};
pub use check::{ComponentReport, ImportReport, check_component};
pub use config::{EgressConfig, MAX_CHUNK, ProviderConfig, ProviderLimits};
pub use conformance::{
    CaseResult, ConformanceOptions, ConformanceReport, DEFAULT_LARGE_BYTES, Outcome,
    UNKNOWN_SETTING, run_conformance,
};
pub use engine::CompileSource;
pub use error::{EgressError, ProviderErrorKind};
pub use object_store::{FromEnv, FromFile, GrantValue, ObjectStoreGrant};
pub use registry::{EgressHost, ProviderUsageSnapshot};
pub use template::{TemplateLanguage, write_template};
pub use upload::{Pump, Upload};
pub use world::{ImportNeed, WORLD_VERSION};
