//! What a component exports and needs, checked against what diagmon provides: used when loading
//! providers and by `diagmon plugin check FILE.wasm`, which prints a [`ComponentReport`].

use std::fmt;
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use super::bindings::{OBJECT_STORE_INTERFACE, PACKAGE, PROVIDER_INTERFACE, WORLD_VERSION};
use super::engine::{self, engine};
use super::error::EgressError;
use super::host::{self, Grants};

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

/// One import of a component.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The import's name, `wasi:filesystem/types@0.2.6`.
    pub name: String,
    /// What it needs.
    pub need: ImportNeed,
}

/// A component's exports and imports, and what stands in the way of loading it. Its `Display`
/// is the multi-line report `diagmon plugin check` prints, each line ending with a newline.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    /// The component file (empty for a built-in).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, hex.
    pub sha256: String,
    /// The `diagmon:egress/provider` export it has, with its version, if any.
    pub provider_export: Option<String>,
    /// Every export name.
    pub exports: Vec<String>,
    /// Every import.
    pub imports: Vec<ImportReport>,
    /// Why it would not load as a provider; empty when it would (settings aside, which depend on
    /// the configuration).
    pub problems: Vec<String>,
}

impl ComponentReport {
    /// True when nothing stands in the way of loading the component.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn describe_need(name: &str, need: &ImportNeed) -> String {
    match need {
        ImportNeed::Provided if name.starts_with("wasi:filesystem/") => {
            "provided; sees only the directory granted by `directory`".to_owned()
        }
        ImportNeed::Provided if name.starts_with("wasi:sockets/") => {
            "provided; refuses every connection (sockets are never granted)".to_owned()
        }
        ImportNeed::Provided if name.starts_with("wasi:cli/environment") => {
            "provided; no environment variables, no arguments".to_owned()
        }
        ImportNeed::Provided => "provided".to_owned(),
        ImportNeed::HttpGrant => "needs `allowed_outbound_hosts` (outbound HTTP)".to_owned(),
        ImportNeed::ObjectStoreGrant => {
            "needs an `object_store` grant (a bucket prefix)".to_owned()
        }
        ImportNeed::Unsupported(why) => format!("NOT PROVIDED: {why}"),
    }
}

impl fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "component: {}", self.path.display())?;
        writeln!(f, "size:      {} bytes", self.size)?;
        writeln!(f, "sha256:    {}", self.sha256)?;
        match &self.provider_export {
            Some(export) => writeln!(f, "provider:  {export}")?,
            None => writeln!(f, "provider:  none (no `{PACKAGE}/provider` export)")?,
        }
        writeln!(f, "exports:")?;
        for export in &self.exports {
            writeln!(f, "  {export}")?;
        }
        writeln!(f, "imports:")?;
        let width = self.imports.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for import in &self.imports {
            writeln!(
                f,
                "  {:width$}  {}",
                import.name,
                describe_need(&import.name, &import.need)
            )?;
        }
        if self.is_ok() {
            writeln!(
                f,
                "result:    OK: loads as a diagmon:egress@{WORLD_VERSION} provider (its settings are checked when diagmon loads its configuration)"
            )
        } else {
            writeln!(f, "result:    NOT LOADABLE")?;
            for problem in &self.problems {
                writeln!(f, "  - {problem}")?;
            }
            Ok(())
        }
    }
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
fn classify(name: &str) -> ImportNeed {
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

/// Lists a compiled component's exports and imports, with what each import needs.
pub(crate) fn inspect(component: &Component) -> ComponentReport {
    let engine = engine();
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| ImportReport {
            name: name.to_owned(),
            need: classify(name),
        })
        .collect();
    let prefix = format!("{PACKAGE}/provider@");
    let provider_export = exports.iter().find(|e| e.starts_with(&prefix)).cloned();
    ComponentReport {
        path: PathBuf::new(),
        size: 0,
        sha256: String::new(),
        provider_export,
        exports,
        imports,
        problems: Vec::new(),
    }
}

/// Fails unless the component exports a provider compatible with this diagmon's world.
pub(crate) fn require_world(
    provider: &str,
    origin: &str,
    report: &ComponentReport,
) -> Result<(), EgressError> {
    match &report.provider_export {
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
                if report.exports.is_empty() {
                    "none".to_owned()
                } else {
                    report.exports.join(", ")
                }
            ),
        )),
    }
}

/// Checks a component file the way start-up checks a provider, settings aside: it is a
/// component, it compiles, it exports a compatible `diagmon:egress/provider`, and diagmon
/// provides its imports (given the grants they name). `Err` when the file cannot be read or is
/// not a compilable component; otherwise the report lists the problems, if any.
pub async fn check_component(path: impl AsRef<Path>) -> Result<ComponentReport, EgressError> {
    let path = path.as_ref();
    // Errors read "egress provider `FILE` cannot be loaded: the file ...".
    let name = path.display().to_string();
    let origin = "the file";
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| EgressError::load(&name, format!("cannot read it: {e}")))?;
    host::check_header(&name, origin, &bytes)?;
    let size = bytes.len() as u64;
    let sha256 = engine::sha256_hex(&bytes);
    let component = host::compile(&name, origin, bytes, None).await?;
    let mut report = inspect(&component);
    report.path = path.to_owned();
    report.size = size;
    report.sha256 = sha256;
    if let Err(error) = require_world(&name, origin, &report) {
        report.problems.push(cause(error));
    }
    for import in &report.imports {
        if let ImportNeed::Unsupported(why) = &import.need {
            report.problems.push(format!(
                "imports `{}`, which diagmon does not provide: {why}",
                import.name
            ));
        }
    }
    if report.problems.is_empty() {
        let grants = Grants {
            http: report
                .imports
                .iter()
                .any(|i| i.need == ImportNeed::HttpGrant),
            object_store: report
                .imports
                .iter()
                .any(|i| i.need == ImportNeed::ObjectStoreGrant),
        };
        if let Err(error) = host::link(&name, origin, &component, grants) {
            report.problems.push(cause(error));
        }
    }
    Ok(report)
}

fn cause(error: EgressError) -> String {
    match error {
        EgressError::Load { cause, .. } => cause,
        other => other.to_string(),
    }
}
