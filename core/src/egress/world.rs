//! The WIT world diagmon hosts (`wit/diagmon-egress@0.1.0/egress.wit`, package `diagmon:egress`) and its import
//! policy: the host bindings, generated once here and used by the rest of [`crate::egress`];
//! the package version, written once here (a test checks it against `wit/`); which imports a
//! provider may have and what each needs from its configuration ([`ImportNeed`]); and the
//! artifact record as providers receive it.
//!
//! The bindings are synchronous (a provider runs on a thread of its own, see
//! [`super::upload`] for why) and generated for the widest world, `object-storage-provider`
//! (`egress-provider` plus the `object-store` import): both worlds export the same `provider`, so
//! one set of bindings instantiates either kind of provider. Which imports a provider gets is
//! the linker's business ([`super::linker`]): `object-store` only with an `object_store` grant.

use super::artifact::Artifact;
use super::error::EgressError;

wasmtime::component::bindgen!({
    path: "../wit/diagmon-egress@0.1.0",
    world: "object-storage-provider",
    with: {
        "diagmon:egress/object-store.multipart-upload": super::object_store::MultipartWrite,
    },
});

/// The package version, the one place it is written in Rust.
macro_rules! world_version {
    () => {
        "0.1.0"
    };
}

/// The instantiated provider; the same exports in both worlds.
pub(crate) type EgressProvider = ObjectStorageProvider;

/// The provider, linked and ready to instantiate.
pub(crate) type EgressProviderPre<T> = ObjectStorageProviderPre<T>;

/// The `diagmon:egress` package version these bindings were generated from.
pub const WORLD_VERSION: &str = world_version!();

/// The package a provider's exports come from, without a version.
pub(crate) const PACKAGE: &str = "diagmon:egress";

/// The name of the interface a provider must export, at [`WORLD_VERSION`].
pub(crate) const PROVIDER_INTERFACE: &str = concat!("diagmon:egress/provider@", world_version!());

/// The name of the object-store interface, without a version: only a provider with an
/// `object_store` grant may import it.
pub(crate) const OBJECT_STORE_INTERFACE: &str = "diagmon:egress/object-store";

/// What an import needs from diagmon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportNeed {
    /// Always provided (WASI basics, `diagmon:egress/log`).
    Provided,
    /// Provided only to a provider with `allowed_outbound_hosts`.
    HttpGrant,
    /// Provided only to a provider with an `object_store` grant.
    ObjectStoreGrant,
    /// Not provided by diagmon; the reason says why.
    Unsupported(String),
}

/// `(major, minor, patch)` of a version string, ignoring pre-release and build suffixes.
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Whether `version` is semver-compatible with the world version this diagmon speaks: the same
/// minor for 0.x, the same major from 1.0.
fn compatible(version: &str) -> bool {
    let (Some(ours), Some(theirs)) = (parse_version(WORLD_VERSION), parse_version(version)) else {
        return false;
    };
    if ours.0 == 0 {
        theirs.0 == 0 && theirs.1 == ours.1
    } else {
        theirs.0 == ours.0
    }
}

/// What diagmon provides for an import.
pub(crate) fn classify(name: &str) -> ImportNeed {
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    let Some((package, _interface)) = path.split_once('/') else {
        return ImportNeed::Unsupported(
            "a bare import; diagmon only provides interfaces".to_owned(),
        );
    };
    match package {
        PACKAGE => match version {
            Some(v) if compatible(v) && path == OBJECT_STORE_INTERFACE => {
                ImportNeed::ObjectStoreGrant
            }
            Some(v) if compatible(v) => ImportNeed::Provided,
            Some(v) => ImportNeed::Unsupported(format!(
                "built against {PACKAGE}@{v}; this diagmon speaks {PACKAGE}@{WORLD_VERSION}"
            )),
            None => ImportNeed::Unsupported("an unversioned import".to_owned()),
        },
        "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:filesystem"
        | "wasi:sockets" | "wasi:http" => match version {
            Some(v) if v.starts_with("0.2.") => {
                if package == "wasi:http" {
                    ImportNeed::HttpGrant
                } else {
                    ImportNeed::Provided
                }
            }
            Some(v) => ImportNeed::Unsupported(format!(
                "WASI {v} is not supported; build for the wasm32-wasip2 target (WASI 0.2)"
            )),
            None => ImportNeed::Unsupported("an unversioned import".to_owned()),
        },
        _ => ImportNeed::Unsupported("not an interface of WASI 0.2 or diagmon:egress".to_owned()),
    }
}

/// Fails unless `provider_export` (the component's `diagmon:egress/provider` export, if any) is
/// compatible with this diagmon's world; `exports` lists all its exports for the message.
pub(crate) fn require_world(
    provider: &str,
    origin: &str,
    provider_export: Option<&str>,
    exports: &[String],
) -> Result<(), EgressError> {
    match provider_export {
        Some(export) => {
            let version = export.rsplit_once('@').map(|(_, v)| v).unwrap_or("");
            if compatible(version) {
                Ok(())
            } else {
                Err(EgressError::load(
                    provider,
                    format!(
                        "{origin} targets {PACKAGE}@{version}, but this diagmon speaks \
                         {PACKAGE}@{WORLD_VERSION}; rebuild it against diagmon's wit/ folder"
                    ),
                ))
            }
        }
        None => Err(EgressError::load(
            provider,
            format!(
                "{origin} does not export `{PROVIDER_INTERFACE}`: it is not an egress provider \
                 (its exports: {})",
                if exports.is_empty() {
                    "none".to_owned()
                } else {
                    exports.join(", ")
                }
            ),
        )),
    }
}

impl Artifact {
    /// The WIT record.
    pub(crate) fn to_wit(&self) -> self::diagmon::egress::types::Artifact {
        use self::diagmon::egress::types;
        let since_epoch = self
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        types::Artifact {
            file_name: self.file_name.clone(),
            content_type: self.content_type.clone(),
            kind: self.kind.as_str().to_owned(),
            pid: self.pid,
            uid: self.uid.hyphenated().to_string(),
            process_name: self.process_name.clone(),
            operation_id: self.operation_id.hyphenated().to_string(),
            tags: self.tags.clone(),
            started_at: types::Timestamp {
                seconds: since_epoch.as_secs(),
                nanoseconds: since_epoch.subsec_nanos(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version written here is the one `wit/diagmon-egress@0.1.0/egress.wit` declares.
    #[test]
    fn the_world_version_is_the_wit_package_version() {
        let wit = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../wit/diagmon-egress@0.1.0/egress.wit"
        ))
        .unwrap();
        let declared: Vec<&str> = wit
            .lines()
            .filter_map(|line| line.trim().strip_prefix("package diagmon:egress@"))
            .map(|rest| rest.trim_end_matches(';'))
            .collect();
        assert_eq!(declared, [WORLD_VERSION]);
        assert_eq!(
            PROVIDER_INTERFACE,
            format!("{PACKAGE}/provider@{WORLD_VERSION}")
        );
    }

    #[test]
    fn imports_are_classified_by_package_and_version() {
        assert_eq!(
            classify("wasi:filesystem/types@0.2.6"),
            ImportNeed::Provided
        );
        assert_eq!(classify("wasi:http/types@0.2.9"), ImportNeed::HttpGrant);
        assert_eq!(
            classify(&format!("{OBJECT_STORE_INTERFACE}@{WORLD_VERSION}")),
            ImportNeed::ObjectStoreGrant
        );
        assert!(matches!(
            classify("diagmon:egress/log@0.2.0"),
            ImportNeed::Unsupported(_)
        ));
        assert!(matches!(
            classify("wasi:io/poll@0.3.0"),
            ImportNeed::Unsupported(_)
        ));
    }
}
