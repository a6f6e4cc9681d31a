//! One rule on one process, from its start to its end: wait for the trigger, ask the limits,
//! run the actions, again until the rule is over or stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::actions::{self, ActionEnv, Tokens};
use super::aspnet::{RequestEvent, RequestWindow, request_feed};
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
            let window = CounterWindow::new(trigger.clone());
            let open = |process: &ProcessRecord, stop| {
                counter_feed(&metrics, &env.processes, process, trigger, stop)
            };
            watch(&run, &process, &env, &stop, expired, window, open).await;
        }
        Trigger::AspNet(trigger) => {
            let window = RequestWindow::new(trigger.clone());
            let open = |process: &ProcessRecord, stop| request_feed(&env.processes, process, stop);
            watch(&run, &process, &env, &stop, expired, window, open).await;
        }
    }
    run.mark_started();
    tracing::info!(rule = %rule.name, pid = process.pid, "collection rule ended");
}

/// What a trigger that watches a feed of observations (counter values, request events) keeps
/// between them.
trait Window {
    /// One observation of the feed.
    type Observation;

    /// Takes one observation made at `now`; true when the trigger fires.
    fn observe(&mut self, observation: &Self::Observation, now: Instant) -> bool;

    /// The observation's value, for the log line of a trigger it fired (a counter's value).
    fn value(observation: &Self::Observation) -> Option<f64>;

    /// Called every [`HEARTBEAT`], whatever the feed brings; true when the trigger fires (a
    /// request that has run too long without stopping).
    fn heartbeat(&mut self, now: Instant) -> bool;

    /// Forgets everything observed: after the trigger fired, and when a new feed opens.
    fn reset(&mut self);
}

impl Window for CounterWindow {
    type Observation = f64;

    fn observe(&mut self, value: &f64, now: Instant) -> bool {
        CounterWindow::observe(self, *value, now)
    }

    fn value(value: &f64) -> Option<f64> {
        Some(*value)
    }

    fn heartbeat(&mut self, _now: Instant) -> bool {
        false
    }

    fn reset(&mut self) {
        CounterWindow::reset(self);
    }
}

impl Window for RequestWindow {
    type Observation = RequestEvent;

    fn observe(&mut self, event: &RequestEvent, now: Instant) -> bool {
        RequestWindow::observe(self, event, now)
    }

    fn value(_event: &RequestEvent) -> Option<f64> {
        None
    }

    fn heartbeat(&mut self, now: Instant) -> bool {
        RequestWindow::heartbeat(self, now)
    }

    fn reset(&mut self) {
        RequestWindow::reset(self);
    }
}

/// Watches the feeds `open` opens on `process` with `window` until the rule is over, stopped or
/// past its duration, running the actions each time the trigger fires. A feed that breaks (the
/// process went away, or its session failed) is opened again after [`FEED_RETRY`], with a reset
/// window: what the broken feed saw says nothing about the new one.
async fn watch<W: Window>(
    run: &RuleRun,
    process: &ProcessRecord,
    env: &ActionEnv,
    stop: &CancellationToken,
    expired: impl Future<Output = ()>,
    mut window: W,
    open: impl Fn(&ProcessRecord, CancellationToken) -> mpsc::Receiver<W::Observation>,
) {
    let rule = run.rule();
    run.mark_started();
    tokio::pin!(expired);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'feeds: loop {
        let feed_stop = stop.child_token();
        let _guard = feed_stop.clone().drop_guard();
        let mut feed = open(process, feed_stop);
        window.reset();
        loop {
            let (now, value) = tokio::select! {
                _ = stop.cancelled() => break 'feeds,
                _ = &mut expired => {
                    run.finish(FinishReason::RuleDuration);
                    break 'feeds;
                }
                observation = feed.recv() => match observation {
                    Some(observation) => {
                        let now = Instant::now();
                        if !window.observe(&observation, now) {
                            continue;
                        }
                        (now, W::value(&observation))
                    }
                    None => break,
                },
                _ = heartbeat.tick() => {
                    let now = Instant::now();
                    if !window.heartbeat(now) {
                        continue;
                    }
                    (now, None)
                }
            };
            match value {
                Some(value) => {
                    tracing::info!(rule = %rule.name, pid = process.pid, value, "collection rule triggered");
                }
                None => {
                    tracing::info!(rule = %rule.name, pid = process.pid, "collection rule triggered")
                }
            }
            if fired(run, process, env, stop, now).await == AfterFiring::End {
                break 'feeds;
            }
            // What the feed reported while the actions ran is stale.
            while feed.try_recv().is_ok() {}
            window.reset();
        }
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

/// How often a watching trigger looks for requests that run too long without stopping.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Whether a rule goes on after its trigger fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFiring {
    /// It waits for the trigger again.
    Continue,
    /// It is over (finished, or its actions ended it).
    End,
}

/// The trigger fired at `now`: runs the actions if the limits admit it.
async fn fired(
    run: &RuleRun,
    process: &ProcessRecord,
    env: &ActionEnv,
    stop: &CancellationToken,
    now: Instant,
) -> AfterFiring {
    match run.admit(now) {
        Admission::Run => {
            let outcome = tokio::select! {
                outcome = run_actions(run, process, env) => outcome,
                _ = stop.cancelled() => Err("the rule was stopped".to_owned()),
            };
            if let Err(error) = &outcome {
                tracing::warn!(rule = %run.rule().name, pid = process.pid, %error, "collection rule actions failed");
            }
            if run.actions_ended(outcome.err()) {
                AfterFiring::End
            } else {
                AfterFiring::Continue
            }
        }
        Admission::Throttled(_) => AfterFiring::Continue,
        Admission::Finished => AfterFiring::End,
    }
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
