//! Linking a provider: the linker holds exactly what its grants allow (WASI with sockets that
//! refuse everything, `diagmon:egress/log`, and `wasi:http` or `diagmon:egress/object-store` only
//! when granted), with diagmon's own versions of the WASI functions it serves itself
//! ([`super::filesystem`], [`super::host_waits`]); a component whose imports the grants do not
//! cover fails here, naming the grant it needs.

use wasmtime::component::{Component, HasSelf, Linker};

use super::engine::engine;
use super::error::EgressError;
use super::filesystem;
use super::host_waits;
use super::object_store::ObjectStoreAccess;
use super::store_state::StoreState;
use super::world::diagmon::egress::{log, object_store as wit_object_store};
use super::world::{self, EgressProviderPre, ImportNeed};

/// What the configuration grants a provider, as far as linking is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Grants {
    /// `allowed_outbound_hosts` is not empty.
    pub(crate) http: bool,
    /// `object_store` is set.
    pub(crate) object_store: bool,
}

/// A linker with WASI (filesystem, clocks, random, cli, io; sockets that refuse everything), the
/// `diagmon:egress` imports, and `wasi:http` and `diagmon:egress/object-store` when granted.
pub(crate) fn linker(grants: Grants) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    if grants.http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    }
    // `descriptor.write` without copying the buffer out of the guest first; no symbolic links.
    filesystem::add_to_linker(&mut linker)?;
    // Waits in host calls end at the provider call's deadline.
    host_waits::add_to_linker(&mut linker)?;
    log::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| state)?;
    if grants.object_store {
        wit_object_store::add_to_linker::<StoreState, ObjectStoreAccess>(&mut linker, |state| {
            state.object_store_view()
        })?;
    }
    Ok(linker)
}

/// Checks a compiled component against the world and the grants and links it.
pub(crate) fn link(
    provider: &str,
    origin: &str,
    component: &Component,
    grants: Grants,
) -> Result<EgressProviderPre<StoreState>, EgressError> {
    let engine = engine();
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let prefix = format!("{}/provider@", world::PACKAGE);
    let provider_export = exports.iter().find(|e| e.starts_with(&prefix));
    world::require_world(
        provider,
        origin,
        provider_export.map(String::as_str),
        &exports,
    )?;
    for (name, _) in ty.imports(engine) {
        match world::classify(name) {
            ImportNeed::Provided => {}
            ImportNeed::HttpGrant if grants.http => {}
            ImportNeed::ObjectStoreGrant if grants.object_store => {}
            ImportNeed::ObjectStoreGrant => {
                return Err(EgressError::load(
                    provider,
                    format!(
                        "{origin} imports `{}`, which needs an object-store grant: set \
                         `object_store = {{ url = \"s3://bucket/prefix\", ... }}` in its table",
                        name
                    ),
                ));
            }
            ImportNeed::HttpGrant => {
                return Err(EgressError::load(
                    provider,
                    format!(
                        "{origin} imports `{}`, which needs an HTTP grant: list the origins it may \
                         reach in `allowed_outbound_hosts`",
                        name
                    ),
                ));
            }
            ImportNeed::Unsupported(why) => {
                return Err(EgressError::load(
                    provider,
                    format!(
                        "{origin} imports `{}`, which diagmon does not provide: {why}",
                        name
                    ),
                ));
            }
        }
    }
    let linker = linker(grants)
        .map_err(|e| EgressError::host(provider, format!("cannot build the linker: {e:#}")))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| EgressError::load(provider, format!("{origin} cannot be linked: {e:#}")))?;
    EgressProviderPre::new(pre).map_err(|e| {
        EgressError::load(
            provider,
            format!(
                "{origin} does not match the diagmon:egress@{} world: {e:#}",
                world::WORLD_VERSION
            ),
        )
    })
}
