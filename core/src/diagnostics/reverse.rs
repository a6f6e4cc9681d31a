//! Listen mode: diagmon owns a diagnostic port that runtimes connect to
//! (`DOTNET_DiagnosticPorts=/path,connect[,suspend]`, .NET 5 and later).
//!
//! Each runtime connects, advertises itself with 34 bytes (`ADVR_V1\0`, its instance cookie, its
//! pid, two reserved bytes) and waits for exactly one command; once it has handed the connection
//! to its server it opens a new one and advertises again. The port keeps the newest idle
//! connection per runtime and hands each one out once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::DiagnosticsError;

/// The advertise message's magic.
const ADVERTISE_MAGIC: &[u8; 8] = b"ADVR_V1\0";

/// Size of the advertise message.
const ADVERTISE_LEN: usize = 34;

/// How long a new connection may take to advertise before it is dropped.
const ADVERTISE_TIMEOUT: Duration = Duration::from_millis(250);

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
    idle: Option<UnixStream>,
    last_seen: Instant,
}

#[derive(Debug)]
struct Shared {
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
    /// Binds the port at `path` and starts accepting runtimes. A leftover socket file nobody
    /// listens on is replaced; a port another process is serving is an error.
    pub async fn bind(path: &Path) -> std::io::Result<ReversePort> {
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "another process is already listening on the diagnostic port {}",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        let port = ReversePort {
            path: path.to_owned(),
            shared: Arc::new(Shared {
                slots: Mutex::default(),
                arrived: Notify::new(),
                first_seen: broadcast::channel(64).0,
            }),
        };
        let shared = Arc::downgrade(&port.shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                tokio::spawn(accept_runtime(shared, stream));
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
        slots.retain(|_, slot| {
            if slot
                .idle
                .as_ref()
                .is_some_and(|stream| !is_idle_and_open(stream))
            {
                slot.idle = None;
            }
            slot.idle.is_some() || slot.last_seen.elapsed() < RECONNECT_GRACE
        });
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
                if let Some(stream) = slot.idle.take() {
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

/// Reads the advertise of a new connection and files the connection under its cookie, replacing
/// an older idle one. Connections that do not advertise properly and promptly are dropped.
async fn accept_runtime(shared: Arc<Shared>, mut stream: UnixStream) {
    let mut advertise = [0u8; ADVERTISE_LEN];
    match tokio::time::timeout(ADVERTISE_TIMEOUT, stream.read_exact(&mut advertise)).await {
        Ok(Ok(_)) => {}
        _ => {
            tracing::debug!("dropped a diagnostic port connection that did not advertise");
            return;
        }
    }
    let Some(runtime) = parse_advertise(&advertise) else {
        tracing::warn!("dropped a diagnostic port connection with an invalid advertise message");
        return;
    };
    let mut slots = shared
        .slots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let is_new = !slots.contains_key(&runtime.cookie);
    slots.insert(
        runtime.cookie,
        Slot {
            pid: runtime.pid,
            idle: Some(stream),
            last_seen: Instant::now(),
        },
    );
    drop(slots);
    shared.arrived.notify_waiters();
    if is_new {
        tracing::info!(pid = runtime.pid, cookie = %runtime.cookie, "runtime connected to the diagnostic port");
        let _ = shared.first_seen.send(runtime);
    }
}

fn parse_advertise(bytes: &[u8; ADVERTISE_LEN]) -> Option<AdvertisedRuntime> {
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
}
