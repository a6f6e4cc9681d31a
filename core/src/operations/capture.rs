//! The capture pipeline: moves a trace from its EventPipe session to where it goes (the HTTP
//! response or an egress provider), chunk by chunk, and records the outcome on the operation.
//!
//! One task per operation. Memory is constant: a chunk is read, shared with the operation's
//! [`TraceSummarizer`] (which validates every event and hashes the bytes on a thread of its own),
//! handed to the sink and dropped; a slow sink or summarizer slows the reads down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{Operation, OperationError, Outcome, TraceSummary};
use crate::diagnostics::summary::{TraceDigest, TraceSummarizer};
use crate::diagnostics::{DiagnosticsError, EventPipeSession};
use crate::egress::{EgressError, Upload};

/// Chunks buffered between the capture task and a streamed HTTP response.
pub const HTTP_CHANNEL_CHUNKS: usize = 4;

/// Where the bytes of a trace go.
#[allow(clippy::large_enum_variant)] // One per operation, moved once into its task.
pub enum Sink {
    /// The body of a streamed HTTP response. An `Err` item makes the server abort the response, so
    /// a client never mistakes a cut-short trace for a complete one.
    Http(mpsc::Sender<Result<Bytes, std::io::Error>>),
    /// An upload into an egress provider; aborted (so the provider cleans up) unless the trace
    /// is complete.
    Egress(Upload),
}

impl Sink {
    /// A sink feeding an HTTP response body, and the receiving end for the body.
    pub fn http() -> (Sink, mpsc::Receiver<Result<Bytes, std::io::Error>>) {
        let (sender, receiver) = mpsc::channel(HTTP_CHANNEL_CHUNKS);
        (Sink::Http(sender), receiver)
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), Outcome> {
        match self {
            Sink::Http(sender) => sender.send(Ok(chunk)).await.map_err(|_| {
                Outcome::Cancelled("the client disconnected from the streamed trace".to_owned())
            }),
            Sink::Egress(upload) => upload.write(chunk).await.map_err(egress_failure),
        }
    }

    /// Completes the artifact; returns its resource location where it has one.
    async fn finish(self) -> Result<Option<String>, Outcome> {
        match self {
            Sink::Http(_) => Ok(None),
            Sink::Egress(upload) => upload.finish().await.map(Some).map_err(egress_failure),
        }
    }

    /// Ends an incomplete artifact so that it never looks complete.
    async fn abort(self, reason: &str) {
        match self {
            Sink::Http(sender) => {
                let _ = sender
                    .send(Err(std::io::Error::other(reason.to_owned())))
                    .await;
            }
            Sink::Egress(upload) => upload.abort().await,
        }
    }
}

/// Runs a trace operation to its end: the session's bytes go to `sink`; the session is stopped
/// gracefully after `duration` (if any) or on request; the outcome is recorded on `operation`. The
/// concurrency slot `permit` is released at the end.
pub async fn capture_trace(
    operation: Arc<Operation>,
    mut session: EventPipeSession,
    mut sink: Sink,
    duration: Option<Duration>,
    permit: OwnedSemaphorePermit,
) {
    operation.mark_running(session.stop_handle());
    if let Some(duration) = duration {
        let timed = operation.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(duration) => { let _ = timed.request_stop(); }
                _ = timed.finished() => {}
            }
        });
    }
    let cancelled = operation.cancellation().clone();
    let mut summarizer = match TraceSummarizer::start() {
        Ok(summarizer) => summarizer,
        Err(error) => {
            sink.abort(&error.to_string()).await;
            operation.finish(failure(error));
            return;
        }
    };
    let result: Result<(), Stop> = async {
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancelled.cancelled() => return Err(Stop::cancelled()),
                chunk = session.next_chunk() => chunk.map_err(Stop::Session)?,
            };
            let Some(chunk) = chunk else { return Ok(()) };
            operation.add_bytes(chunk.len() as u64);
            tokio::select! {
                biased;
                _ = cancelled.cancelled() => return Err(Stop::cancelled()),
                fed = summarizer.feed(chunk.clone()) => {
                    fed.map_err(|error| Stop::Outcome(failure(error)))?
                }
            }
            tokio::select! {
                biased;
                _ = cancelled.cancelled() => return Err(Stop::cancelled()),
                written = sink.write(chunk) => written.map_err(Stop::Outcome)?,
            }
        }
    }
    .await;
    let outcome = match result {
        Ok(()) => match summarizer.finish().await.map_err(failure) {
            Ok(digest) => match sink.finish().await {
                Ok(resource_location) => Outcome::Succeeded {
                    resource_location,
                    summary: trace_summary(digest),
                },
                Err(outcome) => outcome,
            },
            Err(outcome) => {
                sink.abort("the trace is invalid").await;
                outcome
            }
        },
        Err(stop) => {
            drop(session);
            let outcome = match stop {
                Stop::Outcome(outcome) => outcome,
                // A stream cut short after content the summarizer found malformed is reported as
                // the malformed content: that is the first thing wrong with it.
                Stop::Session(error @ DiagnosticsError::Truncated { .. }) => {
                    match summarizer.finish().await {
                        Err(invalid @ DiagnosticsError::InvalidTrace(_)) => failure(invalid),
                        _ => failure(error),
                    }
                }
                Stop::Session(error) => failure(error),
            };
            let reason = match &outcome {
                Outcome::Failed(error) => error.message.clone(),
                Outcome::Cancelled(reason) => reason.clone(),
                Outcome::Succeeded { .. } => String::new(),
            };
            sink.abort(&reason).await;
            outcome
        }
    };
    operation.finish(outcome);
    drop(permit);
}

/// Why the capture loop stopped before the end of the trace.
enum Stop {
    /// The session failed (the runtime, the socket, or the trace's framing).
    Session(DiagnosticsError),
    /// Anything else, already an outcome: a cancel, the summarizer, the sink.
    Outcome(Outcome),
}

impl Stop {
    fn cancelled() -> Stop {
        Stop::Outcome(Outcome::Cancelled("cancelled by request".to_owned()))
    }
}

fn egress_failure(error: EgressError) -> Outcome {
    Outcome::Failed(OperationError {
        code: error.kind().to_owned(),
        message: error.to_string(),
    })
}

fn failure(error: DiagnosticsError) -> Outcome {
    let code = match &error {
        DiagnosticsError::Truncated { .. } => "TraceTruncated",
        DiagnosticsError::InvalidTrace(_) => "TraceInvalid",
        DiagnosticsError::Timeout { .. } => "RuntimeTimeout",
        DiagnosticsError::Internal(_) => "InternalError",
        _ => "RuntimeError",
    };
    Outcome::Failed(OperationError {
        code: code.to_owned(),
        message: error.to_string(),
    })
}

fn trace_summary(digest: TraceDigest) -> TraceSummary {
    let summary = digest.nettrace;
    TraceSummary {
        bytes: summary.bytes,
        events: Some(summary.events),
        blocks: Some(
            summary.event_blocks
                + summary.metadata_blocks
                + summary.stack_blocks
                + summary.sequence_point_blocks,
        ),
        dropped_events_estimate: Some(summary.dropped_events_estimate),
        events_by_provider: summary.events_by_provider,
        sha256: digest.sha256,
    }
}
