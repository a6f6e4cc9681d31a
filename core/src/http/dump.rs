//! `GET /dump`: a process dump, streamed in the response or sent to an egress provider.
//!
//! The checks before a dump (the target's `createdump`, the dump folder, free space, one dump per
//! process) are answered as problems; then the response starts (200 with the body to come, or
//! 202) and the runtime writes the dump, which a task of its own streams to the sink and records
//! on the operation (kind `dump`, not stoppable, with its size and SHA-256).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::params::QueryParams;
use super::problem::{Problem, Validation};
use super::{AppState, RequestOrigin};
use crate::diagnostics::dump::{DumpType, UnknownDumpType};
use crate::dumps::{DumpError, DumpStream, PendingDump};
use crate::egress::{Artifact, ArtifactKind, Upload};
use crate::operations::{Operation, OperationError, OperationProcess, Outcome, TraceSummary};
use crate::processes::resolve;

/// Chunks buffered between the dump task and a streamed response.
const HTTP_CHANNEL_CHUNKS: usize = 4;

/// `GET /dump?type=`: the runtime writes the dump into the dump folder; diagmon streams it (200)
/// or sends it to the egress provider (202), then deletes it.
#[utoipa::path(get, path = "/dump", params(
        ("pid" = Option<u64>, Query, description = "Process id"),
        ("uid" = Option<String>, Query, description = "Runtime instance uid"),
        ("name" = Option<String>, Query, description = "Process name"),
        ("type" = Option<String>, Query, description = "Mini, Full, WithHeap (default) or Triage, case-insensitive"),
        ("egressProvider" = Option<String>, Query, description = "Send the dump to this egress provider instead of the response"),
        ("tags" = Option<String>, Query, description = "Comma-separated labels for the operation"),
    ),
    responses(
        (status = 200, description = "The dump, streamed: an ELF core file named core_{yyyyMMdd_HHmmss_fff}", content_type = "application/octet-stream"),
        (status = 202, description = "Accepted; the dump goes to the egress provider (see Location)"),
        (status = 400, description = "Invalid request, or the dump cannot be written (the detail says what to do)", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit reached, or a dump of this process is still being written", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_dump(
    State(app): State<AppState>,
    origin: RequestOrigin,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let params = QueryParams::parse(query.as_deref());
    let mut validation = Validation::default();
    let selector = params.process_selector(&mut validation);
    let dump_type = match params.get("type").filter(|text| !text.is_empty()) {
        None => DumpType::default(),
        Some(text) => text.parse().unwrap_or_else(|error: UnknownDumpType| {
            validation.error("type", error.to_string());
            DumpType::default()
        }),
    };
    let egress_provider = params
        .get("egressProvider")
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    let tags = params.tags();
    validation.finish(())?;
    if let Some(provider) = &egress_provider
        && !app.egress.has_provider(provider)
    {
        return Err(Problem::field(
            "egressProvider",
            format!(
                "Egress provider `{provider}` does not exist; configure it under [egress.providers.{provider}]."
            ),
        ));
    }
    let processes = app.processes.list().await;
    let process = resolve(&processes, &selector, &app.config.default_process)
        .map_err(|error| Problem::bad_request(error.to_string()))?;
    let pid = u32::try_from(process.pid)
        .map_err(|_| Problem::bad_request(format!("{} is not a process id", process.pid)))?;
    let permit = app
        .dump_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| Problem::rate_limited())?;
    let operation = app.operations.register(
        OperationProcess::from(process),
        egress_provider.clone(),
        tags,
    );
    let Ok(location) =
        HeaderValue::from_str(&origin.url(&format!("/operations/{}", operation.id())))
    else {
        let error = OperationError {
            code: "BadRequest".to_owned(),
            message: "The request's Host header cannot form a Location URL.".to_owned(),
        };
        operation.finish(Outcome::Failed(error.clone()));
        return Err(Problem::bad_request(error.message));
    };
    let pending = match app
        .dumps
        .begin(app.processes.client(process), pid, dump_type)
    {
        Ok(pending) => pending,
        Err(error) => return Err(fail(&operation, &error)),
    };
    let started_at = SystemTime::now();
    let artifact = Artifact::new(
        ArtifactKind::Dump,
        process.pid,
        process.uid,
        process.name.clone(),
        operation.id(),
        operation.tags().iter().cloned().collect(),
        started_at,
    );
    let mut response = match egress_provider {
        Some(provider) => {
            let upload = match app.egress.begin(&provider, artifact).await {
                Ok(upload) => upload,
                Err(error) => {
                    let message = error.to_string();
                    operation.finish(Outcome::Failed(OperationError {
                        code: error.kind().to_owned(),
                        message: message.clone(),
                    }));
                    return Err(Problem::bad_request(message));
                }
            };
            tokio::spawn(run(operation, pending, DumpSink::Egress(upload), permit));
            StatusCode::ACCEPTED.into_response()
        }
        None => {
            let (sender, mut receiver) = mpsc::channel(HTTP_CHANNEL_CHUNKS);
            tokio::spawn(run(operation, pending, DumpSink::Http(sender), permit));
            let body = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
            let mut response = Body::from_stream(body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let disposition = format!("attachment; filename={}", artifact.file_name);
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
    };
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Records a dump that could not start on the operation, and answers with the same message: 429
/// for a dump of the process still under way, 400 otherwise.
fn fail(operation: &Operation, error: &DumpError) -> Problem {
    operation.finish(Outcome::Failed(operation_error(error)));
    match error {
        DumpError::InProgress { .. } => {
            Problem::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
        }
        _ => Problem::bad_request(error.to_string()),
    }
}

fn operation_error(error: &DumpError) -> OperationError {
    OperationError {
        code: error.code().to_owned(),
        message: error.to_string(),
    }
}

/// Where the dump's bytes go.
#[allow(clippy::large_enum_variant)] // One per operation, moved once into its task.
enum DumpSink {
    /// The body of the streamed response; an `Err` item aborts it.
    Http(mpsc::Sender<Result<Bytes, std::io::Error>>),
    /// An egress upload, aborted unless the dump is whole.
    Egress(Upload),
}

impl DumpSink {
    async fn write(&mut self, chunk: Bytes) -> Result<(), Outcome> {
        match self {
            DumpSink::Http(sender) => sender.send(Ok(chunk)).await.map_err(|_| {
                Outcome::Cancelled("the client disconnected from the streamed dump".to_owned())
            }),
            DumpSink::Egress(upload) => upload.write(chunk).await.map_err(|error| {
                Outcome::Failed(OperationError {
                    code: error.kind().to_owned(),
                    message: error.to_string(),
                })
            }),
        }
    }

    async fn finish(self) -> Result<Option<String>, Outcome> {
        match self {
            DumpSink::Http(_) => Ok(None),
            DumpSink::Egress(upload) => upload.finish().await.map(Some).map_err(|error| {
                Outcome::Failed(OperationError {
                    code: error.kind().to_owned(),
                    message: error.to_string(),
                })
            }),
        }
    }

    async fn abort(self, reason: String) {
        match self {
            DumpSink::Http(sender) => {
                let _ = sender.send(Err(std::io::Error::other(reason))).await;
            }
            DumpSink::Egress(upload) => upload.abort().await,
        }
    }
}

/// Waits for the runtime to write the dump, streams the file to `sink` and records the outcome
/// on `operation`; the dump slot `permit` is released at the end.
async fn run(
    operation: Arc<Operation>,
    pending: PendingDump,
    mut sink: DumpSink,
    permit: OwnedSemaphorePermit,
) {
    let cancelled = operation.cancellation().clone();
    let copied: Result<(u64, String), Outcome> = async {
        let dump = tokio::select! {
            biased;
            _ = cancelled.cancelled() => return Err(Outcome::Cancelled("cancelled by request".to_owned())),
            dump = pending.written() => dump.map_err(|error| Outcome::Failed(operation_error(&error)))?,
        };
        let mut stream =
            DumpStream::start(dump).map_err(|error| Outcome::Failed(operation_error(&error)))?;
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancelled.cancelled() => return Err(Outcome::Cancelled("cancelled by request".to_owned())),
                chunk = stream.next_chunk() => chunk.map_err(|error| Outcome::Failed(operation_error(&error)))?,
            };
            let Some(chunk) = chunk else { break };
            operation.add_bytes(chunk.len() as u64);
            tokio::select! {
                biased;
                _ = cancelled.cancelled() => return Err(Outcome::Cancelled("cancelled by request".to_owned())),
                written = sink.write(chunk) => written?,
            }
        }
        let digest = stream.digest().cloned().ok_or_else(|| {
            Outcome::Failed(operation_error(&DumpError::Internal(
                "the dump ended without its digest".to_owned(),
            )))
        })?;
        Ok((digest.bytes, digest.sha256))
    }
    .await;
    let outcome = match copied {
        Ok((bytes, sha256)) => match sink.finish().await {
            Ok(resource_location) => Outcome::Succeeded {
                resource_location,
                summary: TraceSummary {
                    bytes,
                    events: None,
                    blocks: None,
                    dropped_events_estimate: None,
                    events_by_provider: Default::default(),
                    sha256,
                },
            },
            Err(outcome) => outcome,
        },
        Err(outcome) => {
            let reason = match &outcome {
                Outcome::Failed(error) => error.message.clone(),
                Outcome::Cancelled(reason) => reason.clone(),
                Outcome::Succeeded { .. } => String::new(),
            };
            sink.abort(reason).await;
            outcome
        }
    };
    operation.finish(outcome);
    drop(permit);
}
