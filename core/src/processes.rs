//! The .NET processes diagmon can see, and what identifies each one.
//!
//! In connect mode, runtimes are found by their sockets in the socket directory; in listen mode,
//! by the connections they open to diagmon's diagnostic port. Each is asked who it is
//! (ProcessInfo3, 2, 1); a runtime that cannot answer (.NET Core 3.1) is described from `/proc`
//! and given a stable uid derived from its pid and start time.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{DefaultProcessConfig, MatchType, ProcessFilter, ProcessFilterKey};
use crate::diagnostics::endpoint::{self, Endpoint};
use crate::diagnostics::reverse::ReversePort;
use crate::diagnostics::{DiagnosticsClient, DiagnosticsError, Timeouts};
use crate::procfs;

/// A runtime diagmon can talk to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRecord {
    /// The process id.
    pub pid: u64,
    /// The runtime instance cookie, or for runtimes without Process commands a uid derived from
    /// the boot, pid and start time of the process.
    pub uid: Uuid,
    /// The executable's file name, taken from the command line (`dotnet` for framework-dependent
    /// apps).
    pub name: String,
    /// The command line.
    pub command_line: String,
    /// The operating system, where known.
    pub operating_system: Option<String>,
    /// The process architecture, where known.
    pub process_architecture: Option<String>,
    /// The managed entry-point assembly name, where known.
    pub managed_entry_point_assembly_name: Option<String>,
    /// The CLR product version, where the runtime says.
    pub clr_product_version: Option<String>,
    /// False for runtimes without the Process command set (.NET Core 3.1): no environment, no
    /// resume.
    pub supports_process_commands: bool,
    /// How to reach it.
    #[serde(skip)]
    pub endpoint: Endpoint,
}

/// Where runtimes are found.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Runtimes' own sockets in this directory (the runtimes' TMPDIR).
    Connect {
        /// The directory to scan.
        socket_dir: PathBuf,
    },
    /// Runtimes connecting to diagmon's port.
    Listen(ReversePort),
}

/// Lists runtimes and opens clients to them.
#[derive(Debug, Clone)]
pub struct ProcessDirectory {
    discovery: Discovery,
    timeouts: Timeouts,
}

impl ProcessDirectory {
    /// A directory over `discovery`, talking to runtimes with `timeouts`.
    pub fn new(discovery: Discovery, timeouts: Timeouts) -> Self {
        ProcessDirectory {
            discovery,
            timeouts,
        }
    }

    /// How runtimes are found.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// A client for a listed process.
    pub fn client(&self, process: &ProcessRecord) -> DiagnosticsClient {
        DiagnosticsClient::new(process.endpoint.clone(), self.timeouts)
    }

    /// Every runtime that answers now, ordered by pid. Runtimes that do not answer in time, stale
    /// socket files and peers that break the protocol are left out (and logged).
    pub async fn list(&self) -> Vec<ProcessRecord> {
        let endpoints: Vec<(Option<u32>, Endpoint)> = match &self.discovery {
            Discovery::Connect { socket_dir } => {
                let dir = socket_dir.clone();
                match tokio::task::spawn_blocking(move || endpoint::discover(&dir)).await {
                    Ok(Ok(sockets)) => sockets
                        .into_iter()
                        .map(|socket| (Some(socket.pid), Endpoint::Socket(socket.path)))
                        .collect(),
                    Ok(Err(error)) => {
                        tracing::warn!(dir = %socket_dir.display(), %error, "cannot list the socket directory");
                        Vec::new()
                    }
                    Err(error) => {
                        tracing::error!(%error, "the socket directory scan failed");
                        Vec::new()
                    }
                }
            }
            Discovery::Listen(port) => port
                .runtimes()
                .into_iter()
                .map(|runtime| {
                    let endpoint = Endpoint::Reverse {
                        port: port.clone(),
                        cookie: runtime.cookie,
                    };
                    (u32::try_from(runtime.pid).ok(), endpoint)
                })
                .collect(),
        };
        let lookups = endpoints
            .into_iter()
            .map(|(pid, endpoint)| self.describe(pid, endpoint));
        let mut processes: Vec<ProcessRecord> = futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect();
        processes.sort_by_key(|process| process.pid);
        processes
    }

    /// Asks one runtime who it is; falls back to `/proc` when it has no Process commands.
    async fn describe(&self, pid: Option<u32>, endpoint: Endpoint) -> Option<ProcessRecord> {
        let client = DiagnosticsClient::new(endpoint.clone(), self.timeouts);
        match client.process_info().await {
            Ok(info) => Some(ProcessRecord {
                pid: info.pid,
                uid: info.cookie,
                name: executable_name(&info.command_line),
                command_line: info.command_line,
                operating_system: Some(info.operating_system),
                process_architecture: Some(info.process_architecture),
                managed_entry_point_assembly_name: info.managed_entry_point_assembly_name,
                clr_product_version: info.clr_product_version,
                supports_process_commands: true,
                endpoint,
            }),
            Err(error) if error.is_unknown_command() => {
                let pid = pid?;
                tokio::task::spawn_blocking(move || describe_from_proc(pid, endpoint))
                    .await
                    .ok()
                    .flatten()
            }
            Err(error) => {
                log_unreachable(&endpoint, &error);
                None
            }
        }
    }
}

/// Which process a request addresses: every given field must match (`name` case-insensitively).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSelector {
    /// The process id.
    pub pid: Option<u64>,
    /// The runtime instance uid.
    pub uid: Option<Uuid>,
    /// The process name.
    pub name: Option<String>,
}

impl ProcessSelector {
    /// True when no field is given: the request addresses the default process.
    pub fn is_empty(&self) -> bool {
        self.pid.is_none() && self.uid.is_none() && self.name.is_none()
    }

    /// True when `process` matches every given field.
    pub fn matches(&self, process: &ProcessRecord) -> bool {
        self.matches_identity(process.pid, process.uid, &process.name)
    }

    /// True when a process of this pid, uid and name matches every given field.
    pub fn matches_identity(&self, pid: u64, uid: Uuid, name: &str) -> bool {
        self.pid.is_none_or(|wanted| pid == wanted)
            && self.uid.is_none_or(|wanted| uid == wanted)
            && self
                .name
                .as_ref()
                .is_none_or(|wanted| name.eq_ignore_ascii_case(wanted))
    }
}

/// Why no single process could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing matched.
    #[error("Unable to discover a target process: {0}")]
    NotFound(String),
    /// Several matched; the candidates as (pid, name).
    #[error(
        "Unable to select a single target process because {} processes match: {}. Select one with `pid` or `uid`.",
        .0.len(),
        describe(.0)
    )]
    Ambiguous(Vec<(u64, String)>),
}

fn describe(candidates: &[(u64, String)]) -> String {
    candidates
        .iter()
        .map(|(pid, name)| format!("pid {pid} ({name})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses the one process `selector` addresses among `processes`; with an empty selector, the
/// one the default-process filters match, or without filters the single observable process.
pub fn resolve<'a>(
    processes: &'a [ProcessRecord],
    selector: &ProcessSelector,
    defaults: &DefaultProcessConfig,
) -> Result<&'a ProcessRecord, ResolveError> {
    let use_defaults = selector.is_empty();
    let matching: Vec<&ProcessRecord> = processes
        .iter()
        .filter(|process| {
            if use_defaults {
                defaults
                    .filters
                    .iter()
                    .all(|filter| filter_matches(filter, process))
            } else {
                selector.matches(process)
            }
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(ResolveError::NotFound(if !use_defaults {
            "no .NET process matches the given pid, uid and name".to_owned()
        } else if defaults.filters.is_empty() {
            "no .NET process is observable".to_owned()
        } else {
            "no process matches the configured default_process filters".to_owned()
        })),
        several => Err(ResolveError::Ambiguous(
            several
                .iter()
                .map(|process| (process.pid, process.name.clone()))
                .collect(),
        )),
    }
}

/// Whether `process` passes one default-process-shaped filter.
pub fn filter_matches(filter: &ProcessFilter, process: &ProcessRecord) -> bool {
    let actual = match filter.key {
        ProcessFilterKey::ProcessId => return filter.value.parse() == Ok(process.pid),
        ProcessFilterKey::ProcessName => process.name.as_str(),
        ProcessFilterKey::CommandLine => process.command_line.as_str(),
        ProcessFilterKey::ManagedEntryPointAssemblyName => process
            .managed_entry_point_assembly_name
            .as_deref()
            .unwrap_or_default(),
    };
    match filter.match_type {
        MatchType::Exact => actual.eq_ignore_ascii_case(&filter.value),
        MatchType::Contains => actual.to_lowercase().contains(&filter.value.to_lowercase()),
    }
}

fn log_unreachable(endpoint: &Endpoint, error: &DiagnosticsError) {
    match endpoint {
        Endpoint::Socket(path) if matches!(error, DiagnosticsError::ImpostorPeer { .. }) => {
            tracing::warn!(socket = %path.display(), %error, "ignoring an untrusted runtime socket")
        }
        Endpoint::Socket(path) => {
            tracing::debug!(socket = %path.display(), %error, "skipping a runtime socket")
        }
        Endpoint::Reverse { cookie, .. } => {
            tracing::debug!(%cookie, %error, "skipping a connected runtime")
        }
    }
}

/// Describes a runtime without Process commands from what `/proc` says about its pid (blocking
/// file reads: called on the blocking pool).
fn describe_from_proc(pid: u32, endpoint: Endpoint) -> Option<ProcessRecord> {
    let stat = procfs::stat(pid)?;
    let command_line = procfs::command_line(pid)?;
    Some(ProcessRecord {
        pid: u64::from(pid),
        uid: instance_uid(pid, stat.start_time),
        name: executable_name(&command_line),
        managed_entry_point_assembly_name: entry_assembly_from_command_line(&command_line),
        command_line,
        operating_system: Some(std::env::consts::OS.to_owned()).map(|os| capitalize(&os)),
        process_architecture: procfs::architecture(pid),
        clr_product_version: None,
        supports_process_commands: false,
        endpoint,
    })
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A uid for a runtime instance that has no cookie to give: derived from the boot id, pid and
/// start time, so it is stable across listings and differs between two instances (even with a
/// reused pid).
pub fn instance_uid(pid: u32, start_time: u64) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"diagmon runtime instance\0")
        .chain_update(procfs::boot_id().as_bytes())
        .chain_update(pid.to_le_bytes())
        .chain_update(start_time.to_le_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// The first token of a command line (honouring double quotes), as a file name.
pub fn executable_name(command_line: &str) -> String {
    let first = first_token(command_line);
    first.rsplit('/').next().unwrap_or(first).to_owned()
}

fn first_token(command_line: &str) -> &str {
    let trimmed = command_line.trim_start();
    match trimmed.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or(quoted),
        None => trimmed.split_whitespace().next().unwrap_or(""),
    }
}

/// For `dotnet path/App.dll ...`, the assembly name `App`.
fn entry_assembly_from_command_line(command_line: &str) -> Option<String> {
    let mut tokens = command_line.split_whitespace();
    let host = tokens.next()?;
    if host.rsplit('/').next()? != "dotnet" {
        return None;
    }
    let assembly = tokens.next()?;
    let file = assembly.rsplit('/').next()?;
    file.strip_suffix(".dll").map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_executables_file_name() {
        assert_eq!(
            executable_name("/usr/bin/dotnet /app/Worker.dll 5"),
            "dotnet"
        );
        assert_eq!(executable_name("\"/opt/my app/App\" --x"), "App");
        assert_eq!(executable_name("  ./MyApp"), "MyApp");
        assert_eq!(executable_name(""), "");
    }

    #[test]
    fn the_entry_assembly_of_a_dotnet_host_command_line() {
        assert_eq!(
            entry_assembly_from_command_line("/x/dotnet /y/Worker.dll 3").as_deref(),
            Some("Worker")
        );
        assert_eq!(entry_assembly_from_command_line("/x/App arg"), None);
    }

    fn record(pid: u64, name: &str, command_line: &str) -> ProcessRecord {
        ProcessRecord {
            pid,
            uid: Uuid::from_u128(u128::from(pid)),
            name: name.to_owned(),
            command_line: command_line.to_owned(),
            operating_system: None,
            process_architecture: None,
            managed_entry_point_assembly_name: None,
            clr_product_version: None,
            supports_process_commands: false,
            endpoint: Endpoint::Socket(PathBuf::new()),
        }
    }

    #[test]
    fn selection_ands_the_fields_and_names_the_candidates() {
        let processes = [
            record(1, "dotnet", "dotnet a.dll"),
            record(2, "dotnet", "dotnet b.dll"),
        ];
        let none = DefaultProcessConfig::default();
        let by_name = ProcessSelector {
            name: Some("DOTNET".into()),
            ..Default::default()
        };
        let error = resolve(&processes, &by_name, &none).unwrap_err();
        assert!(
            error.to_string().contains("pid 1 (dotnet), pid 2 (dotnet)"),
            "{error}"
        );
        let both = ProcessSelector {
            pid: Some(2),
            ..by_name
        };
        assert_eq!(resolve(&processes, &both, &none).unwrap().pid, 2);
        let wrong = ProcessSelector {
            pid: Some(2),
            uid: Some(Uuid::from_u128(1)),
            name: None,
        };
        assert!(matches!(
            resolve(&processes, &wrong, &none),
            Err(ResolveError::NotFound(_))
        ));
    }

    #[test]
    fn the_default_process_comes_from_filters_or_is_the_only_one() {
        let processes = [
            record(1, "dotnet", "dotnet a.dll"),
            record(2, "dotnet", "dotnet b.dll"),
        ];
        let filters = DefaultProcessConfig {
            filters: vec![ProcessFilter {
                key: ProcessFilterKey::CommandLine,
                value: "B.DLL".into(),
                match_type: MatchType::Contains,
            }],
        };
        let empty = ProcessSelector::default();
        assert_eq!(resolve(&processes, &empty, &filters).unwrap().pid, 2);
        let none = DefaultProcessConfig::default();
        assert!(matches!(
            resolve(&processes, &empty, &none),
            Err(ResolveError::Ambiguous(_))
        ));
        assert_eq!(resolve(&processes[..1], &empty, &none).unwrap().pid, 1);
    }

    #[test]
    fn instance_uids_are_stable_and_distinct() {
        assert_eq!(instance_uid(10, 500), instance_uid(10, 500));
        assert_ne!(instance_uid(10, 500), instance_uid(10, 501));
        assert_ne!(instance_uid(10, 500), instance_uid(11, 500));
        assert_eq!(instance_uid(10, 500).get_version_num(), 8);
    }
}
