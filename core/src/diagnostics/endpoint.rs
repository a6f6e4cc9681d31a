//! Where a runtime is reached, and how its sockets are found in connect mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Opens a connection for one command, waiting at most `timeout`. A runtime socket found by
    /// name must be served by the process the name gives ([`DiagnosticsError::ImpostorPeer`]).
    pub async fn open(&self, timeout: Duration) -> Result<UnixStream, DiagnosticsError> {
        match self {
            Endpoint::Socket(path) => {
                match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
                    Ok(Ok(stream)) => {
                        check_peer(&stream, path)?;
                        Ok(stream)
                    }
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

/// Parses `dotnet-diagnostic-{pid}-{key}-socket` exactly as the runtime writes it: decimal
/// numbers without leading zeros, so that one process has exactly one socket name
/// (`-0{key}` would otherwise read as the same key).
pub fn parse_socket_name(name: &str) -> Option<(u32, u64)> {
    let middle = name
        .strip_prefix("dotnet-diagnostic-")?
        .strip_suffix("-socket")?;
    let (pid_text, key_text) = middle.split_once('-')?;
    let all_digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid_text) || !all_digits(key_text) {
        return None;
    }
    let (pid, key): (u32, u64) = (pid_text.parse().ok()?, key_text.parse().ok()?);
    (pid.to_string() == pid_text && key.to_string() == key_text).then_some((pid, key))
}

/// Why a file named like a runtime socket is not taken for one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// The name has the shape of a runtime socket but not the runtime's spelling (leading zeros,
    /// or numbers out of range).
    #[error("the name is not spelled the way a runtime writes it (leading zeros or out of range)")]
    NonCanonicalName,
    /// No live process has the pid of the name.
    #[error("no live process has pid {0}")]
    DeadProcess(u32),
    /// The key is not the process's start time: a stale file from an earlier process with a
    /// reused pid, or a forgery.
    #[error("the key {key} is not the start time {start_time} of process {pid}")]
    WrongStartTime {
        /// The pid of the name.
        pid: u32,
        /// The key of the name.
        key: u64,
        /// The process's start time in `/proc/{pid}/stat`.
        start_time: u64,
    },
    /// The file is not a socket (a symlink, a regular file, ...); symlinks are never followed.
    #[error("it is not a socket (symlinks are not followed)")]
    NotASocket,
    /// The socket belongs to another user than the process.
    #[error("it is owned by uid {socket_owner}, the process by uid {process_owner}")]
    WrongOwner {
        /// The socket file's owner.
        socket_owner: u32,
        /// The owner of `/proc/{pid}`.
        process_owner: u32,
    },
    /// The file or the process could not be examined.
    #[error("it cannot be examined: {0}")]
    Unreadable(String),
}

impl Untrusted {
    /// True for what a live system leaves behind by itself (a socket of a process that exited,
    /// or of an earlier process with a reused pid); false for what looks like a forgery.
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            Untrusted::DeadProcess(_) | Untrusted::WrongStartTime { .. }
        )
    }
}

/// Checks one directory entry named like a runtime socket: the process lives, the name's key is
/// its start time, the file is a socket itself (not a symlink to one) and belongs to the
/// process's owner. Who serves the socket is checked on every connection ([`Endpoint::open`]).
pub fn check_socket(path: &Path, pid: u32, key: u64) -> Result<RuntimeSocket, Untrusted> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let stat = procfs::stat(pid)
        .filter(|_| procfs::is_alive(pid))
        .ok_or(Untrusted::DeadProcess(pid))?;
    if stat.start_time != key {
        return Err(Untrusted::WrongStartTime {
            pid,
            key,
            start_time: stat.start_time,
        });
    }
    let metadata = std::fs::symlink_metadata(path)
        .map_err(|error| Untrusted::Unreadable(error.to_string()))?;
    if !metadata.file_type().is_socket() {
        return Err(Untrusted::NotASocket);
    }
    let process_owner = procfs::owner_uid(pid).ok_or(Untrusted::DeadProcess(pid))?;
    if metadata.uid() != process_owner {
        return Err(Untrusted::WrongOwner {
            socket_owner: metadata.uid(),
            process_owner,
        });
    }
    Ok(RuntimeSocket {
        pid,
        key,
        path: path.to_owned(),
    })
}

/// Lists the sockets of live runtimes in `dir` that pass [`check_socket`]; at most one per pid,
/// since only one name can carry the process's start time. Stale files are skipped quietly,
/// forgeries with a warning. This reads the file system: call it off the async workers
/// ([`tokio::task::spawn_blocking`]).
pub fn discover(dir: &Path) -> std::io::Result<Vec<RuntimeSocket>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !looks_like_socket_name(name) {
            continue;
        }
        let path = entry.path();
        let checked = parse_socket_name(name)
            .ok_or(Untrusted::NonCanonicalName)
            .and_then(|(pid, key)| check_socket(&path, pid, key));
        match checked {
            Ok(socket) => found.push(socket),
            Err(reason) if reason.is_stale() => {
                tracing::debug!(socket = %path.display(), %reason, "skipping a stale runtime socket");
            }
            Err(reason) => {
                tracing::warn!(socket = %path.display(), %reason, "ignoring an untrusted runtime socket");
            }
        }
    }
    found.sort_by_key(|socket| socket.pid);
    Ok(found)
}

/// True for `dotnet-diagnostic-{digits}-{digits}-socket`, however the digits are spelled.
fn looks_like_socket_name(name: &str) -> bool {
    name.strip_prefix("dotnet-diagnostic-")
        .and_then(|rest| rest.strip_suffix("-socket"))
        .and_then(|middle| middle.split_once('-'))
        .is_some_and(|(pid, key)| {
            [pid, key]
                .iter()
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Checks that the peer of a connection to a runtime socket is the process its name claims
/// (`SO_PEERCRED`): a socket in a shared directory may be served by anyone.
fn check_peer(stream: &UnixStream, path: &Path) -> Result<(), DiagnosticsError> {
    let Some((claimed, _)) = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(parse_socket_name)
    else {
        // Not named like a runtime socket: a path given directly, not found in a shared directory.
        return Ok(());
    };
    let peer = stream
        .peer_cred()
        .map_err(|source| DiagnosticsError::Io {
            what: "reading the peer's credentials",
            source,
        })?
        .pid();
    if peer.and_then(|pid| u32::try_from(pid).ok()) == Some(claimed) {
        Ok(())
    } else {
        Err(DiagnosticsError::ImpostorPeer {
            path: path.to_owned(),
            claimed,
            peer,
        })
    }
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
            "dotnet-diagnostic-31339-0109949-socket",
            "dotnet-diagnostic-031339-109949-socket",
            "clr-debug-pipe-1-2-in",
        ] {
            assert_eq!(parse_socket_name(bad), None, "{bad}");
        }
        assert!(looks_like_socket_name(
            "dotnet-diagnostic-31339-0109949-socket"
        ));
        assert!(!looks_like_socket_name("clr-debug-pipe-1-2-in"));
    }

    #[test]
    fn only_the_live_processs_own_socket_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = procfs::stat(me).unwrap().start_time;
        let bind =
            |name: String| std::os::unix::net::UnixListener::bind(dir.path().join(name)).unwrap();
        let _real = bind(format!("dotnet-diagnostic-{me}-{start}-socket"));
        let _stale = bind(format!("dotnet-diagnostic-{me}-{}-socket", start + 1));
        let _leading_zero = bind(format!("dotnet-diagnostic-{me}-0{start}-socket"));
        let _dead = bind(format!("dotnet-diagnostic-{}-1-socket", u32::MAX - 1));
        std::fs::write(dir.path().join("unrelated"), b"").unwrap();
        let found = discover(dir.path()).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].pid, found[0].key), (me, start));
    }

    #[test]
    fn files_and_symlinks_are_not_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = procfs::stat(me).unwrap().start_time;
        let name = format!("dotnet-diagnostic-{me}-{start}-socket");
        let file = dir.path().join(&name);
        std::fs::write(&file, b"").unwrap();
        assert_eq!(
            check_socket(&file, me, start).unwrap_err(),
            Untrusted::NotASocket
        );
        std::fs::remove_file(&file).unwrap();
        let real = dir.path().join("real");
        let _listener = std::os::unix::net::UnixListener::bind(&real).unwrap();
        std::os::unix::fs::symlink(&real, &file).unwrap();
        assert_eq!(
            check_socket(&file, me, start).unwrap_err(),
            Untrusted::NotASocket
        );
        assert!(discover(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_socket_of_another_user_than_the_process_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = procfs::stat(me).unwrap().start_time;
        let path = dir
            .path()
            .join(format!("dotnet-diagnostic-{me}-{start}-socket"));
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let owner = procfs::owner_uid(me).unwrap();
        let other = if owner == 65534 { 65533 } else { 65534 };
        if let Err(error) = std::os::unix::fs::lchown(&path, Some(other), None) {
            // Giving a file away takes root (as in CI); elsewhere there is nothing to check.
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{error}"
            );
            return;
        }
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), other);
        assert_eq!(
            check_socket(&path, me, start).unwrap_err(),
            Untrusted::WrongOwner {
                socket_owner: other,
                process_owner: owner
            }
        );
    }

    #[tokio::test]
    async fn a_peer_that_is_not_the_named_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // This process serves a socket named after another live process (pid 1).
        let start = procfs::stat(1).map_or(1, |stat| stat.start_time);
        let path = dir
            .path()
            .join(format!("dotnet-diagnostic-1-{start}-socket"));
        let _listener = tokio::net::UnixListener::bind(&path).unwrap();
        let error = Endpoint::Socket(path)
            .open(Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(error, DiagnosticsError::ImpostorPeer { claimed: 1, .. }),
            "{error}"
        );
        let me = std::process::id();
        let own_start = procfs::stat(me).unwrap().start_time;
        let own = dir
            .path()
            .join(format!("dotnet-diagnostic-{me}-{own_start}-socket"));
        let _own_listener = tokio::net::UnixListener::bind(&own).unwrap();
        Endpoint::Socket(own)
            .open(Duration::from_secs(1))
            .await
            .unwrap();
    }
}
