//! Operations: every artifact request (streamed or egressed) is registered here with an id, a
//! state, live progress and, once finished, its result. The registry also enforces the
//! concurrency limit and the retention of finished operations.

pub mod capture;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{LimitsConfig, OperationsConfig};
use crate::diagnostics::StopHandle;
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

/// Why an operation failed: a machine-readable code and the real cause.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationError {
    /// e.g. `TraceTruncated`, `RuntimeError`, `EgressFailed`.
    pub code: String,
    /// What happened, for a person.
    pub message: String,
}

/// What a finished artifact holds: its size and hash, and for a trace what the nettrace
/// validator saw (absent for a dump).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    /// Bytes in the artifact.
    pub bytes: u64,
    /// Events (traces only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Blocks of every kind (traces only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    /// Events the runtime dropped, estimated from sequence numbers (traces only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_events_estimate: Option<u64>,
    /// Events per provider (traces only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub events_by_provider: BTreeMap<String, u64>,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// The result of a finished capture, reported by the pipeline.
#[derive(Debug)]
pub enum Outcome {
    /// Complete; where it landed (for egress) and its summary.
    Succeeded {
        /// The provider's resource location; `None` for streamed artifacts.
        resource_location: Option<String>,
        /// The trace summary.
        summary: TraceSummary,
    },
    /// Failed with this error.
    Failed(OperationError),
    /// Cancelled, for this reason.
    Cancelled(String),
}

#[derive(Debug)]
struct Progress {
    state: OperationState,
    resource_location: Option<String>,
    error: Option<OperationError>,
    summary: Option<TraceSummary>,
    finished_at: Option<Instant>,
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
}

/// One artifact operation.
#[derive(Debug)]
pub struct Operation {
    id: Uuid,
    created: SystemTime,
    process: OperationProcess,
    egress_provider: Option<String>,
    tags: BTreeSet<String>,
    bytes_captured: AtomicU64,
    progress: Mutex<Progress>,
    stop: Mutex<Option<StopHandle>>,
    cancel: CancellationToken,
    finished: watch::Sender<bool>,
}

impl Operation {
    /// The operation id.
    pub fn id(&self) -> Uuid {
        self.id
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
    }

    /// The session started: the operation is Running and can be stopped gracefully.
    pub fn mark_running(&self, stop: StopHandle) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
        let mut progress = self.lock();
        if progress.state == OperationState::Starting {
            progress.state = OperationState::Running;
            tracing::info!(operation = %self.id, "operation running");
        }
    }

    /// Asks for a graceful stop: the session ends with rundown and the artifact stays complete.
    pub fn request_stop(&self) -> Result<(), ControlError> {
        {
            let mut progress = self.lock();
            match progress.state {
                OperationState::Running => progress.state = OperationState::Stopping,
                OperationState::Stopping => return Ok(()),
                OperationState::Starting => return Err(ControlError::NotStoppable),
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

    /// Cancels the operation: the capture ends at once and the artifact is incomplete.
    pub fn cancel(&self) -> Result<(), ControlError> {
        if self.lock().state.is_final() {
            return Err(ControlError::NotRunning);
        }
        self.finish(Outcome::Cancelled("cancelled by request".to_owned()));
        Ok(())
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
        }
        progress.finished_at = Some(Instant::now());
        drop(progress);
        self.cancel.cancel();
        self.finished.send_replace(true);
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
            process: self.process.clone(),
            egress_provider_name: self.egress_provider.clone(),
            is_stoppable: matches!(progress.state, OperationState::Running),
            tags: self.tags.clone(),
            bytes_captured: self.bytes_captured.load(Ordering::Relaxed),
            resource_location: progress.resource_location.clone(),
            error: progress.error.clone(),
            summary: progress.summary.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An operation as `GET /operations/{id}` shows it (dotnet-monitor's OperationStatus, plus
/// `bytesCaptured` and `summary`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// The id.
    pub operation_id: Uuid,
    /// Creation time, UTC ISO-8601.
    pub created_date_time: String,
    /// The state.
    pub status: OperationState,
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
    /// Where the artifact landed (egressed and Succeeded only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_location: Option<String>,
    /// Why it failed (Failed only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
    /// The trace summary (Succeeded only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<TraceSummary>,
}

/// Filters of `GET /operations`: process fields AND-ed, every listed tag required.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    /// Process fields.
    pub process: ProcessSelector,
    /// Tags the operation must all carry.
    pub tags: BTreeSet<String>,
}

/// All operations, the concurrency limit and the retention policy.
#[derive(Debug)]
pub struct OperationRegistry {
    operations: Mutex<Vec<Arc<Operation>>>,
    trace_slots: Arc<Semaphore>,
    retention: OperationsConfig,
}

impl OperationRegistry {
    /// An empty registry.
    pub fn new(limits: &LimitsConfig, retention: &OperationsConfig) -> Self {
        OperationRegistry {
            operations: Mutex::default(),
            trace_slots: Arc::new(Semaphore::new(limits.max_concurrent_traces)),
            retention: retention.clone(),
        }
    }

    /// Reserves one of the concurrent trace slots; `None` when all are taken (answer 429). The slot
    /// is released when the permit is dropped, at the end of the capture.
    pub fn try_reserve_trace(&self) -> Option<OwnedSemaphorePermit> {
        self.trace_slots.clone().try_acquire_owned().ok()
    }

    /// Registers a new operation in the Starting state.
    pub fn register(
        &self,
        process: OperationProcess,
        egress_provider: Option<String>,
        tags: BTreeSet<String>,
    ) -> Arc<Operation> {
        let operation = Arc::new(Operation {
            id: Uuid::new_v4(),
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
            }),
            stop: Mutex::default(),
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
                let selector = &filter.process;
                selector.pid.is_none_or(|pid| process.pid == pid)
                    && selector.uid.is_none_or(|uid| process.uid == uid)
                    && selector
                        .name
                        .as_ref()
                        .is_none_or(|name| process.name.eq_ignore_ascii_case(name))
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

    #[test]
    fn slots_are_limited_and_released() {
        let registry = registry(10);
        let first = registry.try_reserve_trace().unwrap();
        let _second = registry.try_reserve_trace().unwrap();
        assert!(registry.try_reserve_trace().is_none());
        drop(first);
        assert!(registry.try_reserve_trace().is_some());
    }

    #[test]
    fn the_first_final_state_wins_and_cancel_of_a_finished_one_is_refused() {
        let registry = registry(10);
        let op = registry.register(process(), None, BTreeSet::new());
        assert_eq!(op.request_stop(), Err(ControlError::NotStoppable));
        op.cancel().unwrap();
        op.finish(Outcome::Failed(OperationError {
            code: "X".into(),
            message: "late".into(),
        }));
        assert_eq!(op.state(), OperationState::Cancelled);
        assert_eq!(op.cancel(), Err(ControlError::NotRunning));
        assert!(op.cancellation().is_cancelled());
    }

    #[test]
    fn finished_operations_beyond_the_limit_are_pruned_oldest_first() {
        let registry = registry(1);
        let old = registry.register(process(), None, BTreeSet::new());
        old.cancel().unwrap();
        let newer = registry.register(process(), None, BTreeSet::new());
        newer.cancel().unwrap();
        let running = registry.register(process(), None, ["a".to_owned()].into());
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
