//! The dump artifact: how a process dump plugs into the capture pipeline.
//!
//! Opening the source runs the checks and asks the runtime (so that `createdump` without its
//! execute bit, a folder the target cannot use, too little space or a dump already under way are
//! answered before the response starts), but does not wait for the file: the first chunk does.
//! A dump cannot be stopped, only cancelled: dropping the source abandons it, and the file is
//! deleted once the runtime is done with it.

use std::sync::Arc;

use bytes::Bytes;

use super::{DumpFolder, DumpStream, PendingDump};
use crate::diagnostics::DiagnosticsClient;
use crate::diagnostics::dump::DumpType;
use crate::operations::{
    ArtifactKind, ArtifactSource, ArtifactSpec, ErrorCode, GracefulStop, OperationError,
    SummaryKind,
};
use crate::processes::ProcessRecord;

/// A dump of `dump_type`, written by the runtime into `folder`.
#[derive(Debug, Clone)]
pub struct DumpSpec {
    /// The dump folder.
    pub folder: Arc<DumpFolder>,
    /// What the dump holds.
    pub dump_type: DumpType,
}

/// A dump under way: first the runtime writes the file, then its bytes are read.
#[derive(Debug)]
pub enum DumpSource {
    /// The runtime is writing the file.
    Writing(Option<PendingDump>),
    /// The file is being read.
    Reading(DumpStream),
}

impl ArtifactSpec for DumpSpec {
    type Source = DumpSource;

    fn kind(&self) -> ArtifactKind {
        ArtifactKind::Dump
    }

    async fn open(
        self,
        client: DiagnosticsClient,
        process: &ProcessRecord,
    ) -> Result<DumpSource, OperationError> {
        let pid = u32::try_from(process.pid).map_err(|_| {
            OperationError::new(
                ErrorCode::TargetGone,
                format!("{} is not a process id on this machine", process.pid),
            )
        })?;
        let pending = self.folder.begin(client, pid, self.dump_type)?;
        Ok(DumpSource::Writing(Some(pending)))
    }
}

impl ArtifactSource for DumpSource {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, OperationError> {
        if let DumpSource::Writing(pending) = self {
            let Some(pending) = pending.take() else {
                return Err(OperationError::new(
                    ErrorCode::InternalError,
                    "the dump was read again after it failed",
                ));
            };
            *self = DumpSource::Reading(DumpStream::start(pending.written().await?)?);
        }
        match self {
            DumpSource::Reading(stream) => Ok(stream.next_chunk().await?),
            DumpSource::Writing(_) => Err(OperationError::new(
                ErrorCode::InternalError,
                "the dump is not written yet",
            )),
        }
    }

    fn graceful_stop(&self) -> Option<Arc<dyn GracefulStop>> {
        None
    }

    fn summary_kind(&self) -> SummaryKind {
        SummaryKind::Bytes
    }
}
