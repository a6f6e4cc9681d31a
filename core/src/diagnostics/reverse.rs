//! Listen mode: diagmon owns a diagnostic port that runtimes connect to
//! (`DOTNET_DiagnosticPorts=/path,connect[,suspend]`, .NET 5 and later).
//!
//! Each runtime connects, advertises itself with 34 bytes (`ADVR_V1\0`, its instance cookie, its
//! pid, two reserved bytes) and waits for exactly one command; once it has handed the connection
//! to its server it opens a new one and advertises again. The port keeps the newest idle
//! connections per runtime (up to [`PortLimits::max_connections_per_runtime`]; a runtime has one
//! open at a time, so more are closed) and hands each one out once. The number of runtimes
//! ([`PortLimits::max_runtimes`]) and of connections still advertising are bounded too, so that a
//! local process flooding the port costs a bounded number of file descriptors.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore, broadcast};
use uuid::Uuid;

use super::DiagnosticsError;

/// The advertise message's magic.
const ADVERTISE_MAGIC: &[u8; 8] = b"ADVR_V1\0";

/// Size of the advertise message.
pub const ADVERTISE_LEN: usize = 34;

/// How long a new connection may take to advertise before it is dropped.
const ADVERTISE_TIMEOUT: Duration = Duration::from_millis(250);

/// How many new connections may be advertising at once; further ones wait to be accepted.
const MAX_ADVERTISING_CONNECTIONS: usize = 64;

/// How many connections and runtimes the port holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortLimits {
    /// Distinct runtimes (instance cookies) listed at once; a connection advertising a further
    /// cookie is closed.
    pub max_runtimes: usize,
    /// Idle connections kept per runtime; when another arrives the oldest is closed.
    pub max_connections_per_runtime: usize,
}

impl Default for PortLimits {
    fn default() -> Self {
        PortLimits {
            max_runtimes: 256,
            max_connections_per_runtime: 1,
        }
    }
}

/// How long a runtime stays listed after its last connection was taken or went away: a live
/// runtime reconnects within milliseconds.
const RECONNECT_GRACE: Duration = Duration::from_secs(3);

/// A runtime that advertised itself on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertisedRuntime {
    /// The runtime instance cookie.
    pub cookie: Uuid,
    /// The pid it advertised (in its own pid namespace).
    pub pid: u64,
}

#[derive(Debug)]
struct Slot {
    pid: u64,
    /// Idle connections, oldest first.
    idle: VecDeque<UnixStream>,
    last_seen: Instant,
}

#[derive(Debug)]
struct Shared {
    limits: PortLimits,
    slots: Mutex<HashMap<Uuid, Slot>>,
    arrived: Notify,
    first_seen: broadcast::Sender<AdvertisedRuntime>,
}

/// diagmon's diagnostic port in listen mode. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReversePort {
    path: PathBuf,
    shared: Arc<Shared>,
}

impl ReversePort {
    /// Binds the port at `path` and starts accepting runtimes within `limits` (a limit of 0
    /// counts as 1). A leftover socket file nobody listens on is replaced; a port another process
    /// is serving is an error.
    pub async fn bind(path: &Path, limits: PortLimits) -> std::io::Result<ReversePort> {
        if tokio::fs::try_exists(path).await? {
            if UnixStream::connect(path).await.is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "another process is already listening on the diagnostic port {}",
                        path.display()
                    ),
                ));
            }
            tokio::fs::remove_file(path).await?;
        }
        let listener = UnixListener::bind(path)?;
        let port = ReversePort {
            path: path.to_owned(),
            shared: Arc::new(Shared {
                limits: PortLimits {
                    max_runtimes: limits.max_runtimes.max(1),
                    max_connections_per_runtime: limits.max_connections_per_runtime.max(1),
                },
                slots: Mutex::default(),
                arrived: Notify::new(),
                first_seen: broadcast::channel(64).0,
            }),
        };
        let shared = Arc::downgrade(&port.shared);
        let advertising = Arc::new(Semaphore::new(MAX_ADVERTISING_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&advertising).acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                tokio::spawn(async move {
                    let advertised = read_advertise(stream).await;
                    drop(permit);
                    if let Some((runtime, stream)) = advertised {
                        file_connection(&shared, runtime, stream);
                    }
                });
            }
        });
        Ok(port)
    }

    /// The socket path runtimes connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The runtimes currently connected (or reconnecting after a command).
    pub fn runtimes(&self) -> Vec<AdvertisedRuntime> {
        let mut slots = self.lock();
        forget_gone_runtimes(&mut slots);
        let mut runtimes: Vec<_> = slots
            .iter()
            .map(|(cookie, slot)| AdvertisedRuntime {
                cookie: *cookie,
                pid: slot.pid,
            })
            .collect();
        runtimes.sort_by_key(|runtime| runtime.pid);
        runtimes
    }

    /// Announces every runtime the first time it advertises (for example to resume runtimes
    /// started suspended).
    pub fn subscribe(&self) -> broadcast::Receiver<AdvertisedRuntime> {
        self.shared.first_seen.subscribe()
    }

    /// Takes the runtime's idle connection for one command, waiting up to `timeout` for one to
    /// arrive. A connection is handed out once and never reused.
    pub async fn take_connection(
        &self,
        cookie: Uuid,
        timeout: Duration,
    ) -> Result<UnixStream, DiagnosticsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut slots = self.lock();
                let Some(slot) = slots.get_mut(&cookie) else {
                    return Err(DiagnosticsError::RuntimeGone(cookie));
                };
                while let Some(stream) = slot.idle.pop_back() {
                    slot.last_seen = Instant::now();
                    if is_idle_and_open(&stream) {
                        return Ok(stream);
                    }
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(DiagnosticsError::Timeout {
                    what: "connect to the diagnostic port",
                    after: timeout,
                });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Slot>> {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads the advertise of a new connection. Connections that do not advertise properly and
/// promptly are dropped.
async fn read_advertise(mut stream: UnixStream) -> Option<(AdvertisedRuntime, UnixStream)> {
    let mut advertise = [0u8; ADVERTISE_LEN];
    match tokio::time::timeout(ADVERTISE_TIMEOUT, stream.read_exact(&mut advertise)).await {
        Ok(Ok(_)) => {}
        _ => {
            tracing::debug!("dropped a diagnostic port connection that did not advertise");
            return None;
        }
    }
    let Some(runtime) = parse_advertise(&advertise) else {
        tracing::warn!("dropped a diagnostic port connection with an invalid advertise message");
        return None;
    };
    Some((runtime, stream))
}

/// Files an advertised connection under its cookie, closing the oldest idle one beyond the
/// per-runtime limit; a connection of a new runtime beyond the runtime limit is closed.
fn file_connection(shared: &Shared, runtime: AdvertisedRuntime, stream: UnixStream) {
    let mut slots = shared
        .slots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let is_new = !slots.contains_key(&runtime.cookie);
    if is_new && slots.len() >= shared.limits.max_runtimes {
        forget_gone_runtimes(&mut slots);
    }
    if is_new && slots.len() >= shared.limits.max_runtimes {
        drop(slots);
        tracing::warn!(
            pid = runtime.pid,
            cookie = %runtime.cookie,
            max_runtimes = shared.limits.max_runtimes,
            "closed a connection to the diagnostic port: too many runtimes are connected"
        );
        return;
    }
    let slot = slots.entry(runtime.cookie).or_insert_with(|| Slot {
        pid: runtime.pid,
        idle: VecDeque::new(),
        last_seen: Instant::now(),
    });
    slot.pid = runtime.pid;
    slot.last_seen = Instant::now();
    slot.idle.push_back(stream);
    while slot.idle.len() > shared.limits.max_connections_per_runtime {
        slot.idle.pop_front();
        tracing::debug!(cookie = %runtime.cookie, "closed an extra connection of a runtime");
    }
    drop(slots);
    shared.arrived.notify_waiters();
    if is_new {
        tracing::info!(pid = runtime.pid, cookie = %runtime.cookie, "runtime connected to the diagnostic port");
        let _ = shared.first_seen.send(runtime);
    }
}

/// Drops closed idle connections, and runtimes with none left that have not reconnected within
/// [`RECONNECT_GRACE`].
fn forget_gone_runtimes(slots: &mut HashMap<Uuid, Slot>) {
    slots.retain(|_, slot| {
        slot.idle.retain(is_idle_and_open);
        !slot.idle.is_empty() || slot.last_seen.elapsed() < RECONNECT_GRACE
    });
}

/// Decodes the 34-byte advertise message: magic, cookie (GUID, little-endian fields), pid, two
/// reserved bytes. `None` when the magic is wrong.
pub fn parse_advertise(bytes: &[u8; ADVERTISE_LEN]) -> Option<AdvertisedRuntime> {
    if &bytes[..8] != ADVERTISE_MAGIC {
        return None;
    }
    let cookie = Uuid::from_bytes_le(bytes[8..24].try_into().ok()?);
    let pid = u64::from_le_bytes(bytes[24..32].try_into().ok()?);
    Some(AdvertisedRuntime { cookie, pid })
}

/// An idle runtime connection has nothing to read: readable means closed (or a confused peer).
fn is_idle_and_open(stream: &UnixStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_is_parsed_and_checked() {
        let cookie = Uuid::from_u128(0x1234);
        let mut bytes = [0u8; ADVERTISE_LEN];
        bytes[..8].copy_from_slice(ADVERTISE_MAGIC);
        bytes[8..24].copy_from_slice(&cookie.to_bytes_le());
        bytes[24..32].copy_from_slice(&77u64.to_le_bytes());
        assert_eq!(
            parse_advertise(&bytes),
            Some(AdvertisedRuntime { cookie, pid: 77 })
        );
        bytes[0] = b'X';
        assert_eq!(parse_advertise(&bytes), None);
    }

    fn advertise(cookie: Uuid, pid: u64) -> [u8; ADVERTISE_LEN] {
        let mut bytes = [0u8; ADVERTISE_LEN];
        bytes[..8].copy_from_slice(ADVERTISE_MAGIC);
        bytes[8..24].copy_from_slice(&cookie.to_bytes_le());
        bytes[24..32].copy_from_slice(&pid.to_le_bytes());
        bytes
    }

    /// Connects to the port and advertises `cookie`.
    async fn connect(path: &Path, cookie: Uuid) -> UnixStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream.write_all(&advertise(cookie, 7)).await.unwrap();
        stream
    }

    /// True when the port closed this connection (the client reads end-of-file).
    async fn closed_by_the_port(stream: &mut UnixStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await,
            Ok(Ok(0))
        )
    }

    #[tokio::test]
    async fn extra_connections_and_runtimes_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("port.sock");
        let limits = PortLimits {
            max_runtimes: 2,
            max_connections_per_runtime: 2,
        };
        let port = ReversePort::bind(&path, limits).await.unwrap();
        let first = Uuid::from_u128(1);
        let mut connections = Vec::new();
        for _ in 0..5 {
            connections.push(connect(&path, first).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut closed = Vec::new();
        for stream in &mut connections {
            closed.push(closed_by_the_port(stream).await);
        }
        assert_eq!(
            closed,
            [true, true, true, false, false],
            "the two newest are kept"
        );
        let mut second = connect(&path, Uuid::from_u128(2)).await;
        let mut third = connect(&path, Uuid::from_u128(3)).await;
        assert!(!closed_by_the_port(&mut second).await);
        assert!(
            closed_by_the_port(&mut third).await,
            "a third runtime is refused"
        );
        let cookies: Vec<Uuid> = port.runtimes().iter().map(|r| r.cookie).collect();
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        assert!(cookies.contains(&first) && cookies.contains(&Uuid::from_u128(2)));
        let taken = port.take_connection(first, Duration::from_secs(1)).await;
        assert!(taken.is_ok());
    }
}
