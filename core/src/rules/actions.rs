//! Running a rule's actions on one process.
//!
//! Artifact actions (`CollectTrace`, `CollectDump`, `CollectLiveMetrics`) start an ordinary
//! operation through [`Operations::start`], egressed to their provider and tagged with the rule's
//! name: they are listed, stopped and cancelled in `/operations` like any other. `Execute` runs a
//! program (no shell) and `GetEnvironmentVariable` reads the process's environment; both finish
//! inside the rule. Each action's outputs (`EgressPath`, `ExitCode`, `Value`) are tokens for the
//! later actions, as are the process's (`$(Process.ProcessId)`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::config::{Action, ActionKind, tokens};
use crate::dumps::{DumpFolder, DumpSpec};
use crate::gcdump::GcDumpSpec;
use crate::metrics::live::LiveMetricsSpec;
use crate::operations::{
    Destination, Operation, OperationState, Operations, StartRequest, TraceSpec,
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

/// An action that started.
#[derive(Debug)]
pub enum Running {
    /// An operation, completed when it reaches a final state.
    Operation(Arc<Operation>),
    /// An action that finished as it ran, with its outputs.
    Done(BTreeMap<&'static str, String>),
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
    pub fn add_outputs(&mut self, name: &str, outputs: &BTreeMap<&'static str, String>) {
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

/// Starts `action` of rule `rule` on `process`. An error says why it could not start or, for
/// actions that finish as they run, why it failed.
pub async fn start(
    env: &ActionEnv,
    rule: &str,
    process: &ProcessRecord,
    action: &Action,
    tokens: &Tokens,
) -> Result<Running, String> {
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
            egress,
        } => env
            .operations
            .start(StartRequest {
                artifact: TraceSpec::new(session.clone()),
                target,
                destination: Destination::Egress(egress.clone()),
                tags,
                duration: Some(*duration),
            })
            .await
            .map_err(|e| e.to_string())?,
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
            let path = tokens.substitute(path);
            let arguments: Vec<String> = arguments.iter().map(|a| tokens.substitute(a)).collect();
            let code = execute(&path, &arguments, *timeout).await?;
            if code != 0 && !ignore_exit_code {
                return Err(format!("{path} exited with code {code}"));
            }
            return Ok(Running::Done([("ExitCode", code.to_string())].into()));
        }
        ActionKind::GetEnvironmentVariable { name } => {
            let name = tokens.substitute(name);
            let environment = environment(env, process).await?;
            let value = environment.get(&name).ok_or_else(|| {
                format!(
                    "process {} has no environment variable `{name}`",
                    process.pid
                )
            })?;
            return Ok(Running::Done([("Value", value.clone())].into()));
        }
    };
    Ok(Running::Operation(started.operation))
}

/// Waits until a started action completed; its outputs, or why it failed.
pub async fn completion(running: Running) -> Result<BTreeMap<&'static str, String>, String> {
    match running {
        Running::Done(outputs) => Ok(outputs),
        Running::Operation(operation) => {
            operation.finished().await;
            let status = operation.status();
            match status.status {
                OperationState::Succeeded => {
                    Ok([("EgressPath", status.resource_location.unwrap_or_default())].into())
                }
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
    }
}

/// Runs `path` with `arguments` (no shell, no standard input, output discarded); its exit code.
/// It is killed after `timeout`.
async fn execute(path: &str, arguments: &[String], timeout: Duration) -> Result<i32, String> {
    let mut child = tokio::process::Command::new(path)
        .args(arguments)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {path}: {error}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(status.code().unwrap_or(-1)),
        Ok(Err(error)) => Err(format!("cannot wait for {path}: {error}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "{path} did not finish within {} s and was killed",
                timeout.as_secs_f64()
            ))
        }
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
            &[("EgressPath", "/out/x.nettrace".to_owned())].into(),
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
    async fn execute_reports_exit_codes_and_timeouts() {
        assert_eq!(
            execute(
                "/bin/sh",
                &["-c".into(), "exit 3".into()],
                Duration::from_secs(10)
            )
            .await,
            Ok(3)
        );
        let error = execute("/bin/sleep", &["10".into()], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(error.contains("killed"), "{error}");
        assert!(
            execute("/nonexistent/program", &[], Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
