//! Heap snapshots (`.gcdump`): the heap graph of a .NET process, taken the way `dotnet-gcdump`
//! takes it, written in the format PerfView, Visual Studio and `dotnet-gcdump report` open, and
//! summarised by diagmon itself.
//!
//! One snapshot goes like this ([`GcDumpSource`]):
//! 1. a session on `Microsoft-DotNETCore-SampleProfiler` is started and stopped at once (it makes
//!    the runtime flush its type table);
//! 2. a session on `Microsoft-Windows-DotNETRuntime` at Verbose with the keywords GC, Type,
//!    GCHeapDump, GCHeapCollect and GCHeapAndTypeNames ([`HEAP_KEYWORDS`]), without rundown: the
//!    runtime answers with an induced, blocking gen-2 GC that walks the heap and describes every
//!    live object, reference and root in events ([`heap`]);
//! 3. as soon as that GC's `GCStop` is read, the session is stopped, the rest of its stream
//!    drained, and the graph built and written ([`format`]) on a blocking thread;
//! 4. the file is handed to the pipeline in chunks.
//!
//! The whole capture has a deadline (30 s unless asked otherwise); past it, or if the process
//! exits, or the events do not make a whole graph, the operation fails and says why. One gcdump
//! runs per process at a time. `docs/gcdump.md` documents the format and the cost.

pub mod dominators;
pub mod format;
pub mod heap;
pub mod report;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::nettrace::NettraceValidator;
use crate::diagnostics::{DiagnosticsClient, DiagnosticsError, EventProvider, SessionConfig};
use crate::operations::{
    ArtifactKind, ArtifactSource, ArtifactSpec, ErrorCode, GracefulStop, OperationError,
    SummaryKind,
};
use crate::processes::ProcessRecord;
use format::HeapDump;
use heap::{HeapBuilder, RUNTIME_PROVIDER};
use report::HeapReport;

/// GC (0x1) | Type (0x80000) | GCHeapDump (0x100000) | GCHeapCollect (0x800000) |
/// GCHeapAndTypeNames (0x1000000).
pub const HEAP_KEYWORDS: u64 = 0x1980001;

/// The provider whose short session flushes the runtime's type table.
pub const SAMPLE_PROFILER: &str = "Microsoft-DotNETCore-SampleProfiler";

/// The default deadline of a whole snapshot, as `dotnet-gcdump`'s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest deadline a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long the type-flush session may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes per chunk handed to the pipeline.
const CHUNK: usize = 256 << 10;

/// The tool name written into the file.
const CREATION_TOOL: &str = "diagmon";

/// A heap snapshot of a process.
#[derive(Debug, Clone)]
pub struct GcDumpSpec {
    /// The deadline of the whole snapshot.
    pub timeout: Duration,
    /// Whether the operation's summary carries the heap report.
    pub report: bool,
}

impl Default for GcDumpSpec {
    fn default() -> Self {
        GcDumpSpec {
            timeout: DEFAULT_TIMEOUT,
            report: false,
        }
    }
}

/// The processes a gcdump is running on.
fn running() -> &'static Mutex<HashSet<u64>> {
    static RUNNING: OnceLock<Mutex<HashSet<u64>>> = OnceLock::new();
    RUNNING.get_or_init(Mutex::default)
}

/// Marks a process as having a gcdump running, until dropped.
#[derive(Debug)]
struct RunningGuard(u64);

impl RunningGuard {
    fn take(pid: u64) -> Result<RunningGuard, OperationError> {
        let mut set = running().lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(pid) {
            return Err(OperationError::new(
                ErrorCode::GcDumpInProgress,
                format!(
                    "a gcdump of process {pid} is already running; each one induces a full blocking GC, so diagmon runs one per process at a time: try again when it is done"
                ),
            ));
        }
        Ok(RunningGuard(pid))
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        running()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// What a snapshot's capture measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureFigures {
    /// Bytes of the heap-walk session's nettrace stream.
    pub nettrace_bytes: u64,
    /// Bytes of the `.gcdump` file.
    pub gcdump_bytes: u64,
    /// Objects the heap walk described.
    pub nodes: u64,
    /// References it described.
    pub edges: u64,
    /// Roots it described.
    pub roots: u64,
    /// Milliseconds from the start to the finished file.
    pub milliseconds: u64,
    /// Of those, milliseconds from the start to the end of the heap-walk session (the runtime's
    /// GC and diagmon reading its events).
    pub walk_milliseconds: u64,
}

/// The report the operation's summary carries when asked for: the heap report and the capture's
/// figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcDumpReport {
    /// Per type, objects and bytes.
    pub heap: HeapReport,
    /// What the capture measured.
    pub capture: CaptureFigures,
}

/// A running snapshot: captures on its first chunk, then hands out the file.
#[derive(Debug)]
pub struct GcDumpSource {
    client: DiagnosticsClient,
    pid: u64,
    process_name: String,
    spec: GcDumpSpec,
    _running: RunningGuard,
    output: Option<Bytes>,
    report: Option<GcDumpReport>,
}

impl ArtifactSpec for GcDumpSpec {
    type Source = GcDumpSource;

    fn kind(&self) -> ArtifactKind {
        ArtifactKind::GcDump
    }

    async fn open(
        self,
        client: DiagnosticsClient,
        process: &ProcessRecord,
    ) -> Result<GcDumpSource, OperationError> {
        let guard = RunningGuard::take(process.pid)?;
        Ok(GcDumpSource {
            client,
            pid: process.pid,
            process_name: process.name.clone(),
            spec: self,
            _running: guard,
            output: None,
            report: None,
        })
    }
}

impl ArtifactSource for GcDumpSource {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, OperationError> {
        if self.output.is_none() {
            let captured = capture(
                &self.client,
                self.pid,
                &self.process_name,
                self.spec.timeout,
                self.spec.report,
            )
            .await?;
            self.report = captured.report;
            self.output = Some(captured.file);
        }
        let Some(output) = self.output.as_mut() else {
            return Ok(None);
        };
        if output.is_empty() {
            return Ok(None);
        }
        let take = output.len().min(CHUNK);
        Ok(Some(output.split_to(take)))
    }

    fn graceful_stop(&self) -> Option<Arc<dyn GracefulStop>> {
        None
    }

    fn summary_kind(&self) -> SummaryKind {
        SummaryKind::Bytes
    }

    fn report(&self) -> Option<serde_json::Value> {
        self.report
            .as_ref()
            .and_then(|report| serde_json::to_value(report).ok())
    }
}

/// A finished snapshot.
#[derive(Debug)]
pub struct Captured {
    /// The `.gcdump` file.
    pub file: Bytes,
    /// The report, when asked for.
    pub report: Option<GcDumpReport>,
    /// What the capture measured.
    pub figures: CaptureFigures,
}

/// Takes a snapshot of process `pid` through `client` within `timeout`.
pub async fn capture(
    client: &DiagnosticsClient,
    pid: u64,
    process_name: &str,
    timeout: Duration,
    with_report: bool,
) -> Result<Captured, OperationError> {
    let started = Instant::now();
    let walked = tokio::time::timeout(timeout, walk_heap(client, pid))
        .await
        .map_err(|_| {
            OperationError::new(
                ErrorCode::RuntimeTimeout,
                format!(
                    "the gcdump of process {pid} did not finish within its timeout of {timeout:?}: the runtime's heap walk was not complete (a larger heap needs a longer timeout)"
                ),
            )
        })??;
    let walk_milliseconds = started.elapsed().as_millis() as u64;
    let (builder, nettrace_bytes) = walked;
    let counts = builder.counts();
    let process_name = process_name.to_owned();
    let built =
        tokio::task::spawn_blocking(move || build_file(builder, pid, process_name, with_report))
            .await
            .map_err(|error| {
                OperationError::new(
                    ErrorCode::InternalError,
                    format!("building the heap graph failed: {error}"),
                )
            })??;
    let (file, heap_report) = built;
    let figures = CaptureFigures {
        nettrace_bytes,
        gcdump_bytes: file.len() as u64,
        nodes: counts.nodes,
        edges: counts.edges,
        roots: counts.roots,
        milliseconds: started.elapsed().as_millis() as u64,
        walk_milliseconds,
    };
    tracing::info!(pid, ?figures, "gcdump captured");
    Ok(Captured {
        file: Bytes::from(file),
        report: heap_report.map(|heap| GcDumpReport {
            heap,
            capture: figures,
        }),
        figures,
    })
}

/// Builds the graph and the file (and the report), off the async threads.
fn build_file(
    builder: HeapBuilder,
    pid: u64,
    process_name: String,
    with_report: bool,
) -> Result<(Vec<u8>, Option<HeapReport>), OperationError> {
    let graph = builder.finish().map_err(|reason| {
        OperationError::new(
            ErrorCode::GcDumpIncomplete,
            format!("the heap walk of process {pid} cannot make a whole graph: {reason}"),
        )
    })?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let dump = HeapDump {
        graph,
        size_of_all_segments: 0,
        collection_log: None,
        time_collected_ticks: format::UNIX_EPOCH_TICKS + (now.as_nanos() / 100) as i64,
        machine_name: machine_name(),
        process_name: Some(process_name),
        process_id: i32::try_from(pid).unwrap_or(-1),
        creation_tool: Some(CREATION_TOOL.to_owned()),
    };
    let internal = |error: format::FormatError| {
        OperationError::new(
            ErrorCode::GcDumpIncomplete,
            format!("cannot write the heap graph of process {pid}: {error}"),
        )
    };
    let file = format::write(&dump).map_err(internal)?;
    let heap_report = if with_report {
        Some(report::report(&dump, None).map_err(internal)?)
    } else {
        None
    };
    Ok((file, heap_report))
}

fn machine_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Runs the two sessions and collects the heap walk; returns it and the nettrace bytes read.
async fn walk_heap(
    client: &DiagnosticsClient,
    pid: u64,
) -> Result<(HeapBuilder, u64), OperationError> {
    flush_type_table(client, pid).await?;
    let mut config =
        SessionConfig::new(vec![EventProvider::new(RUNTIME_PROVIDER, HEAP_KEYWORDS, 5)]);
    config.rundown = Rundown::Off;
    let mut session = client
        .start_session(&config)
        .await
        .map_err(|error| runtime_failure(pid, "start the heap-walk session", error))?;
    let builder = Arc::new(Mutex::new(HeapBuilder::new()));
    let stop = session.stop_handle();
    let mut validator = NettraceValidator::with_observer(Box::new({
        let builder = Arc::clone(&builder);
        move |record| {
            let ended = builder
                .lock()
                .map(|mut builder| builder.on_record(record))
                .unwrap_or(false);
            if ended {
                // The GC ended: stop the session at once (from another task: this one reads it).
                let stop = stop.clone();
                tokio::spawn(async move {
                    if let Err(error) = stop.stop().await {
                        tracing::warn!(%error, "stopping the gcdump session failed");
                    }
                });
            }
        }
    }));
    let mut bytes = 0u64;
    loop {
        match session.next_chunk().await {
            Ok(Some(chunk)) => {
                bytes += chunk.len() as u64;
                validator.feed(&chunk).map_err(|error| {
                    OperationError::new(
                        ErrorCode::TraceInvalid,
                        format!("the runtime sent an invalid trace: {error}"),
                    )
                })?;
            }
            Ok(None) => break,
            Err(error) => {
                let started = builder.lock().map(|b| b.has_started()).unwrap_or(false);
                let what = if started {
                    "finish the heap walk"
                } else {
                    "start the heap walk"
                };
                return Err(runtime_failure(pid, what, error));
            }
        }
    }
    let summary = validator.finish().map_err(|error| {
        OperationError::new(
            ErrorCode::TraceInvalid,
            format!("the heap-walk trace is not whole: {error}"),
        )
    })?;
    if summary.pointer_size != 8 {
        return Err(OperationError::new(
            ErrorCode::GcDumpIncomplete,
            format!(
                "process {pid} has {}-byte pointers; diagmon reads the heap walk of 64-bit processes only",
                summary.pointer_size
            ),
        ));
    }
    let builder = Arc::try_unwrap(builder)
        .map_err(|_| {
            OperationError::new(ErrorCode::InternalError, "the heap walk is still shared")
        })?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    if !builder.is_done() {
        return Err(OperationError::new(
            ErrorCode::GcDumpIncomplete,
            format!(
                "the runtime's trace ended before the heap walk of process {pid} was complete ({} objects described)",
                builder.counts().nodes
            ),
        ));
    }
    Ok((builder, bytes))
}

/// The short SampleProfiler session that makes the runtime flush its type table.
async fn flush_type_table(client: &DiagnosticsClient, pid: u64) -> Result<(), OperationError> {
    let mut config = SessionConfig::new(vec![EventProvider::new(SAMPLE_PROFILER, 0, 4)]);
    config.rundown = Rundown::Off;
    let mut session = client
        .start_session(&config)
        .await
        .map_err(|error| runtime_failure(pid, "start the type-flush session", error))?;
    let stop = session.stop_handle();
    let drained = tokio::time::timeout(FLUSH_TIMEOUT, async {
        // Stopped as soon as the first bytes arrived; the stream then ends by itself.
        let first = session.next_chunk().await?;
        tokio::spawn(async move {
            if let Err(error) = stop.stop().await {
                tracing::debug!(%error, "stopping the type-flush session failed");
            }
        });
        if first.is_some() {
            while session.next_chunk().await?.is_some() {}
        }
        Ok::<(), DiagnosticsError>(())
    })
    .await;
    match drained {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(runtime_failure(pid, "flush its type table", error)),
        Err(_) => Err(OperationError::new(
            ErrorCode::RuntimeTimeout,
            format!("process {pid} did not end its type-flush session within {FLUSH_TIMEOUT:?}"),
        )),
    }
}

/// A runtime failure, told as the process's exit when the process is gone.
fn runtime_failure(pid: u64, what: &str, error: DiagnosticsError) -> OperationError {
    let alive = u32::try_from(pid).is_ok_and(crate::procfs::is_alive);
    if !alive {
        return OperationError::new(
            ErrorCode::TargetGone,
            format!("process {pid} exited during the gcdump, before it could {what}: {error}"),
        );
    }
    let mut failure = OperationError::from(error);
    failure.message = format!(
        "the gcdump of process {pid} could not {what}: {}",
        failure.message
    );
    failure
}

/// Builds a snapshot's report from a `.gcdump` file's bytes.
pub fn report_of_file(bytes: &[u8], top: Option<usize>) -> Result<HeapReport, format::FormatError> {
    let dump = format::read(bytes)?;
    report::report(&dump, top)
}
