//! The one entry point that starts an artifact, for the HTTP routes, the CLI and anything else
//! that captures.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::pipeline;
use super::sink::{self, ArtifactStream, Sink, StreamSender};
use super::source::ArtifactSpec;
use super::{
    ErrorCode, Operation, OperationError, OperationProcess, OperationRegistry, Outcome, StartError,
};
use crate::config::{Config, DefaultProcessConfig};
use crate::egress::{Artifact, EgressHost};
use crate::processes::{ProcessDirectory, ProcessRecord, ProcessSelector, resolve};

/// Where an artifact goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Streamed to the caller: [`Started::stream`] yields the bytes.
    Stream,
    /// Uploaded to the named egress provider.
    Egress(String),
    /// Written to this file (created or truncated).
    File(PathBuf),
}

/// One request to capture an artifact.
#[derive(Debug, Clone)]
pub struct StartRequest<A> {
    /// What to capture.
    pub artifact: A,
    /// Which process; an empty selector means the default process.
    pub target: ProcessSelector,
    /// Where the bytes go.
    pub destination: Destination,
    /// Labels for the operation.
    pub tags: BTreeSet<String>,
    /// Stop gracefully after this long (stoppable artifacts only); `None` = until stopped or
    /// until the artifact ends by itself.
    pub duration: Option<Duration>,
}

/// A started artifact.
#[derive(Debug)]
pub struct Started {
    /// Its operation, now Running.
    pub operation: Arc<Operation>,
    /// The artifact's suggested file name.
    pub file_name: String,
    /// The artifact's MIME type.
    pub content_type: &'static str,
    /// The bytes, for [`Destination::Stream`]. Dropping it before its end cancels the operation.
    pub stream: Option<ArtifactStream>,
}

/// Starts artifacts and keeps their operations. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Operations {
    registry: Arc<OperationRegistry>,
    processes: ProcessDirectory,
    egress: EgressHost,
    default_process: Arc<DefaultProcessConfig>,
    stream_send_timeout: Duration,
}

/// The sink an operation will write to, before its source is open.
enum PlannedSink {
    Stream(StreamSender),
    Egress(String),
    File(PathBuf),
}

impl Operations {
    /// Artifacts of the processes in `processes`, egressed through `egress`, registered in
    /// `registry`, under `config`'s default process and limits.
    pub fn new(
        registry: Arc<OperationRegistry>,
        processes: ProcessDirectory,
        egress: EgressHost,
        config: &Config,
    ) -> Self {
        Operations {
            registry,
            processes,
            egress,
            default_process: Arc::new(config.default_process.clone()),
            stream_send_timeout: Duration::from_secs(config.limits.stream_send_timeout_seconds),
        }
    }

    /// The registry of operations.
    pub fn registry(&self) -> &OperationRegistry {
        &self.registry
    }

    /// Starts an artifact: resolves the process, takes a slot under the kind's limit, registers
    /// the operation, opens the source and the destination, and runs the pipeline on a task of
    /// its own. Returns once the artifact is running, or why it is not. The start itself runs on
    /// that task too: if the caller goes away meanwhile, the operation ends Cancelled instead of
    /// staying Starting.
    pub async fn start<A: ArtifactSpec>(
        &self,
        request: StartRequest<A>,
    ) -> Result<Started, StartError> {
        let StartRequest {
            artifact,
            target,
            destination,
            tags,
            duration,
        } = request;
        if let Destination::Egress(provider) = &destination
            && !self.egress.has_provider(provider)
        {
            return Err(StartError::UnknownEgressProvider(provider.clone()));
        }
        let processes = self.processes.list().await;
        let process = resolve(&processes, &target, &self.default_process)?.clone();
        let kind = artifact.kind();
        let slot = self
            .registry
            .try_reserve(kind)
            .ok_or(StartError::RateLimited(kind))?;
        let egress_provider = match &destination {
            Destination::Egress(provider) => Some(provider.clone()),
            Destination::Stream | Destination::File(_) => None,
        };
        let operation = self.registry.register(
            OperationProcess::from(&process),
            slot,
            egress_provider,
            tags,
        );
        let (planned, stream) = match destination {
            Destination::Stream => {
                let (sender, stream) = sink::stream(self.stream_send_timeout);
                (PlannedSink::Stream(sender), Some(stream))
            }
            Destination::Egress(provider) => (PlannedSink::Egress(provider), None),
            Destination::File(path) => (PlannedSink::File(path), None),
        };
        let content_type = kind.content_type();
        let (ready, started) = oneshot::channel();
        tokio::spawn(launch(
            Launch {
                operation: operation.clone(),
                process,
                directory: self.processes.clone(),
                egress: self.egress.clone(),
                sink: planned,
                duration,
            },
            artifact,
            ready,
        ));
        match started.await {
            Ok(Ok(file_name)) => Ok(Started {
                operation,
                file_name,
                content_type,
                stream,
            }),
            Ok(Err(error)) => Err(StartError::Failed(error)),
            Err(_) => Err(StartError::Failed(OperationError::new(
                ErrorCode::InternalError,
                "the operation's task ended before the artifact started",
            ))),
        }
    }
}

/// What the start-up task needs besides the artifact.
struct Launch {
    operation: Arc<Operation>,
    process: ProcessRecord,
    directory: ProcessDirectory,
    egress: EgressHost,
    sink: PlannedSink,
    duration: Option<Duration>,
}

/// A sink as far as it is opened before the source.
#[allow(clippy::large_enum_variant)] // One per start, matched once.
enum SinkBeforeSource {
    /// Open: a streamed body, or an upload holding its provider's instance.
    Ready(Sink),
    /// A file, created only once the source is open, so that a failed start leaves none.
    File(PathBuf),
}

/// Opens the sink and the source, tells the caller (with the artifact's file name), and runs the
/// pipeline. Failures are recorded on the operation and sent to the caller.
async fn launch<A: ArtifactSpec>(
    launch: Launch,
    artifact: A,
    ready: oneshot::Sender<Result<String, OperationError>>,
) {
    let Launch {
        operation,
        process,
        directory,
        egress,
        sink,
        duration,
    } = launch;
    let fail = |error: OperationError, ready: oneshot::Sender<_>| {
        operation.finish(Outcome::Failed(error.clone()));
        let _ = ready.send(Err(error));
    };
    let started_at = SystemTime::now();
    let kind = artifact.kind();
    let file_name = kind.file_name(started_at, process.pid);
    // An upload takes one of its provider's instances before the source opens: it may wait for
    // one (`limits.max_instances`), and a session opened first would go unread meanwhile (the
    // runtime drops events once its buffers fill, and the wait counts against the capture).
    let sink = match sink {
        PlannedSink::Stream(sender) => SinkBeforeSource::Ready(Sink::Stream(sender)),
        PlannedSink::Egress(provider) => {
            let described = Artifact::new(
                kind,
                process.pid,
                process.uid,
                process.name.clone(),
                operation.id(),
                operation.tags().iter().cloned().collect(),
                started_at,
            );
            let begun = tokio::select! {
                begun = egress.begin(&provider, described) => begun,
                () = operation.cancellation().cancelled() => {
                    // Cancelled while it waited for an instance: nothing is open, and the
                    // caller is shown the operation, which says Cancelled. (Dropping `begin`
                    // aborts an upload its thread may have begun.)
                    let _ = ready.send(Ok(file_name));
                    return;
                }
            };
            match begun {
                Ok(upload) => SinkBeforeSource::Ready(Sink::Egress(upload)),
                Err(error) => return fail(error.into(), ready),
            }
        }
        PlannedSink::File(path) => SinkBeforeSource::File(path),
    };
    let source = match artifact.open(directory.client(&process), &process).await {
        Ok(source) => source,
        Err(error) => {
            if let SinkBeforeSource::Ready(sink) = sink {
                sink.abort().await;
            }
            return fail(error, ready);
        }
    };
    let sink = match sink {
        SinkBeforeSource::Ready(sink) => sink,
        SinkBeforeSource::File(path) => match tokio::fs::File::create(&path).await {
            Ok(file) => Sink::File { file, path },
            Err(error) => {
                let message = format!("cannot create {}: {error}", path.display());
                return fail(OperationError::new(ErrorCode::OutputError, message), ready);
            }
        },
    };
    if ready.send(Ok(file_name)).is_err() {
        operation.finish(Outcome::Cancelled(
            "the client disconnected before the artifact started".to_owned(),
        ));
        drop(source);
        sink.abort().await;
        return;
    }
    pipeline::run(operation, source, sink, duration).await;
}
