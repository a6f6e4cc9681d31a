//! Collection rules: triggers that capture artifacts by themselves, in connect and listen mode.
//!
//! - [`config`]: `[collection_rules]` parsed and checked, errors naming the rule and the key;
//! - [`triggers`]: counter triggers and where their reports come from;
//! - [`aspnet`]: ASP.NET Core request triggers;
//! - [`events`]: events read out of a trace as it passes (a trace's stopping event);
//! - [`limits`]: action count, sliding window, rule duration;
//! - [`actions`]: what a rule does; artifact actions are ordinary operations tagged with the
//!   rule's name;
//! - [`runner`]: one rule on one process;
//! - [`state`]: the states and counters `/collectionrules` shows.
//!
//! [`RulesService`] applies every rule to every process its filters match, as processes are
//! found (the ones running at start-up and later ones alike, in either port mode; in listen mode
//! a runtime that connects is resumed once its rules are under way, so Startup actions see it
//! from its first instruction), stops a
//! process's rules when it goes away, and applies a new configuration without a restart: rules
//! that were removed or changed stop (their operations keep running), new and changed ones
//! start over. `docs/collection-rules.md` describes the configuration.

pub mod actions;
pub mod aspnet;
pub mod config;
pub mod events;
pub mod limits;
pub mod runner;
pub mod state;
pub mod triggers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::MetricsService;
use crate::processes::{ProcessRecord, filter_matches};
use actions::ActionEnv;
use config::RulesConfig;
use state::{RuleDescription, RuleDetailedDescription, RuleRun};

/// How often the process list is examined for processes that came or went.
pub const DISCOVERY_PERIOD: Duration = Duration::from_secs(1);

/// One rule running on one process.
#[derive(Debug)]
struct Running {
    run: Arc<RuleRun>,
    stop: CancellationToken,
}

/// The rules in force and their runs on every process. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct RulesService {
    env: Mutex<ActionEnv>,
    metrics: Arc<MetricsService>,
    config: Mutex<Arc<RulesConfig>>,
    /// Per (runtime uid, rule name).
    runs: Mutex<BTreeMap<(Uuid, String), Running>>,
    changed: Notify,
    /// Stops every rule.
    stop: CancellationToken,
}

impl RulesService {
    /// A service for `config`'s rules, acting through `env` and reading counters from `metrics`.
    pub fn new(config: RulesConfig, env: ActionEnv, metrics: Arc<MetricsService>) -> Arc<Self> {
        let mut env = env;
        env.allow_execute = config.allow_execute;
        Arc::new(RulesService {
            env: Mutex::new(env),
            metrics,
            config: Mutex::new(Arc::new(config)),
            runs: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            stop: CancellationToken::new(),
        })
    }

    /// The rules in force.
    pub fn config(&self) -> Arc<RulesConfig> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `config` in force: removed and changed rules stop, new and changed ones start on the
    /// processes they match.
    pub fn replace(&self, config: RulesConfig) {
        if let Ok(mut env) = self.env.lock() {
            env.allow_execute = config.allow_execute;
        }
        let config = Arc::new(config);
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config.clone();
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|(_, name), running| {
            let keep = config
                .rules
                .get(name)
                .is_some_and(|rule| rule == running.run.rule());
            if !keep {
                running.stop.cancel();
            }
            keep
        });
        drop(runs);
        self.changed.notify_one();
    }

    /// Applies the rules to the processes until [`RulesService::stop`].
    pub fn spawn(self: &Arc<Self>) {
        tokio::spawn(Arc::clone(self).supervise());
    }

    /// Stops every rule (operations they started keep running) and the supervision.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    async fn supervise(self: Arc<Self>) {
        let stop = self.stop.clone();
        loop {
            self.apply().await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(DISCOVERY_PERIOD) => {}
            }
        }
        let runs = std::mem::take(&mut *self.runs.lock().unwrap_or_else(|p| p.into_inner()));
        for running in runs.into_values() {
            running.stop.cancel();
        }
    }

    /// Starts the rules on processes that match them and have none yet; forgets the runs of
    /// processes that went away.
    async fn apply(&self) {
        let config = self.config();
        if config.rules.is_empty() && self.runs.lock().map(|r| r.is_empty()).unwrap_or(true) {
            return;
        }
        let processes = self.processes().list().await;
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|(uid, _), running| {
            let present = processes.iter().any(|process| process.uid == *uid);
            if !present {
                running.stop.cancel();
            }
            present
        });
        drop(runs);
        for process in &processes {
            self.start_runs(process);
        }
    }

    fn processes(&self) -> crate::processes::ProcessDirectory {
        self.env
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .processes
            .clone()
    }

    /// Starts on `process` the rules that match it and do not run on it yet.
    fn start_runs(&self, process: &ProcessRecord) {
        if self.stop.is_cancelled() {
            return;
        }
        let config = self.config();
        let env = self.env.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        for rule in config.rules.values() {
            let key = (process.uid, rule.name.clone());
            if runs.contains_key(&key) || !rule.filters.iter().all(|f| filter_matches(f, process)) {
                continue;
            }
            let run = Arc::new(RuleRun::new(rule.clone()));
            let token = self.stop.child_token();
            tokio::spawn(runner::run_rule(
                run.clone(),
                process.clone(),
                env.clone(),
                self.metrics.clone(),
                token.clone(),
            ));
            runs.insert(key, Running { run, stop: token });
        }
    }

    /// Listen mode: starts the rules on the runtime `uid` that just connected (suspended, when it
    /// was started with `suspend`) and waits, at most `timeout`, until they are under way: every
    /// trigger watches and the actions of Startup rules have started. Resume the runtime after.
    pub async fn start_before_resume(&self, uid: Uuid, timeout: Duration) {
        if self.config().rules.is_empty() {
            return;
        }
        let processes = self.processes().list().await;
        let Some(process) = processes.iter().find(|process| process.uid == uid) else {
            return;
        };
        self.start_runs(process);
        // The supervisor may have started some of them first: wait for every run on it.
        let runs: Vec<Arc<RuleRun>> = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((run_uid, _), _)| *run_uid == uid)
            .map(|(_, running)| running.run.clone())
            .collect();
        let all_started = futures_util::future::join_all(runs.iter().map(|run| run.wait_started()));
        if tokio::time::timeout(timeout, all_started).await.is_err() {
            tracing::warn!(
                pid = process.pid,
                timeout_seconds = timeout.as_secs(),
                "the collection rules of a new runtime were not under way in time; resuming it anyway"
            );
        }
    }

    /// The state of every rule on the process `uid`, by rule name.
    pub fn describe(&self, uid: Uuid) -> BTreeMap<String, RuleDescription> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter()
            .filter(|((run_uid, _), _)| *run_uid == uid)
            .map(|((_, name), running)| (name.clone(), running.run.describe()))
            .collect()
    }

    /// The detailed state of rule `name` on the process `uid`, if it applies to it.
    pub fn describe_rule(&self, uid: Uuid, name: &str) -> Option<RuleDetailedDescription> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(&(uid, name.to_owned()))
            .map(|running| running.run.describe_detailed())
    }
}

/// Watches `file` and puts its `[collection_rules]` in force whenever it changes and still loads
/// (a file that does not load, or whose rules are invalid, leaves the rules as they were, and
/// the log says why). `egress_providers` are the loaded providers the rules may name.
pub async fn watch_config_file(
    file: PathBuf,
    rules: Arc<RulesService>,
    egress_providers: Vec<String>,
) {
    let stamp = |path: &PathBuf| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen = stamp(&file);
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = stamp(&file);
        if now == seen {
            continue;
        }
        seen = now;
        let path = file.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            crate::config::load(Some(&path), serde_json::json!({}))
        })
        .await;
        let config = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(error)) => {
                tracing::warn!(%error, "the changed config file does not load; the collection rules stay as they were");
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "loading the changed config file failed");
                continue;
            }
        };
        match config::parse(&config.collection_rules, &egress_providers) {
            Ok(parsed) => {
                if parsed != *rules.config() {
                    tracing::info!(rules = parsed.rules.len(), "collection rules reloaded");
                    rules.replace(parsed);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the changed collection rules are invalid; the rules stay as they were");
            }
        }
    }
}
