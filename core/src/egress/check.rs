//! What a component exports and needs, checked against what diagmon provides: used when loading
//! providers and by `diagmon plugin check FILE.wasm`, which prints a [`ComponentReport`].

use std::fmt;
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use super::component;
use super::engine::{self, engine};
use super::error::EgressError;
use super::linker::{self, Grants};
use super::world::{self, ImportNeed, PACKAGE, WORLD_VERSION};

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
            need: world::classify(name),
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

/// Checks a component file the way start-up checks a provider, settings aside: it is a
/// component, it compiles, it exports a compatible `diagmon:egress/provider`, and diagmon
/// provides its imports (given the grants they name). `Err` when the file cannot be read or is
/// not a compilable component; otherwise the report lists the problems, if any.
pub async fn check_component(path: impl AsRef<Path>) -> Result<ComponentReport, EgressError> {
    check_component_cached(path.as_ref(), None).await
}

/// [`check_component`], keeping the compiled component in the compile cache `cache` (or taking it
/// from there), so that loading it next costs no second compilation.
pub(crate) async fn check_component_cached(
    path: &Path,
    cache: Option<&Path>,
) -> Result<ComponentReport, EgressError> {
    // Errors read "egress provider `FILE` cannot be loaded: the file ...".
    let name = path.display().to_string();
    let origin = "the file";
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| EgressError::load(&name, format!("cannot read it: {e}")))?;
    component::check_header(&name, origin, &bytes)?;
    let size = bytes.len() as u64;
    let sha256 = engine::sha256_hex(&bytes);
    let (component, _) = component::compile(&name, origin, bytes, cache).await?;
    let mut report = inspect(&component);
    report.path = path.to_owned();
    report.size = size;
    report.sha256 = sha256;
    if let Err(error) = world::require_world(
        &name,
        origin,
        report.provider_export.as_deref(),
        &report.exports,
    ) {
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
        if let Err(error) = linker::link(&name, origin, &component, grants) {
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
