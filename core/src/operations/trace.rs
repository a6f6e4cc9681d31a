//! The trace artifact: an EventPipe session on the target, streamed as nettrace.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::source::{ArtifactSource, ArtifactSpec, BlockingSource, GracefulStop, SummaryKind};
use super::{ErrorCode, OperationError};
use crate::diagnostics::{
    BlockingSession, DiagnosticsClient, EventPipeSession, SessionConfig, StopHandle,
};
use crate::egress::ArtifactKind;
use crate::processes::ProcessRecord;

/// An EventPipe trace of the providers in `config`.
#[derive(Debug, Clone)]
pub struct TraceSpec {
    /// The session to start.
    pub config: SessionConfig,
}

impl TraceSpec {
    /// A trace of `config`'s providers.
    pub fn new(config: SessionConfig) -> Self {
        TraceSpec { config }
    }
}

impl ArtifactSpec for TraceSpec {
    type Source = EventPipeSession;

    fn kind(&self) -> ArtifactKind {
        ArtifactKind::Trace
    }

    async fn open(
        self,
        client: DiagnosticsClient,
        process: &ProcessRecord,
    ) -> Result<EventPipeSession, OperationError> {
        client.start_session(&self.config).await.map_err(|error| {
            OperationError::new(
                ErrorCode::RuntimeError,
                format!("Cannot start a trace of process {}: {error}", process.pid),
            )
        })
    }
}

impl ArtifactSource for EventPipeSession {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, OperationError> {
        EventPipeSession::next_chunk(self)
            .await
            .map_err(OperationError::from)
    }

    fn graceful_stop(&self) -> Option<Arc<dyn GracefulStop>> {
        Some(Arc::new(self.stop_handle()))
    }

    fn summary_kind(&self) -> SummaryKind {
        SummaryKind::Nettrace
    }

    fn into_blocking(self) -> Result<Box<dyn BlockingSource>, Self> {
        Ok(Box::new(EventPipeSession::into_blocking(self)))
    }
}

impl BlockingSource for BlockingSession {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, OperationError> {
        BlockingSession::next_chunk(self).map_err(OperationError::from)
    }

    fn interrupter(&self) -> Box<dyn Fn() + Send + Sync> {
        let interrupter = BlockingSession::interrupter(self);
        Box::new(move || interrupter.interrupt())
    }
}

impl GracefulStop for StopHandle {
    fn stop(&self) -> BoxFuture<'_, Result<(), OperationError>> {
        async move { StopHandle::stop(self).await.map_err(OperationError::from) }.boxed()
    }
}
