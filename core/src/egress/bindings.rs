//! The host bindings of `wit/egress.wit`, generated once here and used by the rest of
//! [`crate::egress`]. Synchronous: a provider runs on a blocking thread of its own (see
//! [`super::upload`] for why).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "egress-provider",
});

/// The WIT package version these bindings were generated from.
pub const WORLD_VERSION: &str = "0.1.0";

/// The name of the interface a provider must export, at [`WORLD_VERSION`].
pub const PROVIDER_INTERFACE: &str = "diagmon:egress/provider@0.1.0";

/// The package a provider's exports come from, without a version.
pub const PACKAGE: &str = "diagmon:egress";
