//! Where an artifact's bytes come from. Each artifact kind plugs into the pipeline with two
//! types: an [`ArtifactSpec`] (what to capture, parsed from a request) that opens an
//! [`ArtifactSource`] (a running capture that yields chunks) on the target process.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use super::OperationError;
use crate::diagnostics::DiagnosticsClient;
use crate::egress::ArtifactKind;
use crate::processes::ProcessRecord;
use bytes::Bytes;
use futures_util::future::BoxFuture;

/// How the pipeline summarises an artifact once it is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryKind {
    /// A nettrace stream: every event validated and counted, the bytes hashed. A stream without
    /// its end-of-stream marker is truncated.
    Nettrace,
    /// Opaque bytes: their size and SHA-256 only.
    Bytes,
}

/// What to capture from a process: the request's parameters for one artifact kind.
pub trait ArtifactSpec: Send + 'static {
    /// The running capture this spec opens.
    type Source: ArtifactSource;

    /// The artifact kind: its concurrency limit, its file name and MIME type, its egress `kind`.
    fn kind(&self) -> ArtifactKind;

    /// Starts the capture on `process` through `client`. A failure here fails the operation
    /// before any byte is produced.
    fn open(
        self,
        client: DiagnosticsClient,
        process: &ProcessRecord,
    ) -> impl Future<Output = Result<Self::Source, OperationError>> + Send;
}

/// A running capture: yields the artifact's bytes in order. Dropping it ends the capture at once
/// (a cancel).
pub trait ArtifactSource: Send + 'static {
    /// The next chunk; `Ok(None)` once the artifact is whole. An error ends the capture; the
    /// artifact is then incomplete.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, OperationError>> + Send;

    /// How to end the capture early but whole (`DELETE ?stop=true`, `durationSeconds`); `None`
    /// for artifacts that cannot be stopped (a dump).
    fn graceful_stop(&self) -> Option<Arc<dyn GracefulStop>>;

    /// How the artifact is summarised.
    fn summary_kind(&self) -> SummaryKind;

    /// True once the source itself asks to end early but whole (a trace's stopping event went
    /// by): the pipeline then stops it as a stop request would, and the operation shows
    /// Stopping. Only a source with a [`ArtifactSource::graceful_stop`] can be stopped so. False
    /// for most kinds.
    fn wants_to_stop(&self) -> bool {
        false
    }

    /// What the artifact's summary reports besides its bytes (a gcdump's heap report), once the
    /// artifact is whole; `None` for most kinds.
    fn report(&self) -> Option<serde_json::Value> {
        None
    }

    /// The same capture, read by blocking calls, for a sink that runs on a thread of its own (an
    /// egress upload): the pipeline then reads, summarises and writes each chunk on that thread.
    /// `Err(self)` for a source that is read only asynchronously (the default).
    fn into_blocking(self) -> Result<Box<dyn BlockingSource>, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

/// A running capture read by blocking calls, on a thread that may block. Its source's other
/// properties ([`ArtifactSource::graceful_stop`], [`ArtifactSource::summary_kind`]) still hold;
/// it never asks to stop and has no report.
pub trait BlockingSource: Send {
    /// The next chunk, as [`ArtifactSource::next_chunk`] gives it; an empty chunk when nothing
    /// came for a moment (ask again after looking for a cancel).
    fn next_chunk(&mut self) -> Result<Option<Bytes>, OperationError>;

    /// Cuts the capture from another thread: a read waiting in [`BlockingSource::next_chunk`]
    /// returns at once, and the capture ends as if dropped (a cancel).
    fn interrupter(&self) -> Box<dyn Fn() + Send + Sync>;
}

/// Ends a capture gracefully from another task: the source then completes the artifact and
/// yields its end. Must be idempotent.
pub trait GracefulStop: Send + Sync + Debug {
    /// Asks the source to finish; resolves once the request was delivered.
    fn stop(&self) -> BoxFuture<'_, Result<(), OperationError>>;
}
