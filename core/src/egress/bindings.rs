//! The host bindings of `wit/egress.wit`, generated once here and used by the rest of
//! [`crate::egress`]. Synchronous: a provider runs on a blocking thread of its own (see
//! [`super::upload`] for why).
//!
//! They are generated for the widest world, `object-storage-provider` (`egress-provider` plus the
//! `object-store` import): both worlds export the same `provider`, so one set of bindings
//! instantiates either kind of provider. Which imports a provider gets is the linker's business
//! ([`super::host::linker`]): `object-store` only with an `object_store` grant.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "object-storage-provider",
    with: {
        "diagmon:egress/object-store.multipart-upload": super::object_store::MultipartWrite,
    },
});

/// The instantiated provider; the same exports in both worlds.
pub type EgressProvider = ObjectStorageProvider;

/// The provider, linked and ready to instantiate.
pub type EgressProviderPre<T> = ObjectStorageProviderPre<T>;

/// The WIT package version these bindings were generated from.
pub const WORLD_VERSION: &str = "0.1.0";

/// The name of the interface a provider must export, at [`WORLD_VERSION`].
pub const PROVIDER_INTERFACE: &str = "diagmon:egress/provider@0.1.0";

/// The package a provider's exports come from, without a version.
pub const PACKAGE: &str = "diagmon:egress";

/// The name of the object-store interface, without a version: only a provider with an
/// `object_store` grant may import it.
pub const OBJECT_STORE_INTERFACE: &str = "diagmon:egress/object-store";
