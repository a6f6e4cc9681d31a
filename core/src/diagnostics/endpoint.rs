//! Where a runtime is reached, and how its sockets are found in connect mode.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::net::UnixStream;
use uuid::Uuid;

use super::DiagnosticsError;
use super::reverse::ReversePort;
use crate::procfs;

/// How to open a fresh connection to one runtime. The runtime serves one command per connection,
/// so every command opens its own.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The runtime's own listening socket, `dotnet-diagnostic-{pid}-{key}-socket` (connect mode).
    Socket(PathBuf),
    /// A runtime that connected to diagmon's diagnostic port (listen mode), by its cookie.
    Reverse {
        /// The port the runtime connects to.
        port: ReversePort,
        /// The runtime instance cookie it advertised.
        cookie: Uuid,
    },
}

impl Endpoint {
    /// Opens a connection for one command, waiting at most `timeout`.
    pub async fn open(&self, timeout: Duration) -> Result<UnixStream, DiagnosticsError> {
        match self {
            Endpoint::Socket(path) => {
                match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
                    Ok(Ok(stream)) => Ok(stream),
                    Ok(Err(source)) => Err(DiagnosticsError::Connect {
                        path: path.clone(),
                        source,
                    }),
                    Err(_) => Err(DiagnosticsError::Timeout {
                        what: "accept the connection",
                        after: timeout,
                    }),
                }
            }
            Endpoint::Reverse { port, cookie } => port.take_connection(*cookie, timeout).await,
        }
    }
}

/// A runtime socket found in the socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSocket {
    /// The process id from the socket name.
    pub pid: u32,
    /// The disambiguation key from the name (the process start time on Linux).
    pub key: u64,
    /// The socket's path.
    pub path: PathBuf,
}

/// The directory runtimes create their sockets in: `$TMPDIR`, or `/tmp` when unset or empty.
pub fn default_socket_dir() -> PathBuf {
    match std::env::var_os("TMPDIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/tmp"),
    }
}

/// Parses `dotnet-diagnostic-{pid}-{key}-socket`.
fn parse_socket_name(name: &str) -> Option<(u32, u64)> {
    let middle = name
        .strip_prefix("dotnet-diagnostic-")?
        .strip_suffix("-socket")?;
    let (pid, key) = middle.split_once('-')?;
    let all_digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(key) {
        return None;
    }
    Some((pid.parse().ok()?, key.parse().ok()?))
}

/// Lists the sockets of live runtimes in `dir`: one per pid, skipping dead pids; when a pid has
/// several (a stale file from an earlier process with a reused pid), the one whose key is the
/// process's start time wins, then the newest. Sockets whose listener is gone are found out when
/// connecting.
pub fn discover(dir: &Path) -> std::io::Result<Vec<RuntimeSocket>> {
    let mut best: std::collections::BTreeMap<u32, (bool, SystemTime, RuntimeSocket)> =
        Default::default();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Some((pid, key)) = entry.file_name().to_str().and_then(parse_socket_name) else {
            continue;
        };
        let Some(stat) = procfs::stat(pid).filter(|_| procfs::is_alive(pid)) else {
            continue;
        };
        let modified = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let rank = (stat.start_time == key, modified);
        let candidate = RuntimeSocket {
            pid,
            key,
            path: entry.path(),
        };
        match best.get(&pid) {
            Some((matches, time, _)) if (*matches, *time) >= rank => {}
            _ => {
                best.insert(pid, (rank.0, rank.1, candidate));
            }
        }
    }
    Ok(best.into_values().map(|(_, _, socket)| socket).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_are_parsed_strictly() {
        assert_eq!(
            parse_socket_name("dotnet-diagnostic-31339-109949-socket"),
            Some((31339, 109949))
        );
        for bad in [
            "dotnet-diagnostic-31339-socket",
            "dotnet-diagnostic--1-socket",
            "dotnet-diagnostic-x-1-socket",
            "dotnet-diagnostic-1-2-socket.bak",
            "dotnet-diagnostic-99999999999-1-socket",
            "clr-debug-pipe-1-2-in",
        ] {
            assert_eq!(parse_socket_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn dead_pids_are_skipped_and_the_matching_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = procfs::stat(me).unwrap().start_time;
        let touch = |name: String| std::fs::write(dir.path().join(name), b"").unwrap();
        touch(format!("dotnet-diagnostic-{me}-{start}-socket"));
        touch(format!("dotnet-diagnostic-{me}-{}-socket", start + 1));
        touch(format!("dotnet-diagnostic-{}-1-socket", u32::MAX - 1));
        touch("unrelated".to_owned());
        let found = discover(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].pid, found[0].key), (me, start));
    }
}
