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
            Discovery::Connect { socket_dir } => match endpoint::discover(socket_dir) {
                Ok(sockets) => sockets
                    .into_iter()
                    .map(|socket| (Some(socket.pid), Endpoint::Socket(socket.path)))
                    .collect(),
                Err(error) => {
                    tracing::warn!(dir = %socket_dir.display(), %error, "cannot list the socket directory");
                    Vec::new()
                }
            },
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
                pid.and_then(|pid| describe_from_proc(pid, endpoint))
            }
            Err(error) => {
                log_unreachable(&endpoint, &error);
                None
            }
        }
    }
}

fn log_unreachable(endpoint: &Endpoint, error: &DiagnosticsError) {
    match endpoint {
        Endpoint::Socket(path) => {
            tracing::debug!(socket = %path.display(), %error, "skipping a runtime socket")
        }
        Endpoint::Reverse { cookie, .. } => {
            tracing::debug!(%cookie, %error, "skipping a connected runtime")
        }
    }
}

/// Describes a runtime without Process commands from what `/proc` says about its pid.
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

    #[test]
    fn instance_uids_are_stable_and_distinct() {
        assert_eq!(instance_uid(10, 500), instance_uid(10, 500));
        assert_ne!(instance_uid(10, 500), instance_uid(10, 501));
        assert_ne!(instance_uid(10, 500), instance_uid(11, 500));
        assert_eq!(instance_uid(10, 500).get_version_num(), 8);
    }
}
