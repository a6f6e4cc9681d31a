//! Running a rule's actions on one process.
//!
//! Every action is an operation tagged with the rule's name, listed, stopped and cancelled in
//! `/operations` like any other. Artifact actions (`CollectTrace`, `CollectDump`,
//! `CollectGCDump`, `CollectLiveMetrics`) start one through [`Operations::start`], egressed to
//! their provider. `Execute` (kind `execute`) runs a program, no shell: a stop sends it SIGTERM,
//! a cancel kills it. `GetEnvironmentVariable` (kind `environment`) reads the process's
//! environment. Each action's outputs (`EgressPath`, `ExitCode`, `Value`) are tokens for the
//! later actions, as are the process's (`$(Process.ProcessId)`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::config::{Action, ActionKind, tokens};
use super::events::StoppingTraceSpec;
use crate::dumps::{DumpFolder, DumpSpec};
use crate::gcdump::GcDumpSpec;
use crate::metrics::live::LiveMetricsSpec;
use crate::operations::{
    Destination, ErrorCode, GracefulStop, Operation, OperationError, OperationKind,
    OperationProcess, OperationState, Operations, Outcome, StartRequest, TraceSpec,
};
use crate::processes::{ProcessDirectory, ProcessRecord, ProcessSelector};

/// What actions need besides their settings.
#[derive(Debug, Clone)]
pub struct ActionEnv {
    /// Starts the artifacts.
    pub operations: Operations,
    /// Opens clients to processes.
    pub processes: ProcessDirectory,
    /// The dump folder.
    pub dumps: Arc<DumpFolder>,
    /// The counter interval of live metrics.
    pub counter_interval: Duration,
    /// Whether `Execute` may run.
    pub allow_execute: bool,
}

/// The tokens of one run of the actions: the process's, then each completed action's outputs.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    values: BTreeMap<String, String>,
}

impl Tokens {
    /// The process tokens of `process`.
    pub fn of_process(process: &ProcessRecord) -> Self {
        let mut values = BTreeMap::new();
        values.insert("Process.ProcessId".to_owned(), process.pid.to_string());
        values.insert("Process.RuntimeId".to_owned(), process.uid.to_string());
        values.insert("Process.Name".to_owned(), process.name.clone());
        values.insert(
            "Process.CommandLine".to_owned(),
            process.command_line.clone(),
        );
        Tokens { values }
    }

    /// Adds the outputs of action `name`.
    pub fn add_outputs(&mut self, name: &str, outputs: &BTreeMap<String, String>) {
        for (output, value) in outputs {
            self.values
                .insert(format!("Actions.{name}.{output}"), value.clone());
        }
    }

    /// `text` with every known `$(…)` token replaced; unknown ones are left as they are.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for token in tokens(text) {
            if let Some(value) = self.values.get(token) {
                out = out.replace(&format!("$({token})"), value);
            }
        }
        out
    }

    /// The action names whose outputs `text` uses.
    pub fn referenced_actions(text: &str) -> Vec<String> {
        tokens(text)
            .into_iter()
            .filter_map(|token| token.strip_prefix("Actions."))
            .filter_map(|rest| rest.rsplit_once('.').map(|(name, _)| name.to_owned()))
            .collect()
    }
}

/// The texts of an action that tokens are substituted in.
pub fn substituted_texts(action: &Action) -> Vec<&str> {
    match &action.kind {
        ActionKind::Execute {
            path, arguments, ..
        } => std::iter::once(path.as_str())
            .chain(arguments.iter().map(String::as_str))
            .collect(),
        ActionKind::GetEnvironmentVariable { name } => vec![name.as_str()],
        _ => Vec::new(),
    }
}

/// Starts `action` of rule `rule` on `process`: its operation, or why it could not start.
pub async fn start(
    env: &ActionEnv,
    rule: &str,
    process: &ProcessRecord,
    action: &Action,
    tokens: &Tokens,
) -> Result<Arc<Operation>, String> {
    let target = ProcessSelector {
        pid: Some(process.pid),
        uid: Some(process.uid),
        name: None,
    };
    let tags: BTreeSet<String> = [rule.to_owned()].into();
    let started = match &action.kind {
        ActionKind::CollectTrace {
            session,
            duration,
            stopping_event,
            egress,
        } => {
            let trace = TraceSpec::new(session.clone());
            let destination = Destination::Egress(egress.clone());
            let duration = Some(*duration);
            match stopping_event {
                None => {
                    env.operations
                        .start(StartRequest {
                            artifact: trace,
                            target,
                            destination,
                            tags,
                            duration,
                        })
                        .await
                }
                Some(event) => {
                    env.operations
                        .start(StartRequest {
                            artifact: StoppingTraceSpec {
                                trace,
                                event: event.clone(),
                            },
                            target,
                            destination,
                            tags,
                            duration,
                        })
                        .await
                }
            }
            .map_err(|e| e.to_string())?
        }
        ActionKind::CollectDump { dump_type, egress } => env
            .operations
            .start(StartRequest {
                artifact: DumpSpec {
                    folder: env.dumps.clone(),
                    dump_type: *dump_type,
                },
                target,
                destination: Destination::Egress(egress.clone()),
                tags,
                duration: None,
            })
            .await
            .map_err(|e| e.to_string())?,
        ActionKind::CollectLiveMetrics {
            body,
            duration,
            egress,
        } => {
            let spec = LiveMetricsSpec::from_json(body, env.counter_interval)
                .map_err(|errors| format!("the live-metrics settings are invalid: {errors:?}"))?;
            env.operations
                .start(StartRequest {
                    artifact: spec,
                    target,
                    destination: Destination::Egress(egress.clone()),
                    tags,
                    duration: Some(*duration),
                })
                .await
                .map_err(|e| e.to_string())?
        }
        ActionKind::CollectGCDump { egress } => env
            .operations
            .start(StartRequest {
                artifact: GcDumpSpec::default(),
                target,
                destination: Destination::Egress(egress.clone()),
                tags,
                duration: None,
            })
            .await
            .map_err(|e| e.to_string())?,
        ActionKind::Execute {
            path,
            arguments,
            ignore_exit_code,
            timeout,
        } => {
            if !env.allow_execute {
                return Err(
                    "Execute actions are off: set `collection_rules.allow_execute = true`"
                        .to_owned(),
                );
            }
            let program = Program {
                path: tokens.substitute(path),
                arguments: arguments.iter().map(|a| tokens.substitute(a)).collect(),
                ignore_exit_code: *ignore_exit_code,
                timeout: *timeout,
            };
            let operation = env.operations.registry().register_action(
                OperationProcess::from(process),
                OperationKind::Execute,
                tags,
            );
            let child = match program.spawn() {
                Ok(child) => child,
                Err(message) => {
                    operation.finish(Outcome::Failed(OperationError::new(
                        ErrorCode::ActionFailed,
                        message.clone(),
                    )));
                    return Err(message);
                }
            };
            let terminate = Arc::new(Terminate::default());
            operation.mark_running(Some(terminate.clone()));
            tokio::spawn(program.supervise(operation.clone(), child, terminate));
            return Ok(operation);
        }
        ActionKind::GetEnvironmentVariable { name } => {
            let name = tokens.substitute(name);
            let operation = env.operations.registry().register_action(
                OperationProcess::from(process),
                OperationKind::Environment,
                tags,
            );
            operation.mark_running(None);
            tokio::spawn(read_variable(
                env.clone(),
                process.clone(),
                name,
                operation.clone(),
            ));
            return Ok(operation);
        }
    };
    Ok(started.operation)
}

/// Waits until a started action's operation reached a final state; its outputs, or why it
/// did not succeed.
pub async fn completion(operation: Arc<Operation>) -> Result<BTreeMap<String, String>, String> {
    operation.finished().await;
    let status = operation.status();
    match status.status {
        OperationState::Succeeded => match operation.kind() {
            OperationKind::Artifact(_) => Ok([(
                "EgressPath".to_owned(),
                status.resource_location.unwrap_or_default(),
            )]
            .into()),
            OperationKind::Execute | OperationKind::Environment => Ok(status.outputs),
        },
        state => Err(match status.error {
            Some(error) => format!(
                "operation {} ended {state:?}: {}",
                operation.id(),
                error.message
            ),
            None => format!("operation {} ended {state:?}", operation.id()),
        }),
    }
}

/// The program of an `Execute` action, its tokens substituted.
#[derive(Debug, Clone)]
struct Program {
    path: String,
    arguments: Vec<String>,
    ignore_exit_code: bool,
    timeout: Duration,
}

/// How the wait for an `Execute` program ended.
enum Waited {
    Exited(std::io::Result<std::process::ExitStatus>),
    Cancelled,
    TimedOut,
}

impl Program {
    /// Starts the program: no shell, no standard input, output discarded.
    fn spawn(&self) -> Result<tokio::process::Child, String> {
        tokio::process::Command::new(&self.path)
            .args(&self.arguments)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot run {}: {error}", self.path))
    }

    /// Waits for the program and finishes `operation` with its exit code (the output
    /// `ExitCode`): Succeeded on 0 (or any code with `ignore_exit_code`), Failed otherwise and
    /// when it outlives its timeout (it is then killed). A stop (`terminate`) sends it SIGTERM;
    /// a cancel of the operation kills it, and its exit code is recorded then too.
    async fn supervise(
        self,
        operation: Arc<Operation>,
        mut child: tokio::process::Child,
        terminate: Arc<Terminate>,
    ) {
        let timeout = tokio::time::sleep(self.timeout);
        tokio::pin!(timeout);
        let waited = loop {
            tokio::select! {
                status = child.wait() => break Waited::Exited(status),
                _ = operation.cancellation().cancelled() => break Waited::Cancelled,
                _ = &mut timeout => break Waited::TimedOut,
                _ = terminate.requested.notified() => {
                    // The pid is the child's only while it has not been waited for.
                    if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
                            tracing::warn!(operation = %operation.id(), error = %std::io::Error::last_os_error(), "cannot send SIGTERM to an Execute program");
                        }
                    }
                }
            }
        };
        let failed = |message: String| {
            Outcome::Failed(OperationError::new(ErrorCode::ActionFailed, message))
        };
        let outcome = match waited {
            Waited::Exited(Ok(status)) => {
                let code = exit_code(status);
                operation.record_outputs([("ExitCode".to_owned(), code.to_string())].into());
                if code == 0 || self.ignore_exit_code {
                    Outcome::Completed
                } else {
                    failed(format!("{} exited with code {code}", self.path))
                }
            }
            Waited::Exited(Err(error)) => failed(format!("cannot wait for {}: {error}", self.path)),
            Waited::Cancelled | Waited::TimedOut => {
                let killed = child.kill().await;
                if let Ok(status) = child.wait().await {
                    operation.record_outputs(
                        [("ExitCode".to_owned(), exit_code(status).to_string())].into(),
                    );
                }
                match (waited, killed) {
                    (Waited::TimedOut, _) => failed(format!(
                        "{} did not finish within {} s and was killed",
                        self.path,
                        self.timeout.as_secs_f64()
                    )),
                    (_, Err(error)) => failed(format!("cannot kill {}: {error}", self.path)),
                    _ => Outcome::Cancelled(
                        "cancelled by request; the program was killed".to_owned(),
                    ),
                }
            }
        };
        operation.finish(outcome);
    }
}

/// The exit code of a program, or 128 + the signal that ended it, as a shell reports it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Stops an `Execute` program gracefully: its supervisor sends it SIGTERM, so that it can
/// finish by itself.
#[derive(Debug, Default)]
struct Terminate {
    requested: tokio::sync::Notify,
}

impl GracefulStop for Terminate {
    fn stop(&self) -> BoxFuture<'_, Result<(), OperationError>> {
        self.requested.notify_one();
        std::future::ready(Ok(())).boxed()
    }
}

/// Reads the variable `name` of `process` and finishes `operation` with it (the output
/// `Value`), or Failed when the process has no such variable or its environment cannot be read.
/// A cancel ends it at once.
async fn read_variable(
    env: ActionEnv,
    process: ProcessRecord,
    name: String,
    operation: Arc<Operation>,
) {
    let read = tokio::select! {
        read = environment(&env, &process) => read,
        _ = operation.cancellation().cancelled() => return,
    };
    let value = read.and_then(|environment| {
        environment.get(&name).cloned().ok_or_else(|| {
            format!(
                "process {} has no environment variable `{name}`",
                process.pid
            )
        })
    });
    match value {
        Ok(value) => {
            operation.record_outputs([("Value".to_owned(), value)].into());
            operation.finish(Outcome::Completed);
        }
        Err(message) => operation.finish(Outcome::Failed(OperationError::new(
            ErrorCode::ActionFailed,
            message,
        ))),
    }
}

/// The environment of `process`: from the runtime (.NET 5+), or the one it started with
/// (`/proc/PID/environ`) for runtimes that cannot send it.
async fn environment(
    env: &ActionEnv,
    process: &ProcessRecord,
) -> Result<BTreeMap<String, String>, String> {
    if process.supports_process_commands {
        return env
            .processes
            .client(process)
            .process_environment()
            .await
            .map_err(|error| {
                format!(
                    "cannot read the environment of process {}: {error}",
                    process.pid
                )
            });
    }
    let path = format!("/proc/{}/environ", process.pid);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|error| format!("cannot read {path}: {error}"))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            entry
                .split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn tokens_are_substituted_and_unknown_ones_kept() {
        let process = ProcessRecord {
            pid: 42,
            uid: Uuid::from_u128(1),
            name: "app".into(),
            command_line: "dotnet app.dll".into(),
            operating_system: None,
            process_architecture: None,
            managed_entry_point_assembly_name: None,
            clr_product_version: None,
            supports_process_commands: false,
            endpoint: crate::diagnostics::Endpoint::Socket("/nonexistent".into()),
        };
        let mut tokens = Tokens::of_process(&process);
        tokens.add_outputs(
            "trace",
            &[("EgressPath".to_owned(), "/out/x.nettrace".to_owned())].into(),
        );
        assert_eq!(
            tokens.substitute(
                "$(Process.ProcessId) $(Process.Name) $(Actions.trace.EgressPath) $(Other)"
            ),
            "42 app /out/x.nettrace $(Other)"
        );
        assert_eq!(
            Tokens::referenced_actions("a $(Actions.trace.EgressPath) $(Process.Name)"),
            ["trace"]
        );
    }

    #[tokio::test]
    async fn completion_gives_an_artifact_its_egress_path_and_an_action_its_outputs() {
        use crate::config::{LimitsConfig, OperationsConfig};
        use crate::operations::{ArtifactKind, ArtifactSummary, OperationRegistry};
        let registry =
            OperationRegistry::new(&LimitsConfig::default(), &OperationsConfig::default());
        let process = || OperationProcess {
            pid: 1,
            uid: Uuid::nil(),
            name: "dotnet".into(),
        };
        // An action that succeeded without outputs has none (not an EgressPath).
        let action = registry.register_action(process(), OperationKind::Execute, BTreeSet::new());
        action.finish(Outcome::Completed);
        assert_eq!(completion(action).await, Ok(BTreeMap::new()));
        let environment =
            registry.register_action(process(), OperationKind::Environment, BTreeSet::new());
        environment.record_outputs([("Value".to_owned(), "1".to_owned())].into());
        environment.finish(Outcome::Completed);
        assert_eq!(
            completion(environment).await,
            Ok([("Value".to_owned(), "1".to_owned())].into())
        );
        let slot = registry
            .try_reserve(ArtifactKind::Trace)
            .expect("a trace slot");
        let trace = registry.register(process(), slot, Some("files".into()), BTreeSet::new());
        trace.finish(Outcome::Succeeded {
            resource_location: Some("/out/x.nettrace".into()),
            summary: ArtifactSummary {
                bytes: 0,
                events: None,
                blocks: None,
                dropped_events_estimate: None,
                events_by_provider: None,
                sha256: String::new(),
                report: None,
            },
        });
        assert_eq!(
            completion(trace).await,
            Ok([("EgressPath".to_owned(), "/out/x.nettrace".to_owned())].into())
        );
    }

    #[tokio::test]
    async fn exit_codes_of_killed_programs_are_128_plus_the_signal() {
        let mut child = tokio::process::Command::new("/bin/sleep")
            .arg("10")
            .spawn()
            .unwrap();
        child.kill().await.unwrap();
        assert_eq!(exit_code(child.wait().await.unwrap()), 128 + libc::SIGKILL);
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .status()
            .await
            .unwrap();
        assert_eq!(exit_code(status), 3);
    }
}
