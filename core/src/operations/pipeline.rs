//! The capture pipeline: moves an artifact from its source to its sink chunk by chunk, feeds the
//! summary, and records on the operation what really happened.
//!
//! One task per operation. Memory is constant: a chunk is read, shared with the summarizer (on a
//! thread of its own), handed to the sink and dropped; a slow sink or summarizer slows the reads.

use std::sync::Arc;
use std::time::Duration;

use super::sink::Sink;
use super::source::ArtifactSource;
use super::summary::Summarizer;
use super::{ErrorCode, Operation, OperationError, Outcome};

/// Runs an operation to its end: the source's bytes go to `sink`; the source is stopped
/// gracefully after `duration` (if any, and if it can be) or on request; the outcome is recorded
/// on `operation`, which releases its concurrency slot.
pub(crate) async fn run<S: ArtifactSource>(
    operation: Arc<Operation>,
    mut source: S,
    mut sink: Sink,
    duration: Option<Duration>,
) {
    operation.mark_running(source.graceful_stop());
    if let Some(duration) = duration.filter(|_| operation.is_stoppable()) {
        let timed = operation.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(duration) => { let _ = timed.request_stop(); }
                _ = timed.finished() => {}
            }
        });
    }
    let cancelled = operation.cancellation().clone();
    let mut summarizer = match Summarizer::start(source.summary_kind()) {
        Ok(summarizer) => summarizer,
        Err(error) => {
            sink.abort().await;
            operation.finish(Outcome::Failed(error));
            return;
        }
    };
    let mut stop_asked = false;
    let copied: Result<(), Stop> = async {
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancelled.cancelled() => return Err(Stop::cancelled()),
                _ = sink.gone() => return Err(Stop::Outcome(Outcome::Cancelled(
                    "the client disconnected from the streamed artifact".to_owned(),
                ))),
                chunk = source.next_chunk() => chunk.map_err(Stop::Source)?,
            };
            let Some(chunk) = chunk else { return Ok(()) };
            operation.add_bytes(chunk.len() as u64);
            if !stop_asked && source.wants_to_stop() {
                stop_asked = true;
                tracing::info!(operation = %operation.id(), "the source asked to stop");
                if let Err(error) = operation.request_stop() {
                    tracing::warn!(operation = %operation.id(), %error, "the source's stop was refused");
                }
            }
            tokio::select! {
                biased;
                _ = cancelled.cancelled() => return Err(Stop::cancelled()),
                fed = summarizer.feed(chunk.clone()) => {
                    fed.map_err(|error| Stop::Outcome(Outcome::Failed(error)))?
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
    let report = copied.is_ok().then(|| source.report()).flatten();
    drop(source);
    let outcome = match copied {
        Ok(()) => match summarizer.finish().await {
            Ok(mut summary) => {
                summary.report = report;
                if sink.commits() && !operation.begin_commit() {
                    // Cancelled between the end of the source and the commit.
                    sink.abort().await;
                    return;
                }
                match sink.finish(&cancelled).await {
                    Ok(resource_location) => Outcome::Succeeded {
                        resource_location,
                        summary,
                    },
                    Err(outcome) => outcome,
                }
            }
            Err(error) => {
                sink.abort().await;
                Outcome::Failed(error)
            }
        },
        Err(stop) => {
            let outcome = match stop {
                Stop::Outcome(outcome) => outcome,
                // A stream cut short after content the summarizer found malformed is reported as
                // the malformed content: that is the first thing wrong with it.
                Stop::Source(error) if error.code == ErrorCode::TraceTruncated => {
                    match summarizer.finish().await {
                        Err(invalid) if invalid.code == ErrorCode::TraceInvalid => {
                            Outcome::Failed(invalid)
                        }
                        _ => Outcome::Failed(error),
                    }
                }
                Stop::Source(error) => Outcome::Failed(error),
            };
            sink.abort().await;
            outcome
        }
    };
    operation.finish(outcome);
}

/// Why the copy loop stopped before the end of the artifact.
enum Stop {
    /// The source failed (the runtime, the socket, or the artifact's framing).
    Source(OperationError),
    /// Anything else, already an outcome: a cancel, the summarizer, the sink.
    Outcome(Outcome),
}

impl Stop {
    fn cancelled() -> Stop {
        Stop::Outcome(Outcome::Cancelled("cancelled by request".to_owned()))
    }
}
