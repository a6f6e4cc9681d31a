//! What can stop an operation: the one list of error codes an operation records, and why an
//! operation could not start.

use serde::Serialize;

use super::ArtifactKind;
use crate::diagnostics::DiagnosticsError;
use crate::egress::EgressError;
use crate::processes::ResolveError;

/// The machine-readable code of an operation's error (`error.code` in `GET /operations/{id}`),
/// serialized as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum ErrorCode {
    /// The runtime's stream ended before the artifact was whole.
    TraceTruncated,
    /// The runtime sent bytes that break the nettrace format.
    TraceInvalid,
    /// The runtime did not answer in time.
    RuntimeTimeout,
    /// The runtime refused a command, or its connection failed.
    RuntimeError,
    /// The client reading a streamed artifact stopped taking bytes for longer than
    /// `limits.stream_send_timeout_seconds`.
    ClientStalled,
    /// The artifact could not be written to its output file.
    OutputError,
    /// diagmon itself failed.
    InternalError,
    /// The egress provider does not exist.
    UnknownEgressProvider,
    /// The egress provider reported an error.
    EgressProviderError,
    /// The egress provider trapped.
    EgressProviderCrashed,
    /// The egress provider ran past a call's deadline.
    EgressDeadlineExceeded,
    /// The egress provider tried to grow past its memory limit.
    EgressMemoryLimitExceeded,
    /// Every instance the egress provider may have stayed busy.
    EgressProviderBusy,
    /// The egress provider could not be loaded.
    EgressProviderLoadFailed,
    /// The egress host failed around the provider.
    EgressHostError,
    /// A dump of the process is still being written.
    DumpInProgress,
    /// The target process exited or was killed.
    TargetGone,
    /// A collection rule's action without an artifact failed: its program could not run,
    /// exited with a failure code or outlived its timeout, or the variable could not be read.
    ActionFailed,
    /// The runtime's `createdump` does not exist.
    CreatedumpMissing,
    /// The runtime's `createdump` lacks its execute bit.
    CreatedumpNotExecutable,
    /// The target cannot write into the dump folder.
    DumpFolderNotWritable,
    /// The target sees another folder at the dump folder's path.
    DumpFolderNotShared,
    /// The dump folder has less free space than configured.
    NotEnoughSpace,
    /// The dump folder itself is unusable.
    DumpFolderError,
    /// The runtime reported a dump, but the file is missing, empty or not a core file.
    DumpInvalid,
    /// A gcdump of the process is already running.
    GcDumpInProgress,
    /// The runtime's heap-walk events do not make a whole heap graph.
    GcDumpIncomplete,
}

impl ErrorCode {
    /// The code as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TraceTruncated => "TraceTruncated",
            ErrorCode::TraceInvalid => "TraceInvalid",
            ErrorCode::RuntimeTimeout => "RuntimeTimeout",
            ErrorCode::RuntimeError => "RuntimeError",
            ErrorCode::ClientStalled => "ClientStalled",
            ErrorCode::OutputError => "OutputError",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::UnknownEgressProvider => "UnknownEgressProvider",
            ErrorCode::EgressProviderError => "EgressProviderError",
            ErrorCode::EgressProviderCrashed => "EgressProviderCrashed",
            ErrorCode::EgressDeadlineExceeded => "EgressDeadlineExceeded",
            ErrorCode::EgressMemoryLimitExceeded => "EgressMemoryLimitExceeded",
            ErrorCode::EgressProviderBusy => "EgressProviderBusy",
            ErrorCode::EgressProviderLoadFailed => "EgressProviderLoadFailed",
            ErrorCode::EgressHostError => "EgressHostError",
            ErrorCode::DumpInProgress => "DumpInProgress",
            ErrorCode::TargetGone => "TargetGone",
            ErrorCode::ActionFailed => "ActionFailed",
            ErrorCode::CreatedumpMissing => "CreatedumpMissing",
            ErrorCode::CreatedumpNotExecutable => "CreatedumpNotExecutable",
            ErrorCode::DumpFolderNotWritable => "DumpFolderNotWritable",
            ErrorCode::DumpFolderNotShared => "DumpFolderNotShared",
            ErrorCode::NotEnoughSpace => "NotEnoughSpace",
            ErrorCode::DumpFolderError => "DumpFolderError",
            ErrorCode::DumpInvalid => "DumpInvalid",
            ErrorCode::GcDumpInProgress => "GcDumpInProgress",
            ErrorCode::GcDumpIncomplete => "GcDumpIncomplete",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an operation failed: a machine-readable code and the real cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct OperationError {
    /// What kind of failure, e.g. `TraceTruncated`, `RuntimeError`, `EgressProviderError`.
    pub code: ErrorCode,
    /// What happened, for a person.
    pub message: String,
}

impl OperationError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OperationError {
            code,
            message: message.into(),
        }
    }
}

impl From<DiagnosticsError> for OperationError {
    fn from(error: DiagnosticsError) -> Self {
        let code = match &error {
            DiagnosticsError::Truncated { .. } => ErrorCode::TraceTruncated,
            DiagnosticsError::InvalidTrace(_) => ErrorCode::TraceInvalid,
            DiagnosticsError::Timeout { .. } => ErrorCode::RuntimeTimeout,
            DiagnosticsError::Internal(_) => ErrorCode::InternalError,
            _ => ErrorCode::RuntimeError,
        };
        OperationError::new(code, error.to_string())
    }
}

impl From<EgressError> for OperationError {
    fn from(error: EgressError) -> Self {
        OperationError::new(egress_code(&error), error.to_string())
    }
}

fn egress_code(error: &EgressError) -> ErrorCode {
    match error {
        EgressError::UnknownProvider(_) => ErrorCode::UnknownEgressProvider,
        EgressError::Provider { .. } => ErrorCode::EgressProviderError,
        EgressError::Trap { .. } => ErrorCode::EgressProviderCrashed,
        EgressError::DeadlineExceeded { .. } => ErrorCode::EgressDeadlineExceeded,
        EgressError::MemoryLimit { .. } => ErrorCode::EgressMemoryLimitExceeded,
        EgressError::Busy { .. } => ErrorCode::EgressProviderBusy,
        EgressError::Load { .. } => ErrorCode::EgressProviderLoadFailed,
        EgressError::Closed { first, .. } => egress_code(first),
        EgressError::Host { .. } => ErrorCode::EgressHostError,
    }
}

/// Why [`super::Operations::start`] did not start an artifact.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    /// The request names an egress provider that is not configured; nothing was registered.
    #[error("Egress provider `{0}` does not exist; configure it under [egress.providers.{0}].")]
    UnknownEgressProvider(String),
    /// No single process matches the target; nothing was registered.
    #[error(transparent)]
    Process(#[from] ResolveError),
    /// Every slot of this artifact kind is taken; nothing was registered.
    #[error("Rate limit reached.")]
    RateLimited(ArtifactKind),
    /// The operation was registered, but its source or destination could not be opened; the
    /// operation is Failed with this error.
    #[error("{0}")]
    Failed(OperationError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [
            ErrorCode::TraceTruncated,
            ErrorCode::ClientStalled,
            ErrorCode::EgressHostError,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().to_owned())
            );
        }
    }

    #[test]
    fn a_closed_upload_reports_its_first_failure() {
        let first = EgressError::DeadlineExceeded {
            provider: "p".into(),
            call: "write",
            deadline: std::time::Duration::from_secs(1),
        };
        let closed = EgressError::Closed {
            provider: "p".into(),
            first: Box::new(first),
        };
        assert_eq!(
            OperationError::from(closed).code,
            ErrorCode::EgressDeadlineExceeded
        );
    }
}
