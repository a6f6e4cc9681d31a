//! One rule on one process, from its start to its end: wait for the trigger, ask the limits,
//! run the actions, again until the rule is over or stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::actions::{self, ActionEnv, Tokens};
use super::config::Trigger;
use super::limits::Admission;
use super::state::{FinishReason, RuleRun};
use super::triggers::{CounterWindow, FEED_RETRY, counter_feed};
use crate::metrics::MetricsService;
use crate::processes::ProcessRecord;

/// Runs `run` on `process` until the rule is over or `stop` is cancelled. Operations its actions
/// started keep running when it stops: they are ordinary operations.
pub async fn run_rule(
    run: Arc<RuleRun>,
    process: ProcessRecord,
    env: ActionEnv,
    metrics: Arc<MetricsService>,
    stop: CancellationToken,
) {
    let rule = run.rule().clone();
    tracing::info!(rule = %rule.name, pid = process.pid, "collection rule started");
    let deadline = run.deadline();
    let expired = async move {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    match &rule.trigger {
        Trigger::Startup => {
            if run.admit(Instant::now()) == Admission::Run {
                let outcome = tokio::select! {
                    outcome = run_actions(&run, &process, &env) => outcome,
                    _ = stop.cancelled() => Err("the rule was stopped".to_owned()),
                };
                run.actions_ended(outcome.err());
            }
            run.finish(FinishReason::Startup);
        }
        Trigger::Counter(trigger) => {
            run.mark_started();
            let mut window = CounterWindow::new(trigger.clone());
            'feeds: loop {
                let feed_stop = stop.child_token();
                let _guard = feed_stop.clone().drop_guard();
                let mut feed = counter_feed(&metrics, &env.processes, &process, trigger, feed_stop);
                loop {
                    let value = tokio::select! {
                        _ = stop.cancelled() => break 'feeds,
                        _ = &mut expired => {
                            run.finish(FinishReason::RuleDuration);
                            break 'feeds;
                        }
                        value = feed.recv() => value,
                    };
                    let Some(value) = value else {
                        break;
                    };
                    let now = Instant::now();
                    if !window.observe(value, now) {
                        continue;
                    }
                    match run.admit(now) {
                        Admission::Run => {
                            tracing::info!(rule = %rule.name, pid = process.pid, value, "collection rule triggered");
                            let outcome = tokio::select! {
                                outcome = run_actions(&run, &process, &env) => outcome,
                                _ = stop.cancelled() => Err("the rule was stopped".to_owned()),
                            };
                            if let Err(error) = &outcome {
                                tracing::warn!(rule = %rule.name, pid = process.pid, %error, "collection rule actions failed");
                            }
                            if run.actions_ended(outcome.err()) {
                                break 'feeds;
                            }
                            // Reports that arrived while the actions ran are stale.
                            while feed.try_recv().is_ok() {}
                            window.reset();
                        }
                        Admission::Throttled(_) => window.reset(),
                        Admission::Finished => break 'feeds,
                    }
                }
                // The feed broke: the process went away or its session failed. Try again later.
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = &mut expired => {
                        run.finish(FinishReason::RuleDuration);
                        break;
                    }
                    _ = tokio::time::sleep(FEED_RETRY) => {}
                }
            }
        }
    }
    run.mark_started();
    tracing::info!(rule = %rule.name, pid = process.pid, "collection rule ended");
}

/// Runs the rule's actions in order. An action that does not wait for completion lets the next
/// one start once it started; one whose outputs a later action uses is waited for then. Once
/// every action started the run is marked started; every action is complete when this returns.
/// The first failure ends the list.
async fn run_actions(
    run: &RuleRun,
    process: &ProcessRecord,
    env: &ActionEnv,
) -> Result<(), String> {
    let rule = run.rule();
    let mut tokens = Tokens::of_process(process);
    let mut pending: HashMap<String, JoinHandle<Result<_, String>>> = HashMap::new();
    for action in &rule.actions {
        for text in actions::substituted_texts(action) {
            for name in Tokens::referenced_actions(text) {
                if let Some(task) = pending.remove(&name) {
                    let outputs = joined(&name, task).await?;
                    tokens.add_outputs(&name, &outputs);
                }
            }
        }
        let running = actions::start(env, &rule.name, process, action, &tokens)
            .await
            .map_err(|error| {
                format!(
                    "action `{}` ({}): {error}",
                    action.name,
                    action.kind.type_name()
                )
            })?;
        let task = tokio::spawn(actions::completion(running));
        if action.wait_for_completion {
            let outputs = joined(&action.name, task).await?;
            tokens.add_outputs(&action.name, &outputs);
        } else {
            pending.insert(action.name.clone(), task);
        }
    }
    run.mark_started();
    for (name, task) in pending {
        joined(&name, task).await?;
    }
    Ok(())
}

async fn joined<T>(name: &str, task: JoinHandle<Result<T, String>>) -> Result<T, String> {
    match task.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("action `{name}`: {error}")),
        Err(error) => Err(format!("action `{name}`: {error}")),
    }
}
