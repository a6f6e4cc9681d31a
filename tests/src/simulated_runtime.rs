//! A simulated .NET runtime: the runtime's side of the diagnostics IPC protocol, for tests.
//!
//! It is a test oracle written from the protocol notes (`docs/ipc-protocol.md`), with its own framing
//! code, deliberately independent of diagmon's client. It covers what a real .NET Core 3.1
//! runtime cannot show: the Process command set (ProcessInfo 1–3, ResumeRuntime,
//! ProcessEnvironment), CollectTracing 3–6, GenerateCoreDump 2–3 and their error replies, reverse ("connect") diagnostic ports with suspension,
//! huge streams at full speed, killed targets, and misbehaving servers ([`Fault`]).
//!
//! **Behaviour summary**
//! - Listen mode serves connections **one at a time, in order**, with no read timeouts, like the
//!   runtime's single server thread: a client that sends half a header blocks every other client.
//!   An EventPipe session's stream runs on its own task after the OK reply, so StopTracing can
//!   arrive on another connection; StopTracing replies only after the session has written its end
//!   marker (a client that doesn't drain the session socket therefore blocks the stop, as on 3.1).
//! - Connect mode keeps one advertised connection to the monitor, opening a new one as soon as a
//!   command arrives on the current one; commands are still served one at a time.
//! - Every request is answered with one reply and the connection is closed, except a successful
//!   CollectTracing, whose connection then carries the nettrace stream.
//! - A Paced session that enables the `Microsoft-Diagnostics-DiagnosticSource` EventSource for
//!   ASP.NET Core's hosting activity also carries the start and stop events of the configured
//!   [`SimulatedRuntimeConfig::http_requests`], at their times, as .NET 5+ lays them out.
//! - Client garbage (bad magic, truncated payloads, hang-ups, broken pipes) is answered or dropped
//!   and never panics the simulator.
//! - NetPerf (format 0) CollectTracing requests are answered with BAD_ENCODING (0x80131384): only
//!   nettrace V4 (format 1) streams are implemented.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::aspnet_events::{RequestScript, SimulatedRequest};
use crate::synthetic_nettrace::SyntheticTrace;

/// Magic at the start of every IPC message header.
pub const IPC_MAGIC: &[u8; 14] = b"DOTNET_IPC_V1\0";
/// Size of an IPC message header.
pub const IPC_HEADER_SIZE: usize = 20;
/// Magic at the start of a reverse-connection advertise message.
pub const ADVERTISE_MAGIC: &[u8; 8] = b"ADVR_V1\0";
/// Size of the advertise message.
pub const ADVERTISE_SIZE: usize = 34;
/// Default CollectTracing4+ rundown keyword (GC | Loader | Jit | NGen | 0x100 | ILToNativeMap |
/// ThreadTransfer), implied by CollectTracing 1–3 when rundown is requested.
pub const DEFAULT_RUNDOWN_KEYWORD: u64 = 0x8002_0139;

/// HRESULTs the simulator sends in error replies.
pub mod hresult {
    /// DS_IPC_E_BAD_ENCODING: the payload failed to parse.
    pub const BAD_ENCODING: u32 = 0x8013_1384;
    /// DS_IPC_E_UNKNOWN_COMMAND: unknown command set or id.
    pub const UNKNOWN_COMMAND: u32 = 0x8013_1385;
    /// DS_IPC_E_UNKNOWN_MAGIC: the header magic isn't `DOTNET_IPC_V1`.
    pub const UNKNOWN_MAGIC: u32 = 0x8013_1386;
    /// DS_IPC_E_NOTSUPPORTED (user_events sessions here).
    pub const NOT_SUPPORTED: u32 = 0x8013_1515;
    /// E_FAIL (a reply that wouldn't fit in a message).
    pub const E_FAIL: u32 = 0x8000_4005;
}

/// Command sets.
const SET_DUMP: u8 = 0x01;
const SET_EVENTPIPE: u8 = 0x02;
const SET_PROCESS: u8 = 0x04;
const SET_SERVER: u8 = 0xFF;
const ID_OK: u8 = 0x00;
const ID_ERROR: u8 = 0xFF;

/// Bytes of event data a FullSpeed session writes between sequence points (like the runtime's
/// "every 10 MB of buffer allocation").
const SEQUENCE_POINT_INTERVAL: u64 = 10 << 20;
/// Target payload size of one FullSpeed event block.
const FULL_SPEED_BLOCK: usize = 64 * 1024;
/// FullSpeed sessions write this much per `write_all` (several blocks).
const FULL_SPEED_WRITE: usize = 256 * 1024;
/// Paced sessions: one block of this size every [`PACED_INTERVAL`].
const PACED_BLOCK: usize = 8 * 1024;
const PACED_INTERVAL: Duration = Duration::from_millis(50);
/// Rundown written at stop when requested: this many blocks of this size.
const RUNDOWN_BLOCKS: usize = 3;
const RUNDOWN_BLOCK: usize = 16 * 1024;

/// Configuration of a [`SimulatedRuntime`].
#[derive(Clone, Debug)]
pub struct SimulatedRuntimeConfig {
    /// Process id reported in ProcessInfo, the advertise message and the socket name.
    pub pid: u32,
    /// Runtime instance cookie (ProcessInfo, advertise).
    pub cookie: Uuid,
    /// ProcessInfo command line.
    pub command_line: String,
    /// ProcessInfo operating system.
    pub os: String,
    /// ProcessInfo architecture.
    pub arch: String,
    /// ProcessInfo2 entry-point assembly.
    pub entrypoint_assembly: String,
    /// ProcessInfo2 CLR product version.
    pub clr_product_version: String,
    /// ProcessInfo3 runtime identifier.
    pub runtime_identifier: String,
    /// Newest Process-set command answered: 0 = none (like 3.1: every Process command →
    /// UNKNOWN_COMMAND), 1 = ProcessInfo + ResumeRuntime + ProcessEnvironment, 2 = +ProcessInfo2
    /// and SetEnvironmentVariable, 3 = +ProcessInfo3.
    pub process_info_level: u8,
    /// Newest CollectTracing answered, 1..=6 (CollectTracing = 1 … CollectTracing6 = 6); newer
    /// ids → UNKNOWN_COMMAND.
    pub collect_tracing_level: u8,
    /// ProcessEnvironment contents (SetEnvironmentVariable updates the runtime's copy).
    pub environment: Vec<(String, String)>,
    /// What EventPipe sessions send.
    pub stream: StreamBehaviour,
    /// Newest Dump command answered: 0 = none, 1 = GenerateCoreDump (like 3.1), 2 =
    /// +GenerateCoreDump2, 3 = +GenerateCoreDump3; newer ids → UNKNOWN_COMMAND.
    pub dump_level: u8,
    /// What a dump request does.
    pub dump: DumpBehaviour,
    /// Misbehaviour injected into every exchange, if any.
    pub fault: Option<Fault>,
    /// Average size of the synthetic trace's ordinary events in bytes
    /// ([`SyntheticTrace::with_event_bytes`]); `None`: about 95 bytes.
    pub event_bytes: Option<usize>,
    /// ASP.NET Core requests the application serves: a Paced session that enables the
    /// DiagnosticSource EventSource for the hosting activity gets their start and stop events
    /// at their times ([`crate::aspnet_events`]).
    pub http_requests: Vec<SimulatedRequest>,
}

impl Default for SimulatedRuntimeConfig {
    fn default() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "x64",
            "aarch64" => "arm64",
            "x86" => "x86",
            "arm" => "arm",
            other => other,
        };
        SimulatedRuntimeConfig {
            pid: std::process::id(),
            cookie: Uuid::new_v4(),
            command_line: "/usr/share/dotnet/dotnet /app/SimulatedApp.dll --simulated".into(),
            os: "Linux".into(),
            arch: arch.into(),
            entrypoint_assembly: "SimulatedApp".into(),
            clr_product_version: "8.0.11+9cb3b725e3ad2b57ddc9fb2dd48d2d170563a8f5".into(),
            runtime_identifier: format!("linux-{arch}"),
            process_info_level: 3,
            collect_tracing_level: 5,
            environment: vec![
                ("DOTNET_SIMULATED_RUNTIME".into(), "1".into()),
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            stream: StreamBehaviour::Paced,
            dump_level: 3,
            dump: DumpBehaviour::Write { bytes: 64 << 10 },
            fault: None,
            event_bytes: None,
            http_requests: Vec::new(),
        }
    }
}

/// What an EventPipe session sends after its OK reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StreamBehaviour {
    /// One ~8 KB event block every 50 ms until StopTracing; then rundown blocks (if rundown was
    /// requested), a sequence point, the end marker, and close.
    #[default]
    Paced,
    /// Event blocks as fast as the socket accepts (with a sequence point every 10 MiB) until about
    /// `total_bytes` have been sent, then a sequence point, the end marker and close; or until
    /// StopTracing (then rundown if requested, sequence point, end marker).
    FullSpeed {
        /// Approximate stream size, end marker included.
        total_bytes: u64,
    },
    /// Sends exactly the first `after_bytes` bytes of a valid full-speed stream, then closes the
    /// socket without an end marker (possibly mid-block): a killed target. A StopTracing arriving
    /// earlier ends the stream normally.
    DisconnectAfter {
        /// Bytes sent before the abrupt close.
        after_bytes: u64,
    },
    /// Counter reports, as a runtime sends them for the providers the session asked for (see
    /// [`crate::counter_events::CounterScript`]): metadata once, then the counters' events every
    /// interval until StopTracing. With `malformed`, every interval also carries broken events.
    Counters {
        /// Whether to add an event cut short and one of undefined metadata every interval.
        malformed: bool,
    },
}

/// What a GenerateCoreDump request does (after its payload parsed; a dump type outside 1..=4 or a
/// path whose folder does not exist is E_FAIL, as on 3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpBehaviour {
    /// Writes a file of `bytes` bytes at the requested path (a 64-byte ELF header of type
    /// ET_CORE, then filler), then replies OK.
    Write {
        /// The file's size (at least 64).
        bytes: u64,
    },
    /// Writes nothing and replies with this HRESULT; a GenerateCoreDump3 error reply also
    /// carries `message`.
    Fail {
        /// The HRESULT of the error reply.
        hresult: u32,
        /// The message of a GenerateCoreDump3 error reply.
        message: String,
    },
}

/// A decoded GenerateCoreDump request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpRequest {
    /// Command id: 0x01 GenerateCoreDump … 0x03 GenerateCoreDump3.
    pub command_id: u8,
    /// Where the dump is to be written.
    pub path: String,
    /// 1 Normal, 2 WithHeap, 3 Triage, 4 Full.
    pub dump_type: u32,
    /// The diagnostics switch (v1) or flag set (v2, v3).
    pub flags: u32,
}

/// Misbehaviour of the simulated server, applied to every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers every request (after reading its header) with random non-protocol bytes, then
    /// closes.
    Garbage,
    /// Sends only the first 10 bytes of a reply header, then stalls: the connection stays open and
    /// unanswered until the simulator shuts down (other connections are still accepted).
    HalfHeaderThenStall,
    /// Sends a reply header whose size field is 65535 but only 16 payload bytes, then stalls like
    /// [`Fault::HalfHeaderThenStall`].
    OversizedLength,
    /// Accepts connections and never reads or answers (they stay open until shutdown).
    Silent,
    /// ProcessInfo/2/3 replies whose command-line string length prefix claims 2^31 code units
    /// (the header size is the bytes actually sent); other commands are answered normally.
    HugeStringLength,
    /// The first StopTracing is refused with an E_FAIL error reply (a runtime too busy to stop
    /// the session), and the session streams on; later ones are answered normally.
    RefuseFirstStop,
    /// Every StopTracing is answered OK at once but ignored: the session streams on until the
    /// client closes it.
    IgnoreStop,
}

/// One provider of a CollectTracing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Provider name.
    pub name: String,
    /// Keyword mask.
    pub keywords: u64,
    /// Level 0..=5.
    pub level: u32,
    /// Filter data (`None` when the string had length 0).
    pub filter_data: Option<String>,
    /// CollectTracing5+ event-id filter.
    pub event_filter: Option<EventFilter>,
}

/// CollectTracing5+ per-provider event filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFilter {
    /// `true`: only `event_ids`; `false`: all but `event_ids`.
    pub enable: bool,
    /// Event ids.
    pub event_ids: Vec<u32>,
}

/// A decoded CollectTracing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectRequest {
    /// Command id: 0x02 CollectTracing … 0x07 CollectTracing6.
    pub command_id: u8,
    /// CollectTracing5+ session type (0 streaming); 0 for older commands.
    pub session_type: u32,
    /// Circular buffer size in MB.
    pub buffer_size_mb: u32,
    /// 0 NetPerf, 1 NetTrace.
    pub format: u32,
    /// Whether rundown was requested (CT1: always; CT4+: `rundown_keyword != 0`).
    pub request_rundown: bool,
    /// Rundown keyword (explicit in CT4+, [`DEFAULT_RUNDOWN_KEYWORD`] or 0 before).
    pub rundown_keyword: u64,
    /// Whether stack walks were requested (CT1/CT2: always).
    pub request_stackwalk: bool,
    /// CollectTracing6 buffering mode (0 drop, 1 block).
    pub buffer_mode: Option<u32>,
    /// Providers, in request order.
    pub providers: Vec<ProviderConfig>,
}

/// A simulated .NET runtime serving the diagnostics IPC protocol on a Unix socket.
pub struct SimulatedRuntime {
    shared: Arc<Shared>,
    socket_path: Option<PathBuf>,
    remove_socket: bool,
}

struct Shared {
    config: SimulatedRuntimeConfig,
    state: Mutex<State>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Serializes command handling (the runtime's single server thread).
    server: tokio::sync::Mutex<()>,
    closing: AtomicBool,
    next_session: AtomicU64,
    stop_requests: AtomicU64,
}

struct State {
    commands: Vec<(u8, u8)>,
    last_collect: Option<CollectRequest>,
    last_dump: Option<DumpRequest>,
    sessions: HashMap<u64, SessionEntry>,
    resumed: bool,
    environment: Vec<(String, String)>,
}

struct SessionEntry {
    stop: watch::Sender<bool>,
    done: watch::Receiver<()>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Spawns a task the runtime owns (aborted on shutdown).
fn spawn_task<F>(shared: &Arc<Shared>, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(future);
    let mut tasks = shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
    tasks.retain(|t| !t.is_finished());
    if shared.closing.load(Ordering::SeqCst) {
        handle.abort();
    }
    tasks.push(handle);
}

impl SimulatedRuntime {
    fn new_shared(config: SimulatedRuntimeConfig, resumed: bool) -> Arc<Shared> {
        let environment = config.environment.clone();
        Arc::new(Shared {
            config,
            state: Mutex::new(State {
                commands: Vec::new(),
                last_collect: None,
                last_dump: None,
                sessions: HashMap::new(),
                resumed,
                environment,
            }),
            tasks: Mutex::new(Vec::new()),
            server: tokio::sync::Mutex::new(()),
            closing: AtomicBool::new(false),
            next_session: AtomicU64::new(0),
            stop_requests: AtomicU64::new(0),
        })
    }

    /// Listen (default) mode: binds `{dir}/dotnet-diagnostic-{pid}-{key}-socket` (mode 0600),
    /// where `key` is the start time (field 22 of `/proc/{pid}/stat`) when that file is readable
    /// (always for the current process), else a fixed number. Connections are served one at a
    /// time, in order; session streams continue on their own tasks.
    ///
    /// Two simulators with the same pid need different directories (the bind fails otherwise).
    pub async fn listen(dir: &Path, config: SimulatedRuntimeConfig) -> anyhow::Result<Self> {
        let key = process_start_time(config.pid).unwrap_or(4_242_424);
        let path = dir.join(format!("dotnet-diagnostic-{}-{key}-socket", config.pid));
        Self::listen_at(&path, config).await
    }

    /// Listen mode at any socket path, e.g. a name a real runtime would not write (an impostor
    /// in a shared TMPDIR); otherwise as [`SimulatedRuntime::listen`].
    pub async fn listen_at(path: &Path, config: SimulatedRuntimeConfig) -> anyhow::Result<Self> {
        let path = path.to_owned();
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the simulated runtime at {}", path.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod 600 {}", path.display()))?;
        }
        let shared = Self::new_shared(config, true);
        let task_shared = Arc::clone(&shared);
        spawn_task(&shared, async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _server = task_shared.server.lock().await;
                        serve_connection(Arc::clone(&task_shared), stream, Vec::new()).await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(SimulatedRuntime {
            shared,
            socket_path: Some(path),
            remove_socket: true,
        })
    }

    /// Connect (reverse) mode, like a runtime started with
    /// `DOTNET_DiagnosticPorts=<monitor_socket>,connect[,suspend]`: connects to the monitor's
    /// socket (100 ms connect timeout; retry delay 10 ms ×1.25 per failure, capped at 500 ms),
    /// writes the 34-byte advertise, and waits for a command. As soon as a command arrives it is
    /// handed to the (serialized) command handler and a new connection is opened and advertised.
    /// An idle connection the monitor closes is replaced after the retry delay.
    ///
    /// With `suspend`, [`is_resumed`](Self::is_resumed) is false until a ResumeRuntime arrives.
    /// Returns at once; an absent monitor just causes retries.
    pub async fn connect(
        monitor_socket: &Path,
        suspend: bool,
        config: SimulatedRuntimeConfig,
    ) -> anyhow::Result<Self> {
        let shared = Self::new_shared(config, !suspend);
        let task_shared = Arc::clone(&shared);
        let path = monitor_socket.to_path_buf();
        spawn_task(&shared, connect_loop(task_shared, path));
        Ok(SimulatedRuntime {
            shared,
            socket_path: None,
            remove_socket: false,
        })
    }

    /// The listening socket's path (listen mode only).
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.socket_path.clone()
    }

    /// The configuration this runtime runs with.
    pub fn config(&self) -> &SimulatedRuntimeConfig {
        &self.shared.config
    }

    /// False while a suspended connect-mode runtime waits for ResumeRuntime; true otherwise.
    pub fn is_resumed(&self) -> bool {
        self.shared.state().resumed
    }

    /// `(command_set, command_id)` of every request whose header was read completely with a valid
    /// magic, in order of arrival.
    pub fn commands_received(&self) -> Vec<(u8, u8)> {
        self.shared.state().commands.clone()
    }

    /// The last CollectTracing request that parsed and was accepted.
    pub fn last_collect_request(&self) -> Option<CollectRequest> {
        self.shared.state().last_collect.clone()
    }

    /// The last GenerateCoreDump request that parsed.
    pub fn last_dump_request(&self) -> Option<DumpRequest> {
        self.shared.state().last_dump.clone()
    }

    /// Number of EventPipe sessions still streaming.
    pub fn active_sessions(&self) -> usize {
        self.shared.state().sessions.len()
    }

    /// Current environment (as ProcessEnvironment would report it).
    pub fn environment(&self) -> Vec<(String, String)> {
        self.shared.state().environment.clone()
    }

    /// Stops serving: aborts every task (listener, connection handlers, sessions, stalled
    /// connections), waits for them, and removes the socket file.
    pub async fn shutdown(mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        loop {
            let handles =
                std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
            if handles.is_empty() {
                break;
            }
            for handle in &handles {
                handle.abort();
            }
            for handle in handles {
                let _ = handle.await;
            }
        }
        self.remove_socket_file();
    }

    fn remove_socket_file(&mut self) {
        if self.remove_socket {
            self.remove_socket = false;
            if let Some(path) = &self.socket_path {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for SimulatedRuntime {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        for handle in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            handle.abort();
        }
        self.remove_socket_file();
    }
}

/// Field 22 (`starttime`) of `/proc/{pid}/stat`.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (state), so field 22 is the 20th token.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The advertise message of a reverse connection.
pub fn advertise_message(cookie: Uuid, pid: u32) -> [u8; ADVERTISE_SIZE] {
    let mut message = [0u8; ADVERTISE_SIZE];
    message[..8].copy_from_slice(ADVERTISE_MAGIC);
    message[8..24].copy_from_slice(&cookie.to_bytes_le());
    message[24..32].copy_from_slice(&u64::from(pid).to_le_bytes());
    // Bytes 32..34: reserved u16 = 0.
    message
}

async fn connect_loop(shared: Arc<Shared>, path: PathBuf) {
    const INITIAL: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(500);
    let mut delay = INITIAL;
    let advertise = advertise_message(shared.config.cookie, shared.config.pid);
    loop {
        let connected =
            tokio::time::timeout(Duration::from_millis(100), UnixStream::connect(&path)).await;
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            _ => {
                tokio::time::sleep(delay).await;
                delay = (delay.mul_f64(1.25)).min(MAX);
                continue;
            }
        };
        let written =
            tokio::time::timeout(Duration::from_millis(100), stream.write_all(&advertise)).await;
        if !matches!(written, Ok(Ok(()))) {
            tokio::time::sleep(delay).await;
            delay = (delay.mul_f64(1.25)).min(MAX);
            continue;
        }
        // Wait for the monitor's command: its first byte, or a hang-up.
        let mut first = [0u8; 1];
        match stream.read(&mut first).await {
            Ok(1) => {
                delay = INITIAL;
                let handler_shared = Arc::clone(&shared);
                spawn_task(&shared, async move {
                    let _server = handler_shared.server.lock().await;
                    serve_connection(Arc::clone(&handler_shared), stream, first.to_vec()).await;
                });
            }
            _ => {
                tokio::time::sleep(delay).await;
                delay = (delay.mul_f64(1.25)).min(MAX);
            }
        }
    }
}

/// Keeps a connection open, unread and unanswered, until shutdown.
fn hold_forever(shared: &Arc<Shared>, stream: UnixStream) {
    spawn_task(shared, async move {
        let _stream = stream;
        std::future::pending::<()>().await;
    });
}

/// Reads whatever the client already sent, without waiting, so that closing the socket doesn't
/// turn into ECONNRESET for the client (unread data on close resets a Unix socket peer).
fn drain_available(stream: &UnixStream) {
    let mut buf = [0u8; 4096];
    for _ in 0..256 {
        match stream.try_read(&mut buf) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Handles one connection: one request, one reply (or a session stream).
async fn serve_connection(shared: Arc<Shared>, mut stream: UnixStream, prefix: Vec<u8>) {
    let fault = shared.config.fault;
    if fault == Some(Fault::Silent) {
        hold_forever(&shared, stream);
        return;
    }
    let mut header = [0u8; IPC_HEADER_SIZE];
    let have = prefix.len().min(IPC_HEADER_SIZE);
    header[..have].copy_from_slice(&prefix[..have]);
    if stream.read_exact(&mut header[have..]).await.is_err() {
        return;
    }
    let magic_ok = &header[..14] == IPC_MAGIC;
    let size = usize::from(u16::from_le_bytes([header[14], header[15]]));
    let (set, id) = (header[16], header[17]);
    let mut payload = Vec::new();
    if magic_ok {
        shared.state().commands.push((set, id));
        if size >= IPC_HEADER_SIZE {
            payload = vec![0u8; size - IPC_HEADER_SIZE];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
        }
    }
    match fault {
        Some(Fault::Garbage) => {
            drain_available(&stream);
            let _ = stream.write_all(&garbage_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        Some(Fault::HalfHeaderThenStall) => {
            let reply = message(SET_SERVER, ID_OK, &0u32.to_le_bytes());
            let _ = stream.write_all(&reply[..10]).await;
            hold_forever(&shared, stream);
            return;
        }
        Some(Fault::OversizedLength) => {
            let mut reply = message(SET_SERVER, ID_OK, &[0xAB; 16]);
            reply[14..16].copy_from_slice(&u16::MAX.to_le_bytes());
            let _ = stream.write_all(&reply).await;
            hold_forever(&shared, stream);
            return;
        }
        _ => {}
    }
    if !magic_ok {
        drain_available(&stream);
        send_error(&mut stream, hresult::UNKNOWN_MAGIC).await;
        return;
    }
    if size < IPC_HEADER_SIZE {
        drain_available(&stream);
        send_error(&mut stream, hresult::BAD_ENCODING).await;
        return;
    }
    dispatch(&shared, stream, set, id, &payload).await;
}

async fn dispatch(shared: &Arc<Shared>, mut stream: UnixStream, set: u8, id: u8, payload: &[u8]) {
    let config = &shared.config;
    let pil = config.process_info_level;
    match (set, id) {
        (SET_EVENTPIPE, 0x01) => stop_tracing(shared, stream, payload).await,
        (SET_EVENTPIPE, 0x02..=0x07) if id - 1 <= config.collect_tracing_level => {
            collect_tracing(shared, stream, id, payload).await
        }
        (SET_DUMP, 0x01..=0x03) if id <= config.dump_level => {
            generate_core_dump(shared, &mut stream, id, payload).await
        }
        (SET_PROCESS, 0x00) if pil >= 1 => process_info(shared, &mut stream, 1).await,
        (SET_PROCESS, 0x04) if pil >= 2 => process_info(shared, &mut stream, 2).await,
        (SET_PROCESS, 0x08) if pil >= 3 => process_info(shared, &mut stream, 3).await,
        (SET_PROCESS, 0x01) if pil >= 1 => {
            shared.state().resumed = true;
            send_ok(&mut stream, &0u32.to_le_bytes()).await;
        }
        (SET_PROCESS, 0x02) if pil >= 1 => process_environment(shared, &mut stream).await,
        (SET_PROCESS, 0x03) if pil >= 2 => {
            let mut reader = PayloadReader::new(payload);
            let parsed = reader
                .string()
                .and_then(|name| Ok((name, reader.string()?)));
            match parsed {
                Ok((Some(name), value)) => {
                    let value = value.unwrap_or_default();
                    {
                        let mut state = shared.state();
                        state.environment.retain(|(n, _)| *n != name);
                        state.environment.push((name, value));
                    }
                    send_ok(&mut stream, &0u32.to_le_bytes()).await;
                }
                _ => send_error(&mut stream, hresult::BAD_ENCODING).await,
            }
        }
        _ => send_error(&mut stream, hresult::UNKNOWN_COMMAND).await,
    }
}

async fn process_info(shared: &Arc<Shared>, stream: &mut UnixStream, version: u8) {
    let config = &shared.config;
    let mut payload = Vec::with_capacity(512);
    if version >= 3 {
        payload.extend_from_slice(&1u32.to_le_bytes());
    }
    payload.extend_from_slice(&u64::from(config.pid).to_le_bytes());
    payload.extend_from_slice(&config.cookie.to_bytes_le());
    if config.fault == Some(Fault::HugeStringLength) {
        payload.extend_from_slice(&(1u32 << 31).to_le_bytes());
        for unit in "/usr/bin/dotnet".encode_utf16() {
            payload.extend_from_slice(&unit.to_le_bytes());
        }
        send_ok(stream, &payload).await;
        return;
    }
    put_ipc_string(&mut payload, &config.command_line);
    put_ipc_string(&mut payload, &config.os);
    put_ipc_string(&mut payload, &config.arch);
    if version >= 2 {
        put_ipc_string(&mut payload, &config.entrypoint_assembly);
        put_ipc_string(&mut payload, &config.clr_product_version);
    }
    if version >= 3 {
        put_ipc_string(&mut payload, &config.runtime_identifier);
    }
    send_ok(stream, &payload).await;
}

async fn process_environment(shared: &Arc<Shared>, stream: &mut UnixStream) {
    let environment = shared.state().environment.clone();
    let mut continuation = Vec::with_capacity(1024);
    continuation.extend_from_slice(&(environment.len() as u32).to_le_bytes());
    for (name, value) in &environment {
        put_ipc_string(&mut continuation, &format!("{name}={value}"));
    }
    let mut head = Vec::with_capacity(6);
    head.extend_from_slice(&(continuation.len() as u32).to_le_bytes());
    head.extend_from_slice(&0u16.to_le_bytes());
    let mut bytes = message(SET_SERVER, ID_OK, &head);
    bytes.extend_from_slice(&continuation);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

async fn generate_core_dump(shared: &Arc<Shared>, stream: &mut UnixStream, id: u8, payload: &[u8]) {
    let mut reader = PayloadReader::new(payload);
    let parsed = (|| Ok::<_, u32>((reader.string()?, reader.u32()?, reader.u32()?)))();
    let (path, dump_type, flags) = match parsed {
        Ok((Some(path), dump_type, flags)) => (path, dump_type, flags),
        _ => return send_error(stream, hresult::BAD_ENCODING).await,
    };
    shared.state().last_dump = Some(DumpRequest {
        command_id: id,
        path: path.clone(),
        dump_type,
        flags,
    });
    let fail = |hresult: u32, message: String| (hresult, message);
    let outcome = match &shared.config.dump {
        _ if !(1..=4).contains(&dump_type) => Err(fail(
            hresult::E_FAIL,
            format!("Invalid dump type {dump_type}"),
        )),
        DumpBehaviour::Write { bytes } => write_core_file(Path::new(&path), *bytes)
            .map_err(|error| fail(hresult::E_FAIL, format!("Cannot write {path}: {error}"))),
        DumpBehaviour::Fail { hresult, message } => Err(fail(*hresult, message.clone())),
    };
    match outcome {
        Ok(()) => send_ok(stream, &0u32.to_le_bytes()).await,
        Err((hr, text)) if id == 0x03 => {
            let mut reply = hr.to_le_bytes().to_vec();
            put_ipc_string(&mut reply, &text);
            let _ = stream
                .write_all(&message(SET_SERVER, ID_ERROR, &reply))
                .await;
            let _ = stream.shutdown().await;
        }
        Err((hr, _)) => send_error(stream, hr).await,
    }
}

/// A stand-in core file: an ELF64 header of type ET_CORE, then filler up to `bytes`.
fn write_core_file(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut header = [0u8; 64];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 2; // ELFCLASS64
    header[5] = 1; // little-endian
    header[6] = 1; // EV_CURRENT
    header[16..18].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&header)?;
    let filler: Vec<u8> = (0..=255u8).cycle().take(64 << 10).collect();
    let mut left = bytes.saturating_sub(64);
    while left > 0 {
        let now = left.min(filler.len() as u64) as usize;
        file.write_all(&filler[..now])?;
        left -= now as u64;
    }
    file.flush()
}

async fn stop_tracing(shared: &Arc<Shared>, mut stream: UnixStream, payload: &[u8]) {
    let mut reader = PayloadReader::new(payload);
    let Ok(session_id) = reader.u64() else {
        send_error(&mut stream, hresult::BAD_ENCODING).await;
        return;
    };
    let earlier_stops = shared.stop_requests.fetch_add(1, Ordering::SeqCst);
    match shared.config.fault {
        Some(Fault::RefuseFirstStop) if earlier_stops == 0 => {
            send_error(&mut stream, hresult::E_FAIL).await;
            return;
        }
        Some(Fault::IgnoreStop) => {
            send_ok(&mut stream, &session_id.to_le_bytes()).await;
            return;
        }
        _ => {}
    }
    let entry = shared
        .state()
        .sessions
        .get(&session_id)
        .map(|e| (e.stop.clone(), e.done.clone()));
    if let Some((stop, mut done)) = entry {
        let _ = stop.send(true);
        // Nobody sends on `done`: this returns once the session task dropped its sender.
        while done.changed().await.is_ok() {}
    }
    // Like 3.1: OK + the id, even for an unknown session.
    send_ok(&mut stream, &session_id.to_le_bytes()).await;
}

async fn collect_tracing(shared: &Arc<Shared>, mut stream: UnixStream, id: u8, payload: &[u8]) {
    let request = match parse_collect_request(id, payload) {
        Ok(request) => request,
        Err(hr) => {
            send_error(&mut stream, hr).await;
            return;
        }
    };
    let n = shared.next_session.fetch_add(1, Ordering::SeqCst);
    let session_id = 0x7F05_0800_0EF0u64 + n * 0x1_0010;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    {
        let mut state = shared.state();
        state.last_collect = Some(request.clone());
        state.sessions.insert(
            session_id,
            SessionEntry {
                stop: stop_tx,
                done: done_rx,
            },
        );
    }
    let guard = SessionGuard {
        shared: Arc::clone(shared),
        id: session_id,
        _done: done_tx,
    };
    let reply = message(SET_SERVER, ID_OK, &session_id.to_le_bytes());
    if stream.write_all(&reply).await.is_err() {
        return; // `guard` unregisters the session.
    }
    let behaviour = shared.config.stream.clone();
    spawn_task(
        shared,
        run_session(guard, stream, request, stop_rx, behaviour),
    );
}

/// Unregisters a session (and wakes StopTracing waiters) when its task ends or is aborted.
struct SessionGuard {
    shared: Arc<Shared>,
    id: u64,
    _done: watch::Sender<()>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.state().sessions.remove(&self.id);
    }
}

/// Streams a session; any write error (client gone) ends it quietly.
async fn run_session(
    guard: SessionGuard,
    mut stream: UnixStream,
    request: CollectRequest,
    mut stop: watch::Receiver<bool>,
    behaviour: StreamBehaviour,
) {
    let mut trace =
        SyntheticTrace::with_event_bytes(guard.shared.config.pid, guard.shared.config.event_bytes);
    let rundown = request.request_rundown && request.rundown_keyword != 0;
    let mut buf = Vec::with_capacity(FULL_SPEED_WRITE + 2 * FULL_SPEED_BLOCK);
    trace.write_header(&mut buf);
    let result: std::io::Result<()> = async {
        match behaviour {
            StreamBehaviour::Paced => {
                let requests =
                    RequestScript::for_request(&request, &guard.shared.config.http_requests);
                if !requests.metadata.is_empty() {
                    trace.write_metadata_records(&mut buf, &requests.metadata);
                }
                stream.write_all(&buf).await?;
                let started = tokio::time::Instant::now();
                let mut timeline = requests.timeline.into_iter().peekable();
                let mut ticker = tokio::time::interval(PACED_INTERVAL);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {
                            buf.clear();
                            trace.write_event_block(&mut buf, PACED_BLOCK);
                            let elapsed = started.elapsed();
                            let mut due = Vec::new();
                            while let Some((_, id, payload)) =
                                timeline.next_if(|(at, _, _)| *at <= elapsed)
                            {
                                due.push((id, payload));
                            }
                            if !due.is_empty() {
                                trace.write_events(&mut buf, &due);
                            }
                            stream.write_all(&buf).await?;
                        }
                        changed = stop.changed() => {
                            if changed.is_err() || *stop.borrow() {
                                break;
                            }
                        }
                    }
                }
                finish(&mut stream, &mut trace, &mut buf, rundown).await
            }
            StreamBehaviour::FullSpeed { total_bytes } => {
                const END_RESERVE: u64 = 256;
                let mut since_sequence_point = 0u64;
                let mut stopped = false;
                loop {
                    let remaining = total_bytes.saturating_sub(trace.stream_offset() + END_RESERVE);
                    if remaining == 0 {
                        break;
                    }
                    if *stop.borrow() {
                        stopped = true;
                        break;
                    }
                    while buf.len() < FULL_SPEED_WRITE {
                        let remaining =
                            total_bytes.saturating_sub(trace.stream_offset() + END_RESERVE);
                        if remaining == 0 {
                            break;
                        }
                        if since_sequence_point >= SEQUENCE_POINT_INTERVAL {
                            trace.write_sequence_point(&mut buf);
                            since_sequence_point = 0;
                        }
                        let before = buf.len();
                        let target = remaining.min(FULL_SPEED_BLOCK as u64) as usize;
                        trace.write_event_block(&mut buf, target);
                        since_sequence_point += (buf.len() - before) as u64;
                    }
                    stream.write_all(&buf).await?;
                    buf.clear();
                }
                stream.write_all(&buf).await?;
                buf.clear();
                finish(&mut stream, &mut trace, &mut buf, rundown && stopped).await
            }
            StreamBehaviour::Counters { malformed } => {
                let script = crate::counter_events::CounterScript::for_request(&request, malformed);
                trace.write_metadata_records(&mut buf, &script.metadata);
                stream.write_all(&buf).await?;
                let mut ticker = tokio::time::interval(script.interval);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {
                            buf.clear();
                            trace.write_events(&mut buf, &script.events);
                            stream.write_all(&buf).await?;
                        }
                        changed = stop.changed() => {
                            if changed.is_err() || *stop.borrow() {
                                break;
                            }
                        }
                    }
                }
                finish(&mut stream, &mut trace, &mut buf, rundown).await
            }
            StreamBehaviour::DisconnectAfter { after_bytes } => {
                let mut sent = 0u64;
                loop {
                    if *stop.borrow() {
                        stream.write_all(&buf).await?;
                        buf.clear();
                        return finish(&mut stream, &mut trace, &mut buf, rundown).await;
                    }
                    let room = after_bytes - sent;
                    if (buf.len() as u64) >= room {
                        stream.write_all(&buf[..room as usize]).await?;
                        // Abrupt close: no end marker.
                        return Ok(());
                    }
                    stream.write_all(&buf).await?;
                    sent += buf.len() as u64;
                    buf.clear();
                    trace.write_event_block(&mut buf, FULL_SPEED_BLOCK);
                }
            }
        }
    }
    .await;
    drop(result);
    drop(stream);
    drop(guard);
}

/// Rundown (if requested), sequence point, end marker, then close.
async fn finish(
    stream: &mut UnixStream,
    trace: &mut SyntheticTrace,
    buf: &mut Vec<u8>,
    rundown: bool,
) -> std::io::Result<()> {
    buf.clear();
    if rundown {
        for _ in 0..RUNDOWN_BLOCKS {
            trace.write_rundown_block(buf, RUNDOWN_BLOCK);
        }
    }
    trace.write_end(buf);
    stream.write_all(buf).await?;
    stream.shutdown().await
}

/// Parses a CollectTracing1..6 payload (`id` 0x02..=0x07) and validates it like the runtime.
fn parse_collect_request(id: u8, payload: &[u8]) -> Result<CollectRequest, u32> {
    let mut r = PayloadReader::new(payload);
    let mut request = CollectRequest {
        command_id: id,
        session_type: 0,
        buffer_size_mb: 0,
        format: 0,
        request_rundown: true,
        rundown_keyword: DEFAULT_RUNDOWN_KEYWORD,
        request_stackwalk: true,
        buffer_mode: None,
        providers: Vec::new(),
    };
    let mut providers_v1 = false;
    match id {
        0x02..=0x04 => {
            request.buffer_size_mb = r.u32()?;
            request.format = r.u32()?;
            if id >= 0x03 {
                request.request_rundown = r.bool()?;
                if !request.request_rundown {
                    request.rundown_keyword = 0;
                }
            }
            if id == 0x04 {
                request.request_stackwalk = r.bool()?;
            }
        }
        0x05 => {
            request.buffer_size_mb = r.u32()?;
            request.format = r.u32()?;
            request.rundown_keyword = r.u64()?;
            request.request_rundown = request.rundown_keyword != 0;
            request.request_stackwalk = r.bool()?;
        }
        0x06 | 0x07 => {
            providers_v1 = true;
            request.session_type = r.u32()?;
            match request.session_type {
                0 => {
                    request.buffer_size_mb = r.u32()?;
                    request.format = r.u32()?;
                    request.rundown_keyword = r.u64()?;
                    request.request_rundown = request.rundown_keyword != 0;
                    request.request_stackwalk = r.bool()?;
                }
                // user_events sessions need an fd passed with SCM_RIGHTS: not simulated.
                1 => return Err(hresult::NOT_SUPPORTED),
                _ => return Err(hresult::BAD_ENCODING),
            }
        }
        _ => return Err(hresult::UNKNOWN_COMMAND),
    }
    let count = r.u32()?;
    for _ in 0..count {
        let keywords = r.u64()?;
        let level = r.u32()?;
        let name = r.string()?;
        let filter_data = r.string()?;
        let event_filter = if providers_v1 {
            let enable = r.bool()?;
            let n = r.u32()?;
            let mut event_ids = Vec::new();
            for _ in 0..n {
                event_ids.push(r.u32()?);
            }
            Some(EventFilter { enable, event_ids })
        } else {
            None
        };
        let name = match name {
            Some(name) if !name.is_empty() => name,
            _ => return Err(hresult::BAD_ENCODING),
        };
        if level > 5 {
            return Err(hresult::BAD_ENCODING);
        }
        request.providers.push(ProviderConfig {
            name,
            keywords,
            level,
            filter_data,
            event_filter,
        });
    }
    if id == 0x07 {
        let mode = r.u32()?;
        if mode > 1 {
            return Err(hresult::BAD_ENCODING);
        }
        request.buffer_mode = Some(mode);
    }
    // Format 0 (NetPerf) isn't implemented by the simulator: BAD_ENCODING.
    if request.buffer_size_mb == 0 || request.format != 1 || request.providers.is_empty() {
        return Err(hresult::BAD_ENCODING);
    }
    Ok(request)
}

/// Bounds-checked reader of a request payload; every failure is BAD_ENCODING.
struct PayloadReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> PayloadReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        PayloadReader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], u32> {
        let end = self.pos.checked_add(n).ok_or(hresult::BAD_ENCODING)?;
        let bytes = self.buf.get(self.pos..end).ok_or(hresult::BAD_ENCODING)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], u32> {
        self.take(N)?.try_into().map_err(|_| hresult::BAD_ENCODING)
    }

    fn u32(&mut self) -> Result<u32, u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, u32> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, u32> {
        Ok(self.array::<1>()?[0] != 0)
    }

    /// `u32 n` (code units incl. NUL) + UTF-16LE; `n = 0` → `None`; no NUL → error.
    fn string(&mut self) -> Result<Option<String>, u32> {
        let units = self.u32()? as usize;
        if units == 0 {
            return Ok(None);
        }
        let bytes = self.take(units.checked_mul(2).ok_or(hresult::BAD_ENCODING)?)?;
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        match units.split_last() {
            Some((0, text)) => Ok(Some(String::from_utf16_lossy(text))),
            _ => Err(hresult::BAD_ENCODING),
        }
    }
}

/// An IPC message: header (magic, total size, set, id, reserved 0) + payload. Callers keep the
/// payload below 64 KB.
fn message(set: u8, id: u8, payload: &[u8]) -> Vec<u8> {
    let size = (IPC_HEADER_SIZE + payload.len()).min(usize::from(u16::MAX)) as u16;
    let mut bytes = Vec::with_capacity(IPC_HEADER_SIZE + payload.len());
    bytes.extend_from_slice(IPC_MAGIC);
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.push(set);
    bytes.push(id);
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(payload);
    bytes
}

/// OK reply with `payload`, then close (E_FAIL if the payload can't fit in a message).
async fn send_ok(stream: &mut UnixStream, payload: &[u8]) {
    if IPC_HEADER_SIZE + payload.len() > usize::from(u16::MAX) {
        send_error(stream, hresult::E_FAIL).await;
        return;
    }
    let _ = stream.write_all(&message(SET_SERVER, ID_OK, payload)).await;
    let _ = stream.shutdown().await;
}

/// Error reply with `hr`, then close.
async fn send_error(stream: &mut UnixStream, hr: u32) {
    let _ = stream
        .write_all(&message(SET_SERVER, ID_ERROR, &hr.to_le_bytes()))
        .await;
    let _ = stream.shutdown().await;
}

/// IPC string: `u32` code units including the NUL, UTF-16LE; empty → `n = 0`.
fn put_ipc_string(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.extend_from_slice(&0u32.to_le_bytes());
        return;
    }
    let units: Vec<u16> = s.encode_utf16().collect();
    out.extend_from_slice(&(units.len() as u32 + 1).to_le_bytes());
    for unit in units {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
}

/// 1..=64 random bytes that never start with the IPC magic's `D`.
fn garbage_bytes() -> Vec<u8> {
    let random = Uuid::new_v4().as_u128() ^ Uuid::new_v4().as_u128().rotate_left(64);
    let mut state = (random as u64) | 1;
    let len = 1 + (random >> 64) as usize % 64;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let byte = state as u8;
            if i == 0 && byte == b'D' { 0xEE } else { byte }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Tests of the simulator and the synthetic writer, using hand-written raw-socket clients and
    //! an independent nettrace walker (nothing from diagmon's client).

    use super::*;
    use crate::synthetic_nettrace::{
        CAPTURE_THREADS, GC_METADATA_ID, RUNDOWN_METADATA_ID, RUNDOWN_PROVIDER, SyntheticTrace,
        TICK_METADATA_ID, synthetic_trace_bytes,
    };
    use std::collections::BTreeMap;
    use std::time::Instant;
    use tokio::time::timeout;

    const T: Duration = Duration::from_secs(10);

    // ---------------------------------------------------------------- raw client helpers

    fn request_bytes(set: u8, id: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = IPC_MAGIC.to_vec();
        bytes.extend_from_slice(&((20 + payload.len()) as u16).to_le_bytes());
        bytes.extend_from_slice(&[set, id, 0, 0]);
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Reads one reply: (command_id, payload). Panics on protocol violations (test code).
    async fn read_reply(stream: &mut UnixStream) -> (u8, Vec<u8>) {
        let mut header = [0u8; 20];
        timeout(T, stream.read_exact(&mut header))
            .await
            .expect("reply header in time")
            .expect("reply header");
        assert_eq!(&header[..14], IPC_MAGIC);
        assert_eq!(header[16], 0xFF, "reply command set");
        assert_eq!(&header[18..20], &[0, 0]);
        let size = u16::from_le_bytes([header[14], header[15]]) as usize;
        let mut payload = vec![0u8; size - 20];
        timeout(T, stream.read_exact(&mut payload))
            .await
            .expect("reply payload in time")
            .expect("reply payload");
        (header[17], payload)
    }

    async fn exchange(path: &Path, set: u8, id: u8, payload: &[u8]) -> (u8, Vec<u8>) {
        let mut stream = UnixStream::connect(path).await.expect("connect");
        stream
            .write_all(&request_bytes(set, id, payload))
            .await
            .expect("write request");
        read_reply(&mut stream).await
    }

    async fn expect_error(path: &Path, set: u8, id: u8, payload: &[u8]) -> u32 {
        let (reply_id, payload) = exchange(path, set, id, payload).await;
        assert_eq!(
            reply_id, 0xFF,
            "expected an error reply to {set:#04x}/{id:#04x}"
        );
        assert_eq!(payload.len(), 4);
        u32::from_le_bytes(payload[..4].try_into().unwrap())
    }

    fn ipc_string(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_ipc_string(&mut out, s);
        out
    }

    /// Test-side decoder of IPC strings.
    struct Cursor<'a>(&'a [u8], usize);
    impl Cursor<'_> {
        fn bytes(&mut self, n: usize) -> &[u8] {
            let s = &self.0[self.1..self.1 + n];
            self.1 += n;
            s
        }
        fn u16(&mut self) -> u16 {
            u16::from_le_bytes(self.bytes(2).try_into().unwrap())
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.bytes(4).try_into().unwrap())
        }
        fn i32(&mut self) -> i32 {
            self.u32() as i32
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.bytes(8).try_into().unwrap())
        }
        fn string(&mut self) -> String {
            let n = self.u32() as usize;
            if n == 0 {
                return String::new();
            }
            let units: Vec<u16> = self
                .bytes(n * 2)
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            assert_eq!(units.last(), Some(&0), "string must end with NUL");
            String::from_utf16(&units[..n - 1]).unwrap()
        }
        fn utf16z(&mut self) -> String {
            let mut units = Vec::new();
            loop {
                let u = self.u16();
                if u == 0 {
                    break;
                }
                units.push(u);
            }
            String::from_utf16(&units).unwrap()
        }
        fn varint(&mut self) -> u64 {
            let mut value = 0u64;
            let mut shift = 0;
            loop {
                let b = self.bytes(1)[0];
                value |= u64::from(b & 0x7F) << shift;
                if b & 0x80 == 0 {
                    return value;
                }
                shift += 7;
                assert!(shift < 70, "varint too long");
            }
        }
        fn done(&self) -> bool {
            self.1 == self.0.len()
        }
    }

    fn provider_v0(name: &str, keywords: u64, level: u32, filter: &str) -> Vec<u8> {
        let mut out = keywords.to_le_bytes().to_vec();
        out.extend_from_slice(&level.to_le_bytes());
        out.extend_from_slice(&ipc_string(name));
        out.extend_from_slice(&ipc_string(filter));
        out
    }

    fn ct2_payload(buffer: u32, format: u32, rundown: bool, providers: &[Vec<u8>]) -> Vec<u8> {
        let mut out = buffer.to_le_bytes().to_vec();
        out.extend_from_slice(&format.to_le_bytes());
        out.push(u8::from(rundown));
        out.extend_from_slice(&(providers.len() as u32).to_le_bytes());
        for p in providers {
            out.extend_from_slice(p);
        }
        out
    }

    fn simple_ct2(rundown: bool) -> Vec<u8> {
        ct2_payload(
            64,
            1,
            rundown,
            &[provider_v0("Microsoft-Windows-DotNETRuntime", 0x1, 4, "")],
        )
    }

    /// Starts a session; returns (session id, the stream carrying the trace).
    async fn start_session(path: &Path, id: u8, payload: &[u8]) -> (u64, UnixStream) {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream
            .write_all(&request_bytes(0x02, id, payload))
            .await
            .unwrap();
        let (reply_id, reply) = read_reply(&mut stream).await;
        assert_eq!(reply_id, 0x00, "CollectTracing OK");
        assert_eq!(reply.len(), 8);
        (u64::from_le_bytes(reply.try_into().unwrap()), stream)
    }

    async fn read_to_end(mut stream: UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        timeout(Duration::from_secs(60), stream.read_to_end(&mut out))
            .await
            .expect("stream ends in time")
            .expect("read stream");
        out
    }

    async fn listen_with(config: SimulatedRuntimeConfig) -> (tempfile::TempDir, SimulatedRuntime) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = SimulatedRuntime::listen(dir.path(), config).await.unwrap();
        (dir, runtime)
    }

    // ---------------------------------------------------------------- independent nettrace walker

    #[derive(Debug, Default)]
    struct Walk {
        events: u64,
        metadata_records: u64,
        blocks: BTreeMap<String, u64>,
        /// Last sequence number seen per capture thread.
        seqs: BTreeMap<u64, u32>,
        dropped: u64,
        sequence_points: Vec<Vec<(u64, u32)>>,
        events_by_metadata: BTreeMap<u32, u64>,
        providers: BTreeMap<u32, String>,
        pid: i32,
        ended: bool,
    }

    /// Walks a nettrace V4 stream, asserting structure (panics with the offset on any violation).
    /// A stream without the end marker returns `ended: false` only if it stops on an object
    /// boundary; it panics otherwise.
    fn walk(bytes: &[u8]) -> Walk {
        let mut w = Walk::default();
        let mut c = Cursor(bytes, 0);
        assert_eq!(c.bytes(8), b"Nettrace");
        assert_eq!(c.i32(), 20);
        assert_eq!(c.bytes(20), b"!FastSerialization.1");
        let mut first = true;
        while !c.done() {
            let at = c.1;
            let tag = c.bytes(1)[0];
            if tag == 1 {
                assert!(c.done(), "bytes after the end marker at {at}");
                w.ended = true;
                break;
            }
            assert_eq!(tag, 5, "object tag at {at}");
            assert_eq!(c.bytes(2), &[5, 1], "type object at {at}");
            let version = c.i32();
            let min_version = c.i32();
            let name_len = c.i32() as usize;
            assert!(name_len <= 64);
            let name = String::from_utf8(c.bytes(name_len).to_vec()).unwrap();
            assert_eq!(c.bytes(1)[0], 6, "end of type object at {at}");
            if first {
                assert_eq!(name, "Trace");
                assert_eq!((version, min_version), (4, 4));
                let time: Vec<u16> = (0..8).map(|_| c.u16()).collect();
                assert!((2024..2200).contains(&time[0]) && (1..=12).contains(&time[1]));
                assert!(time[2] <= 6 && (1..=31).contains(&time[3]) && time[4] < 24);
                let _sync = c.u64();
                assert_eq!(c.u64(), 1_000_000_000, "QPC frequency");
                assert_eq!(c.i32(), 8, "pointer size");
                w.pid = c.i32();
                assert!(c.i32() >= 1, "processor count");
                assert_eq!(c.i32(), 1_000_000, "sampling rate");
                assert_eq!(c.bytes(1)[0], 6);
                first = false;
                continue;
            }
            assert_eq!((version, min_version), (2, 2), "block type version at {at}");
            let size = c.i32() as usize;
            while c.1 % 4 != 0 {
                assert_eq!(c.bytes(1)[0], 0, "padding byte");
            }
            let block = c.bytes(size);
            match name.as_str() {
                "EventBlock" | "MetadataBlock" => walk_event_block(&mut w, block, &name),
                "SPBlock" => {
                    let mut b = Cursor(block, 0);
                    let _ts = b.u64();
                    let n = b.u32();
                    let mut entries = Vec::new();
                    for _ in 0..n {
                        let thread = b.u64();
                        let seq = b.u32();
                        assert_eq!(w.seqs.get(&thread), Some(&seq), "SP seq of {thread}");
                        entries.push((thread, seq));
                    }
                    assert!(b.done());
                    w.sequence_points.push(entries);
                }
                other => panic!("unexpected block {other} at {at}"),
            }
            *w.blocks.entry(name).or_default() += 1;
            assert_eq!(c.bytes(1)[0], 6, "end of block object at {at}");
        }
        w
    }

    fn walk_event_block(w: &mut Walk, block: &[u8], name: &str) {
        let mut b = Cursor(block, 0);
        assert_eq!(b.u16(), 20, "block header size");
        assert_eq!(b.u16() & 1, 1, "compressed flag");
        let min_ts = b.u64();
        let max_ts = b.u64();
        assert!(min_ts <= max_ts);
        let (mut meta, mut seq, mut capture, mut _proc, mut _thread, mut _stack) =
            (0u32, 0u32, 0u64, 0u64, 0u64, 0u64);
        let (mut ts, mut payload_size) = (0u64, 0usize);
        let mut last_event_ts = 0u64;
        while !b.done() {
            let flags = b.bytes(1)[0];
            if flags & 1 != 0 {
                meta = b.varint() as u32;
            }
            if flags & 2 != 0 {
                seq = seq.wrapping_add(b.varint() as u32).wrapping_add(1);
                capture = b.varint();
                _proc = b.varint();
            } else if meta != 0 {
                seq = seq.wrapping_add(1);
            }
            if flags & 4 != 0 {
                _thread = b.varint();
            }
            if flags & 8 != 0 {
                _stack = b.varint();
            }
            ts += b.varint();
            if flags & 16 != 0 {
                b.bytes(16);
            }
            if flags & 32 != 0 {
                b.bytes(16);
            }
            if flags & 128 != 0 {
                payload_size = b.varint() as usize;
            }
            let payload = b.bytes(payload_size);
            if name == "MetadataBlock" {
                assert_eq!(meta, 0, "metadata records have metadata id 0");
                let mut p = Cursor(payload, 0);
                let id = p.u32();
                let provider = p.utf16z();
                let _event_id = p.i32();
                let _event_name = p.utf16z();
                let _keywords = p.u64();
                let _version = p.i32();
                let level = p.i32();
                assert!((0..=5).contains(&level));
                let fields = p.i32();
                for _ in 0..fields {
                    let type_code = p.i32();
                    assert_ne!(type_code, 1, "no nested objects here");
                    p.utf16z();
                }
                assert!(p.done(), "metadata payload fully used");
                w.providers.insert(id, provider);
                w.metadata_records += 1;
            } else {
                assert_ne!(meta, 0);
                assert!(
                    w.providers.contains_key(&meta),
                    "undefined metadata id {meta}"
                );
                assert!(ts >= min_ts && ts <= max_ts, "timestamp within block range");
                assert!(ts >= last_event_ts, "sorted timestamps");
                last_event_ts = ts;
                let previous = w.seqs.insert(capture, seq).unwrap_or(0);
                assert!(seq > previous, "sequence numbers grow per thread");
                w.dropped += u64::from(seq - previous - 1);
                w.events += 1;
                *w.events_by_metadata.entry(meta).or_default() += 1;
            }
        }
    }

    // ---------------------------------------------------------------- synthetic writer

    #[test]
    fn synthetic_trace_bytes_is_a_valid_complete_stream() {
        for total in [0u64, 1000, 70_000, 1 << 20, 5 << 20] {
            let bytes = synthetic_trace_bytes(total);
            assert!(bytes.ends_with(&[0x06, 0x01]));
            if total > 100_000 {
                let diff = (bytes.len() as i64 - total as i64).abs();
                assert!(diff < 1024, "{} bytes for {total}", bytes.len());
            }
            let w = walk(&bytes);
            assert!(w.ended);
            assert_eq!(w.pid as u32, std::process::id());
            assert_eq!(w.blocks["MetadataBlock"], 1);
            assert_eq!(w.blocks["SPBlock"], 1);
            assert!(w.events >= 1);
            assert_eq!(w.metadata_records, 2);
            assert_eq!(w.dropped, 0);
        }
    }

    #[test]
    fn synthetic_writer_pieces_continue_sequences_and_report_drops() {
        let mut trace = SyntheticTrace::new(4321);
        let mut stream = trace.header();
        // Odd sizes shift the alignment of later blocks; tiny targets still write one event.
        for target in [1usize, 3, 77, 8 * 1024, 100 * 1024, 5, 33_333] {
            stream.extend_from_slice(&trace.event_block(target));
            assert_eq!(stream.len() as u64, trace.stream_offset());
        }
        trace.simulate_dropped_events(17);
        stream.extend_from_slice(&trace.event_block(4096));
        stream.extend_from_slice(&trace.sequence_point());
        stream.extend_from_slice(&trace.event_block(4096));
        stream.extend_from_slice(&trace.rundown_block(10_000));
        stream.extend_from_slice(&trace.rundown_block(10_000));
        trace.simulate_dropped_events(3);
        stream.extend_from_slice(&trace.end());
        assert_eq!(stream.len() as u64, trace.stream_offset());
        assert!(stream.ends_with(&[0x06, 0x01]));

        let w = walk(&stream);
        assert!(w.ended);
        assert_eq!(w.pid, 4321);
        assert_eq!(w.events, trace.events_written());
        assert_eq!(w.dropped, 17);
        assert_eq!(
            trace.events_dropped(),
            17,
            "the last pending drop was never applied"
        );
        assert_eq!(
            w.blocks["MetadataBlock"], 2,
            "rundown metadata written once"
        );
        assert_eq!(w.blocks["SPBlock"], 2);
        assert_eq!(w.metadata_records, 3);
        assert_eq!(w.providers[&RUNDOWN_METADATA_ID], RUNDOWN_PROVIDER);
        assert!(w.events_by_metadata[&TICK_METADATA_ID] > 0);
        assert!(w.events_by_metadata[&GC_METADATA_ID] > 0);
        assert!(w.events_by_metadata[&RUNDOWN_METADATA_ID] > 0);
        assert_eq!(w.seqs.len(), CAPTURE_THREADS + 1);
        let last_sp = w.sequence_points.last().unwrap();
        assert_eq!(last_sp.len(), CAPTURE_THREADS + 1);
        assert_eq!(trace.thread_sequences(), *last_sp);
    }

    #[test]
    fn synthetic_output_passes_diagmons_validator() {
        use diagmon::diagnostics::nettrace::NettraceValidator;
        let bytes = synthetic_trace_bytes(3 << 20);
        let expected = walk(&bytes);
        let mut validator = NettraceValidator::new();
        // Feed in awkward pieces to exercise the validator's buffering.
        for chunk in bytes.chunks(7919) {
            validator.feed(chunk).expect("valid chunk");
        }
        let summary = validator.finish().expect("complete, valid trace");
        assert_eq!(summary.events, expected.events);
        assert_eq!(summary.metadata_records, expected.metadata_records);
        assert_eq!(summary.dropped_events_estimate, 0);

        // The same stream with drops, rundown and a mid-stream sequence point.
        let mut trace = SyntheticTrace::new(77);
        let mut stream = trace.header();
        stream.extend_from_slice(&trace.event_block(50_000));
        trace.simulate_dropped_events(40);
        stream.extend_from_slice(&trace.event_block(50_000));
        stream.extend_from_slice(&trace.sequence_point());
        stream.extend_from_slice(&trace.rundown_block(20_000));
        stream.extend_from_slice(&trace.end());
        let mut validator = NettraceValidator::new();
        validator.feed(&stream).unwrap();
        let summary = validator.finish().expect("valid");
        assert_eq!(summary.events, trace.events_written());
        assert_eq!(summary.dropped_events_estimate, 40);
        assert_eq!(summary.sequence_point_blocks, 2);
        assert!(
            summary
                .events_by_provider
                .contains_key("Microsoft-Windows-DotNETRuntimeRundown")
        );

        // Without the end marker it is truncated.
        let mut validator = NettraceValidator::new();
        validator.feed(&bytes[..bytes.len() - 1]).unwrap();
        assert!(validator.finish().unwrap_err().is_truncated());
    }

    // ---------------------------------------------------------------- Process command set

    #[tokio::test]
    async fn process_info3_round_trip() {
        let cookie = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let config = SimulatedRuntimeConfig {
            pid: 31339,
            cookie,
            command_line: "dotnet app.dll ünïcödé 🎉".into(),
            os: "Linux".into(),
            arch: "x64".into(),
            entrypoint_assembly: "app".into(),
            clr_product_version: "8.0.0".into(),
            runtime_identifier: "linux-musl-x64".into(),
            ..Default::default()
        };
        let (_dir, rt) = listen_with(config).await;
        let path = rt.socket_path().unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("dotnet-diagnostic-31339-") && name.ends_with("-socket"));

        let (id, payload) = exchange(&path, 0x04, 0x08, &[]).await;
        assert_eq!(id, 0x00);
        let mut c = Cursor(&payload, 0);
        assert_eq!(c.u32(), 1, "ProcessInfo3 version");
        assert_eq!(c.u64(), 31339);
        // .NET Guid.ToByteArray order: Data1..3 little-endian.
        assert_eq!(
            c.bytes(16),
            &[
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(c.string(), "dotnet app.dll ünïcödé 🎉");
        assert_eq!(c.string(), "Linux");
        assert_eq!(c.string(), "x64");
        assert_eq!(c.string(), "app");
        assert_eq!(c.string(), "8.0.0");
        assert_eq!(c.string(), "linux-musl-x64");
        assert!(c.done());

        let (id, payload) = exchange(&path, 0x04, 0x00, &[]).await;
        assert_eq!(id, 0x00);
        let mut c = Cursor(&payload, 0);
        assert_eq!(c.u64(), 31339);
        c.bytes(16);
        assert_eq!(c.string(), "dotnet app.dll ünïcödé 🎉");
        assert_eq!((c.string(), c.string()), ("Linux".into(), "x64".into()));
        assert!(c.done());

        let (id, payload) = exchange(&path, 0x04, 0x04, &[]).await;
        assert_eq!(id, 0x00);
        let mut c = Cursor(&payload, 0);
        c.bytes(24);
        let strings: Vec<String> = (0..5).map(|_| c.string()).collect();
        assert_eq!(strings[3..], ["app".to_string(), "8.0.0".to_string()]);
        assert!(c.done());
        assert_eq!(
            rt.commands_received(),
            vec![(0x04, 0x08), (0x04, 0x00), (0x04, 0x04)]
        );
        rt.shutdown().await;
        assert!(!path.exists(), "socket removed on shutdown");
    }

    #[tokio::test]
    async fn listen_key_is_the_process_start_time() {
        let (_dir, rt) = listen_with(SimulatedRuntimeConfig::default()).await;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let start: String = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(19)
            .unwrap()
            .into();
        let expected = format!("dotnet-diagnostic-{}-{start}-socket", std::process::id());
        let path = rt.socket_path().unwrap();
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), expected);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn commands_above_the_configured_levels_are_unknown() {
        let config = SimulatedRuntimeConfig {
            process_info_level: 1,
            collect_tracing_level: 2,
            ..Default::default()
        };
        let (_dir, rt) = listen_with(config).await;
        let path = rt.socket_path().unwrap();
        assert_eq!(exchange(&path, 0x04, 0x00, &[]).await.0, 0x00);
        for id in [0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09] {
            assert_eq!(
                expect_error(&path, 0x04, id, &[]).await,
                hresult::UNKNOWN_COMMAND
            );
        }
        // CollectTracing3..6 are unknown; CollectTracing2 works.
        for id in 0x04..=0x08 {
            assert_eq!(
                expect_error(&path, 0x02, id, &simple_ct2(false)).await,
                hresult::UNKNOWN_COMMAND
            );
        }
        let (session, stream) = start_session(&path, 0x03, &simple_ct2(false)).await;
        drop(stream);
        let (id, payload) = exchange(&path, 0x02, 0x01, &session.to_le_bytes()).await;
        assert_eq!((id, payload), (0x00, session.to_le_bytes().to_vec()));
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn level_zero_is_like_dotnet_core_3_1() {
        let config = SimulatedRuntimeConfig {
            process_info_level: 0,
            collect_tracing_level: 2,
            dump_level: 1,
            ..Default::default()
        };
        let (_dir, rt) = listen_with(config).await;
        let path = rt.socket_path().unwrap();
        for id in 0x00..=0x08 {
            assert_eq!(
                expect_error(&path, 0x04, id, &[]).await,
                hresult::UNKNOWN_COMMAND
            );
        }
        for (set, id) in [
            (0x00, 0x00),
            (0x05, 0x01),
            (0xFF, 0x00),
            (0x02, 0x09),
            (0x01, 0x02),
            (0x01, 0x03),
        ] {
            assert_eq!(
                expect_error(&path, set, id, &[]).await,
                hresult::UNKNOWN_COMMAND
            );
        }
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn process_environment_and_resume() {
        let config = SimulatedRuntimeConfig {
            environment: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            ..Default::default()
        };
        let (_dir, rt) = listen_with(config).await;
        let path = rt.socket_path().unwrap();
        let mut set_payload = ipc_string("C");
        set_payload.extend_from_slice(&ipc_string("three"));
        let (id, payload) = exchange(&path, 0x04, 0x03, &set_payload).await;
        assert_eq!((id, payload), (0x00, vec![0, 0, 0, 0]));

        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream
            .write_all(&request_bytes(0x04, 0x02, &[]))
            .await
            .unwrap();
        let (id, head) = read_reply(&mut stream).await;
        assert_eq!(id, 0x00);
        assert_eq!(head.len(), 6);
        let mut c = Cursor(&head, 0);
        let n_bytes = c.u32() as usize;
        assert_eq!(c.u16(), 0);
        let rest = read_to_end(stream).await;
        assert_eq!(rest.len(), n_bytes);
        let mut c = Cursor(&rest, 0);
        let count = c.u32();
        let vars: Vec<String> = (0..count).map(|_| c.string()).collect();
        assert!(c.done());
        assert_eq!(vars, ["A=1", "B=x=y", "C=three"]);

        let (id, payload) = exchange(&path, 0x04, 0x01, &[]).await;
        assert_eq!((id, payload), (0x00, vec![0, 0, 0, 0]));
        assert!(rt.is_resumed());
        rt.shutdown().await;
    }

    // ---------------------------------------------------------------- framing errors

    #[tokio::test]
    async fn framing_and_payload_errors() {
        let (_dir, rt) = listen_with(SimulatedRuntimeConfig::default()).await;
        let path = rt.socket_path().unwrap();

        let mut bad = request_bytes(0x04, 0x00, &[]);
        bad[12] = b'2';
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(&bad).await.unwrap();
        let (id, payload) = read_reply(&mut stream).await;
        assert_eq!(
            (id, payload),
            (0xFF, hresult::UNKNOWN_MAGIC.to_le_bytes().to_vec())
        );

        let mut short = request_bytes(0x04, 0x00, &[]);
        short[14..16].copy_from_slice(&10u16.to_le_bytes());
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(&short).await.unwrap();
        let (id, payload) = read_reply(&mut stream).await;
        assert_eq!(
            (id, payload),
            (0xFF, hresult::BAD_ENCODING.to_le_bytes().to_vec())
        );

        let good = provider_v0("P", 1, 4, "k=v");
        let mut no_nul = 2u32.to_le_bytes().to_vec();
        no_nul.extend_from_slice(&[b'P', 0, b'Q', 0]);
        let mut provider_no_nul = 1u64.to_le_bytes().to_vec();
        provider_no_nul.extend_from_slice(&4u32.to_le_bytes());
        provider_no_nul.extend_from_slice(&no_nul);
        provider_no_nul.extend_from_slice(&0u32.to_le_bytes());
        let mut huge_string = 1u64.to_le_bytes().to_vec();
        huge_string.extend_from_slice(&4u32.to_le_bytes());
        huge_string.extend_from_slice(&u32::MAX.to_le_bytes());
        let full = ct2_payload(64, 1, true, std::slice::from_ref(&good));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", full[..full.len() - 3].to_vec()),
            ("empty", Vec::new()),
            (
                "level 6",
                ct2_payload(64, 1, true, &[provider_v0("P", 1, 6, "")]),
            ),
            (
                "buffer 0",
                ct2_payload(0, 1, true, std::slice::from_ref(&good)),
            ),
            (
                "format 2",
                ct2_payload(64, 2, true, std::slice::from_ref(&good)),
            ),
            (
                "format 0 (NetPerf)",
                ct2_payload(64, 0, true, std::slice::from_ref(&good)),
            ),
            ("no providers", ct2_payload(64, 1, true, &[])),
            (
                "empty name",
                ct2_payload(64, 1, true, &[provider_v0("", 1, 4, "")]),
            ),
            (
                "name without NUL",
                ct2_payload(64, 1, true, &[provider_no_nul]),
            ),
            ("huge string", ct2_payload(64, 1, true, &[huge_string])),
            ("huge count", {
                let mut p = ct2_payload(64, 1, true, &[]);
                let at = p.len() - 4;
                p[at..].copy_from_slice(&u32::MAX.to_le_bytes());
                p
            }),
        ];
        for (what, payload) in cases {
            assert_eq!(
                expect_error(&path, 0x02, 0x03, &payload).await,
                hresult::BAD_ENCODING,
                "{what}"
            );
        }
        assert_eq!(
            expect_error(&path, 0x02, 0x01, &[]).await,
            hresult::BAD_ENCODING,
            "StopTracing without payload"
        );
        let (id, payload) = exchange(&path, 0x02, 0x01, &0xDEADu64.to_le_bytes()).await;
        assert_eq!((id, payload), (0x00, 0xDEADu64.to_le_bytes().to_vec()));
        assert_eq!(rt.active_sessions(), 0);
        assert!(rt.last_collect_request().is_none());
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn survives_misbehaving_clients() {
        let (_dir, rt) = listen_with(SimulatedRuntimeConfig::default()).await;
        let path = rt.socket_path().unwrap();
        // Partial header, then hang up.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&IPC_MAGIC[..7]).await.unwrap();
        drop(s);
        // Header promising a payload that never comes.
        let mut s = UnixStream::connect(&path).await.unwrap();
        let mut r = request_bytes(0x02, 0x03, &[]);
        r[14..16].copy_from_slice(&500u16.to_le_bytes());
        s.write_all(&r).await.unwrap();
        drop(s);
        // Random bytes.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&garbage_bytes()).await.unwrap();
        drop(s);
        // Connect and close immediately.
        drop(UnixStream::connect(&path).await.unwrap());
        // Start a session and hang up on it right away.
        let (_, stream) = start_session(&path, 0x03, &simple_ct2(true)).await;
        drop(stream);
        let (id, _) = exchange(&path, 0x04, 0x00, &[]).await;
        assert_eq!(id, 0x00, "still serving");
        let deadline = Instant::now() + T;
        while rt.active_sessions() > 0 {
            assert!(Instant::now() < deadline, "abandoned session ends");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rt.shutdown().await;
    }

    // ---------------------------------------------------------------- EventPipe sessions

    #[tokio::test]
    async fn paced_session_stops_on_another_connection() {
        let (_dir, rt) = listen_with(SimulatedRuntimeConfig::default()).await;
        let path = rt.socket_path().unwrap();
        // CollectTracing4 with an explicit rundown keyword.
        let mut payload = 16u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.extend_from_slice(&0x8002_0139u64.to_le_bytes());
        payload.push(0);
        payload.extend_from_slice(&2u32.to_le_bytes());
        payload.extend_from_slice(&provider_v0("Microsoft-Windows-DotNETRuntime", 0x1, 5, ""));
        payload.extend_from_slice(&provider_v0(
            "System.Runtime",
            0,
            4,
            "EventCounterIntervalSec=1",
        ));
        let (session, stream) = start_session(&path, 0x05, &payload).await;
        assert_eq!(rt.active_sessions(), 1);
        let reader = tokio::spawn(read_to_end(stream));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (id, reply) = exchange(&path, 0x02, 0x01, &session.to_le_bytes()).await;
        assert_eq!((id, reply), (0x00, session.to_le_bytes().to_vec()));
        let bytes = reader.await.unwrap();
        assert!(bytes.ends_with(&[0x06, 0x01]));
        let w = walk(&bytes);
        assert!(w.ended);
        assert!(w.blocks["EventBlock"] >= 4, "{:?}", w.blocks);
        assert!(w.events_by_metadata[&RUNDOWN_METADATA_ID] > 0, "rundown");
        assert_eq!(rt.active_sessions(), 0);

        let request = rt.last_collect_request().unwrap();
        assert_eq!(request.command_id, 0x05);
        assert_eq!(request.buffer_size_mb, 16);
        assert_eq!(request.format, 1);
        assert!(request.request_rundown && !request.request_stackwalk);
        assert_eq!(request.rundown_keyword, 0x8002_0139);
        assert_eq!(request.providers.len(), 2);
        assert_eq!(request.providers[1].name, "System.Runtime");
        assert_eq!(
            request.providers[1].filter_data.as_deref(),
            Some("EventCounterIntervalSec=1")
        );
        assert_eq!(request.providers[0].filter_data, None);
        assert_eq!(
            (request.providers[0].keywords, request.providers[0].level),
            (1, 5)
        );
        assert_eq!(rt.commands_received(), vec![(0x02, 0x05), (0x02, 0x01)]);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn collect_tracing5_and_6_payloads() {
        let config = SimulatedRuntimeConfig {
            collect_tracing_level: 6,
            ..Default::default()
        };
        let (_dir, rt) = listen_with(config).await;
        let path = rt.socket_path().unwrap();
        let ct5 = |session_type: u32, mode: Option<u32>| {
            let mut p = session_type.to_le_bytes().to_vec();
            p.extend_from_slice(&8u32.to_le_bytes());
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&0u64.to_le_bytes());
            p.push(1);
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&provider_v0("Diagmon-Synthetic", u64::MAX, 4, ""));
            p.push(1);
            p.extend_from_slice(&2u32.to_le_bytes());
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&7u32.to_le_bytes());
            if let Some(mode) = mode {
                p.extend_from_slice(&mode.to_le_bytes());
            }
            p
        };
        let (session, stream) = start_session(&path, 0x06, &ct5(0, None)).await;
        let request = rt.last_collect_request().unwrap();
        assert_eq!(
            request.providers[0].event_filter,
            Some(EventFilter {
                enable: true,
                event_ids: vec![1, 7]
            })
        );
        assert!(!request.request_rundown);
        let reader = tokio::spawn(read_to_end(stream));
        exchange(&path, 0x02, 0x01, &session.to_le_bytes()).await;
        let w = walk(&reader.await.unwrap());
        assert!(w.ended);
        assert!(
            !w.events_by_metadata.contains_key(&RUNDOWN_METADATA_ID),
            "no rundown"
        );

        let (session, stream) = start_session(&path, 0x07, &ct5(0, Some(1))).await;
        assert_eq!(rt.last_collect_request().unwrap().buffer_mode, Some(1));
        drop(stream);
        exchange(&path, 0x02, 0x01, &session.to_le_bytes()).await;
        assert_eq!(
            expect_error(&path, 0x02, 0x07, &ct5(0, Some(2))).await,
            hresult::BAD_ENCODING
        );
        assert_eq!(
            expect_error(&path, 0x02, 0x06, &ct5(1, None)).await,
            hresult::NOT_SUPPORTED
        );
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn full_speed_stream_of_10_mb_ends_with_the_end_marker() {
        let total = 10u64 << 20;
        let config = SimulatedRuntimeConfig {
            stream: StreamBehaviour::FullSpeed { total_bytes: total },
            ..Default::default()
        };
        let (_dir, rt) = listen_with(config).await;
        let path = rt.socket_path().unwrap();
        let (_, stream) = start_session(&path, 0x02, &{
            let mut p = 256u32.to_le_bytes().to_vec();
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&provider_v0("Diagmon-Synthetic", 1, 4, ""));
            p
        })
        .await;
        let bytes = read_to_end(stream).await;
        assert!(bytes.ends_with(&[0x06, 0x01]));
        assert!(
            (bytes.len() as u64).abs_diff(total) < 1024,
            "{}",
            bytes.len()
        );
        let w = walk(&bytes);
        assert!(w.ended);
        assert_eq!(w.dropped, 0);
        assert!(w.events > 50_000);
        assert!(w.blocks["SPBlock"] >= 1);
        assert!(!w.events_by_metadata.contains_key(&RUNDOWN_METADATA_ID));
        let request = rt.last_collect_request().unwrap();
        assert!(
            request.request_rundown && request.request_stackwalk,
            "CT1 defaults"
        );
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn full_speed_stopped_early_writes_rundown_and_end() {
        let config = SimulatedRuntimeConfig {
            stream: StreamBehaviour::FullSpeed {
                total_bytes: u64::MAX,
            },
            ..Default::default()
        };
        let (_dir, rt) = listen_with(config).await;
        let path = rt.socket_path().unwrap();
        let (session, stream) = start_session(&path, 0x03, &simple_ct2(true)).await;
        let reader = tokio::spawn(read_to_end(stream));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (id, _) = exchange(&path, 0x02, 0x01, &session.to_le_bytes()).await;
        assert_eq!(id, 0x00);
        let bytes = reader.await.unwrap();
        let w = walk(&bytes);
        assert!(w.ended);
        assert!(w.events_by_metadata[&RUNDOWN_METADATA_ID] > 0);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn disconnect_after_sends_exactly_that_many_bytes() {
        for after in [0u64, 10, 500, 100_000, 1_000_003] {
            let config = SimulatedRuntimeConfig {
                stream: StreamBehaviour::DisconnectAfter { after_bytes: after },
                ..Default::default()
            };
            let (_dir, rt) = listen_with(config).await;
            let path = rt.socket_path().unwrap();
            let (_, stream) = start_session(&path, 0x03, &simple_ct2(true)).await;
            let bytes = read_to_end(stream).await;
            assert_eq!(bytes.len() as u64, after);
            let full = synthetic_trace_bytes(2 << 20);
            // Same layout as a synthetic stream up to the Trace object's time fields.
            assert_eq!(bytes[..bytes.len().min(40)], full[..bytes.len().min(40)]);
            rt.shutdown().await;
        }
    }

    // ---------------------------------------------------------------- reverse (connect) mode

    async fn accept_advertised(listener: &UnixListener) -> (UnixStream, [u8; ADVERTISE_SIZE]) {
        let (mut stream, _) = timeout(T, listener.accept()).await.unwrap().unwrap();
        let mut advertise = [0u8; ADVERTISE_SIZE];
        timeout(T, stream.read_exact(&mut advertise))
            .await
            .unwrap()
            .unwrap();
        (stream, advertise)
    }

    #[tokio::test]
    async fn reverse_mode_advertises_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let monitor = dir.path().join("monitor.sock");
        let config = SimulatedRuntimeConfig {
            pid: 4242,
            ..Default::default()
        };
        let cookie = config.cookie;
        // Start the runtime before the monitor listens: it must retry.
        let rt = SimulatedRuntime::connect(&monitor, true, config)
            .await
            .unwrap();
        assert!(rt.socket_path().is_none());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listener = UnixListener::bind(&monitor).unwrap();
        let (mut first, advertise) = accept_advertised(&listener).await;
        assert_eq!(&advertise[..8], b"ADVR_V1\0");
        assert_eq!(&advertise[8..24], &cookie.to_bytes_le());
        assert_eq!(
            u64::from_le_bytes(advertise[24..32].try_into().unwrap()),
            4242
        );
        assert_eq!(&advertise[32..], &[0, 0]);
        assert!(!rt.is_resumed());

        // ProcessInfo on the first connection; a fresh advertised connection follows.
        first
            .write_all(&request_bytes(0x04, 0x00, &[]))
            .await
            .unwrap();
        let (second, advertise2) = accept_advertised(&listener).await;
        assert_eq!(advertise2, advertise);
        let (id, payload) = read_reply(&mut first).await;
        assert_eq!(id, 0x00);
        assert_eq!(u64::from_le_bytes(payload[..8].try_into().unwrap()), 4242);

        // A session on the second connection, ResumeRuntime on the third, stop on the fourth.
        let mut session_stream = second;
        session_stream
            .write_all(&request_bytes(0x02, 0x03, &simple_ct2(false)))
            .await
            .unwrap();
        let (mut third, _) = accept_advertised(&listener).await;
        let (id, session) = read_reply(&mut session_stream).await;
        assert_eq!(id, 0x00);
        let reader = tokio::spawn(read_to_end(session_stream));
        third
            .write_all(&request_bytes(0x04, 0x01, &[]))
            .await
            .unwrap();
        let (mut fourth, _) = accept_advertised(&listener).await;
        assert_eq!(read_reply(&mut third).await, (0x00, vec![0, 0, 0, 0]));
        assert!(rt.is_resumed());
        fourth
            .write_all(&request_bytes(0x02, 0x01, &session))
            .await
            .unwrap();
        assert_eq!(read_reply(&mut fourth).await, (0x00, session.clone()));
        assert!(walk(&reader.await.unwrap()).ended);

        // The monitor hangs up an idle connection: the runtime reconnects.
        let (fifth, _) = accept_advertised(&listener).await;
        drop(fifth);
        let (_sixth, advertise6) = accept_advertised(&listener).await;
        assert_eq!(advertise6, advertise);
        assert_eq!(
            rt.commands_received(),
            vec![(0x04, 0x00), (0x02, 0x03), (0x04, 0x01), (0x02, 0x01)]
        );
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn reverse_mode_without_suspend_is_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let monitor = dir.path().join("m.sock");
        let listener = UnixListener::bind(&monitor).unwrap();
        let rt = SimulatedRuntime::connect(&monitor, false, SimulatedRuntimeConfig::default())
            .await
            .unwrap();
        assert!(rt.is_resumed());
        let (_s, advertise) = accept_advertised(&listener).await;
        assert_eq!(&advertise[..8], ADVERTISE_MAGIC);
        rt.shutdown().await;
    }

    // ---------------------------------------------------------------- faults

    async fn faulty(fault: Fault) -> (tempfile::TempDir, SimulatedRuntime, PathBuf) {
        let (dir, rt) = listen_with(SimulatedRuntimeConfig {
            fault: Some(fault),
            ..Default::default()
        })
        .await;
        let path = rt.socket_path().unwrap();
        (dir, rt, path)
    }

    /// Sends ProcessInfo and reads what arrives within `wait` (EOF ends early).
    async fn raw_exchange(path: &Path, wait: Duration) -> (Vec<u8>, bool) {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream
            .write_all(&request_bytes(0x04, 0x00, &[]))
            .await
            .unwrap();
        let mut got = Vec::new();
        let eof = timeout(wait, stream.read_to_end(&mut got)).await.is_ok();
        (got, eof)
    }

    #[tokio::test]
    async fn fault_garbage() {
        let (_dir, rt, path) = faulty(Fault::Garbage).await;
        for _ in 0..3 {
            let (got, eof) = raw_exchange(&path, T).await;
            assert!(eof, "closes after the garbage");
            assert!(!got.is_empty() && got.len() <= 64);
            assert_ne!(got[0], b'D');
        }
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn fault_half_header_then_stall() {
        let (_dir, rt, path) = faulty(Fault::HalfHeaderThenStall).await;
        let (got, eof) = raw_exchange(&path, Duration::from_millis(300)).await;
        assert!(!eof, "stalls with the socket open");
        assert_eq!(got, b"DOTNET_IPC");
        // The next connection gets the same treatment.
        let (got, eof) = raw_exchange(&path, Duration::from_millis(300)).await;
        assert!(!eof);
        assert_eq!(got.len(), 10);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn fault_oversized_length() {
        let (_dir, rt, path) = faulty(Fault::OversizedLength).await;
        let (got, eof) = raw_exchange(&path, Duration::from_millis(300)).await;
        assert!(!eof);
        assert_eq!(got.len(), 36);
        assert_eq!(&got[..14], IPC_MAGIC);
        assert_eq!(u16::from_le_bytes([got[14], got[15]]), 65535);
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn fault_silent() {
        let (_dir, rt, path) = faulty(Fault::Silent).await;
        let (got, eof) = raw_exchange(&path, Duration::from_millis(300)).await;
        assert!(!eof && got.is_empty());
        let (got, eof) = raw_exchange(&path, Duration::from_millis(300)).await;
        assert!(!eof && got.is_empty());
        assert!(rt.commands_received().is_empty(), "never reads");
        rt.shutdown().await;
    }

    #[tokio::test]
    async fn fault_huge_string_length() {
        let (_dir, rt, path) = faulty(Fault::HugeStringLength).await;
        for id in [0x00, 0x04, 0x08] {
            let (reply_id, payload) = exchange(&path, 0x04, id, &[]).await;
            assert_eq!(reply_id, 0x00);
            let skip = if id == 0x08 { 4 } else { 0 };
            let mut c = Cursor(&payload[skip..], 0);
            c.u64();
            c.bytes(16);
            assert_eq!(c.u32(), 1 << 31);
            assert!(payload.len() < 100);
        }
        // Other commands are unaffected.
        assert_eq!(exchange(&path, 0x04, 0x01, &[]).await.0, 0x00);
        rt.shutdown().await;
    }

    // ---------------------------------------------------------------- throughput (ad hoc)

    /// `cargo test -p diagmon-tests --release --lib -- --ignored --nocapture throughput`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, run in release"]
    async fn throughput() {
        // Pure generation.
        let mut trace = SyntheticTrace::new(1);
        let mut buf = Vec::with_capacity(1 << 20);
        let started = Instant::now();
        let mut generated = 0u64;
        while generated < 4 << 30 {
            buf.clear();
            for _ in 0..4 {
                trace.write_event_block(&mut buf, 64 * 1024);
            }
            generated += buf.len() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "generation: {:.0} MB/s ({} events)",
            generated as f64 / secs / 1e6,
            trace.events_written()
        );

        // Through a Unix socket, simulator to a raw reader in the same process.
        let total = 2u64 << 30;
        let (_dir, rt) = listen_with(SimulatedRuntimeConfig {
            stream: StreamBehaviour::FullSpeed { total_bytes: total },
            ..Default::default()
        })
        .await;
        let path = rt.socket_path().unwrap();
        let (_, mut stream) = start_session(&path, 0x03, &simple_ct2(false)).await;
        let started = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0u64;
        let mut tail = Vec::new();
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            received += n as u64;
            tail = buf[..n].to_vec();
        }
        let secs = started.elapsed().as_secs_f64();
        assert!(tail.ends_with(&[0x06, 0x01]));
        println!(
            "socket: {received} bytes in {secs:.2} s = {:.0} MB/s",
            received as f64 / secs / 1e6
        );
        rt.shutdown().await;
    }
}
