//! The capture pipeline: moves an artifact from its source to its sink chunk by chunk, feeds the
//! summary, and records on the operation what really happened.
//!
//! One task per operation. Memory is constant: a chunk is read, summarised, handed to the sink and
//! dropped; a slow sink or summary slows the reads. Two ways to run it:
//!
//! - **Copied on the task** (streamed and file sinks, and sources read only asynchronously): the
//!   task reads each chunk, shares it with the summarizer on a thread of its own, and hands it to
//!   the sink. The summary runs beside the reads and the response's sends.
//! - **Pumped on the upload's thread** (an egress upload from a source that can be read by
//!   blocking calls: a trace): that thread reads each chunk, summarises it and writes it into the
//!   provider itself. An upload already has a thread of its own, and one thread doing the three
//!   in turn has no hand-off between threads per chunk (removing them saved ≈ 0.15 CPU s per GB at
//!   100-byte events, see `docs/performance.md`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::sink::Sink;
use super::source::{ArtifactSource, BlockingSource, SummaryKind};
use super::summary::{ArtifactSummary, InlineSummary, Summarizer};
use super::{ErrorCode, Operation, OperationError, Outcome};
use crate::egress::{EgressError, Pump, Upload};

/// How the copy went, how the summary ended, and what the source reports besides its bytes.
struct Copied {
    copied: Result<(), Stop>,
    summary: Result<ArtifactSummary, OperationError>,
    report: Option<serde_json::Value>,
}

/// Runs an operation to its end: the source's bytes go to `sink`; the source is stopped
/// gracefully after `duration` (if any, and if it can be) or on request; the outcome is recorded
/// on `operation`, which releases its concurrency slot.
pub(crate) async fn run<S: ArtifactSource>(
    operation: Arc<Operation>,
    source: S,
    sink: Sink,
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
    let kind = source.summary_kind();
    let (copied, sink) = match sink {
        Sink::Egress(mut upload) => match source.into_blocking() {
            Ok(source) => {
                let copied = pump(&operation, source, kind, &mut upload, &cancelled).await;
                (copied, Sink::Egress(upload))
            }
            Err(source) => copy(&operation, source, Sink::Egress(upload), &cancelled).await,
        },
        sink => copy(&operation, source, sink, &cancelled).await,
    };
    let Copied {
        copied,
        summary,
        report,
    } = copied;
    let outcome = match copied {
        Ok(()) => match summary {
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
                // A stream cut short after content the summary found malformed is reported as
                // the malformed content: that is the first thing wrong with it.
                Stop::Source(error) if error.code == ErrorCode::TraceTruncated => match summary {
                    Err(invalid) if invalid.code == ErrorCode::TraceInvalid => {
                        Outcome::Failed(invalid)
                    }
                    _ => Outcome::Failed(error),
                },
                Stop::Source(error) => Outcome::Failed(error),
            };
            sink.abort().await;
            outcome
        }
    };
    operation.finish(outcome);
}

/// Copies on the pipeline's task, with the summary on a thread of its own.
async fn copy<S: ArtifactSource>(
    operation: &Operation,
    mut source: S,
    mut sink: Sink,
    cancelled: &CancellationToken,
) -> (Copied, Sink) {
    let mut summarizer = match Summarizer::start(source.summary_kind()) {
        Ok(summarizer) => summarizer,
        Err(error) => {
            let copied = Copied {
                copied: Err(Stop::Outcome(Outcome::Failed(error.clone()))),
                summary: Err(error),
                report: None,
            };
            return (copied, sink);
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
    let summary = summarizer.finish().await;
    let copied = Copied {
        copied,
        summary,
        report,
    };
    (copied, sink)
}

/// Reads, summarises and writes every chunk on the upload's thread (see [`Upload::pump`]).
async fn pump(
    operation: &Arc<Operation>,
    mut source: Box<dyn BlockingSource>,
    kind: SummaryKind,
    upload: &mut Upload,
    cancelled: &CancellationToken,
) -> Copied {
    let (done, pumped) = oneshot::channel();
    let interrupt = source.interrupter();
    let on_thread = operation.clone();
    let cancel = cancelled.clone();
    let work: Pump = Box::new(move |write| {
        let mut summary = InlineSummary::new(kind);
        let copied = pump_chunks(&on_thread, source.as_mut(), &mut summary, write, &cancel);
        let ended = copied.is_ok();
        // Ends the session (a cancel, if it did not end) before the verdict is sent.
        drop(source);
        let _ = done.send(Copied {
            copied,
            summary: summary.finish(),
            report: None,
        });
        ended
    });
    let pumping = upload.pump(work);
    tokio::pin!(pumping);
    let written = tokio::select! {
        written = &mut pumping => written,
        _ = cancelled.cancelled() => {
            // A read waiting on a quiet runtime returns at once; a write in progress finishes
            // (within its deadline) and the loop then sees the cancel.
            interrupt();
            pumping.await
        }
    };
    if let Err(error) = written {
        // A write failed, the loop panicked, or the upload gave up on a thread stuck in the
        // provider. In that last case the loop may never return: its verdict is not waited for,
        // and the runtime's session, which that thread holds, is cut so that it does not stay
        // open with it.
        interrupt();
        let stop = if cancelled.is_cancelled() {
            Stop::cancelled()
        } else {
            Stop::Outcome(Outcome::Failed(error.into()))
        };
        return Copied {
            copied: Err(stop),
            summary: Err(OperationError::new(
                ErrorCode::InternalError,
                "the capture did not finish",
            )),
            report: None,
        };
    }
    // The loop sent its verdict before the thread replied.
    pumped.await.unwrap_or_else(|_| {
        let error = OperationError::new(
            ErrorCode::InternalError,
            "the upload's thread replied without the capture's verdict",
        );
        Copied {
            copied: Err(Stop::Outcome(Outcome::Failed(error.clone()))),
            summary: Err(error),
            report: None,
        }
    })
}

/// The pump's loop: until the source ends, fails or is cancelled, or a write fails.
#[allow(clippy::result_large_err)] // Returned once per operation.
fn pump_chunks(
    operation: &Operation,
    source: &mut dyn BlockingSource,
    summary: &mut InlineSummary,
    write: &mut dyn FnMut(Bytes) -> Result<(), EgressError>,
    cancelled: &CancellationToken,
) -> Result<(), Stop> {
    loop {
        let next = source.next_chunk();
        // A cancel cuts the connection (the read then ends or fails: no runtime error), and
        // is seen here after a read that was waiting or a write that was in progress.
        if cancelled.is_cancelled() {
            return Err(Stop::cancelled());
        }
        let Some(chunk) = next.map_err(Stop::Source)? else {
            return Ok(());
        };
        if chunk.is_empty() {
            continue;
        }
        operation.add_bytes(chunk.len() as u64);
        summary
            .feed(&chunk)
            .map_err(|error| Stop::Outcome(Outcome::Failed(error)))?;
        write(chunk).map_err(|error| Stop::Outcome(Outcome::Failed(error.into())))?;
    }
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
