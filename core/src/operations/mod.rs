//! Operations: every artifact capture (streamed, egressed or written to a file) is registered
//! here with an id, a state, live progress and, once finished, its result.
//!
//! [`Operations::start`] is the one entry point that starts an artifact: it resolves the
//! process, takes a slot under the artifact kind's limit, opens the source ([`ArtifactSpec`]),
//! and runs the [`pipeline`] that feeds the summary and hands the bytes to the sink. The
//! [`OperationRegistry`] keeps the operations, the concurrency slots and the retention of
//! finished operations. `docs/pipeline.md` describes how a new artifact kind plugs in.

mod error;
mod pipeline;
pub mod sink;
pub mod source;
mod start;
mod summary;
pub mod trace;

pub use crate::egress::ArtifactKind;
pub use error::{ErrorCode, OperationError, StartError};
pub use sink::ArtifactStream;
pub use source::{ArtifactSource, ArtifactSpec, GracefulStop, SummaryKind};
pub use start::{Destination, Operations, StartRequest, Started};
pub use summary::ArtifactSummary;
pub use trace::TraceSpec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{LimitsConfig, OperationsConfig};
use crate::processes::{ProcessRecord, ProcessSelector};

/// The life cycle of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum OperationState {
    /// Registered; the session is being started.
    Starting,
    /// The artifact is being captured.
    Running,
    /// A graceful stop was asked for; the artifact is being completed.
    Stopping,
    /// The artifact is complete (streamed to the client, or egressed).
    Succeeded,
    /// The artifact could not be completed; see `error`.
    Failed,
    /// Cancelled by the client; whatever was delivered is incomplete.
    Cancelled,
}

impl OperationState {
    /// True for Succeeded, Failed and Cancelled.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What an operation does: capture an artifact, or run one of a collection rule's actions that
/// produce values (its `outputs`) instead of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// Captures an artifact of this kind.
    Artifact(ArtifactKind),
    /// Runs a program (a rule's `Execute` action); the output is its `ExitCode`.
    Execute,
    /// Reads an environment variable of the process (a rule's `GetEnvironmentVariable`
    /// action); the output is its `Value`.
    Environment,
}

impl OperationKind {
    /// The name the API shows in `kind`: the artifact kind's (`trace`, `dump`, ...), `execute`
    /// or `environment`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Artifact(kind) => kind.as_str(),
            OperationKind::Execute => "execute",
            OperationKind::Environment => "environment",
        }
    }
}

/// The process an operation captures from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationProcess {
    /// Its pid.
    pub pid: u64,
    /// Its uid.
    pub uid: Uuid,
    /// Its name.
    pub name: String,
}

impl From<&ProcessRecord> for OperationProcess {
    fn from(process: &ProcessRecord) -> Self {
        OperationProcess {
            pid: process.pid,
            uid: process.uid,
            name: process.name.clone(),
        }
    }
}

/// The result of a finished capture, reported by the pipeline.
#[derive(Debug)]
pub enum Outcome {
    /// Complete; where it landed (for egress) and its summary.
    Succeeded {
        /// The provider's resource location; `None` for streamed artifacts.
        resource_location: Option<String>,
        /// The artifact's summary.
        summary: ArtifactSummary,
    },
    /// Failed with this error.
    Failed(OperationError),
    /// Cancelled, for this reason.
    Cancelled(String),
    /// A rule action without an artifact completed; its outputs are recorded with
    /// [`Operation::record_outputs`].
    Completed,
}

#[derive(Debug)]
struct Progress {
    state: OperationState,
    resource_location: Option<String>,
    error: Option<OperationError>,
    summary: Option<ArtifactSummary>,
    finished_at: Option<Instant>,
    /// The sink is committing the artifact: a cancel can no longer undo it.
    committing: bool,
    /// What a rule action without an artifact produced.
    outputs: BTreeMap<String, String>,
}

/// Why a DELETE on an operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The operation already finished.
    #[error("Operation is not running.")]
    NotRunning,
    /// The operation cannot be stopped gracefully.
    #[error("Operation does not support being stopped.")]
    NotStoppable,
    /// The artifact is being committed to its destination; it can no longer be cancelled.
    #[error("Operation is completing its artifact; it can no longer be cancelled.")]
    Committing,
}

/// One operation: an artifact capture, or a rule action without an artifact.
#[derive(Debug)]
pub struct Operation {
    id: Uuid,
    kind: OperationKind,
    created: SystemTime,
    process: OperationProcess,
    egress_provider: Option<String>,
    tags: BTreeSet<String>,
    bytes_captured: AtomicU64,
    progress: Mutex<Progress>,
    stop: Mutex<Option<Arc<dyn GracefulStop>>>,
    /// The concurrency slot, released when the operation reaches a final state.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    cancel: CancellationToken,
    finished: watch::Sender<bool>,
}

impl Operation {
    /// The operation id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// What it does.
    pub fn kind(&self) -> OperationKind {
        self.kind
    }

    /// The process it captures from.
    pub fn process(&self) -> &OperationProcess {
        &self.process
    }

    /// The egress provider, when the artifact is egressed.
    pub fn egress_provider(&self) -> Option<&str> {
        self.egress_provider.as_deref()
    }

    /// The tags given with the request.
    pub fn tags(&self) -> &BTreeSet<String> {
        &self.tags
    }

    /// When it was created.
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// The current state.
    pub fn state(&self) -> OperationState {
        self.lock().state
    }

    /// Fires when the operation is cancelled; the capture pipeline watches it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Adds captured bytes to the live progress.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes_captured.fetch_add(bytes, Ordering::Relaxed);
        crate::telemetry::record_captured(self.kind.as_str(), bytes);
    }

    /// The source started: the operation is Running, and can be stopped gracefully with `stop`.
    pub fn mark_running(&self, stop: Option<Arc<dyn GracefulStop>>) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = stop;
        let mut progress = self.lock();
        if progress.state == OperationState::Starting {
            progress.state = OperationState::Running;
            crate::telemetry::record_operation(self.kind.as_str(), "Running");
            tracing::info!(operation = %self.id, "operation running");
        }
    }

    /// Asks for a graceful stop: the session ends with rundown and the artifact stays complete.
    pub fn request_stop(&self) -> Result<(), ControlError> {
        {
            let mut progress = self.lock();
            match progress.state {
                OperationState::Running if self.is_stoppable() => {
                    progress.state = OperationState::Stopping;
                }
                OperationState::Stopping => return Ok(()),
                OperationState::Starting | OperationState::Running => {
                    return Err(ControlError::NotStoppable);
                }
                _ => return Err(ControlError::NotRunning),
            }
        }
        tracing::info!(operation = %self.id, "operation stopping");
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(stop) = stop {
            let id = self.id;
            tokio::spawn(async move {
                if let Err(error) = stop.stop().await {
                    tracing::warn!(operation = %id, %error, "StopTracing failed");
                }
            });
        }
        Ok(())
    }

    /// True when the running source can be stopped gracefully.
    pub fn is_stoppable(&self) -> bool {
        self.stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Cancels the operation: the capture ends at once, the artifact is incomplete, and the
    /// concurrency slot is free at once (whatever the capture task is waiting for). Refused once
    /// the artifact is being committed.
    pub fn cancel(&self) -> Result<(), ControlError> {
        {
            let progress = self.lock();
            if progress.state.is_final() {
                return Err(ControlError::NotRunning);
            }
            if progress.committing {
                return Err(ControlError::Committing);
            }
        }
        self.finish(Outcome::Cancelled("cancelled by request".to_owned()));
        Ok(())
    }

    /// The pipeline is about to commit the artifact; false if the operation already ended (it
    /// was cancelled), in which case the artifact must be aborted.
    pub(crate) fn begin_commit(&self) -> bool {
        let mut progress = self.lock();
        if progress.state.is_final() {
            return false;
        }
        progress.committing = true;
        true
    }

    /// Records the final result; the first final state wins.
    pub fn finish(&self, outcome: Outcome) {
        let mut progress = self.lock();
        if progress.state.is_final() {
            return;
        }
        match outcome {
            Outcome::Succeeded {
                resource_location,
                summary,
            } => {
                progress.state = OperationState::Succeeded;
                progress.resource_location = resource_location;
                progress.summary = Some(summary);
                tracing::info!(operation = %self.id, "operation succeeded");
            }
            Outcome::Failed(error) => {
                tracing::warn!(operation = %self.id, code = %error.code, message = %error.message, "operation failed");
                progress.state = OperationState::Failed;
                progress.error = Some(error);
            }
            Outcome::Cancelled(reason) => {
                tracing::info!(operation = %self.id, %reason, "operation cancelled");
                progress.state = OperationState::Cancelled;
            }
            Outcome::Completed => {
                progress.state = OperationState::Succeeded;
                tracing::info!(operation = %self.id, "operation succeeded");
            }
        }
        progress.finished_at = Some(Instant::now());
        crate::telemetry::record_operation(self.kind.as_str(), &format!("{:?}", progress.state));
        drop(progress);
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.cancel.cancel();
        self.finished.send_replace(true);
    }

    /// Records what a rule action without an artifact produced (an exit code, a value); also
    /// after a final state, e.g. the exit code of a program killed by a cancel.
    pub fn record_outputs(&self, outputs: BTreeMap<String, String>) {
        self.lock().outputs.extend(outputs);
    }

    /// Waits until the operation reaches a final state.
    pub async fn finished(&self) {
        let mut finished = self.finished.subscribe();
        let _ = finished.wait_for(|done| *done).await;
    }

    /// The operation as the API shows it.
    pub fn status(&self) -> OperationStatus {
        let progress = self.lock();
        OperationStatus {
            operation_id: self.id,
            created_date_time: humantime::format_rfc3339_millis(self.created).to_string(),
            status: progress.state,
            kind: self.kind.as_str(),
            process: self.process.clone(),
            egress_provider_name: self.egress_provider.clone(),
            is_stoppable: progress.state == OperationState::Running && self.is_stoppable(),
            tags: self.tags.clone(),
            bytes_captured: self.bytes_captured.load(Ordering::Relaxed),
            resource_location: progress.resource_location.clone(),
            error: progress.error.clone(),
            summary: progress.summary.clone(),
            outputs: progress.outputs.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An operation as `GET /operations/{id}` shows it (dotnet-monitor's OperationStatus, plus
/// `kind`, `bytesCaptured` and `summary`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// The id.
    pub operation_id: Uuid,
    /// Creation time, UTC ISO-8601.
    pub created_date_time: String,
    /// The state.
    pub status: OperationState,
    /// What is captured: `trace`, `dump`, `gcdump`, `metrics` or `logs`; or the rule action
    /// without an artifact that runs: `execute`, `environment`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The process.
    pub process: OperationProcess,
    /// The egress provider, or null for streamed artifacts.
    pub egress_provider_name: Option<String>,
    /// Whether `DELETE ?stop=true` applies now.
    pub is_stoppable: bool,
    /// The tags.
    pub tags: BTreeSet<String>,
    /// Bytes captured so far.
    pub bytes_captured: u64,
    /// Where the artifact landed (egressed and Succeeded only); null otherwise, as
    /// dotnet-monitor writes it.
    pub resource_location: Option<String>,
    /// Why it failed (Failed only); null otherwise, as dotnet-monitor writes it.
    pub error: Option<OperationError>,
    /// The artifact's summary (Succeeded only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<ArtifactSummary>,
    /// What a rule action without an artifact produced: `ExitCode` (execute), `Value`
    /// (environment).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// Filters of `GET /operations`: process fields AND-ed, every listed tag required.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    /// Process fields.
    pub process: ProcessSelector,
    /// Tags the operation must all carry.
    pub tags: BTreeSet<String>,
}

/// All operations, the concurrency limits and the retention policy.
#[derive(Debug)]
pub struct OperationRegistry {
    operations: Mutex<Vec<Arc<Operation>>>,
    slots: HashMap<ArtifactKind, Arc<Semaphore>>,
    retention: OperationsConfig,
}

/// The configured number of `kind` operations that may run at once.
fn slot_limit(limits: &LimitsConfig, kind: ArtifactKind) -> usize {
    match kind {
        ArtifactKind::Trace => limits.max_concurrent_traces,
        ArtifactKind::Dump => limits.max_concurrent_dumps,
        ArtifactKind::GcDump => limits.max_concurrent_gcdumps,
        ArtifactKind::Metrics => limits.max_concurrent_livemetrics,
        ArtifactKind::Logs => limits.max_concurrent_logs,
    }
}

/// A concurrency slot of one artifact kind, held by its operation until it ends.
#[derive(Debug)]
pub struct Slot {
    kind: ArtifactKind,
    permit: OwnedSemaphorePermit,
}

impl OperationRegistry {
    /// An empty registry with `limits`' slots per artifact kind.
    pub fn new(limits: &LimitsConfig, retention: &OperationsConfig) -> Self {
        let slots = ArtifactKind::ALL
            .into_iter()
            .map(|kind| {
                let permits = slot_limit(limits, kind).min(Semaphore::MAX_PERMITS);
                (kind, Arc::new(Semaphore::new(permits)))
            })
            .collect();
        OperationRegistry {
            operations: Mutex::default(),
            slots,
            retention: retention.clone(),
        }
    }

    /// Reserves one of `kind`'s concurrency slots; `None` when all are taken (answer 429).
    pub fn try_reserve(&self, kind: ArtifactKind) -> Option<Slot> {
        let permit = self.slots.get(&kind)?.clone().try_acquire_owned().ok()?;
        Some(Slot { kind, permit })
    }

    /// Registers a new operation in the Starting state; it holds `slot` until it ends.
    pub fn register(
        &self,
        process: OperationProcess,
        slot: Slot,
        egress_provider: Option<String>,
        tags: BTreeSet<String>,
    ) -> Arc<Operation> {
        let kind = OperationKind::Artifact(slot.kind);
        self.insert(process, kind, Some(slot.permit), egress_provider, tags)
    }

    /// Registers a rule action without an artifact (`execute`, `environment`) in the Starting
    /// state. Such actions take no concurrency slot: a rule's limits bound them.
    pub fn register_action(
        &self,
        process: OperationProcess,
        kind: OperationKind,
        tags: BTreeSet<String>,
    ) -> Arc<Operation> {
        self.insert(process, kind, None, None, tags)
    }

    fn insert(
        &self,
        process: OperationProcess,
        kind: OperationKind,
        slot: Option<OwnedSemaphorePermit>,
        egress_provider: Option<String>,
        tags: BTreeSet<String>,
    ) -> Arc<Operation> {
        let operation = Arc::new(Operation {
            id: Uuid::new_v4(),
            kind,
            created: SystemTime::now(),
            process,
            egress_provider,
            tags,
            bytes_captured: AtomicU64::new(0),
            progress: Mutex::new(Progress {
                state: OperationState::Starting,
                resource_location: None,
                error: None,
                summary: None,
                finished_at: None,
                committing: false,
                outputs: BTreeMap::new(),
            }),
            stop: Mutex::default(),
            slot: Mutex::new(slot),
            cancel: CancellationToken::new(),
            finished: watch::channel(false).0,
        });
        tracing::info!(operation = %operation.id, pid = operation.process.pid, "operation starting");
        let mut operations = self.lock();
        self.prune(&mut operations);
        operations.push(operation.clone());
        operation
    }

    /// The operation with this id, if it is still kept.
    pub fn get(&self, id: Uuid) -> Option<Arc<Operation>> {
        let mut operations = self.lock();
        self.prune(&mut operations);
        operations.iter().find(|op| op.id == id).cloned()
    }

    /// The operations matching `filter`, oldest first.
    pub fn list(&self, filter: &OperationFilter) -> Vec<Arc<Operation>> {
        let mut operations = self.lock();
        self.prune(&mut operations);
        operations
            .iter()
            .filter(|op| {
                let process = &op.process;
                filter
                    .process
                    .matches_identity(process.pid, process.uid, &process.name)
                    && filter.tags.is_subset(&op.tags)
            })
            .cloned()
            .collect()
    }

    /// Asks every running operation to stop gracefully (shutdown), then waits for all of them to
    /// finish, at most `timeout`.
    pub async fn stop_all(&self, timeout: Duration) {
        let running: Vec<Arc<Operation>> = self
            .lock()
            .iter()
            .filter(|op| !op.state().is_final())
            .cloned()
            .collect();
        for operation in &running {
            if operation.request_stop().is_err() {
                let _ = operation.cancel();
            }
        }
        let all = futures_util::future::join_all(running.iter().map(|op| op.finished()));
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("some operations did not finish within {timeout:?} of the shutdown");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Operation>>> {
        self.operations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops finished operations older than the retention time, then the oldest finished ones
    /// beyond the count limit.
    fn prune(&self, operations: &mut Vec<Arc<Operation>>) {
        let max_age = Duration::from_secs(self.retention.retention_seconds);
        operations.retain(|op| {
            op.lock()
                .finished_at
                .is_none_or(|finished| finished.elapsed() < max_age)
        });
        let finished = operations.iter().filter(|op| op.state().is_final()).count();
        let mut excess = finished.saturating_sub(self.retention.max_finished);
        operations.retain(|op| {
            if excess > 0 && op.state().is_final() {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_finished: usize) -> OperationRegistry {
        OperationRegistry::new(
            &LimitsConfig {
                max_concurrent_traces: 2,
                max_concurrent_dumps: 1,
                ..LimitsConfig::default()
            },
            &OperationsConfig {
                retention_seconds: 3600,
                max_finished,
            },
        )
    }

    fn process() -> OperationProcess {
        OperationProcess {
            pid: 1,
            uid: Uuid::nil(),
            name: "dotnet".into(),
        }
    }

    fn register(registry: &OperationRegistry, tags: &[&str]) -> Arc<Operation> {
        let slot = registry.try_reserve(ArtifactKind::Trace).unwrap();
        let tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
        registry.register(process(), slot, None, tags)
    }

    #[test]
    fn slots_are_limited_per_kind_and_released_when_the_operation_ends() {
        let registry = registry(10);
        let first = register(&registry, &[]);
        let _second = register(&registry, &[]);
        assert!(registry.try_reserve(ArtifactKind::Trace).is_none());
        let dump = registry
            .try_reserve(ArtifactKind::Dump)
            .expect("a dump slot");
        assert!(registry.try_reserve(ArtifactKind::Dump).is_none());
        drop(dump);
        assert!(registry.try_reserve(ArtifactKind::Dump).is_some());
        first.cancel().unwrap();
        assert!(registry.try_reserve(ArtifactKind::Trace).is_some());
    }

    #[test]
    fn the_first_final_state_wins_and_cancel_of_a_finished_one_is_refused() {
        let registry = registry(10);
        let op = register(&registry, &[]);
        assert_eq!(op.request_stop(), Err(ControlError::NotStoppable));
        op.cancel().unwrap();
        op.finish(Outcome::Failed(OperationError::new(
            ErrorCode::InternalError,
            "late",
        )));
        assert_eq!(op.state(), OperationState::Cancelled);
        assert_eq!(op.cancel(), Err(ControlError::NotRunning));
        assert!(op.cancellation().is_cancelled());
    }

    #[test]
    fn a_cancel_during_the_commit_is_refused_and_a_commit_after_a_cancel_is_not_started() {
        let registry = registry(10);
        let committing = register(&registry, &[]);
        assert!(committing.begin_commit());
        assert_eq!(committing.cancel(), Err(ControlError::Committing));
        assert_eq!(committing.state(), OperationState::Starting);
        let cancelled = register(&registry, &[]);
        cancelled.cancel().unwrap();
        assert!(!cancelled.begin_commit());
    }

    #[test]
    fn action_operations_take_no_slot_and_show_their_outputs() {
        let registry = registry(10);
        let first = register(&registry, &[]);
        let _second = register(&registry, &[]);
        // Every trace slot is taken; an action still registers.
        let action =
            registry.register_action(process(), OperationKind::Execute, ["rule".into()].into());
        assert_eq!(action.kind(), OperationKind::Execute);
        action.cancel().unwrap();
        // The killed program's exit code arrives after the cancel.
        action.record_outputs([("ExitCode".to_owned(), "137".to_owned())].into());
        let status = action.status();
        assert_eq!(status.kind, "execute");
        assert_eq!(status.status, OperationState::Cancelled);
        assert_eq!(status.outputs["ExitCode"], "137");
        let environment =
            registry.register_action(process(), OperationKind::Environment, BTreeSet::new());
        environment.record_outputs([("Value".to_owned(), "1".to_owned())].into());
        environment.finish(Outcome::Completed);
        let status = serde_json::to_value(environment.status()).unwrap();
        assert_eq!(status["kind"], "environment");
        assert_eq!(status["status"], "Succeeded");
        assert_eq!(status["outputs"]["Value"], "1");
        // Artifact operations show no outputs; a location and an error are null until they
        // apply, as dotnet-monitor writes them.
        let trace = serde_json::to_value(first.status()).unwrap();
        assert!(trace.get("outputs").is_none(), "{trace}");
        assert_eq!(
            trace.get("resourceLocation"),
            Some(&serde_json::Value::Null),
            "{trace}"
        );
        assert_eq!(
            trace.get("error"),
            Some(&serde_json::Value::Null),
            "{trace}"
        );
    }

    #[test]
    fn finished_operations_beyond_the_limit_are_pruned_oldest_first() {
        let registry = registry(1);
        let old = register(&registry, &[]);
        old.cancel().unwrap();
        let newer = register(&registry, &[]);
        newer.cancel().unwrap();
        let running = register(&registry, &["a"]);
        assert!(registry.get(old.id()).is_none());
        assert!(registry.get(newer.id()).is_some());
        let tagged = OperationFilter {
            tags: ["a".to_owned()].into(),
            ..Default::default()
        };
        let listed = registry.list(&tagged);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id(), running.id());
    }
}
